"""Cases that used to pass silently or fail for nothing (issue 32, items 7 and 10).

- ``synth generate`` replaced an unrelated existing file without ``--overwrite``: now an existing output holding
  anything but this config's records is refused, as a run directory holding another run is; a rerun of the same
  config finds its records there and writes nothing.
- ``tokenizer train`` on a corpus of blank lines trained a tokenizer of nothing but byte symbols: refused, naming the
  file.
- An experiment of only data, judge or augment stages failed with "no run results … found under " and an empty
  path: it finishes, saying there is nothing to report.
"""

from __future__ import annotations

import json
import os

import pytest
from hostile_support import Case, Env, check_case, params, run_cli

pytestmark = pytest.mark.timeout(60)


def GEN(e: Env, out: str, *extra: str) -> list[str]:
    return ["synth", "generate", "--ops", "2-3", "--n", "4", "--render", "compact", "--modulus", "10", "--out", out, *extra]


def unrelated(e: Env) -> list[str]:
    return GEN(e, e.write("notes.txt", "my notes\n"))


def other_config(e: Env) -> list[str]:
    out = e.jsonl("problems.jsonl", [{"id": "p0", "problem": "a=1. ?a", "answer": "1"}])
    return GEN(e, out)


def TOK(e: Env, corpus: str) -> list[str]:
    return ["tokenizer", "train", "--corpus", corpus, "--out", str(e.out)]


CASES = [
    Case("silent/synth-generate-over-unrelated-file", unrelated, ["notes.txt", "--overwrite"]),
    Case("silent/synth-generate-over-other-problems", other_config, ["problems.jsonl", "--overwrite"]),
    Case("silent/tokenizer-train-blank-txt", lambda e: TOK(e, e.write("blank.txt", "\n\n   \n\t\n\n")), ["blank.txt", "empty corpus"]),
    Case(
        "silent/tokenizer-train-whitespace-records",
        lambda e: TOK(e, e.jsonl("ws.jsonl", [{"text": " "}, {"text": "\n\n"}])),
        ["ws.jsonl", "empty corpus"],
    ),
]


@pytest.mark.parametrize("case", params(CASES))
def test_hostile(case: Case, env: Env, capsys) -> None:
    check_case(case, env, capsys)


def test_a_refused_file_is_unchanged_and_overwrite_replaces_it(env: Env, capsys) -> None:
    notes = env.write("notes.txt", "my notes\n")
    assert run_cli(GEN(env, notes), capsys).code == 2
    assert open(notes).read() == "my notes\n"
    assert run_cli(GEN(env, notes, "--overwrite"), capsys).code == 0
    assert [json.loads(line)["op"] in (2, 3) for line in open(notes)] == [True] * 4


def test_a_rerun_of_the_same_config_writes_nothing(env: Env, capsys) -> None:
    out = str(env.path("p.jsonl.gz"))
    assert run_cli(GEN(env, out), capsys).code == 0
    first = os.stat(out)
    outcome = run_cli(GEN(env, out), capsys)
    assert outcome.code == 0, outcome.err
    assert (os.stat(out).st_ino, os.stat(out).st_mtime_ns) == (first.st_ino, first.st_mtime_ns)  # not rewritten


def test_an_experiment_with_nothing_to_report_finishes(env: Env, capsys) -> None:
    gen = {"verb": "synth generate", "per_seed": False, "args": {"ops": "2-3", "n": 4, "render": "compact", "modulus": 10}}
    judge = {"verb": "judge", "per_seed": False, "args": {"input": str(env.a.pairs), "judge": "exact"}}
    doc = {"name": "data-only", "out": str(env.out), "stages": {"gen": gen, "judged": judge}}  # report: true (the default)
    outcome = run_cli(["experiment", "run", env.write("exp.yaml", json.dumps(doc))], capsys)
    assert outcome.code == 0, outcome.err
    assert "nothing to report" in outcome.out
    assert not (env.out / "report").exists()
    assert (env.out / "experiment.json").is_file() and (env.out / "shared" / "gen.jsonl").is_file()
