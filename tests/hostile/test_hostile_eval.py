"""Hostile inputs for evaluation and analysis: eval, eval score, analyze weights, analyze cka, report."""

from __future__ import annotations

import json

import pytest
from hostile_support import Case, Env, bad_utf8, check_case, params, truncated_jsonl

pytestmark = pytest.mark.timeout(60)


# -- eval -------------------------------------------------------------------------------------------------------
def EV(e: Env, *extra: str, model: str | None = None, data: str | None = None) -> list[str]:
    return [
        "eval",
        model or str(e.a.nano),
        "--out",
        str(e.out),
        "--data",
        data or str(e.a.bench),
        "--max-new-tokens",
        "4",
        "--score-workers",
        "0",
        "--no-progress",
        *extra,
    ]


def EV_synth(e: Env, problems: str, *extra: str) -> list[str]:
    return ["eval", str(e.a.nano), "--out", str(e.out), "--synthetic", problems, "--max-new-tokens", "4", "--score-workers", "0", *extra]


def problem_without(e: Env, field: str) -> dict:
    rec = json.loads(e.a.problems.read_text().splitlines()[0])
    rec.pop(field)
    return rec


def bench_rec(i: int = 0, **kw) -> dict:
    return {"id": f"b{i}", "problem": f"What is {i} + {i}?", "answer": str(2 * i), **kw}


EVAL = [
    Case("eval/n-samples-zero", lambda e: EV(e, "--n-samples", "0"), ["n_samples"]),
    Case("eval/temperature-negative", lambda e: EV(e, "--temperature", "-1"), ["temperature"]),
    Case("eval/temperature-nan", lambda e: EV(e, "--temperature", "nan"), ["temperature"]),
    Case("eval/top-p-zero", lambda e: EV(e, "--top-p", "0"), ["top_p"]),
    Case("eval/top-p-nan", lambda e: EV(e, "--top-p", "nan"), ["top_p"]),
    Case("eval/max-new-tokens-zero", lambda e: EV(e, "--max-new-tokens", "0"), ["max_new_tokens"]),
    Case("eval/batch-size-zero", lambda e: EV(e, "--batch-size", "0"), ["batch_size"]),
    Case("eval/limit-negative", lambda e: EV(e, "--limit", "-1"), ["limit"]),
    Case("eval/n-shots-negative", lambda e: EV(e, "--n-shots", "-2"), ["n_shots"]),
    Case("eval/domain-weight-negative", lambda e: EV(e, "domain_weights.custom=-1"), ["domain_weights"]),
    Case("eval/op-range-reversed", lambda e: EV_synth(e, str(e.a.problems), "ops.ranges.id=[9,2]"), ["ops.ranges.id"]),
    Case("eval/synth-ranges-unknown", lambda e: EV_synth(e, str(e.a.problems), "--synth-ranges", "galaxy"), ["galaxy"]),
    Case("eval/no-benchmark", lambda e: ["eval", str(e.a.nano), "--out", str(e.out)], ["benchmarks"]),
    Case("eval/benchmark-unknown", lambda e: ["eval", str(e.a.nano), "--out", str(e.out), "--benchmarks", "gsm9k"], ["gsm9k"]),
    Case("eval/data-missing", lambda e: EV(e, data=str(e.path("nope.jsonl"))), ["nope.jsonl"]),
    Case("eval/data-bad-utf8", lambda e: EV(e, data=e.write("b.jsonl", bad_utf8(bench_rec()))), ["b.jsonl:2"]),
    Case(
        "eval/data-truncated",
        lambda e: EV(e, data=e.write("b.jsonl", truncated_jsonl([bench_rec(0), bench_rec(1), bench_rec(2)]))),
        ["b.jsonl:3"],
    ),
    Case("eval/data-not-objects", lambda e: EV(e, data=e.write("b.jsonl", "null\n")), ["b.jsonl:1"]),
    Case("eval/data-missing-answer", lambda e: EV(e, data=e.jsonl("b.jsonl", [{"id": "x", "problem": "p"}])), ["b.jsonl:1", "answer"]),
    Case("eval/data-duplicate-id", lambda e: EV(e, data=e.jsonl("b.jsonl", [bench_rec(0), bench_rec(0)])), ["b.jsonl:2", "b0"]),
    Case("eval/synthetic-without-graph", lambda e: EV_synth(e, e.jsonl("s.jsonl", [problem_without(e, "graph")])), ["s.jsonl:1", "graph"]),
    Case("eval/model-missing", lambda e: EV(e, model=str(e.path("nomodel"))), ["nomodel"]),
    Case("eval/model-truncated-safetensors", lambda e: EV(e, model=str(e.a.trunc_model)), ["trunc_model"]),
    Case("eval/model-malicious-pickle", lambda e: EV(e, model=str(e.a.pickle_model)), ["pickle_model"]),
    Case("eval/model-config-garbage", lambda e: EV(e, model=str(e.a.garbage_config_model)), ["garbage_config_model"]),
    Case("eval/out-under-a-file", lambda e: EV(e, "--out", str(e.file_parent() / "ev")), ["afile"]),
    Case("eval/out-unwritable", lambda e: EV(e, "--out", str(e.unwritable())), [lambda e: str(e.unwritable().parent)]),
]


# -- eval score -------------------------------------------------------------------------------------------------
def ES(e: Env, completions: list[dict] | str, *extra: str) -> list[str]:
    path = completions if isinstance(completions, str) else e.jsonl("comps.jsonl", completions)
    return ["eval", "score", "--completions", path, "--data", str(e.a.bench), *extra]


def comp(i: int = 0, **kw) -> dict:
    return {"id": f"b{i}", "completion": f"\\boxed{{{2 * i}}}", **kw}


SCORE = [
    Case("eval-score/sample-not-a-number", lambda e: ES(e, [comp(0, sample="zero")]), ["comps.jsonl:1", "sample"]),
    Case("eval-score/sample-negative", lambda e: ES(e, [comp(0, sample=-1)]), ["comps.jsonl:1", "sample"]),
    Case("eval-score/sample-fraction", lambda e: ES(e, [comp(0, sample=1.5)]), ["comps.jsonl:1", "sample"]),
    Case(
        "eval-score/duplicate-id-sample",
        lambda e: ES(e, [comp(0, sample=0), comp(1, sample=0), comp(0, sample=0)]),
        ["comps.jsonl:3", "b0"],
    ),
    Case("eval-score/unknown-id", lambda e: ES(e, [comp(0), {"id": "ghost", "completion": "1"}]), ["comps.jsonl:2", "ghost"]),
    Case("eval-score/completion-missing", lambda e: ES(e, [{"id": "b0"}]), ["comps.jsonl:1", "completion"]),
    Case("eval-score/completion-not-string", lambda e: ES(e, [comp(0, completion={"text": 1})]), ["comps.jsonl:1", "completion"]),
    Case("eval-score/completions-bad-utf8", lambda e: ES(e, e.write("comps.jsonl", bad_utf8(comp(0)))), ["comps.jsonl:2"]),
    Case(
        "eval-score/completions-truncated",
        lambda e: ES(e, e.write("comps.jsonl", truncated_jsonl([comp(0), comp(1), comp(2)]))),
        ["comps.jsonl:3"],
    ),
    Case("eval-score/completions-not-objects", lambda e: ES(e, e.write("comps.jsonl", "[]\n")), ["comps.jsonl:1"]),
    Case("eval-score/completions-missing", lambda e: ES(e, str(e.path("nope.jsonl"))), ["nope.jsonl"]),
    Case("eval-score/completions-empty", lambda e: ES(e, e.write("comps.jsonl", "")), ["comps.jsonl"]),
    Case("eval-score/two-sources", lambda e: ES(e, [comp(0)], "--benchmark", "gsm8k"), ["benchmark"]),
    Case(
        "eval-score/benchmark-unknown",
        lambda e: ["eval", "score", "--completions", e.jsonl("c.jsonl", [comp(0)]), "--benchmark", "gsm9k"],
        ["gsm9k"],
    ),
    Case(
        "eval-score/data-duplicate-id",
        lambda e: [
            "eval",
            "score",
            "--completions",
            e.jsonl("c.jsonl", [comp(0)]),
            "--data",
            e.jsonl("b.jsonl", [bench_rec(0), bench_rec(0)]),
        ],
        ["b.jsonl:2"],
    ),
    Case("eval-score/tokenizer-missing", lambda e: ES(e, [comp(0)], "--tokenizer", str(e.path("notok"))), ["notok"]),
    Case("eval-score/out-under-a-file", lambda e: ES(e, [comp(0)], "--out", str(e.file_parent() / "score")), ["afile"]),
]


# -- analyze weights --------------------------------------------------------------------------------------------
def AW(e: Env, *extra: str, a: str | None = None, b: str | None = None) -> list[str]:
    return ["analyze", "weights", a or str(e.a.nano), b or str(e.a.nano2), "--out", str(e.out), *extra]


WEIGHTS = [
    Case("analyze-weights/one-checkpoint", lambda e: ["analyze", "weights", str(e.a.nano), "--out", str(e.out)], ["checkpoints"]),
    Case("analyze-weights/tau-negative", lambda e: AW(e, "--tau", "-1e-5"), ["tau"]),
    Case("analyze-weights/tau-nan", lambda e: AW(e, "--tau", "nan"), ["tau"]),
    Case("analyze-weights/chunk-elements-zero", lambda e: AW(e, "--chunk-elements", "0"), ["chunk_elements"]),
    Case("analyze-weights/threads-negative", lambda e: AW(e, "--threads", "-1"), ["threads"]),
    Case("analyze-weights/compare-one", lambda e: AW(e, "--compare", str(e.a.nano)), ["compare"]),
    Case("analyze-weights/checkpoint-missing", lambda e: AW(e, b=str(e.path("nockpt"))), ["nockpt"]),
    Case("analyze-weights/truncated-safetensors", lambda e: AW(e, b=str(e.a.trunc_model)), ["trunc_model"]),
    Case("analyze-weights/malicious-pickle-only", lambda e: AW(e, b=str(e.a.pickle_model)), ["pickle_model"]),
    Case(
        "analyze-weights/garbage-safetensors-file",
        lambda e: AW(e, b=e.write("w.safetensors", b"\x10\x00\x00\x00\x00\x00\x00\x00{not json}")),
        ["w.safetensors"],
    ),
    Case("analyze-weights/out-under-a-file", lambda e: AW(e, "--out", str(e.file_parent() / "w")), ["afile"]),
]


# -- analyze cka ------------------------------------------------------------------------------------------------
def CKA(e: Env, *extra: str, a: str | None = None, b: str | None = None, probe: str | None = None) -> list[str]:
    return [
        "analyze",
        "cka",
        a or str(e.a.nano),
        b or str(e.a.nano2),
        "--probe",
        probe or str(e.a.probe),
        "--max-examples",
        "4",
        "--max-length",
        "32",
        "--out",
        str(e.out),
        *extra,
    ]


CKA_CASES = [
    Case("analyze-cka/max-examples-one", lambda e: CKA(e, "--max-examples", "1"), ["max_examples"]),
    Case("analyze-cka/batch-size-zero", lambda e: CKA(e, "--batch-size", "0"), ["batch_size"]),
    Case("analyze-cka/minibatch-size-two", lambda e: CKA(e, "--estimator", "minibatch", "--minibatch-size", "2"), ["minibatch_size"]),
    Case("analyze-cka/max-length-zero", lambda e: CKA(e, "--max-length", "0"), ["max_length"]),
    Case("analyze-cka/probe-synthetic-zero", lambda e: CKA(e, probe="synthetic:0"), ["probe"]),
    Case("analyze-cka/probe-missing", lambda e: CKA(e, probe=str(e.path("nope.jsonl"))), ["nope.jsonl"]),
    Case("analyze-cka/probe-empty", lambda e: CKA(e, probe=e.write("empty.jsonl", "")), ["empty.jsonl"]),
    Case("analyze-cka/probe-without-text", lambda e: CKA(e, probe=e.jsonl("nt.jsonl", [{"n": 1}] * 4)), ["nt.jsonl:1"]),
    Case("analyze-cka/probe-bad-utf8", lambda e: CKA(e, probe=e.write("bad.jsonl", bad_utf8({"text": "a b c"}))), ["bad.jsonl:2"]),
    Case("analyze-cka/model-missing", lambda e: CKA(e, b=str(e.path("nomodel"))), ["nomodel"]),
    Case("analyze-cka/model-truncated-safetensors", lambda e: CKA(e, b=str(e.a.trunc_model)), ["trunc_model"]),
    Case("analyze-cka/model-malicious-pickle", lambda e: CKA(e, b=str(e.a.pickle_model)), ["pickle_model"]),
    Case("analyze-cka/out-under-a-file", lambda e: CKA(e, "--out", str(e.file_parent() / "c")), ["afile"]),
]


# -- report -----------------------------------------------------------------------------------------------------
def REP(e: Env, *runs: str, extra: tuple[str, ...] = ()) -> list[str]:
    return ["report", *(runs or (str(e.a.run_dir),)), "--out", str(e.out), *extra]


def run_named(e: Env, name: str) -> str:
    """A copy of the shared run directory under a hostile name (the report's label is the directory name)."""
    import shutil

    dst = e.tmp / "runs" / name
    shutil.copytree(e.a.run_dir, dst)
    return str(e.tmp / "runs")


REPORT = [
    Case(
        "report/mathtext-label",
        lambda e: REP(e, run_named(e, r"$\frac{1$ loss")),
        code=0,
        exists=[lambda e: e.out / "report.md", lambda e: e.out / "report.html"],
    ),
    Case(
        "report/mathtext-title",
        lambda e: REP(e, extra=("--title", r"$\sqrt{$ report")),
        code=0,
        exists=[lambda e: e.out / "report.md"],
    ),
    Case("report/runs-missing", lambda e: REP(e, str(e.path("noruns"))), ["noruns"]),
    Case("report/runs-is-a-file", lambda e: REP(e, e.write("runs.txt", "x")), ["runs.txt"]),
    Case("report/runs-without-results", lambda e: REP(e, e.dir("bare")), ["bare"]),
    Case("report/max-depth-negative", lambda e: REP(e, extra=("--max-depth", "-1")), ["max_depth"]),
    Case("report/out-under-a-file", lambda e: REP(e, extra=("--out", str(e.file_parent() / "rep"))), ["afile"]),
    Case("report/out-unwritable", lambda e: REP(e, extra=("--out", str(e.unwritable()))), [lambda e: str(e.unwritable().parent)]),
    Case(
        "report/out-is-foreign-dir",
        lambda e: (e.write("out/precious.txt", "mine"), REP(e))[1],
        ["out"],
    ),
]


CASES = EVAL + SCORE + WEIGHTS + CKA_CASES + REPORT


@pytest.mark.parametrize("case", params(CASES))
def test_hostile(case: Case, env: Env, capsys) -> None:
    check_case(case, env, capsys)
    if case.id == "report/out-is-foreign-dir":
        assert (env.out / "precious.txt").read_text() == "mine"


def test_duplicate_samples_do_not_inflate_k(env: Env, capsys) -> None:
    """Two lines for (b0, sample 0) must be refused, never counted as k = 2 (issue #14: counted as k = 4)."""
    from hostile_support import check_message, run_cli

    rows = [comp(i, sample=s) for i in range(3) for s in (0, 1)] + [comp(0, sample=1), comp(0, sample=1)]
    res = run_cli(ES(env, rows, "--json"), capsys)
    if res.code == 0:
        out = json.loads(res.out) if res.out.strip().startswith("{") else {}
        pytest.fail(f"duplicate (id, sample) pairs were accepted: k={out.get('k')} ({res.out.strip()[:200]})")
    check_message(res, 2, ["comps.jsonl", "b0"])
