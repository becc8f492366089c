"""Synthetic-world evaluation helpers for ``midtrain eval``: load problems, verify samples, aggregate.

Each completion is checked by ``midtrain.synth.verify(problem, completion)`` — the same verifier that computes
the process reward, so evaluation and reward cannot drift — and stored as one row (``verified``,
``outcome_correct``, ``process_acc``, ``answer``, ``reason``, mismatch counts). Aggregates per group of samples
(:func:`group_metrics`): ``verified_pass_at_k`` (unbiased pass@k on VerifiedCorrect; pass@1 = verified accuracy),
``outcome_pass_at_k`` (the same on the answer alone), mean ``process_acc``, ``outcome_acc``, ``verified_acc``,
and ``hacking_rate`` = share of samples whose answer is right but whose trace is not verified
(``hacking_share`` = the same among outcome-correct samples). Groups: overall, each named op range
(``id`` 2–10, ``edge`` 11–14, ``hard`` 15–20 by default), each op, context, mode, and each range × context × mode.
"""

from __future__ import annotations

from collections import defaultdict
from pathlib import Path
from typing import Any, Sequence

from midtrain.data import iter_records, require
from midtrain.errors import ConfigError, DataError, MidtrainError
from midtrain.metrics import ks_for, mean_pass_at_k
from midtrain.synth.generate import SynthConfig, generate_problems
from midtrain.synth.mix import SCALES
from midtrain.synth.verify import verify

REQUIRED = ("id", "op", "prompt")


def load_problems(path: str | Path, *, ranges: dict[str, list[int]] | None = None, limit: int = 0) -> list[dict[str, Any]]:
    """Synthetic problem records (``id``, ``op``, ``prompt`` …), optionally only ops inside ``ranges``."""
    out: list[dict[str, Any]] = []
    seen: set[str] = set()
    for rec in iter_records(path):
        require(rec, REQUIRED, path)
        rec["id"] = str(rec["id"])
        if rec["id"] in seen:
            raise DataError(f"{path}:{rec.get('_line', '?')}: duplicate id '{rec['id']}'")
        seen.add(rec["id"])
        if not isinstance(rec["op"], int):
            raise DataError(f"{path}:{rec.get('_line', '?')}: 'op' must be an integer, got {rec['op']!r}")
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


def synth_config(spec: dict[str, Any], key: str) -> Any:
    """A validated ``midtrain.synth.SynthConfig`` from a mapping (errors name ``key``)."""
    if not isinstance(spec, dict):
        raise ConfigError(f"key '{key}': expected a mapping of SynthConfig fields, got {spec!r}")
    try:
        return SynthConfig.from_dict({**spec, "out": ""}, prefix=key + ".")
    except ConfigError as e:
        raise ConfigError(str(e) if key in str(e) else f"{key}: {e}") from None


def generate(specs: Sequence[dict[str, Any]], *, ranges: dict[str, list[int]] | None = None, limit: int = 0) -> list[dict[str, Any]]:
    """Problems from ``midtrain.synth.generate_problems``, one call per spec, de-duplicated by id, in order."""

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


def sample_row(problem: dict[str, Any], sample: int, completion: str) -> dict[str, Any]:
    """One verified sample: the synth verifier's verdict in plain JSON types."""
    v = verify(problem, completion)
    mism = getattr(v, "mismatches", None) or {}
    return {
        "id": problem["id"], "sample": sample, "op": problem.get("op"), "context": problem.get("context"),
        "mode": problem.get("mode"), "completion": completion, "answer": _plain(getattr(v, "answer", None)),
        "gold": _plain(problem.get("answer")), "verified": bool(v.verified), "outcome_correct": bool(v.outcome_correct),
        "correct": bool(v.verified), "process_acc": float(v.process_acc), "reason": getattr(v, "reason", None),
        "mismatches": {str(k): _plain(x) for k, x in mism.items()} if isinstance(mism, dict) else _plain(mism),
    }


def _plain(x: Any) -> Any:
    if x is None or isinstance(x, (bool, int, float, str)):
        return x
    if isinstance(x, (list, tuple, set)):
        return [_plain(v) for v in x]
    if isinstance(x, dict):
        return {str(k): _plain(v) for k, v in x.items()}
    return str(x)


def group_metrics(rows: Sequence[dict[str, Any]], ks: Sequence[int] | None = None) -> dict[str, Any]:
    """Aggregates of one group of synthetic sample rows (see the module docstring)."""
    by_id: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for r in rows:
        by_id[str(r["id"])].append(r)
    verified = [[bool(r["verified"]) for r in v] for v in by_id.values()]
    outcome = [[bool(r["outcome_correct"]) for r in v] for v in by_id.values()]
    k_min = min((len(v) for v in verified), default=0)
    ks = [k for k in (ks or ks_for(k_min)) if k <= k_min]
    n = len(rows)
    hacked = sum(1 for r in rows if r["outcome_correct"] and not r["verified"])
    n_outcome = sum(1 for r in rows if r["outcome_correct"])
    tokens = [r["tokens"] for r in rows if r.get("tokens") is not None]
    return {
        "n": len(by_id),
        "samples": n,
        "k": k_min,
        "verified_pass_at_k": {str(k): round(mean_pass_at_k(verified, k), 6) for k in ks},
        "outcome_pass_at_k": {str(k): round(mean_pass_at_k(outcome, k), 6) for k in ks},
        "verified_acc": round(sum(map(sum, verified)) / n, 6) if n else 0.0,
        "outcome_acc": round(n_outcome / n, 6) if n else 0.0,
        "process_acc": round(sum(float(r["process_acc"]) for r in rows) / n, 6) if n else 0.0,
        "hacking_rate": round(hacked / n, 6) if n else 0.0,
        "hacking_share": round(hacked / n_outcome, 6) if n_outcome else 0.0,
        "no_answer_rate": round(sum(1 for r in rows if r.get("answer") is None) / n, 6) if n else 0.0,
        "response_tokens_mean": round(sum(tokens) / len(tokens), 3) if tokens else None,
    }


def range_of(op: int, ranges: dict[str, list[int]]) -> str:
    for name, (lo, hi) in ranges.items():
        if lo <= op <= hi:
            return name
    return "other"


def summarize(rows: Sequence[dict[str, Any]], problems: Sequence[dict[str, Any]], *, ks: Sequence[int] | None = None,
              ranges: dict[str, list[int]] | None = None) -> dict[str, Any]:
    """Synthetic summary: ``overall``, ``by_range``, ``by_op``, ``by_context``, ``by_mode``, ``by_range_context_mode``."""
    ranges = ranges or {}
    meta = {p["id"]: p for p in problems}
    groups: dict[str, dict[str, list[dict[str, Any]]]] = {k: defaultdict(list) for k in
                                                          ("by_range", "by_op", "by_context", "by_mode", "by_range_context_mode")}
    for r in rows:
        p = meta.get(str(r["id"]), {})
        op = int(p.get("op", r.get("op") or 0))
        ctx, mode, rng = str(p.get("context", r.get("context"))), str(p.get("mode", r.get("mode"))), range_of(op, ranges)
        groups["by_range"][rng].append(r)
        groups["by_op"][str(op)].append(r)
        groups["by_context"][ctx].append(r)
        groups["by_mode"][mode].append(r)
        groups["by_range_context_mode"][f"{rng}|{ctx}|{mode}"].append(r)
    out: dict[str, Any] = {"overall": group_metrics(rows, ks), "ranges": ranges}
    order = {name: i for i, name in enumerate(ranges)}
    for key, g in groups.items():
        names = sorted(g, key=lambda s: (int(s) if key == "by_op" else order.get(s, len(order)), s))
        out[key] = {name: group_metrics(g[name], ks) for name in names}
    return out


__all__ = ["load_problems", "generate", "scale_ranges", "synth_config", "sample_row", "group_metrics", "summarize", "range_of"]
