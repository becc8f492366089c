"""The record conventions every reader of :mod:`midtrain.data` follows, in one leaf module.

A record is a dict. Readers add two bookkeeping keys: ``_file`` (the concrete file it came from, never the glob or
directory the user named) and ``_line`` (its 1-based line, or row, in that file), so that any later check can name
``file:line`` (:func:`where`, :func:`require`). Writers drop every ``_``-prefixed key (:func:`clean`).
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path
from typing import Any

from midtrain.errors import DataError


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


def clean(rec: dict[str, Any]) -> dict[str, Any]:
    """A record without reader bookkeeping (``_line``, ``_file``)."""
    return {k: v for k, v in rec.items() if not k.startswith("_")}
