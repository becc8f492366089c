"""The ``slurm`` section of ``midtrain augment``: the typed options of datatrove's ``SlurmPipelineExecutor``.

With ``executor: datatrove_slurm`` the shards run as one Slurm job array (one array task per shard), submitted by
:func:`midtrain.augment.datatrove.build_executor` with these fields: ``partition``, ``time`` (a Slurm duration:
``minutes``, ``MM:SS``, ``HH:MM:SS``, ``D-HH``, ``D-HH:MM`` or ``D-HH:MM:SS``), ``cpus_per_task``,
``mem_per_cpu_gb``, ``job_name``, ``qos``, ``logging_dir`` (datatrove logs and completion markers; on a shared
filesystem), ``env_command`` (run before each task, e.g. activating the venv) and ``sbatch_args`` (any further
``#SBATCH --key=value`` lines; an empty value writes the flag alone). The section lives apart from :mod:`midtrain.augment.datatrove` so that reading
an augment config never imports datatrove.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

from midtrain.config import Config, param
from midtrain.errors import ConfigError

SLURM_TIME = re.compile(r"\d+(:\d{1,2}){0,2}|\d+-\d+(:\d{1,2}){0,2}")
SLURM_WORD = re.compile(r"[\w.,@+%-]+")  # a value that goes into an #SBATCH line: no spaces, no newlines
MAX_BARE_MINUTES = 1440  # a longer duration is written D-HH:MM:SS; a bigger bare number is a misread H:MM:SS
SBATCH_KEY = re.compile(r"[a-z][a-z0-9-]*")
# sbatch options that have their own key here (or that datatrove writes itself): refused in sbatch_args.
OWN_OPTIONS = {
    "partition": "partition",
    "time": "time",
    "cpus-per-task": "cpus_per_task",
    "mem-per-cpu": "mem_per_cpu_gb",
    "job-name": "job_name",
    "qos": "qos",
    "array": "",
    "output": "logging_dir",
    "error": "logging_dir",
}


@dataclass
class SlurmConfig(Config):
    partition: str = param("", "Slurm partition (required with executor datatrove_slurm).")
    time: str = param("24:00:00", "Time limit of one shard's job: MM, MM:SS, HH:MM:SS, D-HH, D-HH:MM or D-HH:MM:SS.")
    cpus_per_task: int = param(1, "CPUs per shard task.", ge=1)
    mem_per_cpu_gb: int = param(2, "Memory per CPU in GB.", ge=1)
    job_name: str = param("midtrain-augment", "Slurm job name.")
    qos: str = param("", "Slurm QOS; empty: the cluster's default.")
    logging_dir: str = param("", "datatrove logs and completion markers (shared filesystem); empty: OUT/datatrove.", path="dir")
    env_command: str = param("", "Shell command run before each task, e.g. 'source /shared/venv/bin/activate'.")
    sbatch_args: dict[str, Any] = param({}, "Further #SBATCH options, e.g. {account: proj, constraint: cpu}.")

    def check(self) -> None:
        if not SLURM_TIME.fullmatch(self.time):
            raise ConfigError(f"key 'time': expected a Slurm duration (MM, HH:MM:SS, D-HH:MM:SS, …), got {self.time!r}")
        if self.time.isdigit() and int(self.time) > MAX_BARE_MINUTES:  # YAML 1.1 reads 12:00:00 as 43200
            raise ConfigError(
                f"key 'time': {self.time} minutes is more than a day, which is what YAML makes of an unquoted H:MM:SS; "
                "quote the duration ('12:00:00') or write days as D-HH:MM:SS"
            )
        for key in ("partition", "job_name", "qos"):
            value = getattr(self, key)
            if value and not SLURM_WORD.fullmatch(value):
                raise ConfigError(f"key '{key}': one word without spaces or newlines, got {value!r}")
        if "\0" in self.env_command:
            raise ConfigError("key 'env_command': contains a NUL byte")
        for k, v in self.sbatch_args.items():
            if not SBATCH_KEY.fullmatch(str(k)):
                raise ConfigError(f"key 'sbatch_args': option names are sbatch's long options (e.g. account), got {k!r}")
            if str(k) in OWN_OPTIONS:
                own = OWN_OPTIONS[str(k)]
                raise ConfigError(f"key 'sbatch_args': '{k}' " + (f"has its own key '{own}'" if own else "is set by datatrove"))
            if isinstance(v, bool) or not isinstance(v, (str, int, float)) or not (v == "" or SLURM_WORD.fullmatch(str(v))):
                raise ConfigError(f"key 'sbatch_args': the value of '{k}' must be one word without spaces or newlines, got {v!r}")

    def executor_kwargs(self) -> dict[str, Any]:
        """Keyword arguments of ``SlurmPipelineExecutor`` (without pipeline, tasks and logging_dir)."""
        kw: dict[str, Any] = {
            "partition": self.partition,
            "time": self.time,
            "cpus_per_task": self.cpus_per_task,
            "mem_per_cpu_gb": self.mem_per_cpu_gb,
            "job_name": self.job_name,
            "qos": self.qos,  # datatrove writes no --qos line for "" (its own default would be "normal")
            "sbatch_args": {str(k): str(v) for k, v in self.sbatch_args.items()} or None,
        }
        if self.env_command:
            kw["env_command"] = self.env_command
        return kw


__all__ = ["SlurmConfig"]
