"""Subnetwork RL (``weights.mask`` of ``midtrain rl``): train only the entries inside a mask, freeze all others.

The question ("RL finetunes small subnetworks", arXiv 2505.11711; PRISM): does RL restricted to the entries a pilot
run changed reach the pilot's gain? The mask is a safetensors file of bool tensors named like the model's
parameters (``midtrain analyze mask START PILOT_END`` writes one; its run directory is accepted too).
``weights.mask_control`` picks which entries train: ``mask`` (inside it), ``complement`` (outside it) or
``random`` (per tensor, each entry independently with the mask's density of that tensor, from the run's seed):
the controls of "this subnetwork, or any of its size?".

How a frozen entry (outside the trained set) stays bit-identical:

1. **Gradient.** A hook on each parameter zeroes the frozen entries of its gradient as autograd produces it, before
   accumulation, DDP's all-reduce, clipping and the optimizer: the logged gradient norm and the clipping see the
   subnetwork only, and AdamW's moments of a frozen entry stay exactly 0, so its Adam update m̂/(√v̂ + ε) is
   exactly 0 (p − lr·0 is p, bit for bit).
2. **Weight decay.** Decoupled weight decay moves every entry of a decayed parameter, p ← p·(1 − lr·λ), whatever
   its gradient. With ``optim.weight_decay`` > 0 the frozen entries' values are kept at the start (a copy of the
   frozen entries only: up to one model copy in the parameters' dtype) and written back after every optimizer
   step (:meth:`Subnetwork.on_optimizer_step`), before the next forward or checkpoint reads them. With weight decay
   0 nothing else moves them and nothing is kept.

Matching: every trainable parameter needs a mask of its shape, and every mask a parameter, else a one-line
:class:`ConfigError` names the tensor; the one exception is ``lm_head.weight`` of a model that ties it to its input
embedding (the same parameter, which follows the embedding's mask). The parameters must be whole on every rank
(one process or DDP): under FSDP or DeepSpeed ZeRO-3 the parameters this module hooked are replaced or emptied,
which :func:`check_whole` detects at train begin and refuses.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any, Literal

import torch
from safetensors import SafetensorError, safe_open
from transformers import TrainerCallback

from midtrain.console import log
from midtrain.errors import ConfigError, DataError
from midtrain.train.ranks import is_main

MASK_FILE = "mask.safetensors"  # what `midtrain analyze mask` writes into its run directory
Control = Literal["mask", "complement", "random"]
KEY = "weights.mask"
TIED_HEAD = "lm_head.weight"


def mask_path(path: str | Path) -> Path:
    """The mask file of ``path``: the file itself, or ``mask.safetensors`` in a run directory."""
    p = Path(path)
    if p.is_dir():
        p = p / MASK_FILE
    if not p.is_file():
        raise ConfigError(f"key '{KEY}': no mask file at {p} (write one with `midtrain analyze mask BEFORE AFTER --out DIR`)")
    return p


def read_masks(path: str | Path) -> dict[str, torch.Tensor]:
    """The bool masks of a mask file (or run directory), by tensor name; a non-bool tensor is refused by name."""
    p = mask_path(path)
    try:
        with safe_open(str(p), framework="pt") as f:
            masks = {k: f.get_tensor(k) for k in f.keys()}
    except (OSError, ValueError, RuntimeError, SafetensorError) as e:
        raise DataError(f"{p}: not a readable safetensors file ({str(e).splitlines()[0]})") from None
    for name, m in masks.items():
        if m.dtype != torch.bool:
            raise ConfigError(f"key '{KEY}': tensor '{name}' of {p} is {m.dtype}, not a bool mask")
    return masks


def trained_entries(masks: dict[str, torch.Tensor], control: Control, seed: int) -> dict[str, torch.Tensor]:
    """Per tensor, the bool entries that train under ``control`` (module docstring); ``random`` draws each tensor
    with its own density from one generator seeded with ``seed``, tensors in name order."""
    if control == "mask":
        return masks
    if control == "complement":
        return {k: ~m for k, m in masks.items()}
    g = torch.Generator().manual_seed(seed)
    out = {}
    for name in sorted(masks):
        m = masks[name]
        density = float(m.float().mean()) if m.numel() else 0.0
        out[name] = torch.rand(m.shape, generator=g) < density  # [shape] bool
    return out


def load_masks(path: str | Path, control: Control, seed: int) -> dict[str, torch.Tensor]:
    """The entries that train under ``control`` (bool, by tensor name) from a mask file or run directory."""
    return trained_entries(read_masks(path), control, seed)


def _tied_head(model: Any) -> bool:
    out, inp = model.get_output_embeddings(), model.get_input_embeddings()
    return out is not None and inp is not None and out.weight is inp.weight


def match(model: Any, trained: dict[str, torch.Tensor]) -> list[tuple[str, torch.nn.Parameter, torch.Tensor]]:
    """(name, parameter, its bool mask of trained entries) for every trainable parameter; ConfigError naming the
    first tensor without a counterpart or of another shape."""
    params = {n: p for n, p in model.named_parameters() if p.requires_grad}
    for name in trained:
        if name not in params and not (name.endswith(TIED_HEAD) and _tied_head(model)):
            raise ConfigError(f"key '{KEY}': the mask has tensor '{name}', which is no trainable parameter of the model")
    out = []
    for name, p in params.items():
        if name not in trained:
            raise ConfigError(f"key '{KEY}': the mask has no tensor '{name}' (a parameter of the model)")
        if tuple(trained[name].shape) != tuple(p.shape):
            raise ConfigError(
                f"key '{KEY}': tensor '{name}' has shape {list(trained[name].shape)} in the mask, {list(p.shape)} in the model"
            )
        out.append((name, p, trained[name]))
    return out


def check_whole(model: Any, params: Sequence[tuple[str, torch.nn.Parameter, Any]], key: str) -> None:
    """ConfigError (naming ``key``) unless ``model`` still holds each hooked parameter whole: FSDP replaces the
    parameters and ZeRO-3 empties them, and both would make the hooks and copies silently wrong."""
    held = {id(p) for p in model.parameters()} if model is not None else None
    for name, p, ref in params:
        shape = tuple(ref.shape) if isinstance(ref, torch.Tensor) else tuple(ref)
        if (held is not None and id(p) not in held) or tuple(p.shape) != shape:
            raise ConfigError(
                f"key '{key}': parameter '{name}' is sharded or replaced (FSDP, DeepSpeed ZeRO-3); launch with DDP "
                "(configs/accelerate/ddp.yaml) or one process"
            )


class Subnetwork(TrainerCallback):
    """Freezes every entry outside ``trained`` (module docstring): gradient hooks from construction on, and with
    ``restore`` the frozen values written back after each optimizer step. Build it on the initial model, before the
    trainer moves or wraps it."""

    def __init__(self, model: Any, trained: dict[str, torch.Tensor], restore: bool) -> None:
        self.params = match(model, trained)
        self.frozen = [~m for _, _, m in self.params]  # [shape] bool per parameter, moved to its device on first use
        self.kept = [p.detach()[f] for (_, p, _), f in zip(self.params, self.frozen)] if restore else []  # [n_frozen] copies
        self.handles = [p.register_hook(self._hook(i)) for i, (_, p, _) in enumerate(self.params)]
        total = sum(p.numel() for _, p, _ in self.params)
        self.share = sum(int(m.sum()) for _, _, m in self.params) / max(total, 1)
        if is_main():
            log(f"rl: subnetwork: {self.share:.2%} of {total:,} entries train, the rest frozen ({KEY})")

    def _frozen_on(self, i: int, device: torch.device) -> torch.Tensor:
        if self.frozen[i].device != device:
            self.frozen[i] = self.frozen[i].to(device)
        return self.frozen[i]

    def _hook(self, i: int) -> Any:
        def zero_frozen(grad: torch.Tensor) -> torch.Tensor:
            return grad.masked_fill(self._frozen_on(i, grad.device), 0.0)  # [shape]

        return zero_frozen

    def restore(self) -> None:
        """Write the kept values back into the frozen entries (no-op without ``restore``)."""
        with torch.no_grad():
            for i, value in enumerate(self.kept):
                p = self.params[i][1]
                if value.device != p.device:
                    value = self.kept[i] = value.to(p.device)
                p.masked_scatter_(self._frozen_on(i, p.device), value)

    def stats(self) -> dict[str, float]:
        """The log record's share of entries that train (constant over the run)."""
        return {"subnetwork_share": self.share}

    def on_train_begin(self, args, state, control, model=None, **kw):
        check_whole(model, [(n, p, m) for n, p, m in self.params], KEY)

    def on_optimizer_step(self, args, state, control, **kw):
        self.restore()


__all__ = [
    "KEY",
    "MASK_FILE",
    "Control",
    "Subnetwork",
    "check_whole",
    "load_masks",
    "mask_path",
    "match",
    "read_masks",
    "trained_entries",
]
