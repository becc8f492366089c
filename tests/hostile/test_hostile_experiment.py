"""Hostile inputs for experiment run and demo: stage names that escape the output, bad graphs, bad files.

The experiment's output sits two levels deep in the case directory (``case/w/out``), so that a stage name like
``../../X`` that escapes it still lands inside the case directory, where the suite's "nothing left behind" rule
sees it (and nothing is ever written outside the test's tmp directory).
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from hostile_support import Case, Env, check_case, params

pytestmark = pytest.mark.timeout(60)

GEN = {"verb": "synth generate", "per_seed": False, "args": {"ops": "2-3", "n": 4, "render": "compact", "modulus": 10}}


def exp_out(e: Env) -> Path:
    return e.tmp / "w" / "out"


def experiment(e: Env, stages: dict | None = None, name: str = "exp.yaml", **top) -> str:
    """An experiment file (JSON is YAML) with a cheap synth generate stage unless ``stages`` says otherwise."""
    doc = {"name": "hostile", "out": str(exp_out(e)), "report": False, "stages": stages if stages is not None else {"gen": GEN}, **top}
    return e.write(name, json.dumps(doc, indent=1))


def EXP(e: Env, *extra: str, stages: dict | None = None, **top) -> list[str]:
    return ["experiment", "run", experiment(e, stages, **top), *extra]


def EXP_text(e: Env, text: str) -> list[str]:
    return ["experiment", "run", e.write("exp.yaml", text)]


def judge_stage(e: Env) -> dict:
    return {"verb": "judge", "args": {"input": str(e.a.pairs), "judge": "exact"}}


YAML_HEAD = "name: hostile\nreport: false\n"

EXPERIMENT = [
    # stage names are path components: anything that can leave OUT must be refused before anything is written
    Case("experiment/stage-name-dotdot-escape", lambda e: EXP(e, stages={"../../X": GEN}), ["../../X"]),
    Case("experiment/stage-name-absolute", lambda e: EXP(e, stages={str(e.tmp / "abs" / "X"): GEN}), [lambda e: str(e.tmp / "abs" / "X")]),
    Case("experiment/stage-name-dotdot-run-dir", lambda e: EXP(e, stages={"../../Y": judge_stage(e)}), ["../../Y"]),
    Case("experiment/stage-name-parent", lambda e: EXP(e, stages={"..": GEN}), ["'..'"]),
    Case("experiment/stage-name-slash", lambda e: EXP(e, stages={"a/b": GEN}), ["a/b"]),
    Case("experiment/stage-name-journal", lambda e: EXP(e, stages={".journal": GEN}), [".journal"]),
    # the graph
    Case(
        "experiment/path-stage-missing",
        lambda e: EXP(e, stages={"base": {"path": str(e.tmp / "nobase")}, "gen": GEN}),
        ["nobase"],
    ),
    Case("experiment/unknown-verb", lambda e: EXP(e, stages={"gen": {**GEN, "verb": "synth generat"}}), ["stages.gen.verb"]),
    Case("experiment/unknown-arg", lambda e: EXP(e, stages={"gen": {**GEN, "args": {**GEN["args"], "nn": 4}}}), ["stages.gen.args.nn"]),
    Case(
        "experiment/arg-wrong-type", lambda e: EXP(e, stages={"gen": {**GEN, "args": {**GEN["args"], "n": "four"}}}), ["stages.gen.args.n"]
    ),
    Case("experiment/arg-out-of-range", lambda e: EXP(e, stages={"gen": {**GEN, "args": {**GEN["args"], "n": 0}}}), ["stages.gen"]),
    Case(
        "experiment/arg-sets-out",
        lambda e: EXP(e, stages={"gen": {**GEN, "args": {**GEN["args"], "out": "x.jsonl"}}}),
        ["stages.gen.args.out"],
    ),
    Case(
        "experiment/dependency-cycle",
        lambda e: EXP(
            e,
            stages={
                "a": {"verb": "augment split", "per_seed": False, "args": {"input": "${b}"}},
                "b": {"verb": "augment split", "per_seed": False, "args": {"input": "${a}"}},
            },
        ),
        ["cycle"],
    ),
    Case("experiment/unknown-reference", lambda e: EXP(e, stages={"s": {"verb": "augment split", "args": {"input": "${nope}"}}}), ["nope"]),
    Case(
        "experiment/unknown-variable", lambda e: EXP(e, stages={"gen": {**GEN, "args": {**GEN["args"], "n": "${vars.count}"}}}), ["count"]
    ),
    Case("experiment/no-stages", lambda e: EXP(e, stages={}), ["stages"]),
    Case("experiment/seeds-empty", lambda e: EXP(e, seeds=[]), ["seeds"]),
    Case("experiment/jobs-zero", lambda e: EXP(e, jobs=0), ["jobs"]),
    Case("experiment/jobs-negative-flag", lambda e: EXP(e, "--jobs", "-1"), ["jobs"]),
    Case("experiment/threads-per-job-negative", lambda e: EXP(e, threads_per_job=-1), ["threads_per_job"]),
    Case("experiment/base-unknown", lambda e: EXP(e, base="nobase"), ["base"]),
    Case("experiment/arm-chain-unknown", lambda e: EXP(e, arms={"a": {"chain": ["ghost"], "eval": "gen"}}), ["arms.a.chain"]),
    Case("experiment/only-unknown-arm", lambda e: EXP(e, only=["zz"]), ["only"]),
    # files
    Case("experiment/config-missing", lambda e: ["experiment", "run", str(e.path("nope.yaml"))], ["nope.yaml"]),
    Case("experiment/config-directory", lambda e: ["experiment", "run", e.dir("expdir")], ["expdir"]),
    Case("experiment/config-bad-utf8", lambda e: ["experiment", "run", e.write("exp.yaml", b"name: caf\xe9\n")], ["exp.yaml"]),
    Case("experiment/config-not-a-mapping", lambda e: EXP_text(e, "- gen\n- eval\n"), ["exp.yaml"]),
    Case("experiment/config-invalid-yaml", lambda e: EXP_text(e, "stages: {gen: [unclosed\n"), ["exp.yaml"]),
    Case(
        "experiment/yaml-duplicate-stage",
        lambda e: EXP_text(
            e,
            YAML_HEAD
            + f"out: {exp_out(e)}\nstages:\n  gen: {json.dumps(GEN)}\n  gen: {json.dumps({**GEN, 'args': {**GEN['args'], 'n': 8}})}\n",
        ),
        ["gen", "exp.yaml"],
    ),
    Case(
        "experiment/yaml-duplicate-top-key",
        lambda e: EXP_text(e, YAML_HEAD + f"out: {exp_out(e)}\nout: {e.tmp / 'other'}\nstages:\n  gen: {json.dumps(GEN)}\n"),
        ["out", "exp.yaml"],
    ),
    Case(
        "experiment/positional-and-config",
        lambda e: ["experiment", "run", experiment(e), "--config", experiment(e, name="b.yaml")],
        ["config"],
    ),
    Case("experiment/out-under-a-file", lambda e: EXP(e, out=str(e.file_parent() / "exp")), ["afile"]),
    Case("experiment/out-unwritable", lambda e: EXP(e, out=str(e.unwritable())), [lambda e: str(e.unwritable().parent)]),
]


# -- demo -------------------------------------------------------------------------------------------------------
def DEMO(e: Env, *extra: str) -> list[str]:
    return ["demo", "--quick", "--out", str(exp_out(e)), *extra]


DEMO_CASES = [
    Case("demo/jobs-zero", lambda e: DEMO(e, "--jobs", "0"), ["jobs"]),
    Case("demo/jobs-negative", lambda e: DEMO(e, "--jobs", "-2"), ["jobs"]),
    Case("demo/seed-not-a-number", lambda e: DEMO(e, "--seed", "one"), ["seed"]),
    Case("demo/experiment-missing", lambda e: DEMO(e, "--experiment", str(e.path("nope.yaml"))), ["nope.yaml"]),
    Case("demo/experiment-directory", lambda e: DEMO(e, "--experiment", e.dir("expdir")), ["expdir"]),
    Case(
        "demo/experiment-duplicate-key",
        lambda e: DEMO(e, "--experiment", e.write("d.yaml", YAML_HEAD + "seeds: [0]\nseeds: [1]\n")),
        ["seeds", "d.yaml"],
    ),
    Case("demo/experiment-stage-escape", lambda e: DEMO(e, "--experiment", experiment(e, {"../../X": GEN}, name="d.yaml")), ["../../X"]),
    Case(
        "demo/base-experiment-missing",
        lambda e: DEMO(e, "--from-scratch", "--base-experiment", str(e.path("nobase.yaml"))),
        ["nobase.yaml"],
    ),
    Case("demo/out-under-a-file", lambda e: ["demo", "--quick", "--out", str(e.file_parent() / "demo")], ["afile"]),
]


CASES = EXPERIMENT + DEMO_CASES


@pytest.mark.parametrize("case", params(CASES))
def test_hostile(case: Case, env: Env, capsys) -> None:
    check_case(case, env, capsys)
