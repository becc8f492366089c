"""A batched KV-cache sampler for small Llama-architecture causal LMs (Llama, Qwen2, Mistral without sliding window).

Why: HF ``model.generate`` keeps decoding every row of a batch until the last one stops, and for a tiny model its
per-step overhead (a growing DynamicCache, ``repeat_kv`` copies for grouped-query attention) is a large share of a
step. Measured on the 0.8M-parameter demo model (bench/RESULTS.md "Generation"): with every row forced to the full
budget this module is only 1.1–1.2x HF; dropping finished rows is what makes it ~2x. It runs the same network by
hand from the loaded model's own tensors (no copy of the weights, no copy of the model code's state):

* **Cache.** One preallocated buffer per layer, K and V ``[B, kv_heads, T_max, head_dim]`` with
  ``T_max = longest prompt + max_new_tokens``, written in place at column ``t`` (all rows share the column: prompts
  are left-padded, so a step appends at the same index for every row).
* **Prompts.** Left-padded ids with an attention mask, as HF ``generate`` takes them: row ``i``'s real tokens get
  positions ``0..L_i-1`` (``mask.cumsum - 1``) and each generated token the next position; padded keys are masked.
  The prefill is one forward over ``[B, T_prompt]``.
* **Attention.** GQA without repeating K/V: the ``G = heads / kv_heads`` query heads sharing a KV head are folded
  into the query-length axis, ``q [B, kv, G·T, hd]`` against ``K [B, kv, t, hd]``, one ``scaled_dot_product_attention``
  call with a boolean mask. RoPE cos/sin come from the model's own rotary module (``default`` rope type only),
  tabulated once per position and indexed per row; RMSNorm upcasts to float32 like the HF module; the MLP is
  ``down(silu(gate(x)) * up(x))``; every projection's bias is used when the module has one.
* **Choosing a token.** HF's order and semantics for the four supported knobs: greedy = argmax of the float32
  logits; sampling = logits / temperature → top-k (keep values ≥ the k-th largest) → top-p (drop the smallest
  tokens whose cumulative probability ≤ 1 − p, always keeping the most likely) → softmax → ``torch.multinomial``.
  Anything else (repetition penalty, min_p, typical_p, stop strings, ...) is unsupported.
* **Compaction.** A row is finished at its first EOS (any id of ``eos_token_ids``). Finished rows keep decoding
  (their tokens are discarded) until they make up ≥ 1/8 of the batch; then the batch is compacted (``index_select``
  of the caches, masks and positions), so later steps only pay for live rows. Each compaction costs about one
  step's K/V traffic and removes ≥ 12.5% of all later ones.

Exactness: the same operations as the HF modules in the same dtypes, but not the same kernels (GQA folded,
SDPA with a boolean mask), so logits agree to rounding (≤ 1e-4 in float32 in the tests; one bf16 ulp in bf16)
and greedy tokens match HF ``generate`` unless two logits tie to within that rounding.

Output: per row, the generated ids up to and including the first EOS (HF's output minus the prompt, minus the
padding after EOS). :func:`supported` says whether a model and a set of generation options can run here (``None``)
or why not; callers fall back to HF ``generate`` otherwise. ``MIDTRAIN_SAMPLER=hf`` in the environment forces the
fallback everywhere (:func:`enabled`).
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F

ARCHS = {"LlamaForCausalLM": "llama", "Qwen2ForCausalLM": "qwen2", "MistralForCausalLM": "mistral"}
COMPACT_FRACTION = 0.125  # drop finished rows once they are this share of the batch (see the module docstring)
# Generation options this sampler implements, with the value that means "off" for the ones it ignores when off.
NEUTRAL: dict[str, Any] = {
    "repetition_penalty": 1.0,
    "min_p": None,
    "typical_p": 1.0,
    "epsilon_cutoff": 0.0,
    "eta_cutoff": 0.0,
    "top_h": None,
    "no_repeat_ngram_size": 0,
    "encoder_no_repeat_ngram_size": 0,
    "bad_words_ids": None,
    "min_length": 0,
    "min_new_tokens": None,
    "suppress_tokens": None,
    "begin_suppress_tokens": None,
    "forced_bos_token_id": None,
    "forced_eos_token_id": None,
    "sequence_bias": None,
    "renormalize_logits": False,
    "stop_strings": None,
    "num_beams": 1,
    "num_return_sequences": 1,
    "guidance_scale": None,
    "watermarking_config": None,
    "assistant_model": None,
    "prompt_lookup_num_tokens": None,
    "exponential_decay_length_penalty": None,
    "max_time": None,
    "low_memory": None,
    "penalty_alpha": None,
    "diversity_penalty": 0.0,
    "num_beam_groups": 1,
    "dola_layers": None,
}


def enabled() -> bool:
    """False when ``MIDTRAIN_SAMPLER=hf`` forces HF ``generate``."""
    return os.environ.get("MIDTRAIN_SAMPLER", "").strip().lower() != "hf"


def _neutral(name: str, value: Any) -> bool:
    off = NEUTRAL[name]
    return value is None or value == off or (off is None and value in (0, 0.0, [], {}))


def options_reason(**options: Any) -> str | None:
    """Why these generation options cannot be sampled here (None = they can): ``do_sample``, ``temperature``,
    ``top_k``, ``top_p``, ``max_new_tokens``, ``eos_token_id``/``pad_token_id``/``bos_token_id`` and HF bookkeeping
    keys are understood; any other knob must be at its neutral value."""
    for name, value in options.items():
        if name in NEUTRAL and not _neutral(name, value):
            return f"generation option {name}={value!r} is not supported by the sampler"
    t = options.get("temperature")
    if options.get("do_sample") and t is not None and not t > 0:
        return f"temperature {t} with sampling"
    top_p = options.get("top_p")
    if top_p is not None and not 0 < top_p <= 1:
        return f"top_p {top_p} outside (0, 1]"
    return None


def generation_config_options(gc: Any) -> dict[str, Any]:
    """The options of a ``transformers.GenerationConfig`` that :func:`options_reason` inspects (all its knobs)."""
    keys = {"do_sample", "temperature", "top_k", "top_p", "max_new_tokens", *NEUTRAL}
    return {k: getattr(gc, k, None) for k in keys}


def _structure_reason(model: Any) -> str | None:
    cfg = model.config
    if getattr(model, "hf_quantizer", None) is not None:
        return "quantized model"
    rope = getattr(cfg, "rope_parameters", None) or {}
    if rope.get("rope_type", "default") != "default" or getattr(model.model.rotary_emb, "rope_type", "default") != "default":
        return f"rope type {rope.get('rope_type')!r} (only 'default')"
    if getattr(cfg, "hidden_act", "silu") != "silu":
        return f"activation {cfg.hidden_act!r} (only silu)"
    if getattr(cfg, "sliding_window", None) is not None and ARCHS[type(model).__name__] != "qwen2":
        return "sliding-window attention"
    if any(t != "full_attention" for t in (getattr(cfg, "layer_types", None) or [])):
        return "sliding-window attention layers"
    if model.training and float(getattr(cfg, "attention_dropout", 0.0) or 0.0) > 0:
        return "attention dropout in training mode"
    if type(model.model.embed_tokens) is not torch.nn.Embedding or type(model.lm_head) is not torch.nn.Linear:
        return "embedding or lm_head is not a plain module (adapter or quantized?)"
    for layer in model.model.layers:
        att, mlp = layer.self_attn, layer.mlp
        linears = (att.q_proj, att.k_proj, att.v_proj, att.o_proj, mlp.gate_proj, mlp.up_proj, mlp.down_proj)
        if any(type(m) is not torch.nn.Linear for m in linears):
            return "a projection is not a plain nn.Linear (adapter or quantized?)"
        if not all(type(n).__name__.endswith("RMSNorm") for n in (layer.input_layernorm, layer.post_attention_layernorm)):
            return "a norm is not RMSNorm"
    return None


def supported(model: Any, **options: Any) -> str | None:
    """None when :func:`sample` reproduces ``model.generate(**options)`` for this model, else the reason."""
    if not enabled():
        return "MIDTRAIN_SAMPLER=hf"
    if type(model).__name__ not in ARCHS:
        return f"architecture {type(model).__name__} (supported: {', '.join(ARCHS)})"
    device = next(model.parameters()).device
    if torch.is_autocast_enabled(device.type):
        return "autocast is on"
    return _structure_reason(model) or options_reason(**options)


@dataclass
class Layer:
    """One decoder layer's tensors, taken from the HF modules (views, not copies)."""

    ln1: torch.Tensor
    ln2: torch.Tensor
    q: torch.nn.Linear
    k: torch.nn.Linear
    v: torch.nn.Linear
    o: torch.nn.Linear
    gate: torch.nn.Linear
    up: torch.nn.Linear
    down: torch.nn.Linear


def rms_norm(x: torch.Tensor, weight: torch.Tensor, eps: float) -> torch.Tensor:
    """HF's RMSNorm: normalise in float32, cast back, scale."""
    h = x.float()
    h = h * torch.rsqrt(h.pow(2).mean(-1, keepdim=True) + eps)
    return weight * h.to(x.dtype)


def rotate(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """RoPE as HF applies it: x·cos + rotate_half(x)·sin, with rotate_half(x) = cat(−x₂, x₁)."""
    x1, x2 = x.chunk(2, dim=-1)
    return x * cos + torch.cat((-x2, x1), dim=-1) * sin


def linear(m: torch.nn.Linear, x: torch.Tensor) -> torch.Tensor:
    return F.linear(x, m.weight, m.bias)


class KVDecoder:
    """The model's forward with a preallocated KV cache: :meth:`prefill` once, then :meth:`step` per token;
    :meth:`keep` drops rows. Both return the last position's float32 logits ``[B, vocab]``."""

    def __init__(self, model: Any, batch: int, max_len: int) -> None:
        cfg = model.config
        inner = model.model
        self.model, self.embed, self.lm_head = model, inner.embed_tokens, model.lm_head
        self.norm, self.eps = inner.norm.weight, float(cfg.rms_norm_eps)
        self.heads, self.kv = int(cfg.num_attention_heads), int(cfg.num_key_value_heads)
        self.hd = int(getattr(cfg, "head_dim", None) or cfg.hidden_size // cfg.num_attention_heads)
        self.group = self.heads // self.kv
        self.scale = self.hd**-0.5
        self.layers = [
            Layer(
                l.input_layernorm.weight,
                l.post_attention_layernorm.weight,
                *(l.self_attn.q_proj, l.self_attn.k_proj, l.self_attn.v_proj, l.self_attn.o_proj),
                *(l.mlp.gate_proj, l.mlp.up_proj, l.mlp.down_proj),
            )
            for l in inner.layers
        ]
        w = self.embed.weight
        self.max_len = max_len
        shape = (batch, self.kv, max_len, self.hd)
        self.cache = [(w.new_zeros(shape), w.new_zeros(shape)) for _ in self.layers]  # K, V per layer
        positions = torch.arange(max_len, device=w.device)[None]  # [1, T_max]: the longest any position gets
        cos, sin = inner.rotary_emb(w[:1], positions)  # [1, T_max, hd] each, in the weights' dtype
        self.cos, self.sin = cos[0], sin[0]  # [T_max, hd]
        self.t = 0  # columns of the cache filled
        self.key_ok = torch.zeros(batch, max_len, dtype=torch.bool, device=w.device)  # [B, T_max] real keys
        self.pos = torch.zeros(batch, dtype=torch.long, device=w.device)  # [B] position of the next token

    def _mlp(self, layer: Layer, x: torch.Tensor) -> torch.Tensor:
        h = rms_norm(x, layer.ln2, self.eps)
        return x + linear(layer.down, F.silu(linear(layer.gate, h)) * linear(layer.up, h))

    def _attend(self, layer: Layer, i: int, x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """x [B, T, D] → x + attention output; writes the T new keys/values at columns t..t+T of layer i's cache."""
        b, n, _ = x.shape
        h = rms_norm(x, layer.ln1, self.eps)
        q = linear(layer.q, h).view(b, n, self.heads, self.hd).transpose(1, 2)  # [B, H, T, hd]
        k = linear(layer.k, h).view(b, n, self.kv, self.hd).transpose(1, 2)  # [B, kv, T, hd]
        v = linear(layer.v, h).view(b, n, self.kv, self.hd).transpose(1, 2)  # [B, kv, T, hd]
        q, k = rotate(q, cos, sin), rotate(k, cos, sin)  # cos/sin [B, 1, T, hd]
        kc, vc = self.cache[i]
        end = self.t + n
        kc[:, :, self.t : end] = k
        vc[:, :, self.t : end] = v
        # heads h = kv·G + g share KV head kv (HF's repeat_kv): fold g into the query axis, no K/V copy
        q = q.reshape(b, self.kv, self.group * n, self.hd)  # [B, kv, G·T, hd]
        a = F.scaled_dot_product_attention(q, kc[:, :, :end], vc[:, :, :end], attn_mask=mask, scale=self.scale)
        a = a.view(b, self.heads, n, self.hd).transpose(1, 2).reshape(b, n, self.heads * self.hd)  # [B, T, H·hd]
        return x + linear(layer.o, a)

    def _forward(self, ids: torch.Tensor, pos: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """ids, pos [B, T]; mask [B, 1, G·T, t+T] → logits of the last position [B, V] (float32)."""
        x = self.embed(ids)  # [B, T, D]
        cos, sin = self.cos[pos].unsqueeze(1), self.sin[pos].unsqueeze(1)  # [B, 1, T, hd]
        for i, layer in enumerate(self.layers):
            x = self._mlp(layer, self._attend(layer, i, x, cos, sin, mask))
        self.t += ids.shape[1]
        x = rms_norm(x[:, -1], self.norm, self.eps)  # [B, D]
        return linear(self.lm_head, x).float()  # [B, V]

    def prefill(self, ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        """Left-padded ids and mask [B, T] → logits after the last prompt token [B, V]."""
        b, n = ids.shape
        ok = attention_mask.bool()  # [B, T]
        pos = (ok.long().cumsum(-1) - 1).clamp(min=0)  # [B, T]: HF's position ids for left padding
        self.key_ok[:, :n] = ok
        self.pos = pos[:, -1] + 1
        causal = torch.ones(n, n, dtype=torch.bool, device=ids.device).tril()  # [T, T]
        # a padded query sees itself only, so no row of the softmax is empty (NaN would reach its cached V)
        mask = (causal & ok[:, None, :]) | torch.eye(n, dtype=torch.bool, device=ids.device)  # [B, T, T]
        mask = mask[:, None, None].expand(b, 1, self.group, n, n).reshape(b, 1, self.group * n, n)
        return self._forward(ids, pos, mask)

    def step(self, tokens: torch.Tensor) -> torch.Tensor:
        """The next token of every row [B] → logits [B, V]."""
        self.key_ok[:, self.t] = True
        pos = self.pos[:, None]  # [B, 1]
        self.pos = self.pos + 1
        mask = self.key_ok[:, None, None, : self.t + 1]  # [B, 1, 1, t+1], broadcast over the G folded queries
        return self._forward(tokens[:, None], pos, mask)

    def keep(self, rows: torch.Tensor) -> None:
        """Keep only ``rows`` (indices into the current batch), in that order."""
        self.cache = [(k.index_select(0, rows), v.index_select(0, rows)) for k, v in self.cache]
        self.key_ok = self.key_ok.index_select(0, rows)
        self.pos = self.pos.index_select(0, rows)


def warp(logits: torch.Tensor, temperature: float | None, top_k: int | None, top_p: float | None) -> torch.Tensor:
    """HF's sampling warpers in HF's order: temperature, top-k, top-p ([B, V] float32 → [B, V], −inf = removed)."""
    if temperature is not None and temperature != 1.0:
        logits = logits / temperature
    if top_k:
        k = min(int(top_k), logits.shape[-1])
        kth = torch.topk(logits, k).values[:, -1:]  # [B, 1]
        logits = logits.masked_fill(logits < kth, -math.inf)
    if top_p is not None and top_p < 1.0:
        sorted_logits, order = torch.sort(logits, descending=False)  # [B, V] ascending
        cum = sorted_logits.softmax(-1).cumsum(-1)
        drop = cum <= 1 - top_p
        drop[:, -1] = False  # the most likely token always stays
        logits = logits.masked_fill(drop.scatter(1, order, drop), -math.inf)
    return logits


@dataclass
class Sampled:
    tokens: list[list[int]]  # per prompt row: generated ids up to and including the first EOS
    logprobs: list[list[float]] | None  # per token: log-prob under the distribution it was drawn from
    row_steps: int  # Σ over decode steps of the rows computed (compaction lowers it)
    full_steps: int  # the same without compaction: batch × decode steps


def choose(logits: torch.Tensor, do_sample: bool, temperature: Any, top_k: Any, top_p: Any) -> tuple[torch.Tensor, torch.Tensor]:
    """[B, V] float32 logits → (tokens [B], their log-probs [B] under the processed distribution)."""
    if not do_sample:
        tok = logits.argmax(-1)
        return tok, torch.log_softmax(logits, -1).gather(1, tok[:, None])[:, 0]
    probs = warp(logits, temperature, top_k, top_p).softmax(-1)  # [B, V]
    tok = torch.multinomial(probs, 1)[:, 0]
    return tok, probs.gather(1, tok[:, None])[:, 0].log()


def sample(
    model: Any,
    input_ids: torch.Tensor,
    attention_mask: torch.Tensor | None = None,
    *,
    max_new_tokens: int,
    eos_token_ids: list[int] | int | None = None,
    do_sample: bool = False,
    temperature: float | None = None,
    top_k: int | None = None,
    top_p: float | None = None,
    compact: bool = True,
) -> Sampled:
    """Generate for left-padded ``input_ids`` [B, T] (see the module docstring); call :func:`supported` first."""
    eos = [eos_token_ids] if isinstance(eos_token_ids, int) else list(eos_token_ids or [])
    device = next(model.parameters()).device
    ids = input_ids.to(device)
    mask = torch.ones_like(ids) if attention_mask is None else attention_mask.to(device)
    b, n = ids.shape
    out = torch.full((b, max(max_new_tokens, 0)), -1, dtype=torch.long, device=device)  # [B0, N]
    logp = torch.zeros(out.shape, dtype=torch.float32, device=device)  # [B0, N]
    eos_t = torch.tensor(eos, dtype=torch.long, device=device)
    rows = torch.arange(b, device=device)  # [B] original row of each live row
    done = torch.zeros(b, dtype=torch.bool, device=device)  # [B] finished rows still in the batch
    row_steps = 0
    with torch.inference_mode():
        dec = KVDecoder(model, b, n + max_new_tokens)
        logits = dec.prefill(ids, mask) if max_new_tokens > 0 else None
        for s in range(max_new_tokens):
            assert logits is not None
            tok, lp = choose(logits, do_sample, temperature, top_k, top_p)
            out[rows, s], logp[rows, s] = tok, lp
            done |= torch.isin(tok, eos_t)
            n_done = int(done.sum())
            if n_done == len(rows) or s == max_new_tokens - 1:
                break
            if compact and n_done >= max(1, COMPACT_FRACTION * len(rows)):
                live = (~done).nonzero()[:, 0]
                dec.keep(live)
                rows, tok, done = rows[live], tok[live], done[live]
            row_steps += len(rows)
            logits = dec.step(tok)
    return Sampled(*trim(out, logp, eos), row_steps=row_steps, full_steps=b * max(max_new_tokens - 1, 0))


def sample_with_config(
    model: Any, input_ids: torch.Tensor, attention_mask: torch.Tensor, gc: Any, eos_token_ids: list[int] | int | None
) -> Sampled | None:
    """:func:`sample` with the knobs of a ``transformers.GenerationConfig`` ``gc``, or None when :func:`supported`
    refuses the model or the config's options (the caller then runs HF ``generate``)."""
    if supported(model, **generation_config_options(gc)) is not None:
        return None
    knobs = dict(do_sample=bool(gc.do_sample), temperature=gc.temperature, top_k=gc.top_k, top_p=gc.top_p)
    return sample(model, input_ids, attention_mask, max_new_tokens=gc.max_new_tokens, eos_token_ids=eos_token_ids, **knobs)


def trim(out: torch.Tensor, logp: torch.Tensor, eos: list[int]) -> tuple[list[list[int]], list[list[float]]]:
    """Cut each row of ``out`` [B, N] at its first EOS (kept) or at the first unfilled (−1) column."""
    tokens, lps = [], []
    eos_set = set(eos)
    for row, lp in zip(out.tolist(), logp.tolist(), strict=True):
        end = next((j + 1 for j, t in enumerate(row) if t in eos_set), None)
        if end is None:
            end = row.index(-1) if -1 in row else len(row)
        tokens.append(row[:end])
        lps.append(lp[:end])
    return tokens, lps


__all__ = [
    "ARCHS",
    "KVDecoder",
    "Sampled",
    "choose",
    "enabled",
    "generation_config_options",
    "options_reason",
    "sample",
    "sample_with_config",
    "supported",
    "warp",
]
