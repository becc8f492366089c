"""Verification: gold traces verify, single corruptions are classified, rewards, pass@k, hostile input."""

from __future__ import annotations

import itertools
import math
import random
import time

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from midtrain.metrics import pass_at_k
from midtrain.synth.verify import (
    MAX_CHARS,
    Verification,
    reward,
    reward_of,
    summarize_completions,
    verify,
)

from .conftest import (
    CONTEXTS,
    extra_step,
    missing_step,
    one,
    problems,
    step_index,
    steps_of,
    wrong_answer,
    wrong_parent,
    wrong_value,
)

RENDERS = ["natural", "compact"]
MODES = ["forward", "reverse"]


# -- gold traces ------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("render", RENDERS)
@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("modulus", [None, 10])
def test_gold_verifies_across_ops_and_contexts(render, mode, modulus):
    recs = problems(ops="2-20", n=19 * 6, seed=11, mode=mode, render=render, modulus=modulus, contexts=tuple(CONTEXTS))
    assert {r["context"] for r in recs} == set(CONTEXTS)
    for r in recs:
        v = verify(r, r["completion"])
        assert v.verified and v.reason == "" and v.process_acc == 1.0, (v, r["prompt"], r["completion"])
        assert v.steps_correct == v.gold_nodes == sum(d["necessary"] for d in r["graph"]["nodes"])
        assert v.mismatches == dict.fromkeys(v.mismatches, 0)
        assert v.answer == r["answer"]
        assert [reward(r, r["completion"], k) for k in ("outcome", "process", "strict")] == [1.0, 1.0, 1.0]
        assert verify(r, r["prompt"] + r["completion"]).verified  # the prompt may be included


@given(
    seed=st.integers(0, 2**31),
    op=st.integers(2, 20),
    context=st.sampled_from(CONTEXTS),
    mode=st.sampled_from(MODES),
    render=st.sampled_from(RENDERS),
    modulus=st.sampled_from([None, 7, 10]),
    order=st.sampled_from(["shuffled", "dependency"]),
)
@settings(max_examples=250, deadline=None)
def test_gold_always_verifies(seed, op, context, mode, render, modulus, order):
    r = one(seed, op, context, mode, render, modulus, order)
    v = verify(r, r["completion"])
    assert v.verified, (v, r["completion"])


# -- single corruptions -----------------------------------------------------------------------------------------
def expect(v: Verification, *, outcome: bool, verified: bool = False, reason: str, **mismatch: int) -> None:
    want = {"value": 0, "dependency": 0, "missing": 0, "extra": 0, "answer": 0, **mismatch}
    assert v.mismatches == want, v
    assert v.outcome_correct is outcome and v.verified is verified and v.reason == reason, v


@given(
    seed=st.integers(0, 2**31),
    op=st.integers(2, 20),
    context=st.sampled_from(CONTEXTS),
    mode=st.sampled_from(MODES),
    render=st.sampled_from(RENDERS),
    modulus=st.sampled_from([None, 10]),
    pick=st.integers(0, 10**6),
)
@settings(max_examples=150, deadline=None)
def test_single_corruptions_are_classified(seed, op, context, mode, render, modulus, pick):
    r = one(seed, op, context, mode, render, modulus)
    g = r["graph"]
    nec = g["trace"]
    n_gold = len(nec)
    target = nec[pick % n_gold]

    v = verify(r, wrong_value(r, target))
    expect(v, outcome=True, reason="wrong value", value=1)
    assert v.steps_correct == n_gold - 1 and math.isclose(v.process_acc, 1 - 1 / n_gold)
    assert reward_of(v, "process") == pytest.approx(0.2 + 0.8 * (1 - 1 / n_gold))
    assert reward_of(v, "strict") == 0.0 and reward_of(v, "outcome") == 1.0

    v = verify(r, missing_step(r, target))
    expect(v, outcome=True, reason="missing step", missing=1)

    combos = [i for i in nec if g["nodes"][i]["parents"] and i != g["unknown"]]
    v = verify(r, wrong_parent(r, combos[pick % len(combos)]))
    expect(v, outcome=True, reason="wrong dependency", dependency=1)

    v = verify(r, wrong_answer(r))
    expect(v, outcome=False, reason="wrong answer", answer=1)
    assert v.process_acc == 1.0 and reward_of(v, "process") == 0.0 and reward_of(v, "strict") == 0.0

    extra = extra_step(r)
    if extra is not None:
        v = verify(r, extra)
        expect(v, outcome=True, verified=True, reason="", extra=1)  # an unneeded correct step is allowed
        assert reward_of(v, "strict") == 1.0
        assert reward_of(v, "process") == pytest.approx(0.2 + 0.8 * (1 - 1 / n_gold))


def test_repeated_step_is_extra_and_dropped_binding_is_dependency():
    r = one(3, 6, "zoo", "forward", "natural")
    steps = steps_of(r)
    dup = " " + " ".join(steps[:1] + steps) + f" </think> <answer> {r['answer']} </answer>"
    expect(verify(r, dup), outcome=True, verified=True, reason="", extra=1)
    first = r["graph"]["trace"][0]  # a constant that later steps use
    steps.pop(step_index(r, first))
    v = verify(r, " " + " ".join(steps) + f" </think> <answer> {r['answer']} </answer>")
    assert v.mismatches["missing"] == 1 and v.mismatches["dependency"] >= 1 and not v.verified


def test_reward_formula_on_hand_made_counts():
    v = Verification(False, True, 0.5, "3", 2, 4, {"value": 1, "dependency": 1, "missing": 0, "extra": 9, "answer": 0})
    assert reward_of(v, "process") == pytest.approx(0.2 + 0.8 * max(0.0, 1 - (1 + 1 + 4) / 4))
    v = Verification(False, True, 0.75, "3", 3, 4, {"value": 0, "dependency": 0, "missing": 1, "extra": 1, "answer": 0})
    assert reward_of(v, "process") == pytest.approx(0.2 + 0.8 * 0.5)
    v.outcome_correct = False
    assert reward_of(v, "process") == 0.0 and reward_of(v, "outcome") == 0.0
    with pytest.raises(ValueError):
        reward_of(v, "judge")


def test_answer_parsing_and_modulus():
    r = one(5, 5, "zoo", "forward", "compact", modulus=10)
    base = r["completion"].rsplit("<answer>", 1)[0]
    assert verify(r, base + f"<answer>{int(r['answer']) + 10}</answer>").outcome_correct  # residues mod 10
    assert verify(r, base + f"<answer> {r['answer']}.").outcome_correct  # no closing tag
    assert verify(r, base).reason == "no answer"
    assert verify(r, base + "<answer>five</answer>").reason == "bad answer"


# -- hostile completions ----------------------------------------------------------------------------------------
HOSTILE = {
    "empty": "",
    "spaces": " \n\t ",
    "10 MB": "x" * 10_000_000,
    "just over": "a=1." * (MAX_CHARS // 4 + 1),
    "binary": bytes(random.Random(0).randrange(256) for _ in range(50_000)).decode("latin-1"),
    "nested": "a=" + "(" * 30_000 + "1" + ")" * 30_000 + "</think><answer>",
    "nested small": "a=" + "(" * 5_000 + "1" + ")" * 5_000 + "</think><answer>x</answer>",
    "import": "__import__('os').system('rm -rf /')</think><answer>__import__('os')</answer>",
    "eval": "a=eval('1+1').</think><answer>eval('2')</answer>",
    "many steps": "a=1." * 16_000,
    "many defines": "Define the number of lions as a; " * 1_900,
    "we know": "We know " * 8_000,
    "equals": "=" * 65_000,
    "answers": "<answer>" * 8_000,
    "huge numbers": "a=" + "9" * 500 + "*" + "9" * 500 + "</think><answer>x</answer>",
    "unicode digits": "ψ=٣٣٣." * 5_000,
    "wide product": "a=" + "*".join(["b"] * 250),
    "not text": b"a=1",
}


@pytest.mark.parametrize("name", list(HOSTILE))
def test_hostile_completions_get_zero_with_a_reason(name):
    recs = [one(1, 10, "zoo", "reverse", "natural"), one(1, 10, "teachers", "forward", "compact", modulus=10)]
    for r in recs:
        t0 = time.perf_counter()
        v = verify(r, HOSTILE[name])
        assert time.perf_counter() - t0 < 2.0  # bounded (generous for a loaded machine)
        assert not v.verified and v.reason
        assert [reward(r, HOSTILE[name], k) for k in ("outcome", "process", "strict")] == [0.0, 0.0, 0.0]


# -- pass@k and summaries ---------------------------------------------------------------------------------------
def brute_pass_at_k(n: int, c: int, k: int) -> float:
    outcomes = [True] * c + [False] * (n - c)
    subsets = list(itertools.combinations(range(n), k))
    return sum(any(outcomes[i] for i in s) for s in subsets) / len(subsets)


def test_pass_at_k_matches_brute_force():
    for n in range(1, 8):
        for c in range(n + 1):
            for k in range(1, n + 1):
                assert pass_at_k(n, c, k) == pytest.approx(brute_pass_at_k(n, c, k), abs=1e-12)


def test_summary_pass_at_k_and_breakdowns():
    recs = list(problems(ops="3-5", n=6, seed=4, mode="mixed", contexts=("zoo", "movies")))
    correct_counts = [0, 1, 2, 3, 5, 1]
    completions = {r["id"]: [r["completion"]] * c + [wrong_answer(r)] * (5 - c) for r, c in zip(recs, correct_counts)}
    s = summarize_completions(recs, completions, ks=(1, 2, 5, 8))
    assert s["samples"] == 30 and s["n"] == 6 and s["k"] == 5 and s["unanswered"] == 0
    for k in (1, 2, 5):
        want = sum(brute_pass_at_k(5, c, k) for c in correct_counts) / 6
        assert s["verified_pass_at_k"][str(k)] == pytest.approx(want, abs=1e-6)
    assert "8" not in s["verified_pass_at_k"]  # more than the samples per problem
    assert s["outcome_pass_at_k"]["1"] == pytest.approx(s["verified_pass_at_k"]["1"], abs=1e-6)
    assert s["verified_acc"] == pytest.approx(sum(correct_counts) / 30, abs=1e-6)
    assert s["mismatches"]["answer"] == 30 - sum(correct_counts)
    assert s["reasons"] == {"verified": 12, "wrong answer": 18}
    assert set(s["by_op"]) == {str(r["op"]) for r in recs} and set(s["by_context"]) == {"zoo", "movies"}
    assert sum(g["samples"] for g in s["by_mode"].values()) == 30
    assert {"n", "samples", "verified_acc", "process_acc", "outcome_acc", "verified_pass_at_k"} <= set(s["by_op"]["3"])
    with pytest.raises(KeyError, match="nope"):
        summarize_completions(recs, {"nope": ["x"]})
    partial = summarize_completions(recs, {recs[0]["id"]: [recs[0]["completion"]]})
    assert partial["unanswered"] == 5 and partial["verified_acc"] == 1.0
