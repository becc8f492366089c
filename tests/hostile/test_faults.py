"""Fault tests (issue #14): two writers on one run directory, and kill -9 during atomic writes.

Two concurrent writers, per stage kind: writer A runs as a child process; as soon as A holds its lock (seen in
``/proc/locks``; or, if A never takes one, once its output appears) A is frozen with SIGSTOP, so that the
second writer B (in this process, same ``--out``) deterministically meets a live holder. B must exit 2 with one
line naming A's pid; A is then resumed and must finish with its outputs intact (no duplicated log lines, samples
or chunks).

kill -9: the killed file is the old one or the new one, never a torn one, and the next run leaves no orphan
temporary file behind.
"""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from statistics import mean

import pytest
from hostile_support import Env, chain_text, check_message, leftovers, run_cli, sub_env, write_jsonl

from midtrain.augment.rules import prompt_text
from midtrain.llm.prompts import load_prompt
from midtrain.llm.serve import OpenAIServer

pytestmark = pytest.mark.timeout(120)


# -- child processes -----------------------------------------------------------------------------------------------
def spawn(argv: list[str], log: Path) -> subprocess.Popen:
    f = open(log, "w")  # noqa: SIM115 - closed with the process
    return subprocess.Popen(
        [sys.executable, "-m", "midtrain", *argv], stdout=f, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, env=sub_env()
    )


def holds_lock(pid: int) -> bool:
    """Whether ``pid`` holds a flock or POSIX lock (``/proc/locks``: ``N: FLOCK ADVISORY WRITE PID dev:inode ...``)."""
    try:
        text = Path("/proc/locks").read_text()
    except OSError:
        return False
    for line in text.splitlines():
        parts = line.split()
        if len(parts) > 4 and parts[1] in ("FLOCK", "POSIX", "OFDLCK") and parts[4] == str(pid):
            return True
    return False


def wait_for(cond: Callable[[], bool], timeout: float, step: float = 0.005) -> bool:
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if cond():
            return True
        time.sleep(step)
    return cond()


def stop_when_busy(proc: subprocess.Popen, started: Callable[[], bool], timeout: float = 60) -> str:
    """Freeze ``proc`` once it holds a lock; if it never takes one, once ``started()`` (its output appeared).

    Returns how it was caught (for the failure message).
    """
    caught = wait_for(lambda: holds_lock(proc.pid) or started() or proc.poll() is not None, timeout)
    assert caught, f"writer A (pid {proc.pid}) neither locked nor started within {timeout:g}s"
    assert proc.poll() is None, f"writer A finished (exit {proc.returncode}) before it could be caught at work; make it slower"
    if not holds_lock(proc.pid):
        wait_for(lambda: holds_lock(proc.pid), 2.0)  # a lock taken right after the run directory appeared
    os.kill(proc.pid, signal.SIGSTOP)
    return "holding a lock" if holds_lock(proc.pid) else "with NO lock held (none in /proc/locks)"


def finish(proc: subprocess.Popen, log: Path, timeout: float = 120) -> None:
    os.kill(proc.pid, signal.SIGCONT)
    try:
        code = proc.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        raise
    assert code == 0, f"writer A failed after the second writer ran (exit {code}):\n{log.read_text()[-2000:]}"


def cleanup(proc: subprocess.Popen) -> None:
    if proc.poll() is None:
        try:
            os.kill(proc.pid, signal.SIGCONT)
        except ProcessLookupError:
            pass
        proc.kill()
        proc.wait(timeout=30)


# -- the stage kinds ---------------------------------------------------------------------------------------------
@dataclass
class Kind:
    """Writer A's argv, writer B's argv (same output), when A is at work, and what A's outputs must hold."""

    argv_a: Callable[[Env], list[str]]
    argv_b: Callable[[Env], list[str]]
    started: Callable[[Env], bool]
    check: Callable[[Env], None]


def big_corpus(e: Env) -> str:
    rng = random.Random(3)
    return str(write_jsonl(e.tmp / "corpus.jsonl", ({"id": f"c{i}", "text": chain_text(rng)} for i in range(400))))


STEPS = 16


def lm_argv(verb: str) -> Callable[[Env], list[str]]:
    def argv(e: Env) -> list[str]:
        data = e.tmp / "corpus.jsonl"
        path = str(data) if data.exists() else big_corpus(e)
        return [verb, "--model", str(e.a.nano), "--corpus.files", path, "--max-steps", str(STEPS), "--seq-len", "64", "--batch-size", "4"]

    return lambda e: [*argv(e), "--log-every-steps", "1", "--precision", "fp32", "--out", str(e.out)]


def log_steps(path: Path) -> list[int]:
    return [json.loads(line)["step"] for line in path.read_text().splitlines() if line.strip()]


def check_lm(e: Env) -> None:
    steps = log_steps(e.out / "log.jsonl")
    assert steps == list(range(1, STEPS + 1)), f"log.jsonl holds {len(steps)} lines for {STEPS} steps: {steps}"
    assert json.loads((e.out / "midtrain.json").read_text())["status"] == "complete"


N_PROBLEMS = 24


def eval_argv(e: Env) -> list[str]:
    bench = e.tmp / "bench.jsonl"
    if not bench.exists():
        write_jsonl(bench, ({"id": f"q{i}", "problem": f"What is {i} + {i}?", "answer": str(2 * i)} for i in range(N_PROBLEMS)))
    return ["eval", str(e.a.nano), "--out", str(e.out), "--data", str(bench), "--max-new-tokens", "24", "--batch-size", "2"] + [
        "--score-workers",
        "0",
        "--no-progress",
    ]


def check_eval(e: Env) -> None:
    rows = [json.loads(line) for line in (e.out / "samples.jsonl").read_text().splitlines() if line.strip()]
    ids = [r["id"] for r in rows]
    assert len(ids) == len(set(ids)) == N_PROBLEMS, f"{len(ids)} samples for {N_PROBLEMS} problems (n_samples 1)"
    summary = json.loads((e.out / "summary.json").read_text())
    assert "k=2" not in json.dumps(summary) and all(b.get("k") == 1 for b in summary.get("benchmarks", {}).values()), summary


SLOW_SERVER: dict = {}


def slow_annotator(prompt: str, body: dict) -> str:
    time.sleep(0.05)
    text = prompt_text(load_prompt("augment"), prompt) or ""
    return text.replace(". ", ". <think>a thought</think>", 1)


def augment_argv(e: Env) -> list[str]:
    docs = e.tmp / "docs.jsonl"
    if not docs.exists():
        write_jsonl(docs, ({"id": f"d{i}", "text": f"The river {i} ran north. It was cold. Then it froze."} for i in range(60)))
    return ["augment", str(docs), "--out", str(e.out), "--tokenizer", str(e.a.tok), "--max-chunk-tokens", "64", "--batch-chunks", "4"] + [
        "--annotator.backend",
        "openai",
        "--annotator.model",
        "m",
        "--annotator.base-url",
        SLOW_SERVER["srv"].url,
        "--annotator.max-concurrency",
        "1",
    ]


def check_augment(e: Env) -> None:
    from midtrain.augment.augment import read_augmented

    ids = [r["id"] for r in read_augmented(e.out, status=None)]
    manifest = json.loads((e.out / "manifest.json").read_text())
    assert len(ids) == len(set(ids)) == manifest["chunks"] == 60, (
        f"{len(ids)} records, {len(set(ids))} distinct, manifest {manifest['chunks']}"
    )


def experiment_file(e: Env) -> str:
    """An experiment of one pretrain stage (the same budget as the pretrain kind)."""
    exp = e.tmp / "exp.yaml"
    if not exp.exists():
        args = {"model": str(e.a.nano), "corpus": {"files": [big_corpus(e)]}, "max_steps": STEPS, "seq_len": 64, "batch_size": 4}
        args.update(log_every_steps=1, precision="fp32")
        exp.write_text(
            json.dumps({"name": "faults", "out": str(e.out), "report": False, "stages": {"pt": {"verb": "pretrain", "args": args}}})
        )
    return str(exp)


def check_experiment(e: Env) -> None:
    steps = log_steps(e.out / "seed-0" / "pt" / "log.jsonl")
    assert steps == list(range(1, STEPS + 1)), f"the stage's log.jsonl holds {len(steps)} lines for {STEPS} steps"
    assert (e.out / "experiment.json").is_file()


GEN_N = 8000


def check_generate(e: Env) -> None:
    lines = (e.tmp / "p.jsonl").read_text().splitlines()
    assert len(lines) == GEN_N and all(json.loads(x)["id"] for x in lines), f"{len(lines)} problems, expected {GEN_N}"


KINDS = {
    "pretrain": Kind(lm_argv("pretrain"), lm_argv("pretrain"), lambda e: (e.out / "log.jsonl").exists(), check_lm),
    "sft": Kind(lm_argv("sft"), lm_argv("sft"), lambda e: (e.out / "log.jsonl").exists(), check_lm),
    "eval": Kind(eval_argv, eval_argv, lambda e: (e.out / "midtrain.json").exists(), check_eval),
    "augment": Kind(augment_argv, augment_argv, lambda e: (e.out / "shards").is_dir(), check_augment),
    "experiment-run": Kind(
        lambda e: ["experiment", "run", experiment_file(e)],
        lambda e: ["experiment", "run", experiment_file(e)],
        lambda e: (e.out / "seed-0" / "pt" / "log.jsonl").exists(),
        check_experiment,
    ),
    "synth-generate": Kind(
        lambda e: ["synth", "generate", "--ops", "2-8", "--n", str(GEN_N), "--out", str(e.tmp / "p.jsonl")],
        lambda e: ["synth", "generate", "--ops", "2-3", "--n", "4", "--out", str(e.tmp / "p.jsonl")],
        lambda e: False,  # a file output has no directory to watch: only a lock tells that A is at work
        check_generate,
    ),
}


@pytest.mark.parametrize("kind", list(KINDS))
def test_second_writer_is_refused_naming_the_holder(kind: str, env: Env, capsys) -> None:
    k = KINDS[kind]
    srv = None
    if kind == "augment":
        srv = SLOW_SERVER["srv"] = OpenAIServer(slow_annotator).start()
    log = env.tmp.parent / "writer-a.log"
    a = spawn(k.argv_a(env), log)
    try:
        t0 = time.monotonic()
        if kind == "synth-generate":  # nothing to watch: without a lock, give it 1.5 s to be at work
            how = stop_when_busy(a, lambda: time.monotonic() - t0 > 1.5)
        elif kind == "experiment-run":  # the experiment locks its out dir at once: freeze it inside its stage instead
            assert wait_for(lambda: k.started(env) or a.poll() is not None, 60), "the experiment's stage never started"
            how = stop_when_busy(a, lambda: True)
        else:
            how = stop_when_busy(a, lambda: k.started(env))
        b = run_cli(k.argv_b(env), capsys)
        check_message(b, 2, ["pid", str(a.pid)], where=f"second writer ({kind}) while writer A (pid {a.pid}) was frozen {how}\n")
        if kind == "experiment-run":  # experiments lock their stages too: a standalone run into the stage's directory
            stage_dir = env.out / "seed-0" / "pt"
            b2 = run_cli([*lm_argv("pretrain")(env)[:-1], str(stage_dir)], capsys)
            check_message(b2, 2, ["pid", str(a.pid)], where=f"pretrain into {stage_dir} while the experiment (pid {a.pid}) runs it\n")
        finish(a, log)
        k.check(env)
    finally:
        cleanup(a)
        if srv is not None:
            srv.stop()


# -- kill -9 during atomic writes --------------------------------------------------------------------------------
def test_kill_during_atomic_write_leaves_old_or_new_and_no_orphan(env: Env, capsys) -> None:
    """synth generate over an existing file, killed while its temporary sibling is being written."""
    out = env.tmp / "p.jsonl"
    assert run_cli(["synth", "generate", "--ops", "2-3", "--n", "4", "--seed", "1", "--out", str(out)], capsys).code == 0
    old = out.read_bytes()
    n = GEN_N
    for attempt in range(3):
        log = env.tmp.parent / f"writer-{attempt}.log"
        # --overwrite: the file holds another config's problems, which synth generate refuses to replace otherwise
        a = spawn(["synth", "generate", "--ops", "2-8", "--n", str(n), "--seed", "2", "--out", str(out), "--overwrite"], log)
        try:
            caught = wait_for(lambda a=a: a.poll() is not None or any(p.name.endswith(".tmp") for p in env.tmp.iterdir()), 60, step=0.001)
            assert caught
            if a.poll() is None:
                os.kill(a.pid, signal.SIGKILL)
                a.wait(timeout=30)
                break
        finally:
            cleanup(a)
        n *= 2  # the write finished before it was seen: a bigger file takes longer to write
    else:
        pytest.fail("could not catch synth generate while it wrote its output")
    now = out.read_bytes()
    if now != old:  # the new file may have landed just before the kill: then it must be whole
        lines = now.decode().splitlines()
        assert len(lines) == n and all(json.loads(x) for x in lines), "a torn output file after kill -9"
    rerun = run_cli(["synth", "generate", "--ops", "2-3", "--n", "4", "--seed", "3", "--out", str(out), "--overwrite"], capsys)
    assert rerun.code == 0, rerun.err
    assert not leftovers(env.tmp), f"orphan temporary files after the next run: {leftovers(env.tmp)}"


def test_kill_during_training_then_resume_duplicates_nothing(env: Env, capsys) -> None:
    """pretrain killed between checkpoints, then re-run: every step logged once, train_loss over the whole run."""
    argv = lm_argv("pretrain")(env) + ["--save-every-steps", "3", "--keep-checkpoints", "2"]
    log = env.tmp.parent / "writer.log"
    a = spawn(argv, log)
    try:
        assert wait_for(lambda: (env.out / "log.jsonl").exists() and len(log_steps(env.out / "log.jsonl")) >= 7 or a.poll() is not None, 90)
        assert a.poll() is None, f"pretrain finished before it could be killed:\n{log.read_text()[-1000:]}"
        os.kill(a.pid, signal.SIGKILL)
        a.wait(timeout=30)
    finally:
        cleanup(a)
    res = run_cli(argv, capsys)
    assert res.code == 0, res.err
    rows = [json.loads(line) for line in (env.out / "log.jsonl").read_text().splitlines() if line.strip()]
    assert [r["step"] for r in rows] == list(range(1, STEPS + 1)), "log.jsonl after resume"
    meta = json.loads((env.out / "midtrain.json").read_text())
    assert meta["status"] == "complete"
    assert not leftovers(env.tmp), f"orphan temporary files after the resumed run: {leftovers(env.tmp)}"
    whole = mean(r["loss"] for r in rows)
    assert abs(meta["metrics"]["train_loss"] - whole) <= 1e-3 * max(1.0, abs(whole)), (
        f"train_loss {meta['metrics']['train_loss']} is not the whole run's mean loss {whole:.6f} (only the resumed session's?)"
    )
