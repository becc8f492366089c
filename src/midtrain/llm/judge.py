"""Judges: the binary reward of RL mid-training (DESIGN §1.1 step 3) and a shared verifier signature.

Every judge maps ``(candidates, references)`` to one :class:`Verdict` per pair (``score`` 1.0 or 0.0, ``label``
``"YES"``/``"NO"`` or None, ``reason``), synchronously (``judge``) or as a coroutine (``ajudge``).

- :class:`LLMJudge`: any :class:`~midtrain.llm.backends.TextBackend` answers the shipped prompt
  (``midtrain/prompts/judge.txt``, user-overridable, placeholders ``{candidate}`` and ``{reference}``). Both
  texts are **escaped** (``& < >`` → ``&amp; &lt; &gt;``) and placed inside ``<candidate>``/``<reference>``
  tags, so no text inside can close a tag or pose as instructions outside it; the prompt says so. The verdict is
  the ``VERDICT: YES|NO`` line(s) (all agreeing), else a leading YES/NO word without the other one, read in the
  answer **after its thoughts** (:func:`midtrain.thoughts.after_thinking`: a thinking judge such as Qwen3 writes
  ``<think>…</think>`` first; an answer still inside a thought at the token budget has no verdict); anything
  else (no verdict, conflicting verdicts) scores 0 and is counted as ``unparseable``. A backend failure is not a
  verdict: it scores 0 with ``error`` set to the failure kind (:attr:`Verdict.failed`), is counted as ``errors``
  (by kind in ``failures``) and is never cached, so a re-run asks again. Verdicts are cached by SHA-256 of (judge
  name, template, candidate, reference), in memory and optionally in an append-only JSONL file.
  The default verdict budget, 512 tokens, fits a thinking judge: a Qwen3 judge thinks for some hundred tokens
  before a one-line verdict, and a judge that does not think stops after the verdict, so the budget costs nothing.
  Concurrency is bounded by the backend (``max_concurrency`` HTTP requests in flight), so ``ajudge`` can serve
  TRL's async reward functions directly.
- Rule judges for tests and verifiable answers: :class:`ExactJudge`, :class:`NumberJudge`, :class:`TokenF1Judge`.
- :class:`JudgeReward` turns a judge into the plain reward callable ``(completions, references) -> rewards``:
  only the text after the last ``</think>`` is judged; a completion without a closed think block, or with an
  empty continuation, scores 0 with that reason (without asking the judge).

CLI: ``midtrain judge pairs.jsonl --out DIR [--judge llm --backend.backend openai ...]`` writes
``DIR/verdicts.jsonl`` and the mean score. Verdicts are cached in ``DIR/verdict_cache.jsonl`` (or ``--cache``);
when pairs failed (server down, HTTP errors) the run exits non-zero with the counts by kind, is not marked
complete, and the same command re-asks only the failed pairs.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import re
from collections import Counter
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from fractions import Fraction
from pathlib import Path
from typing import Literal, Protocol, runtime_checkable

from midtrain.config import Config, param, redact_text
from midtrain.console import log
from midtrain.data.corpus import read_all
from midtrain.data.jsonl import append_jsonl, write_jsonl
from midtrain.data.records import where
from midtrain.errors import ConfigError, DataError, MidtrainError
from midtrain.llm.backends import TextBackend, make_backend
from midtrain.llm.base import BackendError, failure_message, run_sync
from midtrain.llm.config import BackendConfig
from midtrain.llm.prompts import JUDGE_PLACEHOLDERS, check_template, escape, fill_template, load_prompt, unescape
from midtrain.metrics import token_f1
from midtrain.runs import Result, Run, open_run
from midtrain.shards import read_tolerant
from midtrain.thoughts import after_thinking, has_tags


@dataclass(frozen=True)
class Verdict:
    score: float
    label: str | None
    reason: str
    error: str | None = None  # the failure kind when the judge could not answer (no verdict at all)

    @property
    def failed(self) -> bool:
        return self.error is not None


NOT_JUDGED = frozenset({"no closed <think> block", "empty continuation"})  # reasons of completions never sent
DEFAULT_VERDICT_TOKENS = 512  # fits a thinking judge (see the module docstring)
VERDICT_CACHE = "verdict_cache.jsonl"


@runtime_checkable
class Judge(Protocol):
    name: str

    def judge(self, candidates: Sequence[str], references: Sequence[str]) -> list[Verdict]: ...

    async def ajudge(self, candidates: Sequence[str], references: Sequence[str]) -> list[Verdict]: ...


def _check_lengths(candidates: Sequence[str], references: Sequence[str]) -> None:
    if len(candidates) != len(references):
        raise ValueError(f"{len(candidates)} candidates but {len(references)} references")


# -- prompt, escaping, parsing ----------------------------------------------------------------------------------
def render_judge_prompt(template: str, candidate: str, reference: str) -> str:
    return fill_template(template, candidate=escape(candidate), reference=escape(reference))


_VERDICT = re.compile(r"verdict\s*[:=]?\s*\**\s*(yes|no)\b", re.I)
_LEADING = re.compile(r"^\W*(yes|no)\b", re.I)
_WORD = re.compile(r"\b(yes|no)\b", re.I)
_CANDIDATE = re.compile(r"<candidate>\n?(.*?)\n?</candidate>", re.S)
_REFERENCE = re.compile(r"<reference>\n?(.*?)\n?</reference>", re.S)


def rule_verdict(prompt: str) -> str:
    """The programmatic backend's answer to a judge prompt (``backend: programmatic``, tests): the verdict line
    ``VERDICT: YES`` iff the token F1 of the candidate and the reference, unescaped from their tags, is at least 0.5;
    no verdict (an unparseable answer) when the prompt has no ``<candidate>``/``<reference>`` pair."""
    m_c = _CANDIDATE.search(prompt)
    m_r = _REFERENCE.search(prompt)
    if not (m_c and m_r):
        return ""
    return "VERDICT: YES" if token_f1(unescape(m_c.group(1)), unescape(m_r.group(1))) >= 0.5 else "VERDICT: NO"


def parse_verdict(answer: str) -> str | None:
    """``"YES"``, ``"NO"`` or None (unparseable).

    The ``VERDICT: X`` lines decide if there are any (all must agree); otherwise the answer must start with YES or
    NO and not contain the other word. Conflicting or missing verdicts are None, never a guess.
    """
    found = {f.upper() for f in _VERDICT.findall(answer)}
    if found:
        return found.pop() if len(found) == 1 else None
    m = _LEADING.match(answer.strip())
    if not m:
        return None
    words = {w.upper() for w in _WORD.findall(answer)}
    return m.group(1).upper() if len(words) == 1 else None


# -- cache ------------------------------------------------------------------------------------------------------
class VerdictCache:
    """Verdicts by key, in memory and (with ``path``) in an append-only JSONL file that survives kill -9."""

    def __init__(self, path: str | Path | None = None) -> None:
        self.path = Path(path) if path else None
        self._mem: dict[str, Verdict] = {}
        if self.path is not None:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            for rec in read_tolerant(self.path, repair=True):
                self._mem[rec["key"]] = Verdict(rec["score"], rec["label"], rec["reason"])

    @staticmethod
    def key(judge: str, template: str, candidate: str, reference: str) -> str:
        return hashlib.sha256(json.dumps([judge, template, candidate, reference]).encode()).hexdigest()

    def get(self, key: str) -> Verdict | None:
        return self._mem.get(key)

    def put_many(self, items: dict[str, Verdict]) -> None:
        self._mem.update(items)
        if self.path is not None and items:
            append_jsonl(self.path, [{"key": k, **asdict(v)} for k, v in items.items()])

    def __len__(self) -> int:
        return len(self._mem)


# -- LLM judge --------------------------------------------------------------------------------------------------
class LLMJudge:
    """A binary YES/NO judge answered by any text backend; see the module docstring."""

    def __init__(
        self,
        backend: TextBackend,
        prompt_template: str | None = None,
        cache: VerdictCache | None = None,
        *,
        max_new_tokens: int = DEFAULT_VERDICT_TOKENS,
        name: str | None = None,
    ) -> None:
        self.backend = backend
        self.template = prompt_template if prompt_template is not None else load_prompt("judge")
        check_template(self.template, "prompt", required=JUDGE_PLACEHOLDERS)
        self.cache = cache if cache is not None else VerdictCache()
        self.max_new_tokens = max_new_tokens
        self.name = name or f"llm:{backend.name}"
        self.stats: Counter = Counter()
        self.failures: Counter = Counter()  # failure kind → count (all calls)
        self.hints: dict[str, None] = {}  # what to fix, from the backend's errors (ordered, unique)

    def prompt(self, candidate: str, reference: str) -> str:
        return render_judge_prompt(self.template, candidate, reference)

    async def ajudge(self, candidates: Sequence[str], references: Sequence[str]) -> list[Verdict]:
        _check_lengths(candidates, references)
        keys = [self.cache.key(self.name, self.template, c, r) for c, r in zip(candidates, references)]
        todo: dict[str, tuple[str, str]] = {}
        for k, c, r in zip(keys, candidates, references):
            if self.cache.get(k) is None:
                todo.setdefault(k, (c, r))
        self.stats["verdicts"] += len(keys)
        self.stats["cache_hits"] += len(keys) - len(todo)
        fresh: dict[str, Verdict] = {}
        errors: dict[str, Verdict] = {}
        if todo:
            prompts = [self.prompt(c, r) for c, r in todo.values()]
            answers = await self.backend.agenerate(prompts, max_new_tokens=self.max_new_tokens, temperature=0.0, errors="return")
            for k, ans in zip(todo, answers):
                if isinstance(ans, BackendError):
                    self.stats["errors"] += 1
                    self.failures[ans.kind] += 1
                    self.hints.setdefault(ans.hint or "")
                    # stored: no credentials
                    errors[k] = Verdict(0.0, None, redact_text(f"judge backend error: {ans}"), error=ans.kind)
                    continue
                fresh[k] = self.read_answer(ans[0])
            self.cache.put_many(fresh)  # backend errors are not cached: a re-run asks again
        out: list[Verdict] = []
        for k in keys:
            v = errors.get(k) or self.cache.get(k)
            assert v is not None, "the judge backend returned fewer answers than prompts"
            out.append(v)
        for v in out:
            self.stats[v.label or "none"] += 1
        return out

    def read_answer(self, answer: str) -> Verdict:
        """The verdict of one answer, read after its thoughts (see the module docstring)."""
        rest = after_thinking(answer)
        label = None if rest is None else parse_verdict(rest)
        if label is not None:
            return Verdict(1.0 if label == "YES" else 0.0, label, "judge")
        self.stats["unparseable"] += 1
        if rest is None:
            self.stats["still_thinking"] += 1
            return Verdict(0.0, None, f"unparseable verdict: still thinking at max_new_tokens={self.max_new_tokens}: {answer[-120:]!r}")
        return Verdict(0.0, None, f"unparseable verdict: {rest[:120]!r}")

    def judge(self, candidates: Sequence[str], references: Sequence[str]) -> list[Verdict]:
        async def once() -> list[Verdict]:
            try:
                return await self.ajudge(candidates, references)
            finally:
                close = getattr(self.backend, "aclose", None)
                if close is not None:
                    await close()

        return run_sync(once())


# -- rule judges ------------------------------------------------------------------------------------------------
class _RuleJudge:
    name = "rule"

    def __init__(self) -> None:
        self.stats: Counter = Counter()

    def one(self, candidate: str, reference: str) -> Verdict:
        raise NotImplementedError

    def judge(self, candidates: Sequence[str], references: Sequence[str]) -> list[Verdict]:
        _check_lengths(candidates, references)
        out = [self.one(c, r) for c, r in zip(candidates, references)]
        self.stats["verdicts"] += len(out)
        return out

    async def ajudge(self, candidates: Sequence[str], references: Sequence[str]) -> list[Verdict]:
        return self.judge(candidates, references)


def _yes(ok: bool, reason: str) -> Verdict:
    return Verdict(1.0 if ok else 0.0, "YES" if ok else "NO", reason)


def normalize_ws(text: str) -> str:
    return " ".join(text.split())


class ExactJudge(_RuleJudge):
    """YES iff the texts are equal after whitespace normalisation (and case folding unless ``case=True``)."""

    def __init__(self, case: bool = False) -> None:
        super().__init__()
        self.case = case
        self.name = "exact"

    def one(self, candidate: str, reference: str) -> Verdict:
        a, b = normalize_ws(candidate), normalize_ws(reference)
        if not self.case:
            a, b = a.casefold(), b.casefold()
        return _yes(a == b, "exact match" if a == b else "differs")


_NUMBER = re.compile(r"[-−]?\d[\d,]*(?:\.\d+)?(?:\s*/\s*\d+)?|[-−]?\.\d+")


def parse_number(text: str) -> Fraction | None:
    """The last number in ``text`` as an exact fraction (thousands commas, unicode minus, ``a/b``, decimals)."""
    found = _NUMBER.findall(text)
    if not found:
        return None
    s = found[-1].replace(",", "").replace("−", "-").replace(" ", "")
    try:
        return Fraction(s)
    except (ValueError, ZeroDivisionError):
        return None


class NumberJudge(_RuleJudge):
    """YES iff the last numbers of candidate and reference are equal (relative tolerance ``rel_tol``)."""

    def __init__(self, rel_tol: float = 1e-9) -> None:
        super().__init__()
        self.rel_tol = rel_tol
        self.name = "number"

    def one(self, candidate: str, reference: str) -> Verdict:
        a, b = parse_number(candidate), parse_number(reference)
        if b is None:
            return Verdict(0.0, None, "no number in the reference")
        if a is None:
            return _yes(False, "no number in the candidate")
        ok = a == b or abs(a - b) <= self.rel_tol * max(abs(a), abs(b))
        return _yes(ok, f"{float(a):g} vs {float(b):g}")


class TokenF1Judge(_RuleJudge):
    """YES iff token F1 ≥ ``threshold``."""

    def __init__(self, threshold: float = 0.5) -> None:
        super().__init__()
        self.threshold = threshold
        self.name = f"token_f1@{threshold:g}"

    def one(self, candidate: str, reference: str) -> Verdict:
        f1 = token_f1(candidate, reference)
        return _yes(f1 >= self.threshold, f"f1={f1:.3f}")


# -- reward -----------------------------------------------------------------------------------------------------
def continuation(completion: str) -> str | None:
    """The text after the last ``</think>`` (:func:`midtrain.thoughts.after_thinking`), stripped; None if no
    think block was closed or a new one is left open.

    Suffix tasks always ask for a thought first, so a completion is read as opened by its prompt: one that never
    closed a thought has no continuation to judge.
    """
    rest = after_thinking(completion, opened=True)
    return None if rest is None else rest.strip()


def count_thoughtless(candidates: Sequence[str], source: str, field: str) -> int:
    """How many candidates have no closed thought (they score 0 unjudged under ``thoughts=True``).

    Raises :class:`DataError` when no candidate has a think tag at all: those are plain pairs, and judging them as
    completions would score every pair 0 with exit code 0.
    """
    if candidates and not any(has_tags(c) for c in candidates):
        raise DataError(
            f"{source}: none of the {len(candidates)} '{field}' values has a <think>…</think> thought, so with "
            "--thoughts (the default) every pair would score 0; pass --no-thoughts to judge the whole text"
        )
    return sum(continuation(c) is None for c in candidates)


async def ajudge_completions(judge: Judge, completions: Sequence[str], references: Sequence[str]) -> list[Verdict]:
    """Verdicts on the continuations of ``<think>…</think>`` completions; see the module docstring."""
    _check_lengths(completions, references)
    out: list[Verdict | None] = [None] * len(completions)
    idx, cands, refs = [], [], []
    for i, (c, r) in enumerate(zip(completions, references)):
        cont = continuation(c)
        if cont is None:
            out[i] = Verdict(0.0, None, "no closed <think> block")  # (NOT_JUDGED)
        elif not cont:
            out[i] = Verdict(0.0, None, "empty continuation")
        else:
            idx.append(i)
            cands.append(cont)
            refs.append(r)
    if idx:
        for i, v in zip(idx, await judge.ajudge(cands, refs)):
            out[i] = v
    return out  # type: ignore[return-value]


def judge_completions(judge: Judge, completions: Sequence[str], references: Sequence[str]) -> list[Verdict]:
    """Synchronous :func:`ajudge_completions` (closes the backend's HTTP client of the temporary loop)."""

    async def once() -> list[Verdict]:
        try:
            return await ajudge_completions(judge, completions, references)
        finally:
            close = getattr(getattr(judge, "backend", None), "aclose", None)
            if close is not None:
                await close()

    return run_sync(once())


class JudgeReward:
    """The plain reward callable of a judge, ``(completions, references) -> rewards`` (``await reward.acall(...)``
    for async callers); ``last_verdicts`` keeps the reasons of the latest call."""

    def __init__(self, judge: Judge) -> None:
        self.judge = judge
        self.__name__ = f"judge_{re.sub(r'[^A-Za-z0-9_]', '_', judge.name)}"
        self.last_verdicts: list[Verdict] = []

    def __call__(self, completions: Sequence[str], references: Sequence[str]) -> list[float]:
        self.last_verdicts = judge_completions(self.judge, completions, references)
        return [v.score for v in self.last_verdicts]

    async def acall(self, completions: Sequence[str], references: Sequence[str]) -> list[float]:
        self.last_verdicts = await ajudge_completions(self.judge, completions, references)
        return [v.score for v in self.last_verdicts]


# -- stage ------------------------------------------------------------------------------------------------------
JudgeKind = Literal["llm", "exact", "number", "token_f1"]


@dataclass
class JudgeSpec(Config):
    """One judge: which, and how an LLM judge is asked (:func:`build_judge`). A stage that judges embeds it as a
    section (``midtrain rl``'s ``judge``); ``midtrain judge`` spells the same keys flat (:meth:`JudgeConfig.spec`)."""

    kind: JudgeKind = param("llm", "Which judge: llm (the backend's model) or a rule judge (token_f1, exact, number).")
    threshold: float = param(0.5, "F1 threshold of kind=token_f1.", ge=0, le=1)
    backend: BackendConfig = param(BackendConfig(), "The judge model's backend (kind=llm): midtrain.llm.config.BackendConfig.")
    prompt: str = param("judge", "Judge prompt (kind=llm): a shipped name or a .txt template with {candidate} and {reference}.")
    max_new_tokens: int = param(
        DEFAULT_VERDICT_TOKENS,
        "Token budget of one verdict (kind=llm), thoughts included: a thinking judge (Qwen3) needs some hundred tokens "
        "before its verdict line; one that does not think stops early, so a large budget costs nothing.",
        ge=1,
    )


@dataclass
class JudgeConfig(Config):
    input: str = param("", "JSONL file of pairs to judge.", positional=True, path="file")
    out: str = param("", "Output directory (verdicts.jsonl + midtrain.json).", path="dir")
    candidate_field: str = param("completion", "Field holding the candidate (or the full completion).")
    reference_field: str = param("reference", "Field holding the reference continuation or answer.")
    judge: JudgeKind = param("llm", "Which judge.")
    backend: BackendConfig = param(BackendConfig(), "The judge model's backend (judge=llm).")
    prompt: str = param("judge", "Judge prompt: a shipped name or a .txt template with {candidate} and {reference}.")
    max_new_tokens: int = param(
        DEFAULT_VERDICT_TOKENS,
        "Token budget of one verdict (judge=llm), thoughts included: a thinking judge (Qwen3) needs some hundred tokens "
        "before its verdict line; one that does not think stops early, so a large budget costs nothing.",
        ge=1,
    )
    threshold: float = param(0.5, "F1 threshold of judge=token_f1.", ge=0, le=1)
    thoughts: bool = param(True, "Candidates are completions with <think>…</think>: judge the text after the last </think>.")
    cache: str = param(
        "", "Verdict cache JSONL shared across runs (judge=llm); empty: verdict_cache.jsonl in the run directory.", path="file"
    )
    batch_size: int = param(256, "Pairs per judge call.", ge=1)
    overwrite: bool = param(False, "Replace an existing output directory holding a different run.")

    def check(self) -> None:
        if not self.input:
            raise ConfigError("key 'input': give a JSONL file of pairs")
        if not self.out:
            raise ConfigError("key 'out': give an output directory")
        if self.judge == "llm":  # a missing template file or a wrong placeholder fails now, not after the run dir exists
            check_template(load_prompt(self.prompt), "prompt", required=JUDGE_PLACEHOLDERS)

    def spec(self) -> JudgeSpec:
        """The judge these flat keys describe."""
        return JudgeSpec(
            kind=self.judge, threshold=self.threshold, backend=self.backend, prompt=self.prompt, max_new_tokens=self.max_new_tokens
        )


def build_judge(spec: JudgeSpec, cache: str | Path | None = None) -> Judge:
    """The judge of ``spec``; an LLM judge caches verdicts in the JSONL file ``cache`` (None: in memory only)."""
    if spec.kind == "exact":
        return ExactJudge()
    if spec.kind == "number":
        return NumberJudge()
    if spec.kind == "token_f1":
        return TokenF1Judge(spec.threshold)
    template = load_prompt(spec.prompt)
    check_template(template, "prompt", required=JUDGE_PLACEHOLDERS)
    return LLMJudge(
        make_backend(spec.backend, respond=rule_verdict), template, VerdictCache(cache or None), max_new_tokens=spec.max_new_tokens
    )


def run(cfg: JudgeConfig):
    """Judge every pair of ``cfg.input``; write ``verdicts.jsonl`` (input fields + score, label, reason)."""
    pairs = read_all(cfg.input, required=[cfg.candidate_field, cfg.reference_field])
    for rec in pairs:
        for f in (cfg.candidate_field, cfg.reference_field):
            if not isinstance(rec[f], str):
                raise DataError(f"{where(rec, cfg.input)}: '{f}' is not a string")
    thoughtless = count_thoughtless([r[cfg.candidate_field] for r in pairs], cfg.input, cfg.candidate_field) if cfg.thoughts else 0
    if thoughtless:
        log(
            f"judge: warning: {thoughtless} of {len(pairs)} candidates have no closed <think> thought and score 0 "
            "unjudged (pass --no-thoughts if they are plain answers)"
        )
    with open_run(cfg.out, "judge", cfg, {"input": cfg.input}, overwrite=cfg.overwrite) as run_:
        if run_.cached:
            return Result.of(run_)
        judge = build_judge(cfg.spec(), cfg.cache or run_.path / VERDICT_CACHE)
        verdicts: list[Verdict] = []

        async def all_batches() -> None:
            for s in range(0, len(pairs), cfg.batch_size):
                batch = pairs[s : s + cfg.batch_size]
                cands = [r[cfg.candidate_field] for r in batch]
                refs = [r[cfg.reference_field] for r in batch]
                verdicts.extend(await (ajudge_completions(judge, cands, refs) if cfg.thoughts else judge.ajudge(cands, refs)))
            close = getattr(getattr(judge, "backend", None), "aclose", None)
            if close is not None:
                await close()

        asyncio.run(all_batches())
        _stop_on_failures(run_, judge, verdicts)
        write_jsonl(run_.path / "verdicts.jsonl", ({**r, **asdict(v)} for r, v in zip(pairs, verdicts)))
        scores = [v.score for v in verdicts]
        reasons = Counter(v.label or v.reason.split(":")[0] for v in verdicts)
        metrics = {
            "pairs": len(pairs),
            "mean_score": sum(scores) / len(scores),
            "judge": judge.name,
            "labels": dict(reasons),
            **({"no_thought": thoughtless} if cfg.thoughts else {}),
            **{k: v for k, v in getattr(judge, "stats", {}).items()},
        }
        run_.finish(metrics)
        log(f"judge: {len(pairs)} pairs, mean score {metrics['mean_score']:.4f} → {run_.path / 'verdicts.jsonl'}")
        return Result.of(run_)


def _stop_on_failures(run_: Run, judge: Judge, verdicts: list[Verdict]) -> None:
    """Failed pairs: keep the run resumable (cached verdicts stay), record the counts, exit non-zero."""
    failed = Counter(v.error for v in verdicts if v.error is not None)
    if not failed:
        return
    run_.keep()
    run_.update(metrics={"pairs": len(verdicts), "failed": sum(failed.values()), "failed_by_kind": dict(failed)})
    hints = getattr(judge, "hints", {})
    raise MidtrainError(failure_message("judge", sum(failed.values()), len(verdicts), "pairs", failed, hints))


__all__ = [
    "Verdict",
    "Judge",
    "LLMJudge",
    "VerdictCache",
    "VERDICT_CACHE",
    "NOT_JUDGED",
    "DEFAULT_VERDICT_TOKENS",
    "JudgeSpec",
    "ExactJudge",
    "NumberJudge",
    "TokenF1Judge",
    "JudgeReward",
    "judge_completions",
    "ajudge_completions",
    "continuation",
    "count_thoughtless",
    "render_judge_prompt",
    "rule_verdict",
    "parse_verdict",
    "parse_number",
    "JudgeConfig",
    "run",
]
