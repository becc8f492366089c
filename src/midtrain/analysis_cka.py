"""Linear CKA estimators and hidden-state collection (the engine of ``midtrain analyze cka``).

Definitions and the CLI are in :mod:`midtrain.analysis`. This module holds:

- :func:`linear_cka` (the full estimator on column-centred features, computed in float64 through whichever of
  the n×n Gram or the d×d feature route is cheaper) and the minibatch estimator of Nguyen, Raghu & Kornblith
  (2021): :func:`hsic1` (the unbiased HSIC of Song et al. 2012 on linear kernels) averaged over minibatches by
  :class:`MinibatchCKA`, CKA = mean HSIC₁(K, L) / √(mean HSIC₁(K, K) · mean HSIC₁(L, L));
- probe sets (:func:`probe_texts`): a JSONL/Parquet/text file, or ``synthetic:N`` from :mod:`midtrain.synth`;
- :func:`collect_features`: batched forward passes with ``output_hidden_states=True`` and per-layer pooling
  (mean over non-pad tokens per sequence, or the non-pad tokens themselves, optionally subsampled).
"""

from __future__ import annotations

import importlib
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import torch

from midtrain.data import iter_records
from midtrain.errors import ConfigError, DataError, MidtrainError

SYNTHETIC = "synthetic:"


# -- estimators ------------------------------------------------------------------------------------------------
def linear_cka(x: torch.Tensor, y: torch.Tensor) -> float:
    """‖YᵀX‖_F² / (‖XᵀX‖_F ‖YᵀY‖_F) on column-centred X: [n, d1], Y: [n, d2]; float64; NaN if X or Y is constant."""
    if x.ndim != 2 or y.ndim != 2 or x.shape[0] != y.shape[0]:
        raise ValueError(f"linear_cka needs [n, d1] and [n, d2] with one n, got {list(x.shape)} and {list(y.shape)}")
    x = x.to(torch.float64)
    y = y.to(torch.float64)
    x = x - x.mean(0, keepdim=True)  # [n, d1]
    y = y - y.mean(0, keepdim=True)  # [n, d2]
    n, d1, d2 = x.shape[0], x.shape[1], y.shape[1]
    if n < d1 + d2:  # Gram route: ‖YᵀX‖² = ⟨XXᵀ, YYᵀ⟩, ‖XᵀX‖ = ‖XXᵀ‖
        k, l = x @ x.T, y @ y.T  # [n, n]
        cross, nx, ny = float((k * l).sum()), float(k.norm()), float(l.norm())
    else:  # feature route
        cross = float((y.T @ x).square().sum())  # [d2, d1]
        nx, ny = float((x.T @ x).norm()), float((y.T @ y).norm())  # [d1, d1], [d2, d2]
    den = nx * ny
    return cross / den if den else math.nan


def hsic1(k: torch.Tensor, l: torch.Tensor) -> float:
    """Unbiased HSIC (Song et al. 2012) of two [n, n] kernel matrices, n ≥ 4; float64.

    HSIC₁ = [tr(K̃L̃) + 1ᵀK̃1 · 1ᵀL̃1 / ((n−1)(n−2)) − 2/(n−2) · 1ᵀK̃L̃1] / (n(n−3)), K̃ = K with a zero diagonal.
    """
    n = k.shape[0]
    if n < 4:
        raise ValueError(f"hsic1 needs at least 4 examples, got {n}")
    k = k.to(torch.float64).clone().fill_diagonal_(0)  # [n, n]
    l = l.to(torch.float64).clone().fill_diagonal_(0)  # [n, n]
    trace = float((k * l.T).sum())  # tr(K̃L̃) in O(n²)
    k1, l1 = k.sum(1), l.sum(1)  # [n]
    total = trace + float(k1.sum() * l1.sum()) / ((n - 1) * (n - 2)) - 2.0 / (n - 2) * float(k1 @ l1)
    return total / (n * (n - 3))


class MinibatchCKA:
    """Streaming minibatch CKA: feed aligned batches of rows with :meth:`update`, read :meth:`value`.

    Each batch adds HSIC₁ of its linear kernels (no centring needed: HSIC₁ is invariant to feature shifts);
    batches with fewer than 4 rows are skipped.
    """

    def __init__(self) -> None:
        self.xy = self.xx = self.yy = 0.0
        self.batches = 0

    def update(self, x: torch.Tensor, y: torch.Tensor) -> None:
        if x.shape[0] < 4:
            return
        x = x.to(torch.float64)  # [m, d1]
        y = y.to(torch.float64)  # [m, d2]
        k, l = x @ x.T, y @ y.T  # [m, m]
        self.xy += hsic1(k, l)
        self.xx += hsic1(k, k)
        self.yy += hsic1(l, l)
        self.batches += 1

    def value(self) -> float:
        den = math.sqrt(max(self.xx, 0.0) * max(self.yy, 0.0))
        return self.xy / den if den else math.nan


def minibatch_cka(x: torch.Tensor, y: torch.Tensor, batch_size: int = 256, seed: int = 0) -> float:
    """Minibatch CKA of X: [n, d1] and Y: [n, d2] over a seeded shuffle of the rows in batches of ``batch_size``."""
    if x.shape[0] != y.shape[0]:
        raise ValueError(f"minibatch_cka needs the same n, got {x.shape[0]} and {y.shape[0]}")
    order = torch.randperm(x.shape[0], generator=torch.Generator().manual_seed(seed))
    acc = MinibatchCKA()
    for start in range(0, len(order), batch_size):
        idx = order[start : start + batch_size]
        acc.update(x[idx], y[idx])
    return acc.value()


# -- probe sets ------------------------------------------------------------------------------------------------
def parse_synthetic(spec: str) -> int | None:
    """N for ``synthetic:N`` (ConfigError if N is not a positive integer); None for a file path."""
    if not spec.startswith(SYNTHETIC):
        return None
    raw = spec[len(SYNTHETIC) :]
    if not raw.isdigit() or int(raw) <= 0:
        raise ConfigError(f"key 'probe': '{spec}' must be synthetic:N with N a positive integer")
    return int(raw)


def probe_name(spec: str, taken: set[str]) -> str:
    """A short unique label: ``synthetic``, or ``<parent dir>/<stem>`` of a file."""
    p = Path(spec)
    base = "synthetic" if spec.startswith(SYNTHETIC) else f"{p.parent.name}/{p.name.split('.')[0]}".lstrip("/")
    name, i = base, 2
    while name in taken:
        name, i = f"{base}#{i}", i + 1
    return name


def _record_text(rec: dict[str, Any], fields: list[str], where: str) -> str:
    for f in fields:
        value = rec.get(f)
        if isinstance(value, str) and value.strip():
            return value
    have = ", ".join(k for k in rec if not k.startswith("_"))
    raise DataError(f"{where}: record has none of the text fields {', '.join(fields)} (fields: {have})")


def synthetic_texts(n: int, seed: int, fields: list[str]) -> list[str]:
    """N problems from ``midtrain.synth.generate_problems(n, seed=seed)``: each the full rendered document (prompt
    + gold completion) when the record has both, else its first ``fields`` text; a clear error without the module."""
    try:
        synth = importlib.import_module("midtrain.synth")
    except ImportError as e:
        raise MidtrainError(f"probe 'synthetic:{n}' needs the midtrain.synth module, which cannot be imported ({e})") from None
    gen: Callable[..., Any] | None = getattr(synth, "generate_problems", None)
    if gen is None:
        raise MidtrainError(
            f"probe 'synthetic:{n}' needs midtrain.synth.generate_problems(n, seed=...), which midtrain.synth lacks"
        )
    texts = []
    for i, rec in enumerate(gen(n, seed=seed)[:n]):
        full = rec.get("prompt"), rec.get("completion")
        ok = all(isinstance(t, str) for t in full)
        texts.append(full[0] + full[1] if ok else _record_text(dict(rec), fields, f"synthetic problem {i}"))
    return texts


def probe_texts(spec: str, *, max_examples: int, fields: list[str], seed: int = 0) -> list[str]:
    """Up to ``max_examples`` texts of one probe set (a data file or ``synthetic:N``), in file order."""
    n = parse_synthetic(spec)
    if n is not None:
        return synthetic_texts(min(n, max_examples), seed, fields)
    texts = []
    for rec in iter_records(spec):
        texts.append(_record_text(rec, fields, f"{spec}:{rec.get('_line', '?')}"))
        if len(texts) >= max_examples:
            break
    if not texts:
        raise DataError(f"empty probe set: {spec} has no records")
    return texts


# -- hidden states ---------------------------------------------------------------------------------------------
@dataclass
class ProbeBatch:
    input_ids: torch.Tensor  # [B, T]
    attention_mask: torch.Tensor  # [B, T]
    positions: list[torch.Tensor] | None  # token pooling: indices of the kept tokens of each sequence


def make_batches(
    texts: list[str], tokenizer: Any, *, batch_size: int, max_length: int, pooling: str,
    max_tokens_per_sequence: int, generator: torch.Generator,
) -> list[ProbeBatch]:
    """Tokenised, right-padded batches; for token pooling, the (seeded) token positions both models will use."""
    tokenizer.padding_side = "right"
    out = []
    for start in range(0, len(texts), batch_size):
        enc = tokenizer(
            texts[start : start + batch_size], truncation=True, max_length=max_length, padding=True,
            return_tensors="pt",
        )
        positions = None
        if pooling == "token":
            positions = []
            for length in enc["attention_mask"].sum(1).tolist():
                keep = torch.arange(length)
                if 0 < max_tokens_per_sequence < length:
                    keep = torch.randperm(length, generator=generator)[:max_tokens_per_sequence].sort().values
                positions.append(keep)
        out.append(ProbeBatch(enc["input_ids"], enc["attention_mask"], positions))
    return out


def pool(hidden: torch.Tensor, batch: ProbeBatch) -> torch.Tensor:
    """[B, T, d] hidden states → [B, d] (mean over non-pad tokens) or [Σ kept tokens, d]."""
    hidden = hidden.float()
    if batch.positions is None:
        mask = batch.attention_mask.unsqueeze(-1).to(hidden.dtype)  # [B, T, 1]
        return (hidden * mask).sum(1) / mask.sum(1).clamp_min(1.0)  # [B, d]
    return torch.cat([hidden[b, pos] for b, pos in enumerate(batch.positions)])  # [N, d]


@torch.inference_mode()
def collect_features(model: Any, batches: list[ProbeBatch], on_batch: Callable[[], None] | None = None) -> list[torch.Tensor]:
    """Per layer (embeddings output first, then every block) the pooled features [rows, d] over all batches."""
    model.eval()
    per_layer: list[list[torch.Tensor]] = []
    for batch in batches:
        out = model(input_ids=batch.input_ids, attention_mask=batch.attention_mask, output_hidden_states=True)
        if not per_layer:
            per_layer = [[] for _ in out.hidden_states]
        for layer, hidden in enumerate(out.hidden_states):  # L+1 × [B, T, d]
            per_layer[layer].append(pool(hidden, batch))
        if on_batch:
            on_batch()
    return [torch.cat(chunks) for chunks in per_layer]


def layer_cka(xs: list[torch.Tensor], ys: list[torch.Tensor], estimator: str, batch_size: int, seed: int) -> list[float]:
    """CKA per layer of two feature lists with the ``full`` or ``minibatch`` estimator."""
    if estimator == "full":
        return [linear_cka(x, y) for x, y in zip(xs, ys)]
    return [minibatch_cka(x, y, batch_size, seed) for x, y in zip(xs, ys)]


__all__ = [
    "MinibatchCKA", "ProbeBatch", "collect_features", "hsic1", "layer_cka", "linear_cka", "make_batches",
    "minibatch_cka", "parse_synthetic", "pool", "probe_name", "probe_texts", "synthetic_texts",
]
