"""``midtrain analyze weights``: what a training stage does to the weights (PRISM §mechanism).

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

With ``--out DIR`` results go to a run directory: ``weights.json`` (everything, per tensor included) and
``weights_heatmap.png`` (+ ``weights_timeline.png``); the plots are
also :mod:`midtrain.analysis.plots` functions for the report. ``--json`` prints the summary (``fraction_changed``,
``rel_frob``, ``per_layer``, ``per_module_type``, ``per_layer_module_type``, ``comparisons``, ``overlaps``,
``timeline``; per-tensor rows only in the file).

    midtrain analyze weights base/ midtrained/ --out runs/w1
    midtrain analyze weights mid/ mid_rl/ --compare base/ base_rl/ --json
    midtrain analyze weights ckpt-0 ckpt-100 ckpt-200 ckpt-300 --out runs/timeline
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from midtrain.analysis.diff import (
    Checkpoint,
    align,
    group,
    open_checkpoint,
    stream_stats,
)
from midtrain.analysis.plots import (
    WEIGHTS_HEATMAP,
    WEIGHTS_TIMELINE,
    plot_weight_heatmap,
    plot_weight_timeline,
)
from midtrain.analysis.results import AnalysisResult
from midtrain.config import Config, param
from midtrain.console import fmt_num, log, progress, torch_threads
from midtrain.errors import ConfigError
from midtrain.fileio import atomic_write_json, read_json
from midtrain.runs import open_run

WEIGHTS_JSON = "weights.json"


# -- configs ---------------------------------------------------------------------------------------------------
@dataclass
class WeightsConfig(Config):
    checkpoints: list[str] = param(
        [],
        "Checkpoints (dirs or .safetensors files): BEFORE AFTER for a pair, c0 c1 … cn for a timeline.",
        positional=True,
    )
    compare: list[str] = param([], "A second pair C D: compare the update BEFORE→AFTER with C→D (overlap, cosine).")
    tau: float = param(1e-5, "Threshold τ: a parameter changed if |Δ| > τ (or > τ·|w0| with relative_tau).", ge=0)
    relative_tau: bool = param(False, "Use the relative threshold |Δ| > τ·|w0| instead of the absolute one.")
    bf16: bool = param(True, "Cast both weights to bfloat16 before comparing (the PRISM definition).")
    chunk_elements: int = param(1 << 20, "Elements per slice read from each checkpoint (bounds peak memory).", ge=1)
    threads: int = param(1, "CPU threads for the elementwise math (memory-bound: 1 is fastest on a shared box; 0 = torch default).", ge=0)
    out: str = param("", "Run directory for weights.json and plots (empty: print only).", path="dir")
    overwrite: bool = param(False, "Replace an existing output directory holding a different run.")

    def check(self) -> None:
        if len(self.checkpoints) < 2:
            raise ConfigError("key 'checkpoints': give at least two checkpoints (BEFORE AFTER)")
        if self.compare and len(self.compare) != 2:
            raise ConfigError(f"key 'compare': give exactly two checkpoints C D, got {len(self.compare)}")
        if self.compare and len(self.checkpoints) != 2:
            raise ConfigError("key 'compare': compares two pairs; it cannot be combined with a timeline (> 2 checkpoints)")


# -- results ---------------------------------------------------------------------------------------------------


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
            lines.append(f"  {c['label']}: fraction changed {fmt_num(c['fraction_changed'])}  ‖ΔW‖/‖W0‖ {fmt_num(c['rel_frob'], '.3e')}")
        for o in d["overlaps"]:
            lines.append(
                f"  overlap [{o['first']}] vs [{o['second']}]: Jaccard {fmt_num(o['jaccard'])} "
                f"(chance {fmt_num(o['jaccard_random'])})  cosine {fmt_num(o['cosine'])}"
            )
        head = d["comparisons"][0]["label"] if d["kind"] != "timeline" else d["primary"]
        lines.append(f"  {head}\n  {'module type':<12} {'parameters':>14} {'fraction':>9} {'‖ΔW‖/‖W0‖':>11}")
        for k, v in d["per_module_type"].items():
            lines.append(f"  {k:<12} {v['parameters']:>14,} {fmt_num(v['fraction_changed']):>9} {fmt_num(v['rel_frob'], '.3e'):>11}")
        if d["per_layer"]:
            lines.append(
                "  per layer (fraction changed): "
                + "  ".join(f"{k}:{fmt_num(v['fraction_changed'], '.3f')}" for k, v in d["per_layer"].items())
            )
        for s in d.get("timeline", []):
            lines.append(
                f"  step {s['index']}: successive {fmt_num(s['fraction_changed_successive'])}  from c0 "
                f"{fmt_num(s['fraction_changed_from_first'])}  Jaccard with next {fmt_num(s['jaccard_with_next'])}"
            )
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
            ckpts,
            plan,
            comparisons,
            overlaps,
            tau=cfg.tau,
            relative=cfg.relative_tau,
            bf16=cfg.bf16,
            chunk_elements=cfg.chunk_elements,
            on_progress=lambda n: bar.advance(task, n),
        )
    cmps = [
        {"label": _label(paths, i, j), "before": paths[i], "after": paths[j], **group(tensors, stats)}
        for (i, j), stats in zip(comparisons, by_cmp)
    ]
    ovls = [{"first": cmps[p]["label"], "second": cmps[q]["label"], **group(tensors, stats)} for (p, q), stats in zip(overlaps, by_ovl)]
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
            steps.append(
                {
                    "index": i,
                    "checkpoint": paths[i],
                    "fraction_changed_successive": succ["fraction_changed"],
                    "rel_frob_successive": succ["rel_frob"],
                    "fraction_changed_from_first": first["fraction_changed"],
                    "rel_frob_from_first": first["rel_frob"],
                    "jaccard_with_next": nxt["jaccard"] if nxt else None,
                    "jaccard_random_with_next": nxt["jaccard_random"] if nxt else None,
                    "cosine_with_next": nxt["cosine"] if nxt else None,
                }
            )
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
        log(f"analyze weights: fraction changed {fmt_num(data['fraction_changed'])} ({data['primary']}) → {run.path}")
        return WeightsResult(data, str(run.path))


# -- CKA -------------------------------------------------------------------------------------------------------


__all__ = ["WEIGHTS_JSON", "WeightsConfig", "WeightsResult", "analyze_weights", "weights"]
