"""The training engine shared by ``pretrain``, ``sft`` and ``rl``: everything around a transformers/TRL trainer.

The trainers themselves (``transformers.Trainer``, TRL's ``GRPOTrainer``) run the loop: forward, backward,
accumulation, clipping, AdamW, schedule, checkpoint save and restore, DDP/FSDP/DeepSpeed through accelerate.
This module is the part both stages need around them, once (in the spirit of OLMo-core's Trainer / TrainModule /
Callback split, but small):

1. **Optimizer config** (:class:`OptimConfig`): one AdamW + schedule section ``optim`` for every stage, validated,
   mapped to the trainers' arguments by :func:`trainer_kwargs`.
2. **Run directory**: rank 0 opens it (:func:`midtrain.runs.open_run`: fresh, cache hit, resume or refusal) and
   holds its lock for the whole run, so a second training process on the same ``--out`` fails at once; every other
   rank follows it read-only and takes no lock (:func:`open_training_run`).
3. **Resume**: the newest *complete* ``checkpoints/checkpoint-N`` (a checkpoint is complete once a stage-chosen
   marker file exists in it; incomplete ones, e.g. killed mid-save, are removed; a checkpoint of another
   architecture is a :class:`RunDirError` naming ``--overwrite``), and every JSONL log of the run cut back to that
   step so that no step is logged twice (:func:`start`).
4. **Precision** (:func:`resolve_precision`): ``auto`` = bf16 autocast on a CUDA GPU that has it, fp32 elsewhere.
5. **Step logging** (:class:`StepLogCallback`): ``log.jsonl`` on rank 0, the last step always logged, one progress
   line per logged step, rates over the last logging window; it also marks checkpoints (``run.keep()`` once
   resumable state exists). Stages subclass it for what a record holds. Periodic probes (e.g. the synthetic
   world's skill diagnostics) come in as :class:`Periodic` callbacks with their own JSONL log. The record is the
   one source of the trackers' scalars too: it replaces the trainer's ``logs`` in place (:func:`publish`) before
   the trackers' callbacks see them (``report_to``, :mod:`midtrain.train.trackers`).
6. **MFU**: achieved FLOP/s ÷ the device's dense peak for its precision, from a table of known accelerators or,
   failing that, a large-matmul measurement; capped at 100% by construction (:func:`mfu`, :class:`MFUMeter`).
7. **Final save** (:func:`save_final`): model + tokenizer at the run root, so the run directory is itself a
   Hugging Face checkpoint; safetensors files get ordinary permissions (safetensors itself writes them 0600).
8. **The loss of the run** (:func:`train`, :func:`run_mean_loss`): transformers' ``training_loss`` averages only
   the steps of the current process, so a resumed run's is replaced by the mean over the whole ``log.jsonl``.
"""

from __future__ import annotations

import functools
import json
import math
import os
import re
import shutil
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar, Literal

from transformers import TrainerCallback

from midtrain.config import Config, param
from midtrain.console import log
from midtrain.errors import ConfigError, RunDirError
from midtrain.runs import (
    MARKER,
    META,
    Run,
    atomic_write_text,
    content_hash,
    open_run,
    ordinary_permissions,
    read_json,
    read_meta,
    resolve_key,
)

Precision = Literal["auto", "fp32", "bf16"]
LOG = "log.jsonl"
CKPT_DIR = "checkpoints"


# -- optimizer --------------------------------------------------------------------------------------------------
@dataclass
class OptimConfig(Config):
    """AdamW and its schedule; the ``optim`` section of every training stage (key names in errors say so)."""

    lr: float = param(1e-3, "Peak learning rate.")
    min_lr_ratio: float = param(0.1, "Final learning rate of the cosine schedule as a fraction of the peak.")
    schedule: Literal["cosine", "linear", "constant"] = param("cosine", "Decay after warm-up (linear decays to 0).")
    warmup_steps: int = param(20, "Linear warm-up steps.")
    weight_decay: float = param(0.1, "AdamW weight decay.")
    beta1: float = param(0.9, "AdamW beta1.")
    beta2: float = param(0.95, "AdamW beta2.")
    max_grad_norm: float = param(1.0, "Gradient clipping norm (0 disables).")
    grad_accum_steps: int = param(1, "Micro-batches accumulated per optimizer step.")

    def check(self) -> None:
        def bad(key: str, rule: str) -> ConfigError:
            return ConfigError(f"key 'optim.{key}': must be {rule}, got {getattr(self, key)!r}")

        if not (math.isfinite(self.lr) and self.lr > 0):
            raise bad("lr", "finite and > 0")
        if not 0.0 <= self.min_lr_ratio <= 1.0:
            raise bad("min_lr_ratio", "in [0, 1]")
        if self.warmup_steps < 0:
            raise bad("warmup_steps", ">= 0")
        if not (math.isfinite(self.weight_decay) and self.weight_decay >= 0):
            raise bad("weight_decay", "finite and >= 0")
        for key in ("beta1", "beta2"):
            if not 0.0 <= getattr(self, key) < 1.0:
                raise bad(key, "in [0, 1)")
        if not (math.isfinite(self.max_grad_norm) and self.max_grad_norm >= 0):
            raise bad("max_grad_norm", "finite and >= 0 (0 disables clipping)")
        if self.grad_accum_steps < 1:
            raise bad("grad_accum_steps", ">= 1")


# Our schedule names → transformers' (``constant_with_warmup`` honours warm-up; plain ``constant`` ignores it).
SCHEDULERS = {"cosine": "cosine_with_min_lr", "linear": "linear", "constant": "constant_with_warmup"}


def optimizer_kwargs(optim: OptimConfig, max_steps: int) -> dict[str, Any]:
    """``TrainingArguments``/``GRPOConfig`` keyword arguments of ``optim`` for a run of ``max_steps`` steps."""
    return dict(
        learning_rate=optim.lr,
        lr_scheduler_type=SCHEDULERS[optim.schedule],
        lr_scheduler_kwargs={"min_lr_rate": optim.min_lr_ratio} if optim.schedule == "cosine" else {},
        warmup_steps=min(optim.warmup_steps, max_steps),
        weight_decay=optim.weight_decay,
        adam_beta1=optim.beta1,
        adam_beta2=optim.beta2,
        # "0 disables" is a huge norm rather than transformers' 0, which would also stop measuring the norm we log
        max_grad_norm=optim.max_grad_norm or 1e9,
        gradient_accumulation_steps=optim.grad_accum_steps,
    )


def trainer_kwargs(
    optim: OptimConfig,
    *,
    max_steps: int,
    precision: str,
    seed: int,
    log_every_steps: int,
    gradient_checkpointing: bool,
    report_to: Sequence[str] = (),
    run_name: str | None = None,
) -> dict[str, Any]:
    """The arguments every stage gives its trainer: optimizer, precision, seeds, logging, our own progress output,
    and the trackers of ``report_to`` ('none' dropped; :mod:`midtrain.train.trackers` connects them)."""
    import torch

    return dict(
        **optimizer_kwargs(optim, max_steps),
        max_steps=max_steps,
        bf16=precision == "bf16",
        use_cpu=not torch.cuda.is_available(),  # TRL/transformers default to bf16 on, which raises on CPU
        activation_checkpointing=gradient_checkpointing,
        ddp_find_unused_parameters=False,  # every parameter of a causal LM gets a gradient
        seed=seed,
        data_seed=seed,
        logging_strategy="steps",
        logging_steps=log_every_steps,
        report_to=list(dict.fromkeys(t for t in report_to if t != "none")),
        run_name=run_name,
        project="midtrain",  # trackio's project (wandb reads WANDB_PROJECT)
        disable_tqdm=True,  # StepLogCallback prints one line per logged step
        remove_unused_columns=False,
        dataloader_num_workers=0,
    )


def resolve_precision(precision: Precision) -> str:
    """'bf16' or 'fp32' for this machine: auto = bf16 on a CUDA GPU that supports it, else fp32.

    On CPUs bf16 autocast depends on the hardware: on this project's CI machine (Xeon, avx512_bf16, no AMX) it
    is slower than fp32 for our model sizes (bench/RESULTS.md), so CPU runs default to fp32; ask for bf16
    explicitly on a CPU with AMX.
    """
    if precision != "auto":
        return precision
    import torch

    return "bf16" if torch.cuda.is_available() and torch.cuda.is_bf16_supported() else "fp32"


# -- processes and the run directory ----------------------------------------------------------------------------
def world_size() -> int:
    return int(os.environ.get("WORLD_SIZE", "1"))


def is_main() -> bool:
    """Rank 0 (or no launcher): the one process that owns the run directory's files."""
    return int(os.environ.get("RANK", "0")) == 0


@contextmanager
def follow_run(out: str | Path, stage: str, cfg: Config, inputs: dict[str, Any]) -> Iterator[Run]:
    """A non-zero rank's view of the run that rank 0 opens: cached if finished, resumed if started; never writes
    metadata (the key is computed the same way, so every rank agrees on what to do)."""
    key = resolve_key(out, stage, cfg, {k: content_hash(v) for k, v in inputs.items()})
    path = Path(out)
    done = (path / MARKER).is_file() and (path / MARKER).read_text().strip() == key
    started = (path / META).is_file() and read_meta(path / META).get("run_key") == key
    path.mkdir(parents=True, exist_ok=True)
    yield Run(path, stage, key, {"metrics": {}}, cached=done, resumed=started and not done)


def open_training_run(out: str | Path, stage: str, cfg: Config, inputs: dict[str, Any], *, overwrite: bool, seed: int) -> Any:
    """The run directory as a context manager: rank 0 opens it (and holds its lock), the other ranks follow it."""
    if is_main():
        return open_run(out, stage, cfg, inputs, overwrite=overwrite, seed=seed)
    return follow_run(out, stage, cfg, inputs)


# -- resume -----------------------------------------------------------------------------------------------------
def checkpoint_step(path: Path) -> int | None:
    """N of ``checkpoint-N``, or None for any other name."""
    tail = path.name.rsplit("-", 1)[-1]
    return int(tail) if path.name.startswith("checkpoint-") and tail.isdigit() else None


ARCH_KEYS = ("model_type", "hidden_size", "num_hidden_layers", "vocab_size")


def resume_point(ckpt_dir: Path, marker: str, model_conf: Any = None, *, remove_incomplete: bool = True) -> Path | None:
    """The newest complete checkpoint under ``ckpt_dir`` (holding ``marker``); newer incomplete ones are removed.

    A checkpoint whose ``config.json`` disagrees with ``model_conf`` on the architecture is a RunDirError: the
    trainer would fail later with a shape error, or worse, load it.
    """
    if not ckpt_dir.is_dir():
        return None
    steps = {p: n for p in ckpt_dir.iterdir() if p.is_dir() and (n := checkpoint_step(p)) is not None}
    ckpts = sorted(steps, key=steps.__getitem__)
    for p in reversed(ckpts):
        if (p / marker).is_file():
            conf = read_json(p / "config.json") if (p / "config.json").is_file() else {}
            conf = conf if isinstance(conf, dict) else {}
            for key in ARCH_KEYS:
                ours = getattr(model_conf, key, conf.get(key))
                if key in conf and conf[key] != ours:
                    raise RunDirError(f"{p} holds a checkpoint of another architecture ({key} {conf[key]} vs {ours}); use --overwrite")
            return p
        if remove_incomplete:
            shutil.rmtree(p, ignore_errors=True)
            log(f"[resume] removed incomplete checkpoint {p}")
    return None


def read_log(path: Path) -> list[dict[str, Any]]:
    """The records of a JSONL log; a torn last line (killed mid-write) is skipped."""
    if not path.is_file():
        return []
    out = []
    for line in path.read_text(encoding="utf-8").splitlines():
        try:
            rec = json.loads(line)
        except json.JSONDecodeError:
            continue
        if isinstance(rec, dict):
            out.append(rec)
    return out


def truncate_log(path: Path, step: int, *, write: bool = True) -> list[dict[str, Any]]:
    """The records of steps ≤ ``step`` (the checkpoint we resume from); ``write`` cuts the file back to them."""
    keep = [r for r in read_log(path) if r.get("step", 0) <= step]
    if write and path.is_file():
        atomic_write_text(path, "".join(json.dumps(r) + "\n" for r in keep))
    return keep


def append_log(path: Path, rec: dict[str, Any]) -> None:
    with open(path, "a", encoding="utf-8") as f:
        f.write(json.dumps(rec) + "\n")


def start(run: Run, marker: str, model_conf: Any, logs: Iterable[str] = (LOG,)) -> tuple[Path | None, list[dict[str, Any]]]:
    """Where this run starts: (checkpoint to resume from or None, ``log.jsonl`` records kept from before).

    Every JSONL log in ``logs`` is cut back to the checkpoint's step (rank 0 only); a run that starts from step 0
    drops what an earlier, checkpoint-less attempt logged.
    """
    ckpt = resume_point(run.path / CKPT_DIR, marker, model_conf, remove_incomplete=is_main()) if run.resumed else None
    step = 0
    if ckpt is not None:
        ckpt_step = checkpoint_step(ckpt)
        assert ckpt_step is not None  # resume_point returns checkpoint-N directories only
        step = ckpt_step
    kept = {name: truncate_log(run.path / name, step, write=is_main()) for name in logs}
    if ckpt is not None:
        log(f"[resume] {run.stage}: continuing from {ckpt.name}")
    return ckpt, kept.get(LOG, [])


# -- MFU --------------------------------------------------------------------------------------------------------
# Dense (no structured sparsity) tensor-core peaks in FLOP/s from the vendors' datasheets: (name pattern, bf16,
# tf32). NVIDIA prints the sparse figure with an asterisk; dense is half of it. First match wins, so the more
# specific names come first. fp32 training is compared with the TF32 peak, the fastest fp32-input math of the chip.
DEVICE_PEAKS: tuple[tuple[str, float, float], ...] = (
    (r"H200 NVL", 835.5e12, 417.5e12),  # H200 NVL: BF16 1,671 / TF32 835 TFLOPS with sparsity
    (r"H100 NVL", 835.5e12, 417.5e12),  # H100 NVL: BF16 1,671 / TF32 835 with sparsity
    (r"H100 PCIe", 756.5e12, 378.0e12),  # H100 PCIe: BF16 1,513 / TF32 756 with sparsity
    (r"H200", 989.4e12, 494.7e12),  # H200 SXM (also GH200): BF16 1,979 / TF32 989 with sparsity
    (r"H100", 989.4e12, 494.7e12),  # H100 SXM ("H100 80GB HBM3"): BF16 1,979 / TF32 989 with sparsity
    (r"A100", 312e12, 156e12),  # A100 SXM and PCIe: BF16 312 / TF32 156 dense
    (r"\bL4\b", 121e12, 60e12),  # L4: BF16 242 / TF32 120 with sparsity (\b: not L40)
    (r"\bA10\b", 125e12, 62.5e12),  # A10: BF16 125 / TF32 62.5 dense (A10G differs; it is measured)
    (r"RTX 4090", 165.2e12, 82.6e12),  # Ada whitepaper: BF16 with FP32 accumulate 165.2 / TF32 82.6 dense
)


def table_peak(device_name: str, precision: str) -> float | None:
    """The dense peak FLOP/s of a known accelerator (by ``torch.cuda.get_device_name()``), or None."""
    for pattern, bf16, tf32 in DEVICE_PEAKS:
        if re.search(pattern, device_name):
            return bf16 if precision == "bf16" else tf32
    return None


def measure_peak(precision: str, device: str, *, size: int | None = None, iters: int = 5) -> float:
    """Best-of-``iters`` FLOP/s of one large square matmul (GPU 8192², CPU 2048²) after a warm-up.

    Large, because small matmuls leave a GPU mostly idle and a measured "peak" far below the chip's (an H200 once
    showed 100.5% MFU against a 1024² measurement).
    """
    import torch

    n = size or (8192 if device == "cuda" else 2048)
    dtype = torch.bfloat16 if precision == "bf16" else torch.float32
    a = torch.randn(n, n, dtype=dtype, device=device)  # [n, n]
    b = torch.randn(n, n, dtype=dtype, device=device)  # [n, n]
    sync = torch.cuda.synchronize if device == "cuda" else (lambda: None)
    best = math.inf
    for i in range(iters + 1):
        sync()
        t0 = time.perf_counter()
        a @ b
        sync()
        if i:  # the first is the warm-up
            best = min(best, time.perf_counter() - t0)
    return 2 * n**3 / best


@functools.cache
def peak_flops(precision: str) -> float:
    """This device's dense peak FLOP/s for ``precision``: the table for known GPUs, else measured once."""
    import torch

    if torch.cuda.is_available():
        known = table_peak(torch.cuda.get_device_name(), precision)
        return known if known is not None else measure_peak(precision, "cuda")
    return measure_peak(precision, "cpu")


def rate(count: float, seconds: float) -> float:
    """``count`` per second (0 for an empty window)."""
    return count / seconds if seconds > 0 else 0.0


def mfu(achieved_flops_s: float, peak_flops_s: float) -> float:
    """Model FLOPs utilisation in [0, 1]: achieved ÷ max(peak, achieved), so a peak that is too low (measured, or
    an unknown chip) caps the readout at 100% instead of printing more."""
    if achieved_flops_s <= 0:
        return 0.0
    return achieved_flops_s / max(peak_flops_s, achieved_flops_s)


class MFUMeter:
    """MFU of a run's token rate; when the achieved rate beats the peak it says so once and uses it as the peak."""

    def __init__(self, flops_per_token: float, peak_flops_s: float) -> None:
        self.flops_per_token, self.peak = flops_per_token, peak_flops_s

    def __call__(self, tokens_per_second: float) -> float:
        achieved = tokens_per_second * self.flops_per_token
        if achieved > self.peak:
            if is_main():
                log(
                    f"MFU: achieved {achieved / 1e12:.3g} TFLOP/s exceeds the peak used ({self.peak / 1e12:.3g}); "
                    "MFU is now relative to the achieved rate"
                )
            self.peak = achieved
        return mfu(achieved, self.peak)


# -- callbacks --------------------------------------------------------------------------------------------------
def _sync_device() -> None:
    """Wait for queued GPU work, so that a timestamp means the work before it is done."""
    import torch

    if torch.cuda.is_available() and torch.cuda.is_initialized():
        torch.cuda.synchronize()


@dataclass(frozen=True)
class Window:
    """The steps and seconds since the previous logged step (or since training began in this process)."""

    steps: int
    seconds: float


class StepLogCallback(TrainerCallback):
    """``log.jsonl`` and one progress line per logged step; the last step is always logged; marks checkpoints.

    Subclasses define :meth:`record` (the JSON record of a logged step, or None to skip it) and :meth:`line` (its
    progress line), and may extend :meth:`mark_checkpoint`. Rates use the logging window, not the whole run.
    ``history`` holds every record of the run (rank 0 writes them; every rank keeps them). ``REPLACES``: the
    trainer's log keys that the record renames (dropped from ``logs`` by :func:`publish`).
    """

    REPLACES: ClassVar[tuple[str, ...]] = ("learning_rate",)  # → lr

    def __init__(self, run: Run, max_steps: int, history: list[dict[str, Any]] | None = None) -> None:
        self.run, self.path, self.max_steps = run, run.path / LOG, max_steps
        self.history: list[dict[str, Any]] = list(history or [])
        self.t_begin, self.step0 = time.perf_counter(), 0  # when and at which step this process began training
        self.mark = (0, self.t_begin)  # (step, time) that the current window starts from
        self.first: tuple[int, float] | None = None  # (step, time) at the end of this process's first step
        self.last_logged: tuple[int, float] | None = None

    def on_train_begin(self, args, state, control, **kw):
        self.t_begin, self.step0 = time.perf_counter(), state.global_step
        self.mark = (self.step0, self.t_begin)

    def on_step_end(self, args, state, control, **kw):
        if self.first is None:
            _sync_device()
            self.first = (state.global_step, time.perf_counter())
        if state.global_step >= self.max_steps:
            control.should_log = True  # the last step is always logged, even when max_steps < log_every_steps

    def on_log(self, args, state, control, logs=None, **kw):
        if not logs or "loss" not in logs or "train_runtime" in logs:
            return
        now = time.perf_counter()  # after the trainer synchronised to read the loss
        window = Window(state.global_step - self.mark[0], now - self.mark[1])
        self.mark = self.last_logged = (state.global_step, now)
        rec = self.record(state, logs, window)
        if rec is None:
            return
        publish(logs, rec, self.REPLACES)
        self.history.append(rec)
        if state.is_world_process_zero:
            append_log(self.path, rec)
            log(self.line(rec, window))

    def on_save(self, args, state, control, **kw):
        ckpt = Path(args.output_dir) / f"checkpoint-{state.global_step}"
        if ckpt.is_dir() and state.is_world_process_zero:
            ordinary_permissions(ckpt)
            self.mark_checkpoint(ckpt, state)
            self.run.keep()  # the directory now holds resumable state: keep it even if the run fails later

    def mark_checkpoint(self, ckpt: Path, state: Any) -> None:
        """Write what makes ``ckpt`` complete for this stage (transformers' own trainer_state.json by default)."""

    def record(self, state: Any, logs: dict[str, Any], window: Window) -> dict[str, Any] | None:
        raise NotImplementedError

    def line(self, rec: dict[str, Any], window: Window) -> str:
        raise NotImplementedError

    def seconds_per_step(self, window: Window) -> float:
        return window.seconds / max(window.steps, 1)

    def steps_per_second(self) -> float:
        """Whole-run average of this process excluding its first step (lazy initialisation, allocator and kernel
        warm-up make it unrepresentative); a run of one step has nothing else, so it is that step's rate."""
        if self.last_logged is None:
            return 0.0
        if self.first is not None and self.last_logged[0] > self.first[0]:
            return rate(self.last_logged[0] - self.first[0], self.last_logged[1] - self.first[1])
        return rate(self.last_logged[0] - self.step0, self.last_logged[1] - self.t_begin)


def publish(logs: dict[str, Any], rec: dict[str, Any], replaces: Iterable[str] = ()) -> None:
    """Put the numbers of a ``log.jsonl`` record into the trainer's ``logs`` dict, in place, under their log.jsonl
    names (``step`` is the x-axis, not a value). Every callback's ``on_log`` receives this same dict, so the
    tracker callbacks that run after ours log exactly what log.jsonl holds; the trainer's keys in ``replaces``
    (which the record renames, e.g. ``learning_rate`` → ``lr``) are dropped so that each quantity has one series."""
    for key in replaces:
        logs.pop(key, None)
    logs.update({k: v for k, v in rec.items() if k != "step" and isinstance(v, (int, float)) and not isinstance(v, bool)})


@dataclass(frozen=True)
class Periodic:
    """A probe run every ``every_steps`` optimizer steps on rank 0: ``fn(model, tokenizer, step)`` → a record
    appended, after its step, to the run's JSONL ``log_name`` (cut back on resume like ``log.jsonl``)."""

    every_steps: int
    log_name: str
    fn: Callable[[Any, Any, int], dict[str, Any]]


class PeriodicCallback(TrainerCallback):
    """The trainer callback of a :class:`Periodic` probe."""

    def __init__(self, probe: Periodic, run_path: Path) -> None:
        self.probe, self.path = probe, run_path / probe.log_name

    def on_step_end(self, args, state, control, model=None, processing_class=None, **kw):
        if state.global_step % self.probe.every_steps or not state.is_world_process_zero:
            return
        append_log(self.path, {"step": state.global_step, **self.probe.fn(model, processing_class, state.global_step)})


# -- the end ----------------------------------------------------------------------------------------------------
def save_final(trainer: Any, tokenizer: Any, path: Path) -> None:
    """Model + tokenizer at the run root. Every rank calls it: under FSDP/DeepSpeed gathering the full state dict
    is collective; only rank 0 writes."""
    trainer.accelerator.unwrap_model(trainer.model).config.use_cache = True  # the checkpoint generates with a cache
    trainer.save_model(str(path))
    if is_main():
        ordinary_permissions(path)
        tokenizer.save_pretrained(str(path))


def run_mean_loss(history: Iterable[dict[str, Any]], resumed_at: int = 0) -> float | None:
    """Mean training loss over the logged steps of the whole run: each record's ``loss`` (the mean of its logging
    window) weighted by the steps it covers; a window never reaches back past ``resumed_at`` (the checkpoint a
    resumed process started from: the steps logged after it before a kill were cut from the log)."""
    total = steps = 0.0
    prev = 0
    for rec in history:
        step, loss = rec.get("step"), rec.get("loss")
        if not isinstance(step, int) or not isinstance(loss, (int, float)):
            continue
        if prev < resumed_at < step:
            prev = resumed_at
        if step > prev:
            total, steps = total + (step - prev) * loss, steps + step - prev
        prev = max(prev, step)
    return total / steps if steps else None


def train(trainer: Any, resume: Path | None) -> Any:
    """``trainer.train``, resuming from ``resume`` when given.

    The returned ``TrainOutput``'s ``training_loss`` is the whole run's (:func:`run_mean_loss` over the
    :class:`StepLogCallback`'s history, i.e. ``log.jsonl``): transformers' covers only this process's steps.
    """
    import warnings

    with warnings.catch_warnings():  # TRL 1.16 still calls the renamed `is_gradient_checkpointing`
        warnings.filterwarnings("ignore", message="`is_gradient_checkpointing` is deprecated", category=FutureWarning)
        out = trainer.train(resume_from_checkpoint=str(resume) if resume is not None else None)
    loggers = [c for c in trainer.callback_handler.callbacks if isinstance(c, StepLogCallback)]
    loss = run_mean_loss(loggers[0].history, (checkpoint_step(resume) or 0) if resume is not None else 0) if loggers else None
    return out._replace(training_loss=loss) if loss is not None and hasattr(out, "_replace") else out


__all__ = [
    "CKPT_DIR",
    "DEVICE_PEAKS",
    "LOG",
    "MFUMeter",
    "OptimConfig",
    "Periodic",
    "PeriodicCallback",
    "Precision",
    "StepLogCallback",
    "Window",
    "checkpoint_step",
    "follow_run",
    "is_main",
    "measure_peak",
    "mfu",
    "open_training_run",
    "optimizer_kwargs",
    "peak_flops",
    "publish",
    "rate",
    "read_log",
    "resolve_precision",
    "resume_point",
    "run_mean_loss",
    "save_final",
    "start",
    "table_peak",
    "train",
    "trainer_kwargs",
    "truncate_log",
    "world_size",
]
