"""Byte-range reading: the numbered lines that start inside ``[start, stop)`` of a text file.

A part of an uncompressed file seeks to its range, skips to the next line start and stops at the first line
starting past its end, so it reads ≈ 1/n of the file. The line *numbers* must stay the file's own (errors name
``file:line``), so the bytes before the range are scanned for newlines only; that count is memoised per file
identity (path, size, mtime) in :data:`NEWLINE_MARKS`, and the parts of one file read in order in one process
(the inline augment runner) scan it once in all. ``.gz`` files cannot seek: they are read whole.
"""

from __future__ import annotations

import gzip
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from midtrain.errors import DataError

NEWLINE_MARKS: dict[tuple[str, int, int], dict[int, int]] = {}  # file identity -> {offset: newlines before it}


def newlines_before(f: Any, key: tuple[str, int, int], offset: int) -> int:
    """Newlines in bytes ``[0, offset)`` of the open binary file ``f``, resuming from the nearest memoised mark."""
    marks = NEWLINE_MARKS.setdefault(key, {0: 0})
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


def raw_lines(path: Path, start: int = 0, stop: int | None = None) -> Iterator[tuple[int, bytes]]:
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


def text_lines(path: Path, start: int = 0, stop: int | None = None) -> Iterator[tuple[int, str]]:
    """(1-based line number, line) of a text file (``.gz`` read compressed); bad UTF-8 names file and line."""
    lineno = 0
    try:
        for lineno, raw in raw_lines(path, start, stop):
            try:
                yield lineno, raw.decode("utf-8")
            except UnicodeDecodeError as e:
                raise DataError(f"{path}:{lineno}: not valid UTF-8 ({e.reason} at byte {e.start} of the line)") from None
    except FileNotFoundError:
        raise DataError(f"file not found: {path}") from None
    except (OSError, EOFError) as e:
        raise DataError(f"{path}:{lineno + 1}: cannot read ({e})") from None
