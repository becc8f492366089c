"""Rewards on hand-made completions: math-verify equivalences, option letters, synthetic and judge rewards, safety."""

import json
import math

import pytest

from midtrain.errors import ConfigError
from midtrain.synth.generate import SynthConfig, generate_problems
from midtrain.thoughts import opens_thought
from midtrain.train.rewards import (
    REWARD_COLUMNS,
    REWARD_NAMES,
    SafeReward,
    build_reward,
    choice_reward,
    for_trl,
    math_reward,
    safe_reward,
)


@pytest.mark.parametrize(
    "completion, gold, expected",
    [
        ("<think>24 + 48 = 72</think> The answer is 72.", "72", 1.0),
        ("<think>half of 1</think> \\boxed{\\frac{1}{2}}", "0.5", 1.0),  # fraction vs decimal
        ("<think>…</think><answer>0.5</answer>", "\\frac{1}{2}", 1.0),
        ("<think>…</think><answer>8+4i</answer>", "8+4i", 1.0),
        ("<think>…</think> so $x^2+1$", "1+x^2", 1.0),  # commuted expression
        ("<think>…</think> \\boxed{1000}", "1,000", 1.0),  # thousands separator in the gold
        ("<think>maybe 72</think> 71", "72", 0.0),  # the thought is never scored
        ("<think>the answer is 72", "72", 0.0),  # still thinking: no answer
        ("<think>…</think>", "72", 0.0),
        ("#### 72", "72", 1.0),
    ],
)
def test_math_reward_equivalences(completion, gold, expected):
    assert math_reward([completion], [gold]) == [expected]


def test_math_reward_prompt_that_opens_a_thought():
    # A thinking template ends in "<think>": the completion starts inside the thought.
    assert math_reward(["72"], ["72"], prompts=["Q: 2*36?\n<think>"]) == [0.0]
    assert math_reward(["2*36=72</think> \\boxed{72}"], ["72"], prompts=["Q: 2*36?\n<think>"]) == [1.0]
    assert opens_thought("a <think>b</think> <think>") and not opens_thought("a <think>b</think>")
    assert not opens_thought(None)


def test_choice_reward_letters_and_indices():
    completions = ["<think>A or B</think> The answer is (B).", "\\boxed{C}", "<think>D</think> A", "E", "Answer: E"]
    golds = ["B", 2, "C", "A", "E"]
    choices = [["w", "x", "y", "z"]] * 4 + [["a", "b", "c", "d", "e"]]
    assert choice_reward(completions, golds, choices=choices) == [1.0, 1.0, 0.0, 0.0, 1.0]


def test_synthetic_rewards_use_the_record_column():
    (problem,) = generate_problems(SynthConfig(ops="2", n=1, render="compact", modulus=10, order="dependency", distractors=False, seed=3))
    record = json.dumps(problem)
    gold = problem["completion"]
    wrong_answer = gold.rsplit("<answer>", 1)[0] + "<answer>" + str((int(problem["answer"]) + 1) % 10) + "</answer>"
    for kind in ("outcome", "process", "strict"):
        r = build_reward(f"synthetic_{kind}")
        assert r([gold, wrong_answer, "junk"], record=[record] * 3) == [1.0, 0.0, 0.0]
        assert r([gold], record=[problem]) == [1.0]  # a dict works too
    assert REWARD_COLUMNS["synthetic_process"] == ("record",)


def test_judge_reward_scores_the_continuation():
    r = build_reward("judge")  # default judge: token F1 ≥ 0.5
    out = r(
        ["<think>what next?</think> the cat sat on the mat", "no thought at all", "<think>hm</think> dogs bark"],
        answer=["the cat sat on a mat", "no thought at all", "the cat sat"],
    )
    assert out == [1.0, 0.0, 0.0]
    # a prompt that ends inside a thought: the completion closes it
    assert r(["I guess</think> the cat sat"], answer=["the cat sat"], prompts=["Once upon a time <think>"]) == [1.0]


def test_exact_match_reward_is_one_only_for_the_exact_continuation():
    r = build_reward("exact_match")
    prompts = ["<question>a=1.?a</question><think>"] * 6
    completions = [
        "a=1</think><answer>1</answer>",  # exact
        "a=1</think>  <ANSWER>1</answer>\n",  # the exact judge's normalisation: blanks collapsed, case folded
        "a=1</think><answer>7</answer>",  # wrong
        "a=1</think><answer>1</answer> and more",  # more than the next segment
        "a=1 <answer>1</answer>",  # never closed the thought: no continuation
        "a=1</think>",  # empty continuation
    ]
    assert r(completions, answer=["<answer>1</answer>"] * 6, prompts=prompts) == [1.0, 1.0, 0.0, 0.0, 0.0, 0.0]
    assert r.name == "exact_match" and r.errors == 0
    # a completion that opens its own thought (prompt without <think>)
    assert r(["<think>x</think><answer>1</answer>"], answer=["<answer>1</answer>"], prompts=["Q"]) == [1.0]


def test_safe_reward_counts_and_zeroes_failing_samples():
    def flaky(completions, answer, **_):
        return [1.0 / float(a) for a in answer]  # answer "0" raises ZeroDivisionError for the whole batch

    r = safe_reward(flaky)
    assert r(["a", "b", "c"], answer=["1", "0", "4"]) == [1.0, 0.0, 0.25]
    assert (r.errors, r.last_errors, r.samples) == (1, 1, 3)
    assert r.take_errors() == 1 and r.take_errors() == 0

    def bad_values(completions, **_):
        return [None, math.nan, 2.0]

    r2 = SafeReward(bad_values, "bad")
    assert r2(["a", "b", "c"]) == [0.0, 0.0, 2.0] and r2.errors == 2

    def wrong_count(completions, **_):
        return [1.0]

    r3 = safe_reward(wrong_count)
    assert r3(["a", "b"]) == [1.0, 1.0]  # batch answer rejected, then scored one by one
    assert safe_reward(r3) is r3


def test_for_trl_adapts_calling_convention():
    seen = {}

    def fn(completions, answer, **columns):
        seen.update(columns)
        return [float(c == a) for c, a in zip(completions, answer)]

    r = safe_reward(fn, "mine")
    metrics = []
    trl_fn = for_trl(r)
    out = trl_fn(
        prompts=["p1", "p2"],
        completions=["x", "y"],
        completion_ids=[[1], [2]],
        answer=["x", "z"],
        trainer_state=object(),
        log_metric=lambda k, v: metrics.append((k, v)),
        log_extra=None,
    )
    assert out == [1.0, 0.0] and trl_fn.__name__ == "mine"
    # completion_ids is a column (info_gain scores the generated ids); TRL's control keywords are not
    assert seen == {"prompts": ["p1", "p2"], "completion_ids": [[1], [2]]} and metrics == [("reward_errors", 0.0)]


def test_registry():
    assert set(REWARD_NAMES) == set(REWARD_COLUMNS)
    assert build_reward("math").name == "math"
    with pytest.raises(ConfigError):
        build_reward("nope")
    with pytest.raises(ConfigError):
        build_reward("synthetic_fancy")
    with pytest.raises(ConfigError, match="info_gain needs its scorer"):
        build_reward("info_gain")
