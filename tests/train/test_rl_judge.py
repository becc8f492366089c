"""RL with an LLM judge that fails: failed samples are counted (``reward_errors``), warned about, and a step whose
judging failed entirely stops the run; verdicts are cached in the run directory; the verdict budget is a key."""

from __future__ import annotations

import json
import threading
from collections import Counter
from pathlib import Path

import pytest

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
        assert any("1 of 2 samples could not be judged (HTTP 500 ×1)" in s for s in said)
        strict = build_reward("judge", judge=llm_judge(srv.url), judge_max_error_frac=0.5)
        with pytest.raises(RewardAborted, match="1 of 2 samples"):
            strict(["<think>a</think>good", "<think>a</think>bad"], answer=["x", "y"])


def test_a_step_with_every_judge_request_failing_stops():
    r = build_reward("judge", judge=llm_judge(dead_url()))
    with pytest.raises(RewardAborted, match=r"failed on 3 of 3 samples of this step \(connection refused ×3\)"):
        r(["<think>a</think>one", "<think>a</think>two", "<think>a</think>three", "unjudged"], answer=["x"] * 4)


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
