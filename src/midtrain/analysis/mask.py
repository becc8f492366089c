"""``midtrain analyze mask``: the entries a training stage changed, as a file of bool masks (a subnetwork).

Algorithm: for checkpoints BEFORE and AFTER of one architecture, mask[name] = 1[|θ1 − θ0| > τ] elementwise, on
bf16-cast weights by default (``--no-bf16``: the stored values; ``--relative-tau``: |θ1 − θ0| > τ·|θ0|): the
definition of "changed" of ``midtrain analyze weights`` (:func:`midtrain.analysis.diff.exceeds`), τ = 1e-5. With
BEFORE a run's start and AFTER a pilot RL run's end, the mask is the subnetwork RL updated ("RL finetunes small
subnetworks", arXiv 2505.11711); ``midtrain rl --weights.mask OUT`` then trains only the entries inside it.

Streaming: each tensor is read in row slices of about ``chunk_elements`` elements from both checkpoints (names and
shapes must match; the error names the first mismatching tensor; a tied ``lm_head.weight`` is read from
``embed_tokens.weight``) and its mask slice is appended to ``mask.safetensors`` as it is computed
(:mod:`midtrain.analysis.tensorfile`, one byte per entry, dtype BOOL, every tensor of the union of both
checkpoints' names): peak memory is a few slices. The file's metadata records the two checkpoints, τ and the view;
``mask.json`` holds the density (``fraction_changed``) overall, per layer, per module type and per tensor.

    midtrain analyze mask runs/sft_think runs/rl_pilot --out runs/mask
    midtrain rl --model runs/sft_think --data edge.jsonl --weights.mask runs/mask --out runs/rl_subnet
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from midtrain.analysis.diff import ChangeStats, align, changed_mask, group, open_checkpoint, prepare, read_rows, row_slices
from midtrain.analysis.results import AnalysisResult
from midtrain.analysis.tensorfile import TensorSpec, write_safetensors
from midtrain.config import Config, param
from midtrain.console import fmt_num, log, progress, torch_threads
from midtrain.errors import ConfigError
from midtrain.fileio import atomic_write_json, read_json
from midtrain.runs import open_run

MASK_FILE = "mask.safetensors"  # the name `midtrain rl --weights.mask DIR` looks for in a run directory
MASK_JSON = "mask.json"


@dataclass
class MaskConfig(Config):
    checkpoints: list[str] = param([], "BEFORE AFTER: the two checkpoints (dirs or .safetensors files).", positional=True)
    tau: float = param(1e-5, "Threshold τ: an entry changed if |Δ| > τ (or > τ·|w0| with relative_tau).", ge=0)
    relative_tau: bool = param(False, "Use the relative threshold |Δ| > τ·|w0| instead of the absolute one.")
    bf16: bool = param(True, "Cast both weights to bfloat16 before comparing (the PRISM definition).")
    chunk_elements: int = param(1 << 20, "Elements per slice read from each checkpoint (bounds peak memory).", ge=1)
    threads: int = param(1, "CPU threads for the elementwise math (0 = torch default).", ge=0)
    out: str = param("", "Run directory for mask.safetensors and mask.json.", path="dir")
    overwrite: bool = param(False, "Replace an existing output directory holding a different run.")

    def check(self) -> None:
        if len(self.checkpoints) != 2:
            raise ConfigError(f"key 'checkpoints': give exactly two checkpoints BEFORE AFTER, got {len(self.checkpoints)}")
        if not self.out:
            raise ConfigError("key 'out': give the output directory")


@dataclass
class MaskStats(ChangeStats):
    """Entries and changed entries of a tensor or group (a mask has no norms)."""

    def summary(self) -> dict[str, Any]:
        return {k: v for k, v in super().summary().items() if k != "rel_frob"}


@dataclass
class MaskResult(AnalysisResult):
    def summary(self) -> str:
        d = self.data
        lines = [
            f"analyze mask: {d['changed']:,} of {d['parameters']:,} entries changed ({fmt_num(d['fraction_changed'])}), "
            f"tau={d['tau']:g} ({'relative' if d['relative_tau'] else 'absolute'}, {'bf16-cast' if d['bf16'] else 'stored dtype'}), "
            f"{d['seconds']:.1f}s" + (f" → {self.out}" if self.out else ""),
        ]
        for k, v in d["per_module_type"].items():
            lines.append(f"  {k:<12} {v['parameters']:>14,} {fmt_num(v['fraction_changed']):>9}")
        if d["per_layer"]:
            lines.append("  per layer: " + "  ".join(f"{k}:{fmt_num(v['fraction_changed'], '.3f')}" for k, v in d["per_layer"].items()))
        return "\n".join(lines)


def write_mask(cfg: MaskConfig, out: Path) -> dict[str, Any]:
    """Write ``out/mask.safetensors`` and return mask.json's content (module docstring)."""
    ckpts = [open_checkpoint(p) for p in cfg.checkpoints]
    plan = align(ckpts)
    shapes = {name: ckpts[0].shapes[keys[0]] for name, keys in plan}
    specs = [TensorSpec(name, "BOOL", shapes[name]) for name, _ in plan]
    meta = {
        "format": "pt",
        "midtrain": "analyze mask",
        "before": cfg.checkpoints[0],
        "after": cfg.checkpoints[1],
        "tau": repr(cfg.tau),
        "relative_tau": str(cfg.relative_tau).lower(),
        "bf16": str(cfg.bf16).lower(),
    }
    stats: list[ChangeStats] = []
    t0 = time.time()
    with progress() as bar, torch_threads(cfg.threads), write_safetensors(out / MASK_FILE, specs, meta) as writer:
        task = bar.add_task("analyze mask", total=sum(math.prod(s) for s in shapes.values()), info=f"{len(plan)} tensors")
        for name, keys in plan:
            s = MaskStats()
            for start, stop in row_slices(shapes[name], cfg.chunk_elements) if math.prod(shapes[name]) else ():
                w0, w1 = (prepare(read_rows(ck, k, start, stop), cfg.bf16) for ck, k in zip(ckpts, keys))  # [rows, ...] f64
                changed = changed_mask(w0, w1, cfg.tau, cfg.relative_tau)  # [rows, ...] bool
                writer.write(name, changed)
                s += MaskStats(changed.numel(), int(changed.sum()))
                bar.advance(task, changed.numel())
            stats.append(s)
    summary = group([(name, shapes[name]) for name, _ in plan], stats)
    return {
        "checkpoints": list(cfg.checkpoints),
        "tau": cfg.tau,
        "relative_tau": cfg.relative_tau,
        "bf16": cfg.bf16,
        "tensors": len(plan),
        **summary,
        "seconds": round(time.time() - t0, 3),
    }


def mask(cfg: MaskConfig) -> MaskResult:
    """``midtrain analyze mask``: the entries changed between two checkpoints, as bool masks (module docstring)."""
    align([open_checkpoint(p) for p in cfg.checkpoints])  # bad input fails before the run dir exists (headers only)
    inputs = {f"checkpoint[{i}]": p for i, p in enumerate(cfg.checkpoints)}
    with open_run(cfg.out, "analyze_mask", cfg, inputs, overwrite=cfg.overwrite) as run:
        if run.cached:
            return MaskResult(read_json(run.path / MASK_JSON), str(run.path), cached=True)
        data = write_mask(cfg, run.path)
        atomic_write_json(run.path / MASK_JSON, data)
        run.finish({k: data[k] for k in ("parameters", "changed", "fraction_changed")})
        log(f"analyze mask: {fmt_num(data['fraction_changed'])} of the entries changed → {run.path / MASK_FILE}")
        return MaskResult(data, str(run.path))


__all__ = ["MASK_FILE", "MASK_JSON", "MaskConfig", "MaskResult", "MaskStats", "mask", "write_mask"]
