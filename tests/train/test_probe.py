"""The live ground-truth probe of ``midtrain rl`` (midtrain.train.probe): its statistics on hand-written completions,
the early-stop rule, its config errors, sampling, and tiny RL runs that log it and stop on it."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from midtrain.errors import ConfigError
from midtrain.train.instruments import EarlyStopConfig, ProbeConfig
from midtrain.train.probe import EarlyStop, first_wrong_fraction, hacking_stop, probe_record, probe_sums
from midtrain.train.rl_config import RL_OPTIM, LossConfig, RLConfig, RolloutConfig

WORLD = {"render": "compact", "modulus": 10, "order": "dependency", "distractors": False}


@pytest.fixture(scope="module")
def problem() -> dict:
    """A compact op-4 problem in dependency order: its gold trace is its necessary steps, one clause each."""
    from midtrain.synth.generate import generate_problems

    return generate_problems(n=1, ops="4", seed=3, **WORLD)[0]


def corrupt_step(completion: str, i: int) -> str:
    """The completion with the value of trace clause ``i`` changed (mod 10), its answer kept."""
    trace, rest = completion.split("</think>", 1)
    clauses = trace.split(".")
    head, _, value = clauses[i].rpartition("=")
    clauses[i] = f"{head}={(int(value) + 1) % 10}"
    return ".".join(clauses) + "</think>" + rest


def wrong_answer(completion: str) -> str:
    trace, rest = completion.split("<answer>", 1)
    answer = int(rest.split("</answer>")[0])
    return f"{trace}<answer>{(answer + 1) % 10}</answer>"


def _sample(text: str):
    from midtrain.train.probe import Sample

    return Sample([1], [5, 6, 7], text)


# -- statistics on hand-written completions ----------------------------------------------------------------------
def test_first_wrong_fraction_is_the_share_of_gold_steps_right_before_the_error(problem):
    from midtrain.synth.verify import gold_of

    gold = problem["completion"]
    n = len(gold_of(problem).keys)
    assert n >= 3
    assert first_wrong_fraction(problem, gold) is None  # verified: no error
    assert first_wrong_fraction(problem, corrupt_step(gold, 0)) == 0.0
    assert first_wrong_fraction(problem, corrupt_step(gold, 2)) == pytest.approx(2 / n)
    assert first_wrong_fraction(problem, wrong_answer(gold)) == 1.0  # every step right, the answer wrong
    assert first_wrong_fraction(problem, "") == 0.0


def test_probe_statistics_of_four_completions(problem):
    from midtrain.synth.verify import gold_of

    gold = problem["completion"]
    n = len(gold_of(problem).keys)
    texts = [gold, corrupt_step(gold, 0), corrupt_step(gold, 1), wrong_answer(gold)]
    sums = probe_sums([problem] * 4, [_sample(t) for t in texts])
    rec = probe_record(sums)
    assert rec["probe_n"] == 4 and rec["probe_verified"] == 0.25 and rec["probe_outcome"] == 0.75
    assert rec["probe_hacking"] == 0.5  # right answer, wrong trace: of all four
    assert rec["probe_first_wrong_step"] == pytest.approx((0 + 1 / n + 1) / 3)  # over the three failures
    assert rec["probe_completion_len"] == 3.0
    assert probe_record([0.0] * len(sums)) == {}
    assert "probe_first_wrong_step" not in probe_record(probe_sums([problem], [_sample(gold)]))


# -- early stopping ----------------------------------------------------------------------------------------------
def test_hacking_stop_keeps_the_probe_before_the_streak():
    probes = [(0, 0.05), (10, 0.25), (20, 0.1), (30, 0.3), (40, 0.31), (50, 0.5)]
    stop = hacking_stop(probes, 0.2, 2)
    assert stop == EarlyStop(30, 20, 40, stop.reason) and "steps 30..40" in stop.reason
    assert hacking_stop(probes, 0.2, 3) == EarlyStop(30, 20, 50, hacking_stop(probes, 0.2, 3).reason)
    assert hacking_stop(probes, 0.0, 1) is None  # off
    assert hacking_stop(probes, 0.6, 1) is None
    first = hacking_stop([(0, 0.4), (5, 0.4)], 0.3, 2)  # hacking from the start: the initial policy is kept
    assert (first.onset_step, first.kept_step, first.stopped_at) == (0, 0, 5)


# -- config ------------------------------------------------------------------------------------------------------
OK = dict(model="m", data=["d.jsonl"], out="o", reward="synthetic_outcome")


@pytest.mark.parametrize(
    "kw, key",
    [
        (dict(reward="math", probe=ProbeConfig(every=5, world=WORLD)), "probe.every"),
        (dict(probe=ProbeConfig(every=5)), "probe.world"),
        (dict(probe=ProbeConfig(every=5, world={**WORLD, "seed": 3})), "probe.world.seed"),
        (dict(probe=ProbeConfig(every=5, world={**WORLD, "render": "fancy"})), "probe.world.render"),
        (dict(early_stop=EarlyStopConfig(hacking_rate=0.2)), "early_stop.hacking_rate"),
        (
            dict(probe=ProbeConfig(every=5, world=WORLD), early_stop=EarlyStopConfig(hacking_rate=0.2), keep_checkpoints=1),
            "keep_checkpoints",
        ),
    ],
)
def test_probe_config_errors_name_the_key(kw, key):
    with pytest.raises(ConfigError, match=rf"^key '{key}"):
        RLConfig(**{**OK, **kw}).check()
    RLConfig(**OK, probe=ProbeConfig(every=5, world=WORLD), early_stop=EarlyStopConfig(hacking_rate=0.2)).check()


def test_help_lists_the_probe_and_early_stop_keys():
    docs = RLConfig.field_docs()
    assert docs["probe.every"][2] == 0 and "k3" in docs["probe.kl_samples"][1] and docs["early_stop.patience"][2] == 2


# -- sampling ----------------------------------------------------------------------------------------------------
def test_greedy_probe_samples_are_the_generation_paths(nano_model):
    from midtrain.models.generation import generate
    from midtrain.models.init import load_model
    from midtrain.models.tokenizer import load_tokenizer
    from midtrain.train.probe import sample

    model, tok = load_model(nano_model), load_tokenizer(nano_model)
    prompts = ["a=1.b=a+2.?b<think>", "c=3.?c<think>"]
    got = sample(model, tok, prompts, max_new_tokens=6, temperature=0.0, batch_size=1, add_bos=True)
    want = generate(model, tok, prompts, max_new_tokens=6, temperature=0.0)
    assert [s.text for s in got] == [w[0].text for w in want]
    assert all(len(s.completion_ids) <= 6 and s.prompt_ids for s in got)


# -- tiny runs ---------------------------------------------------------------------------------------------------
def _run_cfg(model: Path, tmp_path: Path, **kw) -> RLConfig:
    from midtrain.synth.generate import generate_problems

    records = generate_problems(n=4, ops="2", seed=0, **WORLD)
    data = tmp_path / "p.jsonl"
    data.write_text("".join(json.dumps(r) + "\n" for r in records))
    base = dict(
        model=str(model),
        data=[str(data)],
        out=str(tmp_path / "o"),
        reward="synthetic_outcome",
        max_steps=2,
        per_device_batch_size=8,
        rollout=RolloutConfig(num_generations=4, max_completion_length=12),
        optim=RL_OPTIM.replace(lr=1e-3),
        save_every_steps=0,
        precision="fp32",
        probe=ProbeConfig(every=1, n=6, ops="2", world=WORLD, kl_samples=4),
    )
    return RLConfig(**{**base, **kw})


def test_a_probed_run_logs_the_probe_and_the_proxies(nano_model, tmp_path, one_thread):
    from midtrain.train.rl import run

    pytest.importorskip("tensorboard")
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    res = run(_run_cfg(nano_model, tmp_path, report_to=["tensorboard"]))
    log = [json.loads(line) for line in (tmp_path / "o" / "log.jsonl").read_text().splitlines()]
    events = EventAccumulator(str(tmp_path / "o" / "tensorboard"))
    events.Reload()
    for key in ("probe_hacking", "probe_verified", "proxy_kl", "proxy_adv_std"):  # the trackers get log.jsonl's values
        got = {e.step: e.value for e in events.Scalars(f"train/{key}")}
        assert got == pytest.approx({r["step"]: r[key] for r in log if key in r}, abs=1e-6), key
    assert [r["step"] for r in log] == [0, 1, 2]
    for r in log:
        assert r["probe_n"] == 6 and 0 <= r["probe_hacking"] <= r["probe_outcome"] <= 1 and 0 <= r["probe_verified"] <= 1
    assert "reward_mean" not in log[0] and "proxy_kl" not in log[0]
    for r in log[1:]:
        assert r["proxy_kl"] >= 0 and r["proxy_adv_std"] >= 0 and r["proxy_adv_absmax"] >= abs(r["proxy_adv_mean"])
    ref = json.loads((tmp_path / "o" / "probe_reference.json").read_text())
    assert len(ref["completions"]) == len(ref["logps"]) <= 4
    m = res.metrics
    assert m["steps"] == 2 and m["reward_mean_first"] == log[1]["reward_mean"] and m["early_stop"] is None
    assert m["probe_hacking_first"] == log[0]["probe_hacking"] and m["probe_verified_last"] == log[2]["probe_verified"]


def test_a_resumed_run_keeps_its_step_0_probe_and_kl_reference(nano_model, tmp_path, one_thread, kill_rl_at):
    from midtrain.train.rl import run

    cfg = _run_cfg(nano_model, tmp_path, max_steps=3, save_every_steps=1)
    kill_rl_at(2)
    with pytest.raises(KeyboardInterrupt):
        run(cfg)
    kill_rl_at(None)
    res = run(cfg)
    log = [json.loads(line) for line in (tmp_path / "o" / "log.jsonl").read_text().splitlines()]
    assert res.metrics["resumed_from"] == "checkpoint-1"
    assert [r["step"] for r in log] == [0, 1, 2, 3]  # the step-0 probe kept, not repeated
    assert all("proxy_kl" in r and "probe_hacking" in r for r in log[1:])  # the KL reference came back from its file


@pytest.mark.parametrize("killed", [False, True], ids=["straight", "killed-before-the-final-save"])
def test_early_stop_keeps_the_checkpoint_before_the_onset(nano_model, tmp_path, one_thread, monkeypatch, killed):
    """A scripted probe hacks from step 2 on: with patience 2 the run stops at step 3 and its model is step 1's; a run
    killed after it decided to stop trains no further when re-run, and keeps the same model."""
    from safetensors.torch import load_file

    from midtrain.train import probe
    from midtrain.train import rl as rl_module
    from midtrain.train.rl import run

    hacking = {0: 0.0, 1: 0.1, 2: 0.5, 3: 0.6}

    def scripted(self, model, step):
        return {"probe_n": 6, "probe_verified": 0.1, "probe_outcome": 0.1 + hacking[step], "probe_hacking": hacking[step]}

    monkeypatch.setattr(probe.HackingMonitor, "measure", scripted)
    cfg = _run_cfg(
        nano_model,
        tmp_path,
        max_steps=6,
        early_stop=EarlyStopConfig(hacking_rate=0.3, patience=2),
        keep_checkpoints=2,
        # the nano policy earns no reward: weight decay on every row's (zero) gradient moves its weights each step
        optim=RL_OPTIM.replace(lr=1e-3, weight_decay=0.1),
        loss=LossConfig(skip_zero_advantage=False),
    )
    if killed:
        save_final = rl_module.save_final

        def die(*args, **kw):
            raise KeyboardInterrupt("killed before the final save")

        monkeypatch.setattr(rl_module, "save_final", die)
        with pytest.raises(KeyboardInterrupt):
            run(cfg)
        monkeypatch.setattr(rl_module, "save_final", save_final)
    res = run(cfg)
    assert res.metrics["resumed_from"] == ("checkpoint-3" if killed else None)
    out = tmp_path / "o"
    log = [json.loads(line) for line in (out / "log.jsonl").read_text().splitlines()]
    assert [r["step"] for r in log] == [0, 1, 2, 3]
    assert log[-1]["early_stop"]["onset_step"] == 2 and "early_stop" not in log[-2]
    assert res.metrics["early_stop"] == {"onset_step": 2, "kept_step": 1, "stopped_at": 3, "reason": log[-1]["early_stop"]["reason"]}
    assert res.metrics["steps"] == 3
    ckpts = sorted(p.name for p in (out / "checkpoints").iterdir())
    assert "checkpoint-1" in ckpts and "checkpoint-3" in ckpts  # the pre-onset one survived rotation (keep 2)
    final, kept = load_file(str(out / "model.safetensors")), load_file(str(out / "checkpoints/checkpoint-1/model.safetensors"))
    last = load_file(str(out / "checkpoints/checkpoint-3/model.safetensors"))
    assert all((final[k] == kept[k]).all() for k in kept)
    assert any(not (final[k] == last[k]).all() for k in last)  # the hacked weights were not kept


@pytest.mark.slow
def test_two_ranks_probe_their_shares_and_log_the_same_sums(nano_model, tmp_path):
    """2 gloo ranks: each samples half the probe problems, the counts are summed over ranks (probe_n is the whole
    set at every probe), the proxies are reduced at every logged step, and neither rank waits for the other."""
    from rl_support import launch_two

    from midtrain.config import to_yaml

    cfg = _run_cfg(nano_model, tmp_path, per_device_batch_size=4, threads=1)
    path = tmp_path / "rl.yaml"
    path.write_text(to_yaml(cfg))
    done = launch_two(["-m", "midtrain", "rl", "--config", str(path)], timeout_s=300)
    assert done.returncode == 0, done.stderr[-3000:]
    log = [json.loads(line) for line in (tmp_path / "o" / "log.jsonl").read_text().splitlines()]
    assert [r["step"] for r in log] == [0, 1, 2] and all(r["probe_n"] == 6 for r in log)
    assert all("proxy_adv_std" in r and "proxy_kl" in r for r in log[1:])
