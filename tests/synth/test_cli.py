"""``midtrain synth generate | verify | stats`` through ``midtrain.cli.main``, including bad input."""

from __future__ import annotations

import json

import pytest

from midtrain.cli import main
from midtrain.data.jsonl import iter_jsonl

from .conftest import wrong_answer, wrong_value


def run(capsys, *argv):
    code = main(list(argv))
    out = capsys.readouterr()
    return code, out.out, out.err


@pytest.fixture
def problem_file(tmp_path, capsys, quiet):
    path = tmp_path / "problems.jsonl"
    code, out, err = run(
        capsys,
        "synth",
        "generate",
        "--ops",
        "2-8",
        "--contexts",
        "zoo,teachers,movies",
        "--n",
        "60",
        "--seed",
        "1",
        "--out",
        str(path),
        "--mode",
        "mixed",
    )
    assert code == 0, err
    return path


def test_generate_writes_records(problem_file, tmp_path, capsys):
    recs = list(iter_jsonl(problem_file))
    assert len(recs) == 60 and {r["op"] for r in recs} == set(range(2, 9))
    assert {r["context"] for r in recs} == {"zoo", "teachers", "movies"} and {r["mode"] for r in recs} == {"forward", "reverse"}
    again = tmp_path / "again.jsonl"
    code, out, _ = run(
        capsys,
        "synth",
        "generate",
        "--ops",
        "2-8",
        "--contexts",
        "zoo,teachers,movies",
        "--n",
        "60",
        "--seed",
        "1",
        "--out",
        str(again),
        "--mode",
        "mixed",
        "--json",
    )
    assert code == 0 and again.read_bytes() == problem_file.read_bytes()
    assert json.loads(out)["n"] == 60
    code, out, _ = run(
        capsys,
        "synth",
        "generate",
        "--preset",
        "tiny-id",
        "--render",
        "compact",
        "--modulus",
        "10",
        "--order",
        "dependency",
        "--no-distractors",
        "--n",
        "20",
        "--out",
        str(tmp_path / "c.jsonl"),
    )
    assert code == 0 and "synth generate: 20 problems" in out
    assert all(r["render"] == "compact" and r["op"] <= 5 for r in iter_jsonl(tmp_path / "c.jsonl"))


def test_verify_gold_and_completions(problem_file, tmp_path, capsys):
    code, out, _ = run(capsys, "synth", "verify", "--problems", str(problem_file), "--json")
    s = json.loads(out)
    assert code == 0 and s["samples"] == 60 and s["verified_acc"] == 1.0 and s["verified_pass_at_k"] == {"1": 1.0}
    recs = list(iter_jsonl(problem_file))
    comp = tmp_path / "completions.jsonl"
    lines = []
    for r in recs[:10]:
        lines += [
            {"id": r["id"], "completion": r["completion"]},
            {"id": r["id"], "completion": wrong_answer(r)},
            {"id": r["id"], "completion": wrong_value(r, r["graph"]["trace"][0])},
            {"id": r["id"], "completion": ""},
        ]
    comp.write_text("".join(json.dumps(x) + "\n" for x in lines))
    code, out, _ = run(capsys, "synth", "verify", "--problems", str(problem_file), "--completions", str(comp), "--json")
    s = json.loads(out)
    assert code == 0 and s["samples"] == 40 and s["n"] == 10 and s["unanswered"] == 50
    assert s["verified_acc"] == 0.25 and s["outcome_acc"] == 0.5 and s["verified_pass_at_k"]["4"] == 1.0
    assert s["mismatches"]["answer"] == 20 and s["mismatches"]["value"] == 10
    assert s["reasons"] == {"verified": 10, "wrong answer": 10, "wrong value": 10, "empty": 10}
    assert {"by_op", "by_context", "by_mode"} <= set(s)
    code, out, _ = run(capsys, "synth", "verify", "--problems", str(problem_file), "--completions", str(comp))
    assert code == 0 and "verified_acc 0.2500" in out and "pass@k" in out and "op " in out


def test_stats(problem_file, capsys):
    code, out, _ = run(capsys, "synth", "stats", str(problem_file))
    assert code == 0 and "op " in out and "context" in out and "mode" in out and "p90" in out
    code, out, _ = run(capsys, "synth", "stats", str(problem_file), "--json")
    s = json.loads(out)
    assert s["n"] == 60 and s["unit"] == "chars" and sum(s["ops"].values()) == 60
    assert set(s["lengths"]) == {"prompt", "completion", "prompt+completion"}
    assert s["lengths"]["prompt"]["p50"] <= s["lengths"]["prompt"]["p90"] <= s["lengths"]["prompt"]["max"]


def test_bad_input_is_one_line_and_exit_2(problem_file, tmp_path, capsys):
    code, _, err = run(capsys, "synth", "verify", "--problems", str(tmp_path / "missing.jsonl"))
    assert code == 2 and "file not found" in err and "missing.jsonl" in err
    bad = tmp_path / "bad.jsonl"
    bad.write_text(problem_file.read_text().splitlines()[0] + "\n{not json\n")
    code, _, err = run(capsys, "synth", "verify", "--problems", str(bad))
    assert code == 2 and f"{bad}:2: malformed JSON" in err
    first = json.loads(problem_file.read_text().splitlines()[0])
    comp = tmp_path / "comp.jsonl"
    comp.write_text(json.dumps({"id": first["id"], "completion": "x"}) + "\n" + json.dumps({"id": first["id"]}) + "\n")
    code, _, err = run(capsys, "synth", "verify", "--problems", str(problem_file), "--completions", str(comp))
    assert code == 2 and f"{comp}:2" in err and "'completion'" in err
    comp.write_text(json.dumps({"id": "nope", "completion": "x"}) + "\n")
    code, _, err = run(capsys, "synth", "verify", "--problems", str(problem_file), "--completions", str(comp))
    assert code == 2 and f"{comp}:1" in err and "nope" in err
    broken = tmp_path / "broken.jsonl"
    broken.write_text(json.dumps({**first, "graph": {"nodes": "x"}}) + "\n")
    code, _, err = run(capsys, "synth", "verify", "--problems", str(broken))
    assert code == 2 and f"{broken}:1" in err and "graph" in err
    code, _, err = run(
        capsys,
        "synth",
        "generate",
        "--ops",
        "2",
        "--n",
        "500",
        "--render",
        "compact",
        "--modulus",
        "10",
        "--no-distractors",
        "--max-tries",
        "30",
        "--out",
        str(tmp_path / "x.jsonl"),
    )
    assert code == 2 and "cannot generate" in err and not (tmp_path / "x.jsonl").exists()
    code, _, err = run(capsys, "synth", "generate", "--n", "5")
    assert code == 2 and "'out'" in err
    code, _, err = run(capsys, "synth", "generate", "--mode", "sideways", "--out", "x.jsonl")
    assert code == 2
    code, _, err = run(capsys, "synth", "stats", str(tmp_path / "nothing.jsonl"))
    assert code == 2 and "file not found" in err
    assert all(len(e.strip().splitlines()) == 1 for e in [err])


def test_dry_run_prints_config(capsys):
    code, out, _ = run(capsys, "synth", "generate", "--preset", "paper-edge", "--out", "x.jsonl", "--dry-run")
    assert code == 0 and "preset: paper-edge" in out
