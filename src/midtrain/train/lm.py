"""The causal-LM stage behind ``midtrain pretrain`` and ``midtrain sft``: packed rows into ``transformers.Trainer``.

Algorithm: next-token cross-entropy on packed rows (``midtrain.train.data``: documents never attend to each
other), AdamW, linear warm-up then cosine/linear decay to ``min_lr_ratio × lr``, gradient clipping, gradient
accumulation with token-weighted loss (``num_items_in_batch``), optional bf16 autocast.

It runs on ``transformers.Trainer`` (the base of TRL's trainers), so accelerate launches it on DDP, FSDP or
DeepSpeed unchanged (``accelerate launch --config_file configs/accelerate/fsdp.yaml -m midtrain sft ...``), and
``resume_from_checkpoint`` restores model, optimizer, scheduler, RNG states and the data position. We do not
use TRL's ``SFTTrainer`` packing: its padding-free ``bfd`` mode flattens the batch into one ``[1, B·T]``
sequence (attention quadratic in B·T) and computes per-step entropy/accuracy metrics, ~2x slower on CPU for our
sizes (DESIGN §4, ``bench/bench_train.py``); our collator keeps ``[B, T]`` rows with per-document positions.
What every training stage shares (run directory, resume, precision, logging, MFU, final save) is
:mod:`midtrain.train.engine`; this module keeps the rows, the ``TrainingArguments`` and the LM's log record.

Data: the corpus (the ``corpus`` section, :mod:`midtrain.train.corpus`) is tokenized once into a token store
(``midtrain tokenize``, :mod:`midtrain.train.tokenize`) —
on first use into ``<out>/tokens``, or given as ``tokens: DIR`` — and a packing plan is drawn from its document
index (mixture, replay, budget; :mod:`midtrain.train.data`) and stored as .npy under ``<out>/plan``; rows are built
from the memory maps when the trainer asks for them, in a fixed order from the seed (``sequential`` sampling), so
resume skips to the exact row and accelerate gives each rank a disjoint slice of every global batch. Rank 0
tokenizes and plans; the other ranks wait for its files. The budget is ``steps × rows per step × seq_len``:
``max_tokens`` counts row positions, padding included.

Run directory: ``tokens/`` and ``plan/`` (above), ``checkpoints/checkpoint-N`` every ``save_every_steps`` or
``save_every_minutes``, whichever first (Trainer format, for resume; :mod:`midtrain.train.checkpointing`),
``log.jsonl`` (one line per logged step: loss, lr, grad norm, tokens, tok/s and MFU over the logging window),
the JSONL logs of periodic probes (``diagnostics.jsonl``), and at the end the final model + tokenizer at the
root, so the run directory is itself a Hugging Face checkpoint.
"""

from __future__ import annotations

import math
import os
import shutil
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

import numpy as np

from midtrain.config import MAX_SEED, Config, param
from midtrain.console import clock, log, seed_everything
from midtrain.data.inputs import input_files
from midtrain.data.pairs import NO_PROMPT_FORMATS
from midtrain.errors import ConfigError, DataError
from midtrain.fileio import atomic_file, atomic_write_json, read_json
from midtrain.probes import Periodic
from midtrain.runs import MARKER, META, Result, Run, read_meta, stable_hash
from midtrain.synth.diagnose import DIAGNOSE_RENAMED, DiagnosticsConfig
from midtrain.train.checkpointing import SavePolicy, save_arguments
from midtrain.train.corpus import CORPUS_RENAMED, CorpusConfig
from midtrain.train.data import PackedDataset, collate, mix_documents, pack_plan, plan_stats
from midtrain.train.engine import (
    CKPT_DIR,
    OptimConfig,
    Precision,
    open_training_run,
    resolve_precision,
    save_final,
    start,
    train,
    trainer_kwargs,
)
from midtrain.train.mfu import MFUMeter, peak_flops
from midtrain.train.ranks import is_main, world_size
from midtrain.train.steplog import LOG, PeriodicCallback, StepLogCallback, Window, rate
from midtrain.train.trackers import Tracker, check_installed, check_report_to, connect, run_name

CHECKPOINT_DONE = "trainer_state.json"  # transformers writes it after the weights, optimizer and RNG states
TOKENS_DIR = "tokens"  # the token store tokenized on first use, inside the run directory
PLAN_DIR = "plan"  # packing plans (.npy, memory-mapped), named by a hash of what they depend on
MAX_TOKENS = 2**53  # token budgets are scaled by float mixture weights (mix_documents): exact up to 2**53
PLAN_ROW_BYTES = 40  # a planned row costs at least its int64 offset and one [shard, start, length, first] segment


@dataclass
class LMConfig(Config):
    """Fields shared by pretraining and SFT."""

    RENAMED: ClassVar[dict[str, str]] = {**CORPUS_RENAMED, **DIAGNOSE_RENAMED}

    model: str = param("", "Checkpoint directory (e.g. from `midtrain model init`) or hub id to start from.")
    corpus: CorpusConfig = param(CorpusConfig(), "Training files and how records become text.")
    completion_only: bool = param(False, "Train only on completion tokens (prompt_completion records).")
    tokens: str = param(
        "",
        "A `midtrain tokenize` directory to train from (its domains replace the corpus section); "
        "empty: tokenize the corpus on first use into <out>/tokens.",
        path="dir",
    )
    num_proc: int = param(0, "Tokenizer processes when tokenizing on first use (0: one per CPU core, at most one per file).", ge=0)
    weights: dict[str, float] = param({}, "Domain name → token share of the budget (default: equal).", ge=0)
    replay_share: float = param(0.0, "Share of the token budget given to the replay domain (corpus.replay).", ge=0, lt=1)
    seq_len: int = param(256, "Tokens per packed row (at most the model's max_position_embeddings).", ge=8)
    batch_size: int = param(8, "Rows per device per micro-batch.", ge=1)
    max_steps: int = param(0, "Optimizer steps (0: derived from max_tokens, or one pass over the data).", ge=0)
    max_tokens: int = param(
        0,
        "Token budget (rows × seq_len, padding included) when max_steps is 0: ceil(max_tokens / tokens per step) steps; 0 means one pass.",
        ge=0,
        le=MAX_TOKENS,
    )
    optim: OptimConfig = param(OptimConfig(), "Optimizer and schedule.")
    precision: Precision = param("auto", "auto: bf16 autocast on a CUDA GPU with bf16, else fp32 (faster on our CPUs; see bench).")
    gradient_checkpointing: bool = param(False, "Recompute activations in backward (saves memory, ~17% slower).")
    save_every_steps: int = param(500, "Save a resumable checkpoint every N optimizer steps (0: no step trigger).", ge=0)
    save_every_minutes: float = param(
        30.0, "Also save one once this many minutes have passed since the last save (0: no time trigger).", ge=0
    )
    keep_checkpoints: int = param(2, "Newest resumable checkpoints kept under checkpoints/ (0: none once the run is done).", ge=0)
    log_every_steps: int = param(10, "Log loss, tok/s, MFU and ETA every N steps.", ge=1)
    report_to: list[Tracker] = param(
        [], "Experiment trackers given the log.jsonl values: tensorboard (events in <out>/tensorboard), wandb, trackio, or none."
    )
    diagnose: DiagnosticsConfig = param(DiagnosticsConfig(), "Skill diagnostics of the synthetic world during training.")
    seed: int = param(0, "Seed for data order, mixture sampling and initialisation.", ge=0, le=MAX_SEED)
    out: str = param("", "Output run directory.", path="dir")
    overwrite: bool = param(False, "Replace an existing output directory holding a different run.")
    trust_remote_code: bool = param(False, "Allow custom model code from the checkpoint (off by default).")

    def check(self) -> None:
        if not self.model:
            raise ConfigError("key 'model': give a checkpoint directory to start from")
        corpus = self.corpus
        if not corpus.files and not corpus.mixture and not self.tokens:
            raise ConfigError("key 'corpus.files': give at least one training file (or a 'corpus.mixture', or 'tokens')")
        if self.tokens and (corpus.files or corpus.mixture or corpus.replay):
            raise ConfigError("key 'tokens': the token store's domains are the data; leave the corpus section empty")
        if not self.out:
            raise ConfigError("key 'out': give an output directory")
        if self.replay_share > 0 and not corpus.replay and not self.tokens:
            raise ConfigError("key 'corpus.replay': replay_share > 0 needs replay files")
        for d in self.weights:
            if corpus.mixture and d not in corpus.mixture:
                raise ConfigError(f"key 'weights.{d}': no such domain in 'corpus.mixture'")
        if self.weights and not sum(self.weights.values()) > 0:
            raise ConfigError("key 'weights': at least one domain needs a weight > 0")
        if self.completion_only and corpus.format in NO_PROMPT_FORMATS:
            raise ConfigError(
                f"key 'completion_only': format '{corpus.format}' has no prompt to leave out of the loss "
                "(use corpus.format prompt_completion, or auto with prompt + completion records)"
            )
        # sections built in Python rather than parsed are checked here too; their keys get the section's name
        self.diagnose.validate("diagnose.")
        self.optim.check()  # also when the section was built in Python rather than parsed
        check_report_to(self.report_to)


def check_model(cfg: LMConfig) -> int | None:
    """``seq_len`` within the positions of the model (``max_position_embeddings`` of its config), before any run;
    returns the model's vocabulary size (its embedding rows: every token id trained on must be below it), if known."""
    from midtrain.models.init import load_model_config

    conf = load_model_config(cfg.model, trust_remote_code=cfg.trust_remote_code).get_text_config()
    positions = getattr(conf, "max_position_embeddings", None)
    if isinstance(positions, int) and cfg.seq_len > positions:
        raise ConfigError(
            f"key 'seq_len': {cfg.seq_len} exceeds the {positions} positions of model '{cfg.model}' (max_position_embeddings)"
        )
    vocab = getattr(conf, "vocab_size", None)
    return vocab if isinstance(vocab, int) else None


def planned_steps(max_steps: int, max_tokens: int, tokens_per_step: int) -> int:
    """Optimizer steps asked for: ``max_steps``, else ``ceil(max_tokens / tokens_per_step)`` (a token is a row
    position, padding included), else 0 (one pass over the data, known once the rows are planned)."""
    if max_steps:
        return max_steps
    return math.ceil(max_tokens / tokens_per_step) if max_tokens else 0


def check_plan_size(cfg: LMConfig, steps: int, per_step_rows: int) -> None:
    """ConfigError naming ``max_steps`` (or ``max_tokens``) when the packing plan of ``steps`` steps cannot be built:
    the plan lists every row up front (:func:`midtrain.train.data.pack_plan`), so a step count far beyond any real
    run (``max_steps: 2**31``) would otherwise fill memory for hours before the first step instead of failing."""
    rows = steps * per_step_rows
    memory = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    if rows * PLAN_ROW_BYTES > memory:
        key = "max_steps" if cfg.max_steps else "max_tokens"
        raise ConfigError(
            f"key '{key}': {steps:,} steps × {per_step_rows} rows = {rows:,} packed rows, whose plan needs at least "
            f"{rows * PLAN_ROW_BYTES / 2**30:,.0f} GiB, more than this machine's {memory / 2**30:,.0f} GiB of memory"
        )


def token_config(cfg: LMConfig, out: Path) -> Any:
    """The ``midtrain tokenize`` config of the first-use token store of ``cfg`` (replay only when it is used)."""
    from midtrain.train.tokenize import TokenizeConfig

    return TokenizeConfig(
        model=cfg.model,
        corpus=cfg.corpus.replace(replay=list(cfg.corpus.replay) if cfg.replay_share > 0 else []),
        completion_only=cfg.completion_only,
        num_proc=cfg.num_proc,
        out=str(out),
        trust_remote_code=cfg.trust_remote_code,
    )


def wait_for(ready: Callable[[], bool], what: str, poll_s: float = 0.5) -> None:
    """Block until ``ready()`` (what rank 0 writes, seen by the other ranks through the shared run directory).

    A file, not a collective: no process group exists yet, and if rank 0 fails the launcher stops every rank.
    """
    last = time.monotonic()
    while not ready():
        time.sleep(poll_s)
        if time.monotonic() - last > 300:
            log(f"still waiting for {what}")
            last = time.monotonic()


def token_store(cfg: LMConfig, tokenizer: Any, run_path: Path, vocab_size: int | None = None) -> Any:
    """The checked token store to train from: ``cfg.tokens``, or tokenized on first use into ``<out>/tokens`` by
    rank 0 (a cached run: a resumed training run finds it done) while the other ranks wait for it. With
    ``vocab_size`` (the model's), a token id at or above it is a DataError naming the store's file."""
    from midtrain.train.tokenize import expected_key, open_store
    from midtrain.train.tokenize import run as tokenize

    if cfg.tokens:
        return open_store(cfg.tokens, tokenizer, vocab_size)
    tcfg = token_config(cfg, run_path / TOKENS_DIR)
    if is_main():
        tokenize(tcfg)
    else:
        key, marker = expected_key(tcfg), run_path / TOKENS_DIR / MARKER
        wait_for(lambda: marker.is_file() and marker.read_text().strip() == key, f"rank 0 to tokenize into {tcfg.out}")
    return open_store(tcfg.out, tokenizer, vocab_size)


def mixture_weights(cfg: LMConfig, store: Any) -> dict[str, float]:
    """Domain → weight of the domains trained on (replay gets ``replay_share``, the others share the rest)."""
    names = [n for n in store.names if n != "replay"]
    for d in cfg.weights:
        if d not in names:
            raise ConfigError(f"key 'weights.{d}': no such domain in the token store {store.path} ({', '.join(names)})")
    weights = {d: cfg.weights.get(d, 1.0 if not cfg.weights else 0.0) for d in names}
    if cfg.replay_share > 0:
        if "replay" not in store.names:
            raise ConfigError(f"key 'replay_share': the token store {store.path} has no replay domain")
        total = sum(weights.values())
        weights = {d: w / total * (1 - cfg.replay_share) for d, w in weights.items()}
        weights["replay"] = cfg.replay_share
    return weights


def make_plan(cfg: LMConfig, store: Any, weights: dict[str, float], budget: int | None, max_rows: int | None) -> Any:
    """Mixture draw over the store's document lengths, then the packing plan (see :mod:`midtrain.train.data`)."""
    names = list(weights)
    docs = [store.documents(n) for n in names]  # [documents, 4] per domain: shard, start, length, prompt length
    order, _ = mix_documents([d[:, 2] for d in docs], [weights[n] for n in names], budget, cfg.seed)
    return pack_plan(order, np.concatenate(docs), cfg.seq_len, completion_only=cfg.completion_only, max_rows=max_rows)


def build_dataset(
    cfg: LMConfig, tokenizer: Any, run_path: Path, steps: int, per_step_rows: int, vocab_size: int | None = None
) -> tuple[PackedDataset, dict[str, Any]]:
    """Token store (its ids checked against the model's ``vocab_size``) → mixture → packing plan (stored under
    ``<out>/plan``, memory-mapped) → the rows, and data statistics. Rank 0 plans; the others wait for its files.
    ``steps`` (0: one pass) sets the token budget."""
    store = token_store(cfg, tokenizer, run_path, vocab_size)
    weights = mixture_weights(cfg, store)
    if cfg.completion_only and not any(d["prompted"] for d in store.manifest["domains"] if d["name"] in weights and d["name"] != "replay"):
        raise DataError(
            f"completion_only: no record of the token store {store.path} has a prompt (prompt + completion records) to leave out of the loss"
        )
    budget = steps * per_step_rows * cfg.seq_len if steps else None
    if budget is None and cfg.replay_share > 0:
        fresh = sum(d["tokens"] for d in store.manifest["domains"] if d["name"] in weights and d["name"] != "replay")
        budget = int(fresh / (1 - cfg.replay_share))
    max_rows = steps * per_step_rows if steps else None
    key = stable_hash(
        {"store": read_meta(store.path / META).get("run_key"), "weights": weights, "budget": budget, "max_rows": max_rows}
        | {k: getattr(cfg, k) for k in ("seed", "seq_len", "completion_only")}
    )[:20]
    base = run_path / PLAN_DIR / key
    done = base.with_suffix(".json")
    if is_main() and not done.is_file():
        plan = make_plan(cfg, store, weights, budget, max_rows)
        for name, arr in (("segments", plan.segments), ("rows", plan.rows)):
            with atomic_file(f"{base}.{name}.npy") as f:
                np.save(f, arr)
        shard_domain = np.asarray(store.shard_domain, dtype=np.int64)
        atomic_write_json(done, plan_stats(plan, shard_domain, store.names, cfg.seq_len))  # written last: the marker
    elif not is_main():
        wait_for(done.is_file, f"rank 0 to plan the rows into {done}")
    segments = np.load(f"{base}.segments.npy", mmap_mode="r")
    rows = np.load(f"{base}.rows.npy", mmap_mode="r")
    return PackedDataset(store.shards, segments, rows, cfg.seq_len, tokenizer.pad_token_id), read_json(done)


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


class LMLogCallback(StepLogCallback):
    """The LM's ``log.jsonl`` record and progress line: tok/s and MFU over the logging window."""

    def __init__(
        self,
        run: Run,
        max_steps: int,
        tokens_per_step: int,
        flops_per_token: float,
        precision: str,
        history: list[dict[str, Any]] | None = None,
    ) -> None:
        super().__init__(run, max_steps, history)
        self.tokens_per_step = tokens_per_step
        self.peak = peak_flops(precision)
        self.mfu = MFUMeter(flops_per_token, self.peak.flops)

    def on_train_begin(self, args, state, control, **kw):
        super().on_train_begin(args, state, control, **kw)
        if state.is_world_process_zero:  # which peak the progress lines' MFU is relative to, said once
            log(f"MFU is relative to the {self.peak}")

    def record(self, state: Any, logs: dict[str, Any], window: Window) -> dict[str, Any]:
        tok_s = rate(window.steps * self.tokens_per_step, window.seconds)
        assert self.last_logged is not None  # on_log sets it before calling record
        return {
            "step": state.global_step,
            "loss": round(float(logs["loss"]), 6),
            "lr": logs.get("learning_rate"),
            "grad_norm": logs.get("grad_norm"),
            "tokens": state.global_step * self.tokens_per_step,
            "tok_s": round(tok_s, 1),
            "mfu": round(self.mfu(tok_s), 4),
            "elapsed_s": round(self.last_logged[1] - self.t_begin, 2),  # seconds since this process began training
        }

    def line(self, rec: dict[str, Any], window: Window) -> str:
        eta = (self.max_steps - rec["step"]) * self.seconds_per_step(window)
        return (
            f"step {rec['step']:>6}/{self.max_steps}  loss {rec['loss']:.4f}  lr {rec['lr']:.2e}  "
            f"{rec['tok_s']:,.0f} tok/s  MFU {rec['mfu']:.1%}  ETA {clock(eta)}"
        )

    def tokens_per_second(self) -> float:
        """The final ``tokens_per_second`` metric: whole-run average excluding the first step (see
        :meth:`StepLogCallback.steps_per_second`), unlike ``tok_s`` in log.jsonl, which is per logging window."""
        return self.steps_per_second() * self.tokens_per_step


def training_args(cfg: LMConfig, output_dir: Path, max_steps: int, precision: str) -> Any:
    """The ``TrainingArguments`` of an LM run: the engine's common ones plus batch, checkpoints and data order."""
    import torch
    from transformers import TrainingArguments

    return TrainingArguments(
        output_dir=str(output_dir),
        per_device_train_batch_size=cfg.batch_size,
        **trainer_kwargs(
            cfg.optim,
            max_steps=max_steps,
            precision=precision,
            seed=cfg.seed,
            log_every_steps=cfg.log_every_steps,
            gradient_checkpointing=cfg.gradient_checkpointing,
            report_to=cfg.report_to,
            run_name=run_name(cfg.out),
        ),
        **save_arguments(cfg.keep_checkpoints),  # when to save is SavePolicy's (train_lm's callbacks)
        # Rows are already shuffled (seeded) by the mixture; sequential order gives every world size the
        # same global batches, so 1 process × batch 8 and 2 processes × batch 4 train on the same data.
        train_sampling_strategy="sequential",
        ddp_backend="gloo" if not torch.cuda.is_available() and world_size() > 1 else None,
    )


def run_inputs(cfg: LMConfig) -> dict[str, str]:
    """The local inputs whose content enters the run key (hub ids are named in the config)."""
    corpus = cfg.corpus  # the input names predate the section: "data[0]", not "corpus.files[0]" (same run keys)
    specs = {"model": cfg.model, **{f"data[{i}]": p for i, p in enumerate(corpus.files)}}
    for dom, files in corpus.mixture.items():
        specs.update({f"mixture.{dom}[{i}]": p for i, p in enumerate(files)})
    specs.update({f"replay[{i}]": p for i, p in enumerate(corpus.replay)})
    if cfg.tokens:
        specs["tokens"] = cfg.tokens
    inputs: dict[str, str] = {}
    for name, spec in specs.items():  # a glob enters as the files it matches (their content, not the pattern)
        inputs.update(input_files(name, spec) if name != "model" else ({name: spec} if Path(spec).exists() else {}))
    return inputs


def train_lm(cfg: LMConfig, stage: str, callbacks: Sequence[Periodic] = ()) -> Result:
    """Train a causal LM on ``cfg`` (see module docstring), running the periodic ``callbacks`` (e.g. the synthetic
    world's diagnostics) every N steps; returns the stage result."""
    from transformers import PrinterCallback, Trainer

    from midtrain.models.init import load_model
    from midtrain.models.tokenizer import load_tokenizer

    tokenizer = load_tokenizer(cfg.model, trust_remote_code=cfg.trust_remote_code)
    vocab_size = check_model(cfg)
    check_installed(cfg.report_to)
    with open_training_run(cfg.out, stage, cfg, run_inputs(cfg), overwrite=cfg.overwrite, seed=cfg.seed) as run:
        if run.cached:
            return Result.of(run)
        per_step_rows = cfg.batch_size * cfg.optim.grad_accum_steps * world_size()
        tokens_per_step = per_step_rows * cfg.seq_len
        steps = planned_steps(cfg.max_steps, cfg.max_tokens, tokens_per_step)
        check_plan_size(cfg, steps, per_step_rows)
        # a fresh run dir that fails here (bad data) is removed again by open_run
        rows, stats = build_dataset(cfg, tokenizer, run.path, steps, per_step_rows, vocab_size)
        seed_everything(cfg.seed)
        precision = resolve_precision(cfg.precision)
        model = prepare_for_packed_training(load_model(cfg.model, trust_remote_code=cfg.trust_remote_code))
        max_steps = steps or max(1, math.ceil(len(rows) / per_step_rows))
        fpt = flops_per_token(model, cfg.seq_len)
        resume, history = start(run, CHECKPOINT_DONE, model.config, logs=[LOG, *(c.log_name for c in callbacks)])
        logger = LMLogCallback(run, max_steps, tokens_per_step, fpt, precision, history)
        trainer = Trainer(
            model=model,
            args=training_args(cfg, run.path / CKPT_DIR, max_steps, precision),
            train_dataset=rows,
            data_collator=collate,
            processing_class=tokenizer,  # checkpoints load alone
            callbacks=[
                logger,
                SavePolicy(cfg.save_every_steps, cfg.save_every_minutes),
                *(PeriodicCallback(c, run.path) for c in callbacks),
            ],
        )
        trainer.remove_callback(PrinterCallback)  # our callback prints one line per logged step
        connect(trainer, logger, cfg, cfg.report_to, run.path, resume)
        log(
            f"{stage}: {sum(p.numel() for p in model.parameters()) / 1e6:.2f}M params, {len(rows)} rows × "
            f"{cfg.seq_len} tokens, {max_steps} steps × {tokens_per_step} tokens, {precision}"
        )
        out = train(trainer, resume)
        save_final(trainer, tokenizer, run.path)
        if is_main():
            metrics = {
                **stats,
                "steps": max_steps,
                "final_loss": logger.history[-1]["loss"] if logger.history else None,
                "train_loss": round(out.training_loss, 6),
                "tokens": max_steps * tokens_per_step,
                "flops": fpt * max_steps * tokens_per_step,
                "precision": precision,
                "tokens_per_second": round(logger.tokens_per_second(), 1),
                "mfu_peak": str(logger.peak),
            }
            if cfg.keep_checkpoints == 0:
                shutil.rmtree(run.path / CKPT_DIR, ignore_errors=True)
            run.finish(metrics)
        return Result.of(run)
