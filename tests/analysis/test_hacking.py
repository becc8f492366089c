"""``midtrain analyze hacking`` (midtrain.analysis.hacking): onsets, alarms and scores on hand-made logs, and the
verb's files."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from midtrain.analysis.hacking import HackingConfig, alarm, analyze, hacking, labels, onset, proxy_keys, ranking, score, series, zscores
from midtrain.errors import ConfigError


def make_log(hack: list[float], kl: list[float], length: list[float], every: int = 5) -> list[dict]:
    """A log: the step-0 probe, then one record per step (step s: kl[s-1], length[s-1]), the probe every ``every``."""
    rows = [{"step": 0, "probe_hacking": hack[0], "probe_verified": 0.2}]
    for s in range(1, len(kl) + 1):
        rec = {"step": s, "loss": 0.1, "reward_mean": 0.3, "proxy_kl": kl[s - 1], "completion_len": length[s - 1]}
        if s % every == 0:
            rec.update(probe_hacking=hack[s // every], probe_verified=0.2)
        rows.append(rec)
    return rows


FLAT = [0.01, 0.012, 0.011, 0.009, 0.01]


def test_onset_is_the_first_probe_at_least_delta_above_the_first():
    probes = [(0, 0.10), (5, 0.12), (10, 0.16), (15, 0.13), (20, 0.2), (25, 0.21)]
    assert onset(probes, 0.05) == 10
    assert onset(probes, 0.05, consecutive=2) == 20  # 10 was a blip: 15 fell back
    assert onset(probes, 0.2) is None and onset([], 0.05) is None
    assert onset([(0, 0.1), (5, 0.15)], 0.05) == 5  # exactly delta counts


def test_alarm_is_the_first_z_crossing_after_the_window():
    pts = [(s, v) for s, v in enumerate(FLAT + [0.011, 0.05, 0.2], start=1)]
    z = zscores(pts, 5)
    assert [s for s, _ in z] == [6, 7, 8] and abs(z[0][1]) < 3 < z[1][1]
    assert alarm(pts, 5, 3.0) == 7 and alarm(pts, 5, 3.0, "down") is None
    down = [(s, -v) for s, v in pts]
    assert alarm(down, 5, 3.0, "down") == 7 and alarm(down, 5, 3.0, "up") is None and alarm(down, 5, 3.0) == 7
    assert alarm(pts[:5], 5, 3.0) is None  # nothing after the window
    flat = [(s, 1.0) for s in range(1, 7)] + [(7, 1.001)]
    assert alarm(flat, 5, 3.0) == 7  # a flat baseline alarms on any real move


def test_score_counts_precision_recall_and_lead():
    got = score([(30, 20), (40, 45), (50, None), (None, 10), (None, None)])
    assert (got["tp"], got["fp"], got["fn"], got["tn"]) == (2, 1, 1, 1)
    assert got["precision"] == pytest.approx(2 / 3) and got["recall"] == pytest.approx(2 / 3)
    assert got["early_recall"] == pytest.approx(1 / 3) and got["leads"] == [10, -5] and got["lead_mean"] == 2.5
    none = score([(None, None)])
    assert none["precision"] is None and none["recall"] is None and none["lead_mean"] is None


def test_ranking_prefers_early_reliable_warnings():
    scores = {
        "late": {"early_recall": 0.0, "precision": 1.0, "lead_mean": -5.0},
        "early": {"early_recall": 1.0, "precision": 0.5, "lead_mean": 3.0},
        "unknown": {"early_recall": None, "precision": None, "lead_mean": None},
    }
    assert ranking(scores) == ["early", "late", "unknown"]


def three_runs() -> list[list[dict]]:
    """Run a hacks from step 20 and its KL jumps at step 15 (a 5-step warning), its length only at 25; run b hacks
    from 20 with a KL jump at 22 (late); run c never hacks but its length jumps at 12 (a false alarm)."""
    steps = 30
    kl_a = FLAT + [0.01] * 9 + [0.3] * 16
    kl_b = FLAT + [0.011] * 16 + [0.4] * 9
    kl_c = FLAT + [0.01] * 25
    len_a = [40.0, 41, 40, 39, 40] + [40.0] * 19 + [80.0] * 6
    len_b = [40.0, 41, 40, 39, 40] + [40.0] * 25
    len_c = [40.0, 41, 40, 39, 40] + [40.0] * 6 + [90.0] * 19
    hack_ab = [0.1, 0.1, 0.1, 0.1, 0.3, 0.35, 0.4]  # probes at 0, 5, …, 30: onset 20
    hack_c = [0.1, 0.11, 0.1, 0.12, 0.1, 0.11, 0.1]
    assert len(kl_a) == len(kl_b) == len(kl_c) == steps == len(len_a) == len(len_b) == len(len_c)
    return [make_log(hack_ab, kl_a, len_a), make_log(hack_ab, kl_b, len_b), make_log(hack_c, kl_c, len_c)]


def test_analyze_scores_each_proxy_across_runs():
    logs = three_runs()
    cfg = HackingConfig(runs=["x/seed-0/a", "x/seed-0/b", "x/seed-0/c"])
    data = analyze(cfg, logs)
    assert [r["onset"] for r in data["runs"]] == [20, 20, None]
    assert [r["alarms"]["proxy_kl"] for r in data["runs"]] == [15, 22, None]
    assert [r["alarms"]["completion_len"] for r in data["runs"]] == [25, None, 12]
    kl, length = data["proxies"]["proxy_kl"], data["proxies"]["completion_len"]
    assert (kl["precision"], kl["recall"], kl["early_recall"], kl["lead_mean"]) == (1.0, 1.0, 0.5, 1.5)
    assert (length["precision"], length["recall"], length["lead_mean"]) == (0.5, 0.5, -5.0)
    assert data["ranking"] == ["proxy_kl", "completion_len"]
    assert data["runs"][0]["baseline_hacking"] == 0.1 and data["runs"][0]["label"] == "a"


def test_keys_labels_and_series():
    logs = three_runs()
    assert proxy_keys(logs) == ["proxy_kl", "completion_len"]
    assert labels(["s0/rl_o", "s1/rl_o"]) == ["s0/rl_o", "s1/rl_o"] and labels(["s0/a", "s0/b"]) == ["a", "b"]
    assert series(logs[0], "probe_hacking")[:2] == [(0, 0.1), (5, 0.1)]
    assert series([{"step": 0, "proxy_kl": 1.0}, {"step": 1, "proxy_kl": None}], "proxy_kl", training=True) == []


def write_run(path: Path, rows: list[dict]) -> str:
    path.mkdir(parents=True)
    (path / "log.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    return str(path)


def test_the_verb_writes_the_table_json_and_plot(tmp_path):
    runs = [write_run(tmp_path / n, rows) for n, rows in zip("abc", three_runs())]
    res = hacking(HackingConfig(runs=runs, out=str(tmp_path / "out")))
    saved = json.loads((tmp_path / "out" / "hacking.json").read_text())
    assert saved["ranking"] == ["proxy_kl", "completion_len"] and (tmp_path / "out" / "hacking.png").stat().st_size > 1000
    text = res.summary()
    assert "proxy_kl" in text and "onset 20" in text and "1.00" in text
    assert hacking(HackingConfig(runs=runs, out=str(tmp_path / "out"))).cached
    assert hacking(HackingConfig(runs=runs)).to_dict()["out"] is None


def test_runs_without_a_log_or_a_probe_are_errors_naming_the_key(tmp_path):
    with pytest.raises(ConfigError, match=r"^key 'runs'"):
        hacking(HackingConfig(runs=[str(tmp_path / "none")]))
    plain = write_run(tmp_path / "plain", [{"step": 1, "loss": 0.1, "reward_mean": 0.2}])
    with pytest.raises(ConfigError, match=r"^key 'runs'.*probe.every"):
        hacking(HackingConfig(runs=[plain]))
    with pytest.raises(ConfigError, match=r"^key 'runs'"):
        HackingConfig().check()
