"""Augmentation pipeline throughput vs the backend's raw generate on the same prompts (target: overhead ≤ 10%).

Both arms run in this process with the same in-process backend (a randomly initialised ``nano`` Llama behind
:class:`midtrain.llm.backends.TransformersBackend`, i.e. ``midtrain.models.generation.generate`` with KV cache), greedy,
on the same prompts in the same batches:

- **raw**: ``backend.generate(batch, max_new_tokens=T)`` for each batch of ``batch_chunks`` prompts, where the
  prompts are the shipped annotator template filled with the chunks the pipeline makes — nothing else;
- **pipeline**: ``midtrain.augment.augment.run`` end to end into a fresh directory: corpus reading, token-budgeted
  chunking with the target tokenizer, prompt filling, the same generate calls, preservation check of every answer,
  fsync'd shard appends, ``.done`` marker, manifest and run metadata (input hashing included).

Random weights rarely stop early, so every prompt generates ~T tokens in both arms; ``retries=0`` so the
pipeline makes exactly the raw arm's calls, and the answers it stores (all rejected) are checked to equal the raw
completions. The arms alternate ``--repeats`` times (ABBA order) and the fastest of each is compared, by wall time
and by CPU time of the process (the machine is shared: CPU time is the steadier measure).
Because the machine is shared, run-to-run noise (±20%) exceeds the effect measured, so two steadier numbers are
printed too: the pipeline's wall time *outside* ``backend.generate`` in the same run (the exact overhead, no
cross-run noise), and the pipeline with the programmatic annotator (no model): the per-chunk cost of everything
except generation, which bounds the overhead for any backend.

    .venv/bin/python bench/bench_augment.py                     # 4 chapters, 128-token chunks, 64 new tokens
    .venv/bin/python bench/bench_augment.py --docs 2 --repeats 2  # quicker
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("MIDTRAIN_QUIET", "1")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

SHARED = Path(__file__).resolve().parents[2] / "shared" / "datasets" / "text_corpus"


def main() -> None:
    ap = argparse.ArgumentParser(allow_abbrev=False, description=__doc__.split("\n\n")[0])
    ap.add_argument("--corpus", default=str(SHARED / "pride_and_prejudice.jsonl"))
    ap.add_argument("--docs", type=int, default=4, help="first N documents of the corpus")
    ap.add_argument("--max-chunk-tokens", type=int, default=128)
    ap.add_argument("--max-new-tokens", type=int, default=64)
    ap.add_argument("--batch", type=int, default=16, help="batch_chunks = generate batch size")
    ap.add_argument("--threads", type=int, default=1, help="torch threads (1 is fastest on a shared machine)")
    ap.add_argument("--repeats", type=int, default=4)
    args = ap.parse_args()

    from midtrain.augment.augment import read_augmented, run
    from midtrain.augment.chunking import shard_chunks
    from midtrain.augment.config import AugmentConfig
    from midtrain.llm.backends import TransformersBackend
    from midtrain.llm.config import BackendConfig
    from midtrain.llm.prompts import fill_template, load_prompt
    from midtrain.models.init import ModelInitConfig, init_model
    from midtrain.models.tokenizer import TokenizerConfig, load_tokenizer, train_tokenizer

    root = Path(tempfile.mkdtemp(prefix="bench_augment_"))
    try:
        tok_dir, model_dir = root / "tok", root / "nano"
        train_tokenizer(TokenizerConfig(corpus=[args.corpus], out=str(tok_dir), vocab_size=1024))
        init_model(ModelInitConfig(preset="nano", tokenizer=str(tok_dir), out=str(model_dir), seed=0))
        backend = TransformersBackend(
            BackendConfig(backend="transformers", model=str(model_dir), batch_size=args.batch, num_threads=args.threads)
        )
        inner = {"wall": 0.0}
        generate = backend.generate

        def timed_generate(prompts, **kw):  # time spent inside the backend, whichever thread calls it
            w = time.perf_counter()
            try:
                return generate(prompts, **kw)
            finally:
                inner["wall"] += time.perf_counter() - w

        backend.generate = timed_generate  # type: ignore[method-assign]
        tok = load_tokenizer(tok_dir)

        def cfg(out: Path, annotator: str = "transformers") -> AugmentConfig:
            return AugmentConfig.from_dict(
                {
                    "input": [args.corpus],
                    "out": str(out),
                    "tokenizer": str(tok_dir),
                    "max_documents": args.docs,
                    "max_chunk_tokens": args.max_chunk_tokens,
                    "max_new_tokens": args.max_new_tokens,
                    "retries": 0,
                    "batch_chunks": args.batch,
                    "annotator": {"backend": annotator, "model": str(model_dir)},
                }
            )

        template = load_prompt("augment")
        chunks = shard_chunks(cfg(root / "x"), tok, 0)
        prompts = [fill_template(template, text=c.text) for c in chunks]
        prompt_tokens = sum(len(ids) for ids in tok(prompts, add_special_tokens=False)["input_ids"])

        def raw() -> list[str]:
            out: list[str] = []
            for s in range(0, len(prompts), args.batch):
                out += [o[0] for o in backend.generate(prompts[s : s + args.batch], max_new_tokens=args.max_new_tokens)]
            return out

        def timed(fn):  # (wall seconds, CPU seconds of all threads of this process, result)
            w, c = time.perf_counter(), time.process_time()
            res = fn()
            return time.perf_counter() - w, time.process_time() - c, res

        raw()  # warm-up (allocator, kernels)
        t: dict[str, list[tuple[float, float]]] = {"raw": [], "pipe": [], "prog": []}
        raw_out: list[str] = []
        pipe_out: dict[str, str] = {}
        res = None
        outside: list[float] = []  # pipeline wall time outside backend.generate, per run
        for r in range(args.repeats):
            for arm in ("raw", "pipe") if r % 2 == 0 else ("pipe", "raw"):  # alternate the order (ABBA)
                if arm == "raw":
                    w, c, raw_out = timed(raw)
                else:
                    inner["wall"] = 0.0
                    w, c, res = timed(lambda: run(cfg(root / f"pipe{r}"), backend=backend))
                    outside.append(w - inner["wall"])
                    pipe_out = {rec["id"]: rec.get("answer", "") for rec in read_augmented(root / f"pipe{r}", status=None)}
                t[arm].append((w, c))
            w, c, _ = timed(lambda: run(cfg(root / f"prog{r}", "programmatic")))  # the stage builds its rule annotator
            t["prog"].append((w, c))
        same = [pipe_out.get(c.id) for c in chunks] == raw_out
        gen_tokens = backend.stats["completion_tokens"] // (2 * args.repeats + 1)
        best = {k: (min(x[0] for x in v), min(x[1] for x in v)) for k, v in t.items()}
        n, ct = len(chunks), res.metrics["chunk_tokens"]
        print(
            f"chunks {n} (≤{args.max_chunk_tokens} tokens; {ct} corpus tokens), prompt tokens {prompt_tokens}, "
            f"generated ~{gen_tokens} tokens per arm, batch {args.batch}, threads {args.threads}, repeats "
            f"{args.repeats}; identical completions: {same}"
        )
        print("| arm | wall s (best) | CPU s (best) | chunks/s | corpus tok/s | gen tok/s |")
        print("|---|---|---|---|---|---|")
        for key, label in (("raw", "raw generate (baseline)"), ("pipe", "augment pipeline")):
            w, c = best[key]
            print(f"| {label} | {w:.2f} | {c:.2f} | {n / w:.2f} | {ct / w:,.0f} | {gen_tokens / w:,.0f} |")
        w, c = best["prog"]
        print(f"| pipeline, programmatic annotator (no model) | {w:.2f} | {c:.2f} | {n / w:.1f} | {ct / w:,.0f} | – |")

        def median(xs):
            return sorted(xs)[len(xs) // 2]

        med_raw, med_pipe = median([x[0] for x in t["raw"]]), median([x[0] for x in t["pipe"]])
        print(
            f"overhead: best wall {100 * (best['pipe'][0] / best['raw'][0] - 1):+.1f}%, best CPU "
            f"{100 * (best['pipe'][1] / best['raw'][1] - 1):+.1f}%, median wall {100 * (med_pipe / med_raw - 1):+.1f}% "
            f"(target ≤ 10%); non-generation cost "
            f"{1000 * best['prog'][0] / n:.2f} ms/chunk ({100 * best['prog'][0] / best['raw'][0]:.1f}% of raw); "
            f"wall runs raw {[round(x[0], 2) for x in t['raw']]} pipeline {[round(x[0], 2) for x in t['pipe']]}"
        )
        med = sorted(outside)[len(outside) // 2]
        print(
            f"in-run decomposition: pipeline time outside backend.generate {med:.3f} s (median) = "
            f"{100 * med / best['raw'][0]:.1f}% of the raw arm; per run {[round(x, 3) for x in outside]}"
        )
        if not same:
            print("WARNING: the pipeline's answers differ from the raw completions", file=sys.stderr)
    finally:
        shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    main()
