"""Claims with standard errors: hand-computed differences, gain thresholds, the hacking claim, missing stages."""

from __future__ import annotations

import json
import math

import pytest

from midtrain.experiment.claims import diff, gain_holds, hacking_claim, per_seed, ratio_claim, rl_adds_claim


def _eval(tmp_path, name, verified, outcome=None, hacking=0.0, n=300, samples=None):
    d = tmp_path / name
    d.mkdir(parents=True)
    g = {
        "n": n,
        "samples": samples or n,
        "verified_acc": verified,
        "outcome_acc": verified if outcome is None else outcome,
        "hacking_rate": hacking,
    }
    (d / "summary.json").write_text(json.dumps({"synthetic": {"by_range": {"edge": g}}}))
    return {"out": str(d)}


def _seeds(tmp_path, table):
    """table: stage → list of per-seed dicts (kwargs of _eval)."""
    out = {}
    for stage, rows in table.items():
        for s, kw in enumerate(rows):
            out.setdefault(str(s), {})[stage] = _eval(tmp_path / f"s{s}", stage, **kw)
    return out


def test_diff_by_hand():
    xs = [{"verified": 0.3, "samples": 100}, {"verified": 0.4, "samples": 100}]
    ys = [{"verified": 0.2, "samples": 100}, {"verified": 0.2, "samples": 100}]
    d = diff(xs, ys)
    se_seed = 0.07071067811865477 / math.sqrt(2)  # stdev of (0.1, 0.2) over √2
    se_bin = math.sqrt(0.3 * 0.7 / 100 + 0.2 * 0.8 / 100 + 0.4 * 0.6 / 100 + 0.2 * 0.8 / 100) / 2
    assert d["delta"] == pytest.approx(0.15)
    assert d["se"] == pytest.approx(math.sqrt(se_seed**2 + se_bin**2), abs=1e-4)
    assert d["x"] == pytest.approx(0.35) and d["y"] == pytest.approx(0.2) and d["seeds"] == 2


def test_gain_needs_margin_and_three_standard_errors():
    assert gain_holds({"delta": 0.06, "se": 0.015})
    assert not gain_holds({"delta": 0.04, "se": 0.001})  # below the 0.05 margin
    assert not gain_holds({"delta": 0.06, "se": 0.03})  # only 2 s.e.
    assert not gain_holds({"delta": None, "se": None})


def test_rl_adds_claim_needs_both_decodings(tmp_path):
    big = [dict(verified=v, n=600) for v in (0.30, 0.31, 0.29)]
    small = [dict(verified=v, n=600) for v in (0.20, 0.21, 0.19)]
    t1_same = [dict(verified=v, n=600, samples=2400) for v in (0.10, 0.11, 0.09)]
    stages = _seeds(tmp_path, {"rl": big, "sft": small, "rl_t1": t1_same, "sft_t1": t1_same})
    c = rl_adds_claim(stages, {"greedy": ("rl", "sft"), "T=1": ("rl_t1", "sft_t1")})
    assert c is not None and c["values"]["greedy"]["delta"] == pytest.approx(0.1)
    assert gain_holds(c["values"]["greedy"]) and not c["holds"]  # T=1 did not move
    only_greedy = rl_adds_claim(stages, {"greedy": ("rl", "sft")})
    assert only_greedy is not None and only_greedy["holds"]
    assert rl_adds_claim(stages, {"greedy": ("rl", "missing")}) is None


def test_hacking_claim(tmp_path):
    start = [dict(verified=0.10, outcome=0.19, hacking=0.09, samples=1200)] * 3
    outcome = [dict(verified=v, outcome=0.30, hacking=0.25, samples=1200) for v in (0.03, 0.04, 0.02)]
    process = [dict(verified=v, outcome=0.22, hacking=0.08, samples=1200) for v in (0.13, 0.14, 0.12)]
    stages = _seeds(tmp_path, {"o": outcome, "p": process, "s": start})
    c = hacking_claim(stages, "o", "p", "s")
    assert c is not None and c["holds"]
    assert c["values"]["hacking_outcome_minus_process"]["delta"] == pytest.approx(0.17)
    stages = _seeds(tmp_path / "flip", {"o": process, "p": outcome, "s": start})
    assert not hacking_claim(stages, "o", "p", "s")["holds"]


def test_ratio_claim_with_zero_denominator(tmp_path):
    stages = _seeds(tmp_path, {"d": [dict(verified=0.2)] * 3, "a": [dict(verified=0.0)] * 3})
    c = ratio_claim(stages, "d", "a")
    assert c is not None and math.isinf(c["measured"]["ratio"]) and c["holds"]
    close = {"d": [dict(verified=0.03, n=100)] * 3, "a": [dict(verified=0.01, n=100)] * 3}
    assert not ratio_claim(_seeds(tmp_path / "close", close), "d", "a")["holds"]  # 3x, but 0.02 < 3 s.e. (0.011)


def test_per_seed_skips_seeds_without_the_stage(tmp_path):
    stages = _seeds(tmp_path, {"x": [dict(verified=0.5)] * 2})
    stages["2"] = {}
    assert [r["verified"] for r in per_seed(stages, "x")] == [0.5, 0.5]


def test_verdict_is_no_answer_for_a_quick_run():
    from midtrain.experiment.claims import verdict

    three = {"holds": False, "values": {"delta": 0.01, "se": 0.02, "seeds": 3}}
    assert verdict({"holds": True}) == "yes" and verdict(three) == "NO"
    assert verdict({"holds": False}, quick=True) == verdict({"holds": True}, quick=True) == "not judged (quick run)"


def test_one_seed_cannot_say_no(tmp_path):
    """A claim that fails on one seed reads 'needs --full' (with its measured value beside it), never a silent NO;
    with three seeds a failure is a NO. Nested values (per decoding) count their seeds too."""
    from midtrain.experiment.claims import claim_seeds, verdict

    one = rl_adds_claim(_seeds(tmp_path / "one", {"rl": [{"verified": 0.20}], "sft": [{"verified": 0.18}]}), {"greedy": ("rl", "sft")})
    assert one is not None and not one["holds"] and claim_seeds(one) == 1
    assert verdict(one) == "needs --full"
    table = {"rl": [{"verified": 0.20}] * 3, "sft": [{"verified": 0.18}] * 3}
    three = rl_adds_claim(_seeds(tmp_path / "three", table), {"greedy": ("rl", "sft"), "T=1": ("rl", "sft")})
    assert three is not None and claim_seeds(three) == 3 and verdict(three) == "NO"
    assert verdict({**three, "holds": True}) == "yes"
