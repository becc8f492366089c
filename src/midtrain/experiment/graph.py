"""The stage graph of ``midtrain experiment run``: the experiment file's typed config, its ``${...}`` references
resolved per seed, and the plan that the executor (:mod:`midtrain.experiment.executor`) runs.

Algorithm (:func:`plan`):

1. **Needed stages**: every stage, or with ``only: [arm, ...]`` the arms' chains and evals, the base, and what
   those reference, transitively.
2. **Order**: a depth-first walk over the references (``${stage}``) in declaration order, so that independent
   stages run in the order the file lists them; a reference back into the walk's trail is a cycle and an error.
3. **Steps**: each stage once per seed (``per_seed: false`` and ``path`` stages once, keyed ``NAME@shared``). A
   step's ``args`` are substituted (:func:`resolve`: stage outputs under ``OUT``, ``${seed}``, ``${vars.KEY}``,
   services' nominal URLs) and parsed into the verb's typed config, so that every error names its key before
   anything runs; ``ExperimentConfig.check`` calls :func:`plan` for that reason.

A step's cache key is the hash of its verb and resolved config (the executor's journal compares it); a step that
uses a service is keyed by its nominal config and the service's spec instead (its ``fingerprint``), because the
live port is only known once the service runs and must not make a finished stage look new.
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from midtrain.config import MAX_SEED, Config, param
from midtrain.errors import ConfigError
from midtrain.experiment.refs import ref_stage, references, substitute
from midtrain.experiment.service import SERVICE, ServiceSpec, ref_value
from midtrain.experiment.spec import ArmSpec, Step
from midtrain.runs import stable_hash
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
def stage_out(cfg: ExperimentConfig, name: str, seed: int | None) -> Path:
    """Where stage ``name`` writes for ``seed``: what ``${name}`` means to the stages that use it."""
    st = cfg.stages[name]
    if st.path:
        # relative to the experiment file, not the current directory: the file names its checkpoints the way a
        # Makefile names its sources, so it runs the same from anywhere
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
            # a stage run once cannot pick one seed's output among several
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
    state: dict[str, int] = {}  # 1: on the current trail (seen again: a cycle), 2: placed in `out`

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
            # a service's spec is resolved here, once, and never re-resolved with live ports (only its users are):
            # another service's URL in it would stay the nominal one, port 0
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
    # The experiment owns the layout under OUT: `${name}` in other stages resolves to stage_out(), so an `out`
    # of the stage's own would leave its users reading the wrong place.
    if "out" in args:
        raise ConfigError(f"key '{where}.out': set by the experiment ({out}); remove it")
    _, cls = stage(st.verb).resolve()
    if any(f.name == "out" for f in dataclasses.fields(cls)):
        args = {**args, "out": str(out)}
    return cls.from_dict(args, prefix=f"{where}.", source=cfg.config_path)


def dep_keys(cfg: ExperimentConfig, step: Step) -> list[str]:
    """Keys of the steps ``step`` waits for (same seed, or the shared step)."""
    keys = []
    for d in step.deps:
        st = cfg.stages[d]
        # a `path` stage or a per-experiment stage has one step for all seeds: every seed's step waits for it
        keys.append(f"{d}@shared" if st.path or not st.per_seed else f"{d}@seed-{step.seed}")
    return keys


__all__ = [
    "SAFE_NAME",
    "ExperimentConfig",
    "StageSpec",
    "check_names",
    "dep_keys",
    "needed_stages",
    "plan",
    "resolve",
    "stage_out",
    "stage_refs",
]
