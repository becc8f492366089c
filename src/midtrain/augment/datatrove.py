"""Multi-node ``midtrain augment`` on datatrove executors: one datatrove task per output shard.

Why datatrove rather than Ray: augmentation is an embarrassingly parallel map over shards whose only state is the
shard file, and datatrove's model is exactly that (task ``rank`` of ``world_size``, a completion marker per task,
``skip_completed`` on re-launch), with one pipeline definition for a laptop (``LocalPipelineExecutor``), a Slurm
cluster (``SlurmPipelineExecutor``: job arrays, retries, dependencies) and a Ray cluster (``RayPipelineExecutor``).
It installs in seconds with three small dependencies, where Ray brings a cluster runtime, a dashboard and a
~70 MB wheel that a CPU test suite cannot afford. The annotator itself is usually a served model (vLLM/SGLang
behind the OpenAI API), so the tasks are light HTTP clients and need no Ray object store or actors.

The task body is passed in by the caller, :func:`midtrain.augment.augment.shard_task`, which runs
``process_shard`` with ``index = rank``, ``num_shards = world_size``: the same function, the same resume logic and
the same ``.done`` markers as the inline runner, so a run may be started inline, continued on Slurm and finished
inline again. (Passing it in keeps this module below ``augment``: no import cycle, and the step pickles the task
by reference, so it must be a module-level function.) datatrove's own completion markers live in
``out/datatrove/`` (Slurm: ``slurm.logging_dir`` when set). With Slurm (the typed ``slurm`` section,
:class:`midtrain.augment.slurm.SlurmConfig`: partition, time, cpus, memory, job name, QOS, logging dir, env
command, further sbatch options) the command submits one job array and returns; re-run it when the jobs have
finished to write the manifest (finished shards are skipped). ``executor_options`` adds keyword arguments the
typed keys do not cover; naming a typed one there is an error.

The sbatch script is datatrove's, written by :class:`QuotedSlurmExecutor`, which shell-quotes what datatrove puts
unquoted on its shell lines: the paths under the logging directory, ``venv_path``, ``condaenv`` and the values of
``srun_args`` (the config has already refused control characters and, for ``#SBATCH`` lines, unsafe paths:
:mod:`midtrain.augment.slurm`). A path like ``/runs/$(id)`` therefore reaches ``launch_pickled_pipeline`` as itself.
"""

from __future__ import annotations

import re
import shlex
from collections.abc import Callable
from pathlib import Path
from typing import Any

from midtrain.errors import ConfigError, MidtrainError

try:
    from datatrove.executor import SlurmPipelineExecutor
    from datatrove.pipeline.base import PipelineStep
except ImportError:  # the runner is optional: pip install 'midtrain[distributed]'
    PipelineStep = SlurmPipelineExecutor = object
    _HAVE_DATATROVE = False
else:
    _HAVE_DATATROVE = True

SHELL_OPTIONS = ("venv_path", "condaenv")  # executor options datatrove writes unquoted into a shell line
SCRIPT_PATHS = ("executor.pik", "stats.json", "stats")  # logging-dir paths on the run lines (longest name first)


ShardTask = Callable[[dict[str, Any], int, int], dict[str, Any]]  # (config dict, rank, world_size) -> shard info


class AugmentShardStep(PipelineStep):
    """A datatrove pipeline step that runs ``task`` on shard ``rank`` of ``world_size``."""

    name = "midtrain augment shard"
    type = "annotate"

    def __init__(self, cfg: dict[str, Any], task: ShardTask) -> None:
        super().__init__()
        self.cfg, self.task = cfg, task

    def run(self, data: Any = None, rank: int = 0, world_size: int = 1) -> Any:
        info = self.task(self.cfg, rank, world_size)
        for status, k in info.get("status", {}).items():
            self.stat_update(status, value=k)
        if data:
            yield from data


class QuotedSlurmExecutor(SlurmPipelineExecutor):
    """datatrove's Slurm executor whose run lines name the logging directory's files shell-quoted (datatrove
    writes ``launch_pickled_pipeline {path}`` and ``merge_stats {path} -o {path}`` as they are)."""

    def get_launch_file_contents(self, sbatch_args: dict, run_script: str) -> str:
        for name in SCRIPT_PATHS:
            path = self.logging_dir.resolve_paths(name)
            # a whole word of the run line: "stats" does not match inside the already quoted "'…/stats.json'"
            quoted = shlex.quote(path).replace("\\", "\\\\")  # (re.sub reads backslashes in the replacement)
            run_script = re.sub(rf"(?<= ){re.escape(path)}(?=\s|$)", quoted, run_script)
        return super().get_launch_file_contents(sbatch_args, run_script)


def shell_quoted(options: dict[str, Any]) -> dict[str, Any]:
    """``executor_options`` with the values datatrove writes unquoted into shell lines quoted for the shell."""
    out = {k: shlex.quote(str(v)) if k in SHELL_OPTIONS and v else v for k, v in options.items()}
    srun = out.get("srun_args")
    if isinstance(srun, dict):
        out["srun_args"] = {k: shlex.quote(str(v)) for k, v in srun.items()}
    return out


def build_executor(cfg: Any, task: ShardTask) -> Any:
    """The datatrove executor that runs ``task`` as one :class:`AugmentShardStep` task per shard of ``cfg``."""
    if not _HAVE_DATATROVE:
        raise MidtrainError(f"executor '{cfg.executor}' needs datatrove: pip install 'midtrain[distributed]'")
    from datatrove.executor import (
        LocalPipelineExecutor,
        RayPipelineExecutor,
    )

    step = AugmentShardStep(cfg.to_dict(redact=False), task)  # workers rebuild the config: real credentials
    logging_dir = str(Path(cfg.out) / "datatrove")
    typed: dict[str, Any] = {}
    if cfg.executor == "datatrove_slurm":
        typed = cfg.slurm.executor_kwargs()
        logging_dir = cfg.slurm.logging_dir or logging_dir
    clash = sorted(set(typed) & set(cfg.executor_options))
    if clash:
        raise ConfigError(f"key 'executor_options': {', '.join(clash)} has its own key (slurm.{clash[0]})")
    options = shell_quoted(cfg.executor_options) if cfg.executor == "datatrove_slurm" else cfg.executor_options
    common = dict(pipeline=[step], tasks=cfg.num_shards, logging_dir=logging_dir, skip_completed=True, **typed, **options)
    try:
        if cfg.executor == "datatrove_local":
            common.setdefault("start_method", "spawn")
            return LocalPipelineExecutor(workers=cfg.num_workers, **common)
        if cfg.executor == "datatrove_ray":
            return RayPipelineExecutor(workers=cfg.num_workers, **common)
        return QuotedSlurmExecutor(**common)
    except TypeError as e:
        raise ConfigError(f"key 'executor_options': {e}") from None


def run_datatrove(cfg: Any, task: ShardTask) -> None:
    build_executor(cfg, task).run()


__all__ = ["AugmentShardStep", "QuotedSlurmExecutor", "ShardTask", "build_executor", "run_datatrove", "shell_quoted"]
