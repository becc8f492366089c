"""Figure plumbing shared by every plot of the package (analysis, report, demo): one backend, one DPI, atomic PNGs.

- :func:`pyplot`: ``matplotlib.pyplot`` with the non-interactive Agg backend selected first, so plotting works
  without a display (CI, worker processes, SSH sessions) and never opens a window. matplotlib is imported only
  when a plot is drawn: commands that draw none do not pay for it.
- :func:`save_png`: renders the figure at :data:`DPI` into memory, closes it (pyplot keeps every open figure
  alive otherwise) and writes the bytes with :func:`midtrain.runs.atomic_write_bytes`, so a killed run or a
  report being rebuilt never leaves a half-written PNG under the final name.

What a figure shows lives with its data: :mod:`midtrain.analysis.plots` (weight change, CKA),
:mod:`midtrain.experiment.report` (pass@k, accuracy vs op, training curves), :mod:`midtrain.experiment.demo`.
"""

from __future__ import annotations

import io
from pathlib import Path
from typing import Any

from midtrain.runs import atomic_write_bytes

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


__all__ = ["DPI", "pyplot", "save_png", "number_or_nan"]
