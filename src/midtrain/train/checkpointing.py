"""When a causal-LM run saves a resumable checkpoint: every N optimizer steps or every M minutes, whichever first.

A killed run resumes from its newest complete ``checkpoints/checkpoint-N`` (:mod:`midtrain.train.engine`), so it
loses at most one interval: ``save_every_steps`` bounds the loss in steps, ``save_every_minutes`` in time (what a
user of a slow model or a preemptible machine cares about). Both are on by default, as a user of the HF
``Trainer`` (``save_steps=500``) expects; ``keep_checkpoints`` newest ones are kept (``save_total_limit``).

:class:`SavePolicy` is a trainer callback that sets ``control.should_save``; transformers' own step trigger is off
(``save_strategy="no"``), so the policy is one place and no checkpoint is written at the last step, where the
final model goes to the run root instead (a complete run is never resumed). Under DDP/FSDP the time trigger is
decided on rank 0 and broadcast: the ranks' clocks differ, and a save that some ranks skip deadlocks the
collective ones. The step trigger needs no broadcast, every rank counts the same steps.
"""

from __future__ import annotations

import time
from typing import Any

from transformers import TrainerCallback


def now() -> float:
    """Seconds on a monotonic clock (a function, so that a test can move time forward)."""
    return time.monotonic()


def rank0_decides(flag: bool) -> bool:
    """Rank 0's ``flag`` on every rank of an initialised process group (a one-element broadcast), else ``flag``."""
    import torch
    import torch.distributed as dist

    if not (dist.is_available() and dist.is_initialized()) or dist.get_world_size() == 1:
        return flag
    # NCCL moves only CUDA tensors; gloo (CPU runs) only CPU ones
    device = torch.device("cuda", torch.cuda.current_device()) if dist.get_backend() == "nccl" else torch.device("cpu")
    t = torch.tensor([int(flag)], device=device)
    dist.broadcast(t, src=0)
    return bool(t.item())


class SavePolicy(TrainerCallback):
    """Asks the trainer for a checkpoint every ``every_steps`` steps or ``every_minutes`` minutes since the last
    save (or since this process began training), whichever comes first; 0 turns a trigger off."""

    def __init__(self, every_steps: int, every_minutes: float) -> None:
        self.every_steps, self.seconds = every_steps, every_minutes * 60
        self.last = now()

    def on_train_begin(self, args: Any, state: Any, control: Any, **kw: Any) -> None:
        self.last = now()  # a resumed run counts from its own start, not from the killed one's last save

    def on_step_end(self, args: Any, state: Any, control: Any, **kw: Any) -> None:
        if state.global_step >= state.max_steps:
            return  # the final model is saved at the run root
        due = bool(self.every_steps) and state.global_step % self.every_steps == 0
        if self.seconds and not due:  # the same condition on every rank, so every rank joins the broadcast
            due = rank0_decides(now() - self.last >= self.seconds)
        if due:
            control.should_save = True

    def on_save(self, args: Any, state: Any, control: Any, **kw: Any) -> None:
        self.last = now()


def save_arguments(keep_checkpoints: int) -> dict[str, Any]:
    """The ``TrainingArguments`` of checkpoint saving under :class:`SavePolicy` (transformers' trigger off)."""
    return {"save_strategy": "no", "save_total_limit": keep_checkpoints}


__all__ = ["SavePolicy", "rank0_decides", "save_arguments", "now"]
