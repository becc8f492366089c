"""The demo's claims: what the papers report, checked against what the demo measured, with standard errors.

Each claim is ``{id, claim, paper, measured, holds}``. Claims on accuracy differences between two checkpoints use
the evaluation summaries of every seed (``summary.json`` of ``midtrain eval``, edge range): per seed s the
verified accuracy p_s over N_s completions. For arms X and Y,

    delta = mean_s (pX_s − pY_s)
    se    = sqrt(se_seed² + se_binom²)
    se_seed  = stdev_s(pX_s − pY_s) / sqrt(S)                              (seed-to-seed variation, S ≥ 2)
    se_binom = sqrt(Σ_s pX_s(1−pX_s)/NX_s + pY_s(1−pY_s)/NY_s) / S          (the finite problem sample)

Both terms are kept because the seeds share one evaluation set: seed variation alone would not see the problem
sample, and the binomial term alone would not see training noise. A claim of a gain holds when delta clears both
an absolute margin and 3 standard errors; evaluation is never tuned to make it pass.

A ``--quick`` run (seconds-sized budgets, for CI) computes every claim the same way, but its numbers mean nothing:
its tables show :func:`verdict` "not judged" instead of yes/NO, and its reports carry :data:`QUICK_BANNER`.
"""

from __future__ import annotations

import math
from pathlib import Path
from statistics import mean, stdev
from typing import Any

from midtrain.console import fmt_num
from midtrain.fileio import read_json

GAIN_MIN = 0.05  # absolute gain a "RL adds" claim needs (issue: ≥ 0.05 and ≥ 3 s.e.)
GAIN_SE = 3.0
QUICK_BANNER = "QUICK RUN — smoke test, not a result"


def eval_ranges(out: str | Path) -> dict[str, dict[str, Any]]:
    """The per-op-range summaries of a synthetic eval run dir (``summary.json`` → synthetic.by_range; {} if absent)."""
    path = Path(out) / "summary.json"
    return (read_json(path).get("synthetic") or {}).get("by_range", {}) if path.is_file() else {}


def eval_range(out: str | Path, rng: str = "edge") -> dict[str, float] | None:
    """Verified/outcome accuracy, hacking rate and counts of one op range from an eval run dir (None if absent)."""
    g = eval_ranges(out).get(rng)
    if not g:
        return None
    return {
        "verified": float(g["verified_acc"]),
        "outcome": float(g["outcome_acc"]),
        "hacking": float(g["hacking_rate"]),
        "n": int(g["n"]),
        "samples": int(g["samples"]),
    }


def per_seed(stages_by_seed: dict[str, dict[str, Any]], stage: str, rng: str = "edge") -> list[dict[str, float]]:
    """``eval_range`` of one eval stage for every seed that ran it (seed order)."""
    got = []
    for stages in stages_by_seed.values():
        rec = stages.get(stage)
        r = eval_range(rec["out"], rng) if rec else None
        if r is not None:
            got.append(r)
    return got


def diff(xs: list[dict[str, float]], ys: list[dict[str, float]], key: str = "verified") -> dict[str, Any]:
    """Mean paired difference X − Y over seeds with its standard error (module docstring); seeds paired by order."""
    pairs = list(zip(xs, ys, strict=False))
    if not pairs:
        return {"delta": None, "se": None}
    d = [x[key] - y[key] for x, y in pairs]
    s = len(pairs)
    se_seed = stdev(d) / math.sqrt(s) if s > 1 else 0.0
    var = sum(x[key] * (1 - x[key]) / max(x["samples"], 1) + y[key] * (1 - y[key]) / max(y["samples"], 1) for x, y in pairs)
    se_binom = math.sqrt(var) / s
    return {
        "x": round(mean(x[key] for x, _ in pairs), 4),
        "y": round(mean(y[key] for _, y in pairs), 4),
        "delta": round(mean(d), 4),
        "se": round(math.sqrt(se_seed**2 + se_binom**2), 4),
        "x_se": arm_se([x for x, _ in pairs], key),
        "y_se": arm_se([y for _, y in pairs], key),
        "seeds": s,
    }


def arm_se(runs: list[dict[str, float]], key: str = "verified") -> float:
    """Standard error of one arm's mean over seeds, with the same two terms as a difference's (module docstring):
    sqrt(stdev_s(p_s)² / S + Σ_s p_s(1 − p_s)/N_s / S²). The claims' figures draw it on each arm."""
    s = len(runs)
    se_seed = stdev(r[key] for r in runs) / math.sqrt(s) if s > 1 else 0.0
    se_binom = math.sqrt(sum(r[key] * (1 - r[key]) / max(r["samples"], 1) for r in runs)) / s
    return round(math.sqrt(se_seed**2 + se_binom**2), 4)


def gain_holds(dd: dict[str, Any], margin: float = GAIN_MIN, n_se: float = GAIN_SE) -> bool:
    """A gain clears the absolute margin and ``n_se`` standard errors."""
    if dd.get("delta") is None:
        return False
    return bool(dd["delta"] >= margin and dd["delta"] >= n_se * dd["se"])


def rl_adds_claim(stages_by_seed: dict[str, dict[str, Any]], pairs: dict[str, tuple[str, str]]) -> dict[str, Any] | None:
    """RL post-training adds over SFT(think): edge verified pass@1 of (RL, SFT) for each decoding in ``pairs``
    (e.g. ``{"greedy": ("eval_c", "eval_sft_think"), "T=1": ("eval_c_t1", "eval_sft_think_t1")}``)."""
    measured = {}
    for decoding, (rl, sft) in pairs.items():
        dd = diff(per_seed(stages_by_seed, rl), per_seed(stages_by_seed, sft))
        if dd["delta"] is None:
            return None
        measured[decoding] = dd
    return {
        "id": "rl_adds_over_sft_think",
        "claim": f"RL post-training adds ≥ {GAIN_MIN} and ≥ {GAIN_SE:g} s.e. over SFT(think) on edge verified pass@1",
        "paper": "RL gains at the edge of competence (Interplay C6; Thinking mid-training step 4)",
        "measured": {k: _fmt_diff(v, "RL", "SFT") for k, v in measured.items()},
        "values": measured,
        "holds": all(gain_holds(v) for v in measured.values()),
    }


def hacking_claim(stages_by_seed: dict[str, dict[str, Any]], outcome: str, process: str, start: str) -> dict[str, Any] | None:
    """Process rewards curb hacking (Interplay C9): from the same start, RL with the outcome reward raises the rate
    of right answers with wrong traces more than RL with the process reward does, and ends with lower verified
    accuracy. ``outcome``/``process``/``start`` are eval stages (sampled decoding, where hacking shows)."""
    o, p, s = (per_seed(stages_by_seed, x) for x in (outcome, process, start))
    if not (o and p and s):
        return None
    hack = diff(o, p, "hacking")
    ver = diff(p, o, "verified")
    return {
        "id": "process_reward_curbs_hacking",
        "claim": "outcome reward: more right-answer-wrong-trace completions and lower verified accuracy than the process reward",
        "paper": "process rewards reduce hacking (Interplay C9)",
        "measured": {
            "hacking rate": f"start {mean(x['hacking'] for x in s):.3f}, outcome {hack['x']:.3f}, process {hack['y']:.3f} "
            f"(+{hack['delta']:.3f} ± {hack['se']:.3f})",
            "verified": f"start {mean(x['verified'] for x in s):.3f}, outcome {ver['y']:.3f}, process {ver['x']:.3f} "
            f"({ver['delta']:+.3f} ± {ver['se']:.3f})",
            "outcome-correct": f"start {mean(x['outcome'] for x in s):.3f}, outcome {mean(x['outcome'] for x in o):.3f}",
        },
        "values": {"hacking_outcome_minus_process": hack, "verified_process_minus_outcome": ver},
        "holds": bool(
            hack["delta"] >= GAIN_SE * hack["se"] and hack["delta"] > 0 and ver["delta"] >= GAIN_SE * ver["se"] and ver["delta"] > 0
        ),
    }


def ratio_claim(stages_by_seed: dict[str, dict[str, Any]], full: str, rl_only: str) -> dict[str, Any] | None:
    """Thinking mid-training's headline: the full pipeline ≥ 2x RL on the base (edge verified accuracy), and the
    difference clears 3 standard errors. With RL-on-base at 0 the ratio is infinite when the pipeline is above 0."""
    dd = diff(per_seed(stages_by_seed, full), per_seed(stages_by_seed, rl_only))
    if dd["delta"] is None:
        return None
    ratio = dd["x"] / dd["y"] if dd["y"] > 0 else (math.inf if dd["x"] > 0 else None)
    return {
        "id": "thinking_midtraining_vs_rl",
        "claim": "(d) ≥ 2 × (a) on edge verified accuracy, by ≥ 3 s.e.",
        "paper": "3.2x (Thinking mid-training, DESIGN §1.1)",
        "measured": {
            "ratio": None if ratio is None else (ratio if math.isinf(ratio) else round(ratio, 2)),
            "difference": _fmt_diff(dd, "(d)", "(a)"),
        },
        "values": dd,
        "holds": ratio is not None and ratio >= 2.0 and dd["delta"] >= GAIN_SE * dd["se"],
    }


def better_claim(stages_by_seed: dict[str, dict[str, Any]], x: str, y: str, *, cid: str, claim: str, paper: str) -> dict[str, Any] | None:
    """X beats Y on edge verified accuracy by ≥ 3 standard errors."""
    dd = diff(per_seed(stages_by_seed, x), per_seed(stages_by_seed, y))
    if dd["delta"] is None:
        return None
    return {
        "id": cid,
        "claim": claim,
        "paper": paper,
        "measured": {"difference": _fmt_diff(dd, x, y)},
        "values": dd,
        "holds": dd["delta"] > 0 and dd["delta"] >= GAIN_SE * dd["se"],
    }


SETTLING_SEEDS = 3  # a claim that does not hold is a NO only with this many seeds (docs/claims.md: 3 seeds)


def claim_seeds(claim: dict[str, Any]) -> int:
    """How many seeds a claim's measurement pairs (1 when it does not say)."""
    values = claim.get("values") or {}
    found = [int(v["seeds"]) for v in ([values] + list(values.values())) if isinstance(v, dict) and v.get("seeds")]
    return min(found) if found else 1


def verdict(claim: dict[str, Any], *, quick: bool = False) -> str:
    """The "holds" cell of a claims table: ``yes``; ``NO`` when it fails with ≥ 3 seeds; ``needs --full`` when
    it fails with fewer (one seed's standard error cannot settle it: the measured value stands beside it, never a
    silent NO); ``not judged (quick run)`` for a ``--quick`` run, whose budgets are too small to mean anything."""
    if quick:
        return "not judged (quick run)"
    if claim["holds"]:
        return "yes"
    return "NO" if claim_seeds(claim) >= SETTLING_SEEDS else "needs --full"


def _fmt_diff(d: dict[str, Any], xname: str, yname: str) -> str:
    x, y, delta, se = (fmt_num(float(d[k]), spec) for k, spec in (("x", ".3f"), ("y", ".3f"), ("delta", "+.3f"), ("se", ".3f")))
    return f"{xname} {x} vs {yname} {y}: {delta} ± {se} (s.e., {d['seeds']} seeds)"


__all__ = [
    "SETTLING_SEEDS",
    "claim_seeds",
    "GAIN_MIN",
    "GAIN_SE",
    "QUICK_BANNER",
    "arm_se",
    "better_claim",
    "diff",
    "eval_range",
    "eval_ranges",
    "gain_holds",
    "hacking_claim",
    "per_seed",
    "ratio_claim",
    "rl_adds_claim",
    "verdict",
]
