"""Corpus readers: stream the records of input specs, or only one rank's part of them.

:func:`iter_corpus` resolves the specs (:mod:`midtrain.data.inputs`), lays the sources on the shard axis
(:mod:`midtrain.data.partition`) and reads each source for its part (:func:`read_source`):

- uncompressed JSONL: only the part's byte range (:mod:`midtrain.data.lines`);
- Parquet: only the row groups holding the part's rows, by record batches, never a whole file at once;
- a ``datasets`` dir: ``Dataset.shard``/``select`` of the part's rows;
- ``.gz`` files and hub streams (which cannot seek): the whole source, keeping every ``m``-th record, so a lone
  ``.gz`` file is read by every part; split big ``.gz`` corpora into files;
- ``.txt``-like files: one record each (``{"id": stem, text_field: text}``).

Every record carries ``_file`` and ``_line`` (:mod:`midtrain.data.records`), and every failure is a
:class:`DataError` naming the file (and line): a missing file, bytes that are not UTF-8, a malformed JSON line, a
record that lacks a required column, or a corpus with no records at all.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

from midtrain.data.inputs import expand_input
from midtrain.data.jsonl import parse_jsonl
from midtrain.data.lines import text_lines
from midtrain.data.partition import Shard, Source, contiguous_part, every, lay_out, part_bounds, parts_over, row_range
from midtrain.data.records import require
from midtrain.errors import DataError

PARQUET_BATCH_ROWS = 1024


def iter_parquet(path: Path, start: int, stop: int) -> Iterator[dict[str, Any]]:
    """Rows ``[start, stop)`` of a Parquet file, reading only the row groups that hold them, by record batches."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    row = 0
    try:
        pf = pq.ParquetFile(path)
        for g in range(pf.metadata.num_row_groups):
            first, size = row, pf.metadata.row_group(g).num_rows
            row += size
            if row <= start or first >= stop:
                continue
            for batch in pf.iter_batches(batch_size=PARQUET_BATCH_ROWS, row_groups=[g]):
                a, b = max(start - first, 0), min(stop - first, batch.num_rows)
                for k, rec in enumerate(batch.slice(a, max(b - a, 0)).to_pylist()):
                    yield {**rec, "_line": first + a + k + 1, "_file": str(path)}
                first += batch.num_rows
    except (pa.ArrowException, OSError) as e:
        raise DataError(f"{path}: not a readable Parquet file ({e})") from None


def parquet_rows(path: Path) -> int:
    import pyarrow as pa
    import pyarrow.parquet as pq

    try:
        return int(pq.ParquetFile(path).metadata.num_rows)
    except (pa.ArrowException, OSError) as e:
        raise DataError(f"{path}: not a readable Parquet file ({e})") from None


def load_saved(path: str) -> Any:
    """The ``train`` split (else the first) of a ``save_to_disk`` directory."""
    try:
        import datasets

        ds = datasets.load_from_disk(path)
    except Exception as e:  # noqa: BLE001 - any failure here means "not a datasets dir"
        raise DataError(f"{path}: not a datasets directory saved with save_to_disk ({e})") from None
    if isinstance(ds, datasets.DatasetDict):
        ds = ds["train"] if "train" in ds else next(iter(ds.values()))
    return ds


def iter_hub(spec: str) -> Iterator[dict[str, Any]]:
    """Records of hub dataset ``spec`` (split train), streamed; refused offline."""
    expand_input(spec)  # the offline refusal
    try:
        import datasets

        ds = datasets.load_dataset(spec, split="train", streaming=True)
    except Exception as e:  # noqa: BLE001 - a typo'd path lands here too
        raise DataError(f"{spec}: no such local path, and no readable hub dataset ({type(e).__name__}: {e})") from None
    for k, rec in enumerate(ds):
        yield {**rec, "_line": k + 1, "_file": spec}


def read_source(src: Source, part: Shard, total: int, text_field: str, alone: bool) -> Iterator[dict[str, Any]]:
    """The records of ``src`` that belong to ``part`` (see :mod:`midtrain.data.partition`)."""
    i, n = part
    p = Path(src.path)
    lo, hi = part_bounds(i, n, total)
    if src.kind in ("jsonl", "parquet") and (hi <= src.offset or lo >= src.offset + src.weight):
        return  # not this part's: not even opened
    if src.kind == "jsonl":
        a, b = max(lo - src.offset, 0), min(hi - src.offset, src.weight)
        if a < b:
            yield from parse_jsonl(p, text_lines(p, a, b))
    elif src.kind == "parquet":
        yield from iter_parquet(p, *row_range(src, parquet_rows(p), i, n, total))
    elif src.kind == "dataset":
        ds = load_saved(src.path)
        a, b = contiguous_part(len(ds), n, i) if alone else row_range(src, len(ds), i, n, total)
        part_ds = ds.shard(n, i, contiguous=True) if alone else ds.select(range(a, b))
        for k, rec in enumerate(part_ds):
            yield {**rec, "_line": a + k + 1, "_file": src.path}
    else:  # cannot seek: record k goes to the (k mod m)-th of the m parts overlapping the source
        parts = parts_over(src, n, total)
        if i not in parts:
            return
        m, k = len(parts), parts.index(i)
        if src.kind == "gz":  # pick the lines before parsing: a part checks only its own records
            yield from parse_jsonl(p, every((x for x in text_lines(p) if x[1].strip()), m, k))
        elif src.kind == "hub":
            yield from every(iter_hub(src.path), m, k)
        elif k == 0:
            text = "".join(line for _, line in text_lines(p))
            yield {"id": p.stem, text_field: text, "_line": 1, "_file": src.path}


def iter_corpus(specs: Iterable[str | Path], *, text_field: str = "text", shard: Shard | None = None) -> Iterator[dict[str, Any]]:
    """Records of several input specs, in order; ``shard=(i, n)``: only part ``i`` of ``n`` of them all together."""
    i, n = shard or (0, 1)
    if not 0 <= i < n:
        raise ValueError(f"shard {shard}: need 0 <= i < n")
    sources = lay_out([s for spec in specs for s in expand_input(str(spec))])
    total = sum(s.weight for s in sources)
    for src in sources:
        yield from read_source(src, (i, n), total, text_field, alone=len(sources) == 1)


def iter_records(spec: str | Path, *, text_field: str = "text", shard: Shard | None = None) -> Iterator[dict[str, Any]]:
    """Records of one input spec (file, glob, shard dir, datasets dir, hub id); ``.txt``-like files are one record.

    ``shard=(i, n)`` yields only the i-th of n disjoint parts whose union is every record once
    (:mod:`midtrain.data.partition`).
    """
    yield from iter_corpus([spec], text_field=text_field, shard=shard)


def read_all(path: str | Path, *, required: Iterable[str] = ()) -> list[dict[str, Any]]:
    """All records of a file, each checked for ``required`` fields; an empty file is an error."""
    out = []
    for rec in iter_records(path):
        require(rec, required, path)
        out.append(rec)
    if not out:
        raise DataError(f"empty dataset: {path} has no records")
    return out
