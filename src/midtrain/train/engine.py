"""The training engine shared by ``pretrain``, ``sft`` and ``rl``: everything around a transformers/TRL trainer.

The trainers themselves (``transformers.Trainer``, TRL's ``GRPOTrainer``) run the loop: forward, backward,
accumulation, clipping, AdamW, schedule, checkpoint save and restore, DDP/FSDP/DeepSpeed through accelerate.
This module is the part every stage needs around them, once (in the spirit of OLMo-core's Trainer / TrainModule /
Callback split, but small). Its concerns:

1. **Optimizer config** (:class:`OptimConfig`): one AdamW + schedule section ``optim`` for every stage, validated,
   mapped to the trainers' arguments by :func:`trainer_kwargs`.
2. **Precision** (:func:`resolve_precision`): ``auto`` = bf16 autocast on a CUDA GPU that has it, fp32 elsewhere.
3. **Run directory**: rank 0 opens it (:func:`midtrain.runs.open_run`: fresh, cache hit, resume or refusal) and
   holds its lock for the whole run, so a second training process on the same ``--out`` fails at once; every other
   rank follows it read-only and takes no lock (:func:`open_training_run`; ranks: :mod:`midtrain.train.ranks`).
4. **Resume**: the newest *complete* ``checkpoints/checkpoint-N`` (a checkpoint is complete once a stage-chosen
   marker file exists in it and, when it is JSON, parses; incomplete ones, e.g. killed mid-save, are removed; a
   checkpoint of another architecture is a :class:`RunDirError` naming ``--overwrite``), and every JSONL log of the
   run cut back to that step so that no step is logged twice (:func:`start`).
5. **A full disk while training** (:func:`train`): the checkpoint being saved is removed and the error is one line
   naming it, so that nothing half-written is left that the next run could take for a checkpoint (torch's writer
   reports a short write as ``RuntimeError: … unexpected pos``, without the errno).
6. **Final save** (:func:`save_final`): model + tokenizer at the run root, so the run directory is itself a
   Hugging Face checkpoint; safetensors files get ordinary permissions (safetensors itself writes them 0600).
7. **The loss of the run** (:func:`train`): transformers' ``training_loss`` averages only the steps of the current
   process, so a resumed run's is replaced by the mean over the whole ``log.jsonl``
   (:func:`midtrain.train.steplog.run_mean_loss`).

In their own modules: the step log and its callbacks (:mod:`midtrain.train.steplog`), MFU and peak FLOP/s
(:mod:`midtrain.train.mfu`), when to save (:mod:`midtrain.train.checkpointing`).
"""

from __future__ import annotations

import errno
import json
import math
import shutil
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from midtrain.config import Config, param
from midtrain.console import log
from midtrain.errors import ConfigError, RunDirError
from midtrain.fileio import ordinary_permissions, read_json
from midtrain.runs import MARKER, META, Run, content_hash, open_run, read_meta, resolve_key
from midtrain.train.ranks import is_main
from midtrain.train.steplog import LOG, StepLogCallback, run_mean_loss, truncate_log

Precision = Literal["auto", "fp32", "bf16"]
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


# -- the run directory -----------------------------------------------------------------------------------------
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


def marker_intact(path: Path) -> bool:
    """Whether completion marker ``path`` exists and, if it is JSON, parses: transformers writes its marker
    (``trainer_state.json``) in place, so a kill or a full disk mid-write leaves a torn one behind."""
    if not path.is_file():
        return False
    if path.suffix != ".json":
        return True
    try:
        json.loads(path.read_bytes())
    except (ValueError, OSError):  # JSONDecodeError and UnicodeDecodeError are ValueErrors
        return False
    return True


def resume_point(ckpt_dir: Path, marker: str, model_conf: Any = None, *, remove_incomplete: bool = True) -> Path | None:
    """The newest complete checkpoint under ``ckpt_dir`` (holding an intact ``marker``); newer incomplete ones are
    removed.

    A checkpoint whose ``config.json`` disagrees with ``model_conf`` on the architecture is a RunDirError: the
    trainer would fail later with a shape error, or worse, load it.
    """
    if not ckpt_dir.is_dir():
        return None
    steps = {p: n for p in ckpt_dir.iterdir() if p.is_dir() and (n := checkpoint_step(p)) is not None}
    ckpts = sorted(steps, key=steps.__getitem__)
    for p in reversed(ckpts):
        if marker_intact(p / marker):
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


# -- the end ----------------------------------------------------------------------------------------------------
def save_final(trainer: Any, tokenizer: Any, path: Path) -> None:
    """Model + tokenizer at the run root. Every rank calls it: under FSDP/DeepSpeed gathering the full state dict
    is collective; only rank 0 writes."""
    trainer.accelerator.unwrap_model(trainer.model).config.use_cache = True  # the checkpoint generates with a cache
    trainer.save_model(str(path))
    if is_main():
        ordinary_permissions(path)
        tokenizer.save_pretrained(str(path))


# Torch's checkpoint writer reports a short write (a full disk, a quota) as a RuntimeError whose errno is lost;
# safetensors as a SafetensorError; these phrases are how the three libraries say it.
SHORT_WRITE = (
    "unexpected pos",
    "PytorchStreamWriter failed writing",
    "file write failed",
    "No space left on device",
    "Disk quota exceeded",
)
DISK_FULL = frozenset({errno.ENOSPC, errno.EDQUOT, errno.EFBIG})


def disk_full(e: BaseException) -> bool:
    """Whether ``e`` says that a file could not be written for lack of space."""
    if isinstance(e, OSError):
        return e.errno in DISK_FULL
    return any(phrase in str(e) for phrase in SHORT_WRITE)


def disk_full_error(e: BaseException, saving: Path, complete: Path | None) -> OSError:
    """The one-line error of a full disk during training (the CLI prints ``PATH: message``, exit 2).

    ``saving`` is the checkpoint directory of the current step. Unless it is ``complete`` (marked by the step log),
    the failure hit its save: it is removed, because it holds no usable state, it takes the space the next run
    needs, and a torn marker in it could pass for a complete checkpoint.
    """
    detail = (e.strerror if isinstance(e, OSError) else None) or (str(e).strip().splitlines() or [type(e).__name__])[-1]
    if saving.is_dir() and saving != complete:
        if is_main():  # the other ranks' parts of a sharded checkpoint live in the same directory
            shutil.rmtree(saving, ignore_errors=True)
        why = "saving this checkpoint failed, the disk is full"
        return OSError(errno.ENOSPC, f"{why} ({detail}); it was removed, the next run resumes from the last complete one", str(saving))
    where = e.filename if isinstance(e, OSError) and e.filename else saving.parent
    return OSError(errno.ENOSPC, f"writing failed while training, the disk is full ({detail})", str(where))


def train(trainer: Any, resume: Path | None) -> Any:
    """``trainer.train``, resuming from ``resume`` when given.

    The returned ``TrainOutput``'s ``training_loss`` is the whole run's (:func:`run_mean_loss` over the
    :class:`StepLogCallback`'s history, i.e. ``log.jsonl``): transformers' covers only this process's steps. A full
    disk is one line naming the path, and leaves no half-written checkpoint (:func:`disk_full_error`).
    """
    import warnings

    loggers = [c for c in trainer.callback_handler.callbacks if isinstance(c, StepLogCallback)]
    try:
        with warnings.catch_warnings():  # TRL 1.16 still calls the renamed `is_gradient_checkpointing`
            warnings.filterwarnings("ignore", message="`is_gradient_checkpointing` is deprecated", category=FutureWarning)
            out = trainer.train(resume_from_checkpoint=str(resume) if resume is not None else None)
    except Exception as e:
        if not disk_full(e):
            raise
        saving = Path(trainer.args.output_dir) / f"checkpoint-{trainer.state.global_step}"
        raise disk_full_error(e, saving, loggers[0].marked if loggers else None) from None
    loss = run_mean_loss(loggers[0].history, (checkpoint_step(resume) or 0) if resume is not None else 0) if loggers else None
    return out._replace(training_loss=loss) if loss is not None and hasattr(out, "_replace") else out
