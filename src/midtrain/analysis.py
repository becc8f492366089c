"""Checkpoint analysis: what a training stage does to the weights and to the representations (PRISM §mechanism).

**Weights** (``midtrain analyze weights BEFORE AFTER``), for checkpoints of one architecture (DESIGN §1.2):

- fraction changed = mean over parameters of 1[|θ1 − θ0| > τ], τ = 1e-5, on bf16-cast weights by default
  (``--no-bf16`` compares the stored values; ``--relative-tau`` counts |θ1 − θ0| > τ·|θ0|, so any move of a zero
  weight counts); per tensor, per layer (``layers.N.``), per module type (attention, mlp, embeddings, norms, other,
  from the tensor name) and per (layer, module type);
- ‖ΔW‖_F / ‖W0‖_F over the same groups (null where ‖W0‖ = 0 and ΔW ≠ 0), on the values compared;
- ``--compare C D``: the update A→B against C→D: Jaccard overlap of the two update masks (with the chance
  baseline p1·p2/(p1 + p2 − p1·p2) of independent masks) and the cosine of the two ΔW ("does RL make the same
  changes whatever the start?");
- three or more checkpoints c0 … cn: a timeline with the fraction changed between successive checkpoints and
  from c0, and the Jaccard overlap of successive update masks ("is the change front-loaded?").

Tensors are streamed from safetensors shards (``model.safetensors.index.json`` when present), in row slices
of ``chunk_elements`` elements read from every checkpoint at once, each shard opened per slice: peak memory
is a few slices (not the model, not even the largest tensor) and time is linear in the parameter count. Tensor
names and shapes must match; otherwise the error names the first mismatching tensor. The one tolerated
absence is ``lm_head.weight`` in a checkpoint whose config.json says ``tie_word_embeddings: true``: it is then
read from that checkpoint's ``embed_tokens.weight``.

**Representations** (``midtrain analyze cka A B --probe FILE|synthetic:N ...``): linear CKA(X, Y) =
‖YᵀX‖_F² / (‖XᵀX‖_F ‖YᵀY‖_F) on column-centred hidden states, per layer (0 = embedding output), for each probe
set. Hidden states come from batched forward passes (``output_hidden_states=True``), one model in memory at a
time, both models reading the same token ids (A's tokenizer); pooling is the mean over non-pad tokens per
sequence, or per token (the non-pad tokens, at most ``max_tokens_per_sequence`` per sequence, the same seeded
positions for both models). ``--estimator minibatch`` uses the unbiased minibatch estimator of Nguyen et al.
(2021) (mean HSIC₁ over shuffled minibatches) for large n. Probe files are JSONL/Parquet/text read with
:func:`midtrain.data.iter_records` (first non-empty field of ``text_fields``); ``synthetic:N`` takes N problems
from ``midtrain.synth.generate_problems(n, seed=...)``, each as its full document (prompt + gold trace).

With ``--out DIR`` results go to a run directory: ``weights.json`` (everything, per tensor included) and
``weights_heatmap.png`` (+ ``weights_timeline.png``), or ``cka.json`` and ``cka_per_layer.png``; the plots are
also :mod:`midtrain.analysis_plots` functions for the report. ``--json`` prints the summary (``fraction_changed``,
``rel_frob``, ``per_layer``, ``per_module_type``, ``per_layer_module_type``, ``comparisons``, ``overlaps``,
``timeline``; per-tensor rows only in the file).

    midtrain analyze weights base/ midtrained/ --out runs/w1
    midtrain analyze weights mid/ mid_rl/ --compare base/ base_rl/ --json
    midtrain analyze weights ckpt-0 ckpt-100 ckpt-200 ckpt-300 --out runs/timeline
    midtrain analyze cka mid/ mid_rl/ --probe ../shared/datasets/math_train/train.jsonl synthetic:256 --out runs/c1
"""

from __future__ import annotations

import gc
import math
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from midtrain.analysis_cka import (
    MinibatchCKA, collect_features, hsic1, layer_cka, linear_cka, make_batches, minibatch_cka, parse_synthetic,
    probe_name, probe_texts,
)
from midtrain.analysis_plots import (
    CKA_PLOT, WEIGHTS_HEATMAP, WEIGHTS_TIMELINE, plot_cka, plot_weight_heatmap, plot_weight_timeline,
)
from midtrain.analysis_weights import (
    Checkpoint, align, changed_mask, cosine, group, jaccard, layer_index, module_type, open_checkpoint, random_jaccard,
    stream_stats,
)
from midtrain.config import Config, param
from midtrain.console import log, progress, torch_threads
from midtrain.errors import ConfigError, MidtrainError
from midtrain.runs import atomic_write_json, open_run, read_json

WEIGHTS_JSON = "weights.json"
CKA_JSON = "cka.json"


# -- configs ---------------------------------------------------------------------------------------------------
@dataclass
class WeightsConfig(Config):
    checkpoints: list[str] = param(
        [], "Checkpoints (dirs or .safetensors files): BEFORE AFTER for a pair, c0 c1 … cn for a timeline.",
        positional=True,
    )
    compare: list[str] = param([], "A second pair C D: compare the update BEFORE→AFTER with C→D (overlap, cosine).")
    tau: float = param(1e-5, "Threshold τ: a parameter changed if |Δ| > τ (or > τ·|w0| with relative_tau).")
    relative_tau: bool = param(False, "Use the relative threshold |Δ| > τ·|w0| instead of the absolute one.")
    bf16: bool = param(True, "Cast both weights to bfloat16 before comparing (the PRISM definition).")
    chunk_elements: int = param(1 << 20, "Elements per slice read from each checkpoint (bounds peak memory).")
    threads: int = param(1, "CPU threads for the elementwise math (memory-bound: 1 is fastest on a shared box; 0 = torch default).")
    out: str = param("", "Run directory for weights.json and plots (empty: print only).")
    overwrite: bool = param(False, "Replace an existing output directory holding a different run.")

    def check(self) -> None:
        if len(self.checkpoints) < 2:
            raise ConfigError("key 'checkpoints': give at least two checkpoints (BEFORE AFTER)")
        if self.compare and len(self.compare) != 2:
            raise ConfigError(f"key 'compare': give exactly two checkpoints C D, got {len(self.compare)}")
        if self.compare and len(self.checkpoints) != 2:
            raise ConfigError("key 'compare': compares two pairs; it cannot be combined with a timeline (> 2 checkpoints)")
        if self.tau < 0:
            raise ConfigError(f"key 'tau': must be ≥ 0, got {self.tau}")
        if self.chunk_elements < 1:
            raise ConfigError(f"key 'chunk_elements': must be ≥ 1, got {self.chunk_elements}")
        if self.threads < 0:
            raise ConfigError(f"key 'threads': must be ≥ 0, got {self.threads}")


@dataclass
class CkaConfig(Config):
    a: str = param("", "First checkpoint (its tokenizer encodes the probes for both).", positional=True)
    b: str = param("", "Second checkpoint (same number of layers).", positional=True)
    probe: list[str] = param([], "Probe sets: JSONL/Parquet/.txt files, or synthetic:N (N midtrain.synth problems).")
    pooling: Literal["sequence", "token"] = param("sequence", "Mean over non-pad tokens per sequence, or per token.")
    max_examples: int = param(128, "Texts used per probe set (the first ones in the file).")
    max_tokens_per_sequence: int = param(32, "Token pooling: tokens kept per sequence, seeded sample (0 = all).")
    batch_size: int = param(8, "Sequences per forward pass.")
    max_length: int = param(256, "Truncate probe texts to this many tokens.")
    estimator: Literal["full", "minibatch"] = param("full", "full: linear CKA on all rows; minibatch: unbiased HSIC₁ mean.")
    minibatch_size: int = param(256, "Rows per minibatch of the minibatch estimator (≥ 4).")
    text_fields: list[str] = param(["text", "problem", "question", "prompt"], "Record fields tried in order for the text.")
    dtype: Literal["float32", "bfloat16"] = param("float32", "Model dtype for the forward passes.")
    seed: int = param(0, "Seed of token subsampling, minibatch shuffling and synthetic probes.")
    out: str = param("", "Run directory for cka.json and the plot (empty: print only).")
    overwrite: bool = param(False, "Replace an existing output directory holding a different run.")

    def check(self) -> None:
        for key in ("a", "b"):
            if not getattr(self, key):
                raise ConfigError(f"key '{key}': give two checkpoints A B")
        if not self.probe:
            raise ConfigError("key 'probe': give at least one probe set (a data file or synthetic:N)")
        for spec in self.probe:
            parse_synthetic(spec)
        for key, low in (("max_examples", 2), ("batch_size", 1), ("max_length", 1), ("minibatch_size", 4), ("max_tokens_per_sequence", 0)):
            if getattr(self, key) < low:
                raise ConfigError(f"key '{key}': must be ≥ {low}, got {getattr(self, key)}")
        if not self.text_fields:
            raise ConfigError("key 'text_fields': give at least one field name")


# -- results ---------------------------------------------------------------------------------------------------
def _strip(obj: Any) -> Any:
    """The JSON summary: the result without per-tensor rows."""
    if isinstance(obj, dict):
        return {k: _strip(v) for k, v in obj.items() if k != "per_tensor"}
    if isinstance(obj, list):
        return [_strip(v) for v in obj]
    return obj


def _f(v: float | None, spec: str = ".4f") -> str:
    return "n/a" if v is None or (isinstance(v, float) and math.isnan(v)) else format(v, spec)


@dataclass
class AnalysisResult:
    """``data`` is the content of weights.json / cka.json; ``out`` the run dir (None without --out)."""

    data: dict[str, Any]
    out: str | None = None
    cached: bool = False

    def to_dict(self) -> dict[str, Any]:
        return {**_strip(self.data), "out": self.out, "cached": self.cached}


@dataclass
class WeightsResult(AnalysisResult):
    def summary(self) -> str:
        d = self.data
        mode = f"{'relative' if d['relative_tau'] else 'absolute'}, {'bf16-cast' if d['bf16'] else 'stored dtype'}"
        lines = [
            f"analyze weights ({d['kind']}): {d['parameters'] / 1e6:.2f}M parameters in {d['tensors']} tensors, "
            f"tau={d['tau']:g} ({mode}), {d['seconds']:.1f}s" + (f" → {self.out}" if self.out else ""),
        ]
        for c in d["comparisons"]:
            lines.append(f"  {c['label']}: fraction changed {_f(c['fraction_changed'])}  ‖ΔW‖/‖W0‖ {_f(c['rel_frob'], '.3e')}")
        for o in d["overlaps"]:
            lines.append(
                f"  overlap [{o['first']}] vs [{o['second']}]: Jaccard {_f(o['jaccard'])} "
                f"(chance {_f(o['jaccard_random'])})  cosine {_f(o['cosine'])}"
            )
        head = d["comparisons"][0]["label"] if d["kind"] != "timeline" else d["primary"]
        lines.append(f"  {head}\n  {'module type':<12} {'parameters':>14} {'fraction':>9} {'‖ΔW‖/‖W0‖':>11}")
        for k, v in d["per_module_type"].items():
            lines.append(f"  {k:<12} {v['parameters']:>14,} {_f(v['fraction_changed']):>9} {_f(v['rel_frob'], '.3e'):>11}")
        if d["per_layer"]:
            lines.append("  per layer (fraction changed): " + "  ".join(
                f"{k}:{_f(v['fraction_changed'], '.3f')}" for k, v in d["per_layer"].items()
            ))
        for s in d.get("timeline", []):
            lines.append(
                f"  step {s['index']}: successive {_f(s['fraction_changed_successive'])}  from c0 "
                f"{_f(s['fraction_changed_from_first'])}  Jaccard with next {_f(s['jaccard_with_next'])}"
            )
        return "\n".join(lines)


@dataclass
class CkaResult(AnalysisResult):
    def summary(self) -> str:
        d = self.data
        cols = {n: max(10, len(n)) for n in d["probes"]}
        lines = [
            f"analyze cka: {d['a']} vs {d['b']} ({d['pooling']} pooling, {d['estimator']} estimator), "
            f"min CKA {_f(d['min_cka'])}" + (f" → {self.out}" if self.out else ""),
            "  layer  " + "  ".join(f"{n:>{w}}" for n, w in cols.items()),
        ]
        for layer in range(d["layers"]):
            lines.append(f"  {layer:>5}  " + "  ".join(f"{_f(d['probes'][n]['per_layer'][layer]):>{w}}" for n, w in cols.items()))
        lines.append("  rows   " + "  ".join(f"{d['probes'][n]['rows']:>{w}}" for n, w in cols.items()))
        return "\n".join(lines)


# -- weights ---------------------------------------------------------------------------------------------------
def _plan(n_ckpts: int, compare: bool) -> tuple[str, list[tuple[int, int]], list[tuple[int, int]], int]:
    """(kind, comparisons, overlaps, index of the primary comparison) for the checkpoints given."""
    if compare:
        return "compare", [(0, 1), (2, 3)], [(0, 1)], 0
    if n_ckpts == 2:
        return "pair", [(0, 1)], [], 0
    n = n_ckpts - 1
    successive = [(i - 1, i) for i in range(1, n + 1)]  # comparison i-1 is update i
    from_first = [(0, i) for i in range(2, n + 1)]
    return "timeline", successive + from_first, [(c, c + 1) for c in range(n - 1)], len(successive) + len(from_first) - 1


def _label(paths: list[str], i: int, j: int) -> str:
    return f"{Path(paths[i]).name or paths[i]} → {Path(paths[j]).name or paths[j]}"


Opened = tuple[list[str], list[Checkpoint], list[tuple[str, list[str]]]]  # paths, checkpoints, align() plan


def _open(cfg: WeightsConfig) -> Opened:
    """(paths, indexed checkpoints, aligned tensor names): every input error surfaces here, before any work."""
    paths = cfg.checkpoints + cfg.compare
    ckpts = [open_checkpoint(p) for p in paths]
    return paths, ckpts, align(ckpts)


def analyze_weights(cfg: WeightsConfig, opened: Opened | None = None) -> dict[str, Any]:
    """Compute the weights.json content (see the module docstring); no files written."""
    paths, ckpts, plan = opened or _open(cfg)
    kind, comparisons, overlaps, primary = _plan(len(paths), bool(cfg.compare))
    total = sum(math.prod(ckpts[0].shapes[keys[0]]) for _, keys in plan)
    t0 = time.time()
    with progress() as bar, torch_threads(cfg.threads):
        task = bar.add_task("analyze weights", total=total, info=f"{len(plan)} tensors")
        tensors, by_cmp, by_ovl = stream_stats(
            ckpts, plan, comparisons, overlaps, tau=cfg.tau, relative=cfg.relative_tau, bf16=cfg.bf16,
            chunk_elements=cfg.chunk_elements, on_progress=lambda n: bar.advance(task, n),
        )
    cmps = [
        {"label": _label(paths, i, j), "before": paths[i], "after": paths[j], **group(tensors, stats)}
        for (i, j), stats in zip(comparisons, by_cmp)
    ]
    ovls = [
        {"first": cmps[p]["label"], "second": cmps[q]["label"], **group(tensors, stats)}
        for (p, q), stats in zip(overlaps, by_ovl)
    ]
    main = cmps[primary]
    data: dict[str, Any] = {
        "kind": kind,
        "checkpoints": paths,
        "tau": cfg.tau,
        "relative_tau": cfg.relative_tau,
        "bf16": cfg.bf16,
        "parameters": total,
        "tensors": len(tensors),
        "primary": main["label"],
        **{k: main[k] for k in ("changed", "fraction_changed", "rel_frob", "per_layer", "per_module_type", "per_layer_module_type")},
        "comparisons": cmps,
        "overlaps": ovls,
    }
    if kind == "timeline":
        n = len(paths) - 1
        steps = []
        for i in range(1, n + 1):
            succ = cmps[i - 1]
            first = succ if i == 1 else cmps[n + i - 2]
            nxt = ovls[i - 1] if i < n else None
            steps.append({
                "index": i,
                "checkpoint": paths[i],
                "fraction_changed_successive": succ["fraction_changed"],
                "rel_frob_successive": succ["rel_frob"],
                "fraction_changed_from_first": first["fraction_changed"],
                "rel_frob_from_first": first["rel_frob"],
                "jaccard_with_next": nxt["jaccard"] if nxt else None,
                "jaccard_random_with_next": nxt["jaccard_random"] if nxt else None,
                "cosine_with_next": nxt["cosine"] if nxt else None,
            })
        data["timeline"] = steps
        last = steps[-1]["fraction_changed_from_first"]
        data["first_step_share"] = steps[0]["fraction_changed_from_first"] / last if last else None
    data["seconds"] = round(time.time() - t0, 3)
    return data


def _weights_plots(data: dict[str, Any], out: Path) -> None:
    plot_weight_heatmap(data, out / WEIGHTS_HEATMAP)
    if data["kind"] == "timeline":
        plot_weight_timeline(data, out / WEIGHTS_TIMELINE)


def weights(cfg: WeightsConfig) -> WeightsResult:
    """``midtrain analyze weights``: weight-change sparsity, update overlap or a timeline (module docstring)."""
    opened = _open(cfg)  # bad input fails before the run dir exists
    if not cfg.out:
        return WeightsResult(analyze_weights(cfg, opened))
    inputs = {f"checkpoint[{i}]": p for i, p in enumerate(opened[0])}
    with open_run(cfg.out, "analyze_weights", cfg, inputs, overwrite=cfg.overwrite) as run:
        if run.cached:
            return WeightsResult(read_json(run.path / WEIGHTS_JSON), str(run.path), cached=True)
        data = analyze_weights(cfg, opened)
        atomic_write_json(run.path / WEIGHTS_JSON, data)
        _weights_plots(data, run.path)
        metrics = {k: data[k] for k in ("kind", "parameters", "fraction_changed", "rel_frob")}
        if data["overlaps"]:
            metrics.update(jaccard=data["overlaps"][0]["jaccard"], cosine=data["overlaps"][0]["cosine"])
        run.finish(metrics)
        log(f"analyze weights: fraction changed {_f(data['fraction_changed'])} ({data['primary']}) → {run.path}")
        return WeightsResult(data, str(run.path))


# -- CKA -------------------------------------------------------------------------------------------------------
def _num_layers(path: str) -> int:
    from transformers import AutoConfig

    try:
        conf = AutoConfig.from_pretrained(path)
    except (OSError, ValueError) as e:
        raise MidtrainError(f"cannot load a model config from '{path}': {str(e).splitlines()[0]}") from None
    conf = getattr(conf, "text_config", None) or conf
    return int(conf.num_hidden_layers)


def _nan_to_none(v: float) -> float | None:
    return None if math.isnan(v) else v


def analyze_cka(cfg: CkaConfig) -> dict[str, Any]:
    """Compute the cka.json content (see the module docstring); no files written."""
    import torch

    from midtrain.models import load_model, load_tokenizer

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
        n: make_batches(texts[n], tok, batch_size=cfg.batch_size, max_length=cfg.max_length, pooling=cfg.pooling,
                        max_tokens_per_sequence=cfg.max_tokens_per_sequence, generator=gen)
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
            feats[which] = {n: collect_features(model, batches[n], lambda: bar.advance(task)) for n in names}
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
        log(f"analyze cka: min CKA {_f(data['min_cka'])} over {len(data['probes'])} probe sets → {run.path}")
        return CkaResult(data, str(run.path))


__all__ = [
    "CkaConfig", "CkaResult", "MinibatchCKA", "WeightsConfig", "WeightsResult", "analyze_cka", "analyze_weights",
    "changed_mask", "cka", "cosine", "hsic1", "jaccard", "layer_index", "linear_cka", "minibatch_cka",
    "module_type", "plot_cka", "plot_weight_heatmap", "plot_weight_timeline", "random_jaccard", "weights",
]
