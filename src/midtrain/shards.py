"""Resumable sharded record output: stable shard assignment, crash-tolerant append, completion markers.

Layout of an output directory with ``N`` shards::

    out/shards/shard-00000-of-00004.jsonl     records, appended in batches and fsynced
    out/shards/shard-00000-of-00004.done      completion marker (JSON: counts, examples), written atomically
    out/shards/shard-00000-of-00004.parquet   (format=parquet) written atomically from the JSONL before .done
    out/shards/shard-00000-of-00004.lock      advisory lock: one writer per shard

A key (e.g. a document id) goes to shard ``sha256(key)[:8] mod N`` (:func:`shard_of`), stable across machines
and Python versions. Crash safety: after ``kill -9`` the last JSONL line may be torn; :func:`repair_tail` (from
:mod:`midtrain.data.jsonl`) truncates the file to its last complete line before any append, so every written record is
either complete or gone, and the resuming writer skips the ids already present. A shard with a ``.done`` marker is never touched
again; a Parquet file without its ``.done`` is stale and rewritten.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from midtrain.data.corpus import iter_records
from midtrain.data.jsonl import iter_jsonl_tolerant, repair_tail
from midtrain.data.records import clean
from midtrain.errors import DataError
from midtrain.fileio import atomic_file, atomic_write_json, read_json
from midtrain.locks import PathLock


def stable_int(key: str) -> int:
    return int.from_bytes(hashlib.sha256(key.encode("utf-8")).digest()[:8], "big")


def shard_of(key: str, num_shards: int) -> int:
    """The shard of ``key``: ``sha256(key)[:8] mod num_shards``."""
    return stable_int(key) % num_shards


def unit_interval(key: str, salt: str = "") -> float:
    """A deterministic number in [0, 1) from ``salt + key`` (for hash-based splits)."""
    return stable_int(salt + key) / 2**64


@dataclass(frozen=True)
class ShardPaths:
    jsonl: Path
    done: Path
    parquet: Path
    lock: Path


def shard_paths(out: str | Path, index: int, num_shards: int) -> ShardPaths:
    base = Path(out) / "shards" / f"shard-{index:05d}-of-{num_shards:05d}"
    return ShardPaths(base.with_suffix(".jsonl"), base.with_suffix(".done"), base.with_suffix(".parquet"), base.with_suffix(".lock"))


def read_tolerant(path: str | Path, *, repair: bool = False) -> list[dict[str, Any]]:
    """Records of an append-only JSONL file; a torn last line is dropped (and truncated away if ``repair``)."""
    if repair:
        repair_tail(path)
    return list(iter_jsonl_tolerant(path))


class ShardLock(PathLock):
    """An exclusive, non-blocking lock on one shard (a second writer fails instead of duplicating records).

    It nests inside the run directory's lock (shared by the processes of a manual ``--shard-index`` split); the
    lock file stays in ``shards/`` next to the shard's records.
    """

    def __init__(self, path: str | Path) -> None:
        super().__init__(path, "shard", lockfile=path, remove=False)

    def busy_message(self, holder: str) -> str:
        return f"{self.path.name}: another process (pid {holder}) is writing this shard"


def has_records(out: str | Path) -> bool:
    """Whether an output directory holds any shard records or completion markers (resumable work)."""
    for p in (Path(out) / "shards").glob("shard-*"):
        try:
            if p.suffix != ".lock" and p.stat().st_size > 0:
                return True
        except FileNotFoundError:  # a JSONL removed once its Parquet file was written
            continue
    return False


def write_done(paths: ShardPaths, info: dict[str, Any]) -> None:
    atomic_write_json(paths.done, info)


def read_done(paths: ShardPaths) -> dict[str, Any] | None:
    return read_json(paths.done) if paths.done.is_file() else None


def to_parquet(records: list[dict[str, Any]], path: Path) -> bool:
    """Write records as Parquet atomically (columns = union of keys); False if Arrow cannot type them."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    keys: dict[str, None] = {}
    for r in records:
        keys.update(dict.fromkeys(r))
    rows = [{k: r.get(k) for k in keys} for r in records]
    try:
        table = pa.Table.from_pylist(rows)
    except (pa.ArrowInvalid, pa.ArrowTypeError):
        return False
    with atomic_file(path) as f:
        pq.write_table(table, f)
    return True


def _strip_nulls(rec: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in rec.items() if v is not None or k in ("reason", "domain")}


def iter_shard(paths: ShardPaths) -> Iterator[dict[str, Any]]:
    """Records of one shard: its Parquet file if finished as Parquet, else its JSONL (tolerant)."""
    if paths.done.is_file() and paths.parquet.is_file():
        import pyarrow.parquet as pq

        for rec in pq.read_table(paths.parquet).to_pylist():
            yield _strip_nulls(rec)
    else:
        yield from iter_jsonl_tolerant(paths.jsonl)


def num_shards_of(out: str | Path) -> int:
    """The shard count of an output directory, from its shard file names."""
    names = sorted((Path(out) / "shards").glob("shard-*-of-*.*"))
    counts = {int(p.name.split("-of-")[1].split(".")[0]) for p in names if "-of-" in p.name}
    if not counts:
        raise DataError(f"{out}: no shards/shard-*-of-*.jsonl|parquet files")
    if len(counts) > 1:
        raise DataError(f"{out}: shard files of different shard counts {sorted(counts)}")
    return counts.pop()


def iter_output(out: str | Path) -> Iterator[dict[str, Any]]:
    """All records of a sharded output directory, shard by shard."""
    n = num_shards_of(out)
    for i in range(n):
        yield from iter_shard(shard_paths(out, i, n))


def read_records(path: str | Path) -> Iterator[dict[str, Any]]:
    """Records of a sharded output directory, a run directory holding one, or any file ``iter_records`` reads."""
    p = Path(path)
    if p.is_dir() and (p / "shards").is_dir():
        yield from iter_output(p)
    else:
        for rec in iter_records(p):
            yield clean(rec)


__all__ = [
    "shard_of",
    "unit_interval",
    "stable_int",
    "ShardPaths",
    "shard_paths",
    "repair_tail",
    "read_tolerant",
    "ShardLock",
    "has_records",
    "write_done",
    "read_done",
    "to_parquet",
    "iter_shard",
    "iter_output",
    "num_shards_of",
    "read_records",
]
