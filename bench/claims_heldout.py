"""Re-measure the demo's claims on fresh held-out problems (docs/claims.md), with standard errors over seeds.

    .venv/bin/python bench/claims_heldout.py --demo runs/demo                 # 600 problems per range
    .venv/bin/python bench/claims_heldout.py --demo runs/demo --per-range 900 --seed 2002

Steps: read the demo's rendering arguments from its ``runs/experiment.config.json`` (stage ``eval_set``), generate
``--per-range`` problems for each op range (ID 2–5, edge 6–8, hard 9–12; stratified per op) with a seed no demo
stage uses, drop any problem whose question also occurs in the demo's training data (SFT documents, RL prompts,
replay; the count is printed), then evaluate every checkpoint of every seed with ``midtrain eval``: greedy on all
ranges, and sampled (T = 1, ``--t1-samples`` per problem) for the checkpoints the claims compare sampled. Finally
it prints the arms table (mean ± s.e. over seeds) and the claims of ``midtrain.experiment.claims`` as Markdown and
writes ``claims.json`` under ``--out``. Evaluations are cached runs: re-running skips finished ones.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from statistics import mean, stdev

from midtrain.experiment.claims import better_claim, diff, hacking_claim, per_seed, ratio_claim, rl_adds_claim

RANGES = {"id": "2-5", "edge": "6-8", "hard": "9-12"}
GREEDY = ["sft_think", "rlmt", "rl_a", "rl_b", "rl_c", "rl_d", "rl_o"]  # checkpoints evaluated greedy
SAMPLED = ["sft_think", "rl_c", "rl_o"]  # ... and sampled at T = 1
TRAINING = ["id_data", "edge_docs", "rl_prompts"]  # shared demo stages whose problems are training data


def midtrain(*args: str) -> None:
    cmd = [sys.executable, "-m", "midtrain", *args]
    done = subprocess.run(cmd, capture_output=True, text=True, env={**os.environ, "OMP_NUM_THREADS": "1"})
    if done.returncode != 0:
        sys.exit(f"{' '.join(cmd)} failed:\n{done.stderr[-3000:]}")


def question(line: str) -> str:
    """The key two problems share when they ask the same thing: facts + query."""
    rec = json.loads(line)
    return rec["problem"] + rec["question"]


def questions(path: Path) -> set[str]:
    with path.open() as f:
        return {question(line) for line in f if line.strip()}


def heldout_sets(demo: Path, out: Path, per_range: int, seed: int) -> tuple[dict[str, Path], int]:
    """One JSONL per range, rendered like the demo's eval set, without problems the demo trained on."""
    cfg = json.loads((demo / "runs" / "experiment.config.json").read_text())
    render = {k: v for k, v in cfg["stages"]["eval_set"]["args"].items() if k not in ("ops", "n", "seed", "out")}
    flags = []
    for k, v in render.items():
        if isinstance(v, bool):
            flags.append(f"--{'' if v else 'no-'}{k.replace('_', '-')}")
        else:
            flags += [f"--{k.replace('_', '-')}", str(v)]
    seen: set[str] = set()
    for name in TRAINING:
        p = demo / "runs" / "shared" / f"{name}.jsonl"
        if p.is_file():
            seen |= questions(p)
    sets, dropped = {}, 0
    for i, (rng, ops) in enumerate(RANGES.items()):
        raw = out / f"heldout_{rng}.raw.jsonl"
        midtrain("synth", "generate", "--ops", ops, "--n", str(per_range), "--seed", str(seed + i), *flags, "--out", str(raw))
        keep = [line for line in raw.read_text().splitlines() if question(line) not in seen]
        dropped += per_range - len(keep)
        sets[rng] = out / f"heldout_{rng}.jsonl"
        sets[rng].write_text("\n".join(keep) + "\n")
    return sets, dropped


def evaluate(demo: Path, out: Path, sets: dict[str, Path], t1_samples: int, jobs: int) -> dict[str, dict[str, dict]]:
    """Run the evals; returns {seed: {stage name: {"out": dir}}} in the shape claims.per_seed reads."""
    both = out / "heldout_all.jsonl"
    both.write_text("".join(p.read_text() for p in sets.values()))
    stages: dict[str, dict[str, dict]] = {}
    calls: list[list[str]] = []
    for seed_dir in sorted((demo / "runs").glob("seed-*")):
        seed = seed_dir.name.split("-", 1)[1]
        for ck in GREEDY:
            model = seed_dir / ck
            if not (model / "model.safetensors").is_file():
                continue
            runs = {f"eval_{ck}": (both, "1", "0")}
            if ck in SAMPLED:
                runs[f"eval_{ck}_t1"] = (sets["edge"], str(t1_samples), "1.0")
            for name, (data, n, temp) in runs.items():
                dest = out / f"seed-{seed}" / name
                common = ["--ops.scale", "tiny", "--max-new-tokens", "128", "--batch-size", "128", "--no-progress"]
                calls.append(["eval", "--model", str(model), "--synthetic", str(data), "--n-samples", n, "--temperature", temp,
                              "--seed", seed, *common, "--out", str(dest)])  # fmt: skip
                stages.setdefault(seed, {})[name] = {"out": str(dest)}
    with ThreadPoolExecutor(jobs) as pool:  # one single-thread eval process per job
        list(pool.map(lambda c: midtrain(*c), calls))
    return stages


def arms_table(stages: dict[str, dict[str, dict]]) -> list[str]:
    rows = [
        "| checkpoint | decoding | " + " | ".join(f"{r} verified" for r in RANGES) + " | edge hacking rate |",
        "|---|---|---|---|---|---|",
    ]
    names = sorted({n for s in stages.values() for n in s}, key=lambda n: (n.endswith("_t1"), GREEDY.index(n[5:].removesuffix("_t1"))))
    for name in names:
        cells = []
        for rng in [*RANGES, "hack"]:
            vals = [r["hacking" if rng == "hack" else "verified"] for r in per_seed(stages, name, "edge" if rng == "hack" else rng)]
            se = stdev(vals) / len(vals) ** 0.5 if len(vals) > 1 else 0.0
            cells.append(f"{mean(vals):.3f} ± {se:.3f}" if vals else "–")
        dec = "T=1" if name.endswith("_t1") else "greedy"
        rows.append(f"| {name[5:].removesuffix('_t1')} | {dec} | " + " | ".join(cells) + " |")
    return rows


def main() -> int:
    ap = argparse.ArgumentParser(allow_abbrev=False, description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--demo", type=Path, required=True, help="A finished `midtrain demo --out DIR` directory.")
    ap.add_argument("--out", type=Path, default=None, help="Output directory (default: DEMO/heldout).")
    ap.add_argument("--per-range", type=int, default=600, help="Held-out problems per op range.")
    ap.add_argument("--t1-samples", type=int, default=4, help="Samples per problem of the T = 1 evaluations.")
    ap.add_argument("--jobs", type=int, default=2, help="Evaluations run in parallel (one CPU thread each).")
    ap.add_argument("--seed", type=int, default=1001, help="Generator seed of the held-out sets (+0/+1/+2 per range).")
    a = ap.parse_args()
    out = a.out or a.demo / "heldout"
    out.mkdir(parents=True, exist_ok=True)
    sets, dropped = heldout_sets(a.demo, out, a.per_range, a.seed)
    stages = evaluate(a.demo, out, sets, a.t1_samples, a.jobs)
    claims = [
        ratio_claim(stages, "eval_rl_d", "eval_rl_a"),
        better_claim(stages, "eval_rl_c", "eval_rl_b", cid="thoughts_vs_raw", claim="(c) > (b)", paper="Thinking mid-training"),
        rl_adds_claim(stages, {"greedy": ("eval_rl_c", "eval_sft_think"), "T=1": ("eval_rl_c_t1", "eval_sft_think_t1")}),
        hacking_claim(stages, "eval_rl_o_t1", "eval_rl_c_t1", "eval_sft_think_t1"),
        better_claim(
            stages, "eval_rlmt", "eval_sft_think", cid="rlmt_adds_over_sft_think", claim="RLMT > SFT(think)", paper="Thinking mid-training"
        ),
    ]
    claims = [c for c in claims if c is not None]
    rlmt = diff(per_seed(stages, "eval_rlmt"), per_seed(stages, "eval_sft_think"))
    n = {r: len(p.read_text().splitlines()) for r, p in sets.items()}
    print(f"held-out problems per range: {n} (dropped {dropped} seen in training); seeds: {sorted(stages)}\n")
    print("\n".join(arms_table(stages)))
    print("\n| claim | measured | holds |\n|---|---|---|")
    for c in claims:
        measured = "; ".join(f"{k}: {v}" for k, v in c["measured"].items())
        print(f"| {c['claim']} | {measured} | {'yes' if c['holds'] else 'no'} |")
    (out / "claims.json").write_text(json.dumps({"problems": n, "dropped": dropped, "claims": claims, "rlmt_vs_sft": rlmt}, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
