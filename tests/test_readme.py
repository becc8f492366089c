"""The README's walk-through runs as written: its commands, taken exactly as the README writes them, run in a fresh
directory with only their budgets scaled down, so the README cannot drift from the code again.

The budgets are scaled by dotted overrides appended to a command (:data:`TINY`): the CLI applies ``key=value`` after
the flags, so the README's own flag stays in the command and the override wins. Every verb of the walk-through is
either scaled here or listed in :data:`AS_WRITTEN` (it runs in seconds at the README's size); a new verb in the
walk-through fails :func:`test_every_walkthrough_verb_is_scaled_or_runs_as_written` until it is placed.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from midtrain.stages import STAGES

ROOT = Path(__file__).resolve().parents[1]
README = ROOT / "README.md"
SECTION = "## A walk-through on a laptop CPU"

# verb → the dotted overrides that make its walk-through command take seconds (the README's value in the comment).
TINY: dict[str, dict[str, str]] = {
    "pretrain": {"max_tokens": "4096"},  # --max-tokens 2000000: 2 steps of 8 rows × 256 tokens
    "rl": {"max_steps": "2"},  # --max-steps 50
    "eval": {"limit": "16", "max_new_tokens": "64"},  # all 500 problems, 512 new tokens each (a 2-step model rambles)
}
# Verbs that run at the README's own size: seconds each. `synth generate` keeps its --n 20000 on purpose: the size
# is what once failed ("more distinct problems than this setting has").
AS_WRITTEN = frozenset({"synth generate", "tokenizer train", "model init", "report"})


def walkthrough(readme: str) -> list[str]:
    """The lines of the walk-through's ```bash block, exactly as the README writes them."""
    _, found, section = readme.partition(SECTION)
    assert found, f"README.md has no {SECTION!r} section"
    block = re.search(r"```bash\n(.*?)```", section, re.S)
    assert block, "the walk-through has no ```bash block"
    return block.group(1).splitlines()


def verb_of(line: str) -> str | None:
    """The registry verb a ``midtrain ...`` line runs (the longest match: ``synth generate`` before ``synth``)."""
    words = line.split()
    if words[:1] != ["midtrain"]:
        return None
    verbs = {s.verb for s in STAGES}
    return next((v for n in (2, 1) if (v := " ".join(words[1 : 1 + n])) in verbs), words[1] if len(words) > 1 else "")


def scaled(line: str) -> str:
    """``line`` with its verb's :data:`TINY` overrides appended (before a trailing comment); other lines as is."""
    extra = "".join(f" {k}={v}" for k, v in TINY.get(verb_of(line) or "", {}).items())
    command, hash_, comment = line.partition(" #")
    return f"{command.rstrip()}{extra}" + (f"  #{comment}" if hash_ else "")


def test_every_walkthrough_verb_is_scaled_or_runs_as_written():
    verbs = [v for line in walkthrough(README.read_text(encoding="utf-8")) if (v := verb_of(line)) is not None]
    assert verbs, "the walk-through runs no midtrain command"
    unplaced = sorted({v for v in verbs if v not in TINY and v not in AS_WRITTEN})
    assert not unplaced, f"walk-through verbs neither scaled (TINY) nor known to be fast (AS_WRITTEN): {unplaced}"
    assert set(TINY) <= set(verbs), f"TINY scales verbs the walk-through no longer runs: {sorted(set(TINY) - set(verbs))}"


def test_scaling_appends_overrides_and_keeps_the_command():
    line = "midtrain rl --model runs/base --max-steps 50 --out runs/rl"
    assert scaled(line) == line + " max_steps=2"
    assert scaled(line + "   # ~1 min") == line + " max_steps=2  # ~1 min"
    assert scaled("# 3. pretraining") == "# 3. pretraining" and scaled('W="--render compact"') == 'W="--render compact"'
    assert verb_of("midtrain synth generate --n 5") == "synth generate" and verb_of("midtrain report a") == "report"


@pytest.mark.slow
def test_the_walkthrough_runs_as_written(tmp_path: Path):
    """Every command of the walk-through, in order, in one bash session (its ``W=...`` variable included)."""
    bindir = Path(sys.executable).parent
    if shutil.which("midtrain", path=str(bindir)) is None:
        pytest.skip(f"no midtrain entry point beside {sys.executable} (pip install -e .)")
    lines = walkthrough(README.read_text(encoding="utf-8"))
    script = "\n".join(scaled(line) for line in lines)
    env = {**os.environ, "PATH": f"{bindir}{os.pathsep}{os.environ.get('PATH', '')}", "HF_HUB_OFFLINE": "1"}
    env.pop("MIDTRAIN_QUIET", None)  # show the commands' own output on failure
    done = subprocess.run(["bash", "-euo", "pipefail", "-c", script], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=1800)
    assert done.returncode == 0, f"the walk-through failed (exit {done.returncode}):\n{done.stderr[-3000:]}"
    runs = tmp_path / "runs"
    assert sum(1 for _ in (runs / "id.jsonl").open()) == 20000  # the size that once failed
    for stage in ("tok", "init", "base", "rl", "eval", "report"):
        assert (runs / stage / "COMPLETE").is_file(), f"runs/{stage} did not finish"
    assert "<img" in (runs / "report" / "report.html").read_text(encoding="utf-8")
    assert "MFU is relative to the " in done.stderr  # the pretraining log names the peak it divides by
