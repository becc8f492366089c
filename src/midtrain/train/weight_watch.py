"""The changed ratio per layer during RL (``weights.watch`` of ``midtrain rl``): the share of each layer's entries
the run has moved so far, in the bf16 and the fp32 view (PRISM; "RL finetunes small subnetworks", arXiv 2505.11711,
counts RL's sparse updates in bf16).

Algorithm: when the run starts (before any step, and before a resumed checkpoint's weights are loaded) the initial
weights are kept once per view asked for: ``bf16`` as their bf16 rounding (half an fp32 model copy), ``fp32`` as
stored (one model copy; the policy's weights are fp32 under every ``precision``, bf16 being autocast). Each time a
step's log record is built, the parameters are visited one at a time (one temporary of one parameter's size) and
an entry counts as changed

- in the bf16 view when its bf16 rounding differs from the initial entry's (``analyze weights``' definition with
  τ = 0: a change below half a bf16 unit in the last place is invisible to a bf16 checkpoint);
- in the fp32 view when its value differs at all.

The shares of changed entries are logged per group — ``embed`` (input embedding), ``layer.N`` (decoder layer N),
``norm`` (the final norm), ``lm_head`` (an untied output head), ``other`` — and over ``all``, as
``changed_bf16/<group>`` and ``changed_fp32/<group>`` (log.jsonl and the trackers). A tied output head is the
embedding's parameter and counts once, under ``embed``. The parameters must be whole on every rank (one process or
DDP), checked at train begin as for the subnetwork (:func:`midtrain.train.subnetwork.check_whole`).
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import Any, Literal

import torch
from transformers import TrainerCallback

from midtrain.models.names import layer_index
from midtrain.train.subnetwork import check_whole

View = Literal["bf16", "fp32"]
KEY = "weights.watch"


def group_of(name: str) -> str:
    """The log group of a parameter name: ``layer.N``, ``embed``, ``lm_head``, ``norm`` or ``other``."""
    layer = layer_index(name)  # the numbered decoder layers, named as `analyze weights` names them
    if layer is not None:
        return f"layer.{layer}"
    if re.search(r"embed_tokens|(?:^|\.)(?:wte|embed_in|word_embeddings)\.", name):
        return "embed"
    if re.search(r"lm_head|embed_out", name):
        return "lm_head"
    return "norm" if "norm" in name else "other"


def initial_copy(p: torch.Tensor, view: View) -> torch.Tensor:
    """What a view keeps of a parameter's initial value: its bf16 rounding, or a copy as stored."""
    return p.detach().to(torch.bfloat16 if view == "bf16" else p.dtype, copy=True)


def changed_entries(p: torch.Tensor, p0: torch.Tensor, view: View) -> int:
    """Entries of ``p`` that differ from ``p0`` (:func:`initial_copy` of its initial value) in ``view``."""
    now = p.detach().to(torch.bfloat16) if view == "bf16" else p.detach()  # [shape]
    return int((now != p0).sum())


def group_order(group: str) -> tuple[int, int]:
    """embed, layer.0 … layer.N, norm, lm_head, other: the order of a record's keys."""
    if group.startswith("layer."):
        return 1, int(group.split(".")[1])
    return {"embed": 0, "norm": 2, "lm_head": 3}.get(group, 4), 0


class WeightWatch(TrainerCallback):
    """The shares of changed entries per group and view (module docstring); :meth:`stats` is called by the step log
    when it builds a record. Build it on the initial model, before a resumed checkpoint is loaded."""

    def __init__(self, model: Any, views: Sequence[View]) -> None:
        self.views: list[View] = list(dict.fromkeys(views))
        self.params = [(name, group_of(name), p) for name, p in model.named_parameters()]
        self.shapes = [tuple(p.shape) for _, _, p in self.params]  # as built: a sharded parameter no longer has them
        self.initial = {v: [initial_copy(p, v) for _, _, p in self.params] for v in self.views}

    def _initial_on(self, view: View, i: int, device: torch.device) -> torch.Tensor:
        if self.initial[view][i].device != device:
            self.initial[view][i] = self.initial[view][i].to(device)
        return self.initial[view][i]

    def stats(self) -> dict[str, float]:
        """``changed_<view>/<group>``: the share of the group's entries changed since the start, and ``/all``."""
        out: dict[str, float] = {}
        for view in self.views:
            changed: dict[str, int] = {}
            total: dict[str, int] = {}
            for i, (_, group, p) in enumerate(self.params):
                n = changed_entries(p, self._initial_on(view, i, p.device), view)
                changed[group] = changed.get(group, 0) + n
                total[group] = total.get(group, 0) + p.numel()
            for group in sorted(total, key=group_order):
                out[f"changed_{view}/{group}"] = changed[group] / total[group] if total[group] else 0.0
            out[f"changed_{view}/all"] = sum(changed.values()) / max(sum(total.values()), 1)
        return out

    def on_train_begin(self, args, state, control, model=None, **kw):
        check_whole(model, [(name, p, shape) for (name, _, p), shape in zip(self.params, self.shapes)], KEY)
        with torch.no_grad():  # the copies follow the policy to its device once, not at every record
            for view in self.views:
                for i, (_, _, p) in enumerate(self.params):
                    self._initial_on(view, i, p.device)


__all__ = ["KEY", "View", "WeightWatch", "changed_entries", "group_of", "group_order", "initial_copy"]
