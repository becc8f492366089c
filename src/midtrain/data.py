"""Corpus and record IO: input specs (files, globs, shard directories, ``datasets`` dirs, hub ids), sharded
streaming reads of JSONL (optionally gzipped), plain text, Parquet and ``datasets``, and atomic/append writes.

An *input spec* (:func:`expand_input`) is a file, a glob (``corpus/*.parquet``, ``**`` allowed), a directory of
shards (``.jsonl``/``.jsonl.gz``/``.parquet``/``.txt`` files found recursively; a hub-layout dir whose README.md
front matter has ``configs:`` uses the default config's ``train`` ``data_files``, as the hub does), a
``save_to_disk`` directory, or a hub dataset id ``org/name`` (streamed through ``datasets.load_dataset``; refused
with ``HF_HUB_OFFLINE=1``). Every reader streams records as dicts carrying ``_file`` (the concrete file) and
``_line`` (1-based line or row within that file) and fails with a :class:`DataError` that names the file and
line: a missing file, bytes that are not UTF-8, a malformed JSON line, a record that lacks a required column, or
a corpus with no records at all. Parquet is read by record batches, never a whole file at once.

Sharding (``shard=(i, n)`` of :func:`iter_records`/:func:`iter_corpus`): the sources are laid end to end on one
axis of their byte sizes (total ``W``); part ``i`` owns the positions ``[i·W//n, (i+1)·W//n)``, and a record
belongs to the part that owns its position, so the parts are disjoint and together hold every record once:

- uncompressed JSONL: a line's position is the byte where it starts; a part seeks to its range, skips to the next
  line start and stops at the first line starting past its end (reads ≈ 1/n of the file; the bytes before the
  range are only scanned for newlines, to keep ``_line`` the file's line number, and that count is memoised);
- Parquet (and a ``datasets`` dir among other sources): rows are spread evenly over the file's span, so a part
  gets one contiguous row range and reads only the row groups holding it; a ``datasets`` dir alone is cut with
  ``Dataset.shard(n, i, contiguous=True)``;
- sources that cannot seek (``.gz``, a hub stream) and single-record ``.txt`` files: record ``k`` goes to the
  ``k mod m``-th of the ``m`` parts overlapping the source's span (a hub stream overlaps all parts). Each of those
  parts reads the whole source, so a lone ``.gz`` file is read by every part; split big ``.gz`` corpora into files.

:func:`write_jsonl` is atomic (through :func:`midtrain.runs.atomic_file`, the package's one atomic writer) so
that a crash never leaves a half-written file under the final name. Append-only files (resumable shards, eval
samples, verdict caches) are written by :func:`append_jsonl` (fsynced batches); after a ``kill -9`` their last
line may be torn: :func:`iter_jsonl_tolerant` skips it and :func:`repair_tail` truncates it away before the next
append.
"""

from __future__ import annotations

import glob as globlib
import gzip
import json
import os
import re
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from midtrain.errors import DataError
from midtrain.runs import atomic_file

JSONL_SUFFIXES = (".jsonl", ".jsonl.gz", ".json.gz", ".ndjson")
TEXT_SUFFIXES = (".txt", ".md", ".tex", ".py")
SHARD_SUFFIXES = (*JSONL_SUFFIXES, ".parquet", ".txt")  # what a directory of shards is made of
GLOB_CHARS = frozenset("*?[")
HUB_ID = re.compile(r"[A-Za-z0-9][\w.-]*/[\w.-]+")
# Split names in hub-layout file paths (``data/train-00000-of-00004.parquet``): a shard dir without README
# configs that has train files next to test/validation files is read for its train files only, as the hub does.
TRAIN_SPLIT = re.compile(r"(^|[/_.-])train([/_.-]|$)")
OTHER_SPLIT = re.compile(r"(^|[/_.-])(test|validation|valid|dev|eval)([/_.-]|$)")
PARQUET_BATCH_ROWS = 1024
UNSUPPORTED = "unsupported file type (use .jsonl, .jsonl.gz, .parquet, .txt or a datasets dir)"

Shard = tuple[int, int]  # (i, n): the i-th of n parts


# -- input specs ------------------------------------------------------------------------------------------------
def is_saved_dataset(path: Path) -> bool:
    """A directory written by ``Dataset.save_to_disk`` / ``DatasetDict.save_to_disk``."""
    return (path / "state.json").is_file() or (path / "dataset_dict.json").is_file()


def hub_offline() -> bool:
    return any(os.environ.get(k, "").strip().lower() in ("1", "true", "yes", "on") for k in ("HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE"))


def is_hub_id(spec: str) -> bool:
    """``org/name`` that is no local path: not an existing path, no data file suffix, no existing first part."""
    if not HUB_ID.fullmatch(spec) or Path(spec).exists() or Path(spec.split("/")[0]).exists():
        return False
    return not spec.lower().endswith((*SHARD_SUFFIXES, *TEXT_SUFFIXES, ".json", ".csv", ".gz"))


def expand_input(spec: str) -> list[str]:
    """The concrete sources of one input spec, in a deterministic sorted order (see the module docstring).

    A file → ``[file]``; a glob → its matching files (none: DataError naming the pattern); a ``save_to_disk``
    dir → ``[dir]``; any other directory → its shard files; a hub id → ``[spec]`` (DataError when offline).
    """
    spec = str(spec)
    p = Path(spec)
    if p.is_file():
        return [spec]
    if p.is_dir():
        return [spec] if is_saved_dataset(p) else shard_dir_files(p)
    if GLOB_CHARS & set(spec):
        found = sorted(f for f in globlib.glob(spec, recursive=True) if Path(f).is_file() or is_saved_dataset(Path(f)))
        if not found:
            raise DataError(f"no files match {spec}")
        return found
    if is_hub_id(spec):
        if hub_offline():
            raise DataError(
                f"{spec}: no such local path, and reading the hub dataset '{spec}' needs the network but HF_HUB_OFFLINE is "
                f"set; download it first (huggingface-cli download --repo-type dataset {spec} --local-dir DIR) and pass "
                "DIR, a glob of its files or the files themselves"
            )
        return [spec]
    raise DataError(f"file not found: {spec}")


def shard_dir_files(d: Path) -> list[str]:
    """The data files of a directory of shards: README ``configs`` (default config, split train), else all shards."""
    if (d / "midtrain.json").is_file():  # its log.jsonl and shards are no corpus; augment output: read_records
        raise DataError(f"{d}: a midtrain run directory, not a corpus; pass its data files (e.g. '{d}/shards/*.jsonl')")
    patterns = readme_data_files(d)
    if patterns is not None:
        files: list[str] = []
        for pattern in patterns:
            matched = [str(d / f) for f in globlib.glob(pattern, root_dir=d, recursive=True) if (d / f).is_file()]
            if not matched:
                raise DataError(f"{d / 'README.md'}: data_files pattern '{pattern}' matches no file in {d}")
            files += matched
        return sorted(dict.fromkeys(files))
    rel = sorted(
        q.relative_to(d).as_posix()
        for q in d.rglob("*")
        if q.is_file() and q.name.lower().endswith(SHARD_SUFFIXES) and not any(s.startswith(".") for s in q.relative_to(d).parts)
    )
    if any(TRAIN_SPLIT.search(r) for r in rel) and any(OTHER_SPLIT.search(r) for r in rel):
        rel = [r for r in rel if TRAIN_SPLIT.search(r)]
    if not rel:
        raise DataError(
            f"{d}: no data files ({', '.join(SHARD_SUFFIXES)}) in this directory, and not a datasets directory saved with save_to_disk"
        )
    return [str(d / r) for r in rel]


def readme_data_files(d: Path) -> list[str] | None:
    """The ``train`` ``data_files`` patterns of the default config in ``d/README.md``'s YAML front matter, if any."""
    import yaml

    readme = d / "README.md"
    if not readme.is_file():
        return None
    m = re.match(r"---[ \t]*\r?\n(.*?)\r?\n---[ \t]*(\r?\n|$)", readme.read_text(encoding="utf-8", errors="replace"), re.S)
    if not m:
        return None
    try:
        meta = yaml.safe_load(m.group(1))
    except yaml.YAMLError as e:
        raise DataError(f"{readme}: the front matter is not valid YAML ({e})") from None
    configs = meta.get("configs") if isinstance(meta, dict) else None
    if not configs:
        return None
    if not isinstance(configs, list) or not all(isinstance(c, dict) for c in configs):
        raise DataError(f"{readme}: 'configs' must be a list of mappings")
    default = next((c for c in configs if c.get("default")), None)
    default = default or next((c for c in configs if c.get("config_name") == "default"), configs[0])
    found = train_patterns(default.get("data_files"))
    if not found:
        raise DataError(f"{readme}: config '{default.get('config_name', 'default')}' has no data_files for split 'train'")
    return found


def train_patterns(data_files: Any) -> list[str]:
    """The split-``train`` patterns of a hub ``data_files`` value (a string, a list, ``[{split, path}]`` or a dict)."""

    def strings(x: Any) -> list[str]:
        return [x] if isinstance(x, str) else [s for s in x if isinstance(s, str)] if isinstance(x, list) else []

    if isinstance(data_files, dict):
        return strings(data_files.get("train"))
    if isinstance(data_files, list) and any(isinstance(e, dict) for e in data_files):
        return [s for e in data_files if isinstance(e, dict) and e.get("split", "train") == "train" for s in strings(e.get("path"))]
    return strings(data_files)


def input_files(name: str, spec: str | Path) -> dict[str, str]:
    """The local paths whose content identifies input ``spec`` in a run key, named after ``name``.

    An existing file or directory is itself (a directory's files are all hashed); a glob is each file it matches
    (``name[k]``), so the key follows the resolved files' contents, not the pattern; a hub id has no local
    content (the config names it).
    """
    s = str(spec)
    if Path(s).exists():
        return {name: s}
    sources = expand_input(s)
    if sources == [s]:  # a hub id
        return {}
    return {f"{name}[{k}]": f for k, f in enumerate(sources)}


# -- layout and sharding ----------------------------------------------------------------------------------------
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


# -- readers ----------------------------------------------------------------------------------------------------
_NEWLINE_MARKS: dict[tuple[str, int, int], dict[int, int]] = {}  # file identity -> {offset: newlines before it}


def newlines_before(f: Any, key: tuple[str, int, int], offset: int) -> int:
    """Newlines in bytes ``[0, offset)`` of the open binary file ``f``, resuming from the nearest memoised mark.

    The parts of one file read in order in one process (the inline augment runner) then scan it once in all.
    """
    marks = _NEWLINE_MARKS.setdefault(key, {0: 0})
    pos = max(m for m in marks if m <= offset)
    count = marks[pos]
    f.seek(pos)
    while pos < offset:
        block = f.read(min(1 << 20, offset - pos))
        if not block:
            break
        count += block.count(b"\n")
        pos += len(block)
    marks[offset] = count
    return count


def _raw_lines(path: Path, start: int = 0, stop: int | None = None) -> Iterator[tuple[int, bytes]]:
    """(1-based line number, raw line) of the lines starting in bytes ``[start, stop)`` (``.gz``: all lines)."""
    if path.suffix == ".gz":
        with gzip.open(path, "rb") as gz:
            yield from enumerate(gz, start=1)
        return
    st = path.stat()
    with open(path, "rb") as f:
        lineno = 0
        if start > 0:  # the standard trick: from byte start-1, skip to the next line start
            lineno = newlines_before(f, (str(path), st.st_size, st.st_mtime_ns), start - 1)
            f.seek(start - 1)
            if not f.readline().endswith(b"\n"):
                return
            lineno += 1
        pos = f.tell()
        while stop is None or pos < stop:
            raw = f.readline()
            if not raw:
                return
            lineno += 1
            yield lineno, raw
            pos += len(raw)


def _lines(path: Path, start: int = 0, stop: int | None = None) -> Iterator[tuple[int, str]]:
    """(1-based line number, line) of a text file (``.gz`` read compressed); bad UTF-8 names file and line."""
    lineno = 0
    try:
        for lineno, raw in _raw_lines(path, start, stop):
            try:
                yield lineno, raw.decode("utf-8")
            except UnicodeDecodeError as e:
                raise DataError(f"{path}:{lineno}: not valid UTF-8 ({e.reason} at byte {e.start} of the line)") from None
    except FileNotFoundError:
        raise DataError(f"file not found: {path}") from None
    except (OSError, EOFError) as e:
        raise DataError(f"{path}:{lineno + 1}: cannot read ({e})") from None


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
    yield from parse_jsonl(path, _lines(path))


def every(items: Iterable[Any], m: int, k: int) -> Iterator[Any]:
    """Items ``k, k + m, k + 2m, …`` (round-robin part ``k`` of ``m``)."""
    for j, x in enumerate(items):
        if j % m == k:
            yield x


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
    """The records of ``src`` that belong to ``part`` (see the module docstring)."""
    i, n = part
    p = Path(src.path)
    lo, hi = part_bounds(i, n, total)
    if src.kind in ("jsonl", "parquet") and (hi <= src.offset or lo >= src.offset + src.weight):
        return  # not this part's: not even opened
    if src.kind == "jsonl":
        a, b = max(lo - src.offset, 0), min(hi - src.offset, src.weight)
        if a < b:
            yield from parse_jsonl(p, _lines(p, a, b))
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
            yield from parse_jsonl(p, every((x for x in _lines(p) if x[1].strip()), m, k))
        elif src.kind == "hub":
            yield from every(iter_hub(src.path), m, k)
        elif k == 0:
            text = "".join(line for _, line in _lines(p))
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

    ``shard=(i, n)`` yields only the i-th of n disjoint parts whose union is every record once (module docstring).
    """
    yield from iter_corpus([spec], text_field=text_field, shard=shard)


def where(rec: dict[str, Any], path: str | Path) -> str:
    """``FILE:LINE`` of a record for error messages: its own ``_file`` (a glob or shard directory names the file the
    record came from, not the pattern), else ``path``."""
    return f"{rec.get('_file', path)}:{rec.get('_line', '?')}"


def require(rec: dict[str, Any], fields: Iterable[str], path: str | Path) -> None:
    """Raise a DataError naming file (the record's own ``_file``, else ``path``), line and column when ``rec`` lacks
    a required field."""
    for f in fields:
        if f not in rec:
            have = ", ".join(k for k in rec if not k.startswith("_"))
            raise DataError(f"{where(rec, path)}: record has no '{f}' field (fields: {have})")


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
    """A record without reader bookkeeping (``_line``, ``_file``)."""
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
