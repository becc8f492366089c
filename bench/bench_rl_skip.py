"""RL step with and without skipping zero-advantage completions (``loss.skip_zero_advantage``), same run otherwise.

Under Dr. GRPO with β = 0 a completion whose advantage is 0 (every completion of a group whose G rewards are
equal) adds exactly 0 to the loss and the gradient, but costs a forward and backward like any other. ``midtrain
rl`` skips those rows (:func:`midtrain.train.grpo.informative_rows`). This bench runs the same ``midtrain rl``
(demo settings: G = 8, 32 prompts per step, process reward on the demo's edge prompts) twice per round, skip on
and off, alternating so that load from other jobs hits both alike, and prints per-step medians of the training
and total seconds, the zero-variance share, the ratio off/on, and the largest weight difference between the two
final models (0 up to float rounding: the skip changes no update).

    .venv/bin/python bench/bench_rl_skip.py                                  # the shipped demo base
    .venv/bin/python bench/bench_rl_skip.py --model runs/demo/runs/seed-0/sft_think --steps 8 --rounds 2
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


def run_rl(model: str, data: Path, out: Path, a: argparse.Namespace, skip: bool) -> list[dict]:
    from midtrain.train.rl import run
    from midtrain.train.rl_config import RLConfig

    cfg = RLConfig.from_dict(
        {
            "model": model,
            "data": [str(data)],
            "task": "answer",
            "reward": "synthetic_process",
            "rollout": {"num_generations": 8, "max_completion_length": 96},
            "per_device_batch_size": a.prompts * 8,
            "optim": {"lr": 1e-4, "schedule": "constant", "warmup_steps": 5},
            "max_steps": a.steps,
            "seed": 0,
            "threads": a.threads,
            "save_every_steps": 0,
            "loss": {"skip_zero_advantage": skip},
            "out": str(out),
        }
    )
    run(cfg)
    return [json.loads(line) for line in (out / "log.jsonl").read_text().splitlines()][a.warmup :]


def max_weight_diff(x: Path, y: Path) -> float:
    from safetensors.torch import load_file

    wx, wy = load_file(str(x / "model.safetensors")), load_file(str(y / "model.safetensors"))
    return max(float((wx[k].float() - wy[k].float()).abs().max()) for k in wx)


def main() -> int:
    ap = argparse.ArgumentParser(allow_abbrev=False, description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default=str(ROOT / "src" / "midtrain" / "assets" / "demo-base"))
    ap.add_argument("--prompts", type=int, default=32, help="Prompts per step (× G = 8 completions).")
    ap.add_argument("--steps", type=int, default=6)
    ap.add_argument("--warmup", type=int, default=1, help="Steps dropped from each run before the medians.")
    ap.add_argument("--rounds", type=int, default=1)
    ap.add_argument("--threads", type=int, default=1)
    a = ap.parse_args()
    from midtrain.data.jsonl import write_jsonl
    from midtrain.synth.generate import SynthConfig, generate_problems

    rows: dict[bool, list[dict]] = {True: [], False: []}
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        data = root / "prompts.jsonl"
        spec = {"ops": "6-8", "n": 400, "seed": 13, "render": "compact", "modulus": 10, "order": "dependency"}
        spec |= {"distractors": False, "const_max": 9, "max_multiplier": 9}
        write_jsonl(data, generate_problems(SynthConfig.from_dict(spec)))
        for r in range(a.rounds):
            for skip in (True, False):
                rows[skip] += run_rl(a.model, data, root / f"r{r}-{skip}", a, skip)
        diff = max_weight_diff(root / "r0-True", root / "r0-False")

    def med(skip: bool, key: str) -> float:
        return statistics.median(x[key] for x in rows[skip])

    print(f"model {a.model}; {a.prompts} prompts × 8 per step, {a.steps} steps × {a.rounds} round(s), {a.threads} thread(s)")
    print(f"zero-variance groups: {med(True, 'zero_var_frac'):.2f} of each step (median)")
    print("| | train s/step | step s/step | tokens trained/step |\n|---|---|---|---|")
    for skip in (False, True):
        toks = (
            statistics.median(b["tokens_trained"] - a_["tokens_trained"] for a_, b in zip(rows[skip], rows[skip][1:]))
            if len(rows[skip]) > 1
            else 0
        )
        print(f"| skip {'on' if skip else 'off'} | {med(skip, 'train_s'):.2f} | {med(skip, 'step_s'):.2f} | {toks:,.0f} |")
    print(
        f"ratio off/on: train {med(False, 'train_s') / med(True, 'train_s'):.2f}x, step {med(False, 'step_s') / med(True, 'step_s'):.2f}x"
    )
    print(f"largest weight difference between the final models: {diff:.2e}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
