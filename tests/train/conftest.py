"""Fixtures of the training-stage tests (append new fixtures; shared session fixtures live in tests/conftest.py)."""

from __future__ import annotations

import json
import random
from pathlib import Path

import pytest


@pytest.fixture
def one_thread():
    """torch on one intra-op thread for the test (RL tests on tiny models: faster, and the same numbers every run)."""
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture
def kill_rl_at(monkeypatch):
    """``kill_rl_at(step)``: the next ``midtrain rl`` run raises KeyboardInterrupt right after logging ``step`` (a
    simulated kill); ``kill_rl_at(None)`` restores the normal callback for the resumed run."""
    from midtrain.train import rl_log

    original = rl_log.RLLogCallback.on_step_end

    def arm(step: int | None) -> None:
        if step is None:
            monkeypatch.setattr(rl_log.RLLogCallback, "on_step_end", original)
            return

        def crash(self, args, state, control, **kw):
            original(self, args, state, control, **kw)
            if state.global_step == step:
                raise KeyboardInterrupt("simulated kill")

        monkeypatch.setattr(rl_log.RLLogCallback, "on_step_end", crash)

    return arm


# -- RL (tests/train/test_rl.py) ---------------------------------------------------------------------------------
@pytest.fixture(scope="session")
def rl_tasks(tmp_path_factory) -> Path:
    """24 tiny answer tasks (prompt, answer) for RL plumbing tests with the nano model."""
    rng = random.Random(0)
    path = tmp_path_factory.mktemp("rl_tasks") / "tasks.jsonl"
    with open(path, "w") as f:
        for i in range(24):
            a, b = rng.randint(1, 4), rng.randint(1, 4)
            f.write(json.dumps({"id": f"t{i}", "prompt": f"a={a}.b=a+{b}.?b<think>", "answer": str((a + b) % 10)}) + "\n")
    return path


@pytest.fixture(scope="session")
def synthetic_base(tmp_path_factory) -> dict[str, Path]:
    """A tiny model that knows op-2 synthetic problems, but half the time guesses instead of working them.

    The world: compact op-2 problems of ``midtrain.synth`` (``a=4.b=3*a.?b``, mod 10; the nine with names a, b, so
    that a 3.2M model learns them in 200 steps). The pretraining documents are half worked solutions
    (``…<think>a=4.b=3*a=3*4=2.</think><answer>2</answer>``) and half bare guesses
    (``…<think></think><answer>7</answer>`` with a random digit). After ``midtrain pretrain`` the model
    works ~half of the samples (nearly all correct) and guesses the rest: sampled reward ≈ 0.5. Working the
    problem is the rewarded behaviour that RL has to pick (measured: 0.60 → 0.90 in 10 steps of 4×8 completions).
    """
    import torch

    from midtrain.data.jsonl import write_jsonl
    from midtrain.models.init import ModelInitConfig, init_model
    from midtrain.models.tokenizer import TokenizerConfig, train_tokenizer
    from midtrain.synth.generate import SynthConfig, generate_problems
    from midtrain.train.corpus import CorpusConfig
    from midtrain.train.lm import OptimConfig
    from midtrain.train.pretrain import PretrainConfig
    from midtrain.train.pretrain import run as pretrain

    root = tmp_path_factory.mktemp("synthetic_base")
    problems = generate_problems(
        SynthConfig(
            ops="2",
            n=225,
            render="compact",
            modulus=10,
            order="dependency",
            distractors=False,
            const_max=9,
            max_multiplier=3,
            seed=1,
        )
    )
    problems = [p for p in problems if p["problem"].startswith("a=")]
    assert len(problems) == 9, "the synthetic world changed its compact naming; update this fixture"
    write_jsonl(root / "problems.jsonl", problems)
    rng = random.Random(0)
    docs = []
    for i in range(2000):
        p = problems[i % len(problems)]
        guess = rng.random() < 0.5
        completion = f"</think><answer>{rng.randrange(10)}</answer>" if guess else p["completion"]
        docs.append({"prompt": p["prompt"], "completion": completion, "text": p["prompt"] + completion})
    write_jsonl(root / "docs.jsonl", docs)
    train_tokenizer(TokenizerConfig(corpus=[str(root / "docs.jsonl")], out=str(root / "tok"), vocab_size=300))
    init_model(ModelInitConfig(preset="tiny", tokenizer=str(root / "tok"), out=str(root / "init"), seed=0))
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # deterministic and steady on a shared 2-core box
    try:
        pretrain(
            PretrainConfig(
                model=str(root / "init"),
                corpus=CorpusConfig(files=[str(root / "docs.jsonl")], format="prompt_completion"),
                seq_len=40,
                batch_size=16,
                max_steps=200,
                optim=OptimConfig(lr=1e-3, warmup_steps=10, weight_decay=0.0),
                precision="fp32",
                out=str(root / "base"),
                log_every_steps=50,
                seed=0,
            )
        )
    finally:
        torch.set_num_threads(threads)
    return {"base": root / "base", "problems": root / "problems.jsonl"}


@pytest.fixture
def make_rl_trainer(nano_model, tmp_path):
    """``make_rl_trainer(reward="math", extras=None, **cfg)`` → ``(trainer, tokenizer)``: a real MidtrainGRPOTrainer on
    the nano model (8 completions per micro-batch, G = 4, fp32, no checkpoints), in train mode; ``cfg`` holds
    RLConfig keys and sections, ``extras`` fields of RLExtras besides the counters and the reward
    (:func:`rl_support.rl_trainer`, which the multi-process tests build theirs with)."""
    from rl_support import rl_trainer

    def make(reward: str = "math", extras: dict | None = None, **cfg_kw):
        return rl_trainer(nano_model, tmp_path, reward, extras, **cfg_kw)

    return make
