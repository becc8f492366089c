"""Quality measures of insert-mode thoughts, on hand-made strings: cut off, restatement, filler."""

from __future__ import annotations

import pytest

from midtrain.augment.config import InsertConfig
from midtrain.augment.insert import check_thought
from midtrain.augment.quality import (
    count_tokens,
    ends_sentence,
    informative_ratio,
    is_cut_off,
    restatement_overlap,
    stem,
    words,
)
from midtrain.augment.rules import programmatic_thought

READ = "Egypt depended on one river. The Nile flooded every summer, depositing rich silt on the fields. "
NEXT = "Farmers planted as soon as the water went down. "
CHUNK = READ + NEXT

GOOD = [
    "The flood explains why the soil is fertile; next the text may describe the first farms.",
    "So the harvest depends on the river, and a dry year would ruin the farmers.",
    "Why did the Nile flood every summer? Probably monsoon rains upstream in Ethiopia.",  # re-asks, then reasons
    "The writer sets up a contrast with the city.",
    "The passage sets a scene; next it will probably describe a person or an event.",
    "If the floods came every summer, the calendar was probably built around them, so the next sentences may explain "
    "how the year was divided into seasons of flooding, planting and harvest.",
    programmatic_thought(READ),  # the deterministic thought of tests and the CPU demo
]
RESTATED = [
    "The Nile flooded every summer and it deposited rich silt on the fields.",
    "Every summer the Nile flooded, depositing rich silt on the fields.",
]
FILLER = [
    "I am ready to continue reading the text and see what comes next in the text.",
    "The text is about the text, and the text says what the text says.",
    "This is interesting. I wonder what will happen next in the story.",
    "The city is important because the city matters, and the city is what matters about the city.",  # circular
    "I think this is a very important part of the text and it is important to understand it.",
]
CUT_OFF = (
    "The floods must have shaped the whole economy of the valley, because a farmer who depended on the silt would "
    "need to know when the water rose and when it fell, and the priests who watched the river probably kept "
    "records of the heights of the flood over many years so that they could predict the next one and tell the "
    "farmers when to plant their seeds and when to expect the harvest, which in turn would mean that the state"
)


@pytest.mark.parametrize(
    "text, end",
    [
        ("A sentence.", True),
        ("Really?  ", True),
        ('He said "stop!"', True),
        ("It ends (as planned.)", True),
        ("Wait…", True),
        ("川が流れる。", True),
        ("and then the", False),
        ("a list:", False),
        ("", False),
    ],
)
def test_ends_sentence(text, end):
    assert ends_sentence(text) is end


def test_cut_off_needs_no_sentence_end_and_most_of_the_budget():
    assert count_tokens("x" * 401) == 101  # ≈ 4 characters per token without a tokenizer
    assert is_cut_off("and then the farmers", tokens=150, max_new_tokens=160, fraction=0.5)
    assert not is_cut_off("and then the farmers.", tokens=160, max_new_tokens=160, fraction=0.5)  # it ended
    assert not is_cut_off("The farmers depend on the river", tokens=8, max_new_tokens=160, fraction=0.5)  # stopped early
    assert is_cut_off("The farmers depend on the river", tokens=8, max_new_tokens=160, fraction=0.0)  # strict


def test_stem_and_words():
    assert [stem(w) for w in ("flooded", "floods", "flooding", "fields", "glass", "is", "bed")] == [
        "flood",
        "flood",
        "flood",
        "field",
        "glass",
        "is",
        "bed",
    ]
    assert words("The Nile's silt, 3 times—rich!") == ["the", "nile's", "silt", "3", "times", "rich"]


def test_restatement_overlap_separates_retelling_from_reasoning():
    for t in RESTATED:
        assert restatement_overlap(t, READ, 64) > 0.7
    for t in GOOD:
        assert restatement_overlap(t, READ, 64) < 0.45
    assert restatement_overlap(RESTATED[0], READ, 3) < 0.2  # only the last 3 words are compared
    assert restatement_overlap("of the and the", READ, 64) == 0.0  # function-word pairs are not evidence


def test_informative_ratio_separates_filler_from_content():
    for t in FILLER:
        assert informative_ratio(t) < 0.15
    for t in GOOD:
        assert informative_ratio(t) >= 0.2
    assert informative_ratio("") == 1.0


@pytest.mark.parametrize("thought", GOOD)
def test_defaults_keep_good_thoughts(thought):
    t, reason, detail = check_thought(thought, CHUNK, NEXT, InsertConfig(), preceding=READ)
    assert (reason, detail) == (None, "") and t == thought


@pytest.mark.parametrize(
    "thought, reason",
    [(t, "thought_restates_text") for t in RESTATED] + [(t, "thought_filler") for t in FILLER] + [(CUT_OFF, "thought_cut_off")],
)
def test_defaults_reject_bad_thoughts_by_name(thought, reason):
    _, got, detail = check_thought(thought, CHUNK, NEXT, InsertConfig(), preceding=READ)
    assert got == reason and detail


def test_each_threshold_is_a_config_knob():
    lax = InsertConfig(cut_off_fraction=1.0, max_restate_overlap=1.0, min_informative_ratio=0.0)
    for t in [*RESTATED, *FILLER]:
        assert check_thought(t, CHUNK, NEXT, lax, preceding=READ)[1] is None
    # 81 words ≈ 106 estimated tokens: over half the budget of 160, under half of 400
    assert check_thought(CUT_OFF, CHUNK, NEXT, lax, preceding=READ)[1] is None
    assert check_thought(CUT_OFF, CHUNK, NEXT, InsertConfig(max_new_tokens=400), preceding=READ)[1] is None
    strict = InsertConfig(cut_off_fraction=0.0)
    assert check_thought("The farmers depend on the river", CHUNK, NEXT, strict, preceding=READ)[1] == "thought_cut_off"
    assert check_thought(RESTATED[0], CHUNK, NEXT, InsertConfig(), preceding="")[1] is None  # nothing read to restate
