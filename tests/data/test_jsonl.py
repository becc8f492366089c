"""JSONL records (``midtrain.data.jsonl``): atomic writes, append-only files and their torn-tail repair."""

from __future__ import annotations

import gzip
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from midtrain.data.jsonl import append_jsonl, iter_jsonl, iter_jsonl_tolerant, repair_tail, write_jsonl
from midtrain.errors import DataError
from midtrain.shards import read_tolerant


def _mode(path: Path) -> int:
    return path.stat().st_mode & 0o777


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def test_write_jsonl_plain_and_gzip_round_trip_with_ordinary_permissions(tmp_path):
    recs = [{"id": str(i), "text": "é" * i, "_line": 7} for i in range(5)]
    for name in ("a.jsonl", "a.jsonl.gz"):
        assert write_jsonl(tmp_path / name, recs) == 5
        assert [r["text"] for r in iter_jsonl(tmp_path / name)] == [r["text"] for r in recs]
        assert _mode(tmp_path / name) == 0o666 & ~_umask()
    assert "_line" not in gzip.decompress((tmp_path / "a.jsonl.gz").read_bytes()).decode()  # reader bookkeeping dropped
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.jsonl", "a.jsonl.gz"]  # no temporary files left


def test_readers_name_file_and_line(tmp_path):
    (tmp_path / "a.jsonl").write_text('{"a": 1}\n\n[1, 2]\n')
    with pytest.raises(DataError, match=r"a\.jsonl:3: expected a JSON object, got list"):
        list(iter_jsonl(tmp_path / "a.jsonl"))
    (tmp_path / "b.jsonl").write_text('{"a": 1}\n\n{"a": 2}\n')
    assert [(r["a"], r["_line"], r["_file"]) for r in iter_jsonl(tmp_path / "b.jsonl")] == [
        (1, 1, str(tmp_path / "b.jsonl")),
        (2, 3, str(tmp_path / "b.jsonl")),
    ]
    with pytest.raises(DataError, match=r"file not found: .*nope\.jsonl"):
        list(iter_jsonl(tmp_path / "nope.jsonl"))


def test_failed_write_keeps_the_old_file(tmp_path):
    path = tmp_path / "r.jsonl"
    write_jsonl(path, [{"v": 1}])

    def records():
        yield {"v": 2}
        raise RuntimeError("producer failed")

    with pytest.raises(RuntimeError):
        write_jsonl(path, records())
    assert [r["v"] for r in iter_jsonl(path)] == [1] and [p.name for p in tmp_path.iterdir()] == ["r.jsonl"]


_KILLED_WHILE_WRITING = """
import os, signal, sys
from midtrain.data.jsonl import write_jsonl

def records():
    for i in range(100_000):
        if i == 50_000:
            os.kill(os.getpid(), signal.SIGKILL)
        yield {"v": 2, "pad": "x" * 40}

write_jsonl(sys.argv[1], records())
"""


def test_kill_9_during_write_leaves_the_old_file(tmp_path):
    path = tmp_path / "r.jsonl"
    write_jsonl(path, [{"v": 1}] * 3)
    proc = subprocess.run([sys.executable, "-c", _KILLED_WHILE_WRITING, str(path)])
    assert proc.returncode == -9
    assert [r["v"] for r in iter_jsonl(path)] == [1, 1, 1]  # the old file, whole; the new one never appeared


@pytest.mark.parametrize(
    "content, kept",
    [
        (b"", b""),
        (b'{"a": 1}\n', b'{"a": 1}\n'),
        (b'{"a": 1}\n{"a": 2}\n{"a"', b'{"a": 1}\n{"a": 2}\n'),
        (b'{"a": 1', b""),  # no complete line at all
        (b'{"a": 1}\n' + b"x" * 200_000, b'{"a": 1}\n'),  # a torn line longer than one 64 KiB read-back block
    ],
)
def test_repair_tail_truncates_after_the_last_newline(tmp_path, content, kept):
    path = tmp_path / "s.jsonl"
    path.write_bytes(content)
    assert repair_tail(path) == len(content) - len(kept)
    assert path.read_bytes() == kept
    assert repair_tail(tmp_path / "missing.jsonl") == 0


def test_append_after_a_torn_tail_starts_on_a_fresh_line(tmp_path):
    path = tmp_path / "s.jsonl"
    append_jsonl(path, [{"a": 1}, {"a": 2}])
    with open(path, "ab") as f:
        f.write(b'{"a": 3, "tor')  # as if killed mid-append
    assert [r["a"] for r in iter_jsonl_tolerant(path)] == [1, 2]  # the torn line is skipped when reading
    assert [r["a"] for r in read_tolerant(path, repair=True)] == [1, 2]  # and cut away before appending
    append_jsonl(path, [{"a": 3}])
    assert [json.loads(x)["a"] for x in path.read_text().splitlines()] == [1, 2, 3]
    path.write_bytes(b'{"a": 1}\n{broken\n{"a": 2}\n')  # a bad line that is not the tail is damage, not a tear
    with pytest.raises(DataError, match=r"s\.jsonl:2: malformed JSON line"):
        list(iter_jsonl_tolerant(path))
