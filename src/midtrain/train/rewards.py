"""Rewards of ``midtrain rl``: plain typed callables, shared with evaluation so that reward and metric cannot drift.

A reward is ``fn(completions: list[str], **columns: list) -> list[float]``: one float per completion, where each
keyword is a column of the RL dataset repeated per generation (TRL passes every dataset column except ``prompt``
that way; the prompts themselves arrive as the ``prompts`` column). The rewards:

- ``math``: math-verify equivalence of the answer with the ``answer`` column, via :func:`midtrain.eval.scoring.score_math`
  (the scorer of ``midtrain eval``): the text after the last ``</think>``; an ``<answer>…</answer>`` span or
  ``\\boxed{}`` wins; a completion still inside a thought has no answer.
- ``choice``: the option letter (:func:`midtrain.eval.scoring.score_choice`) equals the ``answer`` letter.
- ``synthetic_outcome`` / ``synthetic_process`` / ``synthetic_strict``: ``midtrain.synth.verify.reward(problem,
  completion, kind)`` of the controlled world (DESIGN §1.3); the problem record travels JSON-encoded in the
  ``record`` column.
- ``judge``: for ``suffix`` tasks, a :mod:`midtrain.llm.judge` judge (LLM or rule: exact, number, token-F1 threshold)
  compares the continuation after the last ``</think>`` with the ``answer`` column (the true suffix). A judge
  *failure* (server down, HTTP error) is not a NO: the sample's reward is NaN, so :class:`SafeReward` scores it 0,
  flags it (``last_failed``) and counts it in ``reward_errors``; the RL trainer leaves every group with a flagged
  sample out of the loss. The first failure of each kind is logged, and when at least ``max_error_frac`` of the
  samples sent to the judge in one step (summed over ranks; default all of them) failed, :class:`RewardAborted`
  stops the run on every rank: learning from a dead judge's zeros is no run.
- ``exact_match``: for ``suffix`` tasks, Reinforcement Pre-Training's reward (RPT, arXiv 2506.08007): 1.0 when the
  continuation after the last ``</think>`` equals the true next segment under the exact judge's normalisation
  (:class:`midtrain.llm.judge.ExactJudge`: whitespace collapsed, case folded), else 0.0; no judge call can fail.
- **Step tasks** (``midtrain synth tasks``: the prompt ends inside a gold solution, the reference is its next k
  steps; the ``steps_k`` column is > 0): there is no ``</think>`` before the continuation, the generated text is
  the thought and the prediction at once. ``judge`` and ``exact_match`` then compare :func:`step_prediction`: the
  first as many '.'-separated clauses of the generated text (cut after a first ``</answer>``) as the reference
  has, with the reference's, blanks collapsed; ordinary suffix rows keep the text after ``</think>``.
  ``synthetic_steps`` is 1.0 iff the predicted steps pass the synthetic world's process check
  (:func:`midtrain.synth.tasks.verify_steps`: right parents and values, any valid order), else 0.0.
  ``info_gain`` and ``ref_prob`` score the suffix given the thought, which a step task does not separate: they
  refuse step tasks (:func:`midtrain.train.rl_tasks.task_row`).
- ``info_gain``: for ``suffix`` tasks, RLP's information gain of the thought (:mod:`midtrain.train.info_gain`):
  a scorer object holding the policy and its EMA, built by ``midtrain rl`` and passed to :func:`build_reward`.

:func:`safe_reward` wraps any of them: if the batch call raises (or returns a wrong count), every sample is
scored on its own; a sample whose call raises or returns None/NaN gets 0.0 and is counted (``reward_errors`` in the
RL log), and the run goes on. :func:`for_trl` adapts a safe reward to TRL's calling convention.
"""

from __future__ import annotations

import json
import math
from collections import Counter
from collections.abc import Callable, Sequence
from functools import lru_cache
from typing import Any, Literal, get_args

from midtrain.console import log
from midtrain.errors import ConfigError, MidtrainError
from midtrain.thoughts import THINK_CLOSE, THINK_OPEN, opens_thought

RewardFn = Callable[..., list[float]]  # (completions: list[str], **columns: list[Any]) -> list[float]
RewardName = Literal[
    "math",
    "choice",
    "synthetic_outcome",
    "synthetic_process",
    "synthetic_strict",
    "judge",
    "exact_match",
    "info_gain",
    "ref_prob",
    "synthetic_steps",
]
REWARD_NAMES: tuple[str, ...] = get_args(RewardName)
# the rewards of suffix tasks (and only theirs)
SUFFIX_REWARDS: tuple[str, ...] = ("judge", "exact_match", "info_gain", "ref_prob", "synthetic_steps")

# Columns (besides the completions) each reward reads; rl.py builds them from the data records.
REWARD_COLUMNS: dict[str, tuple[str, ...]] = {
    "math": ("answer",),
    "choice": ("answer",),  # + "choices" when the records have it
    "synthetic_outcome": ("record",),
    "synthetic_process": ("record",),
    "synthetic_strict": ("record",),
    "judge": ("answer", "steps_k"),  # steps_k > 0: a step task (synth tasks), whose continuation is the text itself
    "exact_match": ("answer", "steps_k"),
    "synthetic_steps": ("record",),  # the step task record: problem, prefix steps (meta.j), k
    "info_gain": ("answer", "nothink"),  # nothink: the no-think baseline's prompt
    "ref_prob": ("answer",),
}

_LETTERS = tuple("ABCDEFGHIJ")


def _prompts(columns: dict[str, Any], n: int) -> list[str | None]:
    prompts = columns.get("prompts")
    return list(prompts) if isinstance(prompts, (list, tuple)) and len(prompts) == n else [None] * n


# -- the rewards ------------------------------------------------------------------------------------------------
def math_reward(completions: list[str], answer: list[str], **columns: Any) -> list[float]:
    """1.0 when the completion's final answer is math-verify-equivalent to ``answer``, else 0.0."""
    from midtrain.eval.scoring import score_math

    prompts = _prompts(columns, len(completions))
    return [float(score_math(c, str(a), thinking=opens_thought(p)).correct) for c, a, p in zip(completions, answer, prompts, strict=True)]


def choice_reward(completions: list[str], answer: list[Any], **columns: Any) -> list[float]:
    """1.0 when the chosen option letter equals ``answer`` (a letter, or a 0-based option index).

    The valid letters are A-D, or as many as the record's ``choices`` column has.
    """
    from midtrain.eval.scoring import score_choice

    n = len(completions)
    prompts = _prompts(columns, n)
    choices = given if isinstance(given := columns.get("choices"), (list, tuple)) else [None] * n
    out = []
    for c, a, p, ch in zip(completions, answer, prompts, choices, strict=True):
        gold = _LETTERS[int(a)] if isinstance(a, int) or str(a).strip().isdigit() else str(a).strip().upper()
        letters = _LETTERS[: max(2, len(ch))] if isinstance(ch, (list, tuple)) and ch else _LETTERS[:4]
        out.append(float(score_choice(c, gold, letters=letters, thinking=opens_thought(p)).correct))
    return out


@lru_cache(maxsize=4096)
def _parsed(text: str) -> dict[str, Any]:
    return json.loads(text)


def synthetic_problem(record: str | dict[str, Any]) -> dict[str, Any]:
    """The synthetic problem of an RL row's ``record`` column: a dict, or its JSON text (parsed once, cached: the
    same record reaches the reward G times per step)."""
    return _parsed(record) if isinstance(record, str) else record


def synthetic_reward(kind: Literal["outcome", "process", "strict"]) -> RewardFn:
    """The synthetic world's reward of ``kind``; the problem record is the JSON ``record`` column."""
    from midtrain.synth.verify import reward  # the verifier that also scores evaluation, so the two cannot drift

    def fn(completions: list[str], record: list[str | dict], **_: Any) -> list[float]:
        out = []
        for c, r in zip(completions, record, strict=True):
            out.append(float(reward(synthetic_problem(r), c, kind)))
        return out

    fn.__name__ = f"synthetic_{kind}"
    return fn


SuccessFn = Callable[[Sequence[dict[str, Any]], Sequence[str], Sequence[float]], list[float]]  # (rows, completions, rewards)


def success_fn(name: str) -> SuccessFn:
    """What counts as *solved* for the online curriculum's pass rate: in the synthetic world the process-verified
    check (the strict reward), whatever the training reward is, so that a reward-hacked completion (right answer,
    wrong trace) is not mistaken for competence; for other rewards the reward itself, clipped to [0, 1]."""
    if name.startswith("synthetic_"):
        # the training reward is the verified check already (synthetic_steps: of the predicted steps, all or none)
        if name in ("synthetic_strict", "synthetic_steps"):
            return lambda rows, completions, rewards: [float(r) for r in rewards]
        strict = synthetic_reward("strict")
        return lambda rows, completions, rewards: strict(list(completions), [r["record"] for r in rows])
    return lambda rows, completions, rewards: [min(max(float(r), 0.0), 1.0) for r in rewards]


class RewardAborted(MidtrainError):
    """The reward cannot be computed at all (its judge failed on a whole step): the run stops, never trains on zeros."""


def judge_failures(verdicts: Sequence[Any], max_error_frac: float) -> tuple[Counter, int, bool]:
    """``(failures by kind, samples sent to the judge, whether to stop)`` of one call's verdicts."""
    from midtrain.llm.judge import NOT_JUDGED

    failed = Counter(v.error for v in verdicts if getattr(v, "error", None))
    asked = sum(1 for v in verdicts if v.reason not in NOT_JUDGED)
    return failed, asked, bool(failed) and sum(failed.values()) >= max_error_frac * asked


class JudgeRewardFn:
    """A suffix-task reward from a :mod:`midtrain.llm.judge` judge: the continuation after ``</think>`` vs ``answer``,
    NaN for a sample whose judging failed.

    It never stops the run itself: in a multi-process run one rank raising while the others wait in the next
    collective would hang them. It tallies the samples sent to the judge and those that failed; the trainer sums
    the tally over ranks once per step and every rank calls :meth:`abort_if_failed` with the same totals.
    """

    def __init__(self, judge: Any, max_error_frac: float = 1.0) -> None:
        from midtrain.llm.judge import JudgeReward

        self.judge = judge
        self.inner = JudgeReward(judge)
        self.max_error_frac = max_error_frac
        self.__name__ = str(getattr(self.inner, "__name__", "judge"))
        self.failed: Counter[str] = Counter()  # failure kinds since the last take_tally()
        self.kinds: Counter[str] = Counter()  # those of the latest tally, for the stop message
        self.asked = 0
        self._reported: set[str] = set()

    def __call__(self, completions: list[str], answer: list[str], **columns: Any) -> list[float]:
        from midtrain.llm.base import describe_kinds

        prompts = _prompts(columns, len(completions))
        # A prompt that ends inside a thought (``…<think>``) leaves the opening tag out of the completion. A step
        # task's continuation is its step prediction, handed over as the text after a closed thought (none: empty,
        # which is never sent to the judge and scores 0).
        full: list[str] = []
        refs: list[str] = []
        for c, a, p, k in zip(completions, answer, prompts, _steps_k(columns, len(completions)), strict=True):
            if k:  # (think tags of a predicted rest are dropped on both sides: the judge reads after the last one)
                pair = step_prediction(c, str(a))
                full.append(THINK_CLOSE + (_untagged(pair[0]) if pair else ""))
                refs.append(_untagged(pair[1]) if pair else str(a))
            else:
                full.append((THINK_OPEN + c) if opens_thought(p) else c)
                refs.append(str(a))
        scores = list(self.inner(full, refs))
        failed, asked, _ = judge_failures(self.inner.last_verdicts, self.max_error_frac)
        self.failed.update(failed)
        self.asked += asked
        if set(failed) - self._reported:
            self._reported.update(failed)
            log(
                f"[warning] judge: {sum(failed.values())} of {asked} samples could not be judged ({describe_kinds(failed)}); "
                "their groups are left out of the loss and count as reward_errors"
            )
        return [math.nan if v.failed else s for v, s in zip(self.inner.last_verdicts, scores)]

    def take_tally(self) -> tuple[int, int]:
        """(failed samples, samples sent to the judge) since the previous call."""
        out = (sum(self.failed.values()), self.asked)
        self.asked = 0
        self.kinds, self.failed = self.failed, Counter()
        return out

    def abort_if_failed(self, n_failed: int, asked: int) -> None:
        """:class:`RewardAborted` when ``n_failed`` of ``asked`` (one step, all ranks) reach ``max_error_frac``."""
        from midtrain.llm.base import describe_kinds

        if not n_failed or n_failed < self.max_error_frac * asked:
            return
        hints = "; ".join(h for h in getattr(self.judge, "hints", {}) if h)
        kinds = describe_kinds(self.kinds) or "on other ranks"  # the kinds are this rank's; the counts every rank's
        raise RewardAborted(
            f"rl: the judge failed on {n_failed} of {asked} samples of this step ({kinds})"
            + (f"; {hints}" if hints else "")
            + f"; stopping (judge.max_error_frac={self.max_error_frac:g}); resume with the same command once the judge is back"
        )


def judge_reward(judge: Any, *, max_error_frac: float = 1.0) -> JudgeRewardFn:
    """The ``judge`` reward (:class:`JudgeRewardFn`)."""
    return JudgeRewardFn(judge, max_error_frac)


STEP_END = "."  # ends a gold step in both renders (names are letters, values integers: no step holds another '.')


def step_clauses(text: str) -> list[str]:
    """The non-empty clauses of ``text`` between '.'s, blanks collapsed: a step task's steps as compared."""
    return [" ".join(c.split()) for c in text.split(STEP_END) if c.strip()]


def step_prediction(completion: str, reference: str) -> tuple[str, str] | None:
    """``(prediction, reference)`` of a step task, both as their clauses ended by '. ': the first as many clauses of
    the generated text (cut after its first ``</answer>``) as the reference has (the next k steps; with the rest, the
    steps and the answer block). None when the text has fewer."""
    cut = completion.find("</answer>")
    text = completion if cut < 0 else completion[: cut + len("</answer>")]
    ref = step_clauses(str(reference))
    got = step_clauses(text)[: len(ref)]
    if not ref or len(got) < len(ref):
        return None
    return " ".join(c + STEP_END for c in got), " ".join(c + STEP_END for c in ref)


def _untagged(text: str) -> str:
    return " ".join(text.replace(THINK_OPEN, " ").replace(THINK_CLOSE, " ").split())


def _steps_k(columns: dict[str, Any], n: int) -> list[int]:
    ks = columns.get("steps_k")
    return [int(k or 0) for k in ks] if isinstance(ks, (list, tuple)) and len(ks) == n else [0] * n


def exact_match_reward(completions: list[str], answer: list[str], **columns: Any) -> list[float]:
    """RPT's reward: 1.0 when the continuation after ``</think>`` exactly matches ``answer`` (the exact judge's
    normalisation), 0.0 otherwise, and 0.0 for a completion that never closed its thought. On a step task
    (``steps_k`` > 0) the continuation is :func:`step_prediction` of the generated text."""
    from midtrain.llm.judge import ExactJudge, continuation

    judge = ExactJudge()
    prompts = _prompts(columns, len(completions))
    out = []
    for c, a, p, k in zip(completions, answer, prompts, _steps_k(columns, len(completions)), strict=True):
        if k:
            pair = step_prediction(c, str(a))
            out.append(judge.one(*pair).score if pair else 0.0)
            continue
        cont = continuation((THINK_OPEN + c) if opens_thought(p) else c)  # as judge_reward reads a completion
        out.append(judge.one(cont, str(a)).score if cont else 0.0)
    return out


def synthetic_steps_reward(completions: list[str], record: list[str | dict], **_: Any) -> list[float]:
    """1.0 when the steps a step task's completion predicts pass the synthetic process check
    (:func:`midtrain.synth.tasks.verify_steps`), else 0.0; the task record is the JSON ``record`` column."""
    from midtrain.synth.tasks import verify_steps

    return [float(verify_steps(synthetic_problem(r), c)) for c, r in zip(completions, record, strict=True)]


# -- safety wrapper ---------------------------------------------------------------------------------------------
class SafeReward:
    """A reward that never stops a run: a sample whose scoring raises (or is None/NaN) gets 0.0 and is counted.

    ``errors`` counts failed samples since construction, ``last_errors`` in the latest call; ``take_errors()``
    returns and resets the count since its previous call (the RL log's ``reward_errors``).
    """

    def __init__(self, fn: RewardFn, name: str | None = None) -> None:
        self.fn = fn
        self.name: str = name or str(getattr(fn, "__name__", type(fn).__name__))
        self.__name__ = self.name
        self.errors = 0
        self.samples = 0
        self.last_errors = 0
        self.last_failed: list[bool] = []  # per sample of the latest call: its reward failed (scored 0)
        self._since_take = 0
        self._reported: set[str] = set()

    def __call__(self, completions: Sequence[str], **columns: Any) -> list[float]:
        n = len(completions)
        cols = {k: v for k, v in columns.items() if isinstance(v, (list, tuple)) and len(v) == n}
        try:
            out = self.fn(list(completions), **cols)
            if len(out) != n:
                raise ValueError(f"returned {len(out)} rewards for {n} completions")
            rewards, failed = self._clean(out)
        except RewardAborted:
            raise
        except Exception:  # noqa: BLE001 - one bad sample must not stop the run: score them one by one
            rewards, failed = [], []
            for i in range(n):
                try:
                    one = self.fn([completions[i]], **{k: [v[i]] for k, v in cols.items()})
                    if len(one) != 1:
                        raise ValueError(f"returned {len(one)} rewards for 1 completion")
                    value, f = self._clean(one)
                    rewards.append(value[0])
                    failed += f
                except Exception as e:  # noqa: BLE001
                    rewards.append(0.0)
                    failed.append(True)
                    self._report(f"{type(e).__name__}: {e}")
        bad = sum(failed)
        self.samples += n
        self.errors += bad
        self.last_errors = bad
        self.last_failed = failed
        self._since_take += bad
        return rewards

    def _clean(self, values: Sequence[Any]) -> tuple[list[float], list[bool]]:
        out, failed = [], []
        for v in values:
            try:
                f = float(v)
            except (TypeError, ValueError):
                f = math.nan
            failed.append(not math.isfinite(f))
            if failed[-1]:
                out.append(0.0)
                self._report(f"non-finite reward {v!r}")
            else:
                out.append(f)
        return out, failed

    def _report(self, message: str) -> None:
        key = message.split(":")[0]
        if key not in self._reported:  # once per kind of failure, not once per sample
            self._reported.add(key)
            log(f"[reward] {self.name}: a sample failed and scores 0 ({message[:200]}); further ones are counted")

    def take_errors(self) -> int:
        n, self._since_take = self._since_take, 0
        return n

    def take_judge_tally(self) -> tuple[int, int]:
        """(failed, asked) judge samples since the last call; (0, 0) for a reward without a judge."""
        take = getattr(self.fn, "take_tally", None)
        return take() if callable(take) else (0, 0)

    def abort_if_failed(self, n_failed: int, asked: int) -> None:
        """Stop the run (:class:`RewardAborted`) when a step's judge failures, summed over ranks, reach the budget."""
        check = getattr(self.fn, "abort_if_failed", None)
        if callable(check):
            check(n_failed, asked)


def safe_reward(fn: RewardFn, name: str | None = None) -> SafeReward:
    return fn if isinstance(fn, SafeReward) else SafeReward(fn, name)


# TRL's keywords that are no data column (``completion_ids`` is one: info_gain scores the generated ids themselves)
_TRL_CONTROL = {"trainer_state", "log_extra", "log_metric", "environments"}


def for_trl(reward: SafeReward) -> Callable[..., list[float]]:
    """TRL's reward convention → ours: ``prompts`` becomes a column, TRL's control keywords are dropped."""

    def trl_reward(prompts: list[Any], completions: list[Any], **kwargs: Any) -> list[float]:
        texts = [c if isinstance(c, str) else c[-1]["content"] for c in completions]  # conversational: last message
        prompt_texts = [p if isinstance(p, str) else "" for p in prompts]
        columns = {k: v for k, v in kwargs.items() if k not in _TRL_CONTROL}
        out = reward(texts, prompts=prompt_texts, **columns)
        log_metric = kwargs.get("log_metric")
        if callable(log_metric):
            log_metric("reward_errors", float(reward.last_errors))
        return out

    trl_reward.__name__ = reward.name
    return trl_reward


# -- registry ---------------------------------------------------------------------------------------------------
def build_reward(name: str, *, judge: Any = None, judge_max_error_frac: float = 1.0, scorer: RewardFn | None = None) -> SafeReward:
    """The safe reward registered under ``name`` (``judge`` is the judge object for ``name="judge"``, ``scorer`` the
    :class:`midtrain.train.info_gain.InfoGainReward` for ``name="info_gain"``)."""
    if name == "math":
        return safe_reward(math_reward, "math")
    if name == "choice":
        return safe_reward(choice_reward, "choice")
    if name == "synthetic_steps":
        return safe_reward(synthetic_steps_reward, name)
    if name.startswith("synthetic_"):
        kind = name.removeprefix("synthetic_")
        if kind not in ("outcome", "process", "strict"):
            raise ConfigError(f"key 'reward': unknown synthetic reward '{name}'")
        return safe_reward(synthetic_reward(kind), name)  # type: ignore[arg-type]
    if name == "judge":
        if judge is None:  # the default: token-F1 against the reference at threshold 0.5
            from midtrain.llm.judge import JudgeSpec, build_judge

            judge = build_judge(JudgeSpec(kind="token_f1"))
        fn = judge_reward(judge, max_error_frac=judge_max_error_frac)
        return safe_reward(fn, "judge")
    if name == "exact_match":
        return safe_reward(exact_match_reward, "exact_match")
    if name in ("info_gain", "ref_prob"):
        if scorer is None:
            raise ConfigError(f"key 'reward': {name} needs its scorer (built by midtrain rl from the policy)")
        return safe_reward(scorer, name)
    raise ConfigError(f"key 'reward': unknown reward '{name}' (choose from {', '.join(REWARD_NAMES)})")


__all__ = [
    "RewardFn",
    "RewardName",
    "REWARD_NAMES",
    "REWARD_COLUMNS",
    "SUFFIX_REWARDS",
    "exact_match_reward",
    "step_prediction",
    "step_clauses",
    "synthetic_steps_reward",
    "math_reward",
    "choice_reward",
    "synthetic_reward",
    "synthetic_problem",
    "judge_reward",
    "judge_failures",
    "JudgeRewardFn",
    "RewardAborted",
    "SafeReward",
    "SuccessFn",
    "success_fn",
    "safe_reward",
    "for_trl",
    "build_reward",
]
