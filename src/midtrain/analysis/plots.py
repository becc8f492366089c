"""Plots of ``midtrain analyze`` results, drawn by the analysis verbs and by ``midtrain report``.

Each function takes a result dict (``weights.json`` / ``cka.json`` content) or the path of that file, writes a
PNG through :mod:`midtrain.plots` (Agg backend, one DPI, atomic write) and returns its path:

- :func:`plot_weight_heatmap`: fraction of parameters changed, layer (rows, "none" = outside the numbered
  layers) × module type (columns);
- :func:`plot_weight_timeline`: fraction changed between successive checkpoints and from the first one;
- :func:`plot_cka`: linear CKA per layer (:func:`cka_curves`): one line per probe set, plus the mean over probes
  when there are several. It reads partial or older results defensively (the report draws it for any
  ``cka.json`` it finds) and returns None when there is no per-layer curve to draw.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from midtrain.plots import number_or_nan, pyplot, save_png

WEIGHTS_HEATMAP = "weights_heatmap.png"
WEIGHTS_TIMELINE = "weights_timeline.png"
CKA_PLOT = "cka_per_layer.png"


def _load(result: dict[str, Any] | str | Path) -> dict[str, Any]:
    if isinstance(result, dict):
        return result
    return json.loads(Path(result).read_text(encoding="utf-8"))


def plot_weight_heatmap(result: dict[str, Any] | str | Path, path: str | Path) -> Path:
    """Heatmap of ``per_layer_module_type`` fraction changed (layers × module types)."""
    data = _load(result)
    cells: dict[str, dict[str, Any]] = data["per_layer_module_type"]
    rows = list(cells)
    cols = [k for k in ("attention", "mlp", "embeddings", "norms", "other") if any(k in cells[r] for r in rows)]
    grid = [[(cells[r].get(c) or {}).get("fraction_changed") for c in cols] for r in rows]
    values = [[float("nan") if v is None else v for v in row] for row in grid]
    plt = pyplot()
    # about 5 inches for the usual 4 module types: two heatmaps fit side by side in the report at 1280 px
    fig, ax = plt.subplots(figsize=(0.9 * len(cols) + 1.8, 0.26 * len(rows) + 1.5))
    im = ax.imshow(values, aspect="auto", cmap="viridis", vmin=0.0, vmax=1.0)
    ax.set_xticks(range(len(cols)), cols)
    ax.set_yticks(range(len(rows)), rows, fontsize=7 if len(rows) > 24 else 9)
    ax.set_xlabel("module type")
    ax.set_ylabel("layer")
    if len(rows) * len(cols) <= 200:
        for i, row in enumerate(grid):
            for j, v in enumerate(row):
                if v is not None:
                    ax.text(j, i, f"{v:.2f}", ha="center", va="center", fontsize=7, color="w" if v < 0.6 else "k")
    label = data.get("primary", "")
    ax.set_title(f"fraction changed (|Δ| > τ = {data.get('tau')}) {label}", fontsize=9)
    fig.colorbar(im, ax=ax, label="fraction changed")
    return save_png(fig, path)


def plot_weight_timeline(result: dict[str, Any] | str | Path, path: str | Path) -> Path:
    """Fraction changed per timeline step: successive updates and cumulative from the first checkpoint."""
    steps = _load(result)["timeline"]
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(6, 3.5))
    x = [s["index"] for s in steps]
    ax.plot(x, [s["fraction_changed_successive"] for s in steps], "o-", label="c(i−1) → c(i)")
    ax.plot(x, [s["fraction_changed_from_first"] for s in steps], "s--", label="c0 → c(i)")
    jac = [(s["index"], s["jaccard_with_next"]) for s in steps if s.get("jaccard_with_next") is not None]
    if jac:
        ax.plot([a for a, _ in jac], [b for _, b in jac], "^:", label="Jaccard(update i, update i+1)")
    ax.set_xlabel("checkpoint index")
    ax.set_ylabel("fraction")
    ax.set_xticks(x)
    ax.legend(fontsize=8)
    ax.grid(alpha=0.3)
    return save_png(fig, path)


def cka_curves(data: dict[str, Any]) -> dict[str, list[Any]]:
    """The per-layer CKA curves of a ``cka.json``: one per probe set (labelled with its row count when known),
    preceded by ``per_layer`` (the mean over probes) when there are several probe sets or none with detail."""
    curves: dict[str, list[Any]] = {}
    probes = found if isinstance(found := data.get("probes"), dict) else {}
    for name, probe in probes.items():
        if isinstance(probe, dict) and isinstance(probe.get("per_layer"), list):
            label = f"{name} (n={probe['rows']})" if "rows" in probe else str(name)
            curves[label] = probe["per_layer"]
    if isinstance(data.get("per_layer"), list) and len(curves) != 1:
        curves = {"mean over probes": data["per_layer"], **curves}
    return curves


def plot_cka(result: dict[str, Any] | str | Path, path: str | Path, title: str = "") -> Path | None:
    """Linear CKA per layer (0 = embedding output), one line per curve of :func:`cka_curves`; None if none."""
    from matplotlib.ticker import MaxNLocator

    data = _load(result)
    curves = cka_curves(data)
    if not curves:
        return None
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(5, 3.2))
    values = [number_or_nan(v) for ys in curves.values() for v in ys]
    for name, ys in curves.items():
        ax.plot(range(len(ys)), [number_or_nan(v) for v in ys], "o-", markersize=3, label=name)
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.ticklabel_format(axis="y", useOffset=False)  # CKA near 1 reads as itself, not as 1e-11 + 9.99e-1
    finite = [v for v in values if v == v]
    if finite and max(finite) - min(finite) < 0.01:  # a flat curve: show it flat at its level, not as noise
        ax.set_ylim(max(finite) - 0.01, max(finite) + 0.002)
    ax.set_xlabel("layer (0 = embeddings)")
    ax.set_ylabel("linear CKA")
    how = ", ".join(f"{data[k]} {k}" for k in ("pooling", "estimator") if data.get(k))
    ax.set_title(f"{title + ': ' if title else ''}CKA per layer" + (f" ({how})" if how else ""), fontsize=9)
    if len(curves) > 1:  # one curve needs no legend
        ax.legend(fontsize=7)
    ax.grid(alpha=0.3)
    return save_png(fig, path)


__all__ = ["CKA_PLOT", "WEIGHTS_HEATMAP", "WEIGHTS_TIMELINE", "cka_curves", "plot_cka", "plot_weight_heatmap", "plot_weight_timeline"]
