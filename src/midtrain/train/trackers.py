"""Experiment trackers (``report_to``) of ``midtrain pretrain``, ``midtrain sft`` and ``midtrain rl``.

The writing is transformers' own: ``TrainingArguments.report_to`` makes the trainer add its TensorBoard, wandb or
trackio callback (``run_name`` = the run directory's name, trackio project ``midtrain``). midtrain connects them
to its run (:func:`connect`):

1. **One source of truth.** The stage's :class:`midtrain.train.steplog.StepLogCallback` is moved to the front of
   the trainer's callbacks. Every callback's ``on_log`` receives the same ``logs`` dict, and ours replaces its
   contents with the ``log.jsonl`` record's numbers (:func:`midtrain.train.steplog.publish`) before any tracker
   sees it: the trackers log exactly the values of ``log.jsonl`` (loss, lr, grad_norm, tokens, windowed tok/s,
   MFU; RL's reward statistics), under the same names with transformers' ``train/`` prefix (``train/tok_s``).
2. **TensorBoard format.** Event files under ``<run>/tensorboard``, written by a ``SummaryWriter`` whose
   ``purge_step`` is the first step this process trains: a resumed run's readers drop the steps that an
   interrupted attempt logged after its last checkpoint, as ``log.jsonl`` is cut back (engine ``start``).
3. **The run's config** (``Config.to_dict()``, URL passwords masked) goes to each tracker at train begin:
   TensorBoard text ``midtrain/config`` (YAML), wandb and trackio ``config["midtrain"]``.

A tracker whose package is missing is a :class:`ConfigError` naming it before the run directory exists
(:func:`check_installed`); install them with ``pip install 'midtrain[trackers]'``.
"""

from __future__ import annotations

import importlib
import importlib.util
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Literal, get_args

from transformers import TrainerCallback

from midtrain.config import Config, to_yaml
from midtrain.errors import ConfigError
from midtrain.train.engine import checkpoint_step
from midtrain.train.ranks import is_main
from midtrain.train.steplog import StepLogCallback

Tracker = Literal["tensorboard", "wandb", "trackio", "none"]
TRACKERS: tuple[str, ...] = get_args(Tracker)
TB_DIR = "tensorboard"  # inside the run directory
CONFIG_TAG = "midtrain/config"


def chosen(report_to: Sequence[str]) -> list[str]:
    """The trackers asked for, each once, in order; 'none' (or nothing) means none."""
    return [t for t in dict.fromkeys(report_to) if t != "none"]


def check_report_to(report_to: Sequence[str]) -> None:
    """A ConfigError (key ``report_to``) for a value outside :data:`TRACKERS` or 'none' next to a tracker; the
    config parser already refuses unknown values, this also covers configs built in Python."""
    for i, t in enumerate(report_to):
        if t not in TRACKERS:
            raise ConfigError(f"key 'report_to[{i}]': expected one of {', '.join(map(repr, TRACKERS))}, got {t!r}")
    if "none" in report_to and chosen(report_to):
        raise ConfigError(f"key 'report_to': 'none' cannot be combined with {', '.join(chosen(report_to))}")


def check_installed(report_to: Sequence[str]) -> None:
    """A ConfigError naming the tracker whose package is not installed (before any run directory exists)."""
    for t in chosen(report_to):
        if importlib.util.find_spec(t) is None:
            raise ConfigError(f"key 'report_to': '{t}' needs the {t} package (pip install 'midtrain[trackers]')")


def run_name(out: str | Path) -> str:
    """The trackers' run name: the run directory's name."""
    return Path(out).resolve().name


def tensorboard_writer(log_dir: Path, start_step: int) -> Any:
    """A ``SummaryWriter`` on ``log_dir`` that hides, from readers, the events an earlier attempt logged at steps
    after ``start_step`` (the checkpoint this process resumes from; 0 for a fresh start)."""
    from torch.utils.tensorboard import SummaryWriter

    return SummaryWriter(log_dir=str(log_dir), purge_step=start_step + 1)


class TrackerConfigCallback(TrainerCallback):
    """Sends the run's config to the trackers on rank 0 once they are set up (it runs after their callbacks)."""

    def __init__(self, config: dict[str, Any], config_yaml: str, report_to: Sequence[str], tb_callbacks: Sequence[Any]) -> None:
        self.config, self.config_yaml, self.report_to, self.tb_callbacks = config, config_yaml, chosen(report_to), list(tb_callbacks)

    def on_train_begin(self, args, state, control, **kw):
        if not state.is_world_process_zero:
            return
        for cb in self.tb_callbacks:
            if cb.tb_writer is not None:
                # four-space indent: TensorBoard renders text as markdown, this keeps the YAML a code block
                cb.tb_writer.add_text(CONFIG_TAG, "".join(f"    {line}\n" for line in self.config_yaml.splitlines()), state.global_step)
        for name in ("wandb", "trackio"):
            if name in self.report_to:
                module = importlib.import_module(name)
                if name == "trackio" or getattr(module, "run", None) is not None:
                    module.config.update({"midtrain": self.config}, allow_val_change=True)


def connect(trainer: Any, logger: StepLogCallback, cfg: Config, report_to: Sequence[str], run_path: Path, resume: Path | None) -> None:
    """Connect the trainer's tracker callbacks to the run (see the module docstring), which resumes from checkpoint
    ``resume`` (None: from step 0); nothing when no tracker is chosen."""
    from transformers.integrations import TensorBoardCallback

    if not chosen(report_to):
        return
    start_step = (checkpoint_step(resume) or 0) if resume is not None else 0
    handler = trainer.callback_handler
    handler.callbacks.remove(logger)
    handler.callbacks.insert(0, logger)  # its on_log rewrites `logs` before any tracker reads them
    tb = [cb for cb in handler.callbacks if isinstance(cb, TensorBoardCallback)]
    for cb in tb:
        cb.logging_dir = str(run_path / TB_DIR)
        if is_main():  # only rank 0 writes; the callback itself skips the other ranks
            cb.tb_writer = tensorboard_writer(run_path / TB_DIR, start_step)
    trainer.add_callback(TrackerConfigCallback(cfg.to_dict(), to_yaml(cfg), report_to, tb))


__all__ = [
    "CONFIG_TAG",
    "TB_DIR",
    "TRACKERS",
    "Tracker",
    "TrackerConfigCallback",
    "check_installed",
    "check_report_to",
    "chosen",
    "connect",
    "run_name",
    "tensorboard_writer",
]
