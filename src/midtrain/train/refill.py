"""Dynamic sampling with refill: the batch algebra behind the online curriculum (small pure functions on tensors).

One RL step asks for B groups of G completions. With refill, the trainer generates and scores groups in rounds,
keeps the *informative* ones (rewards not all equal, no failed reward call), and stops once B are kept or the
over-generation cap is reached; then it tops the step up with uninformative groups, whose advantages are zero.

Why the result is the same update as if those B groups had been sampled directly: under Dr. GRPO (β = 0) the loss
is Σ_i Σ_t surrogate_it / (N · L_max) with N the completions of the step, a constant. Each kept row carries the
advantage its own group gave it, so concatenating rows from several rounds changes nothing but the padding, and
padded positions are masked out of every sum. A zero-advantage row contributes exactly 0 to the loss and its
gradient (min(r·0, clip(r)·0) = 0), so topping up with uninformative groups keeps N, the normaliser, without
changing the gradient. ``tests/train/test_refill.py`` checks both against the same rows given in one batch.

The rounds of one step return TRL-shaped dicts (``prompt_ids`` left-padded, ``completion_ids`` right-padded, and
per-token tensors beside them); :func:`merge_rows` pads each round to the widest and concatenates the chosen rows.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch

LEFT_PADDED = ("prompt_ids", "prompt_mask")  # TRL pads prompts on the left, completions on the right
RIGHT_PADDED = (
    "completion_ids",
    "completion_mask",
    "old_per_token_logps",
    "sampling_per_token_logps",
    "ref_per_token_logps",
    "importance_sampling_ratio",
    "tool_mask",
    "suffix_ids",  # loss.suffix_nll_weight: each row's true suffix (info_gain.suffix_columns)
    "suffix_mask",
)
RECOMPUTED = ("num_items_in_batch",)  # the caller recomputes it over the merged batch


def group_informative(rewards: torch.Tensor, G: int, failed: torch.Tensor | None = None) -> torch.Tensor:
    """[N] rewards (N = B·G, groups consecutive) and optional [N] failed flags → [B] bool: the group's rewards are
    not all equal and none of its reward calls failed (a failed call is never a gradient signal)."""
    r = rewards.float().view(-1, G)  # [B, G]
    varied = ~torch.isclose(r, r[:, :1]).all(dim=1)  # [B]
    if failed is not None:
        varied &= ~failed.view(-1, G).any(dim=1)  # [B]
    return varied


def group_rows(groups: torch.Tensor, G: int) -> torch.Tensor:
    """[K] group indices → [K·G] row indices (each group's G consecutive rows)."""
    return (groups.unsqueeze(1) * G + torch.arange(G, device=groups.device)).reshape(-1)  # [K, G] → [K*G]


def pad_value(key: str, pad_token_id: int) -> float:
    if key in ("prompt_ids", "completion_ids"):
        return float(pad_token_id)
    return 1.0 if key == "tool_mask" else 0.0  # masks and log-probs: 0 (masked out); TRL pads tool_mask with 1


def _widen(t: torch.Tensor, width: int, left: bool, value: float) -> torch.Tensor:
    extra = width - t.size(1)
    if extra <= 0:
        return t
    pad = torch.full((t.size(0), extra, *t.shape[2:]), value, dtype=t.dtype, device=t.device)
    return torch.cat([pad, t] if left else [t, pad], dim=1)


def merge_rows(parts: Sequence[tuple[dict[str, Any], torch.Tensor]], pad_token_id: int) -> dict[str, Any]:
    """Concatenate the chosen rows of several scored rounds into one batch.

    ``parts`` holds (round dict, [K] row indices) pairs; every round dict has the same keys. Per-row tensors of
    width > 1 are padded to the widest round (prompts on the left, completions and per-token tensors on the
    right); [N] tensors (sequence advantages) are concatenated as they are. Keys in :data:`RECOMPUTED` are
    dropped for the caller to recompute; any other non-row value must be equal across rounds.
    """
    if not parts:
        raise ValueError("merge_rows: no rounds to merge")
    keys = list(parts[0][0])
    out: dict[str, Any] = {}
    for key in keys:
        if key in RECOMPUTED:
            continue
        values = [d[key] for d, _ in parts]
        if not torch.is_tensor(values[0]) or values[0].dim() == 0:
            if any(v is not values[0] and v != values[0] for v in values[1:]):
                raise ValueError(f"merge_rows: '{key}' differs between rounds and is not a per-row tensor")
            out[key] = values[0]
            continue
        chosen = [v.index_select(0, idx.to(v.device)) for v, (_, idx) in zip(values, parts)]
        if chosen[0].dim() >= 2 and (key in LEFT_PADDED or key in RIGHT_PADDED or key == "advantages"):
            width = max(c.size(1) for c in chosen)
            chosen = [_widen(c, width, key in LEFT_PADDED, pad_value(key, pad_token_id)) for c in chosen]
        out[key] = torch.cat(chosen, dim=0)
    return out


class RefillPlan:
    """The rows one step keeps, round by round: informative groups until ``want`` are kept, uninformative ones
    remembered to top the step up when the cap ends the rounds first (their advantages are zero: module docstring)."""

    def __init__(self, want: int, G: int) -> None:
        self.want, self.G = want, G
        self.parts: list[tuple[dict[str, Any], torch.Tensor]] = []
        self.spare: list[tuple[dict[str, Any], torch.Tensor]] = []  # uninformative groups, by round
        self.kept = 0

    @property
    def missing(self) -> int:
        return self.want - self.kept

    def add(self, batch: dict[str, Any], informative: torch.Tensor) -> int:
        """Keep up to ``missing`` of this round's informative groups ([m] bool); returns how many were kept."""
        groups = informative.nonzero(as_tuple=True)[0][: self.missing]  # [k]
        if groups.numel():
            self.parts.append((batch, group_rows(groups, self.G)))
            self.kept += groups.numel()
        spare = (~informative).nonzero(as_tuple=True)[0]  # [m - #informative]
        if spare.numel():
            self.spare.append((batch, spare))
        return groups.numel()

    def merge(self, pad_token_id: int) -> tuple[dict[str, Any], int]:
        """The step's batch (:func:`merge_rows`) and how many uninformative groups topped it up."""
        parts, topped = list(self.parts), 0
        for batch, groups in self.spare:
            if self.kept + topped >= self.want:
                break
            take = groups[: self.want - self.kept - topped]
            parts.append((batch, group_rows(take, self.G)))
            topped += take.numel()
        if self.kept + topped < self.want:
            raise ValueError(f"refill: {self.kept + topped} groups for a step of {self.want}")
        return merge_rows(parts, pad_token_id), topped


__all__ = ["RefillPlan", "LEFT_PADDED", "RECOMPUTED", "RIGHT_PADDED", "group_informative", "group_rows", "merge_rows", "pad_value"]
