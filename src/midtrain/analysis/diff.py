"""Weight-change statistics streamed from safetensors checkpoints (the engine of ``midtrain analyze weights``).

Definitions and the CLI are in :mod:`midtrain.analysis.weights`. This module holds:

- the pure per-tensor functions (:func:`changed_mask`, :func:`jaccard`, :func:`cosine`, :func:`module_type`,
  :func:`layer_index`);
- checkpoint opening (:func:`open_checkpoint`: a directory with ``model.safetensors.index.json``, a directory of
  ``*.safetensors`` files, or one ``.safetensors`` file) and name alignment (:func:`align`), which fails on the
  first mismatching tensor;
- :func:`stream_stats`: one pass over the tensors, reading each tensor in row slices of about ``chunk_elements``
  elements from every checkpoint at once and accumulating per-tensor counters for a list of comparisons
  (checkpoint i → j) and overlaps (comparison p vs q). A shard is opened per slice and closed right after, so the
  memory-mapped pages are released: peak memory is a few slices, whatever the tensor and model size.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable, Iterator
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any, Self

import torch
from safetensors import SafetensorError, safe_open

from midtrain.errors import DataError
from midtrain.models.names import MODULE_TYPES, layer_index, module_type, natural_key

INDEX = "model.safetensors.index.json"
# A tied checkpoint stores only the input embedding; lm_head.weight is then read from it (the one alias we know).
TIED_ALIAS = ("lm_head.weight", "embed_tokens.weight")


# -- pure math -------------------------------------------------------------------------------------------------
def prepare(w: torch.Tensor, bf16: bool) -> torch.Tensor:
    """The values compared: bf16-cast first when ``bf16`` (floating tensors only), then float64."""
    if bf16 and w.is_floating_point():
        w = w.to(torch.bfloat16)
    return w.to(torch.float64)


def exceeds(delta: torch.Tensor, w0: torch.Tensor, tau: float, relative: bool) -> torch.Tensor:
    """1[|Δ| > τ] or, when ``relative``, 1[|Δ| > τ·|w0|] (so any move of a zero weight counts); bool, Δ's shape."""
    return delta.abs() > (tau * w0.abs() if relative else tau)


def changed_mask(w0: torch.Tensor, w1: torch.Tensor, tau: float = 1e-5, relative: bool = False) -> torch.Tensor:
    """1[|w1 − w0| > τ] (or > τ·|w0| when ``relative``), elementwise in float64; bool, the inputs' shape.

    Inputs are compared as given: call :func:`prepare` first for the bf16 cast.
    """
    w0, w1 = w0.to(torch.float64), w1.to(torch.float64)  # [...]
    return exceeds(w1 - w0, w0, tau, relative)


def jaccard(m1: torch.Tensor, m2: torch.Tensor) -> float:
    """|m1 ∧ m2| / |m1 ∨ m2| for two bool masks of one shape; 1.0 when both are empty (identical updates)."""
    union = int((m1 | m2).sum())
    return int((m1 & m2).sum()) / union if union else 1.0


def cosine(d1: torch.Tensor, d2: torch.Tensor) -> float:
    """⟨d1, d2⟩ / (‖d1‖ ‖d2‖) in float64 over all elements; 0.0 when either update is zero."""
    d1, d2 = d1.to(torch.float64).flatten(), d2.to(torch.float64).flatten()
    den = float(d1.norm() * d2.norm())
    return float(d1 @ d2) / den if den else 0.0


def random_jaccard(p1: float, p2: float) -> float:
    """Expected Jaccard of two independent random masks with densities p1, p2: the chance baseline."""
    union = p1 + p2 - p1 * p2
    return p1 * p2 / union if union else 1.0


def _dot(a: torch.Tensor, b: torch.Tensor) -> float:
    """⟨a, b⟩ over all elements (BLAS dot, no temporary)."""
    return float(torch.dot(a.reshape(-1), b.reshape(-1)))


def _safe_div(num: float, den: float) -> float | None:
    """num/den; 0.0 for 0/0 and None (JSON null) for x/0 with x ≠ 0, e.g. a zero-initialised bias that moved."""
    if den:
        return num / den
    return 0.0 if not num else None


# -- checkpoints -----------------------------------------------------------------------------------------------
@dataclass
class Checkpoint:
    """Where each tensor of a safetensors checkpoint lives, with its shape and dtype (no data read)."""

    path: Path
    files: dict[str, Path]  # tensor name → shard file
    shapes: dict[str, tuple[int, ...]]
    dtypes: dict[str, str]
    tied: bool = False  # config.json says tie_word_embeddings


def _shard_header(path: Path) -> dict[str, tuple[tuple[int, ...], str]]:
    try:
        with safe_open(str(path), framework="pt") as f:
            slices = {k: f.get_slice(k) for k in f.keys()}
            return {k: (tuple(sl.get_shape()), sl.get_dtype()) for k, sl in slices.items()}
    except (OSError, ValueError, RuntimeError, SafetensorError) as e:  # SafetensorError derives from Exception only
        raise DataError(f"{path}: not a readable safetensors file ({str(e).splitlines()[0]})") from None


def open_checkpoint(path: str | Path) -> Checkpoint:
    """Index a checkpoint: dir with ``model.safetensors.index.json``, dir of ``*.safetensors``, or one file."""
    p = Path(path)
    if not p.exists():
        raise DataError(f"checkpoint not found: {p}")
    weight_map: dict[str, str] | None = None
    if p.is_file():
        shards = [p]
        conf_path = p.parent / "config.json"
    else:
        conf_path = p / "config.json"
        if (p / INDEX).is_file():
            try:
                weight_map = json.loads((p / INDEX).read_text(encoding="utf-8"))["weight_map"]
            except (json.JSONDecodeError, KeyError, TypeError) as e:
                raise DataError(f"{p / INDEX}: malformed safetensors index ({e})") from None
            shards = [p / f for f in sorted(set(weight_map.values()))]
            for s in shards:
                if not s.is_file():
                    raise DataError(f"{p / INDEX} lists shard '{s.name}', which is missing from {p}")
        else:
            shards = sorted(p.glob("*.safetensors"))
        if not shards:
            hint = " (only PyTorch .bin weights: re-save with safe_serialization=True)" if any(p.glob("*.bin")) else ""
            raise DataError(f"{p}: no safetensors weights found{hint}")
    files: dict[str, Path] = {}
    shapes: dict[str, tuple[int, ...]] = {}
    dtypes: dict[str, str] = {}
    for shard in shards:
        for name, (shape, dtype) in _shard_header(shard).items():
            if weight_map is not None and weight_map.get(name) != shard.name:
                continue  # the index decides which shard holds a tensor
            if name in files:
                raise DataError(f"{p}: tensor '{name}' is stored twice ({files[name].name} and {shard.name})")
            files[name], shapes[name], dtypes[name] = shard, shape, dtype
    for name, shard_name in (weight_map or {}).items():
        if name not in files:
            raise DataError(f"{p / INDEX} maps tensor '{name}' to '{shard_name}', which does not contain it")
    tied = False
    if conf_path.is_file():
        try:
            tied = bool(json.loads(conf_path.read_text(encoding="utf-8")).get("tie_word_embeddings", False))
        except (json.JSONDecodeError, AttributeError):
            tied = False
    return Checkpoint(p, files, shapes, dtypes, tied)


def _alias(ck: Checkpoint, name: str) -> str | None:
    """The key holding ``name`` in a tied checkpoint that does not store it (lm_head.weight → embed_tokens)."""
    head, emb = TIED_ALIAS
    if not (ck.tied and name.endswith(head)):
        return None
    candidates = [k for k in ck.files if k.endswith(emb)]
    return candidates[0] if len(candidates) == 1 else None


def align(ckpts: list[Checkpoint]) -> list[tuple[str, list[str]]]:
    """[(tensor name, [key in each checkpoint])] in natural order; DataError on the first mismatching tensor.

    A tensor must be present in every checkpoint with one shape. The one tolerated absence: ``lm_head.weight``
    in a checkpoint whose config.json has ``tie_word_embeddings: true`` is read from its ``embed_tokens.weight``.
    """
    names = sorted(set().union(*(ck.files for ck in ckpts)), key=natural_key)
    out: list[tuple[str, list[str]]] = []
    for name in names:
        keys: list[str] = []
        for ck in ckpts:
            key = name if name in ck.files else _alias(ck, name)
            if key is None:
                have = next(c.path for c in ckpts if name in c.files)
                raise DataError(
                    f"checkpoints differ at tensor '{name}': present in {have}, missing from {ck.path} "
                    "(different architectures or tensor names)"
                )
            keys.append(key)
        shapes = [ck.shapes[k] for ck, k in zip(ckpts, keys)]
        if len(set(shapes)) > 1:
            detail = ", ".join(f"{list(s)} in {ck.path}" for s, ck in zip(shapes, ckpts))
            raise DataError(f"checkpoints differ at tensor '{name}': shapes {detail}")
        out.append((name, keys))
    return out


def read_rows(ck: Checkpoint, key: str, start: int, stop: int) -> torch.Tensor:
    """Rows [start, stop) of a tensor (the whole tensor if it is a scalar); the shard is closed on return."""
    try:
        with safe_open(str(ck.files[key]), framework="pt") as f:
            if not ck.shapes[key]:
                return f.get_tensor(key)
            return f.get_slice(key)[start:stop]
    except SafetensorError as e:  # changed on disk since it was indexed
        raise DataError(f"{ck.files[key]}: cannot read tensor '{key}' ({str(e).splitlines()[0]})") from None


def row_slices(shape: tuple[int, ...], chunk_elements: int) -> Iterator[tuple[int, int]]:
    """(start, stop) row ranges of about ``chunk_elements`` elements (at least one row each)."""
    if not shape:
        yield 0, 1
        return
    rows = shape[0]
    per_row = max(1, math.prod(shape[1:]))
    step = max(1, chunk_elements // per_row)
    for start in range(0, rows, step):
        yield start, min(rows, start + step)


# -- streaming accumulation ------------------------------------------------------------------------------------
@dataclass
class Counters:
    """Additive counters of one tensor (or a group of tensors); subclasses name the fields."""

    parameters: int = 0

    def __add__(self, other: Counters) -> Self:
        return type(self)(**{f.name: getattr(self, f.name) + getattr(other, f.name) for f in fields(self)})

    def summary(self) -> dict[str, Any]:
        raise NotImplementedError


@dataclass
class ChangeStats(Counters):
    """One comparison w0 → w1."""

    changed: int = 0  # Σ 1[|Δ| > τ]
    delta_sq: float = 0.0  # ‖Δ‖²
    base_sq: float = 0.0  # ‖w0‖²

    def summary(self) -> dict[str, Any]:
        return {
            "parameters": self.parameters,
            "changed": self.changed,
            "fraction_changed": _safe_div(self.changed, self.parameters),
            "rel_frob": _safe_div(math.sqrt(self.delta_sq), math.sqrt(self.base_sq)),
        }


@dataclass
class OverlapStats(Counters):
    """Two updates Δ1 (mask m1) and Δ2 (mask m2) of the same tensor."""

    changed1: int = 0  # |m1|
    changed2: int = 0  # |m2|
    inter: int = 0  # |m1 ∧ m2|
    union: int = 0  # |m1 ∨ m2|
    dot: float = 0.0  # ⟨Δ1, Δ2⟩
    sq1: float = 0.0  # ‖Δ1‖²
    sq2: float = 0.0  # ‖Δ2‖²

    def summary(self) -> dict[str, Any]:
        den = math.sqrt(self.sq1) * math.sqrt(self.sq2)
        n = self.parameters or 1
        return {
            "parameters": self.parameters,
            "intersection": self.inter,
            "union": self.union,
            "jaccard": self.inter / self.union if self.union else 1.0,
            "jaccard_random": random_jaccard(self.changed1 / n, self.changed2 / n),
            "cosine": self.dot / den if den else 0.0,
        }


def stream_stats(
    ckpts: list[Checkpoint],
    plan: list[tuple[str, list[str]]],
    comparisons: list[tuple[int, int]],
    overlaps: list[tuple[int, int]],
    *,
    tau: float,
    relative: bool,
    bf16: bool,
    chunk_elements: int,
    on_progress: Callable[[int], None] | None = None,
) -> tuple[list[tuple[str, tuple[int, ...]]], list[list[ChangeStats]], list[list[OverlapStats]]]:
    """One pass over all tensors → ([(name, shape)], per comparison [stats per tensor], per overlap [...]).

    ``plan`` is :func:`align` of ``ckpts``; ``comparisons`` are (before, after) checkpoint indices; ``overlaps``
    are pairs of comparison indices. A slice holds at least one row, so a tensor with rows longer than
    ``chunk_elements`` is read a row at a time. Peak memory ≈ 8 bytes × chunk_elements × (checkpoints + 3 × comparisons), plus the read buffers.
    """
    needed = sorted({i for c in comparisons for i in c})
    keep = {c for o in overlaps for c in o}  # comparisons whose masks and deltas the overlaps need
    by_cmp: list[list[ChangeStats]] = [[] for _ in comparisons]
    by_ovl: list[list[OverlapStats]] = [[] for _ in overlaps]
    tensors = []
    for name, keys in plan:
        shape = ckpts[0].shapes[keys[0]]
        tensors.append((name, shape))
        cs = [ChangeStats() for _ in comparisons]
        os_ = [OverlapStats() for _ in overlaps]
        for start, stop in row_slices(shape, chunk_elements) if math.prod(shape) else ():
            w = {i: prepare(read_rows(ckpts[i], keys[i], start, stop), bf16) for i in needed}  # [rows, ...] f64
            masks: dict[int, torch.Tensor] = {}
            deltas: dict[int, torch.Tensor] = {}
            for c, (i, j) in enumerate(comparisons):
                delta = w[j] - w[i]  # [rows, ...]
                mask = exceeds(delta, w[i], tau, relative)
                cs[c] += ChangeStats(delta.numel(), int(mask.sum()), _dot(delta, delta), _dot(w[i], w[i]))
                if c in keep:
                    masks[c], deltas[c] = mask, delta
            for o, (p, q) in enumerate(overlaps):
                os_[o] += OverlapStats(
                    parameters=masks[p].numel(),
                    inter=int((masks[p] & masks[q]).sum()),
                    union=int((masks[p] | masks[q]).sum()),
                    dot=_dot(deltas[p], deltas[q]),
                )
            if on_progress:
                on_progress(w[needed[0]].numel())
            del w, masks, deltas
        for o, (p, q) in enumerate(overlaps):
            os_[o].changed1, os_[o].changed2 = cs[p].changed, cs[q].changed
            os_[o].sq1, os_[o].sq2 = cs[p].delta_sq, cs[q].delta_sq
        for c, cstat in enumerate(cs):
            by_cmp[c].append(cstat)
        for o, ostat in enumerate(os_):
            by_ovl[o].append(ostat)
    return tensors, by_cmp, by_ovl


# -- aggregation -----------------------------------------------------------------------------------------------
def group(tensors: list[tuple[str, tuple[int, ...]]], stats: list[ChangeStats] | list[OverlapStats]) -> dict[str, Any]:
    """Overall, per layer, per module type and per (layer, module type) summaries of per-tensor stats.

    ``per_layer`` keys are layer indices as strings, in order; ``per_layer_module_type`` adds the row "none" for
    tensors outside the numbered layers (embeddings, final norm).
    """
    zero = type(stats[0])() if stats else ChangeStats()
    layers: dict[int, Counters] = {}
    kinds: dict[str, Counters] = {}
    cells: dict[str, dict[str, Counters]] = {}
    for (name, _), s in zip(tensors, stats):
        layer, kind = layer_index(name), module_type(name)
        if layer is not None:
            layers[layer] = layers.get(layer, zero) + s
        kinds[kind] = kinds.get(kind, zero) + s
        row = cells.setdefault("none" if layer is None else str(layer), {})
        row[kind] = row.get(kind, zero) + s
    order = sorted(cells, key=lambda k: (k == "none", int(k) if k != "none" else 0))
    return {
        **sum(stats, zero).summary(),
        "per_layer": {str(k): layers[k].summary() for k in sorted(layers)},
        "per_module_type": {k: kinds[k].summary() for k in MODULE_TYPES if k in kinds},
        "per_layer_module_type": {row: {k: cells[row][k].summary() for k in MODULE_TYPES if k in cells[row]} for row in order},
        "per_tensor": {
            name: {"shape": list(shape), "layer": layer_index(name), "module_type": module_type(name), **s.summary()}
            for (name, shape), s in zip(tensors, stats)
        },
    }


__all__ = [
    "ChangeStats",
    "Checkpoint",
    "OverlapStats",
    "align",
    "changed_mask",
    "cosine",
    "exceeds",
    "group",
    "jaccard",
    "open_checkpoint",
    "prepare",
    "random_jaccard",
    "read_rows",
    "row_slices",
    "stream_stats",
]
