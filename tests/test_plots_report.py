"""Figures shared by reports (``midtrain.plots``): accuracy vs op as one panel per evaluation with the legend
outside the data, training curves on shared axes with the probe's panels only when a log has them."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from midtrain import plots


@pytest.fixture
def drawn(monkeypatch) -> list[Any]:
    """The figures the plot functions draw, kept open for inspection instead of written."""
    figs: list[Any] = []
    monkeypatch.setattr(plots, "save_png", lambda fig, path: figs.append(fig) or Path(path))
    yield figs
    for fig in figs:
        plots.pyplot().close(fig)


def by_op(acc: float) -> dict[str, Any]:
    return {str(op): {"verified_pass_at_k": {"1": acc}, "outcome_acc": acc + 0.1} for op in range(2, 13)}


def test_accuracy_vs_op_has_a_panel_per_evaluation_and_the_legend_below(drawn):
    panels = {f"eval_{i}": {"seed-0": by_op(0.1 * i), "seed-1": by_op(0.1 * i + 0.05)} for i in range(11)}
    plots.plot_acc_vs_op(panels, {"id": [2, 5], "edge": [6, 8], "hard": [9, 12]}, Path("x.png"))
    (fig,) = drawn
    axes = [ax for ax in fig.axes if ax.get_visible()]
    assert [ax.get_title() for ax in axes] == list(panels)  # 11 panels: 2 seeds × 2 lines each, never 22 on one
    assert all(len(ax.get_lines()) == 4 for ax in axes)
    assert all(ax.get_legend() is None for ax in fig.axes) and len(fig.legends) == 1  # one legend, off the data
    legend = [t.get_text() for t in fig.legends[0].get_texts()]
    assert legend[:2] == ["verified pass@1", "outcome accuracy"] and {"seed-0", "seed-1", "edge (6-8)"} <= set(legend)
    assert plots.grid(11) == (3, 4) and plots.grid(2) == (1, 2)


def test_one_seed_draws_one_colour_and_names_no_seed(drawn):
    plots.plot_acc_vs_op({"eval_a": {"": by_op(0.5)}, "eval_c": {"": by_op(0.7)}}, {"id": [2, 5]}, Path("x.png"))
    legend = [t.get_text() for t in drawn[0].legends[0].get_texts()]
    assert legend == ["verified pass@1", "outcome accuracy", "id (2-5)"]
    colours = {line.get_color() for ax in drawn[0].axes for line in ax.get_lines()}
    assert colours == {"C0"}


def test_rl_curves_show_the_probe_only_when_logged(drawn):
    rl = [{"step": s, "reward_mean": s / 10, "completion_len": 50} for s in range(1, 11)]
    probed = [{**r, "probe_verified": 0.2, "probe_hacking": 0.05} if r["step"] % 5 == 0 else r for r in rl]
    plots.plot_curves({"rl_a": {"": rl}}, plots.RL_CURVES, Path("a.png"), "RL")
    plots.plot_curves({"rl_a": {"": rl}, "rl_c": {"seed-0": probed, "seed-1": probed}}, plots.RL_CURVES, Path("b.png"), "RL")
    labels = [[ax.get_ylabel() for ax in fig.axes if ax.get_visible()] for fig in drawn]
    assert labels[0] == ["reward (mean)", "completion tokens"]
    assert labels[1] == ["reward (mean)", "probe: verified accuracy", "probe: hacking rate", "completion tokens"]
    assert plots.grid(5, 3) == (2, 3)
    reward = drawn[1].axes[0]
    assert len(reward.get_lines()) == 3 and [t.get_text() for t in drawn[1].legends[0].get_texts()] == ["rl_a", "rl_c"]
    assert plots.plot_curves({"sft": {"": [{"step": 1}]}}, plots.RL_CURVES, Path("c.png"), "none") is None
