"""Training records as text pairs ``(prompt, body)``: the one reading of a record shared by tokenizer training,
tokenization and the causal-LM stages.

A record's format is one of (``Format``):

- ``text``: a ``text`` field (pretraining corpora), no prompt;
- ``prompt_completion``: ``prompt`` + ``completion`` (synthetic problems, SFT pairs);
- ``augmented``: an augmented chunk rendered *with* its thoughts (thinking SFT); only ``accepted`` chunks have text;
- ``augmented_raw``: the same chunk without thoughts (the SFT(raw) control);
- ``auto``: the first that fits each record (segments → augmented, prompt+completion, text).

A record that fits none is a :class:`~midtrain.errors.DataError` naming its ``file:line``.
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path
from typing import Any, Literal

from midtrain.data.corpus import iter_records
from midtrain.data.records import where
from midtrain.errors import DataError
from midtrain.thoughts import render_augmented

Format = Literal["auto", "text", "prompt_completion", "augmented", "augmented_raw"]
NO_PROMPT_FORMATS = ("text", "augmented", "augmented_raw")  # formats whose records have no prompt


def record_to_pair(rec: dict[str, Any], fmt: Format, path: str | Path, text_field: str = "text") -> tuple[str, str]:
    """(unmasked prefix, text) of one record: the prefix is the prompt when there is one, else empty."""
    kind = fmt
    if kind == "auto":
        if isinstance(rec.get("segments"), list):
            kind = "augmented"
        elif "prompt" in rec and "completion" in rec:
            kind = "prompt_completion"
        elif text_field in rec:
            kind = "text"
        else:
            fields = ", ".join(k for k in rec if not k.startswith("_"))
            raise DataError(
                f"{where(rec, path)}: record has no '{text_field}', 'prompt'+'completion' or 'segments' field (fields: {fields})"
            )
    if kind == "text":
        if not isinstance(rec.get(text_field), str):
            raise DataError(f"{where(rec, path)}: record has no string '{text_field}' field")
        return "", rec[text_field]
    if kind == "prompt_completion":
        for f in ("prompt", "completion"):
            if not isinstance(rec.get(f), str):
                raise DataError(f"{where(rec, path)}: record has no string '{f}' field")
        return rec["prompt"], rec["completion"]
    if not isinstance(rec.get("segments"), list):
        raise DataError(f"{where(rec, path)}: record has no 'segments' list (augmented format)")
    if rec.get("status", "accepted") != "accepted":
        return "", ""
    if kind == "augmented":
        return "", render_augmented(rec)
    return "", "".join(seg.get("text", "") for seg in rec["segments"])


def read_pairs(
    paths: Iterable[str | Path], *, fmt: Format = "auto", text_field: str = "text", what: str = "dataset"
) -> list[tuple[str, str]]:
    """(prompt, body) of every usable record in ``paths`` (see :func:`record_to_pair`); none at all is an error."""
    paths = list(paths)
    pairs = []
    for path in paths:
        for rec in iter_records(path, text_field=text_field):
            prompt, body = record_to_pair(rec, fmt, path, text_field)
            if prompt or body:
                pairs.append((prompt, body))
    if not pairs:
        raise DataError(f"empty {what}: no usable records in {', '.join(map(str, paths))}")
    return pairs


__all__ = ["Format", "NO_PROMPT_FORMATS", "read_pairs", "record_to_pair"]
