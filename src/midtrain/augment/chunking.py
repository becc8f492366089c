"""Token-budgeted, lossless chunking of documents at paragraph or sentence boundaries, and the chunks of a shard.

Algorithm (:func:`chunk_text`), with the *target* model's tokenizer:

1. Cut the document into units with every separator attached to the unit before it (and leading whitespace
   to the first unit), so that ``"".join(units) == text`` always. Levels, coarse to fine: paragraphs (blank
   lines), sentences (``. ! ? …`` plus closing quotes/brackets, then whitespace), lines, words (whitespace), and
   finally token offsets. A unit is cut to the next level only if it alone exceeds the budget.
2. Pack units greedily: a chunk takes units while the sum of their token counts stays ≤ ``max_tokens``.
3. Verify every chunk with one exact tokenisation (a BPE can merge across a boundary, so sums are estimates);
   an over-budget chunk is split at its token-weighted middle unit boundary, recursively.

Guarantees: ``"".join(chunks) == text`` except that whitespace-only chunks are dropped, and every chunk has at most
``max_tokens`` tokens (without special tokens). Chunk ids are ``<source_id>#<index>``.

The chunks of output shard ``i`` of ``N`` (:func:`shard_chunks`) come from reader part ``i`` of ``N`` of the
whole corpus (:func:`midtrain.data.corpus.iter_corpus` with ``shard=(i, N)``), so each shard reads ≈ 1/N of it; with
``max_documents`` the first documents are read from the start and assigned by ``sha256(id) mod N``.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from midtrain.augment.config import AugmentConfig
from midtrain.data.corpus import iter_corpus
from midtrain.data.records import where
from midtrain.errors import DataError
from midtrain.shards import shard_of

PARAGRAPH = re.compile(r"\n[ \t\r\f\v]*\n\s*")
SENTENCE = re.compile(r"[.!?…]+[\"'”’»)\]]*\s+")
LINE = re.compile(r"\n+")
WORD = re.compile(r"\s+")
LEVELS = (PARAGRAPH, SENTENCE, LINE, WORD)

Counter = Callable[[Sequence[str]], list[int]]


@dataclass
class TextChunk:
    id: str
    source_id: str
    index: int
    text: str
    tokens: int


# A period after these words (or after a single capital letter, an initial) does not end a sentence.
ABBREVIATIONS = frozenset(
    "mr mrs ms dr prof st sr jr vs etc e.g i.e cf fig figs eq eqs no vol pp ch sec approx dept est inc ltd co".split()
)
_LAST_WORD = re.compile(r"(\S+)$")


def _ends_sentence(text: str, m: re.Match[str]) -> bool:
    if not m.group().startswith(".") or m.group().startswith(".."):
        return True
    w = _LAST_WORD.search(text, 0, m.start())
    word = w.group(1).lstrip("(\"'“‘[").lower() if w else ""
    return not (word in ABBREVIATIONS or (len(word) == 1 and word.isalpha()))


def split_units(text: str, pattern: re.Pattern[str]) -> list[str]:
    """Cut ``text`` after every match of ``pattern`` (separators stay with the unit before them)."""
    sentence = pattern is SENTENCE
    cuts = [m.end() for m in pattern.finditer(text) if 0 < m.end() < len(text) and (not sentence or _ends_sentence(text, m))]
    units, prev = [], 0
    for c in cuts:
        if c > prev:
            units.append(text[prev:c])
            prev = c
    units.append(text[prev:])
    if len(units) > 1 and not units[0].strip():  # leading whitespace joins the first real unit
        units[1] = units[0] + units[1]
        units.pop(0)
    return [u for u in units if u]


def sentences(text: str) -> list[str]:
    """Sentence-level units of ``text`` (lossless)."""
    return split_units(text, SENTENCE)


def token_counter(tokenizer: Any) -> Counter:
    """Batched token counts without special tokens."""

    def count(texts: Sequence[str]) -> list[int]:
        if not texts:
            return []
        enc = tokenizer(list(texts), add_special_tokens=False, verbose=False)["input_ids"]  # no over-length warning
        return [len(ids) for ids in enc]

    return count


def _split_tokens(text: str, tokenizer: Any, max_tokens: int) -> list[str]:
    """Hard cut at token offsets (a single 'word' longer than the budget)."""
    try:
        enc = tokenizer(text, add_special_tokens=False, return_offsets_mapping=True, verbose=False)
        offsets = enc["offset_mapping"]
    except (NotImplementedError, TypeError, KeyError, ValueError):
        offsets = None
    if not offsets:  # slow tokenizer: cut by characters, halving until each piece fits
        count = token_counter(tokenizer)
        if len(text) <= 1 or count([text])[0] <= max_tokens:
            return [text]
        mid = len(text) // 2
        return _split_tokens(text[:mid], tokenizer, max_tokens) + _split_tokens(text[mid:], tokenizer, max_tokens)
    cuts = [offsets[i][0] for i in range(max_tokens, len(offsets), max_tokens)]
    pieces, prev = [], 0
    for c in cuts:
        if c > prev:
            pieces.append(text[prev:c])
            prev = c
    pieces.append(text[prev:])
    return pieces


def _units(text: str, count: Counter, tokenizer: Any, max_tokens: int, level: int = 0) -> tuple[list[str], list[int]]:
    if level >= len(LEVELS):
        pieces = _split_tokens(text, tokenizer, max_tokens)
        return pieces, count(pieces)
    units = split_units(text, LEVELS[level])
    counts = count(units)
    out_u: list[str] = []
    out_c: list[int] = []
    for u, c in zip(units, counts):
        if c > max_tokens:
            su, sc = _units(u, count, tokenizer, max_tokens, level + 1)
            out_u += su
            out_c += sc
        else:
            out_u.append(u)
            out_c.append(c)
    return out_u, out_c


def _pack(units: list[str], counts: list[int], max_tokens: int) -> list[list[int]]:
    groups: list[list[int]] = []
    cur: list[int] = []
    total = 0
    for i, c in enumerate(counts):
        if cur and total + c > max_tokens:
            groups.append(cur)
            cur, total = [], 0
        cur.append(i)
        total += c
    if cur:
        groups.append(cur)
    return groups


def _fit(
    group: list[int], units: list[str], counts: list[int], count: Counter, tokenizer: Any, max_tokens: int, exact: int | None = None
) -> list[tuple[str, int]]:
    """``group`` as one chunk if it fits exactly, else split at its token-weighted middle, recursively."""
    text = "".join(units[i] for i in group)
    n = count([text])[0] if exact is None else exact
    if n <= max_tokens:
        return [(text, n)]
    if len(group) == 1:  # one unit over budget after all: cut at token offsets
        return [(p, count([p])[0]) for p in _split_tokens(text, tokenizer, max_tokens)]
    total, acc, half = sum(counts[i] for i in group), 0, len(group) - 1
    for k, i in enumerate(group[:-1], start=1):
        acc += counts[i]
        if acc * 2 >= total:
            half = k
            break
    return _fit(group[:half], units, counts, count, tokenizer, max_tokens) + _fit(group[half:], units, counts, count, tokenizer, max_tokens)


def chunk_text(text: str, tokenizer: Any, max_tokens: int) -> list[tuple[str, int]]:
    """``[(chunk, n_tokens)]`` for one document, in order; see the module docstring."""
    if max_tokens < 1:
        raise ValueError("max_tokens must be >= 1")
    if not text.strip():
        return []
    count = token_counter(tokenizer)
    units, counts = _units(text, count, tokenizer, max_tokens)
    groups = _pack(units, counts, max_tokens)
    exact = count(["".join(units[i] for i in g) for g in groups])  # one batched call for all chunks
    out: list[tuple[str, int]] = []
    for g, n in zip(groups, exact):
        out += _fit(g, units, counts, count, tokenizer, max_tokens, exact=n)
    return [(t, n) for t, n in out if t.strip()]


def chunk_document(source_id: str, text: str, tokenizer: Any, max_tokens: int) -> list[TextChunk]:
    """Chunks of one document with ids ``<source_id>#<index>``."""
    return [
        TextChunk(id=f"{source_id}#{k:04d}", source_id=source_id, index=k, text=t, tokens=n)
        for k, (t, n) in enumerate(chunk_text(text, tokenizer, max_tokens))
    ]


__all__ = ["TextChunk", "split_units", "sentences", "token_counter", "chunk_text", "chunk_document", "chunk_record"]


@dataclass
class Chunk:
    id: str
    source_id: str
    text: str
    domain: str
    tokens: int
    problem: dict[str, Any] | None = None  # a synthetic problem annotated by midtrain.synth


def chunk_record(c: Chunk, annotator: str, status: str, attempts: int, **extra: Any) -> dict[str, Any]:
    """The augmented-chunk record of ``c`` (DESIGN §2), the one schema of both annotator modes: ``extra`` adds
    segments, reason, detail, error, …"""
    rec: dict[str, Any] = {
        "id": c.id,
        "source_id": c.source_id,
        "chunk": c.text,
        "domain": c.domain,
        "segments": [],
        "annotator": annotator,
        "status": status,
        "reason": None,
        "attempts": attempts,
        "tokens": c.tokens,
    }
    rec.update(extra)
    return rec


def iter_documents(cfg: AugmentConfig, *, shard: tuple[int, int] | None = None) -> Iterator[tuple[str, str, dict[str, Any]]]:
    """``(document id, file, record)`` over all inputs, at most ``max_documents``; ``shard=(i, n)``: only the
    documents of reader part ``i`` of ``n`` (:func:`midtrain.data.corpus.iter_corpus`, ≈ 1/n of the corpus bytes)."""
    n = 0
    for rec in iter_corpus(cfg.input, text_field=cfg.text_field, shard=shard):
        if cfg.max_documents is not None and n >= cfg.max_documents:
            return
        path = str(rec.get("_file", ""))
        doc_id = rec.get(cfg.id_field)
        yield (str(doc_id) if doc_id is not None else f"{Path(path).stem}:{rec.get('_line')}"), path, rec
        n += 1


def shard_documents(cfg: AugmentConfig, index: int) -> Iterator[tuple[str, str, dict[str, Any]]]:
    """The documents of output shard ``index`` of ``cfg.num_shards``.

    Shard ``i`` is reader part ``i``: it reads only its slice of the corpus (whole documents, a deterministic
    function of the input files and ``num_shards``, so a resumed shard finds the same documents). With
    ``max_documents`` the cut-off is over the corpus from its start, which no slice can know: the first documents
    are read from the start and go to shard ``sha256(id) mod N``.
    """
    if cfg.max_documents is None:
        yield from iter_documents(cfg, shard=(index, cfg.num_shards))
        return
    for doc in iter_documents(cfg):
        if shard_of(doc[0], cfg.num_shards) == index:
            yield doc


def shard_chunks(cfg: AugmentConfig, tokenizer: Any, index: int, *, synthetic: bool = False) -> list[Chunk]:
    """The chunks of shard ``index`` in document order (``synthetic``: records with ``graph`` stay whole).

    A document id seen twice in the shard is an error (ids repeated in two different shards are not seen here).
    """
    seen: set[str] = set()
    out: list[Chunk] = []
    for doc_id, path, rec in shard_documents(cfg, index):
        if doc_id in seen:
            raise DataError(f"{where(rec, path)}: duplicate document id '{doc_id}'")
        seen.add(doc_id)
        domain = str(rec.get(cfg.domain_field) or cfg.default_domain)
        if synthetic and "graph" in rec:
            problem = {k: v for k, v in rec.items() if not k.startswith("_")}
            out.append(Chunk(f"{doc_id}#0000", doc_id, str(rec.get(cfg.text_field) or ""), domain, 0, problem))
            continue
        text = rec.get(cfg.text_field)
        if not isinstance(text, str):
            raise DataError(f"{where(rec, path)}: no string '{cfg.text_field}' field")
        for c in chunk_document(doc_id, text, tokenizer, cfg.max_chunk_tokens):
            out.append(Chunk(c.id, doc_id, c.text, domain, c.tokens))
    return out


def require_usable_document(cfg: AugmentConfig) -> None:
    """DataError unless the corpus holds a document to augment; a record without a string text names file:line.

    Synthetic records carry a graph and are annotated programmatically; blank texts are skipped by chunking.
    """
    for _, path, rec in iter_documents(cfg):
        if "graph" in rec:
            return
        text = rec.get(cfg.text_field)
        if not isinstance(text, str):
            raise DataError(f"{where(rec, path)}: no string '{cfg.text_field}' field")
        if text.strip():
            return
    raise DataError(f"empty corpus: no document with text in '{cfg.text_field}' in {', '.join(cfg.input)}")
