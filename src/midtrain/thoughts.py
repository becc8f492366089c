"""The thought format: render, strip, parse and validate ``<think>`` annotations (DESIGN §1.1, §2).

An augmented chunk is stored as segments ``[{"text", "thought"}]``; its rendered form is
``Σ segment.text + ("<think>" + thought + "</think>" if thought)``. :func:`render_augmented` builds it and
:func:`strip_thoughts` removes the thought spans again; ``strip_thoughts(render_augmented(r)) == r["chunk"]`` holds
for every accepted record because chunks that already contain a tag are rejected (``source_has_tags``).

**Preservation check** (:func:`validate_answer`): the annotator's answer is split at the tags into text pieces
and thoughts (``tags_unbalanced`` unless tags strictly alternate open/close, never nested, all closed; empty
thoughts are dropped). The concatenated pieces are compared with the original chunk after a normalisation ``N``:

- ``exact``: none;
- ``whitespace``: every run of whitespace becomes one space, leading/trailing whitespace is dropped;
- ``nfkc``: Unicode NFKC per character cluster (a base character and its combining marks), then ``whitespace``.

If ``N(pieces) != N(chunk)`` the answer is rejected as ``truncated`` (a strict prefix, typically the token budget
ran out) or ``text_altered`` (with the first mismatch as detail). Otherwise each thought's position in the answer
is mapped through the normalisation index maps onto a position in the **original** chunk, and the segments are
cut from the original: the stored text is always the original, byte for byte, whatever whitespace or Unicode form
the annotator returned. Then the thought count must lie in ``[min_thoughts, max_thoughts]``.

**A completion's answer** (:func:`after_thinking`) is the text after its *last* ``</think>``, and its reasoning
(:func:`thinking_part`) everything before that from the first ``<think>`` (or from the start when the prompt
opened the thought, :func:`opens_thought`). One definition serves scoring, the judge, evaluation's thinking
lengths and the synthetic verifier.
"""

from __future__ import annotations

import re
import unicodedata
from bisect import bisect_left
from dataclasses import dataclass, field
from typing import Any, Literal

THINK_OPEN = "<think>"
THINK_CLOSE = "</think>"
Normalization = Literal["exact", "whitespace", "nfkc"]
_TAG = re.compile(r"(<think>|</think>)")
_SPAN = re.compile(r"<think>.*?</think>", re.S)

# Rejection reasons (status "rejected") and the failure reason (status "failed"), in report order.
REASONS = (
    "text_altered",
    "truncated",
    "tags_unbalanced",
    "too_few_thoughts",
    "too_many_thoughts",
    "empty",
    "source_has_tags",
    # insert mode (midtrain.augment.insert): a generated thought failed its checks
    "thought_has_tags",
    "thought_too_short",
    "thought_too_long",
    "thought_copies_text",
    "thought_cut_off",
    "thought_restates_text",
    "thought_repetitive",
    "thought_filler",
)
FAILED = "backend_error"


def render_augmented(record: dict[str, Any]) -> str:
    """The training text of an augmented record: each segment's text followed by its thought in tags."""
    return "".join(s["text"] + (THINK_OPEN + s["thought"] + THINK_CLOSE if s.get("thought") else "") for s in record["segments"])


def strip_thoughts(text: str) -> str:
    """``text`` without its ``<think>…</think>`` spans; an unclosed ``<think>`` drops everything after it."""
    out = _SPAN.sub("", text)
    cut = out.find(THINK_OPEN)
    return out if cut < 0 else out[:cut]


def has_tags(text: str) -> bool:
    return THINK_OPEN in text or THINK_CLOSE in text


# -- a completion's thinking and its answer -------------------------------------------------------------------
def opens_thought(prompt: str | None) -> bool:
    """Whether ``prompt`` ends inside a thought (its last think tag is ``<think>``), as thinking templates do."""
    if not prompt:
        return False
    i = prompt.rfind(THINK_OPEN)
    return i >= 0 and prompt.rfind(THINK_CLOSE) < i


def after_thinking(text: str, *, opened: bool = False) -> str | None:
    """The answer part of a completion: the text after its **last** ``</think>``; None while still thinking.

    Why the last one: a model may close a thought, write a little and open another before it answers
    (``<think>a</think> so <think>b</think> 42``); everything up to the final ``</think>`` is reasoning, and
    cutting at the first one would score or judge a thought as the answer. The cases:

    - a ``</think>`` in the text: what follows the last one, unstripped; but if a ``<think>`` follows it, a
      thought was reopened and never closed: still thinking, None;
    - no ``</think>``, but ``opened`` (the prompt ended inside ``<think>``, see :func:`opens_thought`) or a
      ``<think>`` in the text: generation stopped while thinking, None;
    - no tag at all and not ``opened``: the model did not think, the whole text is the answer.

    A text that closes a thought the prompt opened, with no ``<think>`` of its own, is exactly
    ``thinking_part(text) + "</think>" + after_thinking(text)`` (see :func:`thinking_part`).
    """
    cut = text.rfind(THINK_CLOSE)
    if cut < 0:
        return None if opened or THINK_OPEN in text else text
    rest = text[cut + len(THINK_CLOSE) :]
    return None if THINK_OPEN in rest else rest


def thinking_part(text: str, *, opened: bool = False) -> str | None:
    """The reasoning of a completion: the text before its answer (:func:`after_thinking`), without the outer tags.

    It starts at the text's start when ``opened`` (the prompt ended inside ``<think>``), else after the first
    ``<think>``, or at the start when there is none but a ``</think>`` closes a thought opened before the text.
    It ends at the last ``</think>``, or at the end of the text while still thinking. Tags of thoughts closed and
    reopened in between are kept. None when the text never thought (no tag and not ``opened``).
    """
    close = text.rfind(THINK_CLOSE)
    head = text if close < 0 else text[:close]
    if opened:
        return head
    start = head.find(THINK_OPEN)
    if start >= 0:
        return head[start + len(THINK_OPEN) :]
    return head if close >= 0 else None


@dataclass
class Outcome:
    """The verdict on one annotator answer: ``accepted`` with segments, or ``rejected`` with a reason."""

    status: Literal["accepted", "rejected"]
    reason: str | None = None
    segments: list[dict[str, Any]] = field(default_factory=list)
    detail: str = ""

    @property
    def thoughts(self) -> int:
        return sum(1 for s in self.segments if s.get("thought"))


class _Reject(Exception):
    def __init__(self, reason: str, detail: str = "") -> None:
        super().__init__(reason)
        self.reason, self.detail = reason, detail


def parse_answer(answer: str) -> tuple[list[str], list[str]]:
    """Split an answer into text pieces ``t_0..t_K`` and thoughts ``τ_1..τ_K`` (answer = t_0 τ_1 t_1 … τ_K t_K).

    Raises ``_Reject("tags_unbalanced")`` unless the tags alternate ``<think>``/``</think>`` and all are closed.
    """
    parts = _TAG.split(answer)  # [text, tag, text, tag, ...]
    pieces, thoughts = [parts[0]], []
    inside = False
    for i in range(1, len(parts), 2):
        tag, after = parts[i], parts[i + 1]
        if tag == THINK_OPEN:
            if inside:
                raise _Reject("tags_unbalanced", f"nested <think> at tag {i // 2 + 1}")
            thoughts.append(after)
            inside = True
        else:
            if not inside:
                raise _Reject("tags_unbalanced", f"</think> without <think> at tag {i // 2 + 1}")
            pieces.append(after)
            inside = False
    if inside:
        raise _Reject("tags_unbalanced", "unclosed <think>")
    return pieces, thoughts


def normalize(text: str, mode: Normalization) -> tuple[str, list[int]]:
    """``(N(text), src)`` where ``src[p]`` is the index in ``text`` of the character that produced ``N(text)[p]``."""
    if mode == "exact":
        return text, list(range(len(text)))
    out: list[str] = []
    src: list[int] = []
    run_start = -1  # start of the pending whitespace run, -1 if none
    ascii_only = text.isascii()
    i, n = 0, len(text)
    while i < n:
        j = i + 1
        if mode == "nfkc" and not ascii_only:
            while j < n and unicodedata.combining(text[j]):
                j += 1
            piece = unicodedata.normalize("NFKC", text[i:j])
        else:
            piece = text[i]
        for ch in piece:
            if ch.isspace():
                if run_start < 0:
                    run_start = i
                continue
            if run_start >= 0:
                if out:  # leading whitespace is dropped
                    out.append(" ")
                    src.append(run_start)
                run_start = -1
            out.append(ch)
            src.append(i)
        i = j
    return "".join(out), src  # trailing whitespace is dropped


def _mismatch(a: str, b: str, width: int = 30) -> str:
    k = next((i for i, (x, y) in enumerate(zip(a, b)) if x != y), min(len(a), len(b)))
    return f"at char {k}: original {a[max(0, k - width) : k + width]!r} vs answer {b[max(0, k - width) : k + width]!r}"


def validate_answer(
    chunk: str,
    answer: str,
    *,
    mode: Normalization = "nfkc",
    min_thoughts: int = 1,
    max_thoughts: int = 16,
) -> Outcome:
    """Check that ``answer`` is ``chunk`` with thoughts inserted; build the segments from the original text."""
    try:
        if has_tags(chunk):
            raise _Reject("source_has_tags", "the original text already contains <think> or </think>")
        if not answer.strip():
            raise _Reject("empty")
        pieces, raw_thoughts = parse_answer(answer)
        text = "".join(pieces)
        # raw insertion offsets of the non-empty thoughts in the concatenated answer text
        offsets, thoughts, pos = [], [], 0
        for piece, thought in zip(pieces, raw_thoughts):
            pos += len(piece)
            if thought.strip():
                offsets.append(pos)
                thoughts.append(thought.strip())
        if text == chunk:
            cuts = offsets
        else:
            norm_c, src_c = normalize(chunk, mode)
            norm_a, src_a = normalize(text, mode)
            if norm_a != norm_c:
                if norm_c.startswith(norm_a):
                    raise _Reject("truncated", f"answer stops at char {len(norm_a)} of {len(norm_c)}")
                raise _Reject("text_altered", _mismatch(norm_c, norm_a))
            cuts = []
            for r in offsets:
                p = bisect_left(src_a, r)  # normalised characters produced before the thought
                cuts.append(src_c[p] if p < len(src_c) else len(chunk))
        if len(thoughts) < min_thoughts:
            raise _Reject("too_few_thoughts", f"{len(thoughts)} < {min_thoughts}")
        if len(thoughts) > max_thoughts:
            raise _Reject("too_many_thoughts", f"{len(thoughts)} > {max_thoughts}")
    except _Reject as r:
        return Outcome("rejected", r.reason, [], r.detail)
    return Outcome("accepted", None, build_segments(chunk, cuts, thoughts))


def build_segments(chunk: str, cuts: list[int], thoughts: list[str]) -> list[dict[str, Any]]:
    """Segments cut from ``chunk`` at ``cuts`` (non-decreasing), thought ``k`` after cut ``k``."""
    segments: list[dict[str, Any]] = []
    prev = 0
    for cut, thought in zip(cuts, thoughts):
        segments.append({"text": chunk[prev:cut], "thought": thought})
        prev = cut
    if prev < len(chunk) or not segments:
        segments.append({"text": chunk[prev:], "thought": None})
    return segments


def check_record(record: dict[str, Any], *, min_thoughts: int = 1, max_thoughts: int = 16) -> Outcome:
    """Validate a record produced directly (e.g. by ``midtrain.synth.render.annotate``) against its own ``chunk``."""
    segs = record.get("segments") or []
    try:
        if not isinstance(segs, list) or not all(isinstance(s, dict) and isinstance(s.get("text"), str) for s in segs):
            raise _Reject("empty", "no segments")
        if "".join(s["text"] for s in segs) != record.get("chunk"):
            raise _Reject("text_altered", "segments do not concatenate to the chunk")
        if any(has_tags(s["text"]) or has_tags(s.get("thought") or "") for s in segs):
            raise _Reject("tags_unbalanced", "a segment contains a literal tag")
        k = sum(1 for s in segs if s.get("thought"))
        if k < min_thoughts:
            raise _Reject("too_few_thoughts", f"{k} < {min_thoughts}")
        if k > max_thoughts:
            raise _Reject("too_many_thoughts", f"{k} > {max_thoughts}")
    except _Reject as r:
        return Outcome("rejected", r.reason, [], r.detail)
    return Outcome("accepted", None, [{"text": s["text"], "thought": s.get("thought") or None} for s in segs])


__all__ = [
    "THINK_OPEN",
    "THINK_CLOSE",
    "REASONS",
    "FAILED",
    "Outcome",
    "render_augmented",
    "strip_thoughts",
    "has_tags",
    "opens_thought",
    "after_thinking",
    "thinking_part",
    "parse_answer",
    "normalize",
    "validate_answer",
    "build_segments",
    "check_record",
]
