"""Hostile storage and file-system cases (issue 32, items 3, 5 and 9).

- A finished, unchanged run on read-only storage is a cache hit that writes nothing: no lock file, no metadata.
  Root ignores permission bits, so read-only storage is simulated: every call that would create, write, rename or
  remove a path under the case's directory fails with ``EROFS``, as on a read-only mount, and is recorded.
- A dataset directory whose hub-layout README ``data_files`` reach outside it (``..``, an absolute path, a symlink)
  is refused with one line naming the README and the entry, before anything is read or written.
- A full disk while torch writes a checkpoint is one line naming the checkpoint; the half-written checkpoint is
  removed, and the next run resumes from the last complete one.
"""

from __future__ import annotations

import builtins
import errno
import io
import json
import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest
from hostile_support import Env, check_message, run_cli, tree

pytestmark = pytest.mark.timeout(120)


# -- a finished run on read-only storage ---------------------------------------------------------------------------
@contextmanager
def read_only(root: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[list[str]]:
    """Every write under ``root`` fails with EROFS (as on a read-only mount) and is recorded in the yielded list."""
    top = os.path.realpath(root)
    tried: list[str] = []

    def under(p: Any) -> bool:
        if isinstance(p, int):  # a file descriptor: opened (read-only) before
            return False
        path = os.path.realpath(os.fsdecode(p))
        return path == top or path.startswith(top + os.sep)

    def refuse(p: Any) -> None:
        tried.append(os.fsdecode(p))
        raise OSError(errno.EROFS, "Read-only file system", os.fsdecode(p))

    writes = os.O_WRONLY | os.O_RDWR | os.O_CREAT | os.O_TRUNC | os.O_APPEND
    real_os_open, real_open = os.open, io.open

    def os_open(p: Any, flags: int, *a: Any, **k: Any) -> int:
        if flags & writes and under(p):
            refuse(p)
        return real_os_open(p, flags, *a, **k)

    def py_open(p: Any, mode: str = "r", *a: Any, **k: Any) -> Any:
        if not isinstance(p, int) and set(mode) & set("wax+") and under(p):
            refuse(p)
        return real_open(p, mode, *a, **k)

    def guard(real: Any) -> Any:
        def call(p: Any, *a: Any, **k: Any) -> Any:
            if under(p):
                refuse(p)
            return real(p, *a, **k)

        return call

    monkeypatch.setattr(os, "open", os_open)
    monkeypatch.setattr(io, "open", py_open)
    monkeypatch.setattr(builtins, "open", py_open)
    for name in ("mkdir", "rename", "replace", "unlink", "remove", "rmdir", "chmod", "truncate", "utime"):
        monkeypatch.setattr(os, name, guard(getattr(os, name)))
    yield tried


def _stamp(root: Path) -> dict[str, tuple[int, int]]:
    return {str(p.relative_to(root)): (p.stat().st_size, p.stat().st_mtime_ns) for p in root.rglob("*")}


FINISHED = {
    "model-init": lambda e: ["model", "init", "--preset", "nano", "--tokenizer", str(e.a.tok), "--out", str(e.out)],
    "judge": lambda e: ["judge", str(e.a.pairs), "--judge", "exact", "--out", str(e.out)],
    "augment-split": lambda e: ["augment", "split", str(e.a.aug), "--out", str(e.out)],
    "pretrain": lambda e: [
        "pretrain",
        *("--model", str(e.a.nano), "--corpus.files", str(e.a.corpus), "--max-steps", "2", "--seq-len", "32"),
        *("--batch-size", "2", "--precision", "fp32", "--out", str(e.out)),
    ],
}


@pytest.mark.parametrize("verb", list(FINISHED))
def test_a_finished_run_on_read_only_storage_is_a_cache_hit_that_writes_nothing(verb, env: Env, capsys, monkeypatch) -> None:
    argv = FINISHED[verb](env)
    check_message(run_cli(argv, capsys), 0, [], where=f"midtrain {' '.join(argv)}\n")
    before = _stamp(env.tmp)
    with read_only(env.tmp, monkeypatch) as tried:
        outcome = run_cli([*argv, "--json"], capsys)
    assert tried == [], f"a cache hit tried to write: {tried}"
    check_message(outcome, 0, [], where=f"midtrain {' '.join(argv)}\n")
    assert json.loads(outcome.out)["cached"] is True
    assert _stamp(env.tmp) == before  # not a byte, not a timestamp


def test_the_simulated_mount_refuses_a_run_that_must_write(env: Env, capsys, monkeypatch) -> None:
    """The check above can fail: an unfinished run on the same mount is the user's one-line EROFS error."""
    argv = FINISHED["judge"](env)
    with read_only(env.tmp, monkeypatch) as tried:
        outcome = run_cli(argv, capsys)
    check_message(outcome, 2, [str(env.out), "Read-only file system"])
    assert tried and not env.out.exists()


# -- a dataset directory that reads outside itself ----------------------------------------------------------------
def _hub_dir(e: Env, entry: str) -> str:
    """A hub-layout dataset dir with one good shard, whose README's train data_files entry is ``entry``."""
    e.jsonl("outside.jsonl", [{"id": "secret", "text": "not part of the dataset"}])
    e.jsonl("ds/data/train.jsonl", [{"id": "d0", "text": "The river ran north. It was cold."}])
    e.write("ds/README.md", f"---\nconfigs:\n- config_name: default\n  data_files:\n  - split: train\n    path: {entry}\n---\n")
    return str(e.path("ds"))


ESCAPES = {
    "dotdot": lambda e: "../outside.jsonl",
    "dotdot-inside-path": lambda e: "data/../../outside.jsonl",
    "absolute": lambda e: str(e.path("outside.jsonl")),
    "glob-climbing": lambda e: "../*.jsonl",
}


@pytest.mark.parametrize("kind", list(ESCAPES))
def test_readme_data_files_outside_the_directory_are_refused(kind, env: Env, capsys) -> None:
    entry = ESCAPES[kind](env)
    argv = ["augment", _hub_dir(env, entry), "--tokenizer", str(env.a.tok), "--out", str(env.out)]
    before = tree(env.tmp)
    outcome = run_cli(argv, capsys)
    check_message(outcome, 2, [str(env.path("ds") / "README.md"), f"'{entry}'", "points outside"])
    assert tree(env.tmp) == before


def test_a_readme_entry_matching_a_symlink_out_of_the_directory_is_refused(env: Env, capsys) -> None:
    ds = Path(_hub_dir(env, "data/*.jsonl"))
    (ds / "data" / "zz.jsonl").symlink_to(env.path("outside.jsonl"))
    argv = ["augment", str(ds), "--tokenizer", str(env.a.tok), "--out", str(env.out)]
    before = tree(env.tmp)
    check_message(run_cli(argv, capsys), 2, [str(ds / "README.md"), "'data/*.jsonl'", "zz.jsonl", "resolves outside"])
    assert tree(env.tmp) == before


# -- a full disk while saving a checkpoint ---------------------------------------------------------------------------
def test_a_full_disk_during_a_checkpoint_save_is_one_line_and_the_next_run_resumes(env: Env, capsys, monkeypatch) -> None:
    import torch

    from midtrain.train import engine

    argv = [
        "pretrain",
        *("--model", str(env.a.nano), "--corpus.files", str(env.a.corpus), "--max-steps", "6", "--seq-len", "32"),
        *("--batch-size", "2", "--log-every-steps", "1", "--precision", "fp32", "--save-every-steps", "2"),
        *("--save-every-minutes", "0", "--out", str(env.out)),
    ]
    real_save = torch.save

    def save_until_full(obj: Any, f: Any, *a: Any, **k: Any) -> Any:
        if "checkpoint-4" in str(f):  # what torch does when the disk fills up mid-write: a torn file, then this
            Path(f).write_bytes(b"PK\x03\x04 half a zip")
            raise RuntimeError("[enforce fail at inline_container.cc:626] . unexpected pos 4480 vs 4368")
        return real_save(obj, f, *a, **k)

    monkeypatch.setattr(torch, "save", save_until_full)
    ckpts = env.out / "checkpoints"
    check_message(run_cli(argv, capsys), 2, [str(ckpts / "checkpoint-4"), "disk is full", "unexpected pos"])
    assert sorted(p.name for p in ckpts.iterdir()) == ["checkpoint-2"]  # nothing half-written left
    assert not list(env.tmp.rglob("*.tmp"))

    monkeypatch.setattr(torch, "save", real_save)  # space freed: the next run
    resumed_from: list[Path | None] = []
    real_resume_point = engine.resume_point
    monkeypatch.setattr(engine, "resume_point", lambda *a, **k: resumed_from.append(p := real_resume_point(*a, **k)) or p)
    check_message(run_cli(argv, capsys), 0, [])
    assert resumed_from == [ckpts / "checkpoint-2"]
    steps = [json.loads(line)["step"] for line in (env.out / "log.jsonl").read_text().splitlines()]
    assert steps == [1, 2, 3, 4, 5, 6]  # none lost, none twice
    assert (env.out / "COMPLETE").is_file()
