"""Scoring checked against the datasets' own gold: reference solutions / answers score ≥ 99%, perturbed answers 0.

Every miss is listed, with its reason, in ``fixtures/gold_misses.json``; the test fails on any unlisted miss and
on any listed entry that no longer misses. The full pass over all benchmarks takes ~1 min (slow); a quick pass
over the first 25 problems of each benchmark runs always.
"""

from __future__ import annotations

import json
import re

import pytest
from eval_support import FIXTURES

from midtrain.eval.benchmarks import load_benchmark
from midtrain.eval.scoring import score
from shared_support import needs_benchmarks

MATH = ["gsm8k", "math500", "amc23", "aime2024", "aime2025", "olympiadbench"]
CHOICE = ["gpqa_diamond", "mmlu_stem"]
WITH_SOLUTIONS = {"gsm8k", "math500", "aime2024"}  # solutions that state the final answer (#### or \boxed)
KNOWN = json.loads((FIXTURES / "gold_misses.json").read_text(encoding="utf-8"))


def perturb(answer: str) -> str:
    """A wrong answer: the first digit incremented (9 → 1), or '+1' appended when there is no digit."""
    m = re.search(r"\d", answer)
    if not m:
        return answer + "+1"
    d = int(m.group())
    return answer[: m.start()] + str(d + 1 if d < 9 else 1) + answer[m.end() :]


def as_completion(answer: str) -> str:
    return "The final answer is $\\boxed{" + answer + "}$."


def gold_pass(name: str, limit: int = 0) -> dict:
    bench, records, _ = load_benchmark(name, limit=limit)
    misses, perturbed, counts = [], [], {"solution": [0, 0], "answer": [0, 0]}
    for rec in records:
        modes = {"answer": as_completion(rec["answer"])}
        if name in WITH_SOLUTIONS:
            modes["solution"] = rec["solution"]
        for mode, completion in modes.items():
            ok = score(completion, rec, bench.kind).correct
            counts[mode][0] += ok
            counts[mode][1] += 1
            if not ok:
                misses.append({"benchmark": name, "id": rec["id"], "mode": mode})
        wrong = perturb(rec["answer"]) if bench.kind == "math" else "ABCD"[("ABCD".index(rec["answer"]) + 1) % 4]
        if score(as_completion(wrong), rec, bench.kind).correct:
            perturbed.append({"benchmark": name, "id": rec["id"], "perturbed": wrong})
    return {"misses": misses, "perturbed": perturbed, "counts": counts, "ids": {r["id"] for r in records}}


def _check(name: str, limit: int = 0) -> None:
    got = gold_pass(name, limit)
    key = lambda m: (m["benchmark"], m["id"], m["mode"])  # noqa: E731
    listed = {key(m) for m in KNOWN["misses"] if m["benchmark"] == name and m["id"] in got["ids"]}
    assert {key(m) for m in got["misses"]} == listed, got["misses"]
    listed_p = {(m["benchmark"], m["id"]) for m in KNOWN["perturbed"] if m["benchmark"] == name and m["id"] in got["ids"]}
    assert {(m["benchmark"], m["id"]) for m in got["perturbed"]} == listed_p, got["perturbed"]
    for mode, (ok, n) in got["counts"].items():
        if n:
            assert ok / n >= 0.99, (name, mode, ok, n)
    assert len(got["perturbed"]) == 0  # a perturbed answer scores 0 everywhere


@needs_benchmarks
@pytest.mark.parametrize("name", MATH + CHOICE)
def test_gold_scoring_quick(name: str) -> None:
    _check(name, limit=25)


@needs_benchmarks
@pytest.mark.slow
@pytest.mark.parametrize("name", MATH + CHOICE)
def test_gold_scoring_full(name: str) -> None:
    _check(name)


def test_every_listed_miss_has_a_reason() -> None:
    for m in KNOWN["misses"] + KNOWN["perturbed"]:
        assert m.get("reason"), m
