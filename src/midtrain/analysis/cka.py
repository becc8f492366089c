"""``midtrain analyze cka``: do two checkpoints represent inputs alike? (PRISM §mechanism).

Algorithm: linear CKA(X, Y) =
‖YᵀX‖_F² / (‖XᵀX‖_F ‖YᵀY‖_F) on column-centred hidden states, per layer (0 = embedding output), for each probe
set. Hidden states come from batched forward passes (``output_hidden_states=True``), one model in memory at a
time, both models reading the same token ids (A's tokenizer); pooling is the mean over non-pad tokens per
sequence, or per token (the non-pad tokens, at most ``max_tokens_per_sequence`` per sequence, the same seeded
positions for both models). ``--estimator minibatch`` uses the unbiased minibatch estimator of Nguyen et al.
(2021) (mean HSIC₁ over shuffled minibatches) for large n. Probe files are JSONL/Parquet/text read with
:func:`midtrain.data.corpus.iter_records` (first non-empty field of ``text_fields``); ``synthetic:N`` takes N problems
from ``midtrain.synth.generate.generate_problems(n, seed=...)``, each as its full document (prompt + gold trace).


The module holds the estimators: :func:`linear_cka` (full, on column-centred features, in float64 through
whichever of the n×n Gram or the d×d feature route is cheaper) and the minibatch estimator (:func:`hsic1`, the
unbiased HSIC of Song et al. 2012 on linear kernels, averaged by :class:`MinibatchCKA`: CKA = mean HSIC₁(K, L) /
√(mean HSIC₁(K, K) · mean HSIC₁(L, L))); probe sets (:func:`probe_texts`); and :func:`collect_features`. With
``--out DIR`` the run directory holds ``cka.json`` and ``cka_per_layer.png``.

    midtrain analyze cka mid/ mid_rl/ --probe ../shared/datasets/math_train/train.jsonl synthetic:256 --out runs/c1
"""

from __future__ import annotations

import gc
import math
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import torch

from midtrain.analysis.plots import (
    CKA_PLOT,
    plot_cka,
)
from midtrain.analysis.results import AnalysisResult
from midtrain.config import MAX_SEED, Config, param
from midtrain.console import fmt_num, log, progress
from midtrain.data.corpus import iter_records
from midtrain.data.records import where
from midtrain.errors import ConfigError, DataError, MidtrainError
from midtrain.fileio import atomic_write_json, read_json
from midtrain.runs import open_run

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
MAX_SYNTHETIC_PROBES = 100_000  # problems generated for one synthetic probe set


def parse_synthetic(spec: str) -> int | None:
    """N for ``synthetic:N`` (ConfigError if N is not a positive integer); None for a file path."""
    if not spec.startswith(SYNTHETIC):
        return None
    raw = spec[len(SYNTHETIC) :]
    if not (raw.isascii() and raw.isdigit()) or not 0 < int(raw) <= MAX_SYNTHETIC_PROBES:
        raise ConfigError(f"key 'probe': '{spec}' must be synthetic:N with N an integer in [1, {MAX_SYNTHETIC_PROBES}]")
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
    """N problems from :func:`midtrain.synth.generate.generate_problems` ``(n, seed=seed)``: each the full rendered
    document (prompt + gold completion) when the record has both, else its first ``fields`` text."""
    from midtrain.synth.generate import generate_problems

    texts = []
    for i, rec in enumerate(generate_problems(n, seed=seed)[:n]):
        prompt, completion = rec.get("prompt"), rec.get("completion")
        ok = isinstance(prompt, str) and isinstance(completion, str)
        texts.append(f"{prompt}{completion}" if ok else _record_text(dict(rec), fields, f"synthetic problem {i}"))
    return texts


def probe_texts(spec: str, *, max_examples: int, fields: list[str], seed: int = 0) -> list[str]:
    """Up to ``max_examples`` texts of one probe set (a data file or ``synthetic:N``), in file order."""
    n = parse_synthetic(spec)
    if n is not None:
        return synthetic_texts(min(n, max_examples), seed, fields)
    texts = []
    for rec in iter_records(spec):
        texts.append(_record_text(rec, fields, where(rec, spec)))
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
    texts: list[str],
    tokenizer: Any,
    *,
    batch_size: int,
    max_length: int,
    pooling: str,
    max_tokens_per_sequence: int,
    generator: torch.Generator,
) -> list[ProbeBatch]:
    """Tokenised, right-padded batches; for token pooling, the (seeded) token positions both models will use."""
    tokenizer.padding_side = "right"
    out = []
    for start in range(0, len(texts), batch_size):
        enc = tokenizer(
            texts[start : start + batch_size],
            truncation=True,
            max_length=max_length,
            padding=True,
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


CKA_JSON = "cka.json"


@dataclass
class CkaConfig(Config):
    a: str = param("", "First checkpoint (its tokenizer encodes the probes for both).", positional=True)
    b: str = param("", "Second checkpoint (same number of layers).", positional=True)
    probe: list[str] = param([], "Probe sets: JSONL/Parquet/.txt files, or synthetic:N (N midtrain.synth problems).")
    pooling: Literal["sequence", "token"] = param("sequence", "Mean over non-pad tokens per sequence, or per token.")
    max_examples: int = param(128, "Texts used per probe set (the first ones in the file).", ge=2)
    max_tokens_per_sequence: int = param(32, "Token pooling: tokens kept per sequence, seeded sample (0 = all).", ge=0)
    batch_size: int = param(8, "Sequences per forward pass.", ge=1)
    max_length: int = param(256, "Truncate probe texts to this many tokens.", ge=1)
    estimator: Literal["full", "minibatch"] = param("full", "full: linear CKA on all rows; minibatch: unbiased HSIC₁ mean.")
    minibatch_size: int = param(256, "Rows per minibatch of the minibatch estimator.", ge=4)
    text_fields: list[str] = param(["text", "problem", "question", "prompt"], "Record fields tried in order for the text.")
    dtype: Literal["float32", "bfloat16"] = param("float32", "Model dtype for the forward passes.")
    seed: int = param(0, "Seed of token subsampling, minibatch shuffling and synthetic probes.", ge=0, le=MAX_SEED)
    out: str = param("", "Run directory for cka.json and the plot (empty: print only).", path="dir")
    overwrite: bool = param(False, "Replace an existing output directory holding a different run.")

    def check(self) -> None:
        for key in ("a", "b"):
            if not getattr(self, key):
                raise ConfigError(f"key '{key}': give two checkpoints A B")
        if not self.probe:
            raise ConfigError("key 'probe': give at least one probe set (a data file or synthetic:N)")
        for spec in self.probe:
            parse_synthetic(spec)
        if not self.text_fields:
            raise ConfigError("key 'text_fields': give at least one field name")


@dataclass
class CkaResult(AnalysisResult):
    def summary(self) -> str:
        d = self.data
        cols = {n: max(10, len(n)) for n in d["probes"]}
        lines = [
            f"analyze cka: {d['a']} vs {d['b']} ({d['pooling']} pooling, {d['estimator']} estimator), "
            f"min CKA {fmt_num(d['min_cka'])}" + (f" → {self.out}" if self.out else ""),
            "  layer  " + "  ".join(f"{n:>{w}}" for n, w in cols.items()),
        ]
        for layer in range(d["layers"]):
            lines.append(f"  {layer:>5}  " + "  ".join(f"{fmt_num(d['probes'][n]['per_layer'][layer]):>{w}}" for n, w in cols.items()))
        lines.append("  rows   " + "  ".join(f"{d['probes'][n]['rows']:>{w}}" for n, w in cols.items()))
        return "\n".join(lines)


def _num_layers(path: str) -> int:
    from midtrain.models.init import load_model_config

    conf = load_model_config(path)
    conf = getattr(conf, "text_config", None) or conf
    return int(conf.num_hidden_layers)


def _nan_to_none(v: float) -> float | None:
    return None if math.isnan(v) else v


def analyze_cka(cfg: CkaConfig) -> dict[str, Any]:
    """Compute the cka.json content (see the module docstring); no files written."""
    import torch

    from midtrain.models.init import load_model
    from midtrain.models.tokenizer import load_tokenizer

    la, lb = _num_layers(cfg.a), _num_layers(cfg.b)
    if la != lb:
        raise MidtrainError(f"'{cfg.a}' has {la} layers and '{cfg.b}' {lb}: per-layer CKA needs the same depth")
    names: list[str] = []
    texts: dict[str, list[str]] = {}
    for spec in cfg.probe:
        name = probe_name(spec, set(names))
        names.append(name)
        texts[name] = probe_texts(spec, max_examples=cfg.max_examples, fields=cfg.text_fields, seed=cfg.seed)
    tok = load_tokenizer(cfg.a)
    gen = torch.Generator().manual_seed(cfg.seed)
    batches = {
        n: make_batches(
            texts[n],
            tok,
            batch_size=cfg.batch_size,
            max_length=cfg.max_length,
            pooling=cfg.pooling,
            max_tokens_per_sequence=cfg.max_tokens_per_sequence,
            generator=gen,
        )
        for n in names
    }
    t0 = time.time()
    feats: dict[str, dict[str, list[torch.Tensor]]] = {}
    n_batches = sum(len(b) for b in batches.values())
    for which, path in (("a", cfg.a), ("b", cfg.b)):
        model = load_model(path, dtype=cfg.dtype)
        vocab = model.get_input_embeddings().num_embeddings
        if max(int(b.input_ids.max()) for bs in batches.values() for b in bs) >= vocab:
            raise MidtrainError(f"'{path}' has {vocab} embeddings, fewer than the token ids of {cfg.a}'s tokenizer")
        with progress() as bar:
            task = bar.add_task(f"hidden states {which}", total=n_batches, info=Path(path).name)
            feats[which] = {n: collect_features(model, batches[n], lambda task=task: bar.advance(task)) for n in names}
        del model
        gc.collect()
    probes: dict[str, Any] = {}
    for spec, n in zip(cfg.probe, names):
        xs, ys = feats["a"][n], feats["b"][n]
        if xs[0].shape[0] < (4 if cfg.estimator == "minibatch" else 2):
            raise MidtrainError(f"probe '{spec}' gave {xs[0].shape[0]} rows: too few for CKA")
        values = [_nan_to_none(v) for v in layer_cka(xs, ys, cfg.estimator, cfg.minibatch_size, cfg.seed)]
        valid = [v for v in values if v is not None]
        probes[n] = {
            "spec": spec,
            "examples": len(texts[n]),
            "rows": int(xs[0].shape[0]),
            "per_layer": values,
            "mean": sum(valid) / len(valid) if valid else None,
            "min": min(valid) if valid else None,
        }
    layers = len(next(iter(probes.values()))["per_layer"])
    per_layer = []
    for layer in range(layers):
        vals = [p["per_layer"][layer] for p in probes.values() if p["per_layer"][layer] is not None]
        per_layer.append(sum(vals) / len(vals) if vals else None)
    mins = [p["min"] for p in probes.values() if p["min"] is not None]
    return {
        "a": cfg.a,
        "b": cfg.b,
        "pooling": cfg.pooling,
        "estimator": cfg.estimator,
        "layers": layers,
        "probes": probes,
        "per_layer": per_layer,
        "min_cka": min(mins) if mins else None,
        "seconds": round(time.time() - t0, 3),
    }


def cka(cfg: CkaConfig) -> CkaResult:
    """``midtrain analyze cka``: linear CKA per layer between two checkpoints on probe sets (module docstring)."""
    if not cfg.out:
        return CkaResult(analyze_cka(cfg))
    for spec in cfg.probe:  # bad input fails before the run dir exists
        if parse_synthetic(spec) is None:
            probe_texts(spec, max_examples=1, fields=cfg.text_fields)
    inputs = {"a": cfg.a, "b": cfg.b, **{f"probe[{i}]": p for i, p in enumerate(cfg.probe) if parse_synthetic(p) is None}}
    with open_run(cfg.out, "analyze_cka", cfg, inputs, overwrite=cfg.overwrite, seed=cfg.seed) as run:
        if run.cached:
            return CkaResult(read_json(run.path / CKA_JSON), str(run.path), cached=True)
        data = analyze_cka(cfg)
        atomic_write_json(run.path / CKA_JSON, data)
        plot_cka(data, run.path / CKA_PLOT)
        run.finish({"min_cka": data["min_cka"], **{f"mean_cka/{n}": p["mean"] for n, p in data["probes"].items()}})
        log(f"analyze cka: min CKA {fmt_num(data['min_cka'])} over {len(data['probes'])} probe sets → {run.path}")
        return CkaResult(data, str(run.path))


__all__ = [
    "CKA_JSON",
    "CkaConfig",
    "CkaResult",
    "MinibatchCKA",
    "ProbeBatch",
    "analyze_cka",
    "cka",
    "collect_features",
    "hsic1",
    "layer_cka",
    "linear_cka",
    "make_batches",
    "minibatch_cka",
    "parse_synthetic",
    "pool",
    "probe_name",
    "probe_texts",
    "synthetic_texts",
]
