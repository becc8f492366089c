"""``midtrain report``: plots exist, HTML is self-contained, and table numbers equal the summaries' numbers."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from midtrain.cli import main
from midtrain.errors import DataError
from midtrain.experiment.report import ReportConfig, cell, find_runs, run
from midtrain.synth.summary import scale_ranges, summarize


def md_tables(md: str) -> dict[str, list[dict[str, str]]]:
    """Markdown tables of the report by their bold title: a list of {column: cell} rows."""
    out: dict[str, list[dict[str, str]]] = {}
    lines = md.splitlines()
    for i, line in enumerate(lines):
        m = re.fullmatch(r"\*\*(.+)\*\*", line)
        if m and i + 2 < len(lines) and lines[i + 2].startswith("|"):
            header = [c.strip() for c in lines[i + 2].strip("|").split("|")]
            rows, j = [], i + 4
            while j < len(lines) and lines[j].startswith("|"):
                rows.append(dict(zip(header, [c.strip() for c in lines[j].strip("|").split("|")])))
                j += 1
            out[m.group(1)] = rows
    return out


def table(tables: dict[str, list[dict[str, str]]], name: str) -> list[dict[str, str]]:
    """The table titled ``name``, or ``name (…)``: a pruned table names its constant columns in its title."""
    found = [rows for title, rows in tables.items() if title == name or title.startswith(name + " (")]
    assert len(found) == 1, f"{name!r} among {list(tables)}"
    return found[0]


def write(path: Path, obj) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(obj))
    return path


def png(path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(1, 1))
    ax.plot([0, 1])
    fig.savefig(path)
    plt.close(fig)


@pytest.fixture
def runs(tmp_path: Path) -> dict[str, Path]:
    root = tmp_path / "runs"
    bench = {
        "gsm8k": {
            "title": "GSM8K",
            "domain": "math",
            "n": 10,
            "k": 4,
            "accuracy": 0.41234,
            "mean_at_k": 0.41234,
            "pass_at_k": {"1": 0.41234, "2": 0.55551, "4": 0.7},
            "maj_at_k": 0.5,
            "no_answer": 3,
            "response_tokens_mean": 120.5,
            "thinking_tokens_mean": 80.25,
        },
        "gpqa_diamond": {
            "title": "GPQA-Diamond",
            "domain": "science",
            "n": 5,
            "k": 4,
            "accuracy": 0.25,
            "mean_at_k": 0.25,
            "pass_at_k": {"1": 0.25, "2": 0.43333, "4": 0.6},
            "maj_at_k": 0.2,
            "no_answer": 0,
            "response_tokens_mean": 99.0,
            "thinking_tokens_mean": None,
        },
    }
    write(
        root / "eval-a" / "summary.json",
        {
            "kind": "eval",
            "benchmarks": bench,
            "macro_avg": 0.33117,
            "domain_weighted_avg": 0.33117,
            "domains": {"math": 0.41234, "science": 0.25},
        },
    )
    write(root / "eval-a" / "midtrain.json", {"stage": "eval", "status": "complete"})
    bench_b = {"gsm8k": {**bench["gsm8k"], "mean_at_k": 0.61, "pass_at_k": {"1": 0.61}}}
    write(root / "eval-b" / "summary.json", {"kind": "eval", "benchmarks": bench_b, "macro_avg": 0.61, "domain_weighted_avg": 0.61})
    probs = [{"id": f"p{op}", "op": op, "context": "zoo", "mode": "forward"} for op in (2, 5, 7, 9, 11)]
    rows = []
    for p in probs:
        for j in range(4):
            ok = j < (12 - p["op"]) // 3
            rows.append(
                {
                    "id": p["id"],
                    "sample": j,
                    "verified": ok,
                    "outcome_correct": ok or j == 3,
                    "process_acc": 1.0 if ok else 0.3,
                    "answer": "1",
                    "tokens": 30,
                }
            )
    synth = summarize(rows, probs, ranges=scale_ranges("tiny"))
    write(root / "eval-synth" / "summary.json", {"kind": "eval", "synthetic": synth})
    log = root / "rl" / "log.jsonl"
    log.parent.mkdir(parents=True)
    log.write_text(
        "".join(
            json.dumps(
                {
                    "step": s,
                    "loss": 1.0 / s,
                    "reward_mean": s / 20,
                    "reward_std": 0.1,
                    "zero_var_frac": 0.2,
                    "completion_len": 40 + s,
                    "think_len": 10 + s,
                    "gen_s": 0.5,
                    "reward_s": 0.1,
                    "train_s": 0.25,
                }
            )
            + "\n"
            for s in range(1, 21)
        )
        + '{"step": 21, "loss"'
    )  # a torn last line is skipped
    an = root / "analysis"
    write(
        an / "weights.json",
        {
            "fraction_changed": 0.93125,
            "rel_frob": 0.0123,
            "per_module_type": {
                "attention": {"fraction_changed": 0.95, "rel_frob": 0.01},
                "mlp": {"fraction_changed": 0.9, "rel_frob": 0.02},
            },
            "per_layer": {"0": {"fraction_changed": 0.91}, "1": {"fraction_changed": 0.96}},
        },
    )
    write(
        an / "cka.json",
        {"per_layer": [1.0, 0.99912, 0.99871], "min_cka": 0.99871, "probes": {"text": {"per_layer": [1.0, 0.9991, 0.9987]}}},
    )
    png(an / "weights_heatmap.png")
    png(an / "cka_per_layer.png")
    return {"root": root, "synth": synth, "bench": bench}


def test_report_tables_match_summaries_and_plots_exist(runs, tmp_path: Path) -> None:
    out = tmp_path / "report"
    res = run(ReportConfig.from_dict({"runs": [str(runs["root"])], "out": str(out)}))
    md = (out / "report.md").read_text()
    html = (out / "report.html").read_text()
    names = {Path(p).name for p in res.plots}
    assert {
        "synth_acc_vs_op.png",
        "passk_eval-a.png",
        "synth_passk_eval-synth.png",
        "train_rl_curves.png",
        "analysis_weights_heatmap.png",
        "analysis_cka_per_layer.png",
    } <= names
    for p in res.plots:
        assert Path(p).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
        assert f"](plots/{Path(p).name})" in md
    # self-contained HTML: every image inline, no file references
    assert html.count("data:image/png;base64,") == len(res.plots) and "plots/" not in html

    t = md_tables(md)
    bench = runs["bench"]
    main_rows = {r["run"]: r for r in table(t, "mean@k per benchmark")}
    assert main_rows["eval-a"]["gsm8k"] == cell(bench["gsm8k"]["mean_at_k"]) == "0.4123"
    assert main_rows["eval-a"]["gpqa_diamond"] == cell(0.25)
    assert main_rows["eval-a"]["macro avg"] == cell(0.33117) and main_rows["eval-a"]["domain-weighted avg"] == cell(0.33117)
    assert main_rows["eval-b"]["gsm8k"] == cell(0.61) and main_rows["eval-b"]["gpqa_diamond"] == ""
    detail = {r["benchmark"]: r for r in table(t, "eval-a: details")}
    for b, g in bench.items():
        assert detail[b]["n"] == str(g["n"]) and detail[b]["mean@k"] == cell(g["mean_at_k"])
        for k, v in g["pass_at_k"].items():
            assert detail[b][f"pass@{k}"] == cell(v)
        assert detail[b]["maj@k"] == cell(g["maj_at_k"]) and detail[b]["no answer"] == str(g["no_answer"])
        assert detail[b]["thinking tokens"] == cell(g["thinking_tokens_mean"])

    synth = runs["synth"]
    rng = {r["range"]: r for r in table(t, "eval-synth: per op range")}
    assert set(rng) == set(synth["by_range"])
    for name, g in synth["by_range"].items():
        assert rng[name]["verified pass@1"] == cell(g["verified_pass_at_k"]["1"])
        assert rng[name]["verified pass@4"] == cell(g["verified_pass_at_k"]["4"])
        assert rng[name]["ProcessAcc"] == cell(g["process_acc"]) and rng[name]["outcome acc"] == cell(g["outcome_acc"])
        assert rng[name]["hacking rate"] == cell(g["hacking_rate"])

    train = table(t, "training logs (first and last logged values)")[0]
    assert train["run"] == "rl" and train["logged steps"] == "20" and train["last step"] == "20"
    assert train["reward_mean first"] == cell(0.05) and train["reward_mean last"] == cell(1.0)
    assert train["think_len last"] == cell(30) and train["completion_len first"] == cell(41)

    w = table(t, "weight change")[0]
    assert w["fraction changed"] == cell(0.93125) and w["‖ΔW‖/‖W0‖"] == cell(0.0123)
    pmt = {r["module type"]: r for r in table(t, "analysis: per module type")}
    assert pmt["attention"]["fraction changed"] == cell(0.95) and pmt["mlp"]["fraction changed"] == cell(0.9)
    cka = table(t, "analysis: linear CKA per layer")
    assert [r["CKA (mean over probes)"] for r in cka] == [cell(v) for v in (1.0, 0.99912, 0.99871)]
    assert [r["text"] for r in cka] == [cell(v) for v in (1.0, 0.9991, 0.9987)]


def test_report_is_regenerated_and_refuses_foreign_dirs(runs, tmp_path: Path, capsys) -> None:
    out = tmp_path / "report"
    assert main(["report", str(runs["root"] / "eval-a"), "--out", str(out)]) == 0
    assert main(["report", str(runs["root"] / "eval-a"), str(runs["root"] / "rl"), "--out", str(out)]) == 0  # replaced
    assert "train_rl_curves.png" in {p.name for p in (out / "plots").iterdir()}
    foreign = tmp_path / "foreign"
    foreign.mkdir()
    (foreign / "notes.txt").write_text("keep me")
    capsys.readouterr()
    assert main(["report", str(runs["root"] / "eval-a"), "--out", str(foreign)]) == 2
    assert "not a midtrain run directory" in capsys.readouterr().err and (foreign / "notes.txt").is_file()


def test_find_runs_errors(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="not a directory"):
        find_runs([tmp_path / "missing"])
    (tmp_path / "empty").mkdir()
    with pytest.raises(DataError, match="no run results"):
        find_runs([tmp_path / "empty"])


def test_report_on_a_real_eval_run(eval_model: Path, tmp_path: Path) -> None:
    """An eval run dir written by midtrain eval (custom data, 2 samples) goes through the report unchanged."""
    from midtrain.eval.evaluate import EvalConfig
    from midtrain.eval.evaluate import run as eval_run

    data = tmp_path / "d.jsonl"
    data.write_text("".join(json.dumps({"id": f"q{i}", "problem": f"What is {i}+1?", "answer": str(i + 1)}) + "\n" for i in range(3)))
    ev = tmp_path / "ev"
    eval_run(
        EvalConfig.from_dict(
            dict(model=str(eval_model), out=str(ev), data=[str(data)], n_samples=2, temperature=1.0, max_new_tokens=4, progress=False)
        )
    )
    summary = json.loads((ev / "summary.json").read_text())
    out = tmp_path / "rep"
    run(ReportConfig.from_dict({"runs": [str(ev)], "out": str(out)}))
    t = md_tables((out / "report.md").read_text())
    assert table(t, "mean@k per benchmark")[0]["d"] == cell(summary["benchmarks"]["d"]["mean_at_k"])
    assert table(t, "ev: details")[0]["pass@2"] == cell(summary["benchmarks"]["d"]["pass_at_k"]["2"])
    assert (out / "plots" / "passk_ev.png").is_file()


def test_missing_analysis_png_is_drawn_and_score_summaries_are_read(tmp_path: Path) -> None:
    root = tmp_path / "runs"
    write(
        root / "cka2" / "cka.json",
        {
            "per_layer": [1.0, 0.998],
            "min_cka": 0.998,
            "layers": 2,
            "probes": {"text": {"per_layer": [1.0, 0.998], "mean": 0.999, "min": 0.998}},
        },
    )
    write(
        root / "scored" / "summary.json",
        {
            "benchmark": "gsm8k",
            "n": 3,
            "samples": 3,
            "k": 1,
            "accuracy": 0.3333,
            "mean_at_k": 0.3333,
            "pass_at_k": {"1": 0.3333},
            "no_answer": 1,
        },
    )
    out = tmp_path / "rep"
    res = run(ReportConfig.from_dict({"runs": [str(root)], "out": str(out)}))
    assert "cka2_cka_per_layer.png" in {Path(p).name for p in res.plots}
    t = md_tables((out / "report.md").read_text())
    assert table(t, "mean@k per benchmark")[0]["gsm8k"] == cell(0.3333)


def test_a_banner_marks_the_whole_report(tmp_path: Path) -> None:
    from midtrain.experiment.report import build

    md, ht, _ = build([], "t <x>", tmp_path / "r", banner="QUICK RUN <not a result>")
    line = "> **QUICK RUN <not a result>**"
    assert md.splitlines()[:3] == ["# t <x>", "", line] and md.rstrip().endswith(line)
    assert "<title>QUICK RUN &lt;not a result&gt; · t &lt;x&gt;</title>" in ht
    assert ht.count("<div class='banner'>QUICK RUN &lt;not a result&gt;</div>") == 2  # top and foot, escaped
    assert ht.index("class='banner'") < ht.index("<h1>")
    plain_md, plain_ht, _ = build([], "t", tmp_path / "s")
    assert "QUICK" not in plain_md + plain_ht and "<div class='banner'>" not in plain_ht and "<title>t</title>" in plain_ht
