"""JSONL records: parse and read (optionally gzipped), write atomically, append durably, repair a torn tail.

Readers (:func:`parse_jsonl`, :func:`iter_jsonl`) fail with a :class:`DataError` naming ``file:line`` for bytes
that are not UTF-8, a malformed line or a line that is no JSON object; blank lines are skipped.

:func:`write_jsonl` is atomic (through :func:`midtrain.fileio.atomic_file`, the package's one atomic writer), so
a crash never leaves a half-written file under the final name. Append-only files (resumable shards, eval
samples, verdict caches) are written by :func:`append_jsonl` (fsynced batches); after a ``kill -9`` their last
line may be torn: :func:`iter_jsonl_tolerant` skips it and :func:`repair_tail` truncates it away before the next
append, so every record of an append-only file is either complete or gone.
"""

from __future__ import annotations

import gzip
import json
import os
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

from midtrain.data.lines import text_lines
from midtrain.data.records import clean
from midtrain.errors import DataError
from midtrain.fileio import atomic_file


def parse_jsonl(path: Path, lines: Iterable[tuple[int, str]]) -> Iterator[dict[str, Any]]:
    """Records of numbered JSONL lines; blank lines are skipped."""
    for lineno, line in lines:
        if not line.strip():
            continue
        try:
            rec = json.loads(line)
        except json.JSONDecodeError as e:
            raise DataError(f"{path}:{lineno}: malformed JSON ({e.msg} at column {e.colno})") from None
        if not isinstance(rec, dict):
            raise DataError(f"{path}:{lineno}: expected a JSON object, got {type(rec).__name__}")
        rec.setdefault("_line", lineno)
        rec["_file"] = str(path)
        yield rec


def iter_jsonl(path: str | Path) -> Iterator[dict[str, Any]]:
    """Records of a JSONL file (``.gz`` read compressed); blank lines are skipped."""
    path = Path(path)
    if not path.is_file():
        raise DataError(f"file not found: {path}")
    yield from parse_jsonl(path, text_lines(path))


def write_jsonl(path: str | Path, records: Iterable[dict[str, Any]]) -> int:
    """Atomically write records as JSONL (gzipped if the name ends in .gz); returns the count."""
    path = Path(path)
    n = 0
    with atomic_file(path) as raw:
        sink = gzip.GzipFile(fileobj=raw, mode="wb") if path.suffix == ".gz" else raw
        for rec in records:
            sink.write((json.dumps(clean(rec), ensure_ascii=False) + "\n").encode("utf-8"))
            n += 1
        if sink is not raw:
            sink.close()  # writes the gzip trailer; ``raw`` stays open for the fsync
    return n


def append_jsonl(path: str | Path, records: Iterable[dict[str, Any]]) -> int:
    """Append records and fsync (for resumable shards: readers must tolerate a torn last line)."""
    n = 0
    try:
        with open(path, "ab") as f:
            for rec in records:
                f.write((json.dumps(clean(rec), ensure_ascii=False) + "\n").encode("utf-8"))
                n += 1
            f.flush()
            os.fsync(f.fileno())
    except OSError as e:  # a full disk mid-append: name the file (the torn tail is dropped on resume)
        raise OSError(e.errno, e.strerror, str(path)) from None
    return n


def repair_tail(path: str | Path) -> int:
    """Truncate ``path`` after its last newline (drops a line torn by a crash); returns the bytes dropped.

    Appends then start on a fresh line, so every record of an append-only file is either complete or gone. Only
    the tail is read (backwards, 64 KiB at a time), whatever the file's size.
    """
    p = Path(path)
    if not p.is_file():
        return 0
    size = p.stat().st_size
    if size == 0:
        return 0
    with open(p, "rb+") as f:
        end = size
        while True:  # scan backwards for the last newline
            back = min(end, 1 << 16)
            f.seek(end - back)
            k = f.read(back).rfind(b"\n")
            if k >= 0:
                keep = end - back + k + 1
                break
            end -= back
            if end == 0:
                keep = 0
                break
        if keep < size:
            f.truncate(keep)
            f.flush()
            os.fsync(f.fileno())
    return size - keep


def iter_jsonl_tolerant(path: str | Path) -> Iterator[dict[str, Any]]:
    """Records of an append-only shard, skipping a torn final line left by a crash (kill -9)."""
    p = Path(path)
    if not p.is_file():
        return
    data = p.read_bytes()
    lines = data.split(b"\n")
    for i, line in enumerate(lines):
        if not line.strip():
            continue
        try:
            yield json.loads(line)
        except (json.JSONDecodeError, UnicodeDecodeError):  # a cut can also fall inside a multi-byte character
            if i == len(lines) - 1:  # torn tail: the record was never completed
                return
            raise DataError(f"{p}:{i + 1}: malformed JSON line (or not UTF-8) inside a shard") from None
