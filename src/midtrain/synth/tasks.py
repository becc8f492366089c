"""``midtrain synth tasks``: RL mid-training tasks whose continuation is the next steps of a gold solution.

Why: the suffix task of ``augment tasks`` on a synthetic document ends its prompt at ``<think>`` and takes the answer
block as the true continuation, so RL mid-training on it is outcome RL under another name. Here the prompt ends
*inside* the solution, and predicting the continuation is the reasoning itself (issue 29).

Algorithm, for each problem record of ``synth generate`` or ``synth select`` (in file order; with ``only``, just the
problems whose id is the ``source_id``, else the ``id``, of a record of that file, e.g. a split's ``rl.jsonl``):

1. Split the gold solution into its n steps (:func:`midtrain.synth.render.split_steps`: compact ``name=…=value.``
   clauses, natural sentences).
2. The cut points are j = 1 … n − k with ``steps: k`` (k ≥ 2 steps remain after the prefix), or j = 1 … n − 2 with
   ``steps: 0`` (the rest: at least 2 steps remain). A problem without one is skipped and counted
   (``skipped_short``).
3. Keep the ``tasks_per_problem`` cut points with the smallest ``unit_interval(f"{id}@{j}", salt)``: a salted hash,
   so the same file and salt give the same tasks.
4. prompt = the problem's prompt (``<question>Q</question><think>``) + the first j gold steps; reference = the next
   k steps verbatim, or with ``steps: 0`` the rest of the gold completion (the remaining steps, ``</think>`` and the
   answer block), stripped; completion = the gold rest, so that prompt + completion is still the gold document.

A task record is its problem record (``graph``, ``answer``, ``solution``: what the synthetic verifier reads, so that
``midtrain rl`` puts it in the ``record`` column as it does for answer tasks) with ``id`` ``<problem id>@<j>``, the
new ``prompt`` and ``completion``, ``reference``, ``kind: "suffix_steps"`` and ``meta = {problem_id, j, k, n_steps,
rest}`` (k: the number of reference steps, n − j for the rest). ``midtrain rl --task suffix`` trains on it with
``reward: synthetic_steps``, ``exact_match`` or ``judge`` (:mod:`midtrain.train.rewards`).

**Verification** (:func:`verify_steps`, the reward ``synthetic_steps``, all or nothing): the policy's text after the
prompt is its thought (up to a ``</think>``) and its prediction at once. With ``steps: k`` the prompt's gold steps
and that text are parsed together by the synthetic verifier (:func:`midtrain.synth.verify.parse_steps`, so natural
``Define … as L`` bindings carry over and prose is skipped); the first m predicted steps (m: the reference's steps)
must each be a necessary quantity not stated before, with the gold parents and value, and with its parents already
computed: a right step of *another valid order* counts. With ``steps: 0`` the prompt's steps plus the text must
verify as a whole completion (every step and the answer). Launch::

    midtrain synth generate --ops 6-8 --n 2000 --seed 12 --render compact --modulus 10 --out problems.jsonl
    midtrain synth tasks problems.jsonl --steps 2 --out runs/step-tasks          # → runs/step-tasks/tasks.jsonl
    midtrain rl --model runs/sft --data runs/step-tasks/tasks.jsonl --task suffix --reward synthetic_steps --out runs/rlmt
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from midtrain.config import Config, param
from midtrain.console import log
from midtrain.data.corpus import iter_records
from midtrain.data.jsonl import write_jsonl
from midtrain.data.records import clean, where
from midtrain.errors import ConfigError, DataError
from midtrain.runs import Result, open_run
from midtrain.shards import unit_interval
from midtrain.synth.render import split_steps
from midtrain.synth.verify import MAX_CHARS, Gold, Step, gold_of, load_problems, parse_steps, verify
from midtrain.thoughts import THINK_CLOSE, THINK_OPEN

KIND = "suffix_steps"  # the ``kind`` of a step task record (an ``augment tasks`` record is "suffix")
MIN_REST = 2  # steps that must remain after the prefix with ``steps: 0``


@dataclass
class StepTasksConfig(Config):
    """RL mid-training tasks whose continuation is the next steps of a gold solution."""

    problems: str = param("", "Problem JSONL of `synth generate` or `synth select`.", positional=True, path="file")
    out: str = param("", "Output directory: tasks.jsonl and midtrain.json.", path="dir")
    steps: int = param(2, "k: the reference is the next k gold steps (k ≥ 2); 0 = the rest of the trace and the answer block.", ge=0)
    tasks_per_problem: int = param(1, "Cut points (tasks) per problem, chosen by hash among those leaving enough steps.", ge=1)
    only: str = param(
        "", "Use only the problems whose id is the source_id (else id) of a record of this file (e.g. a split's rl.jsonl).", path="file"
    )
    salt: str = param("midtrain-steps", "Hash salt of the cut-point choice.")
    overwrite: bool = param(False, "Replace an existing output directory holding a different run.")

    def check(self) -> None:
        if not self.problems or not self.out:
            raise ConfigError("keys 'problems' and 'out': give the problem JSONL and the output directory")
        if self.steps == 1:
            raise ConfigError("key 'steps': give k ≥ 2 (one step is one operation, no reasoning to speak of), or 0 for the rest")


def step_meta(rec: dict[str, Any]) -> dict[str, Any] | None:
    """The ``meta`` of a step task record (j, k, n_steps, rest), None for any other record."""
    meta = rec.get("meta")
    return meta if rec.get("kind") == KIND and isinstance(meta, dict) else None


def cut_points(n_steps: int, steps: int) -> list[int]:
    """The j (steps in the prefix) that leave ``steps`` steps (0: at least :data:`MIN_REST`) after the prefix."""
    need = steps or MIN_REST
    return list(range(1, n_steps - need + 1))


def choose(pid: str, candidates: list[int], m: int, salt: str) -> list[int]:
    """The ``m`` candidates with the smallest salted hash of ``<pid>@<j>``, in increasing order."""
    return sorted(sorted(candidates, key=lambda j: unit_interval(f"{pid}@{j}", salt))[:m])


def first_steps(steps: list[str], j: int, render: str) -> str:
    """The first ``j`` gold steps as the gold completion spells them after ``<think>`` (render.render_record):
    compact steps follow each other; natural sentences are joined by a space, after one."""
    return "".join(steps[:j]) if render == "compact" else " " + " ".join(steps[:j])


def step_task(problem: dict[str, Any], steps: list[str], j: int, k: int) -> dict[str, Any]:
    """The task of ``problem`` whose prompt holds its first ``j`` gold ``steps`` (``k``: 0 = the rest)."""
    render = problem.get("render", "natural")
    body = first_steps(steps, j, render)
    gold = problem["completion"]
    if not gold.startswith(body):
        raise DataError(f"problem '{problem['id']}': its completion does not start with its solution's steps")
    rest = gold[len(body) :]
    reference = ("" if render == "compact" else " ").join(steps[j : j + k]) if k else rest.strip()
    meta = {"problem_id": problem["id"], "j": j, "k": k or len(steps) - j, "n_steps": len(steps), "rest": not k}
    return clean(problem) | {
        "id": f"{problem['id']}@{j}",
        "prompt": problem["prompt"] + body,
        "completion": rest,
        "reference": reference,
        "kind": KIND,
        "meta": meta,
    }


def problem_tasks(problem: dict[str, Any], cfg: StepTasksConfig, path: str) -> list[dict[str, Any]]:
    """The step tasks of one problem record (none when its solution is too short)."""
    solution = problem.get("solution")
    if not isinstance(solution, str) or not solution.strip():
        raise DataError(f"{where(problem, path)}: a step task needs the problem's gold 'solution' (synth generate records)")
    steps = split_steps(solution, problem.get("render", "natural"))
    chosen = choose(problem["id"], cut_points(len(steps), cfg.steps), cfg.tasks_per_problem, cfg.salt)
    return [step_task(problem, steps, j, cfg.steps) for j in chosen]


def wanted_ids(path: str) -> set[str]:
    """The problem ids that ``only`` names: each record's ``source_id``, else its ``id``."""
    ids = {str(r.get("source_id") or r.get("id")) for r in iter_records(path) if r.get("source_id") or r.get("id")}
    if not ids:
        raise DataError(f"key 'only': {path} has no record with a source_id or id")
    return ids


def tasks(cfg: StepTasksConfig) -> Result:
    """Write the step tasks of the problems (see the module docstring)."""
    inputs: dict[str, Any] = {"problems": cfg.problems} | ({"only": cfg.only} if cfg.only else {})
    with open_run(cfg.out, "synth_tasks", cfg, inputs, overwrite=cfg.overwrite) as run:
        if run.cached:
            return Result.of(run)
        problems = load_problems(cfg.problems)
        if cfg.only:
            keep = wanted_ids(cfg.only)
            problems = [p for p in problems if p["id"] in keep]
            if not problems:
                raise DataError(f"key 'only': no problem of {cfg.problems} has an id named in {cfg.only}")
        out: list[dict[str, Any]] = []
        short = 0
        for p in problems:
            made = problem_tasks(p, cfg, cfg.problems)
            short += not made
            out += made
        if not out:
            need = cfg.steps or MIN_REST
            raise DataError(f"{cfg.problems}: no problem has more than {need} gold steps (key 'steps': {cfg.steps})")
        write_jsonl(run.path / "tasks.jsonl", out)
        run.finish(
            {
                "problems": len(problems),
                "tasks": len(out),
                "skipped_short": short,
                "steps": cfg.steps or "rest",
                "mean_prefix_steps": round(sum(t["meta"]["j"] for t in out) / len(out), 2),
                "mean_reference_steps": round(sum(t["meta"]["k"] for t in out) / len(out), 2),
                "mean_n_steps": round(sum(t["meta"]["n_steps"] for t in out) / len(out), 2),
            }
        )
        log(f"synth tasks: {len(out)} step tasks from {len(problems)} problems ({short} too short) → {run.path / 'tasks.jsonl'}")
        return Result.of(run)


# -- process verification of predicted steps (the reward ``synthetic_steps``) ----------------------------------
def prefix_trace(task: dict[str, Any]) -> str:
    """The gold steps that a step task's prompt holds after ``<think>``, as the prompt spells them."""
    meta = step_meta(task)
    if meta is None:
        raise ValueError(f"record '{task.get('id')}' is not a step task (kind {KIND!r} with meta)")
    render = task.get("render", "natural")
    return first_steps(split_steps(task["solution"], render), int(meta["j"]), render)


def step_ok(step: Step, gold: Gold, done: set[str]) -> bool:
    """Whether a predicted step is right and may come now: a necessary quantity not stated before, with the gold
    parents and value, whose parents are all stated (the unknown of a reverse problem counts as stated: steps carry
    it as a linear form), and the solved unknown only after every other quantity."""
    key = step.key
    if key is None or key not in gold.values or key in done:
        return False
    if step.parents != gold.parents[key] or step.value is None or step.value != gold.values[key].mod(gold.modulus):
        return False
    if key == gold.unknown:
        return all(k in done for k in gold.keys if k != key)
    return all(p in done or p == gold.unknown for p in step.parents)


def verify_steps(task: dict[str, Any], continuation: str) -> bool:
    """Whether the continuation of a step task's prompt is right (the reward ``synthetic_steps``).

    The continuation is the policy's text itself: its thought, up to a ``</think>`` (there is none before it).

    - ``steps: k``: the trace is the prompt's gold steps followed by the continuation, parsed by
      :func:`midtrain.synth.verify.parse_steps` (clauses that are no step, such as prose or a bare ``Define … as L``,
      are skipped as the verifier skips them). The reference holds m steps (m = k, except in natural text, where
      ``… is unknown`` bindings and ``Answer:`` are no steps). True iff the continuation has ≥ m steps and each of
      its first m passes :func:`step_ok` given the steps before it: a right step of another valid order counts,
      a distractor, a repeat or a step whose parents are not computed yet does not.
    - ``steps: 0`` (the rest): True iff the prompt's steps plus the continuation verify as a whole completion
      (:func:`midtrain.synth.verify.verify`: every necessary step right and the right answer).
    """
    if not isinstance(continuation, str) or len(continuation) > MAX_CHARS:
        return False
    prefix = prefix_trace(task)
    meta = step_meta(task) or {}
    join = "" if task.get("render") == "compact" else " "  # a natural sentence must end with ". " to end
    if meta.get("rest"):
        return verify(task, THINK_OPEN + prefix + join + continuation).verified
    gold = gold_of(task)
    bound = len(prefix)

    def predicted(text: str) -> list[Step]:
        return [s for s in parse_steps(prefix + join + text, gold)[0] if s.start >= bound]

    want = len(predicted(str(task["reference"])))
    got = predicted(continuation.split(THINK_CLOSE, 1)[0])
    if want == 0 or len(got) < want:
        return False
    done = {s.key for s in parse_steps(prefix, gold)[0] if s.key is not None}
    for step in got[:want]:
        if not step_ok(step, gold, done):
            return False
        done.add(step.key or "")
    return True


__all__ = [
    "KIND",
    "StepTasksConfig",
    "choose",
    "cut_points",
    "first_steps",
    "prefix_trace",
    "problem_tasks",
    "step_meta",
    "step_ok",
    "step_task",
    "tasks",
    "verify_steps",
]
