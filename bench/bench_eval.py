"""Eval throughput vs the backend's raw generation on the same prompts (target: overhead <= 10%).

Both arms run in this process on the same model and the same prompts (all 1,319 GSM8K test problems in the
``think`` prompt format by default), greedy, the same batch size:

- **raw**: ``midtrain.models.generation.generate(model, tokenizer, prompts, ...)`` — batched HF generation with a KV
  cache, nothing else;
- **eval**: ``midtrain eval`` end to end (``midtrain.eval.evaluate.run``): data loading, prompt building, model
  loading, generation in chunks, math-verify scoring, thinking-token counting, fsync'd appends to
  ``samples.jsonl``, the summary.

The model is a randomly initialised ``tiny`` Llama (3.2M parameters, DESIGN §4) with a 512-symbol BPE trained
on the GSM8K problems: random weights rarely stop early, so both arms generate ~max_new_tokens per prompt. The
arms alternate ``--repeats`` times and the fastest of each is compared, in wall time and in CPU time (including
any scoring worker process). The machine is shared with other jobs, so both vary by ±10-20% between repeats; the
steadiest number is the **in-run overhead** that ``midtrain eval`` records itself (``summary.json`` →
``generation``): time of the whole generate-score-write loop over the time spent inside the backend's generate
calls, measured batch by batch in the same run, so load from other jobs hits both alike. The greedy
completions of the two arms are checked to be identical (same batches, same padding).

    .venv/bin/python bench/bench_eval.py                 # full GSM8K, 32 new tokens, batch 32
    .venv/bin/python bench/bench_eval.py --limit 200     # quicker
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("MIDTRAIN_QUIET", "1")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")


def cpu_seconds() -> float:
    """User + system CPU time of this process and its finished children (the eval's scoring worker)."""
    import resource

    me, kids = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return me.ru_utime + me.ru_stime + kids.ru_utime + kids.ru_stime


def build_model(root: Path, preset: str) -> Path:
    from midtrain.eval.benchmarks import load_benchmark
    from midtrain.models.init import ModelInitConfig, init_model
    from midtrain.models.tokenizer import TokenizerConfig, train_tokenizer

    _, recs, _ = load_benchmark("gsm8k")
    corpus = root / "corpus.jsonl"
    corpus.write_text("".join(json.dumps({"text": r["problem"] + "\n" + r["solution"]}) + "\n" for r in recs), encoding="utf-8")
    train_tokenizer(TokenizerConfig(corpus=[str(corpus)], out=str(root / "tok"), vocab_size=512))
    init_model(ModelInitConfig(preset=preset, tokenizer=str(root / "tok"), out=str(root / "model"), seed=0, max_position_embeddings=2048))
    return root / "model"


def main() -> int:
    ap = argparse.ArgumentParser(allow_abbrev=False, description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--limit", type=int, default=0, help="GSM8K problems (0 = all 1,319)")
    ap.add_argument("--max-new-tokens", type=int, default=32)
    ap.add_argument("--batch-size", type=int, default=32)
    ap.add_argument("--preset", default="tiny")
    ap.add_argument("--repeats", type=int, default=2)
    ap.add_argument(
        "--threads",
        type=int,
        default=1,
        help="torch intra-op threads (on a shared 2-core machine 2 threads oversubscribe and run ~4x slower)",
    )
    ap.add_argument(
        "--prompt-format",
        choices=["think", "fewshot"],
        default="think",
        help="think: completions start inside <think> (a random model never closes it, so scoring is "
        "trivial); fewshot: every completion is parsed by math-verify (the costly case)",
    )
    ap.add_argument("--n-shots", type=int, default=0, help="worked examples with --prompt-format fewshot")
    args = ap.parse_args()

    import torch

    torch.set_num_threads(args.threads)
    from midtrain.eval.benchmarks import build_prompt, load_benchmark, stop_strings
    from midtrain.eval.evaluate import EvalConfig, run
    from midtrain.models import generation
    from midtrain.models.init import load_model
    from midtrain.models.tokenizer import load_tokenizer
    from midtrain.thoughts import opens_thought

    root = Path(tempfile.mkdtemp(prefix="bench_eval_"))
    try:
        t = time.time()
        model_dir = build_model(root, args.preset)
        print(f"setup: tokenizer + {args.preset} model in {time.time() - t:.1f}s; torch threads {torch.get_num_threads()}")
        _, recs, _ = load_benchmark("gsm8k", limit=args.limit)
        tok = load_tokenizer(model_dir)
        prompts = [build_prompt(r, "math", args.prompt_format, n_shots=args.n_shots) for r in recs]
        assert all(opens_thought(p) for p in prompts) == (args.prompt_format == "think")
        stop = stop_strings(args.prompt_format)
        model = load_model(model_dir)
        n_params = sum(p.numel() for p in model.parameters())
        generation.generate(model, tok, prompts[:8], max_new_tokens=4, batch_size=8)  # warm-up

        raw_times, eval_times, gen_loop, raw_cpu, eval_cpu, in_run = [], [], [], [], [], []
        raw_texts: list[str] = []
        eval_texts: dict[str, str] = {}
        tokens = 0
        for rep in range(args.repeats):
            t, c = time.perf_counter(), cpu_seconds()
            out = generation.generate(model, tok, prompts, max_new_tokens=args.max_new_tokens, batch_size=args.batch_size, stop=stop)
            raw_times.append(time.perf_counter() - t)
            raw_cpu.append(cpu_seconds() - c)
            raw_texts = [g[0].text for g in out]
            tokens = sum(g[0].tokens for g in out)
            out_dir = root / f"eval{rep}"
            cfg = EvalConfig.from_dict(
                dict(
                    model=str(model_dir),
                    out=str(out_dir),
                    benchmarks=["gsm8k"],
                    limit=args.limit,
                    prompt_format=args.prompt_format,
                    n_shots=args.n_shots,
                    max_new_tokens=args.max_new_tokens,
                    batch_size=args.batch_size,
                    backend="transformers",
                    progress=False,
                )
            )
            t, c = time.perf_counter(), cpu_seconds()
            run(cfg)
            eval_times.append(time.perf_counter() - t)
            eval_cpu.append(cpu_seconds() - c)
            summary = json.loads((out_dir / "summary.json").read_text())
            gen_loop.append(summary["generation"]["seconds"])
            g = summary["generation"]
            in_run.append(g["loop_seconds"] / g["generate_seconds"] - 1)
            eval_texts = {json.loads(line)["id"]: json.loads(line)["completion"] for line in (out_dir / "samples.jsonl").open()}
            print(
                f"repeat {rep}: raw {raw_times[-1]:.2f}s (cpu {raw_cpu[-1]:.2f}s)  eval {eval_times[-1]:.2f}s "
                f"(cpu {eval_cpu[-1]:.2f}s; model load {g['model_load_seconds']:.2f}s, generate calls "
                f"{g['generate_seconds']:.2f}s, loop {g['loop_seconds']:.2f}s: in-run overhead {in_run[-1]:+.1%})",
                flush=True,
            )
        same = sum(raw_texts[i] == eval_texts[r["id"]] for i, r in enumerate(recs))
        raw, ev, loop, rc, ec = min(raw_times), min(eval_times), min(gen_loop), min(raw_cpu), min(eval_cpu)
        scored = sum(1 for line in (root / f"eval{args.repeats - 1}" / "samples.jsonl").open() if json.loads(line)["answer"] is not None)
        print(
            f"\nprompts {len(prompts)} ({args.prompt_format})  new tokens {tokens}  model {n_params / 1e6:.2f}M params  "
            f"batch {args.batch_size}  completions with an extracted answer {scored}"
        )
        print(f"raw generate      {raw:8.2f}s  {tokens / raw:8.0f} tok/s")
        print(f"midtrain eval     {ev:8.2f}s  {tokens / ev:8.0f} tok/s  (end to end, incl. model load, scoring, writes)")
        print(f"eval loop         {loop:8.2f}s  {tokens / loop:8.0f} tok/s  (model load + generate + score + write)")
        print(f"cpu time          raw {rc:8.2f}s   eval {ec:8.2f}s")
        print(
            f"in-run overhead (eval loop / time inside generate - 1, batch by batch): "
            f"{', '.join(f'{x:+.1%}' for x in in_run)}; median {sorted(in_run)[len(in_run) // 2]:+.1%}"
        )
        print(
            f"overhead wall end to end {ev / raw - 1:+.1%}   wall loop {loop / raw - 1:+.1%}   "
            f"cpu end to end {ec / rc - 1:+.1%}   identical completions {same}/{len(recs)}"
        )
        return 0 if min(ev / raw, ec / rc) - 1 <= 0.10 and same == len(recs) else 1
    finally:
        shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))
    sys.exit(main())
