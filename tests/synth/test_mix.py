"""Op distributions, presets, difficulty and replay mixes, stratified slots."""

from __future__ import annotations

import random
from collections import Counter

import pytest

from midtrain.errors import ConfigError
from midtrain.synth.generate import SynthConfig, generate_problems
from midtrain.synth.mix import (
    PRESETS,
    allocate,
    difficulty_mix,
    mix_records,
    parse_context_item,
    parse_ops,
    plan_slots,
    replay_mix,
)


def probs(d):
    return {op: round(p, 6) for op, p in d.probs}


def test_parse_ops_forms():
    assert probs(parse_ops("2-5")) == {2: 0.25, 3: 0.25, 4: 0.25, 5: 0.25}
    assert parse_ops("2-5,6-8") == parse_ops("2-8") == parse_ops([2, 3, 4, 5, 6, 7, 8])
    assert probs(parse_ops("2,4")) == {2: 0.5, 4: 0.5}
    assert probs(parse_ops("2-3:0.6,10:0.4")) == {2: 0.3, 3: 0.3, 10: 0.4}
    assert parse_ops(parse_ops("2-3:0.6,10:0.4").spec()) == parse_ops("2-3:0.6,10:0.4")
    for bad in ("", "a-b", "5-2", "2-3:0.5,4", "2:-1", "2:0"):
        with pytest.raises(ConfigError):
            parse_ops(bad)


def test_presets_match_the_paper_and_tiny_ranges():
    assert parse_ops(PRESETS["paper-id"]).ops == list(range(2, 11))
    assert parse_ops(PRESETS["paper-edge"]).ops == list(range(11, 15))
    assert parse_ops(PRESETS["paper-hard"]).ops == list(range(15, 21))
    assert parse_ops(PRESETS["tiny-id"]).ops == [2, 3, 4, 5]
    assert parse_ops(PRESETS["tiny-edge"]).ops == [6, 7, 8]
    assert parse_ops(PRESETS["tiny-hard"]).ops == list(range(9, 13))
    mid = parse_ops(PRESETS["paper-midtrain"])
    assert sum(p for op, p in mid.probs if op <= 10) == pytest.approx(0.2)
    recs = generate_problems(SynthConfig(preset="tiny-edge", n=30, render="compact", modulus=10))
    assert Counter(r["op"] for r in recs) == {6: 10, 7: 10, 8: 10}


def test_difficulty_and_replay_mixes():
    d = difficulty_mix(0.5, 0.3, 0.2, scale="tiny")
    assert sum(p for op, p in d.probs if op <= 5) == pytest.approx(0.5)
    assert sum(p for op, p in d.probs if op >= 9) == pytest.approx(0.2)
    r = replay_mix("11-14", "2-10", 0.2)
    assert r == parse_ops("11-14:0.8,2-10:0.2")
    with pytest.raises(ConfigError):
        replay_mix("2", "3", 1.5)
    with pytest.raises(ConfigError):
        difficulty_mix(1, 1, 1, scale="huge")


def test_allocate_and_slots_are_stratified():
    rng = random.Random(0)
    assert allocate(10, [1, 1], rng) == [5, 5]
    counts = allocate(7, [1, 1, 1], rng)
    assert sum(counts) == 7 and max(counts) - min(counts) <= 1
    slots = plan_slots(100, parse_ops("2-5"), [("zoo", 0.99), ("teachers", 0.01)], "mixed", 0.3, rng)
    assert Counter(op for op, _, _ in slots) == {2: 25, 3: 25, 4: 25, 5: 25}
    assert Counter(c for _, c, _ in slots) == {"zoo": 99, "teachers": 1}
    assert Counter(m for _, _, m in slots) == {"forward": 70, "reverse": 30}


def test_mix_records_replay_share():
    new = [{"id": f"n{i}"} for i in range(80)]
    old = [{"id": f"o{i}"} for i in range(500)]
    mixed = mix_records(new, old, 0.2, seed=1)
    assert len(mixed) == 100 and sum(r["id"].startswith("o") for r in mixed) == 20
    assert mix_records(new, old, 0.2, seed=1) == mixed
    fixed = mix_records(new, old[:3], 0.5, n=20, seed=2)
    assert sum(r["id"].startswith("o") for r in fixed) == 10  # cycles through a small replay set
    with pytest.raises(ConfigError):
        mix_records(new, [], 0.2)


def test_context_item_suffix():
    assert parse_context_item("zoo:0.99") == ("zoo", 0.99)
    assert parse_context_item("zoo") == ("zoo", None)
    assert parse_context_item("ctx/my.yaml:2") == ("ctx/my.yaml", 2.0)
