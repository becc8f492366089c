"""Length-sorted, trimmed chunks for RL's training forward: TRL's per-token log-probs on fewer padded tokens.

TRL scores a micro-batch of n completions as one ``[n, P + T]`` batch: prompts left-padded to the longest prompt P,
completions right-padded to the longest completion T of the whole generation batch (after the zero-advantage skip
the longest may not even be among the rows kept). The forward and the backward pay for every padded position.
``loss.pack_rows`` (:meth:`midtrain.train.rl_trainer.MidtrainGRPOTrainer._get_per_token_logps_and_entropies`)
scores the rows in chunks instead (:func:`plan_chunks`):

    span_i   = [lo_i, hi_i)      row i's first and one-past-last column with attention 1 (lo_i ≤ P − 1, hi_i ≥ P + 1)
    order    = rows by span length hi_i − lo_i, longest first
    chunk c  = order[c·k : (c+1)·k]  (k = pack_rows), forwarded on its own columns [min lo, max hi)
    cost     = Σ_c |c| · (max_c hi − min_c lo)  tokens, instead of n · (P + T)

and puts each chunk's ``[|c|, max_c hi − P]`` log-probs back in place, 0 on the columns it did not score
(:func:`scatter_back`). They are the padded forward's values, so the loss and its gradient are TRL's for every loss
type, and no normaliser changes:

- a column dropped on the right has attention 0 on every row of its chunk and follows every real token: under causal
  attention no real token sees it, and TRL scores a padded position as 0 (its label is −100), the value filled in;
- a column dropped on the left shifts every position of its chunk by the same amount. With rotary embeddings of fixed
  frequencies attention depends only on position differences, so the values are the same to float rounding
  (:func:`shift_free`); for any other position scheme (learned absolute positions, rope scaled by the sequence
  length) only right columns are dropped.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F

# rope types whose frequencies do not depend on the sequence length (transformers' ROPE_INIT_FUNCTIONS): the angle
# between positions m and n depends on m − n only. "dynamic" and "longrope" rescale with the length; left out.
STATIC_ROPE = frozenset({"default", "linear", "yarn", "llama3"})


def shift_free(config: Any) -> bool:
    """True when the model's attention is unchanged by shifting every position by a constant: rotary embeddings of
    a static rope type on every layer type (``config.rope_parameters``, transformers ≥ 5). False otherwise."""
    text = config.get_text_config() if hasattr(config, "get_text_config") else config
    params = getattr(text, "rope_parameters", None)
    if not isinstance(params, dict) or not params:
        return False
    per_layer = [p for p in params.values() if isinstance(p, dict)] or [params]  # Gemma-style: one per layer type
    return all(p.get("rope_type", "default") in STATIC_ROPE for p in per_layer)


@dataclass(frozen=True)
class Chunk:
    """Rows of a micro-batch forwarded together, on columns ``[start, end)`` of the padded batch."""

    rows: torch.Tensor  # [k] long, indices into the micro-batch
    start: int  # first column kept (≤ P − 1: at least the last prompt column, which predicts the first completion token)
    end: int  # one past the last column kept (≥ P + 1: at least one completion column)


def plan_chunks(attention_mask: torch.Tensor, completion_width: int, rows: int, trim_left: bool = True) -> list[Chunk]:
    """The chunks of at most ``rows`` rows (module docstring) for ``attention_mask`` [n, P + T] whose last
    ``completion_width`` = T columns are the completions; ``trim_left`` False keeps every prompt column."""
    if rows < 1:
        raise ValueError(f"rows must be ≥ 1, got {rows}")
    n, width = attention_mask.shape
    prompt_width = width - completion_width  # P
    cols = torch.arange(width, device=attention_mask.device)  # [P + T]
    on = attention_mask.bool()  # [n, P + T]
    lo = torch.where(on, cols, width).min(dim=1).values  # [n] first real column (P + T when none)
    hi = torch.where(on, cols + 1, 0).max(dim=1).values  # [n] one past the last real column (0 when none)
    lo = lo.clamp(max=max(prompt_width - 1, 0)) if trim_left else torch.zeros_like(lo)  # [n]
    hi = hi.clamp(min=prompt_width + 1, max=width)  # [n]
    order = torch.argsort(hi - lo, descending=True, stable=True).cpu()  # [n]
    lo_l, hi_l = lo.tolist(), hi.tolist()
    chunks = []
    for s in range(0, n, rows):
        idx = order[s : s + rows]  # [k]
        chunks.append(Chunk(idx, min(lo_l[i] for i in idx.tolist()), max(hi_l[i] for i in idx.tolist())))
    return chunks


def chunk_tokens(chunks: list[Chunk]) -> int:
    """Positions the chunks forward, padding included: Σ_c |c| · (end − start)."""
    return sum(c.rows.numel() * (c.end - c.start) for c in chunks)


def scatter_back(chunks: list[Chunk], values: list[torch.Tensor], width: int) -> torch.Tensor:
    """Per-chunk ``[|c|, w_c]`` values (w_c ≤ ``width``, the first w_c completion columns) → ``[n, width]`` in the
    micro-batch's row order, 0 on the columns a chunk did not score (differentiable)."""
    padded = torch.cat([F.pad(v, (0, width - v.size(1))) for v in values])  # [n, width], rows in chunk order
    order = torch.cat([c.rows for c in chunks]).to(padded.device)  # [n]
    return padded[torch.argsort(order)]  # [n, width], rows back in batch order


__all__ = ["STATIC_ROPE", "Chunk", "chunk_tokens", "plan_chunks", "scatter_back", "shift_free"]
