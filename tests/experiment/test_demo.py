"""`midtrain demo`: the shipped base meets its recorded numbers; `--quick` writes every artifact and resumes
after kill -9 without redoing finished stages. Claims and wall time are not asserted here (see bench/)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

import pytest

from midtrain.experiment.demo import BASE_DIR, CLAIM_STAGES, claims, eval_problems

ACCEPT = BASE_DIR / "acceptance.json"


def test_shipped_base_is_a_loadable_checkpoint_with_its_provenance():
    for name in ("model.safetensors", "config.json", "tokenizer.json", "midtrain.json", "acceptance.json"):
        assert (BASE_DIR / name).is_file(), name
    size = (BASE_DIR / "model.safetensors").stat().st_size
    assert size < 8 << 20  # a few MB at most
    meta = json.loads((BASE_DIR / "midtrain.json").read_text())
    assert meta["stage"] == "pretrain" and meta["status"] == "complete"


@pytest.mark.slow
def test_shipped_base_solves_in_distribution_problems_with_a_trace(tmp_path):
    """Greedy verified accuracy on the recorded fixed problem set matches acceptance.json (and stays ≥ 0.8)."""
    from midtrain.models.init import load_model
    from midtrain.models.tokenizer import load_tokenizer
    from midtrain.synth.diagnose import trace_and_direct_accuracy
    from midtrain.synth.generate import SynthConfig, generate_problems

    rec = json.loads(ACCEPT.read_text())
    model, tok = load_model(str(BASE_DIR)), load_tokenizer(str(BASE_DIR))
    for name in ("id", "edge"):
        problems = generate_problems(SynthConfig.from_dict(rec["problems"][name]))
        got = trace_and_direct_accuracy(model, tok, problems)
        assert abs(got["trace_acc"] - rec[name]["trace_acc"]) <= rec["tolerance"], (name, got["trace_acc"])
    assert rec["id"]["trace_acc"] >= 0.8 and rec["edge"]["trace_acc"] <= 0.5


def test_claims_are_computed_from_measured_values(tmp_path):
    """The demo's claim table: each claim reads the eval stages CLAIM_STAGES names, per seed."""
    values = {"a": 0.02, "b": 0.03, "c": 0.30, "d": 0.32, "sft_think": 0.20, "c_t1": 0.16, "sft_think_t1": 0.09, "outcome_t1": 0.03}
    hacking = {"outcome_t1": 0.30, "c_t1": 0.08, "sft_think_t1": 0.09}
    stages: dict = {}
    for seed in ("0", "1", "2"):
        for key, stage in CLAIM_STAGES.items():
            d = tmp_path / seed / stage
            d.mkdir(parents=True)
            v = values[key] + 0.005 * int(seed)
            g = {
                "n": 300,
                "samples": 1200 if key.endswith("t1") else 300,
                "verified_acc": v,
                "outcome_acc": v + hacking.get(key, 0.0),
                "hacking_rate": hacking.get(key, 0.0),
            }
            (d / "summary.json").write_text(json.dumps({"synthetic": {"by_range": {"edge": g, "id": {**g, "n": 100}}}}))
            stages.setdefault(seed, {})[stage] = {"out": str(d)}
    an = {"cka_mid": {"mean": 0.8}, "cka_rl": {"mean": 0.9}}
    got = {c["id"]: c for c in claims({"analysis": an}, stages)}
    assert set(got) == {
        "thinking_midtraining_vs_rl",
        "thoughts_vs_raw",
        "rl_adds_over_sft_think",
        "process_reward_curbs_hacking",
        "rl_keeps_geometry",
    }
    assert got["thinking_midtraining_vs_rl"]["measured"]["ratio"] == 13.0 and got["thinking_midtraining_vs_rl"]["holds"]
    assert got["thoughts_vs_raw"]["holds"] and got["rl_keeps_geometry"]["holds"]
    assert got["rl_adds_over_sft_think"]["holds"]  # +0.10 greedy, +0.07 at T = 1, each far above 3 s.e.
    assert got["process_reward_curbs_hacking"]["holds"]
    assert eval_problems(stages) == {"edge": 300, "id": 100}
    values["c"] = 0.22  # greedy gain 0.02 < 0.05: the RL claim fails although T = 1 still gains
    for seed in ("0", "1", "2"):
        path = tmp_path / seed / "eval_c" / "summary.json"
        rec = json.loads(path.read_text())
        rec["synthetic"]["by_range"]["edge"]["verified_acc"] = 0.22
        path.write_text(json.dumps(rec))
    got = {c["id"]: c for c in claims({"analysis": an}, stages)}
    assert not got["rl_adds_over_sft_think"]["holds"] and got["thoughts_vs_raw"]["holds"]


@pytest.mark.slow
def test_demo_quick_writes_artifacts_and_resumes_after_kill(tmp_path):
    out = tmp_path / "demo"
    cmd = [sys.executable, "-m", "midtrain", "demo", "--quick", "--out", str(out)]
    env = {**os.environ, "MIDTRAIN_QUIET": "0", "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS", "2")}
    journal = out / "runs" / ".journal"
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    deadline = time.time() + 600
    while not (journal / "sft_think@seed-0.json").is_file():
        assert proc.poll() is None, proc.stderr.read()[-3000:]
        assert time.time() < deadline, "the quick demo did not reach SFT(think) in 10 minutes"
        time.sleep(0.2)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    finished = {p.name: p.stat().st_mtime_ns for p in journal.glob("*.json")}
    assert "sft_think@seed-0.json" in finished and not (out / "summary.json").exists()

    done = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=900)
    assert done.returncode == 0, done.stderr[-3000:]
    for name, stamp in finished.items():  # nothing that had finished ran again
        assert (journal / name).stat().st_mtime_ns == stamp, name
    assert "done earlier, skipped" in done.stderr
    assert "claims" in done.stdout and "(d) base" in done.stdout  # the printed summary tables

    summary = json.loads((out / "summary.json").read_text())
    assert summary["quick"] is True and summary["banner"] == "QUICK RUN — smoke test, not a result"
    assert done.stdout.startswith(summary["banner"]) and "not judged (quick run)" in done.stdout
    assert summary["seeds"] == [0] and set(summary["eval_problems"]) == {"id", "edge", "hard"}
    assert set(summary["arms"]) == {"sft_think", "a", "b", "c", "d", "o"}
    for arm in summary["arms"].values():
        for r in ("id", "edge", "hard"):
            assert 0.0 <= arm[r]["mean"] <= 1.0 and len(arm[r]["values"]) == 1
        assert arm["compute"]["flops"] > 0
    assert {c["id"] for c in summary["claims"]} == {
        "thinking_midtraining_vs_rl",
        "thoughts_vs_raw",
        "rl_adds_over_sft_think",
        "process_reward_curbs_hacking",
        "rl_keeps_geometry",
    }
    assert all(isinstance(c["holds"], bool) for c in summary["claims"])
    assert set(summary["checkpoints"]) == {"base", "SFT(raw)", "SFT(think)", "SFT(think) → RLMT", "(a)", "(b)", "(c)", "(d)"}
    md = (out / "report.md").read_text()
    assert "## claims" in md and "## arms" in md and "## checkpoint diagnostics" in md
    assert (out / "plots" / "demo_arms.png").stat().st_size > 1000
    html = (out / "report.html").read_text()
    assert html.count("data:image/png;base64,") >= 3 and "<div class='banner'>QUICK RUN" in html and "> **QUICK RUN" in md


@pytest.mark.parametrize("quick", [True, False])
def test_quick_results_are_marked_as_not_results(tmp_path, monkeypatch, capsys, quick):
    """--quick: summary.json, both reports, the claims tables and the printed summary all say it is no result
    (the stages are replaced by canned outputs: this checks what the demo writes, not what it measures)."""
    import midtrain.experiment.demo as demo_mod
    from midtrain.experiment.claims import QUICK_BANNER

    class Ran:
        data = {"stages": {"0": {}}, "base": None}

    claim = {
        "id": "thinking_midtraining_vs_rl",
        "claim": "(d) ≥ 2 × (a)",
        "paper": "3.2x",
        "measured": {"ratio": 1.0},
        "values": {"delta": 0.0, "se": 0.01, "seeds": 3},  # three seeds: a failure is a NO
        "holds": False,
    }
    monkeypatch.setattr(demo_mod, "run_experiment", lambda exp: Ran())
    monkeypatch.setattr(demo_mod, "collect", lambda data: {"arms": {}, "checkpoints": {}, "analysis": {}})
    monkeypatch.setattr(demo_mod, "claims", lambda res, stages: [claim])
    monkeypatch.setattr(demo_mod, "arm_table", lambda data: (["arm", "edge"], [["(a)", "0.100"]]))
    monkeypatch.setattr(demo_mod, "run_dirs", lambda exp: [])
    monkeypatch.setattr(demo_mod, "eval_problems", lambda stages: {})
    out = tmp_path / "demo"
    res = demo_mod.demo(demo_mod.DemoConfig(quick=quick, out=str(out)))
    summary = json.loads((out / "summary.json").read_text())
    md, html = (out / "report.md").read_text(), (out / "report.html").read_text()
    printed = capsys.readouterr().out
    if quick:
        assert summary["quick"] is True and summary["banner"] == QUICK_BANNER
        assert md.startswith("# midtrain demo") and md.count(QUICK_BANNER) == 2 and md.rstrip().endswith(f"> **{QUICK_BANNER}**")
        assert f"<title>{QUICK_BANNER} · " in html and html.count(f"<div class='banner'>{QUICK_BANNER}</div>") == 2
        assert ".banner{position:sticky" in html and "@media print{.banner{position:fixed" in html  # every page
        assert "not judged (quick run)" in md and "not judged (quick run)" in html and "| NO |" not in md
        assert printed.startswith(QUICK_BANNER + "\n") and "not judged" in printed and " NO " not in printed
        assert res.summary().splitlines()[0] == QUICK_BANNER
    else:
        assert summary["quick"] is False and summary["banner"] == ""
        assert QUICK_BANNER not in md + html + printed + res.summary() and "class='banner'" not in html
        assert "| NO |" in md and " NO " in printed


def test_the_default_demo_is_one_seed_and_full_is_the_experiment_files(tmp_path):
    import midtrain.experiment.demo as demo_mod

    exp = tmp_path / "demo.yaml"
    exp.write_text("seeds: [0, 1, 2]\n")
    seeds = lambda **kw: demo_mod.demo_seeds(demo_mod.DemoConfig(**kw), exp)  # noqa: E731
    assert seeds() == [0]
    assert seeds(full=True) == [0, 1, 2]
    assert seeds(full=True, quick=True) == [0]  # quick budgets never run three seeds
    assert seeds(seed=4, full=True) == [4] and seeds(seeds=[1, 2], full=True) == [1, 2]
