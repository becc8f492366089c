"""Benchmark metrics from per-sample rows: accuracy, mean@k, unbiased pass@k, maj@k, lengths; macro averages.

- :func:`summarize_benchmark`: one benchmark's rows (``id``, ``sample``, ``correct``, ``vote``, ``answer``,
  ``tokens``, ``thinking_tokens``, ``finished``) → ``n`` (problems), ``samples``, ``k`` (fewest samples of a
  problem), ``accuracy`` (mean over all samples), ``mean_at_k`` (mean over problems of the per-problem mean:
  the papers' mean@16 / mean@64), ``pass_at_k`` (unbiased estimator, k = 1, 2, 4, … ≤ k), ``maj_at_k`` (the most
  frequent extracted answer, by its canonical form, is right), ``no_answer`` / ``no_answer_rate``,
  ``response_tokens_mean``, ``thinking_tokens_mean``, ``truncated_rate``.
- :func:`macro_averages`: the plain mean over benchmarks and PRISM's domain-weighted macro average — the mean over
  domains of each domain's mean over its benchmarks, domains equally weighted unless weights are given *(default:
  PRISM does not publish its weights)*.

The estimators themselves are :mod:`midtrain.metrics` (one implementation each).
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence
from typing import Any

from midtrain.metrics import ks_for, majority_vote, mean_at_k, mean_pass_at_k


def _group(rows: Sequence[dict[str, Any]]) -> dict[str, list[dict[str, Any]]]:
    by_id: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for r in rows:
        by_id[str(r["id"])].append(r)
    for v in by_id.values():
        v.sort(key=lambda r: r.get("sample", 0))
    return by_id


def _mean(xs: Sequence[float | int | None]) -> float | None:
    vals = [x for x in xs if x is not None]
    return round(sum(vals) / len(vals), 6) if vals else None


def summarize_benchmark(rows: Sequence[dict[str, Any]], ks: Sequence[int] | None = None) -> dict[str, Any]:
    """Metrics of one benchmark from its per-sample rows (``id``, ``sample``, ``correct``, ``vote``, tokens…)."""
    by_id = _group(rows)
    correct = [[bool(r["correct"]) for r in v] for v in by_id.values()]
    k_min = min((len(c) for c in correct), default=0)
    ks = [k for k in (ks or ks_for(k_min)) if k <= k_min]
    maj = 0
    for v in by_id.values():
        choice = majority_vote([r.get("vote") for r in v])
        maj += choice is not None and any(r["correct"] for r in v if r.get("vote") == choice)
    n_samples = sum(len(c) for c in correct)
    no_answer = sum(1 for r in rows if r.get("answer") is None)
    return {
        "n": len(by_id),
        "samples": n_samples,
        "k": k_min,
        "accuracy": round(sum(map(sum, correct)) / n_samples, 6) if n_samples else 0.0,
        "mean_at_k": round(mean_at_k(correct), 6),
        "pass_at_k": {str(k): round(mean_pass_at_k(correct, k), 6) for k in ks},
        "maj_at_k": round(maj / len(by_id), 6) if by_id else 0.0,
        "no_answer": no_answer,
        "no_answer_rate": round(no_answer / n_samples, 6) if n_samples else 0.0,
        "response_tokens_mean": _mean([r.get("tokens") for r in rows]),
        "thinking_tokens_mean": _mean([r.get("thinking_tokens") for r in rows]),
        "truncated_rate": _mean([0 if r.get("finished", True) else 1 for r in rows]),
    }


def macro_averages(
    per_bench: dict[str, dict[str, Any]], domains: dict[str, str], weights: dict[str, float] | None = None, metric: str = "mean_at_k"
) -> dict[str, Any]:
    """Plain macro average over benchmarks and PRISM's domain-weighted macro average (see module docstring)."""
    if not per_bench:
        return {"macro_avg": None, "domain_weighted_avg": None, "domains": {}}
    vals = {b: s[metric] for b, s in per_bench.items()}
    by_domain: dict[str, list[float]] = defaultdict(list)
    for b, v in vals.items():
        by_domain[domains.get(b, "custom")].append(v)
    dom = {d: sum(v) / len(v) for d, v in by_domain.items()}
    w = {d: (weights or {}).get(d, 1.0 if not weights else 0.0) for d in dom}
    total = sum(w.values())
    return {
        "macro_avg": round(sum(vals.values()) / len(vals), 6),
        "domain_weighted_avg": round(sum(w[d] * dom[d] for d in dom) / total, 6) if total > 0 else None,
        "domains": {d: round(v, 6) for d, v in sorted(dom.items())},
        "domain_weights": w,
    }


__all__ = ["summarize_benchmark", "macro_averages"]
