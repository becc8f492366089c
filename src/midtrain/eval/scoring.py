"""Answer extraction and scoring for benchmark completions: math answers through math-verify, option letters.

One scorer serves ``midtrain eval`` (own generations), ``midtrain eval score`` (completions produced elsewhere)
and RL rewards, so they cannot drift. Algorithm:

1. **Answer region.** Thinking is never scored: the text after the last ``</think>`` is kept
   (:func:`midtrain.thoughts.after_thinking`); a completion that opened a thought (``<think>`` in it, or
   ``thinking=True`` because the prompt ended inside ``<think>``) and never closed it, or reopened one after its
   last ``</think>``, has no answer. Inside the region an explicit answer wins: the last ``<answer>…</answer>`` span, else
   the text after the last GSM8K-style ``####``.
2. **Math** (:func:`score_math`): math-verify ``parse`` with ``\\boxed{}`` first (priority 0), then "final answer
   is"/"answer:" anchors, then the last LaTeX or plain expression (math-verify picks the right-most match of
   the best priority). An explicit answer region (``<answer>``, ``####``) is read as one LaTeX expression first.
   Boxed contents are tidied first (a trailing full stop dropped; AoPS-style ``\\textbf{(073) }`` → ``073``);
   a boxed equation whose left side does not parse (``m_{\\max}=n^2-n-1``) is read by its right side.
   The gold answer is parsed as ``\\boxed{gold}`` (a trailing full stop removed); a gold equation that
   math-verify reads as a tautology (``N=n``: it folds the case of symbols) or cannot parse is replaced by its
   right side. Equivalence is math-verify ``verify(gold, pred)``: fractions vs decimals, ``\\frac`` vs ``/``,
   intervals, sets in any order, ``\\text{}``, units, thousands separators, percentages. A dataset's numeric
   tolerance (OlympiadBench ``error``) becomes math-verify's ``float_rounding``.
3. **Multiple choice** (:func:`score_choice`): the letter in the last ``\\boxed{}`` if there is one, else
   math-verify's string extraction over the option letters ("final answer is X", "Answer: X", a line starting
   with "X.", the last free-standing letter) after ``(B)``, ``**B**`` and ``\\text{B}`` are reduced to ``B``.
   Known limitation (math-verify's): a line that starts with the article "A " counts as choosing A when no
   anchored answer follows; prompts ask for ``\\boxed{LETTER}``, which always wins.

A completion from which nothing can be extracted scores 0 and has ``answer=None`` (counted as ``no_answer``).
math-verify bounds each parse/verify with a 5 s ``SIGALRM`` timeout; off the main thread the timeout is off.
"""

from __future__ import annotations

import math
import re
import threading
from collections.abc import Sequence
from dataclasses import dataclass
from functools import lru_cache
from typing import Any, Literal

from math_verify import (
    ExprExtractionConfig,
    LatexExtractionConfig,
    StringExtractionConfig,
    parse,
    verify,
)

from midtrain.thoughts import after_thinking

Kind = Literal["math", "choice"]
LETTERS = ("A", "B", "C", "D")

_MATH = (LatexExtractionConfig(boxed_match_priority=0), ExprExtractionConfig())
_BOXED = (LatexExtractionConfig(boxed_match_priority=0),)
_ANSWER_TAG = re.compile(r"<answer>(.*?)(?:</answer>|$)", re.DOTALL)


@dataclass(frozen=True)
class Score:
    correct: bool
    answer: str | None  # the extracted answer as written (None: nothing extractable)
    key: str | None  # canonical form for majority voting (sympy string or option letter)


def _timeout() -> int | None:
    return 5 if threading.current_thread() is threading.main_thread() else None


def answer_region(completion: str, *, thinking: bool = False) -> tuple[str, bool]:
    """(the part of ``completion`` that may hold the answer, whether it is an explicit answer span)."""
    text = after_thinking(completion, opened=thinking)
    if text is None:
        return "", False  # still thinking when generation stopped
    spans = _ANSWER_TAG.findall(text)
    if spans and spans[-1].strip():
        return spans[-1].strip(), True
    if "####" in text:
        return text.rsplit("####", 1)[1].strip(), True
    return text, False


@lru_cache(maxsize=65536)
def parse_gold(answer: str) -> tuple[Any, ...]:
    """math-verify parse of a gold answer string (LaTeX without delimiters, e.g. ``\\frac{1}{2}``)."""
    s = answer.strip().strip("$").strip()
    s = re.sub(r"[.。]\s*$", "", s)
    got = _parse_boxed(s)
    if not got:
        got = parse(s, extraction_config=_MATH, parsing_timeout=_timeout())
    if (not got or isinstance(got[0], str) or _degenerate(got[0])) and "=" in s:
        rhs = _parse_boxed(s.rsplit("=", 1)[1])  # "m_{\\max}=n^2-n-1", "N=n" (N and n are one symbol)
        got = rhs or got
    return tuple(got)


_PLAIN_NUMBER = re.compile(r"\s*-?\d+(?:\.\d+)?\s*")
_EXPR = (ExprExtractionConfig(),)


def _parse_boxed(s: str) -> list[Any]:
    """math-verify parse of ``s`` as one boxed expression; plain numbers skip the (slow) LaTeX grammar."""
    if _PLAIN_NUMBER.fullmatch(s):
        got = parse(s, extraction_config=_EXPR, parsing_timeout=_timeout())
    else:
        got = parse("\\boxed{" + s + "}", extraction_config=_BOXED, parsing_timeout=_timeout())
    return got if got and not isinstance(got[0], str) else []


def _degenerate(expr: Any) -> bool:
    """An equation that math-verify reads as a tautology (``N=n``: symbols are case-folded)."""
    return getattr(expr, "is_Relational", False) and getattr(expr, "lhs", None) == getattr(expr, "rhs", None)


def boxed_contents(text: str) -> list[tuple[int, int]]:
    """(start, end) of the contents of every ``\\boxed{…}`` with balanced braces, in order."""
    out = []
    for m in re.finditer(r"\\boxed\s*\{", text):
        depth, i = 1, m.end()
        while i < len(text) and depth:
            depth += {"{": 1, "}": -1}.get(text[i], 0) if text[i - 1] != "\\" else 0
            i += 1
        if depth == 0:
            out.append((m.end(), i - 1))
    return out


_WRAPPED_NUMBER = re.compile(r"^\s*\\text(?:bf)?\{\s*\(?\s*(-?\d+)\s*\)?\s*\}\s*$")


def clean_boxed(text: str) -> str:
    """Boxed contents as graders expect them: a trailing full stop dropped, ``\\textbf{(073) }`` → ``073``."""
    spans = boxed_contents(text)
    for start, end in reversed(spans):
        inner = text[start:end]
        fixed = _WRAPPED_NUMBER.sub(r"\1", inner)
        fixed = re.sub(r"\s*\.\s*$", "", fixed)
        if fixed != inner:
            text = text[:start] + fixed + text[end:]
    return text


def extract_math(completion: str, *, thinking: bool = False) -> list[Any]:
    """math-verify parse of a completion's answer: ``[sympy object, answer string]`` or ``[]``."""
    region, explicit = answer_region(completion, thinking=thinking)
    if not region.strip():
        return []
    if explicit and "\\boxed" not in region:
        got = _parse_boxed(region.strip().strip("$").rstrip("."))
        if got:
            return got
    region = clean_boxed(region)
    got = parse(region, extraction_config=_MATH, parsing_timeout=_timeout())
    if got and not isinstance(got[0], str):
        return got
    spans = boxed_contents(region)
    if spans and "=" in region[spans[-1][0] : spans[-1][1]]:  # an unparseable left side: "m_{\\max}=n^2-n-1"
        return _parse_boxed(region[spans[-1][0] : spans[-1][1]].rsplit("=", 1)[1])
    return []  # nothing, or only math-verify's unparsed string fallback: no answer


def tolerance_rounding(error: Any) -> int:
    """math-verify ``float_rounding`` (decimal places) for a dataset tolerance such as ``"1e-1"``; default 6."""
    try:
        tol = float(str(error).split(",")[0])
    except (TypeError, ValueError):
        return 6
    if not tol > 0 or math.isinf(tol):
        return 6
    return max(0, min(6, round(-math.log10(tol))))


def score_math(completion: str, gold: str, *, thinking: bool = False, float_rounding: int = 6) -> Score:
    """Correctness of a completion against a gold math answer (see the module docstring)."""
    pred = extract_math(completion, thinking=thinking)
    if not pred:
        return Score(False, None, None)
    answer = str(pred[1]) if len(pred) > 1 else str(pred[0])
    key = str(pred[0])
    golds = parse_gold(gold)
    if not golds:
        return Score(False, answer, key)
    ok = verify(list(golds), pred, float_rounding=float_rounding, timeout_seconds=_timeout())
    return Score(bool(ok), answer, key)


def _reduce_letters(text: str, letters: Sequence[str]) -> str:
    alt = "|".join(map(re.escape, letters))
    text = re.sub(rf"\\(?:text|textbf|mathrm|mathbf)\{{\s*\(?({alt})\)?\s*\}}", r" \1 ", text)
    text = re.sub(rf"\*\*\(?({alt})\)?\*\*", r" \1 ", text)
    text = re.sub(rf"\(({alt})\)", r" \1 ", text)
    text = re.sub(rf"\$\s*({alt})\s*\$", r" \1 ", text)
    return text


def extract_choice(completion: str, *, letters: Sequence[str] = LETTERS, thinking: bool = False) -> str | None:
    """The option letter a completion chose, or None."""
    region, _ = answer_region(completion, thinking=thinking)
    if not region.strip():
        return None
    alt = "|".join(map(re.escape, letters))
    boxed = re.findall(r"\\boxed\{([^{}]*(?:\{[^{}]*\}[^{}]*)*)\}", region)
    if boxed:
        m = re.fullmatch(rf"\s*(?:\\(?:text|textbf|mathrm)\{{)?\s*\(?({alt})\)?\s*\}}?\s*(?:[.:)].*)?", boxed[-1], re.DOTALL)
        if m:
            return m.group(1)
    config = StringExtractionConfig(strings=tuple(letters), lowercase=False)
    got = parse(_reduce_letters(region, letters), extraction_config=[config], fallback_mode="no_fallback", parsing_timeout=_timeout())
    return str(got[0]) if got else None


def score_choice(completion: str, gold: str, *, letters: Sequence[str] = LETTERS, thinking: bool = False) -> Score:
    letter = extract_choice(completion, letters=letters, thinking=thinking)
    return Score(letter is not None and letter == gold.strip().upper(), letter, letter)


def score(completion: str, record: dict[str, Any], kind: Kind = "math", *, thinking: bool = False) -> Score:
    """Score one completion against a benchmark record (``answer``; MC records may carry ``choices``)."""
    if kind == "choice":
        n = len(record.get("choices") or LETTERS)
        return score_choice(completion, str(record["answer"]), letters=tuple("ABCDEFGHIJ"[: max(n, 2)]), thinking=thinking)
    rounding = tolerance_rounding(record["error"]) if record.get("error") else 6
    return score_math(completion, str(record["answer"]), thinking=thinking, float_rounding=rounding)


def exit_with_parent(parent_pid: int, poll_seconds: float = 1.0) -> None:
    """Worker initializer: a daemon thread ends this process once its parent is gone (e.g. after ``kill -9``)."""
    import os
    import time

    def watch() -> None:
        while os.getppid() == parent_pid:
            time.sleep(poll_seconds)
        os._exit(0)

    threading.Thread(target=watch, daemon=True, name="exit-with-parent").start()


def score_batch(kind: Kind, items: Sequence[tuple[str, dict[str, Any], bool]]) -> list[tuple[bool, str | None, str | None]]:
    """Score (completion, record, thinking) triples; plain tuples so that a worker process can return them."""
    out = []
    for completion, record, thinking in items:
        s = score(completion, record, kind, thinking=thinking)
        out.append((s.correct, s.answer, s.key))
    return out


__all__ = [
    "score_batch",
    "exit_with_parent",
    "Score",
    "answer_region",
    "parse_gold",
    "extract_math",
    "score_math",
    "extract_choice",
    "score_choice",
    "score",
    "tolerance_rounding",
    "LETTERS",
]
