"""``midtrain augment`` against a failing annotator: an outage exits non-zero with the counts, is never COMPLETE nor
a cache hit, a fatal error stops at once, and in-process backends fail the same way."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from midtrain.augment.augment import read_augmented, run
from midtrain.augment.config import AugmentConfig
from midtrain.augment.rules import prompt_text
from midtrain.cli import main
from midtrain.errors import MidtrainError
from midtrain.llm.backends import OpenAIBackend, TransformersBackend
from midtrain.llm.config import BackendConfig
from midtrain.llm.prompts import load_prompt
from midtrain.llm.serve import HTTPFault, OpenAIServer


def argv_for(corpus: Path, out: Path, tokenizer_dir: Path, url: str) -> list[str]:
    return [
        "augment",
        str(corpus),
        "--out",
        str(out),
        "--tokenizer",
        str(tokenizer_dir),
        "--max-chunk-tokens",
        "64",
        "--batch-chunks",
        "4",
        "--annotator.backend",
        "openai",
        "--annotator.base-url",
        url,
        "--annotator.max-retries",
        "0",
    ]


def test_a_dead_server_is_a_loud_resumable_failure(tmp_path, prose_corpus, tokenizer_dir, capsys):
    with OpenAIServer(lambda p, b: p) as srv:
        url = srv.url  # nothing listens there any more
    out = tmp_path / "aug"
    argv = argv_for(prose_corpus, out, tokenizer_dir, url)
    assert main(argv) == 2
    err = capsys.readouterr().err
    records = list(read_augmented(out, status=None))
    n = len(records)
    assert n > 8 and f"augment: {n} of {n} chunks failed (connection refused ×{n}); re-run" in err
    assert all(r["status"] == "failed" and r["error"] == "connection refused" for r in records)
    assert not (out / "COMPLETE").exists() and json.loads((out / "midtrain.json").read_text())["status"] == "failed"
    assert main(argv) == 2  # a re-run is no cache hit: it asks again (and keeps one record per chunk)
    assert len(list(read_augmented(out, status=None))) == n


def test_bad_credentials_stop_at_once_with_a_hint(tmp_path, prose_corpus, tokenizer_dir, capsys, monkeypatch):
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)

    def respond(prompt: str, body: dict) -> str:
        raise HTTPFault(401, "invalid api key")

    with OpenAIServer(respond) as srv:
        assert main(argv_for(prose_corpus, tmp_path / "aug", tokenizer_dir, srv.url)) == 2
        assert srv.stats["requests"] == 1  # no retry storm: one request told it all
    err = capsys.readouterr().err
    assert "HTTP 401" in err and "not attempted after a fatal error" in err
    assert "check the API key: $OPENAI_API_KEY (api_key_env) is empty" in err


def test_a_rejection_is_not_a_failure_and_ignored_sampling_is_reported(tmp_path, prose_corpus, tokenizer_dir, monkeypatch):
    import midtrain.llm.base as base

    said: list[str] = []
    monkeypatch.setattr(base, "log", said.append)

    def respond(prompt: str, body: dict) -> str:  # a text-altering answer, the same at any temperature
        return "<think>t</think>" + (prompt_text(load_prompt("augment"), prompt) or "").upper()

    with OpenAIServer(respond) as srv:
        cfg = AugmentConfig.from_dict(
            dict(input=[str(prose_corpus)], out=str(tmp_path / "aug"), tokenizer=str(tokenizer_dir), max_chunk_tokens=64, batch_chunks=8)
        )
        m = run(cfg, backend=OpenAIBackend(BackendConfig(backend="openai", model="m", base_url=srv.url, max_retries=0))).metrics
    assert m["rejected"] == m["chunks"] > 0 and m["failed"] == 0 and (tmp_path / "aug" / "COMPLETE").is_file()
    assert len(said) == 1 and "came back identical" in said[0]  # the retries at temperature 0.7 sampled nothing new


def test_an_in_process_backend_exception_fails_its_items(tmp_path, prose_corpus, tokenizer_dir, monkeypatch):
    import midtrain.models.generation as generation
    from midtrain.models.tokenizer import load_tokenizer

    def boom(*a, **k):
        raise RuntimeError("CUDA out of memory")

    monkeypatch.setattr(generation, "generate", boom)
    cfg = AugmentConfig.from_dict(
        dict(input=[str(prose_corpus)], out=str(tmp_path / "aug"), tokenizer=str(tokenizer_dir), max_chunk_tokens=64, batch_chunks=8)
    )
    with pytest.raises(MidtrainError, match=r"chunks failed \(RuntimeError ×\d+\)"):
        run(
            cfg, backend=TransformersBackend(BackendConfig(backend="transformers"), model=object(), tokenizer=load_tokenizer(tokenizer_dir))
        )
    assert not (tmp_path / "aug" / "COMPLETE").exists()
