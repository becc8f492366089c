"""A demo-shaped experiment directory for report tests: what one seed of ``midtrain demo`` leaves behind, made of
hand-written numbers (no model runs): 11 synthetic evaluations, the RL arms' logs (with the online probe's
verified accuracy and hacking rate), SFT logs, weight change and CKA, and the demo's own sections (claims computed
by :func:`midtrain.experiment.demo.claims` from those evaluations)."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

from midtrain.experiment.demo import CLAIM_STAGES, claims, report_sections
from midtrain.experiment.document import Section
from midtrain.synth.summary import scale_ranges, summarize

# verified accuracy per op range of each eval stage (ID, edge, hard): the shape of the demo's results
EVALS = {
    "eval_base": (1.0, 0.02, 0.0),
    "eval_sft_raw": (0.85, 0.02, 0.0),
    "eval_sft_think": (0.97, 0.18, 0.0),
    "eval_sft_think_t1": (0.9, 0.08, 0.0),
    "eval_rlmt": (0.95, 0.17, 0.0),
    "eval_a": (0.97, 0.03, 0.0),
    "eval_b": (0.84, 0.02, 0.0),
    "eval_c": (0.94, 0.17, 0.0),
    "eval_c_t1": (0.92, 0.13, 0.0),
    "eval_d": (0.95, 0.17, 0.0),
    "eval_o_t1": (0.9, 0.10, 0.0),
}
RL_RUNS = ("rl_a", "rl_b", "rl_c", "rl_d", "rl_o")


def write_json(path: Path, obj: Any) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(obj), encoding="utf-8")
    return path


def synthetic_summary(acc: tuple[float, float, float], samples: int = 1, seed: int = 0) -> dict[str, Any]:
    """A synthetic eval summary (:func:`midtrain.synth.summary.summarize`) with about ``acc`` verified per range:
    4 problems per op of the tiny scale (ops 2-12), one context and one mode, as the demo evaluates."""
    ranges = scale_ranges("tiny")
    probs = [{"id": f"p{op}-{i}", "op": op, "context": "zoo", "mode": "forward"} for op in range(2, 13) for i in range(20)]
    rows = []
    for p in probs:
        rate = next(a for (lo, hi), a in zip(ranges.values(), acc) if lo <= p["op"] <= hi)
        i = int(p["id"].split("-")[1])
        for j in range(samples):
            ok = (i * 7 + j * 3 + seed) % 20 < round(rate * 20)
            hacked = not ok and (i + j) % 9 == 0
            rows.append(
                {
                    "id": p["id"],
                    "sample": j,
                    "verified": ok,
                    "outcome_correct": ok or hacked,
                    "process_acc": 1.0 if ok else 0.4,
                    "answer": "1",
                    "tokens": 40,
                }
            )
    return {"kind": "eval", "synthetic": summarize(rows, probs, ranges=ranges)}


def rl_log(steps: int, start: float, probe: bool) -> str:
    rows = []
    for s in range(1, steps + 1):
        rec: dict[str, Any] = {
            "step": s,
            "loss": 0.01,
            "reward_mean": round(start + 0.3 * s / steps, 4),
            "reward_std": 0.2,
            "zero_var_frac": 0.5,
            "completion_len": 60 + s % 7,
            "think_len": 40,
            "gen_s": 1.0,
            "reward_s": 0.01,
            "train_s": 0.5,
        }
        if probe and s % 10 == 0:
            rec.update(probe_verified=round(start + 0.2 * s / steps, 4), probe_hacking=round(0.1 - 0.05 * s / steps, 4))
        rows.append(json.dumps(rec))
    return "\n".join(rows) + "\n"


def demo_experiment(root: Path, seed: int = 0) -> tuple[list[Path], Callable[[Path], list[Section]]]:
    """Run directories of one demo seed under ``root/seed-N`` and the demo's report sections on them."""
    base = root / f"seed-{seed}"
    stages: dict[str, dict[str, Any]] = {}
    for stage, acc in EVALS.items():
        d = base / stage
        write_json(d / "summary.json", synthetic_summary(acc, samples=4 if stage.endswith("_t1") else 1, seed=seed))
        write_json(d / "midtrain.json", {"stage": "eval", "status": "complete"})
        stages[stage] = {"out": str(d)}
    for i, name in enumerate(RL_RUNS):
        (base / name).mkdir(parents=True)
        (base / name / "log.jsonl").write_text(rl_log(60, 0.1 * i, probe=name != "rl_a"), encoding="utf-8")
        write_json(base / name / "midtrain.json", {"stage": "rl", "status": "complete"})
    for name in ("sft_raw", "sft_think"):
        (base / name).mkdir(parents=True)
        (base / name / "log.jsonl").write_text("".join(json.dumps({"step": s * 10, "loss": 2.0 / s}) + "\n" for s in range(1, 30)))
        write_json(base / name / "midtrain.json", {"stage": "sft", "status": "complete"})
    layers = {str(i): {"attention": {"fraction_changed": 0.9}, "mlp": {"fraction_changed": 0.95}} for i in range(4)}
    for name, frac in (("weights_mid", 0.99), ("weights_rl", 0.87)):
        write_json(base / name / "weights.json", {"fraction_changed": frac, "rel_frob": 0.01, "tau": 1e-5, "per_layer_module_type": layers})
        write_json(base / name / "midtrain.json", {"stage": "analyze weights", "status": "complete"})
    for name, cka in (("cka_mid", 0.96), ("cka_rl", 0.998)):
        write_json(base / name / "cka.json", {"per_layer": [1.0, cka, cka - 0.01, cka - 0.02], "min_cka": cka - 0.02})
        write_json(base / name / "midtrain.json", {"stage": "analyze cka", "status": "complete"})
    res: dict[str, Any] = {
        "arms": {
            a: {"label": label, **{r: {"mean": m, "std": 0.0, "se": None, "values": [m]} for r, m in zip(("id", "edge", "hard"), EVALS[e])}}
            for a, label, e in (
                ("a", "(a) base → RL", "eval_a"),
                ("c", "(c) base → SFT(think) → RL", "eval_c"),
                ("d", "(d) … → RLMT → RL", "eval_d"),
            )
        },
        "checkpoints": {},
        "analysis": {"cka_mid": {"mean": 0.96, "values": [0.96], "se": None}, "cka_rl": {"mean": 0.998, "values": [0.998], "se": None}},
    }
    res["claims"] = claims(res, {str(seed): stages})
    assert {c["id"] for c in res["claims"]} >= {"thinking_midtraining_vs_rl", "rl_adds_over_sft_think"}, CLAIM_STAGES
    head = ["arm", "id verified", "edge verified", "hard verified"]
    rows = [[a["label"], f"{a['id']['mean']:.3f}", f"{a['edge']['mean']:.3f}", f"{a['hard']['mean']:.3f}"] for a in res["arms"].values()]
    runs = sorted(d for d in base.iterdir() if d.is_dir())
    return runs, report_sections(res, (head, rows))
