"""The causal-LM training engine behind ``midtrain pretrain`` and ``midtrain sft``.

Algorithm: next-token cross-entropy on packed rows (``midtrain.train.data``: documents never attend to each
other), AdamW, linear warm-up then cosine/linear decay to ``min_lr_ratio × lr``, gradient clipping, gradient
accumulation with token-weighted loss (``num_items_in_batch``), optional bf16 autocast.

It runs on ``transformers.Trainer`` (the base of TRL's trainers), so accelerate launches it on DDP, FSDP or
DeepSpeed unchanged (``accelerate launch --config_file configs/accelerate/fsdp.yaml -m midtrain sft ...``), and
``resume_from_checkpoint`` restores model, optimizer, scheduler, RNG states and the data position. We do not
use TRL's ``SFTTrainer`` packing: its padding-free ``bfd`` mode flattens the batch into one ``[1, B·T]``
sequence (attention quadratic in B·T) and computes per-step entropy/accuracy metrics, ~2x slower on CPU for our
sizes (DESIGN §4, ``bench/bench_train.py``); our collator keeps ``[B, T]`` rows with per-document positions.

Run directory: ``checkpoints/checkpoint-N`` every ``save_every_steps`` (Trainer format, for resume),
``log.jsonl`` (one line per logged step), and at the end the final model + tokenizer at the root, so the run
directory is itself a Hugging Face checkpoint.
"""

from __future__ import annotations

import functools
import json
import math
import os
import shutil
import time
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator, Literal

from midtrain.config import Config, param
from midtrain.console import log, seed_everything
from midtrain.errors import ConfigError
from midtrain.runs import Result, Run, open_run
from midtrain.train.data import (
    Doc,
    Format,
    PackedRows,
    collate,
    load_documents,
    mix,
    pack,
)

Precision = Literal["auto", "fp32", "bf16"]

@functools.lru_cache(maxsize=None)
def peak_flops(precision: str) -> float:
    """This machine's matmul throughput (FLOP/s) for MFU, measured once per process on 1024² matrices.

    Measured rather than assumed: on two 2-core cloud CPUs we saw fp32 189 vs 267 GFLOP/s and bf16 920 vs
    143 GFLOP/s (DESIGN §4 and bench/RESULTS.md).
    """
    import torch

    dtype = torch.bfloat16 if precision == "bf16" else torch.float32
    dev = "cuda" if torch.cuda.is_available() else "cpu"
    a = torch.randn(1024, 1024, dtype=dtype, device=dev)
    b = torch.randn(1024, 1024, dtype=dtype, device=dev)
    a @ b  # warm-up
    n, t0 = 0, time.perf_counter()
    while time.perf_counter() - t0 < 0.3:
        a @ b
        n += 1
    if dev == "cuda":
        torch.cuda.synchronize()
    return 2 * 1024**3 * n / (time.perf_counter() - t0)


@dataclass
class OptimConfig(Config):
    lr: float = param(1e-3, "Peak learning rate.")
    min_lr_ratio: float = param(0.1, "Final learning rate as a fraction of the peak.")
    schedule: Literal["cosine", "linear", "constant"] = param("cosine", "Decay after warm-up.")
    warmup_steps: int = param(20, "Linear warm-up steps.")
    weight_decay: float = param(0.1, "AdamW weight decay.")
    beta1: float = param(0.9, "AdamW beta1.")
    beta2: float = param(0.95, "AdamW beta2.")
    max_grad_norm: float = param(1.0, "Gradient clipping norm (0 disables).")
    grad_accum_steps: int = param(1, "Micro-batches accumulated per optimizer step.")


@dataclass
class LMConfig(Config):
    """Fields shared by pretraining and SFT."""

    model: str = param("", "Checkpoint directory (e.g. from `midtrain model init`) or hub id to start from.")
    data: list[str] = param([], "Training files (JSONL/Parquet/datasets dir/txt).")
    format: Format = param("auto", "How records become text: auto, text, prompt_completion, augmented, augmented_raw.")
    text_field: str = param("text", "Field holding the text for the 'text' format.")
    completion_only: bool = param(False, "Train only on completion tokens (prompt_completion records).")
    mixture: dict[str, list[str]] = param({}, "Domain name → files; replaces `data` when set.")
    weights: dict[str, float] = param({}, "Domain name → token share of the budget (default: equal).")
    replay: list[str] = param([], "Files from an earlier stage replayed as the 'replay' domain.")
    replay_share: float = param(0.0, "Share of the token budget given to `replay`.")
    replay_format: Format = param("auto", "How replay records become text (auto: by their fields; the earlier stage's data often has another format).")
    seq_len: int = param(256, "Tokens per packed row.")
    batch_size: int = param(8, "Rows per device per micro-batch.")
    max_steps: int = param(0, "Optimizer steps (0: derived from max_tokens, or one pass over the data).")
    max_tokens: int = param(0, "Token budget (rows × seq_len) when max_steps is 0; 0 means one pass.")
    optim: OptimConfig = param(OptimConfig(), "Optimizer and schedule.")
    precision: Precision = param("auto", "auto: bf16 autocast on a CUDA GPU with bf16, else fp32 (faster on our CPUs; see bench).")
    gradient_checkpointing: bool = param(False, "Recompute activations in backward (saves memory, ~17% slower).")
    save_every_steps: int = param(0, "Save a resumable checkpoint every N steps (0: only at the end).")
    keep_checkpoints: int = param(1, "How many resumable checkpoints to keep.")
    log_every_steps: int = param(10, "Log loss, tok/s, MFU and ETA every N steps.")
    diagnose_data: str = param("", "Synthetic compact problems (JSONL) for skill diagnostics during training.")
    diagnose_every_steps: int = param(0, "Run skill diagnostics every N steps into diagnostics.jsonl (0: off).")
    diagnose_n: int = param(64, "Problems used per diagnostic.")
    seed: int = param(0, "Seed for data order, mixture sampling and initialisation.")
    out: str = param("", "Output run directory.")
    overwrite: bool = param(False, "Replace an existing output directory holding a different run.")
    trust_remote_code: bool = param(False, "Allow custom model code from the checkpoint (off by default).")

    def check(self) -> None:
        if not self.model:
            raise ConfigError("key 'model': give a checkpoint directory to start from")
        if not self.data and not self.mixture:
            raise ConfigError("key 'data': give at least one training file (or a 'mixture')")
        if not self.out:
            raise ConfigError("key 'out': give an output directory")
        if not 0.0 <= self.replay_share < 1.0:
            raise ConfigError("key 'replay_share': must be in [0, 1)")
        if self.replay_share > 0 and not self.replay:
            raise ConfigError("key 'replay': replay_share > 0 needs replay files")
        for d in self.weights:
            if self.mixture and d not in self.mixture:
                raise ConfigError(f"key 'weights.{d}': no such domain in 'mixture'")
        if self.seq_len < 8 or self.batch_size < 1:
            raise ConfigError("keys 'seq_len' (≥ 8) and 'batch_size' (≥ 1) are too small")


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


def world_size() -> int:
    return int(os.environ.get("WORLD_SIZE", "1"))


def build_rows(cfg: LMConfig, tokenizer: Any) -> tuple[PackedRows, dict[str, Any]]:
    """Documents → mixture → packed rows, plus data statistics."""
    sources = dict(cfg.mixture) if cfg.mixture else {"default": list(cfg.data)}
    domains: dict[str, list[Doc]] = {
        name: load_documents(files, tokenizer, fmt=cfg.format, completion_only=cfg.completion_only, text_field=cfg.text_field, domain=name)
        for name, files in sources.items()
    }
    weights = {d: cfg.weights.get(d, 1.0 if not cfg.weights else 0.0) for d in domains}
    tokens_per_step = cfg.batch_size * cfg.seq_len * cfg.optim.grad_accum_steps * world_size()
    budget = cfg.max_steps * tokens_per_step if cfg.max_steps else (cfg.max_tokens or None)
    if cfg.replay_share > 0:
        domains["replay"] = load_documents(cfg.replay, tokenizer, fmt=cfg.replay_format, completion_only=cfg.completion_only, text_field=cfg.text_field, domain="replay")
        total = sum(weights.values())
        weights = {d: w / total * (1 - cfg.replay_share) for d, w in weights.items()}
        weights["replay"] = cfg.replay_share
        if budget is None:
            budget = sum(len(d.ids) for name, docs in domains.items() if name != "replay" for d in docs)
            budget = int(budget / (1 - cfg.replay_share))
    docs, taken = mix(domains, weights, budget, cfg.seed)
    rows = pack(docs, cfg.seq_len, tokenizer.pad_token_id)
    real = sum(len(d.ids) for d in docs)
    stats = {
        "documents": len(docs),
        "rows": len(rows),
        "tokens_per_domain": taken,
        "packing_efficiency": round(real / max(len(rows) * cfg.seq_len, 1), 4),
        "target_tokens": rows.target_tokens,
    }
    return rows, stats


def prepare_for_packed_training(model: Any) -> Any:
    """Turn the KV cache off for training forwards.

    transformers builds the block-diagonal mask from ``position_ids`` only when no cache object exists; with
    ``config.use_cache=True`` (the default) a forward creates one and documents packed in a row attend to each
    other. Generation passes ``use_cache=True`` explicitly, so nothing else changes.
    """
    model.config.use_cache = False
    return model


def flops_per_token(model: Any, seq_len: int) -> float:
    """Training FLOPs per token: 6·N (non-embedding matmuls) + 12·layers·hidden·seq_len (attention)."""
    c = model.config
    n = sum(p.numel() for name, p in model.named_parameters() if "embed" not in name)
    return 6 * n + 12 * c.num_hidden_layers * c.hidden_size * seq_len


def train_lm(cfg: LMConfig, stage: str) -> Result:
    """Train a causal LM on ``cfg`` (see module docstring); returns the stage result."""
    import torch
    from transformers import PrinterCallback, Trainer, TrainingArguments

    from midtrain.models.init import load_model
    from midtrain.models.tokenizer import load_tokenizer

    tokenizer = load_tokenizer(cfg.model, trust_remote_code=cfg.trust_remote_code)
    rows, stats = build_rows(cfg, tokenizer)  # data errors surface before the run dir exists
    inputs = {"model": cfg.model, **{f"data[{i}]": p for i, p in enumerate(cfg.data)}}
    for dom, files in cfg.mixture.items():
        inputs.update({f"mixture.{dom}[{i}]": p for i, p in enumerate(files)})
    inputs.update({f"replay[{i}]": p for i, p in enumerate(cfg.replay)})
    inputs = {k: v for k, v in inputs.items() if Path(v).exists()}  # hub ids are named in the config
    opener = open_run if _is_main() else _follow_run  # one process owns the run directory's metadata
    with opener(cfg.out, stage, cfg, inputs, overwrite=cfg.overwrite, seed=cfg.seed) as run:
        if run.cached:
            return Result.of(run)
        seed_everything(cfg.seed)
        precision = resolve_precision(cfg.precision)
        model = prepare_for_packed_training(load_model(cfg.model, trust_remote_code=cfg.trust_remote_code))
        accum = cfg.optim.grad_accum_steps
        per_step_rows = cfg.batch_size * accum * world_size()
        max_steps = cfg.max_steps or max(1, math.ceil(len(rows) / per_step_rows))
        tokens_per_step = per_step_rows * cfg.seq_len
        fpt = flops_per_token(model, cfg.seq_len)
        ckpt_dir = run.path / "checkpoints"
        args = TrainingArguments(
            output_dir=str(ckpt_dir),
            per_device_train_batch_size=cfg.batch_size,
            gradient_accumulation_steps=accum,
            max_steps=max_steps,
            learning_rate=cfg.optim.lr,
            lr_scheduler_type={"cosine": "cosine_with_min_lr", "linear": "linear", "constant": "constant_with_warmup"}[cfg.optim.schedule],
            lr_scheduler_kwargs={"min_lr_rate": cfg.optim.min_lr_ratio} if cfg.optim.schedule == "cosine" else {},
            warmup_steps=min(cfg.optim.warmup_steps, max_steps),
            weight_decay=cfg.optim.weight_decay,
            adam_beta1=cfg.optim.beta1,
            adam_beta2=cfg.optim.beta2,
            max_grad_norm=cfg.optim.max_grad_norm or 1e9,
            bf16=precision == "bf16",
            use_cpu=not torch.cuda.is_available(),
            activation_checkpointing=cfg.gradient_checkpointing,
            ddp_find_unused_parameters=False,  # every parameter of a causal LM gets a gradient
            logging_steps=cfg.log_every_steps,
            save_strategy="steps" if cfg.save_every_steps else "no",
            save_steps=cfg.save_every_steps or max_steps,
            save_total_limit=cfg.keep_checkpoints,
            seed=cfg.seed,
            data_seed=cfg.seed,
            report_to=[],
            disable_tqdm=True,
            remove_unused_columns=False,
            # Rows are already shuffled (seeded) by the mixture; sequential order gives every world size the
            # same global batches, so 1 process × batch 8 and 2 processes × batch 4 train on the same data.
            train_sampling_strategy="sequential",
            dataloader_num_workers=0,
            ddp_backend="gloo" if not torch.cuda.is_available() and world_size() > 1 else None,
        )
        logger = _LogCallback(run.path / "log.jsonl", max_steps, tokens_per_step, fpt, precision, is_main=_is_main())
        callbacks = [logger]
        if cfg.diagnose_every_steps and cfg.diagnose_data and _is_main():
            callbacks.append(_diagnostics_callback(cfg, model, tokenizer, run.path / "diagnostics.jsonl"))
        trainer = Trainer(model=model, args=args, train_dataset=rows, data_collator=collate, callbacks=callbacks,
                          processing_class=tokenizer)  # checkpoints then load as models on their own
        trainer.remove_callback(PrinterCallback)  # our callback prints one line per logged step
        resume = _last_checkpoint(ckpt_dir)
        if resume:
            log(f"{stage}: resuming from {resume}")
            for name in ("log.jsonl", "diagnostics.jsonl"):
                _truncate_log(run.path / name, int(resume.rsplit("-", 1)[-1]))
        if cfg.save_every_steps:
            run.keep()
        log(
            f"{stage}: {sum(p.numel() for p in model.parameters()) / 1e6:.2f}M params, {len(rows)} rows × "
            f"{cfg.seq_len} tokens, {max_steps} steps × {tokens_per_step} tokens, {precision}"
        )
        out = trainer.train(resume_from_checkpoint=resume)
        if _is_main():
            model.config.use_cache = True  # the saved checkpoint generates with a cache by default
            trainer.save_model(str(run.path))
            tokenizer.save_pretrained(str(run.path))
            metrics = {
                **stats,
                "steps": max_steps,
                "final_loss": logger.last_loss,
                "train_loss": round(out.training_loss, 6),
                "tokens": max_steps * tokens_per_step,
                "flops": fpt * max_steps * tokens_per_step,
                "precision": precision,
                "tokens_per_second": round(logger.tokens_per_second(), 1),
            }
            if cfg.keep_checkpoints == 0:
                shutil.rmtree(ckpt_dir, ignore_errors=True)
            run.finish(metrics)
        return Result.of(run)


@contextmanager
def _follow_run(out: str, stage: str, cfg: LMConfig, inputs: dict, **_: Any) -> Iterator[Run]:
    """A non-zero rank's view of the run that rank 0 opens: cached if finished, never writes metadata."""
    from midtrain.runs import MARKER, content_hash, run_key

    key = run_key(stage, cfg, {k: content_hash(v) for k, v in inputs.items()})
    done = (Path(out) / MARKER).is_file() and (Path(out) / MARKER).read_text().strip() == key
    Path(out).mkdir(parents=True, exist_ok=True)
    yield Run(Path(out), stage, key, {"metrics": {}}, cached=done)


def _is_main() -> bool:
    return int(os.environ.get("RANK", "0")) == 0


def _truncate_log(path: Path, step: int) -> None:
    """Drop log lines past the checkpoint we resume from, so that no step is logged twice."""
    if not path.is_file():
        return
    from midtrain.runs import atomic_write_text

    keep = [line for line in path.read_text(encoding="utf-8").splitlines() if line.strip() and json.loads(line)["step"] <= step]
    atomic_write_text(path, "".join(line + "\n" for line in keep))


def _last_checkpoint(ckpt_dir: Path) -> str | None:
    if not ckpt_dir.is_dir():
        return None
    done = [p for p in ckpt_dir.glob("checkpoint-*") if (p / "trainer_state.json").is_file()]
    if not done:
        return None
    return str(max(done, key=lambda p: int(p.name.split("-")[-1])))


def _diagnostics_callback(cfg: LMConfig, model: Any, tokenizer: Any, path: Path) -> Any:
    """Every ``diagnose_every_steps``: per-skill teacher-forced accuracy and greedy trace/direct accuracy."""
    from transformers import TrainerCallback

    from midtrain.data import read_all
    from midtrain.synth.diagnose import skill_accuracy, trace_and_direct_accuracy

    problems = read_all(cfg.diagnose_data, required=["prompt", "completion", "op", "graph"])[: cfg.diagnose_n]

    class Diagnostics(TrainerCallback):
        def on_step_end(self, args, state, control, **kw):
            if state.global_step % cfg.diagnose_every_steps:
                return
            was_training = model.training
            skills = skill_accuracy(model, tokenizer, problems)
            acc = trace_and_direct_accuracy(model, tokenizer, problems)
            model.train(was_training)
            rec = {"step": state.global_step, "skills": skills, **acc}
            with open(path, "a", encoding="utf-8") as f:
                f.write(json.dumps(rec) + "\n")
            log(f"diagnostics @ {state.global_step}: trace {acc['trace_acc']:.2f}  direct {acc['direct_acc']:.2f}  "
                + "  ".join(f"{k} {v:.2f}" for k, v in skills.items()))

    return Diagnostics()


class _LogCallback:
    """One line per logged step (loss, lr, grad norm, tok/s, MFU, ETA) and ``log.jsonl``."""

    def __new__(cls, *args: Any, **kwargs: Any):  # build lazily on a TrainerCallback subclass
        from transformers import TrainerCallback

        class Impl(TrainerCallback):
            def __init__(self, path: Path, max_steps: int, tokens_per_step: int, fpt: float, precision: str, is_main: bool):
                self.path, self.max_steps, self.tps, self.fpt = path, max_steps, tokens_per_step, fpt
                self.peak = peak_flops(precision)
                self.is_main = is_main
                self.t0 = None
                self.step0 = 0
                self.last_loss = None
                self._rate = 0.0

            def on_train_begin(self, args, state, control, **kw):
                self.t0 = time.time()
                self.step0 = state.global_step

            def tokens_per_second(self) -> float:
                return self._rate

            def on_step_end(self, args, state, control, **kw):
                if state.global_step >= self.max_steps:
                    control.should_log = True  # final_loss is the last step's, whatever the log interval

            def on_log(self, args, state, control, logs=None, **kw):
                if not self.is_main or not logs or "loss" not in logs:
                    return
                steps = state.global_step - self.step0
                dt = max(time.time() - self.t0, 1e-9)
                self._rate = steps * self.tps / dt
                mfu = self._rate * self.fpt / self.peak
                eta = (self.max_steps - state.global_step) * dt / max(steps, 1)
                self.last_loss = round(float(logs["loss"]), 6)
                rec = {
                    "step": state.global_step,
                    "loss": self.last_loss,
                    "lr": logs.get("learning_rate"),
                    "grad_norm": logs.get("grad_norm"),
                    "tokens": state.global_step * self.tps,
                    "tok_s": round(self._rate, 1),
                    "mfu": round(mfu, 4),
                    "elapsed_s": round(dt, 2),
                }
                with open(self.path, "a", encoding="utf-8") as f:
                    f.write(json.dumps(rec) + "\n")
                log(
                    f"step {state.global_step:>6}/{self.max_steps}  loss {rec['loss']:.4f}  lr {rec['lr']:.2e}  "
                    f"{rec['tok_s']:,.0f} tok/s  MFU {mfu:.1%}  ETA {eta:,.0f}s"
                )

        return Impl(*args, **kwargs)
