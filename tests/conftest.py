"""Session fixtures: a tiny locally trained tokenizer and tiny models, built once per test session."""

from __future__ import annotations

import json
import os
import random
from pathlib import Path

import pytest

from shared_support import benchmark_root

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("MIDTRAIN_QUIET", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")


def chain_text(rng: random.Random) -> str:
    """A short learnable arithmetic document: a chain of mod-10 additions."""
    names = "abcdefghijklmnopqrstuvwxyz"
    start = rng.randrange(20)
    depth = rng.randint(2, 4)
    v = rng.randint(1, 4)
    facts = [f"{names[start]}={v}"]
    steps = [f"{names[start]}={v}"]
    for i in range(1, depth):
        c = rng.randint(1, 4)
        nv = (v + c) % 10
        facts.append(f"{names[start + i]}={names[start + i - 1]}+{c}")
        steps.append(f"{names[start + i]}={v}+{c}={nv}")
        v = nv
    return ".".join(facts) + f".?{names[start + depth - 1]}<think>" + ".".join(steps) + f".</think><answer>{v}</answer>"


@pytest.fixture(scope="session")
def corpus(tmp_path_factory) -> Path:
    """A JSONL corpus of 600 short arithmetic documents (text field)."""
    rng = random.Random(0)
    path = tmp_path_factory.mktemp("corpus") / "chains.jsonl"
    with open(path, "w") as f:
        for i in range(600):
            f.write(json.dumps({"id": f"c{i}", "text": chain_text(rng), "domain": "synthetic"}) + "\n")
    return path


@pytest.fixture(scope="session")
def tokenizer_dir(tmp_path_factory, corpus) -> Path:
    from midtrain.models.tokenizer import TokenizerConfig, train_tokenizer

    out = tmp_path_factory.mktemp("tok") / "tok"
    train_tokenizer(TokenizerConfig(corpus=[str(corpus)], out=str(out), vocab_size=300))
    return out


@pytest.fixture(scope="session")
def nano_model(tmp_path_factory, tokenizer_dir) -> Path:
    from midtrain.models.init import ModelInitConfig, init_model

    out = tmp_path_factory.mktemp("models") / "nano"
    init_model(ModelInitConfig(preset="nano", tokenizer=str(tokenizer_dir), out=str(out), seed=0))
    return out


@pytest.fixture(scope="session")
def eval_model(tmp_path_factory) -> Path:
    """A 'nano' Llama with random weights and a 400-symbol BPE trained on a few GSM8K problems (plumbing only)."""
    from midtrain.models.init import ModelInitConfig, init_model
    from midtrain.models.tokenizer import TokenizerConfig, train_tokenizer

    root = tmp_path_factory.mktemp("eval_model")
    corpus = root / "corpus.jsonl"
    texts = []
    bench = benchmark_root()
    if bench is not None:
        with open(bench / "gsm8k" / "test.jsonl", encoding="utf-8") as f:
            for _, line in zip(range(300), f):
                rec = json.loads(line)
                texts.append(rec["problem"] + "\n" + rec["solution"])
    texts += [f"Question: what is {i} + {i + 1}? Answer: <think> add </think> \\boxed{{{2 * i + 1}}}" for i in range(200)]
    corpus.write_text("".join(json.dumps({"text": t}) + "\n" for t in texts), encoding="utf-8")
    train_tokenizer(TokenizerConfig(corpus=[str(corpus)], out=str(root / "tok"), vocab_size=400))
    init_model(ModelInitConfig(preset="nano", tokenizer=str(root / "tok"), out=str(root / "model"), seed=0, max_position_embeddings=2048))
    return root / "model"
