"""Stages of ``midtrain experiment run`` that run in other processes: under a launcher, and parallel workers.

- :func:`launch_stage`: a stage with ``launch: [accelerate, launch, ...]`` runs as
  ``LAUNCHER -m midtrain VERB --config FILE`` in a subprocess, its config written (unredacted: the launched stage
  needs the real URL) to ``OUT/.journal/<step key>.yaml``; a non-zero exit fails the stage, and its metrics are
  read back from its run directory's ``midtrain.json``.
- :func:`worker_init`: the initializer of the ``jobs > 1`` worker processes: each dies with the experiment process
  (``PR_SET_PDEATHSIG``: the pool is created and kept by the runner's main thread, so the thread-death caveat of
  that signal does not bite here) and uses ``threads`` CPU threads.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from midtrain.console import log
from midtrain.errors import MidtrainError
from midtrain.experiment.spec import Step
from midtrain.fileio import read_json


def launch_stage(out_dir: Path, step: Step, launch: list[str]) -> dict[str, Any]:
    """Run one stage under a launcher (accelerate, torchrun, srun …) in a subprocess, its config written under the
    experiment's ``out_dir``; its run dir's metrics."""
    import subprocess

    from midtrain.config import to_yaml
    from midtrain.fileio import atomic_write_text

    assert step.config is not None  # run_step handles `path` stages (no config) without launching
    conf = out_dir / ".journal" / f"{step.key}.yaml"
    conf.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_text(conf, to_yaml(step.config, redact=False))  # the launched stage needs the real URL
    argv = [*launch, "-m", "midtrain", *step.verb.split(), "--config", str(conf)]
    log(f"experiment: {step.key}: launching {' '.join(argv)}")
    rc = subprocess.run(argv, stdin=subprocess.DEVNULL).returncode
    if rc != 0:
        raise MidtrainError(f"launched command exited with code {rc}: {' '.join(argv)}")
    meta = step.out / "midtrain.json"
    return read_json(meta).get("metrics", {}) if meta.is_file() else {}


def worker_init(threads: int) -> None:
    """A stage worker: dies with the experiment process (kill -9 included) and uses ``threads`` CPU threads."""
    import ctypes
    import os
    import signal

    try:  # Linux: SIGKILL this worker when its parent dies, so that no orphan keeps writing after a kill -9
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        pass
    os.environ["OMP_NUM_THREADS"] = str(threads)


__all__ = ["launch_stage", "worker_init"]
