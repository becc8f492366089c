"""``midtrain rl``: Dr. GRPO through TRL's GRPOTrainer, for answer tasks (RLVR) and suffix tasks (RL mid-training).

Algorithm (DESIGN §1.4, :mod:`midtrain.train.grpo`): each step takes P prompts, samples G completions per prompt
with the KV cache (never without it: 15x slower on CPU), scores them with a reward, and updates the policy with the
clipped surrogate, mean-only group advantages Â = R − mean(R) and the constant normaliser N·L_max; β = 0 (no KL,
no reference model). TRL options: ``loss_type="dr_grpo"``, ``scale_rewards="none"``, ``beta=0.0`` (every knob is a
field of :class:`RLConfig`).

Two task kinds, one trainer:

- ``answer`` (RL post-training): prompt → ``<think>…</think>`` → final answer, scored by a verifier (``math``:
  math-verify, ``choice``: option letter, ``synthetic_*``: the controlled world's outcome/process/strict reward).
  ``prompt_template: thinking`` wraps raw questions (GSM8K, MATH) in a thinking prompt that ends in ``<think>``.
- ``suffix`` (RL mid-training, DESIGN §1.1 step 3): prompt = prefix of an augmented chunk, the model thinks and
  predicts the continuation. Three rewards: ``judge`` (a judge compares the continuation with the true suffix; the
  seed paper's, ``judge: llm`` the real one), ``exact_match`` (RPT, arXiv 2506.08007: 1 iff the continuation equals
  the true next segment) and ``info_gain`` (RLP, arXiv 2510.01265, :mod:`midtrain.train.info_gain`: generation
  stops at ``</think>``, only the thought is trained, and its reward is the mean log-likelihood of the true suffix
  given the thought under the policy minus that under an EMA of the policy given no thought; ``ema_decay``).

Rewards are the plain callables of :mod:`midtrain.train.rewards`; a sample whose reward raises, or whose judge
request failed, scores 0 and is counted (``reward_errors``); a step whose judging failed (``judge_max_error_frac``
of it, default all) stops the run. LLM-judge verdicts are cached in ``verdict_cache.jsonl`` of the run directory
(a resumed run does not re-ask them); the verdict budget is ``judge_max_new_tokens`` (thoughts are stripped first). The run directory is an HF checkpoint dir at the end (``save_pretrained`` +
tokenizer), with ``log.jsonl`` (one line per logged step: loss, reward mean/std, zero-variance groups, completion
and thinking lengths (tokens up to the last ``</think>``, or ``</solution>`` in the synthetic world), seconds in
generation/reward/training; info_gain adds ``info_gain``, ``logp_think``, ``logp_nothink``), ``checkpoints/checkpoint-N`` for resume (+ ``ema.safetensors`` with info_gain) (a re-run of an interrupted run continues
from the newest complete checkpoint), and ``midtrain.json`` metrics (final reward, steps, tokens, FLOPs ≈
6·N·trained + 2·N·generated tokens).

Simplifications: completions are plain text (no chat template, no tools); the seconds in ``log.jsonl`` are rank
0's (token and error counts are summed over ranks).

The optimizer is the ``optim`` section shared with pretrain/sft (:class:`midtrain.train.engine.OptimConfig`;
RL defaults: AdamW lr 1e-6, constant, no warm-up, no weight decay). What every training stage shares — run
directory on rank 0, resume point, log truncation, precision, the step-log callback base, the final save — is
:mod:`midtrain.train.engine`; this module keeps the tasks, rewards, GRPOConfig and counters.

Launch: ``midtrain rl --model CKPT --data tasks.jsonl --out runs/rl`` on one CPU/GPU;
``accelerate launch --config_file configs/accelerate/ddp.yaml -m midtrain rl --config x.yaml`` to scale out,
``vllm: colocate|server`` for vLLM rollouts (docs/scale-out.md).
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar, Literal

import torch
from transformers import PrinterCallback
from transformers.utils import logging as hf_logging

from midtrain.config import MAX_SEED, Config, check_http_url, param
from midtrain.console import log, seed_everything
from midtrain.data import clean, iter_records, require, where
from midtrain.errors import ConfigError, DataError, MidtrainError
from midtrain.llm.backends import BackendConfig
from midtrain.llm.judge import VERDICT_CACHE, LLMJudge, VerdictCache
from midtrain.llm.prompts import JUDGE_PLACEHOLDERS, check_template, fill_template, load_prompt
from midtrain.models.tokenizer import leading_bos
from midtrain.runs import Result
from midtrain.train.engine import (
    CKPT_DIR,
    OptimConfig,
    Precision,
    is_main,
    open_training_run,
    resolve_precision,
    save_final,
    start,
    train,
    trainer_kwargs,
    world_size,
)
from midtrain.train.grpo import rl_flops
from midtrain.train.info_gain import EMA_FILE, InfoGainReward, attach, check_full_parameters, close_token_id, nothink_prompt
from midtrain.train.rewards import (
    REWARD_COLUMNS,
    SUFFIX_REWARDS,
    RewardName,
    SafeReward,
    build_reward,
    for_trl,
    make_judge,
)
from midtrain.train.rl_trainer import COUNTERS, Counters, RLLogCallback, fmt_value, make_trainer_class
from midtrain.train.trackers import Tracker, check_installed, check_report_to, connect, run_name

THINKING_TEMPLATE = (
    "Solve the problem. Think step by step inside <think> </think>, then give the final answer as \\boxed{}.\n\n"
    "Problem: {prompt}\n\n<think>"
)


# RL's optimizer defaults, unchanged from before the `optim` section: lr 1e-6 constant, no warm-up, no weight decay,
# beta2 0.999 (transformers' default, which rl used), and cosine (if chosen) decays to 0 as transformers' did.
RL_OPTIM = OptimConfig(lr=1e-6, schedule="constant", warmup_steps=0, weight_decay=0.0, beta2=0.999, min_lr_ratio=0.0)


@dataclass
class RLConfig(Config):
    # The flat optimizer keys of earlier versions: an error that names the new key.
    RENAMED: ClassVar[dict[str, str]] = {
        "lr": "optim.lr",
        "lr_schedule": "optim.schedule",
        "warmup_steps": "optim.warmup_steps",
        "weight_decay": "optim.weight_decay",
        "max_grad_norm": "optim.max_grad_norm",
        "grad_accum_steps": "optim.grad_accum_steps",
    }

    # -- model and data --
    model: str = param("", "Policy: a local Hugging Face checkpoint dir (e.g. a pretrain/sft run dir).")
    data: list[str] = param([], "RL task files (JSONL/Parquet/datasets dir), one record per prompt.")
    task: Literal["answer", "suffix"] = param(
        "answer",
        "answer: prompt → thinking → verified answer (RLVR); suffix: prefix → thinking → continuation judged against the true suffix (RL mid-training).",
    )
    reward: RewardName | None = param(
        None,
        "Reward: math | choice | synthetic_outcome | synthetic_process | synthetic_strict (answer tasks); judge | "
        "exact_match (RPT: continuation after </think> equals the true suffix) | info_gain (RLP: log-likelihood gain of "
        "the suffix from the thought over an EMA no-think baseline; trains only the thought; vllm off; not under "
        "FSDP/ZeRO-3) (suffix tasks); default math for answer tasks, judge for suffix tasks.",
    )
    prompt_field: str = param("prompt", "Record field holding the prompt (GSM8K/MATH: problem).")
    answer_field: str = param(
        "", "Record field holding the gold answer or true suffix; default 'answer' (answer tasks) or 'reference' (suffix tasks)."
    )
    prompt_template: str = param(
        "{prompt}",
        "Prompt text with {prompt} and other {field} placeholders filled from the record (a list renders as lettered options 'A. …'); 'thinking' = a built-in thinking prompt for raw math questions (ends in <think>).",
    )
    add_bos: bool = param(
        True, "Prepend the tokenizer's BOS token to each prompt when the tokenizer does not add it (as midtrain.models.generation does)."
    )
    max_prompt_tokens: int = param(
        0, "Drop (and count) prompts longer than this; 0 = the model's context minus max_completion_length.", ge=0
    )
    max_examples: int = param(0, "Use only the first N records (0 = all).", ge=0)
    judge: Literal["token_f1", "exact", "number", "llm"] = param(
        "token_f1", "Judge of reward=judge: rule judges (token_f1 threshold, exact, number) or llm (judge_backend)."
    )
    judge_threshold: float = param(0.5, "Token-F1 threshold of judge=token_f1.", ge=0, le=1)
    judge_backend: BackendConfig = param(BackendConfig(), "Backend of the LLM judge (judge=llm): midtrain.llm.backends.BackendConfig.")
    judge_prompt: str = param("judge", "LLM judge prompt: a shipped name or a .txt template with {candidate} and {reference}.")
    judge_max_new_tokens: int = param(
        512,
        "Token budget of one LLM-judge verdict, thoughts included (a thinking judge such as Qwen3 needs some hundred tokens "
        "before its verdict line; one that does not think stops early).",
        ge=1,
    )
    judge_max_error_frac: float = param(
        1.0,
        "Stop the run when at least this fraction of one step's samples sent to the LLM judge failed (server down, HTTP "
        "errors); 1.0: only when all of them failed. Failed samples score 0 and count as reward_errors.",
        gt=0,
        le=1,
    )
    ema_decay: float = param(
        0.999,
        "info_gain: decay of the no-think baseline's EMA of the policy weights, updated after every optimizer step "
        "(1 = the frozen initial policy); the EMA is a full fp32 copy of the model, saved in every checkpoint.",
        ge=0,
        le=1,
    )
    # -- Dr. GRPO --
    num_generations: int = param(8, "Completions per prompt (group size G; GRPO needs 2 or more).", ge=2)
    max_completion_length: int = param(
        256, "Generation budget in tokens per completion; also L_max, the Dr. GRPO constant normaliser.", ge=1
    )
    temperature: float = param(
        1.0, "Sampling temperature (> 0: GRPO samples; it also divides the logits of the policy ratio, as in TRL).", gt=0
    )
    top_p: float = param(1.0, "Nucleus sampling mass (1.0 = off).", gt=0, le=1)
    top_k: int = param(0, "Top-k sampling (0 = off).", ge=0)
    per_device_batch_size: int = param(8, "Completions per device per micro-batch (TRL counts completions, not prompts).", ge=1)
    num_iterations: int = param(1, "Optimizer passes over each generated batch (μ); >1 makes the ratio/clipping active.", ge=1)
    epsilon_low: float = param(0.2, "Lower clip range ε_low of the ratio.", ge=0, lt=1)
    epsilon_high: float = param(0.2, "Upper clip range ε_high (DAPO's clip-higher uses 0.28).", ge=0)
    beta: float = param(0.0, "KL coefficient to the initial policy; 0 = Dr. GRPO (no reference model is loaded).", ge=0)
    loss_type: Literal["dr_grpo", "grpo", "dapo", "bnpo"] = param(
        "dr_grpo", "Loss aggregation: dr_grpo = Σ tokens / (N·L_max); grpo = per-sequence mean; dapo/bnpo = per-token mean."
    )
    scale_rewards: Literal["none", "group", "batch"] = param(
        "none", "Advantage scaling: none = Dr. GRPO (mean-only); group/batch divide by the std."
    )
    mask_truncated_completions: bool = param(False, "Exclude completions that hit the token budget from the loss.")
    credit: Literal["sequence", "first_error"] = param(
        "sequence",
        "Advantage credit: sequence = one Â per completion (Dr. GRPO); first_error = per token, from the verifier's first "
        "wrong step: failures blamed from it on, rewarded completions credited up to it (synthetic_process/strict rewards).",
    )
    skip_zero_advantage: bool = param(
        True, "Forward/backward only completions with a nonzero advantage (exact under dr_grpo with beta 0; faster)."
    )
    # -- optimisation --
    optim: OptimConfig = param(
        RL_OPTIM,
        "AdamW and schedule; optim.grad_accum_steps = micro-batches per step, so prompts per step = per_device_batch_size · grad_accum_steps · processes / num_generations.",
    )
    max_steps: int = param(100, "Optimizer steps.", ge=1)
    seed: int = param(0, "Seed of sampling, data order and everything else.", ge=0, le=MAX_SEED)
    precision: Precision = param(
        "auto",
        "bf16 = bf16 autocast for generation and training (weights and optimizer stay fp32); auto = bf16 on GPUs that support it, fp32 on CPU (faster for RL steps of small models, bench/RESULTS.md).",
    )
    gradient_checkpointing: bool = param(False, "Recompute activations in the backward pass (saves memory, ~17% slower).")
    threads: int = param(0, "torch intra-op threads (0 = torch's default).", ge=0)
    # -- rollouts --
    vllm: Literal["off", "colocate", "server"] = param(
        "off",
        "Rollouts with vLLM (needs vllm + CUDA): colocate = in the training processes; server = a `trl vllm-serve` server (docs/scale-out.md).",
    )
    vllm_server_url: str = param(
        "", "Base URL of the vLLM server (vllm=server), e.g. http://10.0.0.2:8000; empty = TRL's default (host 0.0.0.0, port 8000)."
    )
    vllm_gpu_memory_utilization: float = param(0.3, "GPU memory share of colocated vLLM.", gt=0, le=1)
    vllm_tensor_parallel_size: int = param(1, "Tensor parallelism of colocated vLLM.", ge=1)
    vllm_importance_sampling: bool = param(True, "Correct the vLLM/trainer logprob mismatch with truncated importance sampling (TRL).")
    # -- bookkeeping --
    log_every_steps: int = param(1, "Write a log.jsonl line and a progress line every N steps.", ge=1)
    report_to: list[Tracker] = param(
        [], "Experiment trackers given the log.jsonl values: tensorboard (events in <out>/tensorboard), wandb, trackio, or none."
    )
    save_every_steps: int = param(50, "Save a resumable checkpoint every N steps (0 = only the final model).", ge=0)
    keep_checkpoints: int = param(2, "Newest checkpoints kept under checkpoints/ (0 = all).", ge=0)
    out: str = param("", "Run directory; it becomes an HF checkpoint dir of the trained policy.", path="dir")
    overwrite: bool = param(False, "Replace an existing output directory holding a different run.")

    def check(self) -> None:
        if not self.model:
            raise ConfigError("key 'model': give the policy checkpoint directory")
        if not self.data:
            raise ConfigError("key 'data': give at least one RL task file")
        if not self.out:
            raise ConfigError("key 'out': give an output directory")
        self.optim.check()
        accum = self.optim.grad_accum_steps
        if (self.per_device_batch_size * accum) % self.num_generations:
            raise ConfigError(
                f"key 'per_device_batch_size': per_device_batch_size · optim.grad_accum_steps "
                f"({self.per_device_batch_size}·{accum}) must be a multiple of num_generations ({self.num_generations})"
            )
        reward = self.resolved_reward()
        if (self.task == "suffix") != (reward in SUFFIX_REWARDS):
            raise ConfigError(
                f"key 'reward': task '{self.task}' cannot use reward '{reward}' "
                f"(suffix tasks use {', '.join(SUFFIX_REWARDS)}; answer tasks a verifier)"
            )
        if self.credit == "first_error" and reward not in ("synthetic_process", "synthetic_strict"):
            raise ConfigError(
                f"key 'credit': first_error needs the synthetic world's process verifier (reward synthetic_process or synthetic_strict, got '{reward}')"
            )
        if reward == "info_gain" and self.vllm != "off":
            raise ConfigError(
                f"key 'vllm': reward info_gain scores with the trainer's own policy and EMA and stops at </think>; "
                f"use vllm: off (got '{self.vllm}')"
            )
        if "{prompt}" not in self.prompt_text_template():
            raise ConfigError("key 'prompt_template': must contain the {prompt} placeholder")
        if self.vllm_server_url:
            check_http_url(self.vllm_server_url, "vllm_server_url")
        if reward == "judge" and self.judge == "llm":  # a template file that is missing or lacks a placeholder fails now
            check_template(load_prompt(self.judge_prompt, "judge_prompt"), "judge_prompt", required=JUDGE_PLACEHOLDERS)
        check_report_to(self.report_to)

    def resolved_reward(self) -> str:
        return self.reward or ("judge" if self.task == "suffix" else "math")

    def resolved_answer_field(self) -> str:
        return self.answer_field or ("reference" if self.task == "suffix" else "answer")

    def prompt_text_template(self) -> str:
        return THINKING_TEMPLATE if self.prompt_template == "thinking" else self.prompt_template


# -- inputs -----------------------------------------------------------------------------------------------------
_CAUSAL_SUFFIXES = ("ForCausalLM", "LMHeadModel", "ForConditionalGeneration")


def check_model_dir(path: str | Path) -> Any:
    """The transformers config of a local causal-LM checkpoint, or a MidtrainError saying what is wrong."""
    from transformers import AutoConfig
    from transformers.models.auto.modeling_auto import MODEL_FOR_CAUSAL_LM_MAPPING_NAMES

    p = Path(path)
    if not (p / "config.json").is_file():
        raise MidtrainError(f"model '{path}': not a checkpoint directory (no config.json)")
    try:
        conf = AutoConfig.from_pretrained(str(p))
    except (OSError, ValueError, KeyError) as e:
        raise MidtrainError(f"model '{path}': unreadable config.json ({str(e).splitlines()[0]})") from None
    archs = list(getattr(conf, "architectures", None) or [])
    causal = conf.model_type in MODEL_FOR_CAUSAL_LM_MAPPING_NAMES and not getattr(conf, "is_encoder_decoder", False)
    if not causal or (archs and not any(a.endswith(_CAUSAL_SUFFIXES) for a in archs)):
        kind = archs[0] if archs else conf.model_type
        raise MidtrainError(f"model '{path}' is a {kind} ({conf.model_type}) checkpoint, not a causal language model")
    return conf


def load_policy(path: str | Path) -> Any:
    """Load a causal LM in fp32; missing or mis-shaped weights are an error, never a silent random init."""
    from transformers import AutoModelForCausalLM

    conf = check_model_dir(path)
    try:
        model, info = AutoModelForCausalLM.from_pretrained(str(path), dtype=torch.float32, output_loading_info=True)
    except Exception as e:  # a damaged or hostile checkpoint: safetensors, pickle and shape errors alike name the path
        raise MidtrainError(f"model '{path}': weights do not load as a {conf.model_type} model ({str(e).splitlines()[0][:300]})") from None
    missing = [k for k in info.get("missing_keys", []) if not (k.startswith("lm_head") and conf.tie_word_embeddings)]
    bad = missing + list(info.get("mismatched_keys", []))
    if bad:
        raise MidtrainError(
            f"model '{path}': the weights do not match its {conf.model_type} config ({len(bad)} missing or mis-shaped "
            f"tensors, e.g. {bad[0]}); is it a checkpoint of another architecture?"
        )
    return model


def _render(template: str, rec: dict[str, Any], prompt: str) -> str:
    values = {k: str(v) for k, v in rec.items() if not k.startswith("_") and isinstance(v, (str, int, float))}
    for k, v in rec.items():  # option lists render as lettered lines: "A. …\nB. …"
        if isinstance(v, list) and 0 < len(v) <= 26 and all(isinstance(x, (str, int, float)) for x in v):
            values[k] = "\n".join(f"{chr(65 + i)}. {x}" for i, x in enumerate(v))
    values["prompt"] = prompt
    return fill_template(template, **values)


def load_tasks(cfg: RLConfig, tokenizer: Any, max_positions: int | None) -> tuple[list[dict[str, Any]], dict[str, int]]:
    """The RL dataset rows (prompt, answer, [record], [choices]) after validation; errors name file and line."""
    reward = cfg.resolved_reward()
    afield = cfg.resolved_answer_field()
    needs = REWARD_COLUMNS[reward]
    template = cfg.prompt_text_template()
    ids = tokenizer("x", add_special_tokens=True)["input_ids"]
    adds_bos = bool(ids) and ids[0] == tokenizer.bos_token_id  # TRL tokenizes prompts with special tokens
    bos = tokenizer.bos_token if cfg.add_bos and leading_bos(tokenizer) and not adds_bos else ""
    rows: list[dict[str, Any]] = []
    for path in cfg.data:
        for rec in iter_records(path):
            loc = where(rec, path)
            require(rec, [cfg.prompt_field] + ([afield] if "answer" in needs else []), path)
            prompt = rec[cfg.prompt_field]
            if not isinstance(prompt, str) or not prompt.strip():
                raise DataError(f"{loc}: '{cfg.prompt_field}' must be a non-empty string")
            row: dict[str, Any] = {"prompt": bos + _render(template, rec, prompt)}
            if "answer" in needs:
                ans = rec[afield]
                if not isinstance(ans, (str, int, float)) or isinstance(ans, bool) or str(ans).strip() == "":
                    raise DataError(f"{loc}: '{afield}' must be a non-empty string or number, got {ans!r}")
                row["answer"] = str(ans)
            if "nothink" in needs:  # info_gain's no-think baseline: the prefix without the thought's <think>
                prefix = rec.get("meta", {}).get("prefix") if isinstance(rec.get("meta"), dict) else None
                text = prefix if isinstance(prefix, str) and prefix.strip() else prompt
                row["nothink"] = nothink_prompt(bos + _render(template, rec, text))
                if not row["nothink"].strip():
                    raise DataError(f"{loc}: the prompt without its <think> is empty: info_gain has no prefix to score from")
            if "record" in needs:
                check_synthetic_record(rec, loc)
                row["record"] = json.dumps(clean(rec), ensure_ascii=False)
            if reward == "choice" and isinstance(rec.get("choices"), list):
                row["choices"] = [str(c) for c in rec["choices"]]
            rows.append(row)
            if cfg.max_examples and len(rows) >= cfg.max_examples:
                break
        if cfg.max_examples and len(rows) >= cfg.max_examples:
            break
    if not rows:
        raise DataError(f"empty dataset: no records in {', '.join(cfg.data)}")
    if reward == "choice" and 0 < sum("choices" in r for r in rows) < len(rows):
        for r in rows:
            r.setdefault("choices", [])
    limit = cfg.max_prompt_tokens or ((max_positions or 10**9) - cfg.max_completion_length)
    if limit < 1:
        raise ConfigError(
            f"key 'max_completion_length': {cfg.max_completion_length} leaves no room for a prompt in the model's {max_positions}-token context"
        )
    lengths = [len(x) for x in tokenizer([r["prompt"] for r in rows], add_special_tokens=True)["input_ids"]]
    kept = [r for r, n in zip(rows, lengths) if n <= limit]
    if not kept:
        raise DataError(f"every prompt in {', '.join(cfg.data)} is longer than {limit} tokens (max_prompt_tokens)")
    per_step = cfg.per_device_batch_size * cfg.optim.grad_accum_steps * world_size() // cfg.num_generations
    if len(kept) < per_step:
        raise DataError(f"{', '.join(cfg.data)}: {len(kept)} usable prompts, but one step needs {per_step} distinct prompts")
    stats = {"prompts": len(kept), "prompts_dropped_too_long": len(rows) - len(kept), "prompt_tokens_max": max(lengths)}
    return kept, stats


def check_synthetic_record(rec: dict[str, Any], where: str) -> None:
    """A DataError naming ``where`` (file:line) unless ``rec`` is a problem the synthetic rewards can score:
    without ``answer`` and ``graph`` every completion would score 0 and the run would learn nothing."""
    from midtrain.synth.verify import gold_of

    missing = [f for f in ("answer", "graph") if f not in rec]
    if missing:
        raise DataError(
            f"{where}: a synthetic reward needs the problem's {' and '.join(repr(m) for m in missing)} (synth generate records)"
        )
    try:
        gold_of(rec)
    except (KeyError, TypeError, ValueError, IndexError, AttributeError) as e:
        raise DataError(f"{where}: not a synthetic problem record (bad graph: {type(e).__name__} {e})") from None


# -- the stage --------------------------------------------------------------------------------------------------
def build_grpo_config(cfg: RLConfig, output_dir: str) -> Any:
    """TRL's GRPOConfig for ``cfg`` (exact key mapping: docs/scale-out.md)."""
    from trl import GRPOConfig

    vllm: dict[str, Any] = {}
    if cfg.vllm != "off":
        vllm = dict(
            use_vllm=True,
            vllm_mode=cfg.vllm,
            vllm_gpu_memory_utilization=cfg.vllm_gpu_memory_utilization,
            vllm_tensor_parallel_size=cfg.vllm_tensor_parallel_size,
            vllm_importance_sampling_correction=cfg.vllm_importance_sampling,
        )
        if cfg.vllm == "server" and cfg.vllm_server_url:
            vllm["vllm_server_base_url"] = cfg.vllm_server_url
    return GRPOConfig(
        output_dir=output_dir,
        **trainer_kwargs(
            cfg.optim,
            max_steps=cfg.max_steps,
            precision=resolve_precision(cfg.precision),
            seed=cfg.seed,
            log_every_steps=cfg.log_every_steps,
            gradient_checkpointing=cfg.gradient_checkpointing,
            report_to=cfg.report_to,
            run_name=run_name(cfg.out),
        ),
        per_device_train_batch_size=cfg.per_device_batch_size,
        num_generations=cfg.num_generations,
        max_completion_length=cfg.max_completion_length,
        temperature=cfg.temperature,
        top_p=cfg.top_p,
        top_k=cfg.top_k,
        num_iterations=cfg.num_iterations,
        epsilon=cfg.epsilon_low,
        epsilon_high=cfg.epsilon_high,
        beta=cfg.beta,
        loss_type=cfg.loss_type,
        scale_rewards=cfg.scale_rewards,
        mask_truncated_completions=cfg.mask_truncated_completions,
        save_strategy="steps" if cfg.save_every_steps else "no",
        save_steps=cfg.save_every_steps or 500,
        save_total_limit=cfg.keep_checkpoints or None,
        log_completions=False,
        **vllm,
    )


def _check_vllm(cfg: RLConfig) -> None:
    if cfg.vllm == "off":
        return
    import importlib.util

    if importlib.util.find_spec("vllm") is None:
        raise ConfigError(f"key 'vllm': '{cfg.vllm}' needs vLLM (pip install 'midtrain[vllm]'); use vllm=off on this machine")
    if cfg.vllm == "colocate" and not torch.cuda.is_available():
        raise ConfigError("key 'vllm': colocate needs a CUDA GPU; use vllm=off on CPU")


def _make_reward(cfg: RLConfig, tokenizer: Any) -> tuple[SafeReward, Any, InfoGainReward | None]:
    """The stage's reward, with its judge (reward judge) or its info-gain scorer (reward info_gain; bound later)."""
    judge = scorer = None
    if cfg.resolved_reward() == "judge":
        backend = cfg.judge_backend if cfg.judge == "llm" else None
        judge = make_judge(
            cfg.judge, threshold=cfg.judge_threshold, backend=backend, prompt=cfg.judge_prompt, max_new_tokens=cfg.judge_max_new_tokens
        )
    if cfg.resolved_reward() == "info_gain":
        check_full_parameters()
        scorer = InfoGainReward(tokenizer, close_token_id(tokenizer))
    reward = build_reward(cfg.resolved_reward(), judge=judge, judge_max_error_frac=cfg.judge_max_error_frac, scorer=scorer)
    return reward, judge, scorer


def run(cfg: RLConfig) -> Result:
    """Dr. GRPO RL on ``cfg.data`` starting from ``cfg.model`` (see the module docstring)."""
    from datasets import Dataset

    from midtrain.models.tokenizer import load_tokenizer

    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    hf_logging.disable_progress_bar()  # no "Loading weights" / "Writing model shards" bars between our log lines
    _check_vllm(cfg)
    check_installed(cfg.report_to)
    model_conf = check_model_dir(cfg.model)  # every input is validated before the run dir exists
    tokenizer = load_tokenizer(cfg.model)
    tokenizer.padding_side = "left"
    rows, data_stats = load_tasks(cfg, tokenizer, getattr(model_conf, "max_position_embeddings", None))
    reward, judge, scorer = _make_reward(cfg, tokenizer)
    vocab = getattr(model_conf.get_text_config(), "vocab_size", None)
    if vocab is not None and len(tokenizer) > vocab:
        raise MidtrainError(f"model '{cfg.model}': the tokenizer has {len(tokenizer)} tokens but the model only {vocab} embeddings")
    inputs = {"model": cfg.model, **{f"data[{i}]": p for i, p in enumerate(cfg.data)}}
    with open_training_run(cfg.out, "rl", cfg, inputs, overwrite=cfg.overwrite, seed=cfg.seed) as run_:
        if run_.cached:
            return Result.of(run_)
        model = load_policy(cfg.model)  # (a bad checkpoint fails here and leaves no run directory behind)
        if isinstance(judge, LLMJudge):  # verdicts kept in the run dir, as `midtrain judge` does: a resume does not re-ask
            judge.cache = VerdictCache(run_.path / VERDICT_CACHE)
        seed_everything(cfg.seed)
        counters = Counters()
        resume, history = start(run_, COUNTERS, model_conf)
        if resume is not None:
            counters.load(json.loads((resume / COUNTERS).read_text()))
        args = build_grpo_config(cfg, str(run_.path / CKPT_DIR))
        callback = RLLogCallback(run_, counters, cfg.max_steps, history)  # the steps before a checkpoint count too
        trainer = make_trainer_class()(
            model=model,
            reward_funcs=for_trl(reward),
            args=args,
            train_dataset=Dataset.from_list(rows),
            processing_class=tokenizer,
            callbacks=[callback],
        )
        trainer.remove_callback(PrinterCallback)  # our callback prints one line per logged step
        connect(trainer, callback, cfg, cfg.report_to, run_.path, resume)
        trainer.counters, trainer.reward, trainer.reward_stats = counters, reward, callback.reward_stats
        trainer.use_bf16_generation = args.bf16 and cfg.vllm == "off"
        trainer.skip_zero_advantage, trainer.credit = cfg.skip_zero_advantage, cfg.credit
        if scorer is not None:  # the EMA baseline, generation stopping at </think>, the EMA in every checkpoint
            ema = attach(trainer, scorer, cfg.ema_decay, resume)
            callback.checkpoint_hooks.append(lambda ckpt: ema.save(ckpt / EMA_FILE))
        n_params = sum(p.numel() for p in model.parameters())
        t0 = time.time()
        if is_main():
            log(
                f"rl: {cfg.task} task, reward {reward.name}, {len(rows)} prompts, G={cfg.num_generations}, "
                f"{n_params / 1e6:.2f}M params, {'bf16' if args.bf16 else 'fp32'}, {cfg.max_steps} steps → {run_.path}"
            )
        train(trainer, resume)
        save_final(trainer, tokenizer, run_.path)
        if not is_main():
            return Result.of(run_)
        metrics = _final_metrics(cfg, callback.history, counters, reward, data_stats, n_params, trainer.state.global_step)
        metrics.update(
            train_seconds_this_session=round(time.time() - t0, 3),
            resumed_from=resume.name if resume is not None else None,
            precision="bf16" if args.bf16 else "fp32",
        )
        run_.finish(metrics)
        log(
            f"rl: done, reward {fmt_value(metrics['reward_mean_first'])} → {fmt_value(metrics['reward_mean_final'])}, "
            f"{metrics['tokens_generated']} tokens generated → {run_.path}"
        )
        return Result.of(run_)


def _final_metrics(
    cfg: RLConfig, history: list[dict[str, Any]], c: Counters, reward: SafeReward, data_stats: dict[str, int], n_params: int, steps: int
) -> dict[str, Any]:
    tail = [h["reward_mean"] for h in history[-max(1, len(history) // 10) :] if h["reward_mean"] is not None]
    first = history[0] if history else None
    return {
        "steps": steps,
        "task": cfg.task,
        "reward": reward.name,
        **data_stats,
        "reward_mean_first": first["reward_mean"] if first else None,
        "reward_mean_final": history[-1]["reward_mean"] if history else None,
        "reward_mean_last10pct": sum(tail) / len(tail) if tail else None,
        "zero_var_frac_final": history[-1]["zero_var_frac"] if history else None,
        "reward_errors": int(c.reward_errors),
        "tokens_generated": int(c.tokens_generated),
        "tokens_trained": int(c.tokens_trained),
        "gen_s": round(c.gen_s, 3),
        "reward_s": round(c.reward_s, 3),
        "train_s": round(c.train_s, 3),
        "parameters": n_params,
        "flops": rl_flops(n_params, int(c.tokens_trained), int(c.tokens_generated)),
    }


__all__ = [
    "RLConfig",
    "run",
    "load_tasks",
    "check_model_dir",
    "load_policy",
    "build_grpo_config",
    "THINKING_TEMPLATE",
]
