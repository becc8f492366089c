"""``midtrain rl`` (midtrain.train.rl): end-to-end learning on a synthetic task, artifacts, resume, bad input, ranks.

TRL's update against ours is tests/train/test_rl_trainer.py; the config's rules tests/train/test_rl_config.py."""

from __future__ import annotations

import hashlib
import json
import shutil
from pathlib import Path

import pytest
import torch

from midtrain.errors import ConfigError, DataError, MidtrainError
from midtrain.train.rl import run
from midtrain.train.rl_config import RL_OPTIM, PromptsConfig, RLConfig, RLJudgeConfig, RolloutConfig, VLLMConfig
from midtrain.train.rl_log import COUNTERS

pytestmark = pytest.mark.usefixtures("one_thread")  # tiny models: one thread is faster and deterministic

LOG_KEYS = {
    "step",
    "loss",
    "reward_mean",
    "reward_std",
    "zero_var_frac",
    "completion_len",
    "think_len",
    "gen_s",
    "reward_s",
    "train_s",
    "reward_errors",
}


def _cfg(model, data, out, **kw) -> RLConfig:
    base = dict(
        model=str(model),
        data=[str(data)],
        out=str(out),
        max_steps=2,
        per_device_batch_size=8,
        rollout=RolloutConfig(num_generations=4, max_completion_length=12),
        optim=RL_OPTIM.replace(lr=1e-4),
        save_every_steps=0,
        precision="fp32",
    )
    base.update(kw)
    return RLConfig(**base)


def _log(out) -> list[dict]:
    return [json.loads(line) for line in (Path(out) / "log.jsonl").read_text().splitlines()]


def _digest(path: Path) -> str:
    files = sorted(p for p in Path(path).rglob("*") if p.is_file())
    return hashlib.sha256(b"".join(p.read_bytes() for p in files)).hexdigest()


# -- end to end --------------------------------------------------------------------------------------------------
@pytest.mark.slow
def test_rl_raises_reward_on_synthetic_task(synthetic_base, tmp_path):
    """Stated margin: sampled outcome reward +0.15 or more after 10 Dr. GRPO steps (measured +0.30)."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from midtrain.data.corpus import read_all
    from midtrain.models.generation import generate
    from midtrain.synth.verify import reward

    problems = read_all(synthetic_base["problems"])

    def sampled_reward(model_dir) -> float:
        model = AutoModelForCausalLM.from_pretrained(str(model_dir))
        tok = AutoTokenizer.from_pretrained(str(model_dir))
        gens = generate(model, tok, [p["prompt"] for p in problems], max_new_tokens=32, temperature=1.0, n=16, seed=123)
        scores = [reward(p, g.text, "outcome") for p, gs in zip(problems, gens) for g in gs]
        return sum(scores) / len(scores)

    out = tmp_path / "rl"
    cfg = RLConfig(
        model=str(synthetic_base["base"]),
        data=[str(synthetic_base["problems"])],
        reward="synthetic_outcome",
        out=str(out),
        max_steps=10,
        per_device_batch_size=32,
        rollout=RolloutConfig(num_generations=8, max_completion_length=32),
        optim=RL_OPTIM.replace(lr=1e-4),
        save_every_steps=5,
        precision="fp32",
        seed=0,
    )
    before = sampled_reward(synthetic_base["base"])
    res = run(cfg)
    after = sampled_reward(out)
    print(f"sampled outcome reward {before:.3f} -> {after:.3f}")
    assert after >= before + 0.15, (before, after)

    log = _log(out)
    assert [r["step"] for r in log] == list(range(1, 11))
    assert LOG_KEYS <= set(log[0])
    first, last = sum(r["reward_mean"] for r in log[:3]) / 3, sum(r["reward_mean"] for r in log[-3:]) / 3
    assert last >= first + 0.1, [r["reward_mean"] for r in log]
    assert all(r["completion_len"] > 0 and r["gen_s"] > 0 and r["train_s"] > 0 for r in log)
    # guesses (`</think>` at once) give way to worked solutions: the reasoning gets longer
    assert sum(r["think_len"] for r in log[-3:]) > sum(r["think_len"] for r in log[:3])

    # the run dir is an HF checkpoint that reloads with transformers; the weights moved
    from safetensors.torch import load_file

    reloaded = AutoModelForCausalLM.from_pretrained(str(out))
    assert reloaded.config.model_type == "llama"
    a, b = load_file(str(synthetic_base["base"] / "model.safetensors")), load_file(str(out / "model.safetensors"))
    assert any(not torch.equal(a[k], b[k]) for k in a)
    meta = json.loads((out / "midtrain.json").read_text())
    m = meta["metrics"]
    assert meta["status"] == "complete" and (out / "COMPLETE").is_file()
    assert m["steps"] == 10 and m["tokens_generated"] > 0 and m["flops"] > 0 and m["reward_errors"] == 0
    assert m["reward"] == "synthetic_outcome" and res.metrics["reward_mean_final"] == log[-1]["reward_mean"]
    assert sorted(p.name for p in (out / "checkpoints").iterdir() if p.name.startswith("checkpoint-")) == ["checkpoint-10", "checkpoint-5"]

    again = run(cfg)  # same config and inputs: a cache hit, nothing runs
    assert again.cached and again.metrics == res.metrics


def test_rl_run_artifacts_and_json_cli(nano_model, rl_tasks, tmp_path, capsys):
    from midtrain.cli import main

    out = tmp_path / "r"
    code = main(
        [
            "rl",
            "--model",
            str(nano_model),
            "--data",
            str(rl_tasks),
            "--out",
            str(out),
            "--max-steps",
            "2",
            "--per-device-batch-size",
            "8",
            "--rollout.num-generations",
            "4",
            "--rollout.max-completion-length",
            "8",
            "--save-every-steps",
            "0",
            "--precision",
            "fp32",
            "--json",
        ]
    )
    assert code == 0
    result = json.loads(capsys.readouterr().out)  # stdout holds only the JSON result
    assert result["stage"] == "rl" and result["metrics"]["steps"] == 2
    log = _log(out)
    assert [r["step"] for r in log] == [1, 2] and LOG_KEYS <= set(log[0])
    assert all(0.0 <= r["zero_var_frac"] <= 1.0 for r in log)
    assert (out / "model.safetensors").is_file() and (out / "tokenizer.json").is_file()


def test_last_step_is_logged_when_fewer_steps_than_the_log_interval(nano_model, rl_tasks, tmp_path):
    """max_steps < log_every_steps used to log nothing, and the run reported its reward as nan."""
    res = run(_cfg(nano_model, rl_tasks, tmp_path / "o", max_steps=3, log_every_steps=5))
    assert [r["step"] for r in _log(tmp_path / "o")] == [3]
    assert 0.0 <= res.metrics["reward_mean_first"] <= 1.0 and res.metrics["reward_mean_final"] is not None


# -- resume ------------------------------------------------------------------------------------------------------
def test_interrupted_run_resumes_from_its_checkpoint(nano_model, rl_tasks, tmp_path, kill_rl_at):
    out = tmp_path / "r"
    cfg = _cfg(nano_model, rl_tasks, out, max_steps=4, save_every_steps=2)
    kill_rl_at(3)
    with pytest.raises(KeyboardInterrupt):
        run(cfg)
    meta = json.loads((out / "midtrain.json").read_text())
    assert meta["status"] == "failed" and not (out / "COMPLETE").exists()
    assert (out / "checkpoints" / "checkpoint-2" / COUNTERS).is_file()
    assert [r["step"] for r in _log(out)] == [1, 2]  # step 3 never reached its log line

    kill_rl_at(None)
    res = run(cfg)
    assert res.metrics["resumed_from"] == "checkpoint-2" and res.metrics["steps"] == 4
    assert [r["step"] for r in _log(out)] == [1, 2, 3, 4]  # continued, not restarted, nothing logged twice
    assert res.metrics["tokens_generated"] == _log(out)[-1]["tokens_generated"]
    assert res.metrics["reward_mean_first"] == _log(out)[0]["reward_mean"]


# -- bad input ---------------------------------------------------------------------------------------------------
def _write(path: Path, records: list[dict]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in records))
    return path


def test_missing_column_and_empty_dataset_are_clear_errors(nano_model, tmp_path):
    out = tmp_path / "out"
    no_prompt = _write(tmp_path / "a.jsonl", [{"prompt": "x", "answer": "1"}, {"question": "y", "answer": "2"}])
    with pytest.raises(DataError, match=r"a\.jsonl:2: record has no 'prompt' field"):
        run(_cfg(nano_model, no_prompt, out))
    no_answer = _write(tmp_path / "b.jsonl", [{"prompt": "x"}])
    with pytest.raises(DataError, match=r"b\.jsonl:1: record has no 'answer' field"):
        run(_cfg(nano_model, no_answer, out))
    with pytest.raises(DataError, match=r"b\.jsonl:1: record has no 'reference' field"):
        run(_cfg(nano_model, no_answer, out, task="suffix"))
    empty = _write(tmp_path / "c.jsonl", [])
    with pytest.raises(DataError, match="empty dataset"):
        run(_cfg(nano_model, empty, out))
    blank = _write(tmp_path / "d.jsonl", [{"prompt": "  ", "answer": "1"}])
    with pytest.raises(DataError, match=r"d\.jsonl:1: 'prompt' must be a non-empty string"):
        run(_cfg(nano_model, blank, out))
    few = _write(tmp_path / "e.jsonl", [{"prompt": "x", "answer": "1"}])
    with pytest.raises(DataError, match="one step needs 2 distinct prompts"):
        run(_cfg(nano_model, few, out))
    assert not out.exists()  # nothing was created


def test_reward_that_raises_on_one_sample_scores_zero_and_run_goes_on(nano_model, rl_tasks, tmp_path, monkeypatch):
    import midtrain.train.rewards as rewards

    state = {"singles": 0}

    def flaky_math(completions, answer, **columns):
        if len(completions) > 1:  # the batch call fails because of one bad sample...
            state["singles"] = 0
            raise ValueError("cannot parse sample 0")
        state["singles"] += 1
        if state["singles"] == 1:  # ...which also fails alone; the others score normally
            raise ValueError("cannot parse this sample")
        return [0.5]

    monkeypatch.setattr(rewards, "math_reward", flaky_math)
    out = tmp_path / "r"
    res = run(_cfg(nano_model, rl_tasks, out))
    log = _log(out)
    assert [r["reward_errors"] for r in log] == [1, 1]  # one failing sample per step, counted
    assert all(r["reward_mean"] == pytest.approx(0.5 * 7 / 8) for r in log)  # 7 of 8 samples scored, 1 zeroed
    assert res.metrics["reward_errors"] == 2 and json.loads((out / "midtrain.json").read_text())["status"] == "complete"


def test_checkpoint_of_another_architecture_is_refused(nano_model, rl_tasks, tmp_path):
    from transformers import BertConfig, BertModel

    bert = tmp_path / "bert"
    BertModel(BertConfig(vocab_size=300, hidden_size=32, num_hidden_layers=1, num_attention_heads=2, intermediate_size=64)).save_pretrained(
        bert
    )
    shutil.copy(nano_model / "tokenizer.json", bert / "tokenizer.json")
    shutil.copy(nano_model / "tokenizer_config.json", bert / "tokenizer_config.json")
    before = _digest(bert)
    out = tmp_path / "out"
    with pytest.raises(MidtrainError, match="is a BertModel .* not a causal language model"):
        run(_cfg(bert, rl_tasks, out))
    assert not out.exists() and _digest(bert) == before

    # a Llama config whose weights belong to another shape of model: an error, never a silent random init
    other = tmp_path / "other"
    shutil.copytree(nano_model, other)
    conf = json.loads((other / "config.json").read_text())
    conf.update(hidden_size=conf["hidden_size"] * 2, intermediate_size=conf["intermediate_size"] * 2)
    (other / "config.json").write_text(json.dumps(conf))
    before = _digest(other)
    with pytest.raises(MidtrainError, match="weights do not"):
        run(_cfg(other, rl_tasks, out))
    assert not out.exists() and _digest(other) == before

    with pytest.raises(MidtrainError, match="no config.json"):
        run(_cfg(tmp_path / "nowhere", rl_tasks, out))


def test_vllm_modes_need_vllm(nano_model, rl_tasks, tmp_path):
    import importlib.util

    if importlib.util.find_spec("vllm") is not None:
        pytest.skip("vLLM is installed here")
    with pytest.raises(ConfigError, match="needs vLLM"):
        run(_cfg(nano_model, rl_tasks, tmp_path / "o", vllm=VLLMConfig(mode="server")))
    assert not (tmp_path / "o").exists()


@pytest.mark.slow
def test_two_gloo_processes(nano_model, rl_tasks, tmp_path):
    """2 ranks over gloo (torchrun workers on CPU): rank 0 owns the run directory, the run completes once."""
    import socket
    import subprocess
    import sys

    with socket.socket() as sock:  # a free port: other jobs on the box may hold torchrun's default 29500
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    accelerate = shutil.which("accelerate", path=str(Path(sys.executable).parent))
    out = tmp_path / "two"
    proc = subprocess.run(
        [
            accelerate,
            "launch",
            "--multi_gpu",
            "--num_processes",
            "2",
            "--num_machines",
            "1",
            "--mixed_precision",
            "no",
            "--dynamo_backend",
            "no",
            "--main_process_port",
            str(port),
            "-m",
            "midtrain",
            "rl",
            "--model",
            str(nano_model),
            "--data",
            str(rl_tasks),
            "--out",
            str(out),
            "--max-steps",
            "2",
            "--per-device-batch-size",
            "4",
            "--rollout.num-generations",
            "4",
            "--rollout.max-completion-length",
            "8",
            "--save-every-steps",
            "1",
            "--precision",
            "fp32",
            "--threads",
            "1",
        ],
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert [r["step"] for r in _log(out)] == [1, 2]  # one writer
    meta = json.loads((out / "midtrain.json").read_text())
    assert meta["status"] == "complete" and meta["metrics"]["steps"] == 2
    assert (out / "checkpoints" / "checkpoint-2" / COUNTERS).is_file() and (out / "model.safetensors").is_file()
    assert proc.stdout.count("rl: ") == 1  # only rank 0 reports


def test_accelerate_launch_configs_load():
    from accelerate.commands.config.config_args import load_config_from_file

    root = Path(__file__).resolve().parents[2] / "configs" / "accelerate"
    kinds = {}
    for name in ("ddp", "fsdp", "deepspeed_zero3"):
        conf = load_config_from_file(str(root / f"{name}.yaml"))
        kinds[name] = str(conf.distributed_type)
        assert conf.mixed_precision == "no"  # the stage's `precision` field decides
    assert kinds == {"ddp": "DistributedType.MULTI_GPU", "fsdp": "DistributedType.FSDP", "deepspeed_zero3": "DistributedType.DEEPSPEED"}


@pytest.mark.parametrize("kind", ["suffix", "exact_match", "choice", "synthetic_process"])
def test_every_task_kind_runs_through_trl(kind, nano_model, tmp_path):
    """Plumbing: each reward gets its columns from the dataset through TRL and the run completes."""
    if kind == "suffix":
        records = [{"prompt": f"The cat sat on the mat {i}.", "reference": "Then it slept."} for i in range(4)]
        cfg = _cfg(nano_model, _write(tmp_path / "s.jsonl", records), tmp_path / "o", task="suffix", judge=RLJudgeConfig(kind="token_f1"))
    elif kind == "exact_match":
        records = [{"prompt": f"The cat sat on the mat {i}.<think>", "reference": "Then it slept."} for i in range(4)]
        cfg = _cfg(nano_model, _write(tmp_path / "s.jsonl", records), tmp_path / "o", task="suffix", reward="exact_match")
    elif kind == "choice":
        records = [{"question": f"Pick {i}?", "choices": ["w", "x", "y", "z", "v"][: 4 + i % 2], "answer": "ABCD"[i % 4]} for i in range(4)]
        cfg = _cfg(
            nano_model,
            _write(tmp_path / "c.jsonl", records),
            tmp_path / "o",
            reward="choice",
            prompts=PromptsConfig(field="question", template="{prompt} Options: {choices}\n<think>"),
        )
    else:
        from midtrain.synth.generate import SynthConfig, generate_problems

        records = generate_problems(SynthConfig(ops="2", n=4, render="compact", modulus=10, order="dependency", seed=0))
        cfg = _cfg(nano_model, _write(tmp_path / "p.jsonl", records), tmp_path / "o", reward="synthetic_process")
    res = run(cfg)
    assert res.metrics["steps"] == 2 and res.metrics["reward_errors"] == 0
    assert [r["step"] for r in _log(tmp_path / "o")] == [1, 2]
