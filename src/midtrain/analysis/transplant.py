"""``midtrain analyze transplant``: move one checkpoint pair's weight change onto another checkpoint.

Algorithm (delta transplant; PRISM §mechanism, "RL finetunes small subnetworks", arXiv 2505.11711): given a start
checkpoint A, the same model after a training stage B (e.g. after RL) and a target C of the same architecture,
write the checkpoint

    D = C + s·(B − A)        tensor by tensor, elementwise in float64, stored in C's dtype

so that evaluating D asks whether the change a stage learned from one start carries over to another (RL's change
learned from SFT(think) applied to the base, and the base's RL change applied to SFT(think)). An entry where
s·(B − A) is exactly 0 keeps C's bits, so ``--scale 0`` reproduces C bit for bit (a −0.0 included); tensors that
are not floating point are C's. Rounding to C's dtype can swallow small updates (a bf16 target keeps about three
significant digits), so the result gives the intended change ‖s·(B − A)‖ next to the realised ‖D − C‖.

Streaming: every tensor is read in row slices of about ``chunk_elements`` elements from A, B and C at once
(:func:`midtrain.analysis.diff.read_rows`) and each slice of D is written as soon as it is computed
(:mod:`midtrain.analysis.tensorfile`), one output shard per shard of C under the same file name (C's
``model.safetensors.index.json`` is copied when it has one): peak memory is a few slices, whatever the model size.
Tensor names and shapes must match, else a one-line error names the first mismatching tensor (a tied
``lm_head.weight`` absent from A or B is read from its ``embed_tokens.weight``, as ``analyze weights`` does); a target
that ties its output head to its input embedding while A or B store the head apart is refused (D could not hold
a separate change of the head).

C must be a checkpoint directory: its config, generation config, tokenizer files and chat template are copied, so
the output directory is a checkpoint every stage loads (``midtrain eval --model OUT``). ``transplant.json`` holds,
in total, per layer, per module type and per tensor: ``parameters``, ``delta_norm`` = ‖s·(B − A)‖_F,
``target_norm`` = ‖C‖_F, ``realized_norm`` = ‖D − C‖_F, ``realized_share`` = realised / intended norm,
``changed`` and ``fraction_changed`` (entries of D that differ from C), ``rel_frob`` = ‖D − C‖_F / ‖C‖_F.

    midtrain analyze transplant --start sft_think/ --tuned rl_c/ --target base/ --out runs/base+rl_c
    midtrain analyze transplant --start base/ --tuned rl_a/ --target sft_think/ --scale 0.5 --out runs/half
"""

from __future__ import annotations

import math
import shutil
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from midtrain.analysis.diff import INDEX, ChangeStats, Checkpoint, align, group, open_checkpoint, read_rows, row_slices
from midtrain.analysis.results import AnalysisResult
from midtrain.analysis.tensorfile import DTYPES, TensorSpec, layout, write_safetensors
from midtrain.config import Config, param
from midtrain.console import fmt_num, log, progress, torch_threads
from midtrain.errors import ConfigError, DataError
from midtrain.fileio import atomic_write_json, read_json
from midtrain.runs import open_run

TRANSPLANT_JSON = "transplant.json"
# What makes a directory a loadable checkpoint besides its weights: copied from the target C.
CHECKPOINT_FILES = (
    "config.json",
    "generation_config.json",
    "tokenizer.json",
    "tokenizer_config.json",
    "special_tokens_map.json",
    "added_tokens.json",
    "vocab.json",
    "vocab.txt",
    "merges.txt",
    "tokenizer.model",
    "chat_template.jinja",
    "chat_template.json",
)


@dataclass
class TransplantConfig(Config):
    start: str = param("", "A: the checkpoint the update started from (a dir or a .safetensors file).")
    tuned: str = param("", "B: A after the update (e.g. after RL); the change moved is B − A.")
    target: str = param("", "C: the checkpoint dir that receives the change (its config and tokenizer files are copied).", path="dir")
    scale: float = param(1.0, "s in D = C + s·(B − A): 1 moves the whole change, 0 reproduces C bit for bit, −1 removes it.")
    chunk_elements: int = param(1 << 20, "Elements per slice read from each checkpoint (bounds peak memory).", ge=1)
    threads: int = param(1, "CPU threads for the elementwise math (0 = torch default).", ge=0)
    out: str = param("", "Output checkpoint directory D (a run directory with transplant.json).", path="dir")
    overwrite: bool = param(False, "Replace an existing output directory holding a different run.")

    def check(self) -> None:
        for key, what in (("start", "A, the start"), ("tuned", "B, the tuned"), ("target", "C, the target")):
            if not getattr(self, key):
                raise ConfigError(f"key '{key}': give {what} checkpoint")
        if not self.out:
            raise ConfigError("key 'out': give the output checkpoint directory")
        if not math.isfinite(self.scale):
            raise ConfigError(f"key 'scale': must be finite, got {self.scale}")
        out = Path(self.out).resolve()
        for key in ("start", "tuned", "target"):
            path = Path(getattr(self, key)).resolve()
            if out == path or out in path.parents:  # --overwrite would clear it
                raise ConfigError(f"key 'out': {self.out} holds the {key} checkpoint; write D elsewhere")


@dataclass
class TransplantStats(ChangeStats):
    """One tensor (or group): ``changed``/``delta_sq`` are D against C (realised), ``base_sq`` = ‖C‖²."""

    intended_sq: float = 0.0  # ‖s·(B − A)‖²

    def summary(self) -> dict[str, Any]:
        intended, realized = math.sqrt(self.intended_sq), math.sqrt(self.delta_sq)
        return {
            **super().summary(),
            "delta_norm": intended,
            "target_norm": math.sqrt(self.base_sq),
            "realized_norm": realized,
            "realized_share": realized / intended if intended else None,
        }


@dataclass
class TransplantResult(AnalysisResult):
    def summary(self) -> str:
        d = self.data
        lines = [
            f"analyze transplant: D = C + {d['scale']:g}·(B − A), {d['parameters'] / 1e6:.2f}M parameters in {d['tensors']} "
            f"tensors, {d['seconds']:.1f}s" + (f" → {self.out}" if self.out else ""),
            f"  A {d['start']}\n  B {d['tuned']}\n  C {d['target']}",
            f"  ‖s·(B − A)‖ {fmt_num(d['delta_norm'], '.4e')}  ‖C‖ {fmt_num(d['target_norm'], '.4e')}  realised ‖D − C‖ "
            f"{fmt_num(d['realized_norm'], '.4e')} ({fmt_num(d['realized_share'], '.3f')} of it)  entries changed "
            f"{fmt_num(d['fraction_changed'])}",
            f"  {'module type':<12} {'parameters':>14} {'‖s·ΔW‖':>11} {'‖D − C‖/‖C‖':>12} {'changed':>9}",
        ]
        for k, v in d["per_module_type"].items():
            lines.append(
                f"  {k:<12} {v['parameters']:>14,} {fmt_num(v['delta_norm'], '.3e'):>11} {fmt_num(v['rel_frob'], '.3e'):>12} "
                f"{fmt_num(v['fraction_changed']):>9}"
            )
        return "\n".join(lines)


# -- the math ----------------------------------------------------------------------------------------------------
def transplant_rows(a: torch.Tensor, b: torch.Tensor, c: torch.Tensor, scale: float) -> tuple[torch.Tensor, TransplantStats]:
    """(D's rows, their statistics) for the same rows of one tensor in A, B and C; D has C's dtype.

    D = C + s·(B − A) in float64, rounded once to C's dtype; where s·(B − A) is exactly 0, D holds C's bits.
    """
    if not c.is_floating_point():
        return c, TransplantStats(parameters=c.numel())
    c64 = c.to(torch.float64)  # [rows, ...]
    delta = (b.to(torch.float64) - a.to(torch.float64)) * scale if scale else torch.zeros_like(c64)  # [rows, ...]
    d = torch.where(delta == 0, c, (c64 + delta).to(c.dtype))  # [rows, ...] C's dtype
    realized = d.to(torch.float64) - c64
    stats = TransplantStats(
        parameters=c.numel(),
        changed=int((d != c).sum()),
        delta_sq=_sq(realized),
        base_sq=_sq(c64),
        intended_sq=_sq(delta),
    )
    return d, stats


def _sq(x: torch.Tensor) -> float:
    x = x.reshape(-1)
    return float(torch.dot(x, x))


# -- checkpoints -------------------------------------------------------------------------------------------------
Opened = tuple[list[Checkpoint], list[tuple[str, list[str]]]]  # [A, B, C] and align()'s plan


def open_inputs(cfg: TransplantConfig) -> Opened:
    """A, B and C indexed and aligned: every input error surfaces here, before any output exists."""
    target = Path(cfg.target)
    if not target.is_dir():
        raise DataError(f"target '{cfg.target}': not a checkpoint directory (D copies its config and tokenizer)")
    if not (target / "config.json").is_file():
        raise DataError(f"target '{cfg.target}': no config.json (not a checkpoint directory)")
    ckpts = [open_checkpoint(p) for p in (cfg.start, cfg.tuned, cfg.target)]
    plan = align(ckpts)
    c = ckpts[2]
    for name, keys in plan:
        if keys[2] != name:
            raise DataError(
                f"tensor '{name}': the target {c.path} ties it to '{keys[2]}' but the start or tuned checkpoint stores it "
                "apart; D cannot hold a separate change of it (transplant into an untied target)"
            )
        if c.dtypes[name] not in DTYPES:
            raise DataError(f"tensor '{name}': dtype {c.dtypes[name]} in {c.path} is not supported")
    return ckpts, plan


def shards_of(c: Checkpoint, plan: list[tuple[str, list[str]]]) -> dict[str, list[tuple[str, list[str]]]]:
    """C's shard file names, each with the plan rows of the tensors it holds (in plan order)."""
    out: dict[str, list[tuple[str, list[str]]]] = {}
    for name, keys in plan:
        out.setdefault(c.files[keys[2]].name, []).append((name, keys))
    return out


def copy_checkpoint_files(target: Path, out: Path) -> list[str]:
    """C's config, tokenizer and (when sharded) index files into D; the names copied."""
    copied = []
    for name in (*CHECKPOINT_FILES, INDEX):
        if (target / name).is_file():
            shutil.copyfile(target / name, out / name)
            copied.append(name)
    return copied


def write_transplant(cfg: TransplantConfig, opened: Opened, out: Path) -> dict[str, Any]:
    """Write D's weights into ``out`` shard by shard and return transplant.json's content (module docstring)."""
    ckpts, plan = opened
    c = ckpts[2]
    stats: dict[str, TransplantStats] = {}
    total = sum(math.prod(c.shapes[name]) for name, _ in plan)
    t0 = time.time()
    with progress() as bar, torch_threads(cfg.threads):
        task = bar.add_task("analyze transplant", total=total, info=f"{len(plan)} tensors")
        for shard, rows in shards_of(c, plan).items():
            keys_of = dict(rows)
            specs = layout([TensorSpec(name, c.dtypes[name], c.shapes[name]) for name, _ in rows])
            with write_safetensors(out / shard, specs, {"format": "pt"}) as writer:
                for spec in specs:
                    s = TransplantStats()
                    for start, stop in row_slices(spec.shape, cfg.chunk_elements) if math.prod(spec.shape) else ():
                        a, b, cc = (read_rows(ck, key, start, stop) for ck, key in zip(ckpts, keys_of[spec.name]))
                        d, part = transplant_rows(a, b, cc, cfg.scale)
                        writer.write(spec.name, d)
                        s += part
                        bar.advance(task, d.numel())
                    stats[spec.name] = s
    tensors = [(name, c.shapes[name]) for name, _ in plan]
    per_tensor: list[ChangeStats] = [stats[name] for name, _ in plan]
    data: dict[str, Any] = {
        "start": cfg.start,
        "tuned": cfg.tuned,
        "target": cfg.target,
        "scale": cfg.scale,
        "tensors": len(plan),
        **group(tensors, per_tensor),
        "seconds": round(time.time() - t0, 3),
    }
    return data


def transplant(cfg: TransplantConfig) -> TransplantResult:
    """``midtrain analyze transplant``: D = C + s·(B − A), streamed, into a checkpoint directory (module docstring)."""
    opened = open_inputs(cfg)  # bad input fails before the run dir exists
    inputs = {"start": cfg.start, "tuned": cfg.tuned, "target": cfg.target}
    with open_run(cfg.out, "analyze_transplant", cfg, inputs, overwrite=cfg.overwrite) as run:
        if run.cached:
            return TransplantResult(read_json(run.path / TRANSPLANT_JSON), str(run.path), cached=True)
        data = write_transplant(cfg, opened, run.path)
        data["copied"] = copy_checkpoint_files(Path(cfg.target), run.path)
        atomic_write_json(run.path / TRANSPLANT_JSON, data)
        run.finish({k: data[k] for k in ("scale", "parameters", "delta_norm", "realized_norm", "rel_frob", "fraction_changed")})
        log(
            f"analyze transplant: ‖s·(B − A)‖ {fmt_num(data['delta_norm'], '.3e')}, realised {fmt_num(data['realized_share'], '.3f')}, "
            f"{fmt_num(data['fraction_changed'])} of the entries changed → {run.path}"
        )
        return TransplantResult(data, str(run.path))


__all__ = [
    "CHECKPOINT_FILES",
    "TRANSPLANT_JSON",
    "TransplantConfig",
    "TransplantResult",
    "TransplantStats",
    "copy_checkpoint_files",
    "open_inputs",
    "shards_of",
    "transplant",
    "transplant_rows",
    "write_transplant",
]
