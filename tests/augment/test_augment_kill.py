"""kill -9 during ``midtrain augment`` over real HTTP, re-run the same command: zero lost, zero duplicated."""

from __future__ import annotations

import hashlib
import json
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from midtrain.augment.chunking import shard_chunks
from midtrain.augment.config import AugmentConfig
from midtrain.augment.rules import programmatic_annotation, prompt_text
from midtrain.data.jsonl import iter_jsonl
from midtrain.llm.prompts import load_prompt
from midtrain.llm.serve import HTTPFault
from midtrain.models.tokenizer import load_tokenizer

OUTAGE = [True]  # while true, ~5% of chunks get HTTP 500


def respond(prompt: str, body: dict) -> str:
    """A valid annotation after a short delay; ~10% of chunks altered, ~5% HTTP 500 during the outage."""
    time.sleep(0.01)
    text = prompt_text(load_prompt("augment"), prompt) or ""
    h = int(hashlib.sha256(text.encode()).hexdigest(), 16) % 100
    if h < 5 and OUTAGE[0]:
        raise HTTPFault(500)
    answer = programmatic_annotation(text)
    return answer.replace("e", "E", 1) if h < 15 else answer


def shard_lines(out: Path) -> int:
    return sum(p.read_bytes().count(b"\n") for p in (out / "shards").glob("*.jsonl")) if (out / "shards").is_dir() else 0


@pytest.mark.slow
def test_kill_9_then_rerun_loses_and_duplicates_nothing(tmp_path, tokenizer_dir, make_corpus, serve):
    corpus = make_corpus(tmp_path / "corpus.jsonl", 70, seed=5, paragraphs=(2, 5))
    out = tmp_path / "aug"
    srv = serve(respond)
    args = [
        str(corpus),
        "--out",
        str(out),
        "--tokenizer",
        str(tokenizer_dir),
        "--max-chunk-tokens",
        "48",
        "--num-shards",
        "2",
        "--batch-chunks",
        "4",
        "--retries",
        "0",
        "--annotator.backend",
        "openai",
        "--annotator.base-url",
        srv.url,
        "--annotator.max-retries",
        "0",
        "--annotator.max-concurrency",
        "4",
    ]
    cfg = AugmentConfig.from_dict(
        {"input": [str(corpus)], "out": str(out), "tokenizer": str(tokenizer_dir), "max_chunk_tokens": 48, "num_shards": 2}
    )
    tok = load_tokenizer(tokenizer_dir)
    expected = {c.id for i in range(2) for c in shard_chunks(cfg, tok, i)}
    assert len(expected) >= 200  # "a few hundred chunks"

    cmd = [sys.executable, "-m", "midtrain", "augment", *args]
    env = {**os.environ, "MIDTRAIN_QUIET": "1"}
    rng = random.Random(0)
    kills = 0
    for threshold in (len(expected) // 4, 2 * len(expected) // 3):
        proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        deadline = time.time() + 120
        while proc.poll() is None and shard_lines(out) < threshold and time.time() < deadline:
            time.sleep(0.005)
        time.sleep(rng.uniform(0, 0.05))  # "at any moment": not only right after a write
        if proc.poll() is None:
            os.kill(proc.pid, signal.SIGKILL)
            kills += 1
        proc.wait(timeout=30)
        assert proc.returncode in (2, -signal.SIGKILL), proc.stderr.read().decode()[-2000:]  # 2: failed chunks
    assert kills >= 1 and not (out / "COMPLETE").exists()

    OUTAGE[0] = True
    failing = subprocess.run(cmd + ["--json"], env=env, capture_output=True, text=True, timeout=300)
    assert failing.returncode == 2 and "chunks failed (HTTP 500" in failing.stderr, failing.stderr[-2000:]
    assert not (out / "COMPLETE").exists()  # an outage is not a finished run
    OUTAGE[0] = False  # the server recovers: the re-run asks for the failed chunks only
    final = subprocess.run(cmd + ["--json"], env=env, capture_output=True, text=True, timeout=300)
    assert final.returncode == 0, final.stderr[-2000:]
    metrics = json.loads(final.stdout)["metrics"]

    ids = []
    for p in sorted((out / "shards").glob("*.jsonl")):
        ids += [r["id"] for r in iter_jsonl(p)]  # strict reader: no torn line anywhere
    assert len(ids) == len(set(ids)), "duplicated chunks"
    assert set(ids) == expected, "lost chunks"
    assert metrics["chunks"] == len(expected) and (out / "COMPLETE").is_file()
    assert metrics["accepted"] + metrics["rejected"] == len(expected)
    assert metrics["failed"] == 0 and metrics["rejected_by_reason"].get("text_altered", 0) > 0
