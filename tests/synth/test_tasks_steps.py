"""``midtrain synth tasks`` (midtrain.synth.tasks): step tasks cut inside gold solutions, and their process check."""

from __future__ import annotations

import json

import pytest

from midtrain.cli import main
from midtrain.data.jsonl import iter_jsonl, write_jsonl
from midtrain.errors import ConfigError, DataError
from midtrain.synth.render import split_steps
from midtrain.synth.tasks import KIND, StepTasksConfig, choose, cut_points, problem_tasks, step_task, tasks, verify_steps

from .conftest import problems

SOLUTION = "a=2.b=3*a=3*2=6.c=4.d=b+c=6+4=0.e=a+d=2+0=2."  # mod 10; d needs b and c, e needs a and d


def hand_problem(pid: str = "p1") -> dict:
    """A compact forward problem written out by hand: a=2, b=3a, c=4, d=b+c, e=a+d (mod 10), asked e."""
    spec = [
        ("a", "const", [], 2, 2),
        ("b", "mul", [0], 3, 6),
        ("c", "const", [], 4, 4),
        ("d", "sum", [1, 2], None, 0),
        ("e", "sum", [0, 3], None, 2),
    ]
    nodes = [
        {"id": i, "name": n, "kind": kind, "parents": ps, "k": k, "value": v, "necessary": True, "letter": n}
        for i, (n, kind, ps, k, v) in enumerate(spec)
    ]
    graph = {"nodes": nodes, "target": 4, "asked": 4, "unknown": None, "given": None, "modulus": 10, "op": 7, "render": "compact"}
    graph |= {"order": [0, 1, 2, 3, 4], "trace": [0, 1, 2, 3, 4]}
    prompt = "<question>a=2.b=3*a.c=4.d=b+c.e=a+d.?e</question><think>"
    return {"id": pid, "op": 7, "context": "zoo", "mode": "forward", "render": "compact", "problem": "a=2.b=3*a.c=4.d=b+c.e=a+d.",
            "question": "?e", "solution": SOLUTION, "answer": "2", "graph": graph, "prompt": prompt,
            "completion": SOLUTION + "</think><answer>2</answer>"}  # fmt: skip


def task_at(j: int, k: int) -> dict:
    p = hand_problem()
    return step_task(p, split_steps(p["solution"], "compact"), j, k)


def test_the_prompt_ends_after_step_j_and_the_reference_is_the_next_k_steps():
    t = task_at(2, 2)
    assert t["prompt"] == "<question>a=2.b=3*a.c=4.d=b+c.e=a+d.?e</question><think>a=2.b=3*a=3*2=6."
    assert t["reference"] == "c=4.d=b+c=6+4=0."
    assert t["prompt"] + t["completion"] == hand_problem()["prompt"] + hand_problem()["completion"]  # still the gold document
    assert (t["id"], t["kind"], t["meta"]) == ("p1@2", KIND, {"problem_id": "p1", "j": 2, "k": 2, "n_steps": 5, "rest": False})
    assert t["graph"] == hand_problem()["graph"] and t["answer"] == "2"  # what the verifier reads travels along
    rest = task_at(3, 0)
    assert rest["reference"] == "d=b+c=6+4=0.e=a+d=2+0=2.</think><answer>2</answer>"
    assert rest["meta"] == {"problem_id": "p1", "j": 3, "k": 2, "n_steps": 5, "rest": True}


def test_cut_points_leave_k_steps_and_the_choice_is_a_salted_hash():
    assert cut_points(5, 2) == [1, 2, 3] and cut_points(5, 4) == [1] and cut_points(5, 5) == [] and cut_points(5, 0) == [1, 2, 3]
    assert cut_points(2, 0) == []  # the rest needs two steps left
    picks = {choose(f"p{i}", [1, 2, 3], 1, "s")[0] for i in range(40)}
    assert picks == {1, 2, 3}  # every cut point is used across problems
    assert choose("p7", [1, 2, 3], 2, "s") == choose("p7", [1, 2, 3], 2, "s") == sorted(choose("p7", [1, 2, 3], 2, "s"))
    assert any(choose(f"p{i}", [1, 2, 3], 1, "s") != choose(f"p{i}", [1, 2, 3], 1, "t") for i in range(10))
    cfg = StepTasksConfig(problems="x", out="y", steps=4, tasks_per_problem=3)
    assert [t["meta"]["j"] for t in problem_tasks(hand_problem(), cfg, "x")] == [1]  # only j=1 leaves 4 steps
    assert problem_tasks(hand_problem(), cfg.replace(steps=5), "x") == []


def test_the_stage_writes_tasks_counts_short_problems_and_is_deterministic(tmp_path, quiet):
    short = hand_problem("short") | {"solution": "a=2.e=a+2=4.", "completion": "a=2.e=a+2=4.</think><answer>4</answer>"}
    write_jsonl(tmp_path / "p.jsonl", [hand_problem("p1"), hand_problem("p2"), short])
    write_jsonl(tmp_path / "rl.jsonl", [{"id": "p1#0000", "source_id": "p1"}, {"id": "short#0000", "source_id": "short"}])
    assert main(["synth", "tasks", str(tmp_path / "p.jsonl"), "--steps", "2", "--out", str(tmp_path / "a")]) == 0
    made = [{k: v for k, v in r.items() if k != "_line"} for r in iter_jsonl(tmp_path / "a" / "tasks.jsonl")]
    assert [t["meta"]["problem_id"] for t in made] == ["p1", "p2"]
    meta = json.loads((tmp_path / "a" / "midtrain.json").read_text())
    assert meta["metrics"]["tasks"] == 2 and meta["metrics"]["skipped_short"] == 1 and meta["metrics"]["problems"] == 3
    again = StepTasksConfig(problems=str(tmp_path / "p.jsonl"), out=str(tmp_path / "b"), steps=2)
    tasks(again)
    assert (tmp_path / "b" / "tasks.jsonl").read_bytes() == (tmp_path / "a" / "tasks.jsonl").read_bytes()
    tasks(again.replace(out=str(tmp_path / "c"), only=str(tmp_path / "rl.jsonl")))  # a split's RL part picks problems
    assert [r["meta"]["problem_id"] for r in iter_jsonl(tmp_path / "c" / "tasks.jsonl")] == ["p1"]
    with pytest.raises(DataError, match="no problem has more than 5 gold steps"):
        tasks(again.replace(out=str(tmp_path / "d"), steps=5))
    with pytest.raises(ConfigError, match="key 'steps'"):
        StepTasksConfig.from_dict({"problems": "p", "out": "o", "steps": 1})


# -- the process check of predicted steps -----------------------------------------------------------------------
@pytest.mark.parametrize(
    "continuation, expected",
    [
        ("c=4.d=b+c=6+4=0.", True),  # the gold next two steps
        ("c=4.d=b+c=6+4=0.e=a+d=2+0=2.</think><answer>2</answer>", True),  # more after the two: only two are checked
        ("c=4.d=b+c=6+4=1.", False),  # wrong arithmetic
        ("c=4.d=b+a=6+2=8.", False),  # wrong parents
        ("c=4.", False),  # too few steps
        ("c=4.</think><answer>2</answer>", False),  # closed the thought after one step
        ("lorem ipsum", False),  # garbage
        ("", False),
        ("b=3*a=3*2=6.c=4.", False),  # restates a prefix step
    ],
)
def test_k_step_predictions_are_process_verified(continuation, expected):
    assert verify_steps(task_at(2, 2), continuation) is expected


def test_another_valid_order_counts_and_an_invalid_one_does_not():
    t = task_at(1, 2)  # prefix a; reference b, c
    assert verify_steps(t, "b=3*a=3*2=6.c=4.") and verify_steps(t, "c=4.b=3*a=3*2=6.")  # either order is valid
    assert not verify_steps(t, "b=3*a=3*2=6.d=b+c=6+4=0.")  # d before its parent c: right numbers, invalid order
    assert verify_steps(task_at(2, 2), "c=4.d=b+c=6+4=0.")


def test_the_rest_must_verify_as_a_whole():
    t = task_at(3, 0)
    assert verify_steps(t, "d=b+c=6+4=0.e=a+d=2+0=2.</think><answer>2</answer>")
    assert not verify_steps(t, "d=b+c=6+4=0.e=a+d=2+0=2.</think><answer>3</answer>")  # wrong answer
    assert not verify_steps(t, "d=b+c=6+4=0.</think><answer>2</answer>")  # a missing step
    with pytest.raises(ValueError, match="not a step task"):
        verify_steps(hand_problem(), "x")


@pytest.mark.parametrize("render, mode", [("compact", "forward"), ("compact", "reverse"), ("natural", "forward"), ("natural", "reverse")])
def test_gold_continuations_verify_in_every_render_and_mode(render, mode):
    """Generated problems (natural bindings, ``… is unknown``, ``We know …``, ``Answer:``): the gold continuation of
    every task, its next k steps or the rest, passes the check, and the reference is what the prompt leaves out."""
    pool = problems(ops="3-6", n=12, seed=3, render=render, mode=mode, modulus=10 if render == "compact" else None)
    checked = 0
    for p in pool:
        for k in (2, 3, 0):
            cfg = StepTasksConfig(problems="x", out="y", steps=k, tasks_per_problem=2)
            for t in problem_tasks(dict(p), cfg, "x"):
                assert t["prompt"] + t["completion"] == p["prompt"] + p["completion"]
                assert " ".join(t["completion"].split()).startswith(" ".join(t["reference"].split()))
                assert verify_steps(t, t["completion"]), (t["prompt"], t["completion"])
                if k:
                    assert verify_steps(t, t["reference"])
                checked += 1
    assert checked >= 30  # (short op-3 solutions have fewer cut points)
