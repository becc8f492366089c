"""Annotator modes of ``midtrain augment``: rewrite vs insert, acceptance rate and generated tokens per accepted chunk.

Both modes annotate the same ``--chunks`` held-out chunks (the WikiText-2 *test* split by default, cut to
``--max-chunk-tokens`` with the model's own tokenizer) through the same in-process backend
(:class:`midtrain.llm.backends.TransformersBackend`, greedy first attempt, ``--retries`` re-asks at temperature 0.7):

- **rewrite**: the shipped ``augment`` prompt; the model re-emits the chunk with ``<think>`` spans, and any change to
  the text rejects it (``text_altered``);
- **insert**: the shipped ``insert`` prompt, ``--points`` insertion points per chunk; the model writes only the
  thoughts and the text is kept by construction.

Printed per mode: chunks, accepted, acceptance rate, rejection reasons, generated tokens (the backend's count of
completion tokens, retries included), generated tokens per accepted chunk and seconds; then the ratios insert / rewrite.

    .venv/bin/python bench/bench_augment_modes.py --model runs/smollm2-135m-instruct --chunks 16
    .venv/bin/python bench/bench_augment_modes.py            # no --model: a random nano Llama (checks that it runs)
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import tempfile
import time
from pathlib import Path
from typing import Any

os.environ.setdefault("MIDTRAIN_QUIET", "1")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

SHARED = Path(__file__).resolve().parents[2] / "shared" / "datasets" / "text_corpus"


def held_out_chunks(corpus: str, tokenizer: Any, n: int, max_tokens: int, skip: int) -> list[str]:
    """``n`` chunks with at least three sentences, after skipping ``skip`` documents (chunking as augment does)."""
    from midtrain.augment.chunking import chunk_text, sentences
    from midtrain.data.corpus import iter_records

    out: list[str] = []
    for k, rec in enumerate(iter_records(corpus)):
        if k < skip or not isinstance(rec.get("text"), str):
            continue
        for text, _ in chunk_text(rec["text"], tokenizer, max_tokens):
            if len(sentences(text)) >= 3 and "<think>" not in text:
                out.append(text)
                if len(out) == n:
                    return out
    return out


def run_mode(mode: str, corpus: Path, out: Path, tok_dir: str, backend: Any, args: argparse.Namespace) -> dict[str, Any]:
    from midtrain.augment.augment import run
    from midtrain.augment.config import AugmentConfig

    cfg = AugmentConfig.from_dict(
        {
            "input": [str(corpus)],
            "out": str(out),
            "tokenizer": tok_dir,
            "max_chunk_tokens": args.max_chunk_tokens,
            "max_new_tokens": args.rewrite_new_tokens,
            "retries": args.retries,
            "batch_chunks": args.batch,
            "mode": mode,
            "insert": {"points": args.points, "max_new_tokens": args.thought_tokens},
        }
    )
    gen0 = backend.stats["completion_tokens"]
    t0 = time.perf_counter()
    m = run(cfg, backend=backend).metrics
    gen = backend.stats["completion_tokens"] - gen0
    return {
        "mode": mode,
        "chunks": m["chunks"],
        "accepted": m["accepted"],
        "rate": m["acceptance_rate"],
        "reasons": m["rejected_by_reason"] | {f"failed:{r}": k for r, k in m["failed_by_reason"].items()},
        "gen_tokens": gen,
        "gen_per_accepted": gen / m["accepted"] if m["accepted"] else float("inf"),
        "thoughts_per_accepted": m["thoughts_per_accepted_chunk"],
        "seconds": time.perf_counter() - t0,
    }


def main() -> None:
    ap = argparse.ArgumentParser(allow_abbrev=False, description=__doc__.split("\n\n")[0])
    ap.add_argument("--model", default="", help="HF causal LM directory with its tokenizer; default: a random nano Llama")
    ap.add_argument("--corpus", default=str(SHARED / "wikitext2_raw_test.jsonl"))
    ap.add_argument("--skip-docs", type=int, default=0, help="documents of the corpus skipped first")
    ap.add_argument("--chunks", type=int, default=8)
    ap.add_argument("--max-chunk-tokens", type=int, default=192)
    ap.add_argument("--rewrite-new-tokens", type=int, default=0, help="rewrite budget per chunk; 0: 2 x chunk + 256")
    ap.add_argument("--thought-tokens", type=int, default=96, help="insert budget per thought")
    ap.add_argument("--points", type=int, default=3)
    ap.add_argument("--retries", type=int, default=1)
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--threads", type=int, default=0, help="torch threads; 0: torch's default")
    ap.add_argument("--dtype", default="float32", choices=["float32", "bfloat16"])
    ap.add_argument("--json", default="", help="also write the rows to this file")
    args = ap.parse_args()

    from midtrain.llm.backends import TransformersBackend
    from midtrain.llm.config import BackendConfig
    from midtrain.models.tokenizer import load_tokenizer

    root = Path(tempfile.mkdtemp(prefix="bench_augment_modes_"))
    try:
        model_dir = args.model
        if not model_dir:
            from midtrain.models.init import ModelInitConfig, init_model
            from midtrain.models.tokenizer import TokenizerConfig, train_tokenizer

            train_tokenizer(TokenizerConfig(corpus=[str(SHARED / "pride_and_prejudice.jsonl")], out=str(root / "tok"), vocab_size=1024))
            init_model(ModelInitConfig(preset="nano", tokenizer=str(root / "tok"), out=str(root / "nano"), seed=0))
            model_dir = str(root / "nano")
        tok = load_tokenizer(model_dir)
        chunks = held_out_chunks(args.corpus, tok, args.chunks, args.max_chunk_tokens, args.skip_docs)
        corpus = root / "chunks.jsonl"
        corpus.write_text("".join(json.dumps({"id": f"c{i}", "text": t}) + "\n" for i, t in enumerate(chunks)))
        spec = BackendConfig(backend="transformers", model=model_dir, batch_size=args.batch, dtype=args.dtype, num_threads=args.threads)
        backend = TransformersBackend(spec)
        rows = [run_mode(mode, corpus, root / mode, model_dir, backend, args) for mode in ("rewrite", "insert")]
    finally:
        shutil.rmtree(root, ignore_errors=True)
    print(
        f"model {args.model or 'random nano Llama'}; {len(chunks)} chunks of <= {args.max_chunk_tokens} tokens from {Path(args.corpus).name}"
    )
    print(
        "| mode | chunks | accepted | acceptance | generated tokens | gen tokens / accepted chunk | thoughts / accepted | s | rejected by reason |"
    )
    print("|---|---|---|---|---|---|---|---|---|")
    for r in rows:
        print(
            f"| {r['mode']} | {r['chunks']} | {r['accepted']} | {r['rate']:.1%} | {r['gen_tokens']:,} | "
            f"{r['gen_per_accepted']:,.0f} | {r['thoughts_per_accepted']} | {r['seconds']:.0f} | {r['reasons']} |"
        )
    rw, ins = rows
    rate = f"{ins['rate'] / rw['rate']:.2f}x" if rw["rate"] else ("inf" if ins["rate"] else "n/a (both 0)")
    cost = f"{rw['gen_per_accepted'] / ins['gen_per_accepted']:.2f}x" if ins["accepted"] and rw["accepted"] else "n/a"
    print(f"insert / rewrite: acceptance {rate}; rewrite / insert: generated tokens per accepted chunk {cost}")
    if args.json:
        Path(args.json).write_text(json.dumps(rows, indent=1) + "\n")


if __name__ == "__main__":
    main()
