"""RL with an LLM judge (or any reward) that fails: failed samples are counted (``reward_errors``), warned about, and
their groups left out of the loss (``groups_masked``); a step whose judging failed past ``judge.max_error_frac``
stops the run, on every rank at once; verdicts are cached in the run directory; the verdict budget is a key."""

from __future__ import annotations

import json
import threading
from collections import Counter
from pathlib import Path

import pytest
from rl_support import SCRIPT, assert_same, launch_two, loss_grads, scripted_batch, take_rows

import midtrain.llm.judge as judge_mod
from midtrain.llm.backends import OpenAIBackend
from midtrain.llm.config import BackendConfig
from midtrain.llm.judge import VERDICT_CACHE, LLMJudge
from midtrain.llm.serve import HTTPFault, OpenAIServer
from midtrain.train.rewards import RewardAborted, build_reward
from midtrain.train.rl import run
from midtrain.train.rl_config import RL_OPTIM, RLConfig, RLJudgeConfig, RolloutConfig

pytestmark = pytest.mark.usefixtures("one_thread")  # tiny models: one thread is faster and deterministic


def dead_url() -> str:
    with OpenAIServer(lambda p, b: p) as srv:
        return srv.url


def llm_judge(url: str) -> LLMJudge:
    return LLMJudge(OpenAIBackend(BackendConfig(backend="openai", model="j", base_url=url, api="chat", max_retries=0, timeout_s=5)))


def fails_on_bad(prompt: str, body: dict) -> str:
    if "<candidate>\nbad" in prompt:
        raise HTTPFault(500)
    return "VERDICT: YES"


def test_judge_failures_are_reward_errors_not_zeros(monkeypatch):
    import midtrain.train.rewards as rewards

    said: list[str] = []
    monkeypatch.setattr(rewards, "log", said.append)
    with OpenAIServer(fails_on_bad) as srv:
        r = build_reward("judge", judge=llm_judge(srv.url))
        out = r(["<think>a</think>good", "<think>a</think>bad", "never closed"], answer=["x", "y", "z"])
        assert out == [1.0, 0.0, 0.0] and r.last_errors == 1 and r.take_errors() == 1  # the unjudged one is no error
        assert r.last_failed == [False, True, False]  # the trainer masks the failed sample's group
        assert any("1 of 2 samples could not be judged (HTTP 500 ×1)" in s for s in said)
        assert r.take_judge_tally() == (1, 2) and r.take_judge_tally() == (0, 0)  # the tally restarts once taken
        r.abort_if_failed(1, 2)  # under the default max_error_frac 1.0, half the samples failing goes on
        strict = build_reward("judge", judge=llm_judge(srv.url), judge_max_error_frac=0.5)
        assert strict(["<think>a</think>good", "<think>a</think>bad"], answer=["x", "y"]) == [1.0, 0.0]  # never raises itself
        with pytest.raises(RewardAborted, match="1 of 2 samples"):
            strict.abort_if_failed(*strict.take_judge_tally())


def test_a_step_with_every_judge_request_failing_stops():
    """The reward call itself scores the step (a rank raising alone would hang the others); the stop is decided on the
    tally, which the trainer sums over ranks before every rank calls abort_if_failed."""
    r = build_reward("judge", judge=llm_judge(dead_url()))
    assert r(["<think>a</think>one", "<think>a</think>two", "<think>a</think>three", "unjudged"], answer=["x"] * 4) == [0.0] * 4
    assert r.last_failed == [True, True, True, False]
    tally = r.take_judge_tally()
    assert tally == (3, 3)
    with pytest.raises(RewardAborted, match=r"failed on 3 of 3 samples of this step \(connection refused ×3\)"):
        r.abort_if_failed(*tally)
    r.abort_if_failed(0, 0)  # a step that asked the judge nothing never stops


# -- through `midtrain rl` --------------------------------------------------------------------------------------
def rl_cfg(model: Path, tmp_path: Path, url: str, **kw) -> RLConfig:
    data = tmp_path / "s.jsonl"
    data.write_text("".join(json.dumps({"prompt": f"The cat sat on the mat {i}.", "reference": "Then it slept."}) + "\n" for i in range(4)))
    base = dict(
        model=str(model),
        data=[str(data)],
        out=str(tmp_path / "o"),
        task="suffix",
        judge=RLJudgeConfig(kind="llm", backend=BackendConfig(backend="openai", base_url=url, api="chat", max_retries=0, timeout_s=5)),
        max_steps=2,
        per_device_batch_size=8,
        rollout=RolloutConfig(num_generations=4, max_completion_length=8),
        optim=RL_OPTIM.replace(lr=1e-4),
        save_every_steps=0,
        precision="fp32",
    )
    base.update(kw)
    return RLConfig(**base)


@pytest.fixture
def judge_everything(monkeypatch):
    """The nano policy never closes a thought; judge its whole completion so that the judge is asked."""
    monkeypatch.setattr(judge_mod, "continuation", lambda completion: completion.strip() or "empty")


def test_rl_logs_judge_failures_and_caches_verdicts(nano_model, tmp_path, judge_everything):
    lock, seen = threading.Lock(), Counter()

    def flaky(prompt: str, body: dict) -> str:
        with lock:
            seen["requests"] += 1
            seen[f"max_tokens={body['max_tokens']}"] += 1
            k = seen["requests"]
        if k % 3 == 0:
            raise HTTPFault(500)
        return "<think>they differ</think>VERDICT: NO"

    with OpenAIServer(flaky) as srv:
        cfg = rl_cfg(nano_model, tmp_path, srv.url)
        res = run(cfg.replace(**{"judge.max_new_tokens": 64}))
        failed = srv.stats["http_500"]
    log = [json.loads(line) for line in (tmp_path / "o" / "log.jsonl").read_text().splitlines()]
    assert failed > 0 and sum(r["reward_errors"] for r in log) == failed == res.metrics["reward_errors"]
    assert seen["max_tokens=64"] == seen["requests"]  # the verdict budget is the key's
    cached = (tmp_path / "o" / VERDICT_CACHE).read_text().splitlines()
    assert cached and all(json.loads(line)["label"] == "NO" for line in cached)  # failures are never cached


def test_rl_stops_when_a_whole_step_of_judging_failed(nano_model, tmp_path, judge_everything):
    from midtrain.errors import MidtrainError

    with pytest.raises(MidtrainError, match=r"the judge failed on 8 of 8 samples of this step \(connection refused ×8\)"):
        run(rl_cfg(nano_model, tmp_path, dead_url()))


# -- failures are masked, not scored 0 ----------------------------------------------------------------------------
def test_a_failed_reward_call_leaves_its_group_out_of_the_loss(make_rl_trainer, monkeypatch):
    import midtrain.train.rewards as rewards

    math_reward = rewards.math_reward

    def raises_on_boom(completions, answer, **columns):
        if "boom" in completions:
            raise ValueError("cannot score 'boom'")
        return math_reward(completions, answer, **columns)

    monkeypatch.setattr(rewards, "math_reward", raises_on_boom)
    trainer, tok = make_rl_trainer()  # G = 4
    groups = [("a=1.b=a+2.?b", "3", ["3", "boom", "x 4", "3"]), ("f=3.g=f+1.?g", "4", ["4", "9", "4", "1 2"])]
    batch, scored = scripted_batch(trainer, tok, groups)
    assert scored.failed.tolist() == [False, True] + [False] * 6
    assert scored.rewards[:, 0].tolist() == [1.0, 0.0, 0.0, 1.0, 1.0, 0.0, 1.0, 0.0]  # scored 0 for TRL's statistics...
    assert (batch["advantages"][:4] == 0).all() and (batch["advantages"][4:] != 0).all()  # ...and no gradient
    assert (trainer.extras.counters.groups_masked, trainer.extras.counters.reward_errors) == (1, 1)
    # the step's gradient is the other group's alone, at the step's normaliser (4 of 8 rows, accumulation 2)
    assert_same(loss_grads(trainer, [batch]), loss_grads(trainer, [take_rows(batch, [4, 5, 6, 7])], accumulation=2))


@pytest.mark.slow
def test_a_judge_down_for_one_rank_stops_both_ranks_or_is_masked(nano_model, tmp_path):
    """2 ranks over gloo, rank 1's judge down (every one of its 4 samples a step fails, rank 0's are judged): with
    judge.max_error_frac 0.5 both ranks stop at step 1 with one error line each, none waits for the other; with
    1.0 the run completes, each step's failed group masked."""
    data = tmp_path / "s.jsonl"
    data.write_text("".join(json.dumps({"prompt": f"The cat sat on the mat {i}.", "reference": "Then it slept."}) + "\n" for i in range(4)))

    def launch(out: Path, frac: float, url: str, dead: str):
        args = ["rl", "--model", str(nano_model), "--data", str(data), "--out", str(out), "--task", "suffix", "--judge.kind", "llm"]
        args += ["--judge.backend.backend", "openai", "--judge.backend.base-url", url, "--judge.backend.api", "chat"]
        args += ["--judge.backend.max-retries", "0", "--judge.backend.timeout-s", "5", "--judge.max-error-frac", str(frac)]
        args += ["--max-steps", "2", "--per-device-batch-size", "4", "--rollout.num-generations", "4"]
        args += ["--rollout.max-completion-length", "8", "--save-every-steps", "0", "--precision", "fp32", "--threads", "1"]
        return launch_two([SCRIPT, "rl", dead, "--", *args], timeout_s=300)

    dead = dead_url()
    with OpenAIServer(lambda prompt, body: "VERDICT: NO") as srv:
        stopped = launch(tmp_path / "stop", 0.5, srv.url, dead)
        completed = launch(tmp_path / "go", 1.0, srv.url, dead)
    errors = [line for line in stopped.stderr.splitlines() if line.startswith("error: ")]
    assert stopped.returncode != 0 and len(errors) == 2, stopped.stderr[-3000:]  # one line per rank, each exiting itself:
    # (torchrun's agent may SIGTERM a rank that is already on its way out once the first one exits with code 2: the
    # two error lines above show that each rank decided to stop by itself, which is what a hang would lack)
    assert all("rl: the judge failed on 4 of 8 samples of this step" in e and "max_error_frac=0.5" in e for e in errors), errors
    assert sorted("(connection refused ×4)" in e for e in errors) == [False, True]  # rank 1 names the kind it saw...
    assert any("(on other ranks)" in e for e in errors)  # ...rank 0, whose calls all succeeded, says where they failed
    step_log = tmp_path / "stop" / "log.jsonl"
    assert not step_log.exists() or not step_log.read_text().strip()  # stopped in step 1, before its log line

    assert completed.returncode == 0, completed.stderr[-3000:]
    log = [json.loads(line) for line in (tmp_path / "go" / "log.jsonl").read_text().splitlines()]
    assert [r["step"] for r in log] == [1, 2]
    assert [r["reward_errors"] for r in log] == [4, 4] and [r.get("groups_masked") for r in log] == [1, 2]  # (the run's total)
