"""Throughput of the synthetic world: generation (problems/s) and process verification (completions/s).

Generation at op 5, 10 and 20 for both renderings (forward and reverse mixed half and half), against a baseline
measured in the same run: building the bare graphs (``world.build_graph``, no naming, rendering or dedup), so the
ratio is the cost of turning a graph into a checked, deduplicated record. Verification of gold completions and of
one-value-corrupted completions, against an outcome-only baseline (find ``<answer>`` and compare the integer), so
the ratio is the price of checking every step. Also the worst time of a hostile completion.

    .venv/bin/python bench/bench_synth.py            # ~1 min on 2 cores
    .venv/bin/python bench/bench_synth.py --quick    # a smoke run
"""

from __future__ import annotations

import argparse
import os
import platform
import random
import re
import sys
import time

os.environ.setdefault("MIDTRAIN_QUIET", "1")

from midtrain.synth.generate import SynthConfig, generate_problems
from midtrain.synth.render import split_steps  # noqa: E402
from midtrain.synth.verify import verify  # noqa: E402
from midtrain.synth.world import build_graph  # noqa: E402

ANSWER = re.compile(r"<answer>\s*(-?\d+)")


def best_of(fn, repeats: int) -> float:
    """Best wall time of ``repeats`` runs (the least disturbed by other processes)."""
    best = float("inf")
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - t0)
    return best


def corrupt(rec: dict) -> str:
    """The gold completion with the value of its first computed step changed (parses, fails one step)."""
    steps = split_steps(rec["solution"], rec["render"])
    i = next(j for j, s in enumerate(steps) if "=" in s)
    compact = rec["render"] == "compact"
    steps[i] = steps[i][:-1] + ("+1." if compact else " + 1.")
    sol = ("" if compact else " ").join(steps)
    return ("" if compact else " ") + sol + rec["completion"][len(rec["solution"]) + (0 if compact else 1) :]


def outcome_only(rec: dict, completion: str) -> bool:
    m = ANSWER.search(completion)
    return m is not None and int(m.group(1)) == int(rec["answer"])


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(allow_abbrev=False, description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="Few problems, one repeat (a smoke run).")
    args = ap.parse_args(argv)
    n, repeats = (60, 1) if args.quick else (400, 3)
    print(f"# synth bench: python {platform.python_version()}, {os.cpu_count()} CPUs, n={n} per cell, best of {repeats}")
    print(
        "\n| op | render | generate problems/s | bare graphs/s (baseline) | ratio | verify gold /s | verify corrupted /s "
        "| outcome-only /s (baseline) | ratio |"
    )
    print("|---|---|---|---|---|---|---|---|---|")
    hostile_worst = 0.0
    for op in (5, 10, 20):
        for render in ("natural", "compact"):
            cfg = SynthConfig(
                ops=str(op),
                n=n,
                seed=op,
                mode="mixed",
                render=render,
                modulus=10 if render == "compact" else None,
                contexts=["zoo", "teachers", "movies"],
            )
            recs: list[dict] = []

            def gen() -> None:
                recs[:] = generate_problems(cfg)

            t_gen = best_of(gen, repeats)

            def bare() -> None:
                rng, spec = random.Random(op), cfg.spec()
                made = 0
                while made < n:
                    g, _ = build_graph(op, "reverse" if made % 2 else "forward", rng, spec, True)
                    made += g is not None

            t_bare = best_of(bare, repeats)
            bad = [corrupt(r) for r in recs]
            assert all(verify(r, r["completion"]).verified for r in recs)
            assert not any(verify(r, c).verified for r, c in zip(recs, bad))
            t_gold = best_of(lambda: [verify(r, r["completion"]) for r in recs], repeats)
            t_bad = best_of(lambda: [verify(r, c) for r, c in zip(recs, bad)], repeats)
            t_out = best_of(lambda: [outcome_only(r, r["completion"]) for r in recs], repeats)
            print(
                f"| {op} | {render} | {n / t_gen:,.0f} | {n / t_bare:,.0f} | {t_gen / t_bare:.1f}x slower | "
                f"{n / t_gold:,.0f} | {n / t_bad:,.0f} | {n / t_out:,.0f} | {t_gold / t_out:.0f}x slower |"
            )
            for hostile in ("a=1." * 16_000, "(" * 60_000, "x" * 10_000_000, "Define the x as a; " * 3_000):
                t0 = time.perf_counter()
                verify(recs[0], hostile)
                hostile_worst = max(hostile_worst, time.perf_counter() - t0)
    print(f"\nworst hostile completion: {hostile_worst * 1000:.0f} ms")
    return 0


if __name__ == "__main__":
    sys.exit(main())
