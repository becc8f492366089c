"""midtrain.train.rollouts: rollouts from the KV-cache sampler when it applies, else TRL's generate; same completions."""

from __future__ import annotations

import pytest

from midtrain.models import sampler
from midtrain.train.rl_config import RolloutConfig
from midtrain.train.rl_trainer import add_stop_ids

pytestmark = pytest.mark.usefixtures("one_thread")


def test_rollouts_come_from_the_sampler_and_equal_trl_generate(make_rl_trainer, monkeypatch):
    # top_k = 1: sampling is deterministic on both paths, so the completions must be identical
    trainer, tok = make_rl_trainer(rollout=RolloutConfig(num_generations=4, max_completion_length=10, top_k=1, temperature=0.7))
    prompts = ["a=1.b=a+2.?b<think>", "x", "a=3.b=a+a.c=b+1.?c<think>", "b=2.?b"]
    prompt_ids = [tok(tok.bos_token + p, add_special_tokens=False)["input_ids"] for p in prompts]
    calls = []
    real = sampler.sample
    monkeypatch.setattr(sampler, "sample", lambda *a, **k: calls.append(k) or real(*a, **k))
    ours, logprobs = trainer._generate_single_turn(prompt_ids, None, {}, 4)
    assert len(calls) == 1 and logprobs is None
    assert calls[0]["top_k"] == 1 and calls[0]["temperature"] == 0.7 and calls[0]["max_new_tokens"] == 10
    monkeypatch.setenv("MIDTRAIN_SAMPLER", "hf")
    trl, _ = trainer._generate_single_turn(prompt_ids, None, {}, 4)
    assert len(calls) == 1 and ours == trl
    assert all(0 < len(c) <= 10 for c in ours)

    # info_gain's extra stop id (</think>) ends completions on both paths
    monkeypatch.delenv("MIDTRAIN_SAMPLER")
    close = next(t for c in ours for t in c[1:3])  # an id the rollouts emit early
    add_stop_ids(trainer, (close,))
    ours, _ = trainer._generate_single_turn(prompt_ids, None, {}, 4)
    assert calls[-1]["eos_token_ids"] == trainer.eos_token_ids and len(calls) == 2
    monkeypatch.setenv("MIDTRAIN_SAMPLER", "hf")
    assert trainer._generate_single_turn(prompt_ids, None, {}, 4)[0] == ours
    assert any(c[-1] == close for c in ours)


def test_bf16_generation_falls_back_to_trl(make_rl_trainer, monkeypatch):
    trainer, tok = make_rl_trainer(extras={"bf16_generation": True})
    monkeypatch.setattr(sampler, "sample", lambda *a, **k: pytest.fail("the sampler must not run"))
    out, _ = trainer._generate_single_turn([tok("a=1.?a")["input_ids"]], None, {}, 4)
    assert len(out) == 1
