"""What the online curriculum costs per RL step, against TRL's sampler on the same prompts, in the same run.

The same ``midtrain rl`` (demo settings: G = 8, 32 prompts per step, 96-token budget, strict reward with first-error
credit, lr 1e-4 constant) runs with ``curriculum.mode`` off (every prompt in turn) and pool (drawn by measured
pass rate, zero-variance groups dropped and refilled up to ``--cap`` × the step's groups), alternating per round so
that load from other jobs hits both alike. Printed per mode: the median seconds per step and its generation share,
generated groups per requested group (overgen), the share of trained groups with a gradient (1 − zero-variance
share of what the loss sees), and informative groups per second — what a step of generation buys.

    .venv/bin/python bench/bench_rl_curriculum.py                                   # the shipped demo base
    .venv/bin/python bench/bench_rl_curriculum.py --model runs/demo/runs/seed-0/sft_think --steps 8 --rounds 2
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
from pathlib import Path

os.environ.setdefault("MIDTRAIN_QUIET", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

ROOT = Path(__file__).resolve().parents[1]


def run_rl(model: str, data: Path, out: Path, a: argparse.Namespace, mode: str) -> tuple[list[dict], dict]:
    from midtrain.train.rl import run
    from midtrain.train.rl_config import RLConfig

    cfg = RLConfig.from_dict(
        {
            "model": model,
            "data": [str(data)],
            "reward": "synthetic_strict",
            "loss": {"credit": "first_error"},
            "rollout": {"num_generations": 8, "max_completion_length": 96},
            "per_device_batch_size": a.prompts * 8,
            "optim": {"lr": 1e-4, "schedule": "constant", "warmup_steps": 5},
            "curriculum": {"mode": mode, "max_generation_factor": a.cap},
            "max_steps": a.steps,
            "seed": 0,
            "threads": a.threads,
            "save_every_steps": 0,
            "out": str(out),
        }
    )
    res = run(cfg)
    log = [json.loads(line) for line in (out / "log.jsonl").read_text().splitlines()]
    return log[a.warmup :], res.metrics


def main() -> int:
    ap = argparse.ArgumentParser(allow_abbrev=False, description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default=str(ROOT / "src" / "midtrain" / "assets" / "demo-base"))
    ap.add_argument("--prompts", type=int, default=32, help="Prompts per step (× G = 8 completions).")
    ap.add_argument("--steps", type=int, default=6)
    ap.add_argument("--warmup", type=int, default=1, help="Steps dropped from each run before the medians.")
    ap.add_argument("--rounds", type=int, default=1)
    ap.add_argument("--cap", type=float, default=2.0, help="curriculum.max_generation_factor")
    ap.add_argument("--threads", type=int, default=1)
    a = ap.parse_args()
    from midtrain.data.jsonl import write_jsonl
    from midtrain.synth.generate import SynthConfig, generate_problems

    logs: dict[str, list[dict]] = {"off": [], "pool": []}
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        data = root / "prompts.jsonl"
        spec = {"ops": "6-8", "n": 1000, "seed": 13, "render": "compact", "modulus": 10, "order": "dependency"}
        spec |= {"distractors": False, "const_max": 9, "max_multiplier": 9}
        write_jsonl(data, generate_problems(SynthConfig.from_dict(spec)))
        for r in range(a.rounds):
            for mode in ("off", "pool"):
                logs[mode] += run_rl(a.model, data, root / f"r{r}-{mode}", a, mode)[0]

    def med(mode: str, key: str) -> float:
        vals = [x[key] for x in logs[mode] if x.get(key) is not None]
        return statistics.median(vals) if vals else float("nan")

    print(f"model {a.model}; {a.prompts} prompts × 8 per step, {a.steps} steps × {a.rounds} round(s), {a.threads} thread(s), cap {a.cap}")
    print("| curriculum | s/step | gen share | overgen | trained groups with a gradient | informative groups/s |")
    print("|---|---|---|---|---|---|")
    for mode in ("off", "pool"):
        step_s = med(mode, "step_s")
        overgen = med(mode, "overgen") if mode == "pool" else 1.0
        # zero_var_frac is TRL's share over everything generated; refill keeps the informative ones for the loss
        zero = med(mode, "zero_var_frac")
        kept_informative = 1 - zero if mode == "off" else min(1.0, (1 - zero) * overgen)
        per_s = a.prompts * kept_informative / step_s
        print(f"| {mode} | {step_s:.2f} | {med(mode, 'gen_s') / step_s:.0%} | {overgen:.2f} | {kept_informative:.2f} | {per_s:.2f} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
