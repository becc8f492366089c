"""Figures of the demo's claims: one per claim, the compared arms' means with their standard errors.

A claim of :mod:`midtrain.experiment.claims` compares arms through one or more differences (its ``values``: the
arms' means ``x`` and ``y`` with their standard errors ``x_se`` / ``y_se``, and the paired difference
``delta ± se`` that the verdict reads). Its figure has one panel per difference: a bar per arm, the baseline first,
with ±1 s.e. error bars, and the difference with its standard error, in s.e. units, above the bars; so the figure
shows what the claims table says. The CKA claim compares two similarities averaged over layers: its bars carry
the standard error over seeds (none with one seed). Arms are named by :data:`PANELS` (the demo's arm letters);
a claim missing there that has one difference gets a panel named by its ``x`` and ``y``.
"""

from __future__ import annotations

import textwrap
from pathlib import Path
from typing import Any

from midtrain.plots import as_number, pyplot, save_png

# claim id → its panels: (title, key of the difference in claim["values"] (None: values is the difference),
# the arm measured as x, the arm measured as y).
PANELS: dict[str, tuple[tuple[str, str | None, str, str], ...]] = {
    "thinking_midtraining_vs_rl": (("edge, greedy", None, "(d) SFT(think)\n→ RLMT → RL", "(a) RL on\nthe base"),),
    "thoughts_vs_raw": (("edge, greedy", None, "(c) SFT(think)\n→ RL", "(b) SFT(raw)\n→ RL"),),
    "rl_adds_over_sft_think": (
        ("edge, greedy", "greedy", "(c) SFT(think)\n→ RL", "SFT(think)"),
        ("edge, T = 1", "T=1", "(c) SFT(think)\n→ RL", "SFT(think)"),
    ),
    "process_reward_curbs_hacking": (
        ("hacking rate, T = 1", "hacking_outcome_minus_process", "(o) outcome\nreward", "(c) process\nreward"),
        ("verified, T = 1", "verified_process_minus_outcome", "(c) process\nreward", "(o) outcome\nreward"),
    ),
}
CKA_CLAIM = "rl_keeps_geometry"
BASELINE, TREATMENT = "#9e9e9e", "#1f77b4"


def panels(claim: dict[str, Any]) -> list[dict[str, Any]]:
    """The panels of a claim's figure: ``{title, bars: [(arm, mean, se | None)], note}``, baseline bar first."""
    values = claim.get("values")
    if not isinstance(values, dict):
        return []
    if claim.get("id") == CKA_CLAIM:
        pairs = (("CKA(base, SFT)", values.get("base_vs_sft")), ("CKA(SFT, SFT+RL)", values.get("sft_vs_rl")))
        bars = [(name, as_number(v.get("mean")), as_number(v.get("se"))) for name, v in pairs if isinstance(v, dict)]
        seeds = max((len(v.get("values") or []) for _, v in pairs if isinstance(v, dict)), default=0)
        note = f"s.e. over {seeds} seeds" if seeds > 1 else "one seed: no s.e."
        return [{"title": "mean linear CKA over layers", "bars": bars, "note": note}] if len(bars) == 2 else []
    spec = PANELS.get(str(claim.get("id")), (("edge", None, "x", "y"),))
    out = []
    for title, key, xname, yname in spec:
        d = values if key is None else values.get(key)
        if not isinstance(d, dict) or as_number(d.get("x")) is None or as_number(d.get("y")) is None:
            continue
        delta, se = as_number(d.get("delta")), as_number(d.get("se"))
        note = "" if delta is None else f"Δ {delta:+.3f}" + (f" ± {se:.3f} ({delta / se:+.1f} s.e.)" if se else "")
        bars = [(yname, as_number(d["y"]), as_number(d.get("y_se"))), (xname, as_number(d["x"]), as_number(d.get("x_se")))]
        out.append({"title": title, "bars": bars, "note": note})
    return out


def plot_claim(claim: dict[str, Any], path: Path, verdict: str = "") -> Path | None:
    """The claim's figure (module docstring) at ``path``; None when its record holds no comparison to draw."""
    got = panels(claim)
    if not got:
        return None
    plt = pyplot()
    fig, axes = plt.subplots(1, len(got), figsize=(2.6 * len(got) + 0.4, 3.0), squeeze=False)
    for ax, panel in zip(axes[0], got):
        names = [b[0] for b in panel["bars"]]
        means = [b[1] or 0.0 for b in panel["bars"]]
        errs = [b[2] or 0.0 for b in panel["bars"]]
        ax.bar(range(len(names)), means, 0.6, yerr=errs, capsize=4, color=[BASELINE, TREATMENT][: len(names)])
        top = max(m + e for m, e in zip(means, errs)) or 1.0
        for i, (m, e) in enumerate(zip(means, errs)):
            ax.text(i, m + e + 0.02 * top, f"{m:.3f}", ha="center", va="bottom", fontsize=8)
        ax.set_xticks(range(len(names)), names, fontsize=7)
        ax.set_ylim(0, top * 1.3)
        ax.tick_params(axis="y", labelsize=7)
        ax.grid(axis="y", alpha=0.3)
        ax.set_title(f"{panel['title']}\n{panel['note']}", fontsize=8)
    heading = textwrap.fill(str(claim.get("claim", "")), 60)
    fig.suptitle(f"{heading}\n{verdict}" if verdict else heading, fontsize=9)
    fig.tight_layout()
    return save_png(fig, path)


__all__ = ["PANELS", "panels", "plot_claim"]
