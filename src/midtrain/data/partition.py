"""Rank partitioning: the sources of a corpus laid end to end on one byte axis, cut into ``n`` disjoint parts.

Sharding (``shard=(i, n)``): the sources are laid end to end on one axis of their byte sizes (total ``W``,
:func:`lay_out`); part ``i`` owns the positions ``[i·W//n, (i+1)·W//n)`` (:func:`part_bounds`), and a record
belongs to the part that owns its position, so the parts are disjoint and together hold every record once. How a
record gets a position depends on what its source can do (:func:`midtrain.data.corpus.read_source`):

- uncompressed JSONL: a line's position is the byte where it starts;
- Parquet (and a ``datasets`` dir among other sources): rows are spread evenly over the file's span, so a part
  gets one contiguous row range (:func:`row_range`); a ``datasets`` dir alone is cut like
  ``Dataset.shard(n, i, contiguous=True)`` (:func:`contiguous_part`);
- sources that cannot seek (``.gz``, a hub stream) and single-record ``.txt`` files: record ``k`` goes to the
  ``k mod m``-th of the ``m`` parts overlapping the source's span (:func:`parts_over`, :func:`every`; a hub
  stream overlaps all parts).

Everything here is arithmetic on sizes: nothing reads a record.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from midtrain.data.inputs import JSONL_SUFFIXES, TEXT_SUFFIXES, UNSUPPORTED
from midtrain.errors import DataError

Shard = tuple[int, int]  # (i, n): the i-th of n parts


@dataclass(frozen=True)
class Source:
    """One concrete source laid on the shard axis at ``[offset, offset + weight)``."""

    path: str
    kind: str  # jsonl | gz | text | parquet | dataset | hub
    offset: int
    weight: int


def source_kind(path: str) -> str:
    p, name = Path(path), Path(path).name.lower()
    if p.is_dir():
        return "dataset"
    if not p.exists():
        return "hub"  # expand_input returns no other missing path
    if name.endswith(JSONL_SUFFIXES):
        return "gz" if name.endswith(".gz") else "jsonl"
    if name.endswith(".parquet"):
        return "parquet"
    if name.endswith(TEXT_SUFFIXES):
        return "text"
    raise DataError(f"{p}: {UNSUPPORTED}")


def source_weight(path: str, kind: str) -> int:
    """Bytes on disk (≥ 1, so an empty file still has an owner); a hub stream has none (it spans every part)."""
    if kind == "hub":
        return 0
    p = Path(path)
    size = sum(q.stat().st_size for q in p.rglob("*") if q.is_file()) if p.is_dir() else p.stat().st_size
    return max(size, 1)


def lay_out(sources: Sequence[str]) -> list[Source]:
    out, offset = [], 0
    for s in sources:
        kind = source_kind(s)
        w = source_weight(s, kind)
        out.append(Source(s, kind, offset, w))
        offset += w
    return out


def part_bounds(i: int, n: int, total: int) -> tuple[int, int]:
    """Positions ``[lo, hi)`` owned by part ``i`` of ``n`` on an axis of length ``total``."""
    return i * total // n, (i + 1) * total // n


def owner(pos: int, n: int, total: int) -> int:
    """The part owning position ``pos`` (the largest ``i`` with ``i·total//n ≤ pos``)."""
    return ((pos + 1) * n - 1) // total


def parts_over(src: Source, n: int, total: int) -> list[int]:
    """The non-empty parts whose range overlaps ``src`` (a hub stream: all parts)."""
    if src.kind == "hub" or total == 0:
        return list(range(n))
    first, last = owner(src.offset, n, total), owner(src.offset + src.weight - 1, n, total)
    return [j for j in range(first, last + 1) if part_bounds(j, n, total)[0] < part_bounds(j, n, total)[1]]


def row_range(src: Source, rows: int, i: int, n: int, total: int) -> tuple[int, int]:
    """Rows ``[a, b)`` of a source of ``rows`` rows owned by part ``i``: row r sits at ``offset + weight·r//rows``."""
    lo, hi = part_bounds(i, n, total)

    def first_at(pos: int) -> int:  # the first row whose position is ≥ pos
        d = min(max(pos - src.offset, 0), src.weight)
        return min(-(-d * rows // src.weight), rows)

    return first_at(lo), first_at(hi)


def contiguous_part(rows: int, n: int, i: int) -> tuple[int, int]:
    """The rows of ``Dataset.shard(n, i, contiguous=True)``: the first ``rows % n`` parts take one extra row."""
    div, mod = divmod(rows, n)
    start = div * i + min(i, mod)
    return start, start + div + (1 if i < mod else 0)


def every(items: Iterable[Any], m: int, k: int) -> Iterator[Any]:
    """Items ``k, k + m, k + 2m, …`` (round-robin part ``k`` of ``m``)."""
    for j, x in enumerate(items):
        if j % m == k:
            yield x
