"""Process verification of synthetic-world completions: trace parser, verifier, rewards, summaries.

One implementation serves evaluation, the RL rewards and the verb ``midtrain synth verify`` (:func:`run`, DESIGN §1.3),
which checks completions (``{"id", "completion"}`` lines, several per id) against a problem file, or the problems'
own gold completions when none are given, and prints the summary of :mod:`midtrain.synth.summary` (the same
schema as ``midtrain eval`` on synthetic problems: accuracy, ProcessAcc, pass@k, hacking, rewards, mismatch
counts, per op, context and mode) (``midtrain synth verify --problems p.jsonl --completions c.jsonl --json``):

1. **Split** the completion (:mod:`midtrain.thoughts`): the trace is its thinking, from after ``<think>`` (when
   present) up to the *last* ``</think>`` (or, without any ``</think>``, up to ``<answer>``); the answer is the
   integer between the first ``<answer>`` and ``</answer>`` after it. A thought reopened after the last
   ``</think>`` and never closed leaves no answer.
2. **Parse** the trace into steps keyed by quantity name (never by letter). Compact clauses are separated by
   '.', natural sentences by '. '. ``Define <quantity> as <L>; …`` binds letter L to a quantity; a clause
   ``NAME = e1 = … = ek`` is a step for NAME whose **parents** are the names in e1 and whose **value** is ek;
   ``Define <quantity> as <L>`` alone and ``…; L is unknown`` only bind; in ``We know …, so <equation>; u = v``
   and ``<equation>:u=v`` only the final ``u = v`` is a step. Anything else (prose, ``Answer:``) is ignored.
3. **Evaluate** values with the safe evaluator of :mod:`midtrain.synth.expr` (integers, names, ``+ - *``,
   parentheses, implicit products such as ``3b``) into linear forms a*u + b of the reverse-mode unknown u; a name
   other than the unknown, a product of two non-constant forms or an expression over its limits is an error.
   Values are compared modulo the problem's modulus when it has one. Nothing is ever ``eval``'d.
4. **Score** against the gold graph: a step is correct if its quantity is a necessary node, its parents equal
   the gold parents and its value the gold value (a linear form in reverse mode; the unknown's own step is its
   solved value). ProcessAcc = correct steps / |V|; VerifiedCorrect = ProcessAcc == 1 and a right answer
   (extra steps allowed). Mismatches: value, dependency, missing (a necessary node without a step), extra
   (a step for any other quantity, or a repeated one), answer.
5. **Rewards**: outcome = answer right; process = max(0, 1 - penalty/|V|) with penalty = value + dependency +
   missing + min(extra, |V|) + answer mismatches, reward = 0.2*outcome + 0.8*process, 0 when the answer is wrong;
   strict = 1 only when VerifiedCorrect. :func:`sample_row` stores a verdict with its three rewards as plain JSON,
   and :mod:`midtrain.synth.summary` aggregates such rows (pass@k on VerifiedCorrect, ``midtrain.metrics``).

Hostile input is bounded: at most ``MAX_CHARS`` characters (else reason "too long"), ``MAX_CLAUSES`` clauses,
``MAX_PARTS`` equals signs per clause, and the expression limits of :mod:`midtrain.synth.expr`; every regex is
anchored and linear, so any string is answered in time linear in its (capped) length, never by an exception.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass, field
from itertools import chain
from typing import Any, Literal

from midtrain.config import Config, param
from midtrain.data.jsonl import iter_jsonl
from midtrain.data.records import where
from midtrain.errors import ConfigError, DataError
from midtrain.synth.expr import ParseError, evaluate, tokenize
from midtrain.synth.summary import flatten, summarize
from midtrain.synth.summary import load_problems as load_problem_records
from midtrain.synth.world import Lin, Node, forms
from midtrain.thoughts import THINK_CLOSE, THINK_OPEN, after_thinking, thinking_part

MAX_CHARS = 65_536
MAX_CLAUSES = 4_096
MAX_PARTS = 16  # '=' signs read per clause: "x = 1 = 1 = …" costs no more than a real step
DEFAULT_KS = (1, 2, 4, 8, 16, 32, 64, 128)
MISMATCH_KINDS = ("value", "dependency", "missing", "extra", "answer")

_NAME = re.compile(r"[^\W\d_]{1,8}")
_DEFINE = re.compile(r"Define\s+(.{1,400}?)\s+as\s+([^\W\d_]{1,8})\s*;\s*(.*)", re.S)
_DEFINE_ONLY = re.compile(r"Define\s+(.{1,400}?)\s+as\s+([^\W\d_]{1,8})\s*", re.S)
_UNKNOWN = re.compile(r"[^\W\d_]{1,8}\s+is\s+unknown", re.S)
_WE_KNOW = re.compile(r"We know\b[^;]{0,400};\s*(.*)", re.S)
_ANSWER_LINE = re.compile(r"Answer\s*:")
_SENTENCE_END = re.compile(r"\.(?:\s+|$)")
_DOT = re.compile(r"\.")
_INT = re.compile(r"[-+]?[0-9]{1,40}")


# -- the gold side ----------------------------------------------------------------------------------------------
def _key(name: str, render: str) -> str:
    # Compact letters are the names themselves; a natural quantity name is compared as words, case and spacing
    # aside, because a model restating "the number of Lions" as "the number of lions" names the same quantity.
    return name if render == "compact" else " ".join(name.lower().split())


@dataclass
class Gold:
    render: str
    modulus: int | None
    keys: list[str]  # necessary node keys in trace order
    parents: dict[str, tuple[str, ...]]
    values: dict[str, Lin]
    unknown: str | None
    answer: int


def gold_of(problem: dict[str, Any]) -> Gold:
    """The necessary nodes of a problem record with their parents and values, keyed by quantity name."""
    g = problem["graph"]
    render = problem.get("render") or g.get("render", "natural")
    nodes = [Node(d["id"], d["kind"], list(d["parents"]), d.get("k"), d["value"], d.get("necessary", True)) for d in g["nodes"]]
    name = {d["id"]: _key(d["name"], render) for d in g["nodes"]}
    unknown = g.get("unknown")
    fs = forms(nodes, unknown, g.get("modulus"))
    keys = [name[i] for i in g.get("trace") or [n.id for n in nodes if n.necessary]]
    parents = {name[n.id]: tuple(sorted(name[p] for p in n.parents)) for n in nodes if n.necessary}
    values = {name[n.id]: fs[n.id] for n in nodes if n.necessary}
    if unknown is not None:  # the unknown's own step states its solved value, a number, not the form 1*u + 0
        values[name[unknown]] = Lin(0, nodes[unknown].value)
    return Gold(render, g.get("modulus"), keys, parents, values, None if unknown is None else name[unknown], int(problem["answer"]))


# -- parsing a completion ---------------------------------------------------------------------------------------
@dataclass
class Step:
    key: str | None  # quantity key, None for an unbound letter
    parents: tuple[str, ...] | None  # None when the first expression does not parse
    value: Lin | None  # None when the last expression does not evaluate
    start: int = 0  # offset of the step's clause in the trace


def split_completion(completion: str) -> tuple[str, str | None]:
    """(trace, answer text or None); see step 1 of the module docstring."""
    if THINK_CLOSE in completion:
        trace = thinking_part(completion) or ""
        rest = after_thinking(completion)
        if rest is None:  # a thought reopened after the last </think> and never closed: no answer yet
            return trace, None
    else:  # no </think>: the trace runs from <think> (when present) to the answer tag
        i = completion.find(THINK_OPEN)
        s = completion[i + len(THINK_OPEN) :] if i >= 0 else completion
        end = s.find("<answer>")
        if end < 0:
            return s, None
        trace, rest = s[:end], s[end:]
    a = rest.find("<answer>")
    if a < 0:
        return trace, None
    rest = rest[a + len("<answer>") :]
    b = rest.find("</answer>")
    return trace, (rest[:b] if b >= 0 else rest[:64])


def parse_answer(text: str | None, modulus: int | None) -> int | None:
    if text is None:
        return None
    t = text.strip().rstrip(".").strip()
    if not _INT.fullmatch(t):
        return None
    v = int(t)
    return v % modulus if modulus else v


def _clauses(trace: str, render: str) -> Iterable[tuple[int, str]]:
    """(offset in the trace, stripped text) of each non-empty clause among the first ``MAX_CLAUSES`` parts."""
    start = 0
    for n, m in enumerate(chain((_DOT if render == "compact" else _SENTENCE_END).finditer(trace), [None])):
        if n >= MAX_CLAUSES:
            return
        part = trace[start : m.start() if m else len(trace)]
        if part.strip():
            yield start + len(part) - len(part.lstrip()), part.strip()
        start = m.end() if m else start


def parse_steps(trace: str, gold: Gold) -> tuple[list[Step], int]:
    """The steps of a trace and the number of clauses it had (parsed or not)."""
    compact = gold.render == "compact"
    bind: dict[str, str] = {}
    steps: list[Step] = []
    n_clauses = 0
    for start, clause in _clauses(trace, gold.render):
        n_clauses += 1
        if compact:  # "<equation>:u=v": the solved form after the last colon is the step
            clause = clause.rsplit(":", 1)[-1]
        else:
            # Natural traces name a quantity once ("Define the number of lions as L") and then use the letter; the
            # binding lets a step be keyed by the quantity, so that a model free to pick its letters is never
            # scored by them.
            m = _DEFINE.match(clause)
            if m:
                bind[m.group(2)] = _key(m.group(1), "natural")
                clause = m.group(3)
                if _UNKNOWN.fullmatch(clause.strip()):
                    continue
            elif (m := _DEFINE_ONLY.fullmatch(clause)) is not None:
                bind[m.group(2)] = _key(m.group(1), "natural")
                continue
            elif (m := _WE_KNOW.match(clause)) is not None:
                clause = m.group(1).rsplit(";", 1)[-1]
            elif _ANSWER_LINE.match(clause):  # "Answer: 7" restates the answer; it is not a step
                continue
        step = _parse_clause(clause, gold, bind)
        if step is not None:
            step.start = start
            steps.append(step)
    return steps, n_clauses


def _parse_clause(clause: str, gold: Gold, bind: dict[str, str]) -> Step | None:
    parts = clause.split("=", MAX_PARTS)
    lhs = parts[0].strip()
    if len(parts) < 2 or not _NAME.fullmatch(lhs):
        return None
    compact = gold.render == "compact"

    def key_of(name: str) -> str | None:
        return name if compact else bind.get(name)

    # The value (last expression) may name only the unknown: "c = a + b = 7" must show the number, so a step that
    # never computes ("c = a + b") has no value rather than borrowing the gold one through its names.
    def resolve(name: str) -> Lin:
        if gold.unknown is not None and key_of(name) == gold.unknown:
            return Lin(1, 0)
        raise ParseError(f"{name!r} is not the unknown")

    # The parents are the names of the first expression; a letter that was never bound keeps its own "?x" key,
    # so it can never equal a gold parent by accident.
    try:
        names = [t for kind, t in tokenize(parts[1]) if kind == "name"]
        parents: tuple[str, ...] | None = tuple(sorted(key_of(n) or f"?{n}" for n in names))
    except ParseError:
        parents = None
    try:
        value: Lin | None = evaluate(parts[-1], resolve, gold.modulus)
    except ParseError:
        value = None
    return Step(key_of(lhs), parents, value)


# -- verification and rewards -----------------------------------------------------------------------------------
@dataclass
class Verification:
    verified: bool
    outcome_correct: bool
    process_acc: float
    answer: str | None
    steps_correct: int
    gold_nodes: int
    mismatches: dict[str, int] = field(default_factory=lambda: dict.fromkeys(MISMATCH_KINDS, 0))
    reason: str = ""

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def _failed(gold_nodes: int, reason: str, answer: str | None = None) -> Verification:
    mm = dict.fromkeys(MISMATCH_KINDS, 0)
    mm["missing"], mm["answer"] = gold_nodes, 1
    return Verification(False, False, 0.0, answer, 0, gold_nodes, mm, reason)


def verify(problem: dict[str, Any], completion: str) -> Verification:
    """Process-verify one completion against its problem record (see the module docstring)."""
    gold = gold_of(problem)
    n_gold = len(gold.keys)
    # Checked before any parsing: RL feeds whatever the policy sampled, and a reward function must answer every
    # input with a score, never raise. The length cap keeps one pathological sample from costing more than a batch.
    if not isinstance(completion, str):
        return _failed(n_gold, "not text")
    if len(completion) > MAX_CHARS:
        return _failed(n_gold, "too long")
    if not completion.strip():
        return _failed(n_gold, "empty")
    trace, answer_text = split_completion(completion)
    answer = parse_answer(answer_text, gold.modulus)
    steps, _ = parse_steps(trace, gold)
    # The gold answer is reduced like the model's: with a modulus, 13 and 3 are the same answer mod 10.
    gold_answer = gold.answer % gold.modulus if gold.modulus else gold.answer
    outcome = answer is not None and answer == gold_answer
    correct, mm = score_steps(steps, gold)
    mm["answer"] = int(not outcome)
    # Extra steps do not block VerifiedCorrect: a model may restate a distractor and still have reasoned right;
    # they cost only the process reward (capped there, see reward_of).
    verified = outcome and correct == n_gold
    reason = "" if verified else failure_reason(steps, answer_text, answer, mm)
    shown = None if answer_text is None else answer_text.strip()[:64]  # the stored answer is bounded like the input
    return Verification(verified, outcome, correct / n_gold if n_gold else 0.0, shown, correct, n_gold, mm, reason)


def score_steps(steps: list[Step], gold: Gold) -> tuple[int, dict[str, int]]:
    """(correct steps, mismatch counts without ``answer``) of parsed steps against the gold nodes."""
    mm = dict.fromkeys(MISMATCH_KINDS, 0)
    first: dict[str, Step] = {}
    for st in steps:
        # Only a quantity's first step counts: a trace that writes "c = 5" then "c = 7" must not pick the right one
        # after the fact, so a repeat is an extra step and the first value stands.
        if st.key not in gold.values or st.key in first:
            mm["extra"] += 1
        else:
            first[st.key] = st
    correct = 0
    for key in gold.keys:
        got = first.get(key)
        if got is None:
            mm["missing"] += 1
            continue
        # Value and dependency are judged apart: a right number reached from the wrong quantities (a lucky or
        # copied value) is a dependency mismatch, and the right quantities with an arithmetic slip a value one.
        ok_value = got.value is not None and got.value == gold.values[key].mod(gold.modulus)
        ok_parents = got.parents == gold.parents[key]
        mm["value"] += not ok_value
        mm["dependency"] += not ok_parents
        correct += ok_value and ok_parents
    return correct, mm


def failure_reason(steps: list[Step], answer_text: str | None, answer: int | None, mm: dict[str, int]) -> str:
    """The one reason an unverified completion is counted under, the most basic failure first."""
    # Format failures first: they say the model did not follow the output format at all, which the per-step
    # counts cannot show (a trace without steps has every node "missing").
    if not steps:
        return "unparseable"
    if answer_text is None:
        return "no answer"
    if answer is None:
        return "bad answer"
    # Then the first kind of mismatch in the order a reader checks a solution: the answer, then the steps.
    for kind, why in (
        ("answer", "wrong answer"),
        ("value", "wrong value"),
        ("dependency", "wrong dependency"),
        ("missing", "missing step"),
    ):
        if mm[kind]:
            return why
    return "unverified"


def reward_of(v: Verification, kind: Literal["outcome", "process", "strict"] = "process") -> float:
    """The reward of a verification (DESIGN §1.3)."""
    if kind == "outcome":
        return float(v.outcome_correct)
    if kind == "strict":
        return float(v.verified)
    if kind != "process":
        raise ValueError(f"unknown reward kind {kind!r} (outcome, process or strict)")
    # A wrong answer earns nothing, however good the trace looks: otherwise the policy could farm process credit by
    # copying the problem's facts as steps and never finishing the computation.
    if not v.outcome_correct or v.gold_nodes == 0:
        return 0.0
    m = v.mismatches
    # Extra steps are capped at |V| so that a long restatement of distractors cannot push the penalty of an otherwise
    # right trace below that of a trace with every step wrong.
    penalty = m["value"] + m["dependency"] + m["missing"] + min(m["extra"], v.gold_nodes) + m["answer"]
    process = max(0.0, 1.0 - penalty / v.gold_nodes)
    # Mostly process: among right answers, the reward ranks traces by how many steps are right (DESIGN §1.3).
    return 0.2 * float(v.outcome_correct) + 0.8 * process


def reward(problem: dict[str, Any], completion: str, kind: Literal["outcome", "process", "strict"] = "process") -> float:
    """Outcome, process or strict reward of one completion (the RL reward and the eval metric)."""
    return reward_of(verify(problem, completion), kind)


# -- sample rows and summaries ---------------------------------------------------------------------------------
def sample_row(problem: dict[str, Any], sample: int, completion: str) -> dict[str, Any]:
    """One verified completion in plain JSON types: the row that :mod:`midtrain.synth.summary` aggregates.

    ``verify`` is looked up at call time (tests replace it with a stub).
    """
    v = verify(problem, completion)
    return {
        "id": problem["id"],
        "sample": sample,
        "op": problem.get("op"),
        "context": problem.get("context"),
        "mode": problem.get("mode"),
        "completion": completion,
        "answer": v.answer,
        "gold": plain(problem.get("answer")),
        "verified": bool(v.verified),
        "outcome_correct": bool(v.outcome_correct),
        "correct": bool(v.verified),
        "process_acc": float(v.process_acc),
        "reason": v.reason,
        "mismatches": {str(k): int(x) for k, x in v.mismatches.items()},
        "rewards": {kind: reward_of(v, kind) for kind in ("outcome", "process", "strict")},
    }


def plain(x: Any) -> Any:
    """``x`` in JSON types (anything else as its string)."""
    if x is None or isinstance(x, (bool, int, float, str)):
        return x
    if isinstance(x, (list, tuple, set)):
        return [plain(v) for v in x]
    if isinstance(x, dict):
        return {str(k): plain(v) for k, v in x.items()}
    return str(x)


def summarize_completions(
    problems: list[dict[str, Any]], completions: dict[str, list[str]], ks: Sequence[int] = DEFAULT_KS
) -> dict[str, Any]:
    """The ``synth verify --json`` summary of several completions per problem: :func:`midtrain.synth.summary.flatten`
    of :func:`midtrain.synth.summary.summarize` (overall keys at the top, then ``by_op``/``by_context``/``by_mode``).

    Problems without completions are counted as ``unanswered``; completions for an id that is not among
    ``problems`` raise a KeyError naming it. pass@k is reported for every k in ``ks`` that each answered problem
    of a group has enough samples for.
    """
    by_id = {p["id"]: p for p in problems}
    stray = [i for i in completions if i not in by_id]
    if stray:
        raise KeyError(f"completions for unknown problem id '{stray[0]}'")
    rows = [sample_row(by_id[pid], j, c) for pid, outs in completions.items() for j, c in enumerate(outs)]
    return flatten(summarize(rows, problems, ks=ks))


PROBLEM_FIELDS = ("id", "op", "context", "mode", "render", "answer", "graph", "prompt", "completion")


@dataclass
class VerifyConfig(Config):
    problems: str = param("", "Problem JSONL written by 'synth generate'.", path="file")
    completions: str | None = param(
        None, "JSONL of {id, completion} lines (several per id allowed); default: the problems' own gold completions.", path="file"
    )
    ks: list[int] = param(list(DEFAULT_KS), "k values of pass@k (values above the samples per problem are skipped).", ge=1)

    def check(self) -> None:
        if not self.problems:
            raise ConfigError("key 'problems': give the problem JSONL (--problems problems.jsonl)")
        if not self.ks:
            raise ConfigError("key 'ks': give at least one k")


@dataclass
class VerifyResult:
    data: dict[str, Any]

    def to_dict(self) -> dict[str, Any]:
        return self.data

    def summary(self) -> str:
        d = self.data
        lines = [
            f"synth verify: {d['samples']} completions of {d['n']} problems ({d['unanswered']} without completions)",
            f"verified_acc {d['verified_acc']:.4f}  process_acc {d['process_acc']:.4f}  outcome_acc "
            f"{d['outcome_acc']:.4f}  correct answer, wrong trace: {d['correct_answer_wrong_trace']} "
            f"(hacking rate {d['hacking_rate']:.4f})",
            "reward   " + "  ".join(f"{k} {v:.4f}" for k, v in d["reward"].items()),
            "pass@k   " + ("  ".join(f"@{k} {v:.4f}" for k, v in d["verified_pass_at_k"].items()) or "-"),
            "mismatch " + "  ".join(f"{k} {v}" for k, v in d["mismatches"].items()),
            "reasons  " + "  ".join(f"{k}: {v}" for k, v in d["reasons"].items()),
        ]
        for key in ("by_op", "by_context", "by_mode"):
            label = key[3:]
            lines.append(f"\n{label:<10} {'problems':>8} {'samples':>8} {'verified':>9} {'process':>9} {'outcome':>9} {'hacking':>9}")
            for g, s in d[key].items():
                lines.append(
                    f"{g:<10} {s['n']:>8} {s['samples']:>8} {s['verified_acc']:>9.4f} {s['process_acc']:>9.4f} "
                    f"{s['outcome_acc']:>9.4f} {s['hacking_rate']:>9.4f}"
                )
        return "\n".join(lines)


def load_problems(path: str) -> list[dict[str, Any]]:
    """Problem records (:func:`midtrain.synth.summary.load_problems`), each checked to be verifiable."""
    recs = load_problem_records(path, required=PROBLEM_FIELDS)
    for rec in recs:
        try:
            gold_of(rec)
        except (KeyError, TypeError, ValueError, IndexError, AttributeError) as e:
            raise DataError(f"{where(rec, path)}: not a synthetic problem record (bad graph: {type(e).__name__} {e})") from None
    return recs


def load_completions(path: str, ids: set[str]) -> dict[str, list[str]]:
    out: dict[str, list[str]] = {}
    for rec in iter_jsonl(path):
        line = rec.get("_line", "?")
        for key in ("id", "completion"):
            if key not in rec:
                raise DataError(f"{path}:{line}: record has no '{key}' field")
        if not isinstance(rec["completion"], str):
            raise DataError(f"{path}:{line}: 'completion' must be a string")
        pid = str(rec["id"])
        if pid not in ids:
            raise DataError(f"{path}:{line}: id '{pid}' is not among the problems")
        out.setdefault(pid, []).append(rec["completion"])
    if not out:
        raise DataError(f"empty dataset: {path} has no completions")
    return out


def run(cfg: VerifyConfig) -> VerifyResult:
    """Verify completions against problems (see the module docstring)."""
    problems = load_problems(cfg.problems)
    if cfg.completions:
        completions = load_completions(cfg.completions, {p["id"] for p in problems})
    else:
        completions = {p["id"]: [p["completion"]] for p in problems}
    return VerifyResult(summarize_completions(problems, completions, ks=cfg.ks))


__all__ = [
    "MAX_CHARS",
    "MISMATCH_KINDS",
    "DEFAULT_KS",
    "Verification",
    "Gold",
    "Step",
    "gold_of",
    "split_completion",
    "parse_answer",
    "parse_steps",
    "verify",
    "reward",
    "reward_of",
    "sample_row",
    "score_steps",
    "failure_reason",
    "summarize_completions",
    "VerifyConfig",
    "VerifyResult",
    "run",
]
