"""Fixtures of the evaluation and report tests: a tiny random model whose tokenizer was trained on local text."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("MIDTRAIN_QUIET", "1")

SHARED_BENCH = Path(__file__).resolve().parents[3] / "shared" / "benchmarks"


def have_benchmarks() -> bool:
    return (SHARED_BENCH / "gsm8k" / "test.jsonl").is_file()


@pytest.fixture(scope="session")
def eval_model(tmp_path_factory) -> Path:
    """A 'nano' Llama with random weights and a 400-symbol BPE trained on a few GSM8K problems (plumbing only)."""
    from midtrain.models import ModelInitConfig, TokenizerConfig, init_model, train_tokenizer

    root = tmp_path_factory.mktemp("eval_model")
    corpus = root / "corpus.jsonl"
    texts = []
    if have_benchmarks():
        with open(SHARED_BENCH / "gsm8k" / "test.jsonl", encoding="utf-8") as f:
            for i, line in zip(range(300), f):
                rec = json.loads(line)
                texts.append(rec["problem"] + "\n" + rec["solution"])
    texts += [f"Question: what is {i} + {i + 1}? Answer: <think> add </think> \\boxed{{{2 * i + 1}}}" for i in range(200)]
    corpus.write_text("".join(json.dumps({"text": t}) + "\n" for t in texts), encoding="utf-8")
    train_tokenizer(TokenizerConfig(corpus=[str(corpus)], out=str(root / "tok"), vocab_size=400))
    init_model(ModelInitConfig(preset="nano", tokenizer=str(root / "tok"), out=str(root / "model"), seed=0,
                               max_position_embeddings=2048))
    return root / "model"
