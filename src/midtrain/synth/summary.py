"""Synthetic-world summaries: one schema for ``midtrain eval``, ``midtrain eval score --synthetic`` and
``midtrain synth verify``, plus the problem loading of evaluation.

Each completion is verified once, by :func:`midtrain.synth.verify.sample_row` (the verifier that also computes the
RL rewards, so evaluation and reward cannot drift), into one plain-JSON **sample row**: ``id``, ``sample``,
``verified``, ``outcome_correct``, ``process_acc``, ``answer``, ``reason``, ``mismatches``, ``rewards`` (and
``tokens`` when generated here). :func:`group_metrics` aggregates a group of rows into:

- ``n`` problems, ``samples`` completions, ``k`` = the fewest completions of a problem;
- ``verified_acc`` (share of completions that are VerifiedCorrect), ``process_acc`` (mean ProcessAcc),
  ``outcome_acc`` (share with the right answer);
- ``verified_pass_at_k`` / ``outcome_pass_at_k``: unbiased pass@k (:mod:`midtrain.metrics`) on VerifiedCorrect /
  on the answer alone, for every k of ``ks`` (default 1, 2, 4, …) that each problem of the group has samples for;
- ``correct_answer_wrong_trace`` (count), ``hacking_rate`` (its share of all completions) and ``hacking_share``
  (its share of the outcome-correct ones): reward hacking in the Interplay sense;
- ``no_answer_rate``; ``reward``: mean outcome, process and strict rewards; ``mismatches``: totals per kind;
  ``reasons``: completions per verdict reason (``verified`` for the verified ones); ``response_tokens_mean``
  (None when the rows carry no token counts).

:func:`summarize` groups the rows: ``overall``, ``unanswered`` (problems without a completion), and ``by_op``,
``by_context``, ``by_mode``; with named op ranges (:class:`OpRangeConfig`, the ``ops`` section of the verbs that
group by them: ``id`` 2–10, ``edge`` 11–14, ``hard`` 15–20 by default in evaluation) also ``ranges``, ``by_range`` and ``by_range_context_mode``. ``midtrain eval`` stores it as the
``synthetic`` part of ``summary.json``; the two verbs that print one summary show :func:`flatten` of it (the
``overall`` keys at the top level).
"""

from __future__ import annotations

from collections import Counter, defaultdict
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from midtrain.config import Config, param
from midtrain.data.corpus import iter_records
from midtrain.data.records import require
from midtrain.errors import ConfigError, DataError, MidtrainError
from midtrain.metrics import ks_for, mean_pass_at_k
from midtrain.synth.generate import SynthConfig, generate_problems
from midtrain.synth.mix import SCALES

REQUIRED = ("id", "op", "prompt")
VERIFIABLE = (*REQUIRED, "answer", "graph")  # what process verification of a sample reads
REWARD_KINDS = ("outcome", "process", "strict")


def load_problems(
    path: str | Path, *, ranges: dict[str, list[int]] | None = None, limit: int = 0, required: Sequence[str] = REQUIRED
) -> list[dict[str, Any]]:
    """Synthetic problem records (``required`` fields, unique ids as strings, an integer ``op``), optionally only
    the first ``limit`` whose op lies inside ``ranges``; errors name file and line."""
    out: list[dict[str, Any]] = []
    seen: dict[str, Any] = {}
    for rec in iter_records(path):
        require(rec, required, path)
        rec["id"] = str(rec["id"])
        line = rec.get("_line", "?")
        if rec["id"] in seen:
            raise DataError(f"{path}:{line}: duplicate id '{rec['id']}' (first on line {seen[rec['id']]})")
        seen[rec["id"]] = line
        if not isinstance(rec["op"], int):
            raise DataError(f"{path}:{line}: 'op' must be an integer, got {rec['op']!r}")
        if ranges and not any(lo <= rec["op"] <= hi for lo, hi in ranges.values()):
            continue
        out.append(rec)
        if limit and len(out) >= limit:
            break
    if not out:
        raise DataError(f"no synthetic problems in {path}" + (" inside the selected op ranges" if ranges else ""))
    return out


PAPER_RANGES = {"id": [2, 10], "edge": [11, 14], "hard": [15, 20]}  # DESIGN §1.3 (Interplay)


def scale_ranges(scale: str) -> dict[str, list[int]]:
    """Named op ranges of a difficulty scale, from ``midtrain.synth.mix.SCALES`` (paper, tiny)."""
    if scale not in SCALES:
        raise MidtrainError(f"unknown op scale '{scale}' (known: {', '.join(SCALES)})")
    return {name: list(r) for name, r in zip(("id", "edge", "hard"), SCALES[scale])}


@dataclass
class OpRangeConfig(Config):
    """The named op ranges results are grouped by: the ``ops`` section of ``eval``, ``eval score`` and ``synth diagnose``."""

    scale: Literal["paper", "tiny"] = param(
        "paper", "Named op ranges: paper (id 2-10, edge 11-14, hard 15-20) or tiny (id 2-5, edge 6-8, hard 9-12)."
    )
    ranges: dict[str, list[int]] = param({}, "Custom named op ranges {name: [lo, hi]} (inclusive); replace the scale when given.", ge=0)

    def check(self) -> None:
        for name, r in self.ranges.items():
            if len(r) != 2 or r[0] > r[1]:
                raise ConfigError(f"key 'ranges.{name}': expected [lo, hi] with lo <= hi, got {r}")

    def resolve(self) -> dict[str, list[int]]:
        """Range name → ``[lo, hi]``: the custom ranges, else the scale's."""
        return {k: list(v) for k, v in self.ranges.items()} or scale_ranges(self.scale)


# The flat keys of the section before it was one (``RENAMED`` of the stages that have it).
OPS_RENAMED = {"op_scale": "ops.scale", "op_ranges": "ops.ranges"}


def synth_config(spec: dict[str, Any], key: str) -> Any:
    """A validated ``midtrain.synth.generate.SynthConfig`` from a mapping (errors name ``key``)."""
    if not isinstance(spec, dict):
        raise ConfigError(f"key '{key}': expected a mapping of SynthConfig fields, got {spec!r}")
    try:
        return SynthConfig.from_dict({**spec, "out": ""}, prefix=key + ".")
    except ConfigError as e:
        raise ConfigError(str(e) if key in str(e) else f"{key}: {e}") from None


def problems_from_specs(
    specs: Sequence[dict[str, Any]], *, ranges: dict[str, list[int]] | None = None, limit: int = 0
) -> list[dict[str, Any]]:
    """Problems from ``midtrain.synth.generate.generate_problems``, one call per spec, de-duplicated by id, in order."""

    out: dict[str, dict[str, Any]] = {}
    for i, spec in enumerate(specs):
        for rec in generate_problems(synth_config(spec, f"synth_generate[{i}]")):
            if ranges and not any(lo <= rec["op"] <= hi for lo, hi in ranges.values()):
                continue
            out.setdefault(str(rec["id"]), {**rec, "id": str(rec["id"])})
    recs = list(out.values())[: limit or None]
    if not recs:
        raise DataError("synth_generate produced no problems" + (" inside the selected op ranges" if ranges else ""))
    return recs


def _rate(count: float, total: int) -> float:
    return round(count / total, 6) if total else 0.0


def group_metrics(rows: Sequence[dict[str, Any]], ks: Sequence[int] | None = None) -> dict[str, Any]:
    """Aggregates of one group of sample rows (see the module docstring)."""
    by_id: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for r in rows:
        by_id[str(r["id"])].append(r)
    verified = [[bool(r["verified"]) for r in v] for v in by_id.values()]
    outcome = [[bool(r["outcome_correct"]) for r in v] for v in by_id.values()]
    k_min = min((len(v) for v in verified), default=0)
    ks = [k for k in (ks or ks_for(k_min)) if 1 <= k <= k_min]
    n = len(rows)
    hacked = sum(1 for r in rows if r["outcome_correct"] and not r["verified"])
    n_outcome = sum(1 for r in rows if r["outcome_correct"])
    tokens = [r["tokens"] for r in rows if r.get("tokens") is not None]
    mismatches: Counter[str] = Counter()
    for r in rows:
        if isinstance(r.get("mismatches"), dict):
            mismatches.update(r["mismatches"])
    # rows of an older samples.jsonl (a resumed eval) may lack rewards: average over the rows that have them
    rewarded = [r["rewards"] for r in rows if isinstance(r.get("rewards"), dict)]
    return {
        "n": len(by_id),
        "samples": n,
        "k": k_min,
        "verified_acc": _rate(sum(map(sum, verified)), n),
        "process_acc": _rate(sum(float(r["process_acc"]) for r in rows), n),
        "outcome_acc": _rate(n_outcome, n),
        "verified_pass_at_k": {str(k): round(mean_pass_at_k(verified, k), 6) for k in ks},
        "outcome_pass_at_k": {str(k): round(mean_pass_at_k(outcome, k), 6) for k in ks},
        "correct_answer_wrong_trace": hacked,
        "hacking_rate": _rate(hacked, n),
        "hacking_share": _rate(hacked, n_outcome),
        "no_answer_rate": _rate(sum(1 for r in rows if r.get("answer") is None), n),
        "reward": {k: _rate(sum(float(w.get(k, 0.0)) for w in rewarded), len(rewarded)) for k in REWARD_KINDS},
        "mismatches": dict(mismatches),
        "reasons": dict(Counter(r.get("reason") or "verified" for r in rows).most_common()),
        "response_tokens_mean": round(sum(tokens) / len(tokens), 3) if tokens else None,
    }


def range_of(op: int, ranges: dict[str, list[int]]) -> str:
    for name, (lo, hi) in ranges.items():
        if lo <= op <= hi:
            return name
    return "other"


def summarize(
    rows: Sequence[dict[str, Any]],
    problems: Sequence[dict[str, Any]],
    *,
    ks: Sequence[int] | None = None,
    ranges: dict[str, list[int]] | None = None,
) -> dict[str, Any]:
    """The synthetic summary of sample rows of ``problems`` (see the module docstring)."""
    ranges = ranges or {}
    meta = {str(p["id"]): p for p in problems}
    keys = ("by_range", "by_op", "by_context", "by_mode", "by_range_context_mode") if ranges else ("by_op", "by_context", "by_mode")
    groups: dict[str, dict[str, list[dict[str, Any]]]] = {k: defaultdict(list) for k in keys}
    for r in rows:
        p = meta.get(str(r["id"]), {})
        op = int(p.get("op", r.get("op") or 0))
        ctx, mode, rng = str(p.get("context", r.get("context"))), str(p.get("mode", r.get("mode"))), range_of(op, ranges)
        for key, name in (
            ("by_range", rng),
            ("by_op", str(op)),
            ("by_context", ctx),
            ("by_mode", mode),
            ("by_range_context_mode", f"{rng}|{ctx}|{mode}"),
        ):
            if key in groups:
                groups[key][name].append(r)
    answered = {str(r["id"]) for r in rows}
    out: dict[str, Any] = {"overall": group_metrics(rows, ks), "unanswered": sum(1 for i in meta if i not in answered)}
    if ranges:
        out["ranges"] = ranges
    order = {name: i for i, name in enumerate(ranges)}
    for key, g in groups.items():
        names = sorted(g, key=lambda s: (int(s) if key == "by_op" else order.get(s, len(order)), s))
        out[key] = {name: group_metrics(g[name], ks) for name in names}
    return out


def flatten(summary: dict[str, Any]) -> dict[str, Any]:
    """One level of a :func:`summarize` result: the ``overall`` keys first, then the rest (the printed form)."""
    return {**summary["overall"], **{k: v for k, v in summary.items() if k != "overall"}}


__all__ = [
    "load_problems",
    "problems_from_specs",
    "scale_ranges",
    "OpRangeConfig",
    "OPS_RENAMED",
    "synth_config",
    "group_metrics",
    "summarize",
    "flatten",
    "range_of",
    "REWARD_KINDS",
]
