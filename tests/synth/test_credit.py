"""The first wrong step of a completion (process credit for RL)."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from midtrain.synth.credit import first_error
from midtrain.synth.generate import SynthConfig, generate_problems

COMPACT = dict(render="compact", modulus=10, order="dependency", distractors=False, const_max=9, max_multiplier=9)


def problem(**kw) -> dict:
    return generate_problems(SynthConfig(ops="3", n=1, seed=5, **{**COMPACT, **kw}))[0]


@pytest.fixture
def rec() -> dict:
    p = problem()
    assert p["solution"] == "j=1.k=7*j=7*1=7.l=3*k=3*7=1." and p["answer"] == "1"  # the cases below are written for it
    return p


def test_verified_completion_has_no_error(rec):
    assert first_error(rec, "j=1.k=7*j=7*1=7.l=3*k=3*7=1.</think><answer>1</answer>") is None
    assert first_error(rec, "j=1.k=7*j=7*1=7.x=2.l=3*k=3*7=1.</think><answer>1</answer>") is None  # extra steps allowed
    assert first_error(rec, "<think>j=1.k=7*j=7*1=7.l=3*k=3*7=1.</think><answer>1</answer>") is None


@pytest.mark.parametrize(
    ("completion", "at"),
    [
        ("j=1.k=7*j=7*1=8.l=3*k=3*8=4.</think><answer>4</answer>", "k=7*j=7*1=8"),  # wrong value
        ("j=1.k=7*l=7*1=7.l=3*k=3*7=1.</think><answer>1</answer>", "k=7*l"),  # wrong dependency, right answer
        ("j=1.k=7*j=7*1=7.x=2.l=3*k=3*7=2.</think><answer>2</answer>", "x=2"),  # a quantity not in the problem
        ("j=1.j=1.k=7*j=7*1=7.l=3*k=3*7=2.</think><answer>2</answer>", "j=1.k"),  # a repeated step (the second)
        ("j=1.k=7*j=7*1=7.l=3*k=3*7=1.</think><answer>3</answer>", "</think><answer>3"),  # all steps right, answer wrong
        ("j=1.k=7*j=7*1=7.</think><answer>1</answer>", "</think><answer>1"),  # a missing step: where the trace ends
        ("j=1.k=7*j=7*1=7.l=3*k=3*7=1.", ""),  # no answer yet: the end of the text
    ],
)
def test_offset_of_the_first_wrong_step(rec, completion, at):
    offset = first_error(rec, completion)
    assert offset is not None
    if at == "j=1.k":  # the second "j=1" clause
        assert offset == 4
    elif at:
        assert completion[offset:].startswith(at) and completion.find(at) == offset
    else:
        assert offset == len(completion)


def test_offsets_count_from_the_completion_not_the_trace(rec):
    plain = "j=1.k=7*j=7*1=8.l=3*k=3*8=4.</think><answer>4</answer>"
    assert first_error(rec, "<think>" + plain) == first_error(rec, plain) + len("<think>")
    assert first_error(rec, "j=1. k=7*j=7*1=8.</think><answer>4</answer>") == len("j=1. ")  # whitespace before a clause


def test_natural_rendering():
    rec = problem(render="natural", contexts=["zoo"], modulus=None, order="shuffled", distractors=True)
    steps = rec["solution"].split(". ")
    gold = " " + rec["solution"] + f" </think> <answer> {rec['answer']} </answer>"
    assert first_error(rec, gold) is None
    # the second step's final value changed: its sentence is the first error
    wrong = steps[1].rsplit("=", 1)[0] + "= 999"
    text = " " + ". ".join([steps[0], wrong, *steps[2:]]) + f" </think> <answer> {rec['answer']} </answer>"
    assert first_error(rec, text) == text.index(wrong)


@pytest.mark.parametrize("bad", ["", " ", "x" * 70_000])
def test_unusable_text_is_all_error(rec, bad):
    assert first_error(rec, bad) == 0


@settings(max_examples=200, deadline=None)
@given(st.text(alphabet="jkl=*+-.0123456789<>/thinkaswer ", max_size=120))
def test_any_text_gets_an_offset_inside_it(text):
    offset = first_error(problem(), text)
    assert offset is None or 0 <= offset <= len(text)
