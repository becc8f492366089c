"""Fixtures of the augmentation tests: a prose corpus, a scripted OpenAI-compatible server on 127.0.0.1.

The tokenizer and the nano model come from the session fixtures of ``tests/conftest.py``.
"""

from __future__ import annotations

import json
import random
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from midtrain.llm.serve import OpenAIServer, Responder

WORDS = (
    "the a river city model reader quietly north light stone garden theory proof number seven bright old "
    "market winter letter question answer because while after small large green heavy early late music"
).split()


def prose(rng: random.Random, paragraphs: int) -> str:
    paras = []
    for _ in range(paragraphs):
        sents = []
        for _ in range(rng.randint(2, 5)):
            words = [rng.choice(WORDS) for _ in range(rng.randint(4, 12))]
            sents.append(" ".join(words).capitalize() + rng.choice([".", ".", "!", "?"]))
        paras.append(" ".join(sents))
    return "\n\n".join(paras) + "\n"


def write_corpus(path: Path, docs: int, seed: int = 0, paragraphs: tuple[int, int] = (1, 4)) -> Path:
    rng = random.Random(seed)
    with open(path, "w") as f:
        for i in range(docs):
            f.write(json.dumps({"id": f"doc{i}", "text": prose(rng, rng.randint(*paragraphs)), "domain": "general"}) + "\n")
    return path


@pytest.fixture
def prose_corpus(tmp_path) -> Path:
    """20 short prose documents (sentences and paragraphs)."""
    return write_corpus(tmp_path / "prose.jsonl", 20)


@pytest.fixture
def serve() -> Iterator[Callable[[Responder], OpenAIServer]]:
    """``serve(respond)`` starts a scripted OpenAI-compatible server on 127.0.0.1; all are stopped afterwards."""
    servers: list[OpenAIServer] = []

    def start(respond: Responder) -> OpenAIServer:
        srv = OpenAIServer(respond).start()
        servers.append(srv)
        return srv

    yield start
    for srv in servers:
        srv.stop()


@pytest.fixture
def make_prose() -> Callable[[int, int], str]:
    """``make_prose(seed, paragraphs)``: deterministic prose text."""
    return lambda seed, paragraphs: prose(random.Random(seed), paragraphs)


@pytest.fixture
def make_corpus() -> Callable[..., Path]:
    """``make_corpus(path, docs, seed=0, paragraphs=(1, 4))``: a JSONL prose corpus."""
    return write_corpus
