"""Figure plumbing shared by every plot of the package (analysis, report, demo): one backend, one DPI, atomic PNGs.

- :func:`pyplot`: ``matplotlib.pyplot`` with the non-interactive Agg backend selected first, so plotting works
  without a display (CI, worker processes, SSH sessions) and never opens a window. matplotlib is imported only
  when a plot is drawn: commands that draw none do not pay for it.
- :func:`save_png`: renders the figure at :data:`DPI` into memory, closes it (pyplot keeps every open figure
  alive otherwise) and writes the bytes with :func:`midtrain.fileio.atomic_write_bytes`, so a killed run or a
  report being rebuilt never leaves a half-written PNG under the final name.

It also draws the figures of evaluation and training results that reports and the demo share: pass@k curves
(:func:`plot_pass_at_k`), verified accuracy against op count with the op ranges shaded (:func:`plot_acc_vs_op`)
and training curves from ``log.jsonl`` (:func:`plot_training`). Figures of the checkpoint analysis live with
their data in :mod:`midtrain.analysis.plots` (weight change, CKA).
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


def plot_acc_vs_op(series: dict[str, dict[str, Any]], ranges: dict[str, list[int]], path: Path) -> Path | None:
    """Verified pass@1 (solid) and outcome accuracy (dashed) per op, one colour per run; op ranges shaded."""
    pts = {}
    for name, by_op in series.items():
        ops = sorted((int(o), g) for o, g in by_op.items() if str(o).lstrip("-").isdigit())
        if ops:
            pts[name] = ops
    if not pts:
        return None
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(7, 4))
    for rname, (lo, hi) in ranges.items():
        ax.axvspan(lo - 0.5, hi + 0.5, color=RANGE_COLORS.get(rname, "#999999"), alpha=0.12)
        ax.text((lo + hi) / 2, 1.04, rname, ha="center", fontsize=8)
    for i, (name, ops) in enumerate(pts.items()):
        color = f"C{i % 10}"
        x = [o for o, _ in ops]
        ax.plot(
            x,
            [as_number((g.get("verified_pass_at_k") or {}).get("1")) for _, g in ops],
            marker="o",
            color=color,
            label=f"{name} verified pass@1",
        )
        ax.plot(x, [as_number(g.get("outcome_acc")) for _, g in ops], ls="--", color=color, alpha=0.7, label=f"{name} outcome acc")
    ax.set_xlabel("op count (difficulty)")
    ax.set_ylabel("accuracy")
    ax.set_ylim(-0.02, 1.1)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7)
    ax.set_title("synthetic accuracy vs op (shaded: ID / edge / hard)", fontsize=10)
    return save_png(fig, path)


def plot_training(rows: list[dict[str, Any]], path: Path, title: str) -> Path | None:
    """Loss, RL reward (mean ± std, zero-variance share) and completion / thinking length vs step."""
    panels = []
    if any(as_number(r.get("loss")) is not None for r in rows):
        panels.append("loss")
    if any(as_number(r.get("reward_mean")) is not None for r in rows):
        panels.append("reward")
    if any(as_number(r.get(k)) is not None for r in rows for k in ("completion_len", "think_len")):
        panels.append("length")
    if not panels:
        return None
    plt = pyplot()
    fig, axes = plt.subplots(1, len(panels), figsize=(4.2 * len(panels), 3.4), squeeze=False)
    for ax, panel in zip(axes[0], panels):

        def series(key: str) -> tuple[list[float], list[float]]:
            got = [(as_number(r["step"]), as_number(r.get(key))) for r in rows]
            got = [(s, v) for s, v in got if v is not None]
            return [s for s, _ in got], [v for _, v in got]  # type: ignore[misc]

        if panel == "loss":
            ax.plot(*series("loss"), color="C0")
            ax.set_ylabel("loss")
        elif panel == "reward":
            steps, mean = series("reward_mean")
            ax.plot(steps, mean, color="C2", label="reward mean")
            std = dict(zip(*series("reward_std")))
            if std:
                lo = [m - std.get(s, 0.0) for s, m in zip(steps, mean)]
                hi = [m + std.get(s, 0.0) for s, m in zip(steps, mean)]
                ax.fill_between(steps, lo, hi, color="C2", alpha=0.15, label="± std")
            zs, zv = series("zero_var_frac")
            if zs:
                ax.plot(zs, zv, color="C7", ls=":", label="zero-variance groups")
            ax.set_ylabel("reward")
            ax.legend(fontsize=7)
        else:
            for key, color in (("completion_len", "C1"), ("think_len", "C4")):
                s, v = series(key)
                if s:
                    ax.plot(s, v, color=color, label=key)
            ax.set_ylabel("tokens")
            ax.legend(fontsize=7)
        ax.set_xlabel("step")
        ax.grid(alpha=0.3)
    fig.suptitle(title, fontsize=10)
    return save_png(fig, path)


__all__ = [
    "DPI",
    "RANGE_COLORS",
    "as_number",
    "number_or_nan",
    "pass_at_k_points",
    "plot_acc_vs_op",
    "plot_pass_at_k",
    "plot_training",
    "pyplot",
    "save_png",
]
