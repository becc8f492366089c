"""The thought format and the preservation check: unit cases and property tests."""

from __future__ import annotations

import pytest
from hypothesis import assume, given, settings
from hypothesis import strategies as st

from midtrain.thoughts import (
    after_thinking,
    build_segments,
    check_record,
    normalize,
    opens_thought,
    parse_answer,
    render_augmented,
    strip_thoughts,
    thinking_part,
    validate_answer,
)

CHUNK = "Hello world. This is a test.\n\nA new paragraph here."


def answer_with(chunk: str, cuts: list[int], thoughts: list[str]) -> str:
    out, prev = [], 0
    for c, t in sorted(zip(cuts, thoughts), key=lambda ct: ct[0]):
        out += [chunk[prev:c], f"<think>{t}</think>"]
        prev = c
    return "".join(out) + chunk[prev:]


def test_accepts_and_reconstructs():
    ans = "Hello world. <think>a greeting</think>This is a test.\n\n<think>new topic</think>A new paragraph here."
    out = validate_answer(CHUNK, ans)
    assert out.status == "accepted" and out.thoughts == 2
    assert "".join(s["text"] for s in out.segments) == CHUNK
    rec = {"segments": out.segments}
    assert render_augmented(rec) == ans
    assert strip_thoughts(render_augmented(rec)) == CHUNK


def test_whitespace_differences_are_mapped_onto_the_original():
    ans = "Hello world.<think>x</think> This is a test. <think>y</think>A new paragraph here.\n"
    out = validate_answer(CHUNK, ans, mode="whitespace")
    assert out.status == "accepted"
    assert "".join(s["text"] for s in out.segments) == CHUNK  # original whitespace kept, not the answer's
    assert out.segments[0]["text"] == "Hello world."
    assert validate_answer(CHUNK, ans, mode="exact").reason == "text_altered"


def test_nfkc_mode_accepts_compatibility_forms_only_there():
    chunk, ans = "ﬁne café №5", "fine <think>t</think>café No5"
    assert validate_answer(chunk, ans, mode="nfkc").status == "accepted"
    assert validate_answer(chunk, ans, mode="whitespace").reason == "text_altered"
    out = validate_answer(chunk, ans, mode="nfkc")
    assert "".join(s["text"] for s in out.segments) == chunk


@pytest.mark.parametrize(
    ("answer", "reason"),
    [
        ("", "empty"),
        ("  \n ", "empty"),
        ("Hello world. <think>x</think>This is a tset.\n\nA new paragraph here.", "text_altered"),
        ("Hello world. <think>x</think>This is a test.", "truncated"),
        ("Hello <think>x world. This is a test.\n\nA new paragraph here.", "tags_unbalanced"),
        ("Hello </think>world. This is a test.\n\nA new paragraph here.", "tags_unbalanced"),
        ("Hello <think>a<think>b</think></think>world. This is a test.\n\nA new paragraph here.", "tags_unbalanced"),
        (CHUNK, "too_few_thoughts"),
        ("Hello world. <think>   </think>This is a test.\n\nA new paragraph here.", "too_few_thoughts"),
        ("Sure! Here is the text: " + CHUNK.replace("test.", "test.<think>t</think>"), "text_altered"),
    ],
)
def test_rejection_reasons(answer, reason):
    out = validate_answer(CHUNK, answer)
    assert out.status == "rejected" and out.reason == reason and out.segments == []


def test_too_many_thoughts_and_source_tags():
    ans = answer_with(CHUNK, [1, 2, 3, 4], ["a", "b", "c", "d"])
    assert validate_answer(CHUNK, ans, max_thoughts=3).reason == "too_many_thoughts"
    assert validate_answer(CHUNK, ans, max_thoughts=4).status == "accepted"
    assert validate_answer("x <think> y", "x <think> y").reason == "source_has_tags"


def test_text_altered_detail_names_the_mismatch():
    out = validate_answer(CHUNK, CHUNK.replace("test", "TEST") + "<think>t</think>")
    assert out.reason == "text_altered" and "TEST" in out.detail


def test_parse_answer_and_strip():
    pieces, thoughts = parse_answer("a<think>1</think>b<think>2</think>")
    assert pieces == ["a", "b", ""] and thoughts == ["1", "2"]
    assert strip_thoughts("a<think>1</think>b<think>unfinished") == "ab"
    assert strip_thoughts("no tags") == "no tags"


def test_build_segments_edge_cases():
    assert build_segments("abc", [], []) == [{"text": "abc", "thought": None}]
    assert build_segments("abc", [0, 3], ["x", "y"]) == [{"text": "", "thought": "x"}, {"text": "abc", "thought": "y"}]


def test_check_record_for_directly_built_records():
    good = {"chunk": "ab", "segments": [{"text": "a", "thought": "t"}, {"text": "b", "thought": None}]}
    assert check_record(good).status == "accepted"
    assert check_record({**good, "chunk": "ac"}).reason == "text_altered"
    assert check_record({"chunk": "ab", "segments": [{"text": "ab", "thought": None}]}).reason == "too_few_thoughts"
    assert check_record({"chunk": "ab", "segments": [{"text": "a", "thought": "t</think>"}, {"text": "b"}]}).reason == "tags_unbalanced"


# -- properties -------------------------------------------------------------------------------------------------
ALPHABET = st.characters(codec="utf-8", exclude_characters="<>", exclude_categories=("Cs",))
chunks = st.text(ALPHABET, min_size=1, max_size=120).filter(lambda s: s.strip() != "")
thought_text = st.text(st.characters(codec="utf-8", exclude_characters="<>", exclude_categories=("Cs",)), min_size=1, max_size=20).filter(
    lambda s: s.strip() != ""
)


@st.composite
def annotated(draw):
    chunk = draw(chunks)
    k = draw(st.integers(1, 5))
    cuts = sorted(draw(st.lists(st.integers(0, len(chunk)), min_size=k, max_size=k)))
    thoughts = draw(st.lists(thought_text, min_size=k, max_size=k))
    return chunk, cuts, thoughts


@settings(max_examples=300, deadline=None)
@given(annotated(), st.sampled_from(["exact", "whitespace", "nfkc"]))
def test_property_accepted_records_reconstruct_their_chunk(case, mode):
    chunk, cuts, thoughts = case
    out = validate_answer(chunk, answer_with(chunk, cuts, thoughts), mode=mode, max_thoughts=10)
    assert out.status == "accepted"
    assert "".join(s["text"] for s in out.segments) == chunk
    assert strip_thoughts(render_augmented({"segments": out.segments})) == chunk
    assert [s["thought"] for s in out.segments if s["thought"]] == [t.strip() for t in thoughts]


@settings(max_examples=300, deadline=None)
@given(annotated(), st.sampled_from(["whitespace", "nfkc"]), st.data())
def test_property_whitespace_noise_still_reconstructs_the_original(case, mode, data):
    chunk, cuts, thoughts = case
    answer = answer_with(chunk, cuts, thoughts)
    noisy = answer.replace("\n\n", data.draw(st.sampled_from(["\n", " ", "\n \n"]))).replace("  ", " ")
    out = validate_answer(chunk, noisy, mode=mode, max_thoughts=10)
    if out.status == "accepted":  # accepted or not, an accepted record holds the original text exactly
        assert "".join(s["text"] for s in out.segments) == chunk
    else:
        assert normalize(chunk, mode)[0] != normalize(strip_thoughts(noisy), mode)[0]


@st.composite
def edited(draw):
    chunk, cuts, thoughts = draw(annotated())
    answer = answer_with(chunk, cuts, thoughts)
    # positions of original text characters inside the answer (outside the thought spans)
    text_pos, i, inside = [], 0, False
    while i < len(answer):
        if answer.startswith("<think>", i):
            inside, i = True, i + 7
        elif answer.startswith("</think>", i):
            inside, i = False, i + 8
        else:
            if not inside:
                text_pos.append(i)
            i += 1
    op = draw(st.sampled_from(["insert", "delete", "replace"]))
    if op == "insert" or not text_pos:
        p = draw(st.sampled_from(text_pos + [len(answer)])) if text_pos else len(answer)
        new = answer[:p] + draw(st.characters(codec="utf-8", exclude_characters="<>", exclude_categories=("Cs",))) + answer[p:]
    else:
        p = draw(st.sampled_from(text_pos))
        repl = "" if op == "delete" else draw(st.characters(codec="utf-8", exclude_characters="<>", exclude_categories=("Cs",)))
        new = answer[:p] + repl + answer[p + 1 :]
    return chunk, new


@settings(max_examples=400, deadline=None)
@given(edited(), st.sampled_from(["exact", "whitespace", "nfkc"]))
def test_property_any_edit_of_the_original_text_is_rejected(case, mode):
    chunk, answer = case
    stripped = strip_thoughts(answer)
    # the edit must change the text as the check sees it (e.g. doubling a space is no edit under 'whitespace')
    assume(normalize(stripped, mode)[0] != normalize(chunk, mode)[0])
    out = validate_answer(chunk, answer, mode=mode, max_thoughts=10)
    assert out.status == "rejected" and out.reason in ("text_altered", "truncated")


@settings(max_examples=200, deadline=None)
@given(edited())
def test_property_exact_mode_rejects_every_edit(case):
    chunk, answer = case
    assume(strip_thoughts(answer) != chunk)
    assert validate_answer(chunk, answer, mode="exact", max_thoughts=10).status == "rejected"


# -- a completion's thinking and its answer ---------------------------------------------------------------------
@pytest.mark.parametrize(
    "text, opened, thinking, answer",
    [
        ("just an answer", False, None, "just an answer"),  # no tag: the model did not think
        ("just an answer", True, "just an answer", None),  # the prompt opened a thought that never closed
        ("<think>a</think> 42", False, "a", " 42"),
        ("pre <think>t</think> x", False, "t", " x"),  # text before the thought is neither
        ("<think>a</think> so <think>b</think> 42", False, "a</think> so <think>b", " 42"),  # several: the LAST close
        ("a</think> b</think> c", True, "a</think> b", " c"),  # prompt-opened, closed twice
        ("a</think> c", False, "a", " c"),  # a close without an open: thinking began before the text
        ("<think>still going", False, "still going", None),  # unclosed <think>
        ("<think>a</think> 42 <think>on second thought", False, "a", None),  # reopened and never closed
        ("", False, None, ""),
        ("", True, "", None),
    ],
)
def test_after_thinking_and_thinking_part(text, opened, thinking, answer):
    assert after_thinking(text, opened=opened) == answer
    assert thinking_part(text, opened=opened) == thinking


def test_prompt_opened_thought_reassembles():
    """A completion that closes the prompt's thought splits into thinking + </think> + answer, losslessly."""
    prompt = "Question: 1+1?\nAnswer: <think>\n"
    completion = "one and one</think> so <think>check</think> it is \\boxed{2}"
    assert opens_thought(prompt) and not opens_thought(prompt + completion)
    assert thinking_part(completion, opened=True) + "</think>" + after_thinking(completion, opened=True) == completion


@pytest.mark.parametrize(
    "prompt, opens",
    [
        ("Answer: <think>\n", True),
        ("<think>a</think> b", False),
        ("<think>a</think><think>", True),
        ("plain", False),
        ("", False),
        (None, False),
        ("</think><think>x", True),
    ],
)
def test_opens_thought(prompt, opens):
    assert opens_thought(prompt) is opens
