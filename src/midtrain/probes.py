"""Probes that training runs every N optimizer steps, as a plain type below the training engine.

A stage that owns a measurement (the synthetic world's skill diagnostics, for example) describes it as a
:class:`Periodic` probe and hands it to training; the engine (:mod:`midtrain.train.engine`) turns each probe into a
trainer callback that appends one record per probe step to the run's JSONL log. Defined here, on the floor, so the
stage that builds a probe never imports the engine (and its transformers and torch) to do so.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class Periodic:
    """A probe run every ``every_steps`` optimizer steps on rank 0: ``fn(model, tokenizer, step)`` → a record
    appended, after its step, to the run's JSONL ``log_name`` (cut back on resume like ``log.jsonl``)."""

    every_steps: int
    log_name: str
    fn: Callable[[Any, Any, int], dict[str, Any]]


__all__ = ["Periodic"]
