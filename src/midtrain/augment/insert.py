"""Insert mode of ``midtrain augment``: the annotator writes only the thoughts; the text is kept by construction.

In rewrite mode (the default) the annotator re-emits the whole chunk with thoughts inside it, and any change to the
text rejects the chunk (``text_altered``); small annotators paraphrase, so they rarely pass. Insert mode asks less:

1. **Units.** The chunk is cut into sentences (:func:`midtrain.augment.chunking.sentences`, lossless); a sentence
   longer than ``max_unit_tokens`` tokens is cut every ``max_unit_tokens`` tokens, each cut moved to a word start
   (:func:`split_long`), so that a thought never splits a word when it can be helped.
2. **Insertion points** are unit boundaries, the end of the chunk included (DESIGN §1.1: c̃ = [x_1, τ_1, …, x_K,
   τ_K]). ``points`` of them are drawn uniformly among the sets whose members are at least ``min_spacing`` units
   apart (:func:`choose_points`), from a generator seeded by ``seed`` and the chunk id: the same run draws the same
   points on every machine and on resume.
3. **Thoughts.** For each point the annotator gets the insert template (shipped ``prompts/insert.txt``, placeholder
   ``{text}``) filled with the text so far, and answers with one thought. The requests of all points of all
   chunks of a batch go to the backend in one call.
4. **Validation** of each thought (:func:`check_thought`): one pair of enclosing ``<think>``/``</think>`` tags is
   removed; then it must be non-empty (``empty``), hold no tag (``thought_has_tags``), have between ``min_words``
   and ``max_words`` words (``thought_too_short`` / ``thought_too_long``) and not copy the text
   (``thought_copies_text``: the thought is a stretch of the chunk, or it contains the sentence that follows), nor
   loop (``thought_repetitive``: under half of its word 3-grams distinct, the failure mode of small annotators).
   Three quality measures (:mod:`midtrain.augment.quality`) reject, each above its threshold: a thought cut off at
   the token budget (``thought_cut_off``), one that restates the text just read (``thought_restates_text``) and
   low-information filler (``thought_filler``). A rejected thought is asked again ``retries`` times at
   ``retry_temperature``; after that it is dropped. The outcome of every answer checked (``kept`` or its reason)
   is listed in the record's ``thought_checks``; the manifest counts them per reason.
5. **Record.** The segments are cut from the original chunk at the points that kept a thought
   (:func:`midtrain.thoughts.build_segments`), so ``Σ segment.text == chunk`` always. The chunk is ``accepted``
   when the number of kept thoughts lies in ``[min_thoughts, max_thoughts]``; otherwise ``rejected`` with the most
   frequent reason of its dropped thoughts (``too_few_thoughts`` when none was dropped, e.g. a one-sentence chunk),
   and ``failed`` (``backend_error``) when a request failed for good. Same record schema as rewrite mode.
"""

from __future__ import annotations

import functools
import random
import re
from bisect import bisect_right
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from midtrain.augment.chunking import Chunk, chunk_record, sentences
from midtrain.augment.config import AugmentConfig, InsertConfig
from midtrain.augment.quality import count_tokens, informative_ratio, is_cut_off, restatement_overlap
from midtrain.llm.backends import TextBackend
from midtrain.llm.base import BackendError
from midtrain.llm.prompts import fill_template
from midtrain.thoughts import FAILED, THINK_CLOSE, THINK_OPEN, build_segments, has_tags, normalize

COPY_MIN_CHARS = 16  # shorter overlaps ("the river") are ordinary word reuse, not copying
_WS = re.compile(r"\s+")


# -- units and points -------------------------------------------------------------------------------------------
def _token_cuts(text: str, tokenizer: Any, n: int) -> list[int] | None:
    """Character offsets of every ``n``-th token of ``text``; None if the tokenizer gives no offsets."""
    try:
        offsets = tokenizer(text, add_special_tokens=False, return_offsets_mapping=True, verbose=False)["offset_mapping"]
    except (NotImplementedError, TypeError, KeyError, ValueError):
        return None
    return [offsets[i][0] for i in range(n, len(offsets), n)] if offsets else None


def _word_cuts(text: str, n: int) -> list[int]:
    """Character offsets of every ``n``-th word (the fallback without a fast tokenizer)."""
    starts = [0] + [m.end() for m in _WS.finditer(text) if 0 < m.end() < len(text)]
    return starts[n::n]


def split_long(text: str, cuts: Sequence[int]) -> list[str]:
    """``text`` cut at ``cuts`` (lossless), each moved back to the last word start at or before it (pieces stay
    within budget), else forward to the next one, else kept (a single over-long word)."""
    starts = [m.end() for m in _WS.finditer(text) if m.end() < len(text)]
    pieces, prev = [], 0
    for c in cuts:
        k = bisect_right(starts, c)
        if k and starts[k - 1] > prev:
            c = starts[k - 1]
        elif k < len(starts):
            c = starts[k]
        if prev < c < len(text):
            pieces.append(text[prev:c])
            prev = c
    pieces.append(text[prev:])
    return pieces


def units_of(text: str, max_unit_tokens: int, tokenizer: Any = None) -> list[str]:
    """Sentences of ``text``, long ones cut every ``max_unit_tokens`` tokens (words without a tokenizer);
    ``"".join(units) == text``."""
    out: list[str] = []
    for sent in sentences(text):
        cuts = _token_cuts(sent, tokenizer, max_unit_tokens) if tokenizer is not None else None
        if cuts is None:
            cuts = _word_cuts(sent, max_unit_tokens)
        out += split_long(sent, cuts) if cuts else [sent]
    return out


def choose_points(candidates: int, k: int, min_spacing: int, rng: random.Random) -> list[int]:
    """``min(k, feasible)`` sorted values in ``1..candidates``, pairwise ≥ ``min_spacing`` apart, uniform over such sets.

    Drawing from the compressed range ``1..candidates - (k-1)(s-1)`` and adding ``i·(s-1)`` to the i-th smallest
    is a bijection onto the spaced sets, so every admissible set is equally likely.
    """
    if candidates < 1:
        return []
    s = max(1, min_spacing)
    k = min(k, 1 + (candidates - 1) // s)
    picked = sorted(rng.sample(range(1, candidates - (k - 1) * (s - 1) + 1), k))
    return [p + i * (s - 1) for i, p in enumerate(picked)]


@dataclass
class Plan:
    """A chunk's insertion points: ``cuts[j]`` is the character offset of point ``j`` in the chunk."""

    chunk: Chunk
    cuts: list[int]
    following: list[str]  # the unit after each point ("" at the end of the chunk)


def plan_chunk(chunk: Chunk, cfg: InsertConfig, tokenizer: Any = None) -> Plan:
    """Units and insertion points of one chunk (deterministic from ``cfg.seed`` and the chunk id)."""
    units = units_of(chunk.text, cfg.max_unit_tokens, tokenizer)
    ends, pos = [], 0
    for u in units:
        pos += len(u)
        ends.append(pos)  # ends[j-1]: offset of the boundary after unit j
    rng = random.Random(f"{cfg.seed}:{chunk.id}")  # str seeds hash with SHA-512: stable across processes
    points = choose_points(len(units), cfg.points, cfg.min_spacing, rng)
    return Plan(chunk, [ends[p - 1] for p in points], [units[p] if p < len(units) else "" for p in points])


@functools.lru_cache(maxsize=4)
def cached_tokenizer(path: str) -> Any:
    """The target tokenizer (the one the chunks were counted with), loaded once per process; None without a path."""
    if not path:
        return None
    from midtrain.models.tokenizer import load_tokenizer

    return load_tokenizer(path)


# -- thoughts ---------------------------------------------------------------------------------------------------
def _norm(text: str) -> str:
    return normalize(text, "nfkc")[0].casefold()


def copies_text(thought: str, chunk: str, following: str) -> bool:
    """Whether ``thought`` is a stretch of ``chunk`` or contains the unit that ``following`` starts with
    (normalised; overlaps under :data:`COPY_MIN_CHARS` characters are ignored)."""
    t = _norm(thought)
    if len(t) >= COPY_MIN_CHARS and t in _norm(chunk):
        return True
    nxt = _norm(following)
    return len(nxt) >= COPY_MIN_CHARS and nxt in t


def check_thought(
    answer: str, chunk: str, following: str, cfg: InsertConfig, *, preceding: str = "", tokenizer: Any = None
) -> tuple[str, str | None, str]:
    """``(thought, reason, detail)``: the cleaned thought, and None or the rejection reason (see module docstring).

    ``preceding`` is the text read before the thought (the restatement check compares with its end); ``tokenizer``
    counts the thought's tokens for the cut-off check (estimated from its length without one).
    """
    t = answer.strip()
    if t.startswith(THINK_OPEN) and t.endswith(THINK_CLOSE) and t.count(THINK_OPEN) == 1 and t.count(THINK_CLOSE) == 1:
        t = t[len(THINK_OPEN) : -len(THINK_CLOSE)].strip()  # the annotator wrapped its thought: unwrap it
    if not t:
        return t, "empty", ""
    if has_tags(t):
        return t, "thought_has_tags", "the thought contains <think> or </think>"
    words = len(t.split())
    if words < cfg.min_words:
        return t, "thought_too_short", f"{words} words < {cfg.min_words}"
    if words > cfg.max_words:
        return t, "thought_too_long", f"{words} words > {cfg.max_words}"
    if copies_text(t, chunk, following):
        return t, "thought_copies_text", f"the thought repeats the text: {t[:80]!r}"
    tokens = count_tokens(t, tokenizer)
    if is_cut_off(t, tokens, cfg.max_new_tokens, cfg.cut_off_fraction):
        return t, "thought_cut_off", f"no sentence end after {tokens} of {cfg.max_new_tokens} tokens: {t[-80:]!r}"
    overlap = restatement_overlap(t, preceding, cfg.restate_window_words)
    if overlap > cfg.max_restate_overlap:
        return t, "thought_restates_text", f"{overlap:.0%} of its word pairs are in the text just read: {t[:80]!r}"
    if repetitive(t):
        return t, "thought_repetitive", f"the thought loops: {t[:80]!r}"
    info = informative_ratio(t)
    if info < cfg.min_informative_ratio:
        return t, "thought_filler", f"informative words {info:.0%} < {cfg.min_informative_ratio:.0%}: {t[:80]!r}"
    return t, None, ""


def repetitive(text: str, n: int = 3, min_words: int = 12, min_distinct: float = 0.5) -> bool:
    """Whether ``text`` loops: under ``min_distinct`` of its word ``n``-grams are distinct (a small annotator's
    "I am ready to continue. I am ready to continue. …"); texts under ``min_words`` words are never judged."""
    words = text.lower().split()
    if len(words) < min_words:
        return False
    grams = [tuple(words[i : i + n]) for i in range(len(words) - n + 1)]
    return len(set(grams)) / len(grams) < min_distinct


@dataclass
class _Chunk:
    """Progress of one chunk through the attempts."""

    plan: Plan
    thoughts: dict[int, str] = field(default_factory=dict)
    dropped: dict[int, tuple[str, str, str]] = field(default_factory=dict)  # point → (reason, detail, answer)
    checks: list[str] = field(default_factory=list)  # outcome of every answer checked: "kept" or its reason
    error: BackendError | None = None  # the request failed for good (kind and hint go into the record)
    attempts: int = 0


def _finish(st: _Chunk, annotator: str, cfg: AugmentConfig) -> dict[str, Any]:
    c = st.plan.chunk
    if st.error is not None:
        hint = {"hint": st.error.hint} if st.error.hint else {}
        return chunk_record(c, annotator, "failed", st.attempts, reason=FAILED, detail=str(st.error), error=st.error.kind, **hint)
    keep = sorted(st.thoughts)
    if cfg.min_thoughts <= len(keep) <= cfg.max_thoughts:
        segments = build_segments(c.text, [st.plan.cuts[j] for j in keep], [st.thoughts[j] for j in keep])
        return chunk_record(c, annotator, "accepted", st.attempts, segments=segments, thought_checks=st.checks)
    by_reason = Counter(r for r, _, _ in st.dropped.values())
    if len(keep) > cfg.max_thoughts:
        reason, detail = "too_many_thoughts", f"{len(keep)} > {cfg.max_thoughts}"
    elif by_reason:
        reason = by_reason.most_common(1)[0][0]
        first = next(d for d in st.dropped.values() if d[0] == reason)
        counts = ", ".join(f"{r} ×{k}" for r, k in by_reason.most_common())
        detail = f"kept {len(keep)} < {cfg.min_thoughts} thoughts; dropped {counts}; {first[1]}".rstrip("; ")
    else:
        reason, detail = "too_few_thoughts", f"{len(keep)} insertion points < {cfg.min_thoughts}"
    extra = {"answer": next(iter(st.dropped.values()))[2]} if cfg.keep_answers and st.dropped else {}
    return chunk_record(c, annotator, "rejected", st.attempts, reason=reason, detail=detail, thought_checks=st.checks, **extra)


async def insert_batch(
    chunks: list[Chunk], backend: TextBackend, template: str, cfg: AugmentConfig, tokenizer: Any = None
) -> list[dict[str, Any]]:
    """Insert mode for one batch (see the module docstring); one record per chunk, in order."""
    ins = cfg.insert
    tokenizer = tokenizer if tokenizer is not None else cached_tokenizer(cfg.tokenizer)
    done: dict[str, dict[str, Any]] = {}
    states: list[_Chunk] = []
    for c in chunks:
        if has_tags(c.text):
            done[c.id] = chunk_record(
                c, backend.name, "rejected", 0, reason="source_has_tags", detail="the original text already contains <think> or </think>"
            )
        else:
            states.append(_Chunk(plan_chunk(c, ins, tokenizer)))
    pending = [(st, j) for st in states for j in range(len(st.plan.cuts))]
    for attempt in range(cfg.retries + 1):
        if not pending:
            break
        temperature = cfg.temperature if attempt == 0 else cfg.retry_temperature
        prompts = [fill_template(template, text=st.plan.chunk.text[: st.plan.cuts[j]]) for st, j in pending]
        answers: list[Any] = await backend.agenerate(prompts, max_new_tokens=ins.max_new_tokens, temperature=temperature, errors="return")
        retry = []
        for (st, j), ans in zip(pending, answers):
            st.attempts = attempt + 1
            if isinstance(ans, BackendError):
                st.error = ans
                continue
            chunk_text = st.plan.chunk.text
            thought, reason, detail = check_thought(
                ans[0], chunk_text, st.plan.following[j], ins, preceding=chunk_text[: st.plan.cuts[j]], tokenizer=tokenizer
            )
            st.checks.append(reason or "kept")
            if reason is None:
                st.thoughts[j] = thought
                st.dropped.pop(j, None)
            else:
                st.dropped[j] = (reason, detail, ans[0])
                retry.append((st, j))
        pending = [(st, j) for st, j in retry if st.error is None] if attempt < cfg.retries else []
    for st in states:
        done[st.plan.chunk.id] = _finish(st, backend.name, cfg)
    return [done[c.id] for c in chunks]


__all__ = [
    "InsertConfig",
    "Plan",
    "check_thought",
    "choose_points",
    "copies_text",
    "insert_batch",
    "plan_chunk",
    "split_long",
    "units_of",
]
