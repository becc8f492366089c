"""Compute accounting of an experiment: tokens and FLOPs per arm, split into mid-training and RL (Interplay C8).

Each finished stage reports ``tokens``/``flops`` (training) or ``tokens_generated``/``tokens_trained`` (RL) in its
metrics. A stage counts as mid-training when its verb's registry entry says so (pretrain, sft) or when it is RL on
suffix tasks (RL mid-training); RL on answer tasks counts as RL. Per arm, β = mid-training FLOPs / all FLOPs of the
arm's chain, the quantity the compute-split experiment fixes. :func:`arm_results` adds each arm's final evaluation
(verified pass@1 per op range) for the summary and the report.
"""

from __future__ import annotations

from typing import Any

from midtrain.experiment.spec import ArmSpec, Step
from midtrain.stages import stage, verbs


def task_kind(step_rec: dict[str, Any], steps: dict[str, Step]) -> str:
    """'mid' for pretraining/SFT and RL mid-training (suffix tasks), 'rl' for RL post-training, '' otherwise."""
    verb = step_rec["verb"]
    kind = stage(verb).compute if verb in verbs() else ""
    if kind == "mid":
        return "mid"
    if kind == "rl":
        step = steps.get(step_rec["stage"])
        return "mid" if step is not None and getattr(step.config, "task", "answer") == "suffix" else "rl"
    return ""


def compute_of(arm: ArmSpec, recs: dict[str, dict[str, Any]], steps: dict[str, Step]) -> dict[str, Any]:
    """Tokens and FLOPs of one arm's chain, split into mid-training and RL, and β = mid / (mid + rl)."""
    out: dict[str, Any] = {"mid_flops": 0.0, "rl_flops": 0.0, "mid_tokens": 0, "rl_tokens": 0, "stages": {}}
    for name in arm.chain:
        rec = recs.get(name)
        if rec is None:
            continue
        m = rec["metrics"]
        kind = task_kind(rec, steps) or "mid"
        tokens = int(m.get("tokens") or 0) + int(m.get("tokens_generated") or 0) + int(m.get("tokens_trained") or 0)
        flops = float(m.get("flops") or 0.0)
        out[f"{kind}_flops"] += flops
        out[f"{kind}_tokens"] += tokens
        out["stages"][name] = {"kind": kind, "tokens": tokens, "flops": flops}
    total = out["mid_flops"] + out["rl_flops"]
    out["flops"] = total
    out["tokens"] = out["mid_tokens"] + out["rl_tokens"]
    out["beta"] = round(out["mid_flops"] / total, 4) if total else None
    return out


def arm_results(
    arms: dict[str, ArmSpec], recs_by_seed: dict[Any, dict[str, dict[str, Any]]], steps_by_seed: dict[Any, dict[str, Step]]
) -> dict[str, Any]:
    """Per seed and arm (of ``arms``, in order): compute and the final eval's metrics (verified pass@1 by op range)."""
    out: dict[str, Any] = {}
    for seed, recs in recs_by_seed.items():
        per: dict[str, Any] = {}
        for a, spec in arms.items():
            ev = recs.get(spec.eval, {}).get("metrics", {}) if spec.eval else {}
            ranges = {k.split(".")[1]: v for k, v in ev.items() if k.startswith("synthetic.") and k.endswith(".pass_at_1")}
            per[a] = {
                "label": spec.label or a,
                "compute": compute_of(spec, recs, steps_by_seed[seed]),
                "verified_acc": ranges,
                "eval": ev,
            }
        out[str(seed)] = per
    return out


__all__ = ["arm_results", "compute_of", "task_kind"]
