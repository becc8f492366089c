"""Fault tests: one writer per run directory or output file (midtrain.locks), dead holders, kill -9 mid-write.

Every stage kind meets a second writer: a holder process takes the lock the stage would take, and the stage run
through the CLI must exit 2 with one line naming the holder's pid and touch nothing. Two real concurrent runs
(pretrain, eval) show that the first one's outputs stay intact.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import pytest

from midtrain.cli import main
from midtrain.config import Config, param
from midtrain.errors import MidtrainError, RunDirError
from midtrain.fileio import atomic_write_text
from midtrain.locks import PathLock, lock_file
from midtrain.runs import open_run

SRC = Path(__file__).resolve().parents[1] / "src"
ENV = {**os.environ, "PYTHONPATH": os.pathsep.join([str(SRC), os.environ.get("PYTHONPATH", "")]), "MIDTRAIN_QUIET": "1"}

HOLD = """
import sys, time
from midtrain.locks import PathLock
PathLock(sys.argv[1], shared=sys.argv[2] == "shared").acquire()
print("locked", flush=True)
time.sleep(600)
"""


@dataclass
class C(Config):
    x: int = param(1, "x")


class Holder:
    """A separate process holding the lock of ``path`` until stopped (or killed)."""

    def __init__(self, path: Path, shared: bool = False) -> None:
        self.proc = subprocess.Popen(
            [sys.executable, "-c", HOLD, str(path), "shared" if shared else "exclusive"], stdout=subprocess.PIPE, text=True, env=ENV
        )
        assert self.proc.stdout is not None and self.proc.stdout.readline().strip() == "locked"
        self.pid = self.proc.pid

    def kill(self) -> None:
        self.proc.kill()
        self.proc.wait()
        assert self.proc.stdout is not None
        self.proc.stdout.close()


@pytest.fixture
def holder():
    held: list[Holder] = []

    def hold(path: Path, shared: bool = False) -> Holder:
        held.append(Holder(path, shared))
        return held[-1]

    yield hold
    for h in held:
        h.kill()


def _cli(argv: list[str], capsys) -> tuple[int, str]:
    code = main([str(a) for a in argv])
    return code, capsys.readouterr().err.strip()


def _problems(tmp_path: Path) -> Path:
    from midtrain.data.jsonl import write_jsonl
    from midtrain.synth.generate import generate_problems

    path = tmp_path / "problems.jsonl"
    write_jsonl(path, generate_problems(8, seed=1, ops="2-3", render="compact", modulus=10, order="dependency"))
    return path


# -- a second writer of every stage kind -------------------------------------------------------------------------
def _argv(kind: str, out: Path, tmp_path: Path, nano_model: Path, corpus: Path, tokenizer_dir: Path) -> list:
    train = ["--model", nano_model, "--corpus.files", corpus, "--seq-len", 32, "--max-steps", 1, "--out", out]
    if kind == "experiment":
        exp = tmp_path / "exp.yaml"
        gen = {"verb": "synth generate", "per_seed": False, "args": {"n": 3, "ops": "2-3"}}
        exp.write_text(json.dumps({"name": "e", "out": str(out), "stages": {"gen": gen}, "report": False}))
        return ["experiment", "run", exp]
    return {
        "pretrain": ["pretrain", *train],
        "sft": ["sft", *train],
        "eval": ["eval", nano_model, "--synthetic", _problems(tmp_path), "--max-new-tokens", 4, "--no-progress", "--out", out],
        "augment": [
            "augment",
            corpus,
            "--tokenizer",
            tokenizer_dir,
            "--annotator.backend",
            "programmatic",
            "--max-documents",
            4,
            "--out",
            out,
        ],
        "synth generate": ["synth", "generate", "--n", 3, "--out", out],
        "model init": ["model", "init", "--preset", "nano", "--tokenizer", tokenizer_dir, "--out", out],
        "tokenizer train": ["tokenizer", "train", "--corpus", corpus, "--vocab-size", 280, "--out", out],
    }[kind]


KINDS = ["pretrain", "sft", "eval", "augment", "experiment", "synth generate", "model init", "tokenizer train"]


@pytest.mark.parametrize("kind", KINDS)
def test_a_second_writer_fails_at_once_naming_the_holder(kind, tmp_path, holder, capsys, nano_model, corpus, tokenizer_dir):
    out = tmp_path / ("out.jsonl" if kind == "synth generate" else "out")
    argv = _argv(kind, out, tmp_path, nano_model, corpus, tokenizer_dir)
    h = holder(out)
    code, err = _cli(argv, capsys)
    what = {"synth generate": "file", "experiment": "experiment directory"}.get(kind, "run directory")
    assert code == 2 and err == f"error: {out}: another midtrain process (pid {h.pid}) is writing this {what}"
    assert not out.exists()  # touched nothing


def test_held_exclusively_probes_without_creating_the_lock_file(tmp_path, holder):
    from midtrain.locks import held_exclusively

    out = tmp_path / "r"
    assert not held_exclusively(out) and not lock_file(out).exists()  # no lock file: no holder, and none made
    h = holder(out)
    assert held_exclusively(out)
    h.kill()
    assert not held_exclusively(out)  # the kernel dropped the dead holder's lock (its file stays)


def test_a_second_writer_leaves_a_finished_run_untouched(tmp_path, holder, capsys, tokenizer_dir):
    out = tmp_path / "m"
    argv = ["model", "init", "--preset", "nano", "--tokenizer", tokenizer_dir, "--out", out]
    assert _cli(argv, capsys)[0] == 0
    before = {p.name: p.stat().st_mtime_ns for p in out.iterdir()}
    h = holder(out)
    for extra in ([], ["--seed", 3, "--overwrite"]):  # a cache hit and a replacement are both refused
        code, err = _cli(argv + extra, capsys)
        assert code == 2 and f"(pid {h.pid})" in err
    assert {p.name: p.stat().st_mtime_ns for p in out.iterdir()} == before


@pytest.mark.slow
def test_concurrent_pretrains_one_fails_and_the_first_log_is_intact(tmp_path, nano_model, corpus, capsys):
    out = tmp_path / "r"
    argv = ["pretrain", "--model", nano_model, "--corpus.files", corpus, "--seq-len", 32, "--batch-size", 4, "--max-steps", 30]
    argv += ["--log-every-steps", 1, "--out", out]
    first = subprocess.Popen([sys.executable, "-m", "midtrain", *map(str, argv)], env=ENV, stderr=subprocess.PIPE, text=True)
    while not (out / "log.jsonl").is_file():  # the first one is training
        assert first.poll() is None, first.stderr.read() if first.stderr else ""
        time.sleep(0.05)
    code, err = _cli(argv, capsys)
    assert code == 2 and f"another midtrain process (pid {first.pid})" in err
    _, stderr = first.communicate(timeout=600)
    assert first.returncode == 0, stderr
    steps = [json.loads(line)["step"] for line in (out / "log.jsonl").read_text().splitlines()]
    assert steps == list(range(1, 31))  # exactly max_steps lines, none twice
    assert (out / "COMPLETE").is_file() and not lock_file(out).exists()


@pytest.mark.slow
def test_concurrent_evals_one_fails_and_every_problem_is_sampled_once(tmp_path, nano_model, capsys):
    out = tmp_path / "ev"
    problems = _problems(tmp_path)
    argv = ["eval", nano_model, "--synthetic", problems, "--max-new-tokens", 48, "--batch-size", 1, "--no-progress", "--out", out]
    first = subprocess.Popen([sys.executable, "-m", "midtrain", *map(str, argv)], env=ENV, stderr=subprocess.PIPE, text=True)
    while not (out / "midtrain.json").is_file():
        assert first.poll() is None, first.stderr.read() if first.stderr else ""
        time.sleep(0.05)
    code, err = _cli(argv, capsys)
    assert code == 2 and f"another midtrain process (pid {first.pid})" in err
    _, stderr = first.communicate(timeout=600)
    assert first.returncode == 0, stderr
    samples = [json.loads(line) for line in (out / "samples.jsonl").read_text().splitlines()]
    assert len(samples) == 8 and len({s["id"] for s in samples}) == 8


# -- the lock itself ---------------------------------------------------------------------------------------------
_OPEN_AND_DIE = """
import sys, time
from dataclasses import dataclass
from midtrain.config import Config, param
from midtrain.runs import open_run

@dataclass
class C(Config):
    x: int = param(1, "x")

with open_run(sys.argv[1], "stage", C()) as run:
    run.keep()
    (run.path / "state").write_text("resumable")
    print("ready", flush=True)
    time.sleep(600)
"""


def test_a_dead_holders_run_is_taken_over_and_resumed(tmp_path):
    out = tmp_path / "r"
    child = subprocess.Popen([sys.executable, "-c", _OPEN_AND_DIE, str(out)], stdout=subprocess.PIPE, text=True, env=ENV)
    assert child.stdout is not None and child.stdout.readline().strip() == "ready"
    with pytest.raises(RunDirError, match=f"pid {child.pid}"):
        with open_run(out, "stage", C()):
            pass
    child.send_signal(signal.SIGKILL)
    child.wait()
    child.stdout.close()
    assert lock_file(out).read_text().split()[0] == str(child.pid)  # the dead holder's file is still there
    with open_run(out, "stage", C()) as run:
        assert run.resumed and (run.path / "state").read_text() == "resumable"
        run.finish()
    assert not lock_file(out).exists()


def test_the_pid_in_a_stale_lock_file_decides_nothing(tmp_path):
    out = tmp_path / "r"
    lock_file(out).write_text(f"{os.getpid()} {os.uname().nodename}\n")  # a live pid, but nobody holds the lock
    with open_run(out, "stage", C()) as run:
        assert run.created
        run.finish()


_RACE = """
import sys, time
from pathlib import Path
from dataclasses import dataclass
from midtrain.config import Config, param
from midtrain.errors import RunDirError
from midtrain.runs import open_run

@dataclass
class C(Config):
    x: int = param(1, "x")

out, go, shared = Path(sys.argv[1]), Path(sys.argv[2]), sys.argv[3] == "shared"
(go.parent / f"ready-{sys.argv[4]}").touch()
while not go.exists():
    time.sleep(0.001)
try:
    with open_run(out, "stage", C(), shared=shared) as run:
        print("created" if run.created else "resumed" if run.resumed else "cached", flush=True)
        time.sleep(2)
except RunDirError as e:
    print("busy" if "another midtrain process" in str(e) else f"error {e}", flush=True)
"""


@pytest.mark.parametrize(
    "shared, expected", [(False, ["busy", "busy", "busy", "created"]), (True, ["created", "resumed", "resumed", "resumed"])]
)
def test_processes_racing_to_create_one_run_directory(tmp_path, shared, expected):
    """Exclusive: one owner and clean refusals, never a "resume" of the live run; shared (manual augment shards):
    one creates it and the others join it."""
    out, go = tmp_path / "r", tmp_path / "go"
    mode = "shared" if shared else "exclusive"
    procs = [
        subprocess.Popen([sys.executable, "-c", _RACE, str(out), str(go), mode, str(i)], stdout=subprocess.PIPE, text=True, env=ENV)
        for i in range(4)
    ]
    while len(list(tmp_path.glob("ready-*"))) < 4:
        time.sleep(0.01)
    go.touch()
    results = sorted(p.communicate(timeout=120)[0].strip() for p in procs)
    assert results == expected
    assert json.loads((out / "midtrain.json").read_text())["stage"] == "stage"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["go", "r", "ready-0", "ready-1", "ready-2", "ready-3"]


def test_shared_holders_exclude_an_exclusive_one(tmp_path, holder):
    out = tmp_path / "r"
    h = holder(out, shared=True)
    with PathLock(out, shared=True):  # another cooperating writer
        with pytest.raises(RunDirError, match=f"pid ({h.pid}|{os.getpid()})"):  # either of them
            PathLock(out).acquire()
    with pytest.raises(RunDirError):
        PathLock(out).acquire()
    assert lock_file(out).exists()  # the shared holder still holds it: the file stays


def test_manual_augment_shards_share_the_run_directory(tmp_path, holder, capsys, corpus, tokenizer_dir):
    out = tmp_path / "aug"
    base = ["augment", corpus, "--tokenizer", tokenizer_dir, "--annotator.backend", "programmatic", "--max-documents", 6]
    base += ["--num-shards", 2, "--out", out]
    h = holder(out, shared=True)  # the process of shard 0, on another machine
    assert _cli([*base, "--shard-index", 1], capsys)[0] == 0
    code, err = _cli(base, capsys)  # a whole-corpus run is not a cooperating writer
    assert code == 2 and f"(pid {h.pid})" in err


# -- kill -9 during atomic writes --------------------------------------------------------------------------------
_WRITE_FOREVER = """
import sys
from midtrain.fileio import atomic_write_bytes
i = 0
print("writing", flush=True)
while True:
    i += 1
    atomic_write_bytes(sys.argv[1], bytes([i % 251]) * (1 << 21))
"""


def test_kill_9_during_atomic_writes_leaves_old_or_new_and_no_orphan(tmp_path):
    target = tmp_path / "t.bin"
    atomic_write_text(target, "")  # an empty old version
    for delay in (0.05, 0.13, 0.21, 0.34):
        child = subprocess.Popen([sys.executable, "-c", _WRITE_FOREVER, str(target)], stdout=subprocess.PIPE, text=True, env=ENV)
        assert child.stdout is not None and child.stdout.readline().strip() == "writing"
        time.sleep(delay)
        child.send_signal(signal.SIGKILL)
        child.wait()
        child.stdout.close()
        data = target.read_bytes()
        assert data == b"" or (len(data) == 1 << 21 and data == data[:1] * len(data))  # a whole version
    atomic_write_text(target, "new")  # the next write removes what the killed writers left
    assert sorted(p.name for p in tmp_path.iterdir()) == ["t.bin"] and target.read_text() == "new"


_KILLED_MID_WRITE = """
import os, signal, sys
from midtrain.fileio import atomic_write_text
os.replace = lambda *a: os.kill(os.getpid(), signal.SIGKILL)  # die after the temporary is written, before the rename
atomic_write_text(sys.argv[1], "half")
"""


def test_synth_generate_after_a_killed_generate_leaves_no_orphan(tmp_path, capsys):
    out = tmp_path / "p.jsonl"
    out.write_text("old\n")
    proc = subprocess.run([sys.executable, "-c", _KILLED_MID_WRITE, str(out)], env=ENV)
    assert proc.returncode == -9 and out.read_text() == "old\n"
    assert len(list(tmp_path.glob(".p.jsonl.*.tmp"))) == 1  # the orphan of the killed writer
    assert _cli(["synth", "generate", "--n", 3, "--out", out], capsys)[0] == 2  # "old" is no problem file of this config
    assert _cli(["synth", "generate", "--n", 3, "--out", out, "--overwrite"], capsys)[0] == 0
    assert sorted(p.name for p in tmp_path.iterdir()) == ["p.jsonl"] and len(out.read_text().splitlines()) == 3


# -- resumed runs report the whole run -----------------------------------------------------------------------------
@pytest.mark.slow
def test_a_resumed_pretrain_reports_the_whole_runs_train_loss(nano_model, corpus, tmp_path, monkeypatch):
    import transformers

    from midtrain.train.corpus import CorpusConfig
    from midtrain.train.lm import OptimConfig
    from midtrain.train.pretrain import PretrainConfig, run

    def cfg(out: str) -> PretrainConfig:
        return PretrainConfig(
            model=str(nano_model), corpus=CorpusConfig(files=[str(corpus)]), out=str(tmp_path / out), seq_len=64, batch_size=8, max_steps=24,
            save_every_steps=8, precision="fp32", log_every_steps=4, optim=OptimConfig(lr=3e-3, warmup_steps=5), seed=0,
        )  # fmt: skip

    full = run(cfg("full")).metrics["train_loss"]
    orig, calls = transformers.Trainer.training_step, {"n": 0}

    def crashing(self, *a, **k):
        calls["n"] += 1
        if calls["n"] == 19:
            raise RuntimeError("simulated crash")
        return orig(self, *a, **k)

    monkeypatch.setattr(transformers.Trainer, "training_step", crashing)
    with pytest.raises(RuntimeError):
        run(cfg("part"))
    monkeypatch.setattr(transformers.Trainer, "training_step", orig)
    resumed = run(cfg("part")).metrics["train_loss"]  # resumed from checkpoint-16: 8 steps in this process
    assert resumed == pytest.approx(full, rel=1e-3)


def test_a_failed_stage_leaves_no_directories_behind(tmp_path, monkeypatch, capsys):
    with pytest.raises(ValueError):
        with open_run(tmp_path / "a" / "b" / "r", "stage", C()):
            raise ValueError("the stage failed")
    import midtrain.synth.generate as gen

    def impossible(*a, **k):
        raise MidtrainError("cannot generate")

    monkeypatch.setattr(gen, "generate_problems", impossible)
    assert _cli(["synth", "generate", "--out", tmp_path / "new" / "dir" / "p.jsonl"], capsys)[0] == 2
    assert list(tmp_path.iterdir()) == []
