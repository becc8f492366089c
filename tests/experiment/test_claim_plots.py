"""One figure per claim (``midtrain.experiment.claim_plots``): the compared arms with their standard errors, the
baseline first, the difference the verdict reads in the panel's title."""

from __future__ import annotations

from pathlib import Path

import pytest
from report_support import demo_experiment

from midtrain.experiment import claim_plots
from midtrain.experiment.claims import arm_se, diff
from midtrain.experiment.document import Figure


def test_arm_se_adds_the_seed_spread_and_the_problem_sample():
    one = [{"verified": 0.2, "samples": 100}]
    assert arm_se(one) == pytest.approx((0.2 * 0.8 / 100) ** 0.5, abs=1e-4)  # one seed: the binomial term only
    three = [{"verified": v, "samples": 100} for v in (0.1, 0.2, 0.3)]
    binom = sum(v * (1 - v) / 100 for v in (0.1, 0.2, 0.3)) ** 0.5 / 3
    assert arm_se(three) == pytest.approx((0.1**2 / 3 + binom**2) ** 0.5, abs=1e-4)
    d = diff(three, one * 3)
    assert (d["x_se"], d["y_se"]) == (arm_se(three), arm_se(one * 3))


def test_every_demo_claim_has_a_figure_of_its_arms(tmp_path: Path):
    _, make = demo_experiment(tmp_path / "runs")
    plots = tmp_path / "plots"
    plots.mkdir()
    (claims_section, *_) = make(plots)
    figures = [b for b in claims_section.blocks if isinstance(b, Figure)]
    assert {Path(f.path).stem for f in figures} == {
        "claim_thinking_midtraining_vs_rl",
        "claim_thoughts_vs_raw",
        "claim_rl_adds_over_sft_think",
        "claim_process_reward_curbs_hacking",
        "claim_rl_keeps_geometry",
    }
    assert all(Path(f.path).read_bytes()[:4] == b"\x89PNG" for f in figures)


def test_panels_put_the_baseline_first_with_each_arms_se():
    claim = {
        "id": "rl_adds_over_sft_think",
        "claim": "RL adds",
        "values": {
            "greedy": {"x": 0.2, "y": 0.18, "x_se": 0.02, "y_se": 0.021, "delta": 0.02, "se": 0.01, "seeds": 1},
            "T=1": {"x": 0.15, "y": 0.09, "x_se": 0.01, "y_se": 0.01, "delta": 0.06, "se": 0.012, "seeds": 1},
        },
    }
    got = claim_plots.panels(claim)
    assert [p["title"] for p in got] == ["edge, greedy", "edge, T = 1"]
    assert got[0]["bars"] == [("SFT(think)", 0.18, 0.021), ("(c) SFT(think)\n→ RL", 0.2, 0.02)]
    assert got[1]["note"] == "Δ +0.060 ± 0.012 (+5.0 s.e.)"
    cka = {
        "id": "rl_keeps_geometry",
        "values": {
            "base_vs_sft": {"mean": 0.96, "se": 0.004, "values": [0.95, 0.96, 0.97]},
            "sft_vs_rl": {"mean": 0.99, "se": 0.001, "values": [0.99] * 3},
        },
    }
    (panel,) = claim_plots.panels(cka)
    assert panel["bars"] == [("CKA(base, SFT)", 0.96, 0.004), ("CKA(SFT, SFT+RL)", 0.99, 0.001)] and panel["note"] == "s.e. over 3 seeds"
    assert claim_plots.panels({"id": "x", "claim": "no comparison", "measured": {}}) == []
    assert claim_plots.plot_claim({"id": "x"}, Path("never-written.png")) is None
