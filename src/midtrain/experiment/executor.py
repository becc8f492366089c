"""The executor of ``midtrain experiment run``: runs the planned steps (:func:`midtrain.experiment.graph.plan`) in
dependency order, skips the ones finished earlier, and owns the services they use.

Algorithm (:func:`execute`):

1. **Skip what is done.** A step is done when its journal entry (``OUT/.journal/<step key>.json``, written
   atomically once the stage returned) holds the step's current cache key, its output still exists, and its run
   directory, if it has one, is complete. The run directory's own cache (:func:`midtrain.runs.open_run`) would make
   a finished stage a no-op anyway; the journal also covers verbs that write a plain file, and keeps the metrics
   that the summary needs without loading the stage.
2. **Run** each step in-process through the verb's function (``launch:`` steps as a subprocess under the launcher).
   With ``jobs: 1`` in plan order; with ``jobs: N`` every step whose dependencies are done is submitted to a pool
   of N spawned worker processes, as soon as a worker is free.
3. **Services** live in this process, never in a worker: each starts just before the first step that uses it
   actually runs (a rerun whose users are all finished starts none), its live port is substituted into the user's
   config, and it stops when its last user finished, and whatever happens when the experiment ends.
4. **Fail fast**: a failing step's error names the step (``stage 'NAME@seed-S' (verb): …``); steps not yet started
   never start.
"""

from __future__ import annotations

import dataclasses
import time
from pathlib import Path
from typing import Any

from midtrain.console import log
from midtrain.errors import ConfigError, MidtrainError
from midtrain.experiment.graph import ExperimentConfig, dep_keys, resolve
from midtrain.experiment.launch import launch_stage, worker_init
from midtrain.experiment.service import SERVICE, Services, ServiceSpec, service_record
from midtrain.experiment.spec import Step
from midtrain.fileio import atomic_write_json, read_json
from midtrain.runs import is_complete, stable_hash
from midtrain.stages import stage


def journal_path(cfg: ExperimentConfig, step: Step) -> Path:
    return cfg.out_dir / ".journal" / f"{step.key}.json"


def _done(cfg: ExperimentConfig, step: Step, key: str) -> dict[str, Any] | None:
    """The journal record of ``step`` if it finished with cache key ``key`` and its output is still there."""
    j = journal_path(cfg, step)
    if not j.is_file():
        return None
    rec = read_json(j)
    if rec.get("key") != key or not step.out.exists():
        return None
    # The run directory outranks the journal: one re-opened since the record was written (by hand, or by a run
    # that was killed) has no COMPLETE marker until that run finishes, whatever the journal remembers.
    if step.out.is_dir() and (step.out / "midtrain.json").is_file() and not is_complete(step.out):
        return None
    return rec


def run_step(cfg: ExperimentConfig, step: Step) -> dict[str, Any]:
    """Run (or skip) one resolved stage; returns its journal record (stage metrics included)."""
    if step.config is None:  # a `path` stage: an existing checkpoint or file, whose metrics (if any) are read back
        if not step.out.exists():
            raise ConfigError(f"key 'stages.{step.name}.path': {step.out} does not exist")
        meta = step.out / "midtrain.json"
        metrics = read_json(meta).get("metrics", {}) if meta.is_file() else {}
        return {"stage": step.name, "seed": step.seed, "verb": "path", "out": str(step.out), "metrics": metrics}
    key = step.fingerprint or stable_hash({"verb": step.verb, "config": step.config.to_dict()})
    done = _done(cfg, step, key)
    if done is not None:
        log(f"experiment: {step.key}: done earlier, skipped")
        return done
    log(f"experiment: {step.key}: {step.verb} → {step.out}")
    t0 = time.time()
    launch = cfg.stages[step.name].launch
    if launch:
        metrics = launch_stage(cfg.out_dir, step, launch)
        result = None
    else:
        fn, _ = stage(step.verb).resolve()
        result = fn(step.config)
        metrics = dict(getattr(result, "metrics", {}) or {})
    rec = {
        "stage": step.name,
        "seed": step.seed,
        "verb": step.verb,
        "out": str(step.out),
        "key": key,
        "seconds": round(time.time() - t0, 2),
        "cached": bool(getattr(result, "cached", False)),
        "metrics": metrics,
    }
    # Written last, and atomically: a kill before this line leaves no record, so the step runs again (and resumes
    # from its own checkpoints); a record that exists is whole.
    journal_path(cfg, step).parent.mkdir(parents=True, exist_ok=True)
    atomic_write_json(journal_path(cfg, step), rec)
    return rec


def _failed(step: Step, e: BaseException) -> BaseException:
    """A user-facing error re-raised with the step that failed; anything else (a bug) keeps its own type and trace."""
    if isinstance(e, MidtrainError):
        return type(e)(f"stage '{step.key}' ({step.verb or 'path'}): {e}")
    return e


def _bind(cfg: ExperimentConfig, step: Step, services: Services) -> Step:
    """``step`` ready to run: the services it uses started and their live ports in its config (unless it is done)."""
    keys = [k for k in dep_keys(cfg, step) if k in services]
    # A step that will be skipped needs no server: checking its journal first keeps a rerun of a finished
    # experiment from starting (and waiting minutes for) a vLLM server that nobody will call.
    if not keys or _done(cfg, step, step.fingerprint):
        return step
    return dataclasses.replace(step, config=resolve(cfg, step.name, step.seed, services.ensure(keys)))


def execute(cfg: ExperimentConfig, steps: list[Step]) -> dict[str, dict[str, Any]]:
    """Run the steps in dependency order (services started by this process when a step needs them, stopped when
    no step needs them any more, and at the end whatever happens); the journal record of every step by key."""
    users: dict[str, set[str]] = {s.key: set() for s in steps if s.verb == SERVICE}
    for s in steps:
        for k in dep_keys(cfg, s):
            users.get(k, set()).add(s.key)
    specs: dict[str, tuple[ServiceSpec, Path]] = {s.key: (s.config, s.out) for s in steps if isinstance(s.config, ServiceSpec)}
    with Services(specs, users) as services:
        if cfg.jobs <= 1:
            return _execute_in_order(cfg, steps, services)
        return _execute_parallel(cfg, steps, services)


def _execute_in_order(cfg: ExperimentConfig, steps: list[Step], services: Services) -> dict[str, dict[str, Any]]:
    done: dict[str, dict[str, Any]] = {}
    for i, step in enumerate(steps, 1):
        if step.verb == SERVICE:  # started on demand by the first step that runs and uses it
            done[step.key] = service_record(step)
            continue
        log(f"experiment {cfg.name}: step {i}/{len(steps)}")
        try:
            done[step.key] = run_step(cfg, _bind(cfg, step, services))
        except MidtrainError as e:
            raise _failed(step, e) from e
        # stop a server as soon as its last user is done: it may hold the GPU memory the next stage needs
        services.finished(step.key)
    return done


def _execute_parallel(cfg: ExperimentConfig, steps: list[Step], services: Services) -> dict[str, dict[str, Any]]:
    """Up to ``jobs`` steps at once in worker processes, each submitted as soon as its dependencies are done."""
    import multiprocessing
    import os
    from concurrent.futures import FIRST_COMPLETED, ProcessPoolExecutor, wait

    threads = cfg.threads_per_job or max(1, (os.cpu_count() or 1) // cfg.jobs)
    done: dict[str, dict[str, Any]] = {}
    pending = {s.key: s for s in steps}
    running: dict[Any, Step] = {}
    # spawn, not fork: a forked worker would inherit torch's and OpenMP's thread pools in whatever state the
    # runner left them, and OpenMP is not fork-safe (a forked child can hang in its first parallel region)
    ctx = multiprocessing.get_context("spawn")
    with ProcessPoolExecutor(max_workers=cfg.jobs, mp_context=ctx, initializer=worker_init, initargs=(threads,)) as pool:
        while pending or running:
            ready = [s for s in pending.values() if all(k in done for k in dep_keys(cfg, s))]
            for step in ready:
                if step.config is None or step.verb == SERVICE:  # a `path` stage or a service: nothing to run now
                    done[step.key] = run_step(cfg, step) if step.config is None else service_record(step)
                    del pending[step.key]
                elif len(running) < cfg.jobs:
                    del pending[step.key]
                    try:  # _bind runs here, in the runner: the services must outlive any one worker
                        running[pool.submit(run_step, cfg, _bind(cfg, step, services))] = step
                    except MidtrainError as e:
                        raise _failed(step, e) from e
            if not running:
                # nothing runs and nothing became ready: the steps left wait for something that never finishes
                if pending and not any(all(k in done for k in dep_keys(cfg, s)) for s in pending.values()):
                    raise MidtrainError(f"experiment {cfg.name}: unsatisfiable dependencies: {', '.join(pending)}")
                continue
            finished, _ = wait(running, return_when=FIRST_COMPLETED)
            for fut in finished:
                step = running.pop(fut)
                try:
                    done[step.key] = fut.result()
                except BaseException as e:
                    # cancel() stops only the steps not started yet: the pool's exit waits for the running ones,
                    # so the error is raised once they finished, and no run directory is cut off mid-write
                    for other in running:
                        other.cancel()
                    raise _failed(step, e) from e
                services.finished(step.key)
                log(f"experiment {cfg.name}: {len(done)}/{len(steps)} steps done ({step.key})")
    return done


__all__ = ["execute", "journal_path", "run_step"]
