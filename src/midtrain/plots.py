"""Figure plumbing shared by every plot of the package (analysis, report, demo): one backend, one DPI, atomic PNGs.

- :func:`pyplot`: ``matplotlib.pyplot`` with the non-interactive Agg backend selected first, so plotting works
  without a display (CI, worker processes, SSH sessions) and never opens a window. matplotlib is imported only
  when a plot is drawn: commands that draw none do not pay for it.
- :func:`save_png`: renders the figure at :data:`DPI` into memory, closes it (pyplot keeps every open figure
  alive otherwise) and writes the bytes with :func:`midtrain.fileio.atomic_write_bytes`, so a killed run or a
  report being rebuilt never leaves a half-written PNG under the final name.

It also draws the figures of evaluation and training results that reports and the demo share: pass@k curves
(:func:`plot_pass_at_k`), verified accuracy against op count with the op ranges shaded, one small panel per
evaluation (:func:`plot_acc_vs_op`), and training curves of several runs from their ``log.jsonl`` (:func:`plot_curves`:
RL reward and probe accuracy / hacking, LM loss). Legends sit outside the data. Figures of the checkpoint analysis
live with their data in :mod:`midtrain.analysis.plots` (weight change, CKA).
"""

from __future__ import annotations

import io
import math
from pathlib import Path
from typing import Any

from midtrain.fileio import atomic_write_bytes

DPI = 120  # one resolution for every PNG: sharp enough for the heatmaps' 7-pt labels, small enough to embed in HTML


def pyplot() -> Any:
    """``matplotlib.pyplot`` on the Agg backend."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def save_png(fig: Any, path: str | Path) -> Path:
    """Write ``fig`` as a PNG at :data:`DPI` (tight bounding box) atomically to ``path`` and close it."""
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=DPI, bbox_inches="tight")
    pyplot().close(fig)
    atomic_write_bytes(path, buf.getvalue())
    return Path(path)


def number_or_nan(v: Any) -> float:
    """``v`` as a float for plotting; NaN (a gap in the line) for None, booleans and anything not a number."""
    if isinstance(v, bool) or not isinstance(v, (int, float)):
        return float("nan")
    return float(v)


RANGE_COLORS = {"id": "#2ca02c", "edge": "#ff7f0e", "hard": "#d62728"}


def as_number(v: Any) -> float | None:
    if isinstance(v, bool) or not isinstance(v, (int, float)) or math.isnan(v) or math.isinf(v):
        return None
    return float(v)


def pass_at_k_points(d: dict[str, Any]) -> list[tuple[int, float]]:
    out = []
    for k, v in (d or {}).items():
        if str(k).isdigit() and as_number(v) is not None:
            out.append((int(k), float(v)))
    return sorted(out)


def plot_pass_at_k(curves: dict[str, dict[str, Any]], path: Path, title: str) -> Path | None:
    """pass@k vs k (log2 axis), one line per curve name → ``{k: value}``."""
    points = {n: pass_at_k_points(c) for n, c in curves.items()}
    points = {n: p for n, p in points.items() if p}
    if not points:
        return None
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(6, 3.8))
    for name, pts in points.items():
        ax.plot([k for k, _ in pts], [v for _, v in pts], marker="o", label=name)
    ax.set_xscale("log", base=2)
    ticks = sorted({k for pts in points.values() for k, _ in pts})
    ax.set_xticks(ticks, [str(k) for k in ticks])
    ax.minorticks_off()
    ax.set_xlabel("k")
    ax.set_ylabel("pass@k")
    ax.set_ylim(-0.02, 1.02)
    ax.set_title(title, fontsize=10)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    return save_png(fig, path)


def grid(n: int, max_cols: int = 4) -> tuple[int, int]:
    """Rows and columns of a small-multiples grid of ``n`` panels, at most ``max_cols`` wide."""
    cols = max(1, min(n, max_cols))
    return math.ceil(n / cols), cols


def plot_acc_vs_op(panels: dict[str, dict[str, dict[str, Any]]], ranges: dict[str, list[int]], path: Path) -> Path | None:
    """Verified pass@1 (solid) and outcome accuracy (dashed) per op, one panel per evaluation (small multiples on
    one y axis, so every line can be read), the op ranges shaded; ``panels``: title → {member: by_op}, members
    being the same evaluation's seeds (one colour each). The legend sits below the panels, never on the data."""
    pts: dict[str, dict[str, list[tuple[int, dict[str, Any]]]]] = {}
    for title, members in panels.items():
        for member, by_op in members.items():
            ops = sorted(
                ((int(o), g) for o, g in by_op.items() if str(o).lstrip("-").isdigit() and isinstance(g, dict)), key=lambda t: t[0]
            )
            if ops:
                pts.setdefault(title, {})[member] = ops
    if not pts:
        return None
    plt = pyplot()
    from matplotlib.lines import Line2D
    from matplotlib.patches import Patch

    rows, cols = grid(len(pts))
    fig, axes = plt.subplots(rows, cols, figsize=(2.7 * cols, 2.1 * rows + 0.5), sharex=True, sharey=True, squeeze=False)
    names = list(dict.fromkeys(m for members in pts.values() for m in members))
    for ax, (title, lines) in zip(axes.flat, pts.items()):
        for rname, (lo, hi) in ranges.items():
            ax.axvspan(lo - 0.5, hi + 0.5, color=RANGE_COLORS.get(rname, "#999999"), alpha=0.12, lw=0)
        for member, points in lines.items():
            color = f"C{names.index(member) % 10}" if len(names) > 1 else "C0"
            x = [o for o, _ in points]
            ax.plot(x, [as_number((g.get("verified_pass_at_k") or {}).get("1")) for _, g in points], marker="o", ms=3, color=color)
            ax.plot(x, [as_number(g.get("outcome_acc")) for _, g in points], ls="--", color=color, alpha=0.7)
        ax.set_title(title, fontsize=8)
        ax.set_ylim(-0.03, 1.03)
        ax.grid(alpha=0.3)
        ax.tick_params(labelsize=7)
    for ax in axes.flat[len(pts) :]:
        ax.set_visible(False)
    for ax in axes[-1]:
        ax.set_xlabel("op count", fontsize=8)
    for ax in axes[:, 0]:
        ax.set_ylabel("accuracy", fontsize=8)
    handles = [
        Line2D([], [], color="k", marker="o", ms=3, label="verified pass@1"),
        Line2D([], [], color="k", ls="--", label="outcome accuracy"),
    ]
    handles += [Patch(color=RANGE_COLORS.get(r, "#999999"), alpha=0.25, label=f"{r} ({lo}-{hi})") for r, (lo, hi) in ranges.items()]
    if len(names) > 1:
        handles += [Line2D([], [], color=f"C{i % 10}", label=n) for i, n in enumerate(names)]
    fig.legend(handles=handles, loc="upper center", bbox_to_anchor=(0.5, 0.0), ncol=min(len(handles), 6), fontsize=7, frameon=False)
    fig.suptitle("synthetic accuracy vs op", fontsize=10)
    fig.tight_layout()
    return save_png(fig, path)


# The curves of a training log that the report compares across runs: (log key, axis label). RL logs carry the
# reward per step and, where the run probes a fixed problem set while it trains, its verified accuracy and hacking.
RL_CURVES = (
    ("reward_mean", "reward (mean)"),
    ("probe_verified", "probe: verified accuracy"),
    ("probe_hacking", "probe: hacking rate"),
    ("zero_var_frac", "zero-variance groups (share)"),
    ("completion_len", "completion tokens"),
)
LM_CURVES = (("loss", "training loss"),)


def plot_curves(
    runs: dict[str, dict[str, list[dict[str, Any]]]], curves: tuple[tuple[str, str], ...], path: Path, title: str
) -> Path | None:
    """One panel per curve that some run logged, one line per run vs step; ``runs``: group → {member: log rows},
    a group's members (the seeds of one stage) sharing a colour. The legend sits right of the panels."""
    present = [
        (k, lab) for k, lab in curves if any(as_number(r.get(k)) is not None for m in runs.values() for rs in m.values() for r in rs)
    ]
    if not present:
        return None
    plt = pyplot()
    rows, cols = grid(len(present), 3)
    fig, axes = plt.subplots(rows, cols, figsize=(3.3 * cols, 2.5 * rows), squeeze=False)
    for ax, (key, label) in zip(axes.flat, present):
        for i, (group, members) in enumerate(runs.items()):
            for j, rs in enumerate(members.values()):
                got = [(as_number(r.get("step")), as_number(r.get(key))) for r in rs]
                xy = [(x, y) for x, y in got if x is not None and y is not None]
                if xy:
                    sparse = len(xy) < 12  # a periodic probe: show its points
                    ax.plot(
                        *zip(*xy),
                        color=f"C{i % 10}",
                        lw=1.2,
                        alpha=0.9 if len(members) == 1 else 0.6,
                        marker="o" if sparse else None,
                        ms=3,
                        label=group if j == 0 else None,
                    )
        ax.set_ylabel(label, fontsize=8)
        ax.set_xlabel("step", fontsize=8)
        ax.tick_params(labelsize=7)
        ax.grid(alpha=0.3)
    for ax in axes.flat[len(present) :]:
        ax.set_visible(False)
    handles, labels = axes.flat[0].get_legend_handles_labels()
    for ax in axes.flat[1 : len(present)]:
        for h, lab in zip(*ax.get_legend_handles_labels()):
            if lab not in labels:
                handles.append(h)
                labels.append(lab)
    fig.legend(handles, labels, loc="upper left", bbox_to_anchor=(1.0, 0.95), fontsize=7, frameon=False)
    fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    return save_png(fig, path)


__all__ = [
    "DPI",
    "RANGE_COLORS",
    "as_number",
    "number_or_nan",
    "pass_at_k_points",
    "LM_CURVES",
    "RL_CURVES",
    "grid",
    "plot_acc_vs_op",
    "plot_curves",
    "plot_pass_at_k",
    "pyplot",
    "save_png",
]
