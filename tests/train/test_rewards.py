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


# -- step tasks (midtrain synth tasks): the continuation is the generated steps themselves --------------------------
STEPS = "a=2.b=3*a=3*2=6.c=4.d=b+c=6+4=0.e=a+d=2+0=2."  # mod 10: a=2, b=3a, c=4, d=b+c, e=a+d


def step_record(j: int, k: int) -> dict:
    """The step task (synth tasks) of a hand-written compact problem whose prompt holds its first ``j`` steps."""
    from midtrain.synth.render import split_steps
    from midtrain.synth.tasks import step_task

    spec = [
        ("a", "const", [], 2, 2),
        ("b", "mul", [0], 3, 6),
        ("c", "const", [], 4, 4),
        ("d", "sum", [1, 2], None, 0),
        ("e", "sum", [0, 3], None, 2),
    ]
    nodes = [
        {"id": i, "name": n, "kind": kd, "parents": ps, "k": kk, "value": v, "necessary": True} for i, (n, kd, ps, kk, v) in enumerate(spec)
    ]
    graph = {"nodes": nodes, "target": 4, "asked": 4, "unknown": None, "modulus": 10, "render": "compact", "trace": [0, 1, 2, 3, 4]}
    problem = {"id": "h", "render": "compact", "solution": STEPS, "answer": "2", "graph": graph,
               "prompt": "<question>a=2.b=3*a.c=4.d=b+c.e=a+d.?e</question><think>", "completion": STEPS + "</think><answer>2</answer>"}  # fmt: skip
    return step_task(problem, split_steps(STEPS, "compact"), j, k)


# completions of the step task at j=1, k=2 (prompt ends after "a=2."; reference "b=3*a=3*2=6.c=4.")
STEP_CASES = [
    ("b=3*a=3*2=6.c=4.", 1.0, 1.0),  # the reference
    ("b=3*a=3*2=6. c=4. d=b+c=6+4=0.</think>", 1.0, 1.0),  # blanks, and more after the first two steps
    ("b=3*a=3*2=7.c=4.", 0.0, 0.0),  # wrong arithmetic
    ("c=4.b=3*a=3*2=6.", 0.0, 1.0),  # another valid order: not the reference text, but verified
    ("b=3*a=3*2=6.d=b+c=6+4=0.", 0.0, 0.0),  # d before its parent c
    ("b=3*a=3*2=6.", 0.0, 0.0),  # too few steps
    ("b=3*a=3*2=6.</think><answer>2</answer>", 0.0, 0.0),  # stops thinking after one step
    ("%%garbage!!", 0.0, 0.0),
]


def test_step_task_rewards_compare_the_first_k_generated_steps():
    rec = step_record(1, 2)
    assert rec["reference"] == "b=3*a=3*2=6.c=4."
    completions = [c for c, _, _ in STEP_CASES]
    n = len(completions)
    cols = dict(answer=[rec["reference"]] * n, steps_k=[2] * n, prompts=[rec["prompt"]] * n)
    exact = build_reward("exact_match")(completions, **cols)
    assert exact == [e for _, e, _ in STEP_CASES]
    from midtrain.llm.judge import JudgeSpec, build_judge

    assert build_reward("judge", judge=build_judge(JudgeSpec(kind="exact")))(completions, **cols) == exact  # judge kind exact agrees
    steps = build_reward("synthetic_steps")
    assert steps(completions, record=[json.dumps(rec)] * n) == [s for _, _, s in STEP_CASES]
    assert steps.errors == 0 and REWARD_COLUMNS["synthetic_steps"] == ("record",)
    # the same text on an ordinary suffix row (steps_k 0) is read after </think>, as before
    assert build_reward("exact_match")(["x</think>c=4."], answer=["c=4."], steps_k=[0], prompts=["p<think>"]) == [1.0]
    assert build_reward("exact_match")(["b=3*a=3*2=6.c=4."], answer=["b=3*a=3*2=6.c=4."], steps_k=[0], prompts=["p<think>"]) == [0.0]


def test_the_rest_of_the_trace_is_compared_and_verified_up_to_the_answer():
    rec = step_record(3, 0)
    assert rec["reference"] == "d=b+c=6+4=0.e=a+d=2+0=2.</think><answer>2</answer>"
    right = "d=b+c=6+4=0.e=a+d=2+0=2.</think><answer>2</answer> more text"
    wrong = "d=b+c=6+4=0.e=a+d=2+0=2.</think><answer>5</answer>"
    cols = dict(answer=[rec["reference"]] * 2, steps_k=[rec["meta"]["k"]] * 2)
    assert build_reward("exact_match")([right, wrong], **cols) == [1.0, 0.0]
    from midtrain.llm.judge import JudgeSpec, build_judge

    assert build_reward("judge", judge=build_judge(JudgeSpec(kind="exact")))([right, wrong], **cols) == [1.0, 0.0]
    assert build_reward("synthetic_steps")([right, wrong], record=[json.dumps(rec)] * 2) == [1.0, 0.0]


def test_step_prediction_compares_clauses():
    from midtrain.train.rewards import step_prediction

    assert step_prediction("a=1. b=2..c", "a=1.b=2.") == ("a=1. b=2.", "a=1. b=2.")  # blanks and empty clauses aside
    assert step_prediction("x=1.y=2.</think><answer>3</answer>z.w", "p.q.</think><answer>3</answer>") == (
        "x=1. y=2. </think><answer>3</answer>.",
        "p. q. </think><answer>3</answer>.",
    )
    assert step_prediction("a=1.", "a=1.b=2.") is None and step_prediction("x=1.", "") is None


def test_synthetic_steps_is_a_suffix_reward_and_its_own_success():
    from midtrain.train.rewards import SUFFIX_REWARDS, success_fn

    assert "synthetic_steps" in SUFFIX_REWARDS and "synthetic_steps" in REWARD_NAMES
    rec = json.dumps(step_record(1, 2))
    assert success_fn("synthetic_steps")([{"record": rec}], ["c=4.b=3*a=3*2=6."], [1.0]) == [1.0]
    # a plain problem record is no step task: the sample fails and counts as a reward error, the run goes on
    r = build_reward("synthetic_steps")
    assert r(["b=3*a=3*2=6.c=4."], record=[json.dumps({k: v for k, v in step_record(1, 2).items() if k != "kind"})]) == [0.0]
    assert r.errors == 1


def test_rl_on_step_tasks_with_the_process_verified_reward(tmp_path, one_thread):
    """End to end on the shipped tiny demo base: `synth tasks --steps 2`, then 2 RL steps with `synthetic_steps`."""
    from pathlib import Path

    import midtrain
    from midtrain.data.jsonl import write_jsonl
    from midtrain.synth.tasks import StepTasksConfig, tasks
    from midtrain.train.rl import run
    from midtrain.train.rl_config import RL_OPTIM, RLConfig, RolloutConfig

    base = Path(midtrain.__file__).parent / "assets" / "demo-base"
    world = dict(render="compact", modulus=10, order="dependency", distractors=False, const_max=9, max_multiplier=9)  # the base's
    write_jsonl(tmp_path / "p.jsonl", generate_problems(SynthConfig(ops="3-5", n=8, seed=7, **world)))
    tasks(StepTasksConfig(problems=str(tmp_path / "p.jsonl"), out=str(tmp_path / "t"), steps=2))
    cfg = RLConfig(
        model=str(base),
        data=[str(tmp_path / "t" / "tasks.jsonl")],
        out=str(tmp_path / "rl"),
        task="suffix",
        reward="synthetic_steps",
        max_steps=2,
        per_device_batch_size=8,
        rollout=RolloutConfig(num_generations=4, max_completion_length=32),
        optim=RL_OPTIM.replace(lr=1e-4),
        save_every_steps=0,
        precision="fp32",
    )
    res = run(cfg)
    assert res.metrics["steps"] == 2 and res.metrics["reward_errors"] == 0
    log = [json.loads(line) for line in (tmp_path / "rl" / "log.jsonl").read_text().splitlines()]
    assert [r["step"] for r in log] == [1, 2]
    assert max(r["reward_mean"] for r in log) > 0  # the base, which solves these ops, continues gold prefixes verifiably
