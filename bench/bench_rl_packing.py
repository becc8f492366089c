"""RL step with and without length-sorted, trimmed training chunks (``loss.pack_rows``), same run otherwise.

TRL forwards a micro-batch as one ``[n, P + T]`` batch padded to the longest prompt and the longest completion of the
generation batch; ``loss.pack_rows: k`` forwards the rows sorted by length in chunks of k, each trimmed to the
columns its rows use (:mod:`midtrain.train.rl_packing`: the same log-probs, so the same loss and gradient). This
bench runs the demo's RL post-training step (``configs/demo.yaml``'s ``rl_a`` arguments: G = 8, 32 prompts per step,
96-token budget, the strict process reward with first_error credit, on the demo's edge prompts) once per
``--rows`` value per round, rotating the order each round so that load from other jobs hits every arm alike, and
prints per-step medians of the training, generation and whole-step seconds, the positions the training forwards
covered (padding included) per step, the ratios to the first value (0: TRL's padded batch), and the largest weight
difference between each final model and the first one (float rounding: packing changes no update).

    .venv/bin/python bench/bench_rl_packing.py                                   # the shipped demo base, 0 vs 8 vs 32
    .venv/bin/python bench/bench_rl_packing.py --model runs/demo/runs/seed-0/sft_think --rows 0,32 --rounds 2
"""

from __future__ import annotations

import argparse
import functools
import json
import os
import statistics
import sys
import tempfile
from pathlib import Path

os.environ.setdefault("MIDTRAIN_QUIET", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

ROOT = Path(__file__).resolve().parents[1]
FORWARDED = [0]  # training-forward positions of the run in progress, padding included (count_forwards)


def count_forwards() -> None:
    """Count the positions every gradient-tracking forward of TRL's scorer covers (the packed path calls it per chunk)."""
    import torch
    from trl import GRPOTrainer

    original = GRPOTrainer._get_per_token_logps_and_entropies

    @functools.wraps(original)  # the same signature: the trainer checks the hooked ones against its record
    def counted(self, model, input_ids, *args, **kwargs):
        if torch.is_grad_enabled():
            FORWARDED[0] += input_ids.numel()
        return original(self, model, input_ids, *args, **kwargs)

    GRPOTrainer._get_per_token_logps_and_entropies = counted  # type: ignore[method-assign]


def run_rl(model: str, data: Path, out: Path, a: argparse.Namespace, rows: int) -> list[dict]:
    from midtrain.train.rl import run
    from midtrain.train.rl_config import RLConfig

    cfg = RLConfig.from_dict(
        {
            "model": model,
            "data": [str(data)],
            "task": "answer",
            "reward": "synthetic_strict",
            "loss": {"credit": "first_error", "pack_rows": rows},
            "rollout": {"num_generations": 8, "max_completion_length": 96},
            "per_device_batch_size": a.prompts * 8,
            "optim": {"lr": 1e-4, "schedule": "constant", "warmup_steps": 5, "weight_decay": 0.1, "beta2": 0.95},
            "max_steps": a.steps,
            "seed": 0,
            "threads": a.threads,
            "save_every_steps": 0,
            "out": str(out),
        }
    )
    FORWARDED[0] = 0
    run(cfg)
    log = [json.loads(line) for line in (out / "log.jsonl").read_text().splitlines()]
    for rec in log:
        rec["forwarded_per_step"] = FORWARDED[0] / max(len(log), 1)  # one value per run: its mean over steps
    return log[a.warmup :]


def max_weight_diff(x: Path, y: Path) -> float:
    from safetensors.torch import load_file

    wx, wy = load_file(str(x / "model.safetensors")), load_file(str(y / "model.safetensors"))
    return max(float((wx[k].float() - wy[k].float()).abs().max()) for k in wx)


def main() -> int:
    ap = argparse.ArgumentParser(allow_abbrev=False, description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default=str(ROOT / "src" / "midtrain" / "assets" / "demo-base"))
    ap.add_argument("--rows", default="0,8,32", help="loss.pack_rows values, comma-separated; the first is the baseline.")
    ap.add_argument("--prompts", type=int, default=32, help="Prompts per step (× G = 8 completions).")
    ap.add_argument("--steps", type=int, default=6)
    ap.add_argument("--warmup", type=int, default=1, help="Steps dropped from each run before the medians.")
    ap.add_argument("--rounds", type=int, default=1)
    ap.add_argument("--threads", type=int, default=1)
    a = ap.parse_args()
    arms = [int(r) for r in a.rows.split(",")]
    from midtrain.data.jsonl import write_jsonl
    from midtrain.synth.generate import SynthConfig, generate_problems

    count_forwards()
    logs: dict[int, list[dict]] = {r: [] for r in arms}
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        data = root / "prompts.jsonl"
        spec = {"ops": "6-8", "n": 1000, "seed": 13, "render": "compact", "modulus": 10, "order": "dependency"}
        spec |= {"distractors": False, "const_max": 9, "max_multiplier": 9}  # configs/demo.yaml's rl_prompts
        write_jsonl(data, generate_problems(SynthConfig.from_dict(spec)))
        for r in range(a.rounds):
            for rows in arms[r % len(arms) :] + arms[: r % len(arms)]:
                logs[rows] += run_rl(a.model, data, root / f"r{r}-{rows}", a, rows)
        diffs = {rows: max_weight_diff(root / f"r0-{arms[0]}", root / f"r0-{rows}") for rows in arms[1:]}

    def med(rows: int, key: str) -> float:
        return statistics.median(x[key] for x in logs[rows])

    base = arms[0]
    print(f"model {a.model}; {a.prompts} prompts × 8 per step, {a.steps} steps × {a.rounds} round(s), {a.threads} thread(s)")
    print(f"zero-variance groups: {med(base, 'zero_var_frac'):.2f} of each step (median)")
    print(
        "| pack_rows | train s/step | generation s/step | step s/step | positions forwarded/step | train ratio | step ratio | max weight diff |"
    )
    print("|---|---|---|---|---|---|---|---|")
    for rows in arms:
        train, step = med(rows, "train_s"), med(rows, "step_s")
        diff = f"{diffs[rows]:.1e}" if rows in diffs else "-"
        print(
            f"| {rows} | {train:.2f} | {med(rows, 'gen_s'):.2f} | {step:.2f} | {med(rows, 'forwarded_per_step'):,.0f} | "
            f"{med(base, 'train_s') / train:.2f}x | {med(base, 'step_s') / step:.2f}x | {diff} |"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
