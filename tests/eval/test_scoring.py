"""Answer extraction and math-verify equivalence on hand-made completions (midtrain.eval.scoring)."""

from __future__ import annotations

import pytest

from midtrain.eval.scoring import (
    answer_region,
    boxed_contents,
    clean_boxed,
    extract_choice,
    parse_gold,
    score,
    score_choice,
    score_math,
    tolerance_rounding,
)

EQUIVALENT = [
    # (gold, completion) — each must score correct
    ("0.5", "The answer is $\\boxed{\\frac{1}{2}}$."),  # fraction vs decimal
    ("\\frac{1}{2}", "So the probability is $\\boxed{0.5}$."),
    ("\\frac{3}{4}", "The final answer is 3/4."),  # \frac vs /
    ("\\dfrac{7}{2}", "\\boxed{7/2}"),
    ("3.5", "\\boxed{\\tfrac{7}{2}}"),
    ("[\\frac{1}{2}, 8]", "\\boxed{[0.5, 8]}"),  # intervals
    ("(-\\infty, 0) \\cup\\{1\\}.", "\\boxed{(-\\infty,0)\\cup\\{1\\}}"),
    ("(-2, 3]", "The solution set is $\\boxed{(-2,3]}$."),
    ("10", "\\boxed{10\\text{ cm}}"),  # units
    ("10", "\\boxed{10 \\mbox{ inches}}"),
    ("72", "She drives 72 miles per hour. The final answer is $\\boxed{72 \\text{ mph}}$"),
    ("30^\\circ", "\\boxed{30}"),  # degrees
    ("30", "\\boxed{30^\\circ}"),
    ("\\text{Evelyn}", "\\boxed{\\text{Evelyn}}"),  # \text{}
    ("\\text{(C)}", "\\boxed{C}"),
    ("1234", "The answer is $\\boxed{1,234}$"),  # thousands separators
    ("1234", "So she pays $1,234 in total."),
    ("1000000", "#### 1,000,000"),
    ("1234", "\\boxed{1{,}234}"),
    ("5\\%", "\\boxed{5}"),  # percent
    ("25\\%", "\\boxed{0.25}"),
    ("69,84", "\\boxed{84, 69}"),  # several answers, any order
    ("(1,2),(3,4)", "\\boxed{(3,4),(1,2)}"),
    ("\\sqrt{2}", "\\boxed{\\frac{2}{\\sqrt{2}}}"),
    ("2\\pi", "\\boxed{\\pi \\cdot 2}"),
    ("-\\frac{1}{3}", "\\boxed{\\frac{-1}{3}}"),
    ("\\frac{1}{2 n+2}", "\\boxed{\\frac{1}{2(n+1)}}"),
    ("f(x)=2 x", "\\boxed{f(x) = 2x}"),
    ("m_{\\max }=n^{2}-n-1", "\\boxed{n^2-n-1}"),
    ("113", "the answer is $100 + 13 = \\boxed{\\textbf{(113) }}$"),
    ("73", "$\\boxed{\\text{(073)}}$"),
    ("18", "Janet makes 9 * 2 = $18.\n#### 18"),
    ("204", "$180 + 24 = 204$. -sepehr2010"),  # last expression, no box
    ("7", "<answer> 7 </answer>"),
]

NOT_EQUIVALENT = [
    ("[\\frac{1}{2}, 8]", "\\boxed{(0.5, 8)}"),  # open vs closed interval
    ("1234", "\\boxed{1,235}"),
    ("\\frac{1}{2}", "\\boxed{0.51}"),
    ("69,84", "\\boxed{69}"),
    ("N=n", "\\boxed{N=n+1}"),  # math-verify folds N and n; the gold's right side is used instead
    ("5", "\\boxed{6}"),
]


@pytest.mark.parametrize("gold,completion", EQUIVALENT)
def test_equivalent_answers_score_correct(gold: str, completion: str) -> None:
    s = score_math(completion, gold)
    assert s.correct, (gold, completion, s)
    assert s.answer is not None and s.key is not None


@pytest.mark.parametrize("gold,completion", NOT_EQUIVALENT)
def test_different_answers_score_zero(gold: str, completion: str) -> None:
    s = score_math(completion, gold)
    assert not s.correct, (gold, completion, s)


def test_boxed_wins_over_a_later_number() -> None:
    s = score_math("So $\\boxed{12}$ apples. Check: 3 * 4 = 12, and 5 more would be 17.", "12")
    assert s.correct and s.answer == "12"


def test_last_expression_without_a_box() -> None:
    assert score_math("First 3 + 4 = 7, then 7 * 2 = 14.", "14").correct
    assert not score_math("First 3 + 4 = 7, then 7 * 2 = 14.", "7").correct


@pytest.mark.parametrize("completion", ["", "   ", "I do not know.", "The answer is blue.", "<think> 42 is it"])
def test_no_extractable_answer_scores_zero_and_is_none(completion: str) -> None:
    s = score_math(completion, "42")
    assert not s.correct and s.answer is None and s.key is None


def test_thinking_is_never_scored() -> None:
    # the right answer only inside the thought: not credited
    assert not score_math("<think>It is \\boxed{5}.</think> The answer is \\boxed{6}.", "5").correct
    assert score_math("<think>maybe 6</think> The answer is \\boxed{5}.", "5").correct
    # the prompt opened <think>: everything before </think> is thinking
    assert score_math("hmm \\boxed{5} </think> so \\boxed{5}", "5", thinking=True).correct
    assert score_math("hmm \\boxed{5} and more thinking", "5", thinking=True).answer is None
    assert answer_region("a </think> b", thinking=True) == (" b", False)
    # thoughts closed and reopened: the answer follows the LAST </think>; a reopened, unclosed one has no answer
    assert score_math("<think>a</think> \\boxed{5} <think>no wait</think> \\boxed{6}", "6").correct
    assert score_math("<think>a</think> \\boxed{5} <think>no wait", "5").answer is None


def test_answer_tags_and_gsm8k_marker_are_explicit() -> None:
    assert answer_region("x <answer> 3/4 </answer>") == ("3/4", True)
    assert answer_region("5 + 6 = 11\n#### 11") == ("11", True)
    assert score_math("<answer>\\frac{3}{4}</answer>", "0.75").correct


def test_boxed_helpers() -> None:
    text = "a \\boxed{\\frac{1}{2}} b \\boxed{x^{2}.}"
    spans = boxed_contents(text)
    assert [text[s:e] for s, e in spans] == ["\\frac{1}{2}", "x^{2}."]
    assert clean_boxed(text).endswith("\\boxed{x^{2}}")
    assert clean_boxed("\\boxed{\\textbf{(113) }}") == "\\boxed{113}"


def test_gold_parse_is_cached_and_nonempty() -> None:
    assert parse_gold("\\frac{1}{2}") is parse_gold("\\frac{1}{2}")
    # an unparseable gold ("t(0,4]": "t ∈ (0,4]" with the ∈ lost) has no value, so nothing scores correct on it
    assert all(isinstance(g, str) for g in parse_gold("t(0,4]"))
    assert not score_math("\\boxed{(0,4]}", "t(0,4]").correct


def test_tolerance() -> None:
    assert tolerance_rounding("1e-1") == 1
    assert tolerance_rounding(None) == 6 and tolerance_rounding("abc") == 6
    rec = {"answer": "3.14", "error": "1e-1"}
    assert score("\\boxed{3.1}", rec).correct
    assert not score("\\boxed{3.3}", rec).correct


@pytest.mark.parametrize(
    "completion,letter",
    [
        ("The answer is (B).", "B"),
        ("\\boxed{C}", "C"),
        ("Final answer: $\\boxed{\\text{D}}$", "D"),
        ("Answer: A", "A"),
        ("**B**", "B"),
        ("I think A is wrong. The final answer is C.", "C"),
        ("<think>A? B?</think> The correct option is (D)", "D"),
        ("\\boxed{B) 5 m/s}", "B"),
    ],
)
def test_choice_letter_extraction(completion: str, letter: str) -> None:
    assert extract_choice(completion) == letter
    assert score_choice(completion, letter).correct
    assert not score_choice(completion, "ABCD"[("ABCD".index(letter) + 1) % 4]).correct


@pytest.mark.parametrize("completion", ["", "no idea", "<think>B", "The answer is E."])
def test_choice_without_a_letter_is_none(completion: str) -> None:
    s = score_choice(completion, "B")
    assert s.answer is None and not s.correct


def test_score_dispatches_on_kind() -> None:
    rec = {"id": "q", "problem": "?", "answer": "C", "choices": ["1", "2", "3", "4"]}
    assert score("so \\boxed{C}", rec, "choice").correct
    assert score("so \\boxed{12}", {"answer": "12"}).correct
