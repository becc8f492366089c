"""Synthetic-world evaluation: aggregation on hand-made rows, eval plumbing, and the real verifier."""

from __future__ import annotations

import importlib
import json
from pathlib import Path

import pytest

from midtrain.cli import main
from midtrain.eval.evaluate import EvalConfig, run
from midtrain.fileio import read_json
from midtrain.synth.generate import SynthConfig, generate_problems
from midtrain.synth.summary import PAPER_RANGES, flatten, group_metrics, load_problems, scale_ranges, summarize
from midtrain.synth.verify import Verification, summarize_completions


def row(pid: str, j: int, verified: bool, outcome: bool, pacc: float, answer="1", tokens=5) -> dict:
    return {
        "id": pid,
        "sample": j,
        "verified": verified,
        "outcome_correct": outcome,
        "process_acc": pacc,
        "answer": answer,
        "tokens": tokens,
    }


def test_group_metrics_hand_rows() -> None:
    rows = [
        row("a", 0, True, True, 1.0),
        row("a", 1, False, True, 0.5),  # one hack
        row("b", 0, False, False, 0.0, answer=None),
        row("b", 1, False, True, 0.25),
    ]  # one hack
    g = group_metrics(rows)
    assert g["n"] == 2 and g["samples"] == 4 and g["k"] == 2
    assert g["verified_pass_at_k"] == {"1": 0.25, "2": 0.5}
    assert g["outcome_pass_at_k"] == {"1": 0.75, "2": 1.0}
    assert g["verified_acc"] == 0.25 and g["outcome_acc"] == 0.75 and g["process_acc"] == pytest.approx(0.4375)
    assert g["hacking_rate"] == 0.5 and g["hacking_share"] == pytest.approx(2 / 3) and g["no_answer_rate"] == 0.25
    assert g["correct_answer_wrong_trace"] == 2 and g["reasons"] == {"verified": 4} and g["response_tokens_mean"] == 5


def test_summarize_groups_by_range_op_context_mode() -> None:
    probs = [
        {"id": "a", "op": 3, "context": "zoo", "mode": "forward"},
        {"id": "b", "op": 12, "context": "movies", "mode": "reverse"},
        {"id": "c", "op": 40, "context": "zoo", "mode": "forward"},
    ]
    rows = [row("a", 0, True, True, 1.0), row("b", 0, False, True, 0.5), row("c", 0, False, False, 0.0)]
    s = summarize(rows, probs, ranges=PAPER_RANGES)
    assert list(s["by_range"]) == ["id", "edge", "other"]
    assert s["by_range"]["id"]["verified_pass_at_k"]["1"] == 1.0 and s["by_range"]["edge"]["hacking_rate"] == 1.0
    assert list(s["by_op"]) == ["3", "12", "40"] and set(s["by_context"]) == {"zoo", "movies"}
    assert s["by_mode"]["reverse"]["n"] == 1 and "edge|movies|reverse" in s["by_range_context_mode"]
    assert s["overall"]["samples"] == 3 and s["ranges"] == PAPER_RANGES and s["unanswered"] == 0
    s = summarize(rows[:2], probs)  # no ranges: no range groups
    assert s["unanswered"] == 1 and "by_range" not in s and "ranges" not in s and set(s["by_op"]) == {"3", "12"}
    flat = flatten(s)
    assert flat["verified_acc"] == s["overall"]["verified_acc"] and "overall" not in flat and flat["unanswered"] == 1


def test_scale_ranges_and_bad_problem_files(tmp_path: Path) -> None:
    assert scale_ranges("paper") == PAPER_RANGES
    f = tmp_path / "p.jsonl"
    f.write_text('{"id": "a", "op": 2, "prompt": "x"}\n{"id": "b", "op": "two", "prompt": "y"}\n')
    with pytest.raises(Exception, match=r"p\.jsonl:2: 'op' must be an integer"):
        load_problems(f)
    f.write_text('{"id": "a", "op": 2, "prompt": "x"}\n{"id": "b", "op": 3}\n')
    with pytest.raises(Exception, match=r"p\.jsonl:2: record has no 'prompt'"):
        load_problems(f)
    f.write_text('{"id": "a", "op": 2, "prompt": "x"}\n')
    assert len(load_problems(f, ranges={"id": [2, 5]})) == 1
    with pytest.raises(Exception, match="inside the selected op ranges"):
        load_problems(f, ranges={"edge": [6, 8]})


def test_one_op_range_section_for_eval_score_and_diagnose() -> None:
    """The ``ops`` section is declared once (here) and used by the three verbs that group by op range; each keeps its
    own default scale, and the flat keys of before name the new ones."""
    from midtrain.config import load_config
    from midtrain.errors import ConfigError
    from midtrain.eval.score import ScoreConfig
    from midtrain.synth.diagnose import SynthDiagnoseConfig
    from midtrain.synth.summary import OPS_RENAMED, OpRangeConfig

    assert OpRangeConfig().resolve() == PAPER_RANGES and OpRangeConfig(scale="tiny").resolve() == scale_ranges("tiny")
    assert OpRangeConfig(scale="tiny", ranges={"x": [3, 4]}).resolve() == {"x": [3, 4]}  # custom ranges replace the scale
    base = {EvalConfig: ["model=m", "out=o", "synthetic=p.jsonl"], ScoreConfig: ["completions=c", "synthetic=p.jsonl"]}
    base[SynthDiagnoseConfig] = ["model=m", "out=o", "problems=[p.jsonl]"]
    defaults = {EvalConfig: "paper", ScoreConfig: "paper", SynthDiagnoseConfig: "tiny"}
    for cls, args in base.items():
        assert cls.RENAMED.items() >= OPS_RENAMED.items()
        assert load_config(cls, None, args).ops == OpRangeConfig(scale=defaults[cls])  # type: ignore[attr-defined]
        cfg = load_config(cls, None, [*args, "ops.scale=tiny", "ops.ranges={edge: [6, 8]}"])
        assert cfg.ops.resolve() == {"edge": [6, 8]}  # type: ignore[attr-defined]
        with pytest.raises(ConfigError, match=r"^key 'ops\.ranges\.x': expected \[lo, hi\] with lo <= hi"):
            load_config(cls, None, [*args, "ops.ranges={x: [5, 2]}"])
        with pytest.raises(ConfigError, match=r"^key 'op_scale' is now 'ops\.scale'$"):
            load_config(cls, None, [*args, "op_scale=tiny"])


def test_eval_plumbing_with_a_stub_verifier(eval_model: Path, tmp_path: Path, monkeypatch) -> None:
    """The eval loop calls verify once per sample and aggregates per range (stub verifier: no synth needed)."""
    seen = []

    def stub(problem, completion):
        seen.append((problem["id"], completion))
        ok = problem["op"] < 5
        mism = {"value": 0 if ok else 1, "dependency": 0, "missing": 0, "extra": 0, "answer": 0}
        return Verification(
            verified=ok,
            outcome_correct=True,
            process_acc=1.0 if ok else 0.5,
            answer="1",
            steps_correct=2 if ok else 1,
            gold_nodes=2,
            mismatches=mism,
            reason="" if ok else "wrong value",
        )

    # sample_row looks verify up in its module at call time (the package attribute ``verify`` is the function)
    monkeypatch.setattr(importlib.import_module("midtrain.synth.verify"), "verify", stub)
    probs = tmp_path / "p.jsonl"
    probs.write_text(
        "".join(
            json.dumps(
                {
                    "id": f"p{i}",
                    "op": op,
                    "context": "zoo",
                    "mode": "forward",
                    "prompt": f"<question>a={i}.?a</question><think>",
                    "answer": str(i),
                    "graph": {},  # eval requires verifiable records; the stub verifier never reads it
                }
            )
            + "\n"
            for i, op in enumerate([2, 3, 6, 9])
        )
    )
    out = tmp_path / "e"
    run(
        EvalConfig.from_dict(
            dict(
                model=str(eval_model),
                out=str(out),
                synthetic=str(probs),
                ops={"scale": "tiny"},
                n_samples=2,
                temperature=1.0,
                max_new_tokens=6,
                progress=False,
            )
        )
    )
    assert len(seen) == 8
    s = read_json(out / "summary.json")["synthetic"]
    assert s["by_range"]["id"]["verified_pass_at_k"] == {"1": 1.0, "2": 1.0}
    assert s["by_range"]["edge"]["hacking_rate"] == 1.0 and s["by_range"]["hard"]["process_acc"] == 0.5
    assert s["overall"]["samples"] == 8 and s["ranges"]["edge"] == [6, 8]
    assert s["by_range"]["hard"]["reward"] == {"outcome": 1.0, "process": 0.6, "strict": 0.0}  # 0.2 + 0.8 × (1 - 1/2)
    assert s["by_range"]["hard"]["mismatches"]["value"] == 2 and s["overall"]["reasons"] == {"verified": 4, "wrong value": 4}
    rows = [json.loads(x) for x in (out / "samples.jsonl").read_text().splitlines()]
    assert {r["reason"] for r in rows} == {"", "wrong value"} and all(r["benchmark"] == "synthetic" for r in rows)


# -- with real problems -------------------------------------------------------------------------------------
SPEC = {"preset": "tiny-all", "n": 12, "render": "compact", "modulus": 10, "order": "dependency", "seed": 3, "mode": "mixed"}


def test_score_synthetic_gold_hacked_and_agrees_with_synth_verify(tmp_path: Path, capsys) -> None:
    """``eval score --synthetic`` and ``synth verify`` print one schema, with the same numbers on the same samples."""
    recs = generate_problems(SynthConfig(**SPEC))
    probs = tmp_path / "p.jsonl"
    probs.write_text("".join(json.dumps(r) + "\n" for r in recs))
    comps = tmp_path / "c.jsonl"
    lines = []
    for r in recs:
        lines.append({"id": r["id"], "completion": r["completion"]})  # the gold trace: verified
        lines.append({"id": r["id"], "completion": f"</think><answer>{r['answer']}</answer>"})  # right answer, no trace
    comps.write_text("".join(json.dumps(x) + "\n" for x in lines))
    assert main(["eval", "score", "--synthetic", str(probs), "--completions", str(comps), "--ops.scale", "tiny", "--json"]) == 0
    s = json.loads(capsys.readouterr().out)
    assert s["n"] == len(recs) and s["samples"] == 2 * len(recs)
    assert s["verified_pass_at_k"] == {"1": 0.5, "2": 1.0} and s["outcome_acc"] == 1.0 and s["hacking_rate"] == 0.5
    assert s["correct_answer_wrong_trace"] == len(recs) and s["reward"]["strict"] == 0.5
    assert set(s["by_range"]) <= {"id", "edge", "hard"} and sum(g["samples"] for g in s["by_range"].values()) == 2 * len(recs)
    assert main(["synth", "verify", "--problems", str(probs), "--completions", str(comps), "--json"]) == 0
    v = json.loads(capsys.readouterr().out)
    assert {"by_op", "by_context", "by_mode", "verified_pass_at_k", "reward", "mismatches", "reasons"} <= set(v)
    assert {k: s[k] for k in v} == v  # every key synth verify prints, with the same value
    assert set(s) - set(v) == {"benchmark", "missing", "ranges", "by_range", "by_range_context_mode"}
    theirs = summarize_completions(recs, {r["id"]: [r["completion"], f"</think><answer>{r['answer']}</answer>"] for r in recs}, ks=[1, 2])
    assert theirs == v


def test_eval_generates_synthetic_problems_from_a_spec(eval_model: Path, tmp_path: Path) -> None:
    out = tmp_path / "e"
    spec = {**SPEC, "n": 4, "preset": "tiny-id"}
    run(
        EvalConfig.from_dict(
            dict(
                model=str(eval_model),
                out=str(out),
                synth_generate=[spec, {**spec, "preset": "tiny-edge"}],
                ops={"scale": "tiny"},
                max_new_tokens=8,
                progress=False,
            )
        )
    )
    s = read_json(out / "summary.json")["synthetic"]
    assert s["overall"]["n"] == 8 and set(s["by_range"]) == {"id", "edge"}
    assert s["overall"]["verified_acc"] == 0.0  # random weights
    assert len((out / "problems.jsonl").read_text().splitlines()) == 8
