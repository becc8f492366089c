"""Parameter names of Hugging Face causal LMs: which decoder layer and which kind of module a tensor belongs to.

Shared by the weight analysis (:mod:`midtrain.analysis.diff`: per layer and per module type) and by RL's changed
ratio per layer (:mod:`midtrain.train.weight_watch`), so that both group a checkpoint's tensors the same way. The
rules read Llama / Qwen2 / Mistral / GPT-2 style names (``model.layers.3.self_attn.q_proj.weight``,
``transformer.h.3.attn.c_attn.weight``); a name no rule knows is ``other``.
"""

from __future__ import annotations

import re
from typing import Any

MODULE_TYPES = ("attention", "mlp", "embeddings", "norms", "other")
_LAYER = re.compile(r"(?:^|\.)(?:layers|h|blocks|layer)\.(\d+)\.")
_RULES: list[tuple[str, re.Pattern[str]]] = [
    ("norms", re.compile(r"norm|(?:^|\.)ln_")),
    ("embeddings", re.compile(r"embed_tokens|lm_head|(?:^|\.)(?:wte|wpe|embed_in|embed_out|word_embeddings)\.")),
    ("attention", re.compile(r"self_attn|attention|(?:^|\.)attn\.")),
    ("mlp", re.compile(r"(?:^|\.)(?:mlp|feed_forward|ffn|block_sparse_moe)\.")),
]


def module_type(name: str) -> str:
    """attention | mlp | embeddings | norms | other, from a HF (Llama/Qwen2/Mistral/GPT-2 style) tensor name."""
    for kind, pattern in _RULES:
        if pattern.search(name):
            return kind
    return "other"


def layer_index(name: str) -> int | None:
    """N in ``...layers.N.`` (``h.N.``, ``blocks.N.``, ``layer.N.``), or None outside the numbered layers."""
    m = _LAYER.search(name)
    return int(m.group(1)) if m else None


def natural_key(name: str) -> list[Any]:
    """Sort key putting ``layers.2`` before ``layers.10``."""
    return [int(t) if t.isdigit() else t for t in re.split(r"(\d+)", name)]


__all__ = ["MODULE_TYPES", "layer_index", "module_type", "natural_key"]
