"""Shared helpers for the synthetic-world tests: cached problem sets and completion corruptions."""

from __future__ import annotations

import functools
import os
import re

import pytest

from midtrain.synth.generate import SynthConfig, generate_problems
from midtrain.synth.render import split_steps

os.environ.setdefault("MIDTRAIN_QUIET", "1")
CONTEXTS = ["zoo", "teachers", "movies"]


@functools.cache
def problems(**kw) -> tuple[dict, ...]:
    """Generated problems for a config (cached: tests must not mutate them)."""
    kw = {k: list(v) if isinstance(v, tuple) else v for k, v in kw.items()}
    return tuple(generate_problems(SynthConfig(**kw)))


def one(
    seed: int, op: int, context: str, mode: str, render: str, modulus: int | None = None, order: str = "shuffled", distractors: bool = True
) -> dict:
    return generate_problems(
        SynthConfig(
            ops=str(op), n=1, seed=seed, contexts=[context], mode=mode, render=render, modulus=modulus, order=order, distractors=distractors
        )
    )[0]


# -- corruptions of a gold completion ---------------------------------------------------------------------------
def steps_of(rec: dict) -> list[str]:
    return split_steps(rec["solution"], rec["render"])


def rebuild(rec: dict, steps: list[str], answer: str | None = None) -> str:
    ans = rec["answer"] if answer is None else answer
    if rec["render"] == "compact":
        return "".join(steps) + f"</think><answer>{ans}</answer>"
    return " " + " ".join(steps) + f" </think> <answer> {ans} </answer>"


def node(rec: dict, nid: int) -> dict:
    return rec["graph"]["nodes"][nid]


def step_index(rec: dict, nid: int) -> int:
    """Index of the step that gives node ``nid`` its value."""
    g, name = rec["graph"], node(rec, nid)["name"]
    for i, s in enumerate(steps_of(rec)):
        if rec["render"] == "compact":
            if (nid == g["unknown"] and ":" in s) or (nid != g["unknown"] and s.startswith(name + "=")):
                return i
        elif nid == g["unknown"]:
            if s.startswith("We know"):
                return i
        elif s.startswith(f"Define {name} as ") and "is unknown" not in s:
            return i
    raise AssertionError(f"no step for node {nid}")


def _word(name: str) -> re.Pattern:
    return re.compile(r"(?<![^\W\d_])" + re.escape(name) + r"(?![^\W\d_])")


def wrong_value(rec: dict, nid: int) -> str:
    steps = steps_of(rec)
    i = step_index(rec, nid)
    plus = "+1" if rec["render"] == "compact" else " + 1"
    steps[i] = steps[i][:-1] + plus + "."
    return rebuild(rec, steps)


def wrong_parent(rec: dict, nid: int) -> str:
    """Replace the first parent letter in the step's expression by another letter."""
    steps = steps_of(rec)
    i = step_index(rec, nid)
    compact = rec["render"] == "compact"
    head, sep, body = ("", "", steps[i]) if compact else steps[i].partition("; ")
    eq = "=" if compact else " = "
    parts = body.split(eq)
    n = node(rec, nid)
    old = node(rec, n["parents"][0])["letter"]
    letters = [d["letter"] for d in rec["graph"]["nodes"] if d.get("letter")]
    parent_letters = {node(rec, p)["letter"] for p in n["parents"]}
    new = next((x for x in letters if x not in parent_letters), "zz")
    parts[1] = _word(old).sub(new, parts[1], count=1)
    steps[i] = head + sep + eq.join(parts)
    return rebuild(rec, steps)


def missing_step(rec: dict, nid: int) -> str:
    """Drop the step (natural: keep the 'Define <quantity> as <L>' binding so later steps still resolve)."""
    steps = steps_of(rec)
    i = step_index(rec, nid)
    n = node(rec, nid)
    if rec["render"] == "natural" and nid != rec["graph"]["unknown"]:
        steps[i] = f"Define {n['name']} as {n['letter']}."
    else:
        del steps[i]
    return rebuild(rec, steps)


def wrong_answer(rec: dict) -> str:
    m = rec["graph"]["modulus"]
    a = int(rec["answer"]) + 1
    return rebuild(rec, steps_of(rec), str(a % m if m else a))


def extra_step(rec: dict) -> str | None:
    """Add a correct step for a distractor (None when the problem has none)."""
    extra = [d for d in rec["graph"]["nodes"] if not d["necessary"]]
    if not extra:
        return None
    d = extra[0]
    steps = steps_of(rec)
    if rec["render"] == "compact":
        new = f"{d['name']}={d['value']}."
    else:
        used = {x.get("letter") for x in rec["graph"]["nodes"]}
        letter = next(c for c in "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ" if c not in used)
        new = f"Define {d['name']} as {letter}; {letter} = {d['value']}."
    steps.insert(len(steps) - 1, new)
    return rebuild(rec, steps)


@pytest.fixture
def quiet(monkeypatch):
    monkeypatch.setenv("MIDTRAIN_QUIET", "1")
