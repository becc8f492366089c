"""``midtrain experiment run CONFIG``: an experiment is a graph of cached stages; arms are named chains through it.

An experiment config names **stages** — each a CLI verb with its config (``args``), or an existing checkpoint
(``path``) — and **arms**, the comparisons: an arm lists the training stages of its chain (for compute
accounting) and the eval stage of its final checkpoint (for the results table)::

    # midtrain: experiment run
    name: demo
    seeds: [0, 1, 2]
    stages:
      base:      {path: ../src/midtrain/assets/demo-base}            # a shipped checkpoint
      edge:      {verb: synth generate, per_seed: false, args: {preset: tiny-edge, n: 2000, seed: 7}}
      rl_a:      {verb: rl, args: {model: "${base}", data: ["${edge}"], seed: "${seed}"}}
      eval_a:    {verb: eval, args: {model: "${rl_a}", synthetic: "${eval_set}"}}
    arms:
      a: {label: "base → RL", chain: [rl_a], eval: eval_a}

Algorithm:

1. **Resolve** every stage for each seed. ``${name}`` is replaced by stage ``name``'s output path
   (``OUT/seed-S/name``; ``OUT/shared/name`` for ``per_seed: false`` stages; a ``.jsonl`` file for verbs whose
   output is a file), ``${seed}`` by the seed, ``${vars.key}`` by a variable and ``${out}`` by the seed's
   directory; a value that is exactly one reference keeps the referenced type. A stage's dependencies are the
   stages it references; the graph must be acyclic. Each stage's ``args`` are parsed into its verb's typed
   config right away, so a wrong key fails before anything runs, naming ``stages.NAME.args.KEY``.
2. **Run** stages in dependency order, in-process through the same functions as the CLI verbs. A stage shared by
   several arms (same name) runs once per seed, and a ``per_seed: false`` stage once per experiment. Stages
   write run directories, whose content-hash cache makes a finished stage a no-op; a journal
   (``OUT/.journal/<stage key>.json``, written atomically after the stage finished) also skips verbs that write
   plain files. Killing the process (even ``kill -9``) and re-running resumes: finished stages are skipped and an
   interrupted training stage resumes from its last checkpoint. With ``jobs: N`` up to N stages whose inputs are
   ready run at once in worker processes (``threads_per_job`` CPU threads each; workers die with the experiment);
   a stage can also run under a launcher (``launch: [accelerate, launch, ...]``) as a subprocess.
3. **Account** compute per arm from the stages' metrics: training tokens and FLOPs (``6·N·tokens`` for
   pretraining/SFT; generated + trained tokens for RL), split into mid-training (pretrain/SFT/RL mid-training on
   suffix tasks) and RL post-training, with the mid-training fraction β = mid / (mid + RL) of the Interplay
   compute-split study. The shared base is reported once, not charged to the arms.
4. **Summarize**: ``OUT/experiment.json`` (per seed and arm: compute and the eval metrics by op range) and a
   table on the console; then ``midtrain report`` over every run directory into ``OUT/report``.

Safety: stage and arm names name files and directories under ``OUT``, so they must match ``SAFE_NAME`` (letters,
digits, ``_.-``, no ``..``, at most 64 characters); ``path`` stages must exist before anything is created; one
experiment process holds ``OUT`` at a time (a lock, like every stage's run directory), so a second ``experiment
run`` on the same ``out`` fails at once naming the first one's pid. **An experiment file is code, like a
Makefile**: ``launch:`` runs any command it names with your permissions, and ``args`` point stages at any path
you can read or write. Run only experiment files you trust, as you would ``make`` in a checkout you trust.
"""

from __future__ import annotations

import dataclasses
import re
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from midtrain.config import MAX_SEED, Config, param
from midtrain.console import log
from midtrain.errors import ConfigError, MidtrainError
from midtrain.experiment.compute import arm_results
from midtrain.experiment.launch import launch_stage, worker_init
from midtrain.experiment.refs import ref_stage, references, substitute
from midtrain.experiment.service import SERVICE, Services, ServiceSpec, ref_value, service_record
from midtrain.locks import PathLock
from midtrain.runs import atomic_write_json, is_complete, read_json, stable_hash
from midtrain.stages import stage, verbs

SAFE_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")  # stage and arm names: one path component under OUT


@dataclass
class StageSpec(Config):
    """One node of the experiment graph."""

    verb: str = param("", "CLI verb run by this stage (e.g. 'pretrain', 'sft', 'rl', 'eval', 'synth generate').")
    args: dict[str, Any] = param({}, "The verb's config; `${stage}`, `${seed}`, `${vars.KEY}`, `${out}` are substituted.")
    path: str = param(
        "",
        "An existing checkpoint or file used as this stage's output instead of running a verb "
        "(relative paths are relative to the experiment file).",
    )
    per_seed: bool = param(True, "Run once per seed (False: once per experiment, e.g. shared evaluation sets).")
    launch: list[str] = param(
        [],
        "Run the stage as a subprocess under this launcher instead of in-process, e.g. "
        "[accelerate, launch, --config_file, configs/accelerate/fsdp.yaml] (it is given "
        "`-m midtrain VERB --config FILE`). Any command runs: experiment files are code, like Makefiles.",
    )
    service: ServiceSpec = param(
        ServiceSpec(), "A server for later stages instead of a verb (`${NAME.url}`, `${NAME.port}`): midtrain.experiment.service."
    )

    def check(self) -> None:
        if sum(map(bool, (self.verb, self.path, self.service.command))) != 1:
            raise ConfigError("give exactly one of 'verb' or 'path' (or a 'service' with a command)")
        if self.launch and not self.verb:
            raise ConfigError("'launch' needs a 'verb'")


@dataclass
class ArmSpec(Config):
    """One compared arm: a chain of training stages after the base, and the eval of its final checkpoint."""

    label: str = param("", "Display name, e.g. 'base → SFT(think) → RL'.")
    chain: list[str] = param([], "Training stages after the base, in order (compute is summed over them).")
    eval: str = param("", "The eval stage of the arm's final checkpoint.")


@dataclass
class ExperimentConfig(Config):
    """An experiment: stages (verbs with configs) and arms (chains of stages) run for several seeds."""

    CONFIG_POSITIONAL = True  # `midtrain experiment run CONFIG` reads CONFIG like --config

    name: str = param("experiment", "Experiment name (report title).")
    description: str = param("", "What the experiment measures (shown in the report).")
    out: str = param("", "Output directory (default: runs/<name>).")
    seeds: list[int] = param([0], "Seeds: every per-seed stage runs once per seed (`${seed}`).", ge=0, le=MAX_SEED)
    vars: dict[str, Any] = param({}, "Variables referenced as `${vars.KEY}` in stage args.")
    stages: dict[str, StageSpec] = param({}, "Stage name → stage (verb + args, or path).")
    arms: dict[str, ArmSpec] = param({}, "Arm name → arm (chain of training stages, final eval stage).")
    base: str = param("", "Stage holding the shared starting checkpoint (its compute is reported once).")
    only: list[str] = param([], "Run only these arms (and the stages they need); empty: everything.")
    report: bool = param(True, "Write the report (OUT/report) at the end.")
    jobs: int = param(
        1,
        "Stages run in parallel (worker processes) when their inputs are ready; tiny CPU models "
        "use the cores better as 2 single-thread jobs than as one 2-thread job.",
        ge=1,
    )
    threads_per_job: int = param(0, "CPU threads per parallel job (0: cores / jobs).", ge=0)
    config_path: str = param("", "Path of the experiment file (set by the CLI; relative `path`s resolve from it).")

    def check(self) -> None:
        if not self.stages:
            raise ConfigError("key 'stages': an experiment needs at least one stage")
        if not self.seeds:
            raise ConfigError("key 'seeds': give at least one seed")
        if self.jobs < 1 or self.threads_per_job < 0:
            raise ConfigError("keys 'jobs' (≥ 1) and 'threads_per_job' (≥ 0): out of range")
        check_names(self)
        for name, st in self.stages.items():
            if st.verb and st.verb not in verbs():
                import difflib

                close = difflib.get_close_matches(st.verb, verbs(), n=1)
                hint = f" (did you mean '{close[0]}'?)" if close else ""
                raise ConfigError(f"key 'stages.{name}.verb': unknown verb '{st.verb}'{hint}")
            if st.verb in ("experiment run", "demo"):
                raise ConfigError(f"key 'stages.{name}.verb': experiments cannot nest")
        for arm, spec in self.arms.items():
            for i, s in enumerate(spec.chain):
                if s not in self.stages:
                    raise ConfigError(f"key 'arms.{arm}.chain[{i}]': no stage named '{s}'")
            if spec.eval and spec.eval not in self.stages:
                raise ConfigError(f"key 'arms.{arm}.eval': no stage named '{spec.eval}'")
        for i, a in enumerate(self.only):
            if a not in self.arms:
                raise ConfigError(f"key 'only[{i}]': no arm named '{a}' (arms: {', '.join(self.arms)})")
        if self.base and self.base not in self.stages:
            raise ConfigError(f"key 'base': no stage named '{self.base}'")
        plan(self)  # resolves every reference and parses every stage config: errors surface before any work

    @property
    def out_dir(self) -> Path:
        return Path(self.out or f"runs/{self.name}")

    @property
    def root(self) -> Path:
        return Path(self.config_path).resolve().parent if self.config_path else Path.cwd()


def check_names(cfg: ExperimentConfig) -> None:
    """Stage and arm names become path components under ``out``: refuse any that could escape it."""
    for section, names in (("stages", list(cfg.stages)), ("arms", list(cfg.arms))):
        for name in names:
            if not SAFE_NAME.match(name) or ".." in name:
                raise ConfigError(
                    f"key '{section}.{name}': a name must be 1-64 letters, digits, '_', '.' or '-', start with a letter "
                    "or digit and contain no '..' (it names directories under out)"
                )


# -- resolution ---------------------------------------------------------------------------------------------------
@dataclass
class Step:
    """One stage for one seed, fully resolved."""

    name: str
    seed: int | None  # None: a per-experiment stage
    verb: str
    out: Path
    config: Config | None  # None for `path` stages; a ServiceSpec for services
    deps: list[str]
    fingerprint: str = ""  # the cache key of a stage that uses services (see plan)

    @property
    def key(self) -> str:
        return f"{self.name}@seed-{self.seed}" if self.seed is not None else f"{self.name}@shared"


def stage_out(cfg: ExperimentConfig, name: str, seed: int | None) -> Path:
    st = cfg.stages[name]
    if st.path:
        p = Path(st.path)
        return p if p.is_absolute() else (cfg.root / p).resolve()
    base = cfg.out_dir / ("shared" if not st.per_seed or seed is None else f"seed-{seed}")
    if st.service.command:  # the server's log
        return base / f"{name}.log"
    return base / (f"{name}.jsonl" if stage(st.verb).output == "file" else name)


def stage_refs(cfg: ExperimentConfig, name: str) -> list[str]:
    """The stages that stage ``name`` references (its args, or its service's command, env and health)."""
    st = cfg.stages[name]
    refs = references([st.args, st.service.command, st.service.env, st.service.health])
    return list(dict.fromkeys(s for s in (ref_stage(cfg.stages, r) for r in refs) if s is not None))


def _lookup(cfg: ExperimentConfig, name: str, seed: int | None, where: str, ports: dict[str, int] | None = None) -> Callable[[str], Any]:
    """Values of references in stage ``name`` for ``seed``; ``ports``: live ports of started services by step key."""

    def get(ref: str) -> Any:
        if ref == "seed":
            if seed is None:
                raise ConfigError(f"key '{where}': '${{seed}}' inside a stage with per_seed: false")
            return seed
        if ref == "out":
            return str(cfg.out_dir / (f"seed-{seed}" if seed is not None else "shared"))
        if ref.startswith("vars."):
            key = ref[5:]
            if key not in cfg.vars:
                raise ConfigError(f"key '{where}': unknown variable '{key}' (vars: {', '.join(cfg.vars) or 'none'})")
            return cfg.vars[key]
        target = ref_stage(cfg.stages, ref)
        if target is not None:
            st = cfg.stages[target]
            if seed is None and st.per_seed and not st.path:
                raise ConfigError(f"key '{where}': per-experiment stage '{name}' cannot use per-seed stage '{target}'")
            if st.service.command:  # ${NAME.url} / ${NAME.port}: live once started, nominal before
                if target == ref:
                    raise ConfigError(f"key '{where}': '${{{ref}}}' is a service: use '${{{ref}.url}}' or '${{{ref}.port}}'")
                key = f"{target}@seed-{seed}" if st.per_seed and seed is not None else f"{target}@shared"
                return ref_value(st.service, ref.rpartition(".")[2], (ports or {}).get(key))
            return str(stage_out(cfg, ref, seed))
        raise ConfigError(f"key '{where}': unknown reference '${{{ref}}}' (a stage, seed, out or vars.KEY)")

    return get


def _order(cfg: ExperimentConfig, names: list[str]) -> list[str]:
    """Stage names in dependency order (declaration order among independent stages); cycles are errors."""
    deps = {n: stage_refs(cfg, n) for n in cfg.stages}
    out: list[str] = []
    state: dict[str, int] = {}

    def visit(n: str, trail: list[str]) -> None:
        if state.get(n) == 2:
            return
        if state.get(n) == 1:
            raise ConfigError(f"key 'stages': dependency cycle {' → '.join(trail + [n])}")
        state[n] = 1
        for d in deps[n]:
            visit(d, trail + [n])
        state[n] = 2
        out.append(n)

    for n in names:
        visit(n, [])
    return out


def needed_stages(cfg: ExperimentConfig) -> list[str]:
    """All stages, or only those the selected arms need (their chains, evals and everything those reference)."""
    if not cfg.only:
        return list(cfg.stages)
    roots = [s for a in cfg.only for s in [*cfg.arms[a].chain, cfg.arms[a].eval] if s]
    if cfg.base:
        roots.insert(0, cfg.base)
    return _order(cfg, roots)


def plan(cfg: ExperimentConfig) -> list[Step]:
    """Every stage for every seed, resolved and parsed, in an order that respects dependencies."""
    order = _order(cfg, needed_stages(cfg))
    steps: list[Step] = []
    for name in order:
        st = cfg.stages[name]
        seeds: list[int | None] = list(cfg.seeds) if st.per_seed and not st.path else [None]
        for seed in seeds:
            deps, out = stage_refs(cfg, name), stage_out(cfg, name, seed)
            if st.service.command and any(cfg.stages[d].service.command for d in deps):
                raise ConfigError(f"key 'stages.{name}.service': a service cannot use another service")
            if st.path:
                steps.append(Step(name, seed, "", out, None, []))
                continue
            config = resolve(cfg, name, seed)
            services = {d: cfg.stages[d].service.to_dict() for d in deps if cfg.stages[d].service.command}
            # A stage using a service is keyed by its nominal config and the services' specs: a port picked at
            # run time must not make a finished stage look new.
            fingerprint = stable_hash({"verb": st.verb, "config": config.to_dict(), "services": services}) if services else ""
            steps.append(Step(name, seed, st.verb or SERVICE, out, config, deps, fingerprint))
    return steps


def resolve(cfg: ExperimentConfig, name: str, seed: int | None, ports: dict[str, int] | None = None) -> Config:
    """Stage ``name``'s typed config for ``seed``, references substituted (services: nominal, or live ``ports``)."""
    st, out = cfg.stages[name], stage_out(cfg, name, seed)
    if st.service.command:  # `${port}` stays for the service to fill in when it starts
        where, look = f"stages.{name}.service", _lookup(cfg, name, seed, f"stages.{name}.service")
        data = substitute(st.service.to_dict(redact=False), lambda r: "${port}" if r == "port" else look(r))
        return ServiceSpec.from_dict(data, prefix=f"{where}.", source=cfg.config_path)
    where = f"stages.{name}.args"
    args = substitute(st.args, _lookup(cfg, name, seed, where, ports))
    if "out" in args:
        raise ConfigError(f"key '{where}.out': set by the experiment ({out}); remove it")
    _, cls = stage(st.verb).resolve()
    if any(f.name == "out" for f in dataclasses.fields(cls)):
        args = {**args, "out": str(out)}
    return cls.from_dict(args, prefix=f"{where}.", source=cfg.config_path)


# -- running ------------------------------------------------------------------------------------------------------
def _journal(cfg: ExperimentConfig, step: Step) -> Path:
    return cfg.out_dir / ".journal" / f"{step.key}.json"


def _done(cfg: ExperimentConfig, step: Step, key: str) -> dict[str, Any] | None:
    j = _journal(cfg, step)
    if not j.is_file():
        return None
    rec = read_json(j)
    if rec.get("key") != key or not step.out.exists():
        return None
    if step.out.is_dir() and (step.out / "midtrain.json").is_file() and not is_complete(step.out):
        return None
    return rec


def run_step(cfg: ExperimentConfig, step: Step) -> dict[str, Any]:
    """Run (or skip) one resolved stage; returns its journal record (stage metrics included)."""
    if step.config is None:
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
        metrics = launch_stage(cfg, step, launch)
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
    _journal(cfg, step).parent.mkdir(parents=True, exist_ok=True)
    atomic_write_json(_journal(cfg, step), rec)
    return rec


def dep_keys(cfg: ExperimentConfig, step: Step) -> list[str]:
    """Keys of the steps ``step`` waits for (same seed, or the shared step)."""
    keys = []
    for d in step.deps:
        st = cfg.stages[d]
        keys.append(f"{d}@shared" if st.path or not st.per_seed else f"{d}@seed-{step.seed}")
    return keys


def _failed(step: Step, e: BaseException) -> BaseException:
    if isinstance(e, MidtrainError):
        return type(e)(f"stage '{step.key}' ({step.verb or 'path'}): {e}")
    return e


def _bind(cfg: ExperimentConfig, step: Step, services: Services) -> Step:
    """``step`` ready to run: the services it uses started and their live ports in its config (unless it is done)."""
    keys = [k for k in dep_keys(cfg, step) if k in services]
    if not keys or _done(cfg, step, step.fingerprint):
        return step
    return dataclasses.replace(step, config=resolve(cfg, step.name, step.seed, services.ensure(keys)))


def execute(cfg: ExperimentConfig, steps: list[Step]) -> dict[str, dict[str, Any]]:
    """Run the steps in dependency order (services started by this process when a step needs them, stopped when
    no step needs them any more, and at the end whatever happens)."""
    users: dict[str, set[str]] = {s.key: set() for s in steps if s.verb == SERVICE}
    for s in steps:
        for k in dep_keys(cfg, s):
            users.get(k, set()).add(s.key)
    with Services({s.key: (s.config, s.out) for s in steps if isinstance(s.config, ServiceSpec)}, users) as services:
        return _execute(cfg, steps, services)


def _execute(cfg: ExperimentConfig, steps: list[Step], services: Services) -> dict[str, dict[str, Any]]:
    """With ``jobs`` > 1, independent steps run in parallel worker processes."""
    done: dict[str, dict[str, Any]] = {}
    if cfg.jobs <= 1:
        for i, step in enumerate(steps, 1):
            if step.verb == SERVICE:  # started on demand by the first step that runs and uses it
                done[step.key] = service_record(step)
                continue
            log(f"experiment {cfg.name}: step {i}/{len(steps)}")
            try:
                done[step.key] = run_step(cfg, _bind(cfg, step, services))
            except MidtrainError as e:
                raise _failed(step, e) from e
            services.finished(step.key)
        return done
    import multiprocessing
    import os
    from concurrent.futures import FIRST_COMPLETED, ProcessPoolExecutor, wait

    threads = cfg.threads_per_job or max(1, (os.cpu_count() or 1) // cfg.jobs)
    pending = {s.key: s for s in steps}
    running: dict[Any, Step] = {}
    ctx = multiprocessing.get_context("spawn")  # no forked torch/OpenMP state
    with ProcessPoolExecutor(max_workers=cfg.jobs, mp_context=ctx, initializer=worker_init, initargs=(threads,)) as pool:
        while pending or running:
            ready = [s for s in pending.values() if all(k in done for k in dep_keys(cfg, s))]
            for step in ready:
                if step.config is None or step.verb == SERVICE:  # a `path` stage or a service: nothing to run now
                    done[step.key] = run_step(cfg, step) if step.config is None else service_record(step)
                    del pending[step.key]
                elif len(running) < cfg.jobs:
                    del pending[step.key]
                    try:
                        running[pool.submit(run_step, cfg, _bind(cfg, step, services))] = step
                    except MidtrainError as e:
                        raise _failed(step, e) from e
            if not running:
                if pending and not any(all(k in done for k in dep_keys(cfg, s)) for s in pending.values()):
                    raise MidtrainError(f"experiment {cfg.name}: unsatisfiable dependencies: {', '.join(pending)}")
                continue
            finished, _ = wait(running, return_when=FIRST_COMPLETED)
            for fut in finished:
                step = running.pop(fut)
                try:
                    done[step.key] = fut.result()
                except BaseException as e:
                    for other in running:
                        other.cancel()
                    raise _failed(step, e) from e
                services.finished(step.key)
                log(f"experiment {cfg.name}: {len(done)}/{len(steps)} steps done ({step.key})")
    return done


def run(cfg: ExperimentConfig) -> ExperimentResult:
    """Run the experiment (see module docstring)."""
    steps = plan(cfg)
    for step in steps:  # before anything is created
        if step.config is None and not step.out.exists():
            raise ConfigError(f"key 'stages.{step.name}.path': {step.out} does not exist")
    with PathLock(cfg.out_dir, "experiment directory"):
        cfg.out_dir.mkdir(parents=True, exist_ok=True)
        atomic_write_json(cfg.out_dir / "experiment.config.json", cfg.to_dict())
        return _run_locked(cfg, steps)


def _run_locked(cfg: ExperimentConfig, steps: list[Step]) -> ExperimentResult:
    """Run the steps, summarize and report, with the experiment directory locked by :func:`run`."""
    t0 = time.time()
    recs = execute(cfg, steps)
    recs_by_seed: dict[Any, dict[str, dict[str, Any]]] = {s: {} for s in cfg.seeds}
    steps_by_seed: dict[Any, dict[str, Step]] = {s: {} for s in cfg.seeds}
    for step in steps:
        for s in [step.seed] if step.seed is not None else cfg.seeds:
            recs_by_seed[s][step.name] = recs[step.key]
            steps_by_seed[s][step.name] = step
    base_rec = recs_by_seed[cfg.seeds[0]].get(cfg.base, {}) if cfg.base else {}
    summary = {
        "name": cfg.name,
        "description": cfg.description,
        "seeds": list(cfg.seeds),
        "base": {"stage": cfg.base, "metrics": base_rec.get("metrics", {})} if cfg.base else None,
        "arms": arm_results(cfg, recs_by_seed, steps_by_seed),
        "stages": {str(s): recs for s, recs in recs_by_seed.items()},
        "seconds": round(time.time() - t0, 1),
    }
    atomic_write_json(cfg.out_dir / "experiment.json", summary)
    report_dir = None
    if cfg.report:
        from midtrain.experiment.report import ReportConfig, Section, Table
        from midtrain.experiment.report import run as report

        report_dir = cfg.out_dir / "report"
        head, rows = arm_table(summary)
        arms = (
            [Section("arms", [Table("final evaluation of each arm (mean ± std over seeds) and training compute", head, rows)])]
            if rows
            else []
        )
        report(
            ReportConfig(runs=[str(p) for p in run_dirs(cfg)], out=str(report_dir), title=cfg.name, max_depth=0), extra=lambda plots: arms
        )
    print_table(summary)
    return ExperimentResult(out=str(cfg.out_dir), data=summary, report=str(report_dir) if report_dir else None)


def run_dirs(cfg: ExperimentConfig) -> list[Path]:
    """The stage run directories of an experiment (``out/<seed>/<stage>``, with a midtrain.json), in path order:
    what its report (and the demo's) is built from."""
    seen: list[Path] = []
    for d in sorted(cfg.out_dir.glob("*/*")):
        if d.is_dir() and (d / "midtrain.json").is_file() and d.name != "report" and d not in seen:
            seen.append(d)
    return seen


def arm_table(summary: dict[str, Any]) -> tuple[list[str], list[list[str]]]:
    """Rows of arm × column (mean ± std over seeds) and compute: synthetic evals give verified pass@1 per op range,
    benchmark evals their mean@k per benchmark (``BENCH.mean_at_k``)."""
    seeds = list(summary["arms"])
    arms = list(summary["arms"][seeds[0]]) if seeds else []
    columns: list[tuple[str, str]] = []  # (header, key into the arm's record)
    for a in arms:
        rec = summary["arms"][seeds[0]][a]
        cols = [(f"{r} verified", f"verified_acc:{r}") for r in rec["verified_acc"]]
        cols += [(f"{k.split('.')[0]} mean@k", f"eval:{k}") for k in rec["eval"] if k.endswith(".mean_at_k")]
        columns += [c for c in cols if c not in columns]
    head = ["arm", *[h for h, _ in columns], "train FLOPs", "β (mid share)"]
    rows = []
    for a in arms:
        cells = [summary["arms"][seeds[0]][a]["label"]]
        for _, key in columns:
            where_, name = key.split(":", 1)
            cells.append(mean_std([summary["arms"][s][a][where_].get(name) for s in seeds]))
        comp = summary["arms"][seeds[0]][a]["compute"]
        cells.append(f"{comp['flops']:.3g}")
        cells.append("–" if comp["beta"] is None else f"{comp['beta']:.2f}")
        rows.append(cells)
    return head, rows


def mean_std(values: list[Any]) -> str:
    """``mean ± std`` of the numbers among ``values`` (one value: itself; none: –)."""
    from statistics import mean, pstdev

    vals = [v for v in values if isinstance(v, (int, float))]
    return f"{mean(vals):.3f} ± {pstdev(vals):.3f}" if len(vals) > 1 else (f"{vals[0]:.3f}" if vals else "–")


def print_table(summary: dict[str, Any]) -> None:
    from midtrain.console import print_table as show

    head, rows = arm_table(summary)
    if rows:
        show(f"{summary['name']}: final evaluation of each arm (mean ± std over {len(summary['arms'])} seed(s))", head, rows)


@dataclass
class ExperimentResult:
    out: str
    data: dict[str, Any]  # experiment.json
    report: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return {"out": self.out, "report": self.report, "summary": self.data}

    def summary(self) -> str:
        return f"experiment: {self.out}/experiment.json" + (f"\n  report: {self.report}/report.html" if self.report else "")


__all__ = [
    "ExperimentConfig",
    "StageSpec",
    "ArmSpec",
    "plan",
    "run",
    "run_step",
    "arm_table",
    "substitute",
    "references",
    "run_dirs",
]
