"""Chaos soak (issue 32): SIGKILL at seeded random times, then let it finish; nothing may differ from an
uninterrupted run, and nothing may be duplicated, lost or left running.

1. **The demo.** ``midtrain demo --quick`` takes ~3 minutes on 2 shared cores, too long to run once uninterrupted
   and again under a dozen kills within the suite's budget, so the soak runs ``midtrain demo --quick`` on the
   smallest cut of ``configs/demo.yaml`` that still has every stage kind: ``synth generate``, ``augment``,
   ``augment split``, ``augment tasks``, ``sft``, ``rl``, ``eval`` (greedy and sampled at T = 1), ``synth
   diagnose``, ``analyze weights`` and ``analyze cka`` (:func:`small_demo`), with training checkpointing every
   step so that kills land in resumed training too. It is run once uninterrupted, then again killed with SIGKILL
   at :data:`KILLS` seeded random times and let finish. ``summary.json`` and every evaluation's samples must be
   identical to the uninterrupted run's, and every training log, sample file and augmented shard must hold each
   step, sample or record exactly once: the same ones as the uninterrupted run, with the same values (timings
   aside).
2. **A service.** An experiment whose judge talks to a service that daemonises a grandchild (double fork +
   ``setsid``) is killed the same way: after every kill no process of the service's tree may remain, and the
   finished verdicts are those of an uninterrupted run, each once.
"""

from __future__ import annotations

import json
import os
import random
import re
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml
from hostile_support import sub_env

from midtrain.experiment.demo import BASE_DIR

pytestmark = [pytest.mark.slow, pytest.mark.timeout(900)]

ROOT = Path(__file__).resolve().parents[2]
SEED = 32
KILLS = 10
PAIRS = 3000  # judged pairs of the service soak: ~6 s of judging
# The cut of configs/demo.yaml: one stage of every kind, and what they read.
KEEP = ["base", "id_data", "edge_docs", "rl_prompts", "eval_set", "aug", "split", "rlmt_tasks", "sft_think", "rl_c"]
KEEP += ["eval_c", "eval_c_t1", "diag_c", "weights_rl", "cka_rl"]
SMALL_VARS = {"edge_docs": 48, "sft_tokens": 8192, "rl_steps": 3, "rl_batch": 8, "eval_total": 16, "t1_samples": 2, "diag_n": 2}
SMALL_ARGS: dict[str, dict[str, Any]] = {
    "id_data": {"n": 64},
    "rl_prompts": {"n": 16},
    "sft_think": {"save_every_steps": 1, "log_every_steps": 1},
    "rl_c": {"save_every_steps": 1, "log_every_steps": 1, "rollout": {"max_completion_length": 32}},
    "cka_rl": {"max_examples": 8},
}
TIMING = ("seconds", "tok_s", "mfu", "tokens_per_second")  # and every key ending in _s or _seconds


def merge(base: dict[str, Any], over: dict[str, Any]) -> dict[str, Any]:
    return {**base, **{k: merge(base[k], v) if isinstance(v, dict) and isinstance(base.get(k), dict) else v for k, v in over.items()}}


def small_demo(path: Path) -> Path:
    """The soak's experiment file: :data:`KEEP` of configs/demo.yaml with small budgets, one arm."""
    doc = yaml.safe_load((ROOT / "configs" / "demo.yaml").read_text())
    variables = {**doc["vars"], **SMALL_VARS}
    text = json.dumps({k: doc["stages"][k] for k in KEEP})
    for k, v in variables.items():  # inline them: --quick would replace the demo's own variables by its budgets
        text = text.replace(json.dumps(f"${{vars.{k}}}"), json.dumps(v))
    stages = json.loads(text)
    for name, args in SMALL_ARGS.items():
        stages[name]["args"] = merge(stages[name]["args"], args)
    stages["base"] = {"path": str(BASE_DIR)}
    doc = {"name": "chaos", "seeds": [0], "base": "base", "vars": variables, "stages": stages, "arms": {"c": doc["arms"]["c"]}}
    path.write_text(yaml.safe_dump(doc, sort_keys=False))
    return path


# -- running and killing ---------------------------------------------------------------------------------------------
def spawn(argv: list[str], log: Path) -> subprocess.Popen:
    with open(log, "a") as f:
        return subprocess.Popen(
            [sys.executable, "-m", "midtrain", *argv],
            stdout=f,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            env=sub_env({"MIDTRAIN_QUIET": "0"}),  # the log shows which stage each kill interrupted
        )


STAGE_START = re.compile(r"experiment: (\S+@\S+): [^→\n]+ →")  # the runner's line when a stage starts running


@dataclass
class Kill:
    """One kill: ``delay`` seconds after stage ``key`` starts running (at once if it is done already; "": after
    the process starts)."""

    key: str
    delay: float


def finish(argv: list[str], log: Path, timeout: float = 600) -> dict[str, float]:
    """Run ``argv`` to the end; the seconds after its start at which each stage started (``key → s``; "" → the end)."""
    t0, starts = time.monotonic(), {}
    offset = log.stat().st_size if log.exists() else 0
    proc = spawn(argv, log)
    try:
        while proc.poll() is None and time.monotonic() - t0 < timeout:
            for key in STAGE_START.findall(tail(log, offset)):
                starts.setdefault(key, time.monotonic() - t0)
            time.sleep(0.02)
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.wait()
    assert proc.returncode == 0, f"midtrain {' '.join(argv)} exited {proc.returncode}:\n{log.read_text()[-4000:]}"
    return {**starts, "": time.monotonic() - t0}


def tail(log: Path, offset: int) -> str:
    """The log from byte ``offset`` on (what this run wrote; the log is shared by all runs)."""
    return log.read_bytes()[offset:].decode("utf-8", "replace")


def stage_plan(starts: dict[str, float], rng: random.Random) -> list[Kill]:
    """:data:`KILLS` kills spread over the stages of a reference run (``starts`` from :func:`finish`), each at a random
    moment within a stage drawn in proportion to its time (until the next stage started), in the order they ran."""
    order = sorted(starts.items(), key=lambda kv: kv[1])
    spans = [(key, nxt - t) for (key, t), (_, nxt) in zip(order, order[1:])]
    picks = rng.choices(range(len(spans)), weights=[d for _, d in spans], k=KILLS)
    return [Kill(spans[i][0], rng.uniform(0.1, 0.9) * spans[i][1]) for i in sorted(picks)]


def kill_by_plan(argv: list[str], log: Path, journal: Path, plan: list[Kill], after_kill: Callable[[], None] = lambda: None) -> int:
    """Start ``argv`` again and again, SIGKILLed as each kill of ``plan`` says (``journal``: the experiment's journal
    directory, where a finished stage's record appears), until the plan is done or a run finishes; ``after_kill``
    checks the world after each kill. The number of kills."""
    kills = 0
    for kill in plan:
        offset = log.stat().st_size if log.exists() else 0
        proc = spawn(argv, log)
        mark = f"experiment: {kill.key}: "
        while kill.key and proc.poll() is None and not (journal / f"{kill.key}.json").exists():
            if any(line.startswith(mark) and "→" in line for line in tail(log, offset).splitlines()):
                break
            time.sleep(0.01)
        try:
            code = proc.wait(kill.delay)
        except subprocess.TimeoutExpired:
            proc.send_signal(signal.SIGKILL)
            proc.wait()
            kills += 1
            with open(log, "a") as f:
                f.write(f"\n[chaos: SIGKILL {kills}: {kill.key or 'start'} + {kill.delay:.2f} s]\n")
            after_kill()
            continue
        assert code == 0, f"a restarted run failed with exit {code}:\n{log.read_text()[-4000:]}"
        break
    return kills


# -- comparing -------------------------------------------------------------------------------------------------------
def untimed(obj: Any) -> Any:
    """``obj`` without wall-time fields (everything else of a deterministic run is reproducible)."""
    if isinstance(obj, dict):
        return {k: untimed(v) for k, v in obj.items() if k not in TIMING and not k.endswith(("_s", "_seconds"))}
    if isinstance(obj, list):
        return [untimed(v) for v in obj]
    return obj


def read(path: Path, root: Path) -> str:
    """The text of ``path`` with its run's output directory written as ``<out>`` (the runs differ only there)."""
    return re.sub(re.escape(str(root)) + r'(?=[/"])', "<out>", path.read_text())


def records(path: Path, root: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in read(path, root).splitlines() if line.strip()]


def exactly_once(recs: list[dict[str, Any]], key: Callable[[dict[str, Any]], Any], where: Path) -> dict[Any, Any]:
    keys = [key(r) for r in recs]
    dup = sorted({k for k in keys if keys.count(k) > 1}, key=str)
    assert not dup, f"{where}: duplicated {dup[:5]}"
    return {key(r): untimed(r) for r in recs}


def compare_outputs(ref: Path, got: Path) -> None:
    """Every log step, evaluation sample and augmented record of ``got`` once, and as in ``ref``."""
    kinds = [
        ("**/log.jsonl", lambda r: r["step"]),
        ("**/samples.jsonl", lambda r: (r["benchmark"], r["id"], r["sample"])),
        ("**/shards/*.jsonl", lambda r: r["id"]),
        ("**/tasks.jsonl", lambda r: r["id"]),
    ]
    for pattern, key in kinds:
        found = sorted(p.relative_to(ref) for p in ref.glob(pattern))
        assert found, f"the uninterrupted run wrote no {pattern}"
        for rel in found:
            want = exactly_once(records(ref / rel, ref), key, ref / rel)
            have = exactly_once(records(got / rel, got), key, got / rel)
            lost, extra = sorted(set(want) - set(have), key=str), sorted(set(have) - set(want), key=str)
            assert not lost and not extra, f"{rel}: lost {lost[:5]}, not in the uninterrupted run {extra[:5]}"
            changed = [k for k in want if want[k] != have[k]]
            assert not changed, f"{rel}: {len(changed)} records differ, e.g. {changed[0]}: {want[changed[0]]} != {have[changed[0]]}"
    for name in ("summary.json", "diagnose.json", "weights.json", "cka.json"):
        for p in ref.glob(f"**/{name}"):
            rel = p.relative_to(ref)
            assert untimed(json.loads(read(got / rel, got))) == untimed(json.loads(read(p, ref))), f"{rel} differs"


def test_demo_survives_random_kills(tmp_path: Path) -> None:
    exp = small_demo(tmp_path / "chaos.yaml")
    ref, got = tmp_path / "ref", tmp_path / "chaos"
    argv = ["demo", "--quick", "--experiment", str(exp), "--seeds", "0", "--jobs", "2"]
    starts = finish([*argv, "--out", str(ref)], tmp_path / "ref.log")
    plan = stage_plan(starts, random.Random(SEED))
    kills = kill_by_plan([*argv, "--out", str(got)], tmp_path / "chaos.log", got / "runs" / ".journal", plan)
    assert kills == KILLS, f"the run finished after {kills} kills; the soak needs {KILLS}"
    finish([*argv, "--out", str(got)], tmp_path / "chaos.log")
    compare_outputs(ref, got)


# -- a service -------------------------------------------------------------------------------------------------------
def alive(pid: int) -> bool:
    """Whether ``pid`` runs (a zombie counts as gone)."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] not in ("Z", "X")
    except (FileNotFoundError, IndexError):
        return False


def service_experiment(tmp: Path, out: Path, pairs: Path) -> Path:
    """A judge stage talking to a service that daemonises a grandchild (:data:`test_hostile_services.SERVICE`)."""
    from test_hostile_services import SERVICE

    (tmp / "srv.py").write_text(SERVICE)
    (tmp / "state").mkdir(exist_ok=True)
    svc = {"command": [sys.executable, str(tmp / "srv.py"), "${port}", str(tmp / "state"), "daemon"], "port": 0, "stop_grace_s": 2}
    backend = {"backend": "openai", "model": "m", "base_url": "${svc.url}/v1", "max_retries": 3, "max_concurrency": 4, "timeout_s": 30}
    judge = {"verb": "judge", "per_seed": False, "args": {"input": str(pairs), "thoughts": False, "batch_size": 32, "backend": backend}}
    doc = {"name": "svc", "out": str(out), "report": False, "stages": {"svc": {"per_seed": False, "service": svc}, "judged": judge}}
    path = tmp / f"{out.name}.yaml"
    path.write_text(yaml.safe_dump(doc))
    return path


def service_tree_gone(tmp: Path, out: Path) -> None:
    """No process of the service remains: the server, its daemonised grandchild, the watchdog's group."""
    state, info = tmp / "state", out / "shared" / "svc.json"
    pids = [int((state / name).read_text()) for name in ("pid", "grandchild") if (state / name).is_file()]
    if info.is_file():
        pids.append(json.loads(info.read_text())["pgid"])
    end = time.monotonic() + 15
    while any(alive(p) for p in pids) and time.monotonic() < end:
        time.sleep(0.05)
    left = [p for p in pids if alive(p)]
    for p in left:  # the failure: leave nothing behind
        os.kill(p, signal.SIGKILL)
    assert not left, f"processes of the service outlived the killed runner: {left}"


def test_a_service_experiment_survives_random_kills(tmp_path: Path) -> None:
    pairs = tmp_path / "pairs.jsonl"
    pairs.write_text(
        "".join(json.dumps({"id": f"p{i}", "completion": f"the answer is {i}", "reference": f"{i}"}) + "\n" for i in range(PAIRS))
    )
    ref, got = tmp_path / "ref", tmp_path / "chaos"
    starts = finish(["experiment", "run", str(service_experiment(tmp_path, ref, pairs))], tmp_path / "ref.log")
    service_tree_gone(tmp_path, ref)
    # every kill lands in the judging, at a random moment after it (re)started: in all, the restarts judge about
    # half of the pairs before the last kill, whatever the speed of the machine
    judging = starts[""] - starts["judged@shared"]
    rng = random.Random(SEED)
    plan = [Kill("judged@shared", rng.uniform(0, judging / KILLS)) for _ in range(KILLS)]
    argv = ["experiment", "run", str(service_experiment(tmp_path, got, pairs))]
    kills = kill_by_plan(argv, tmp_path / "chaos.log", got / ".journal", plan, lambda: service_tree_gone(tmp_path, got))
    assert kills == KILLS, f"the run finished after {kills} kills; the soak needs {KILLS}"
    finish(argv, tmp_path / "chaos.log")
    service_tree_gone(tmp_path, got)
    rel = Path("shared") / "judged"
    want = exactly_once(records(ref / rel / "verdicts.jsonl", ref), lambda r: r["id"], ref / rel)
    have = exactly_once(records(got / rel / "verdicts.jsonl", got), lambda r: r["id"], got / rel)
    assert have == want and len(want) == PAIRS
    exactly_once(records(got / rel / "verdict_cache.jsonl", got), lambda r: r["key"], got / rel / "verdict_cache.jsonl")
