"""Corpus and record IO: JSONL (optionally gzipped), plain text, Parquet and ``datasets`` directories.

Every reader streams records as dicts and fails with a :class:`DataError` that names the file and line: a
missing file, bytes that are not UTF-8, a malformed JSON line, a record that lacks a required column, or a
corpus with no records at all. :func:`write_jsonl` is atomic (through :func:`midtrain.runs.atomic_file`, the
package's one atomic writer) so that a crash never leaves a half-written file under the final name.
Append-only files (resumable shards, eval samples, verdict caches) are written by :func:`append_jsonl` (fsynced
batches); after a ``kill -9`` their last line may be torn: :func:`iter_jsonl_tolerant` skips it and
:func:`repair_tail` truncates it away before the next append.
"""

from __future__ import annotations

import gzip
import json
import os
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

from midtrain.errors import DataError
from midtrain.runs import atomic_file

JSONL_SUFFIXES = (".jsonl", ".jsonl.gz", ".json.gz", ".ndjson")


def _lines(path: Path) -> Iterator[tuple[int, str]]:
    """(1-based line number, line) of a text file (``.gz`` read compressed); bad UTF-8 names file and line."""
    lineno = 0
    try:
        with gzip.open(path, "rb") if path.suffix == ".gz" else open(path, "rb") as f:
            for lineno, raw in enumerate(f, start=1):
                try:
                    yield lineno, raw.decode("utf-8")
                except UnicodeDecodeError as e:
                    raise DataError(f"{path}:{lineno}: not valid UTF-8 ({e.reason} at byte {e.start} of the line)") from None
    except FileNotFoundError:
        raise DataError(f"file not found: {path}") from None
    except (OSError, EOFError) as e:
        raise DataError(f"{path}:{lineno + 1}: cannot read ({e})") from None


def iter_jsonl(path: str | Path) -> Iterator[dict[str, Any]]:
    """Records of a JSONL file (``.gz`` read compressed); blank lines are skipped."""
    path = Path(path)
    if not path.is_file():
        raise DataError(f"file not found: {path}")
    for lineno, line in _lines(path):
        if not line.strip():
            continue
        try:
            rec = json.loads(line)
        except json.JSONDecodeError as e:
            raise DataError(f"{path}:{lineno}: malformed JSON ({e.msg} at column {e.colno})") from None
        if not isinstance(rec, dict):
            raise DataError(f"{path}:{lineno}: expected a JSON object, got {type(rec).__name__}")
        rec.setdefault("_line", lineno)
        yield rec


def iter_records(path: str | Path, *, text_field: str = "text") -> Iterator[dict[str, Any]]:
    """Records from any supported source. Plain ``.txt`` files yield one record per file."""
    p = Path(path)
    if not p.exists():
        raise DataError(f"file not found: {p}")
    name = p.name.lower()
    if p.is_dir():
        try:
            import datasets

            ds = datasets.load_from_disk(str(p))
        except Exception as e:  # noqa: BLE001 - any failure here means "not a datasets dir"
            raise DataError(f"{p}: not a datasets directory saved with save_to_disk ({e})") from None
        if isinstance(ds, datasets.DatasetDict):
            ds = ds["train"] if "train" in ds else next(iter(ds.values()))
        for i, rec in enumerate(ds):
            yield {**rec, "_line": i + 1}
    elif name.endswith(JSONL_SUFFIXES):
        yield from iter_jsonl(p)
    elif name.endswith(".parquet"):
        import pyarrow.parquet as pq

        for i, rec in enumerate(pq.read_table(p).to_pylist()):
            yield {**rec, "_line": i + 1}
    elif name.endswith((".txt", ".md", ".tex", ".py")):
        text = "".join(line for _, line in _lines(p))
        yield {"id": p.stem, text_field: text, "_line": 1}
    else:
        raise DataError(f"{p}: unsupported file type (use .jsonl, .jsonl.gz, .parquet, .txt or a datasets dir)")


def require(rec: dict[str, Any], fields: Iterable[str], path: str | Path) -> None:
    """Raise a DataError naming file, line and column when ``rec`` lacks a required field."""
    for f in fields:
        if f not in rec:
            have = ", ".join(k for k in rec if not k.startswith("_"))
            raise DataError(f"{path}:{rec.get('_line', '?')}: record has no '{f}' field (fields: {have})")


def read_all(path: str | Path, *, required: Iterable[str] = ()) -> list[dict[str, Any]]:
    """All records of a file, each checked for ``required`` fields; an empty file is an error."""
    out = []
    for rec in iter_records(path):
        require(rec, required, path)
        out.append(rec)
    if not out:
        raise DataError(f"empty dataset: {path} has no records")
    return out


def clean(rec: dict[str, Any]) -> dict[str, Any]:
    """A record without reader bookkeeping (``_line``)."""
    return {k: v for k, v in rec.items() if not k.startswith("_")}


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
