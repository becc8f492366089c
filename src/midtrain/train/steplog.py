"""The step log of a training run: ``log.jsonl``, one progress line per logged step, and the run's loss.

- :class:`StepLogCallback` writes ``log.jsonl`` on rank 0 (the last step always logged) and one progress line per
  logged step, with rates over the last logging window (:class:`Window`), not the whole run: a run's first steps
  (lazy initialisation, allocator and kernel warm-up) would otherwise colour every later line. It also marks
  checkpoints (``run.keep()`` once resumable state exists). Stages subclass it for what a record holds.
- The record is the one source of the trackers' scalars too: it replaces the trainer's ``logs`` in place
  (:func:`publish`) before the trackers' callbacks see them (``report_to``, :mod:`midtrain.train.trackers`).
- Periodic probes (:class:`midtrain.probes.Periodic`, e.g. the synthetic world's skill diagnostics) come in as
  :class:`PeriodicCallback` with their own JSONL log.
- Resume cuts every log back to the checkpoint's step (:func:`truncate_log`), so no step is logged twice; a torn
  last line (killed mid-write) is skipped (:func:`read_log`).
- :func:`run_mean_loss`: the whole run's mean loss from ``log.jsonl`` (transformers' ``training_loss`` covers only
  the steps of the current process, which after a resume is not the run's).
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

from transformers import TrainerCallback

from midtrain.console import log
from midtrain.fileio import atomic_write_text, ordinary_permissions
from midtrain.probes import Periodic
from midtrain.runs import Run

LOG = "log.jsonl"


def read_log(path: Path) -> list[dict[str, Any]]:
    """The records of a JSONL log; a torn last line (killed mid-write) is skipped."""
    if not path.is_file():
        return []
    out = []
    for line in path.read_text(encoding="utf-8").splitlines():
        try:
            rec = json.loads(line)
        except json.JSONDecodeError:
            continue
        if isinstance(rec, dict):
            out.append(rec)
    return out


def truncate_log(path: Path, step: int, *, write: bool = True) -> list[dict[str, Any]]:
    """The records of steps ≤ ``step`` (the checkpoint we resume from); ``write`` cuts the file back to them."""
    keep = [r for r in read_log(path) if r.get("step", 0) <= step]
    if write and path.is_file():
        atomic_write_text(path, "".join(json.dumps(r) + "\n" for r in keep))
    return keep


def append_log(path: Path, rec: dict[str, Any]) -> None:
    try:
        with open(path, "a", encoding="utf-8") as f:
            f.write(json.dumps(rec) + "\n")
    except OSError as e:  # a full disk raises without a file name: name the log (a torn last line is skipped)
        raise OSError(e.errno, e.strerror, str(path)) from None


def rate(count: float, seconds: float) -> float:
    """``count`` per second (0 for an empty window)."""
    return count / seconds if seconds > 0 else 0.0


def _sync_device() -> None:
    """Wait for queued GPU work, so that a timestamp means the work before it is done."""
    import torch

    if torch.cuda.is_available() and torch.cuda.is_initialized():
        torch.cuda.synchronize()


@dataclass(frozen=True)
class Window:
    """The steps and seconds since the previous logged step (or since training began in this process)."""

    steps: int
    seconds: float


class StepLogCallback(TrainerCallback):
    """``log.jsonl`` and one progress line per logged step; the last step is always logged; marks checkpoints.

    Subclasses define :meth:`record` (the JSON record of a logged step, or None to skip it) and :meth:`line` (its
    progress line), and may extend :meth:`mark_checkpoint`. Rates use the logging window, not the whole run.
    ``history`` holds every record of the run (rank 0 writes them; every rank keeps them). ``REPLACES``: the
    trainer's log keys that the record renames (dropped from ``logs`` by :func:`publish`).
    """

    REPLACES: ClassVar[tuple[str, ...]] = ("learning_rate",)  # → lr

    def __init__(self, run: Run, max_steps: int, history: list[dict[str, Any]] | None = None) -> None:
        self.run, self.path, self.max_steps = run, run.path / LOG, max_steps
        self.history: list[dict[str, Any]] = list(history or [])
        self.t_begin, self.step0 = time.perf_counter(), 0  # when and at which step this process began training
        self.mark = (0, self.t_begin)  # (step, time) that the current window starts from
        self.first: tuple[int, float] | None = None  # (step, time) at the end of this process's first step
        self.last_logged: tuple[int, float] | None = None
        self.marked: Path | None = None  # the newest checkpoint this process saved and marked complete

    def on_train_begin(self, args, state, control, **kw):
        self.t_begin, self.step0 = time.perf_counter(), state.global_step
        self.mark = (self.step0, self.t_begin)

    def on_step_end(self, args, state, control, **kw):
        if self.first is None:
            _sync_device()
            self.first = (state.global_step, time.perf_counter())
        if state.global_step >= self.max_steps:
            control.should_log = True  # the last step is always logged, even when max_steps < log_every_steps

    def on_log(self, args, state, control, logs=None, **kw):
        if not logs or "loss" not in logs or "train_runtime" in logs:
            return
        now = time.perf_counter()  # after the trainer synchronised to read the loss
        window = Window(state.global_step - self.mark[0], now - self.mark[1])
        self.mark = self.last_logged = (state.global_step, now)
        rec = self.record(state, logs, window)
        if rec is None:
            return
        publish(logs, rec, self.REPLACES)
        self.history.append(rec)
        if state.is_world_process_zero:
            append_log(self.path, rec)
            log(self.line(rec, window))

    def on_save(self, args, state, control, **kw):
        ckpt = Path(args.output_dir) / f"checkpoint-{state.global_step}"
        if ckpt.is_dir() and state.is_world_process_zero:
            ordinary_permissions(ckpt)
            self.mark_checkpoint(ckpt, state)
            self.run.keep()  # the directory now holds resumable state: keep it even if the run fails later
            self.marked = ckpt

    def mark_checkpoint(self, ckpt: Path, state: Any) -> None:
        """Write what makes ``ckpt`` complete for this stage (transformers' own trainer_state.json by default)."""

    def record(self, state: Any, logs: dict[str, Any], window: Window) -> dict[str, Any] | None:
        raise NotImplementedError

    def line(self, rec: dict[str, Any], window: Window) -> str:
        raise NotImplementedError

    def seconds_per_step(self, window: Window) -> float:
        return window.seconds / max(window.steps, 1)

    def steps_per_second(self) -> float:
        """Whole-run average of this process excluding its first step (lazy initialisation, allocator and kernel
        warm-up make it unrepresentative); a run of one step has nothing else, so it is that step's rate."""
        if self.last_logged is None:
            return 0.0
        if self.first is not None and self.last_logged[0] > self.first[0]:
            return rate(self.last_logged[0] - self.first[0], self.last_logged[1] - self.first[1])
        return rate(self.last_logged[0] - self.step0, self.last_logged[1] - self.t_begin)


def publish(logs: dict[str, Any], rec: dict[str, Any], replaces: Iterable[str] = ()) -> None:
    """Put the numbers of a ``log.jsonl`` record into the trainer's ``logs`` dict, in place, under their log.jsonl
    names (``step`` is the x-axis, not a value). Every callback's ``on_log`` receives this same dict, so the
    tracker callbacks that run after ours log exactly what log.jsonl holds; the trainer's keys in ``replaces``
    (which the record renames, e.g. ``learning_rate`` → ``lr``) are dropped so that each quantity has one series."""
    for key in replaces:
        logs.pop(key, None)
    logs.update({k: v for k, v in rec.items() if k != "step" and isinstance(v, (int, float)) and not isinstance(v, bool)})


class PeriodicCallback(TrainerCallback):
    """The trainer callback of a :class:`Periodic` probe."""

    def __init__(self, probe: Periodic, run_path: Path) -> None:
        self.probe, self.path = probe, run_path / probe.log_name

    def on_step_end(self, args, state, control, model=None, processing_class=None, **kw):
        if state.global_step % self.probe.every_steps or not state.is_world_process_zero:
            return
        append_log(self.path, {"step": state.global_step, **self.probe.fn(model, processing_class, state.global_step)})


def run_mean_loss(history: Iterable[dict[str, Any]], resumed_at: int = 0) -> float | None:
    """Mean training loss over the logged steps of the whole run: each record's ``loss`` (the mean of its logging
    window) weighted by the steps it covers; a window never reaches back past ``resumed_at`` (the checkpoint a
    resumed process started from: the steps logged after it before a kill were cut from the log)."""
    total = steps = 0.0
    prev = 0
    for rec in history:
        step, loss = rec.get("step"), rec.get("loss")
        if not isinstance(step, int) or not isinstance(loss, (int, float)):
            continue
        if prev < resumed_at < step:
            prev = resumed_at
        if step > prev:
            total, steps = total + (step - prev) * loss, steps + step - prev
        prev = max(prev, step)
    return total / steps if steps else None
