"""The ``slurm`` section of ``midtrain augment``: the typed options of datatrove's ``SlurmPipelineExecutor``.

With ``executor: datatrove_slurm`` the shards run as one Slurm job array (one array task per shard), submitted by
:func:`midtrain.augment.datatrove.build_executor` with these fields: ``partition``, ``time`` (a Slurm duration:
``minutes``, ``MM:SS``, ``HH:MM:SS``, ``D-HH``, ``D-HH:MM`` or ``D-HH:MM:SS``), ``cpus_per_task``,
``mem_per_cpu_gb``, ``job_name``, ``qos``, ``logging_dir`` (datatrove logs and completion markers; on a shared
filesystem), ``env_command`` (run before each task, e.g. activating the venv) and ``sbatch_args`` (any further
``#SBATCH --key=value`` lines; an empty value writes the flag alone). The section lives apart from :mod:`midtrain.augment.datatrove` so that reading
an augment config never imports datatrove.

Every value that reaches the generated sbatch script is checked here, before anything is submitted: no value may
hold a control character (a newline would start a line of shell of its own), single words stay single words, and
the logging directory, which ``#SBATCH --output`` names, has no whitespace, quote, ``#`` or backslash, because sbatch
parses ``#SBATCH`` lines itself, not through a shell, and would cut it there. What lands on a shell line of the
script (paths, ``venv_path``, ``srun_args``) is shell-quoted by :class:`midtrain.augment.datatrove.QuotedSlurmExecutor`;
``env_command`` is a shell command by design and is written as given, on one line.
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from midtrain.config import Config, param
from midtrain.errors import ConfigError

SLURM_TIME = re.compile(r"\d+(:\d{1,2}){0,2}|\d+-\d+(:\d{1,2}){0,2}")
SLURM_WORD = re.compile(r"[\w.,@+%-]+")  # a value that goes into an #SBATCH line: no spaces, no newlines
MAX_BARE_MINUTES = 1440  # a longer duration is written D-HH:MM:SS; a bigger bare number is a misread H:MM:SS
SBATCH_KEY = re.compile(r"[a-z][a-z0-9-]*")
SBATCH_PATH_UNSAFE = re.compile(r"[\s\"'#\\]")  # what sbatch's own #SBATCH parser splits, groups, escapes or drops
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
        check_script_value("env_command", self.env_command)
        check_sbatch_path("logging_dir", self.logging_dir)
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


def _strings(key: str, value: Any) -> Iterator[tuple[str, str, str]]:
    """``(dotted key, string, what)`` of every string in ``value``: itself (``what`` empty), or the values and the
    names (``what`` "the name …") of nested mappings and lists."""
    if isinstance(value, str):
        yield key, value, ""
    elif isinstance(value, dict):
        for k, v in value.items():
            if isinstance(k, str):
                yield key, k, f"the name {k!r} "
            yield from _strings(f"{key}.{k}", v)
    elif isinstance(value, (list, tuple)):
        for i, v in enumerate(value):
            yield from _strings(f"{key}[{i}]", v)


def check_script_value(key: str, value: Any) -> None:
    """ConfigError naming the key when a string in ``value`` (nested names and values included) holds a control
    character: in a generated script a newline or carriage return would end the line it sits on."""
    for where, text, what in _strings(key, value):
        bad = next((c for c in text if unicodedata.category(c) == "Cc"), None)
        if bad is not None:
            raise ConfigError(
                f"key '{where}': {what}contains the control character {bad!r}; values written into the sbatch script are one line"
            )


def check_sbatch_path(key: str, path: str) -> None:
    """ConfigError naming the key unless ``path`` can stand in an ``#SBATCH`` line as one argument (see module doc)."""
    check_script_value(key, path)
    if SBATCH_PATH_UNSAFE.search(path):
        raise ConfigError(
            f"key '{key}': {path!r} holds whitespace, a quote, '#' or a backslash, which sbatch's #SBATCH lines cannot carry; "
            "use a path without them"
        )


def check_executor_values(executor: str, out: str, options: dict[str, Any], slurm: SlurmConfig) -> None:
    """The other values of an augment config that datatrove writes into a generated script: ``executor_options``
    (keys and values), and with Slurm the default logging directory ``OUT/datatrove`` and ``slurm_logs_folder``."""
    check_script_value("executor_options", options)
    if executor == "datatrove_slurm":
        if not slurm.logging_dir:
            check_sbatch_path("out", out)
        if "slurm_logs_folder" in options:
            check_sbatch_path("executor_options.slurm_logs_folder", str(options["slurm_logs_folder"]))


__all__ = ["SlurmConfig", "check_executor_values", "check_sbatch_path", "check_script_value"]
