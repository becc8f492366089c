"""The typed config of ``midtrain rl``: what to train (model, tasks, reward) and one small section per concern.

Sections, each documented key by key in ``midtrain rl --help``:

- ``prompts``: how a task record becomes a prompt and its answer (:mod:`midtrain.train.rl_tasks`);
- ``judge``: the judge of ``reward: judge`` (:class:`midtrain.llm.judge.JudgeSpec` plus the failure budget);
- ``rollout``: the G completions sampled per prompt (group size, budget, temperature, top-k, top-p);
- ``vllm``: whether vLLM generates them instead of the trainer's own model (``mode: off`` by default);
- ``loss``: how rewards become a gradient (Dr. GRPO by default: mean-only advantages, constant normaliser, no KL,
  one advantage per completion, zero-advantage completions skipped);
- ``curriculum``: which prompts each step trains on (the online edge-of-competence curriculum, off by default);
- ``optim``: AdamW and its schedule, shared with pretrain/sft (RL's own defaults: :data:`RL_OPTIM`);
- ``probe``, ``early_stop``, ``weights``: the run's instruments (the live ground-truth probe, early stop on hacking,
  subnetwork RL and the changed ratio per layer), in :mod:`midtrain.train.instruments`.

The flat keys of earlier versions (``num_generations``, ``judge_backend``, ``loss_type``, ...) are in
:attr:`RLConfig.RENAMED`: each is a one-line error naming its new dotted key. :func:`midtrain.train.rl_trainer.
build_grpo_config` maps the config onto TRL's ``GRPOConfig`` (docs/scale-out.md has the table).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar, Literal

from midtrain.config import MAX_SEED, Config, check_http_url, param
from midtrain.errors import ConfigError
from midtrain.llm.judge import JudgeSpec
from midtrain.llm.prompts import JUDGE_PLACEHOLDERS, check_template, load_prompt
from midtrain.train.engine import OptimConfig, Precision
from midtrain.train.instruments import EarlyStopConfig, ProbeConfig, RLWeightsConfig
from midtrain.train.rewards import SUFFIX_REWARDS, RewardName
from midtrain.train.trackers import Tracker, check_report_to

THINKING_TEMPLATE = (
    "Solve the problem. Think step by step inside <think> </think>, then give the final answer as \\boxed{}.\n\n"
    "Problem: {prompt}\n\n<think>"
)

# RL's optimizer defaults, unchanged from before the `optim` section: lr 1e-6 constant, no warm-up, no weight decay,
# beta2 0.999 (transformers' default, which rl used), and cosine (if chosen) decays to 0 as transformers' did.
RL_OPTIM = OptimConfig(lr=1e-6, schedule="constant", warmup_steps=0, weight_decay=0.0, beta2=0.999, min_lr_ratio=0.0)

Credit = Literal["sequence", "first_error"]
Baseline = Literal["group_mean", "leave_one_out"]
POLICY_SCORED = ("info_gain", "ref_prob")  # suffix rewards scored with the trainer's own policy (train/info_gain.py)


@dataclass
class PromptsConfig(Config):
    """How a task record becomes a prompt (and its gold answer or true suffix)."""

    field: str = param("prompt", "Record field holding the prompt (GSM8K/MATH: problem).")
    answer_field: str = param(
        "", "Record field holding the gold answer or true suffix; default 'answer' (answer tasks) or 'reference' (suffix tasks)."
    )
    template: str = param(
        "{prompt}",
        "Prompt text with {prompt} and other {field} placeholders filled from the record (a list renders as lettered "
        "options 'A. …'); 'thinking' = a built-in thinking prompt for raw math questions (ends in <think>).",
    )
    add_bos: bool = param(
        True, "Prepend the tokenizer's BOS token to each prompt when the tokenizer does not add it (as midtrain.models.generation does)."
    )
    max_tokens: int = param(
        0, "Drop (and count) prompts longer than this; 0 = the model's context minus rollout.max_completion_length.", ge=0
    )
    max_examples: int = param(0, "Use only the first N records (0 = all).", ge=0)

    def check(self) -> None:
        if "{prompt}" not in self.text_template():
            raise ConfigError("key 'template': must contain the {prompt} placeholder")

    def text_template(self) -> str:
        return THINKING_TEMPLATE if self.template == "thinking" else self.template


@dataclass
class RLJudgeConfig(JudgeSpec):
    """The judge of ``reward: judge`` (:class:`midtrain.llm.judge.JudgeSpec`) and how many failed calls a step takes."""

    max_error_frac: float = param(
        1.0,
        "Stop the run when at least this fraction of one step's samples sent to the LLM judge failed (server down, HTTP "
        "errors); 1.0: only when all of them failed. Failed samples score 0 and count as reward_errors.",
        gt=0,
        le=1,
    )


@dataclass
class RolloutConfig(Config):
    """The G completions sampled for each prompt of a step (TRL's sampling; the KV-cache sampler when exact)."""

    num_generations: int = param(8, "Completions per prompt (group size G; GRPO needs 2 or more).", ge=2)
    max_completion_length: int = param(
        256, "Generation budget in tokens per completion; also L_max, the Dr. GRPO constant normaliser.", ge=1
    )
    temperature: float = param(
        1.0, "Sampling temperature (> 0: GRPO samples; it also divides the logits of the policy ratio, as in TRL).", gt=0
    )
    top_p: float = param(1.0, "Nucleus sampling mass (1.0 = off).", gt=0, le=1)
    top_k: int = param(0, "Top-k sampling (0 = off).", ge=0)


@dataclass
class VLLMConfig(Config):
    """vLLM rollouts (needs vllm + CUDA; docs/scale-out.md)."""

    mode: Literal["off", "colocate", "server"] = param(
        "off", "off = the trainer's model generates; colocate = vLLM in the training processes; server = a `trl vllm-serve` server."
    )
    server_url: str = param(
        "", "Base URL of the vLLM server (mode server), e.g. http://10.0.0.2:8000; empty = TRL's default (host 0.0.0.0, port 8000)."
    )
    gpu_memory_utilization: float = param(0.3, "GPU memory share of colocated vLLM.", gt=0, le=1)
    tensor_parallel_size: int = param(1, "Tensor parallelism of colocated vLLM.", ge=1)
    importance_sampling: bool = param(True, "Correct the vLLM/trainer logprob mismatch with truncated importance sampling (TRL).")

    def check(self) -> None:
        if self.server_url:
            check_http_url(self.server_url, "server_url")


@dataclass
class LossConfig(Config):
    """How rewards become a gradient. The defaults are Dr. GRPO (:mod:`midtrain.train.grpo`): Â = R − mean(R) per
    group, the clipped surrogate summed over tokens / (N·L_max), no KL term."""

    type: Literal["dr_grpo", "grpo", "dapo", "bnpo", "gspo"] = param(
        "dr_grpo",
        "Loss aggregation: dr_grpo = Σ tokens / (N·L_max); grpo = per-sequence mean; dapo/bnpo = per-token mean; gspo = "
        "GSPO (arXiv 2507.18071): one length-normalised importance ratio per sequence, clipped per sequence, mean over "
        "sequences (grpo.gspo_loss; set epsilon_low/epsilon_high to the paper's 3e-4/4e-4).",
    )
    baseline: Baseline = param(
        "group_mean",
        "Advantage baseline: group_mean = R − mean of the group (Dr. GRPO); leave_one_out = R − mean of the other G−1 "
        "(RLOO, arXiv 2402.14740; = G/(G−1) × the group-mean advantage, grpo.rloo_advantages).",
    )
    scale_rewards: Literal["none", "group", "batch"] = param(
        "none", "Advantage scaling: none = Dr. GRPO (mean-only); group/batch divide by the std."
    )
    epsilon_low: float = param(0.2, "Lower clip range ε_low of the ratio.", ge=0, lt=1)
    epsilon_high: float = param(0.2, "Upper clip range ε_high (DAPO's clip-higher uses 0.28).", ge=0)
    beta: float = param(0.0, "KL coefficient to the initial policy; 0 = Dr. GRPO (no reference model is loaded).", ge=0)
    num_iterations: int = param(1, "Optimizer passes over each generated batch (μ); >1 makes the ratio/clipping active.", ge=1)
    mask_truncated_completions: bool = param(False, "Exclude completions that hit the token budget from the loss.")
    credit: Credit = param(
        "sequence",
        "Advantage credit: sequence = one Â per completion (Dr. GRPO); first_error = per token, from the verifier's first "
        "wrong step: failures blamed from it on, rewarded completions credited up to it (synthetic_process/strict rewards).",
    )
    skip_zero_advantage: bool = param(
        True, "Forward/backward only completions with a nonzero advantage (exact under dr_grpo with beta 0; faster)."
    )
    pack_rows: int = param(
        32,
        "Score the training forward in chunks of at most this many completions, sorted by length and each trimmed of "
        "the padding its rows do not need (the same log-probs, loss and gradient, any loss type; ~2x faster training on "
        "the demo's RL, bench/RESULTS.md); 0 = one padded batch (TRL's).",
        ge=0,
    )
    ema_decay: float = param(
        0.999,
        "reward info_gain: decay of the no-think baseline's EMA of the policy weights, updated after every optimizer "
        "step (1 = the frozen initial policy); the EMA is a full fp32 copy of the model, saved in every checkpoint.",
        ge=0,
        le=1,
    )
    nothink_baseline: Literal["ema", "none"] = param(
        "ema",
        "reward info_gain: ema = subtract the EMA model's no-think log-likelihood (the logged info_gain is a gain); "
        "none = no EMA copy and no second forward, the logged info_gain is then the raw think log-likelihood "
        "(logp_think). The baseline is one constant per prompt, so group-centred advantages, and the gradient, are the "
        "same either way (NVlabs/RLP issue #3; not under scale_rewards batch); issue 29 estimates the EMA at ~30% of a step.",
    )
    suffix_nll_weight: float = param(
        0.0,
        "task suffix: RMT-style dual objective (arXiv 2509.24375): add w × the mean next-token NLL of the true suffix, "
        "teacher-forced after the prompt and each completion's own thought (gradient through the policy; "
        "grpo.suffix_nll; logged as suffix_nll) to the RL loss; 0 = off.",
        ge=0,
    )


@dataclass
class GenerateConfig(Config):
    """``curriculum.mode: generate``: fresh synthetic problems drawn at the op counts where the policy's edge is."""

    ops: str = param("6-8", "Op counts the generator may draw from: a range '6-8' or a list '6,7,8'.")
    world: dict[str, Any] = param(
        {},
        "The synthetic world, as `midtrain synth generate` keys (render, modulus, order, distractors, const_max, "
        "contexts, ...): the same as the data the policy was trained on. ops, n, seed and out are set by the curriculum.",
    )
    band_min: float = param(0.02, "An op count is at the edge while its measured pass rate is at least this...", ge=0, le=1)
    band_max: float = param(0.7, "...and at most this (Interplay: pass@k > 0, a low pass@1).", ge=0, le=1)
    exclude: list[str] = param(
        [], "Problem files (JSONL) never to train on, e.g. held-out evaluation sets: a generated problem with one of their ids is dropped."
    )

    def op_list(self) -> list[int]:
        from midtrain.synth.mix import parse_ops

        return parse_ops(self.ops, "ops").ops

    def check(self) -> None:
        if self.band_min > self.band_max:
            raise ConfigError(f"key 'band_min': {self.band_min} is above band_max {self.band_max}")
        taken = sorted({"ops", "n", "seed", "out", "preset"} & set(self.world))
        if taken:
            raise ConfigError(f"key 'world.{taken[0]}': set by the curriculum (use curriculum.generate.ops for op counts)")
        self.op_list()


@dataclass
class CurriculumConfig(Config):
    """The online edge-of-competence curriculum (:mod:`midtrain.train.curriculum`): per-prompt verified pass rates,
    zero-variance groups dropped and refilled, solved prompts retired, unsolved ones deferred."""

    mode: Literal["off", "pool", "generate"] = param(
        "off",
        "off = TRL's sampler (every prompt in turn); pool = draw from the data by measured pass rate, with refill; "
        "generate = fresh synthetic problems at the measured edge (curriculum.generate), with refill.",
    )
    max_generation_factor: float = param(
        3.0,
        "Refill cap: generate at most this many times the step's groups; past it the step is topped up with zero-variance groups (logged).",
        ge=1,
    )
    revisit_share: float = param(
        0.5, "Share of each draw taken from prompts already seen (by informativeness); the rest are fresh.", ge=0, le=1
    )
    max_reuse: int = param(4, "Times one prompt may be served over the run.", ge=1)
    retire_after: int = param(2, "Retire a prompt after this many consecutive groups solved by every rollout.", ge=1)
    defer_after: int = param(2, "Defer a prompt after this many consecutive groups solved by none...", ge=1)
    defer_steps: int = param(10, "...for this many steps, doubling at each deferral; then it returns with a lower weight.", ge=1)
    deferred_weight: float = param(0.25, "Draw weight of a deferred prompt once its wait is over, relative to the others.", gt=0, le=1)
    decay: float = param(
        0.5,
        "Decay of a prompt's pass-rate evidence when new rollouts of it arrive (and of each op count's, per step): the policy moves, older rollouts count less.",
        gt=0,
        le=1,
    )
    generate: GenerateConfig = param(GenerateConfig(), "mode generate: where and how fresh problems are drawn.")


# Every flat key of earlier versions → its section key: each is a one-line error naming the new key.
_MOVED = {
    "optim": ("lr:lr", "lr_schedule:schedule", "warmup_steps", "weight_decay", "max_grad_norm", "grad_accum_steps"),
    "prompts": (
        "prompt_field:field",
        "answer_field",
        "prompt_template:template",
        "add_bos",
        "max_prompt_tokens:max_tokens",
        "max_examples",
    ),
    "judge": (
        "judge:kind",
        "judge_threshold:threshold",
        "judge_backend:backend",
        "judge_prompt:prompt",
        "judge_max_new_tokens:max_new_tokens",
        "judge_max_error_frac:max_error_frac",
    ),
    "rollout": ("num_generations", "max_completion_length", "temperature", "top_p", "top_k"),
    "vllm": (
        "vllm:mode",
        "vllm_server_url:server_url",
        "vllm_gpu_memory_utilization:gpu_memory_utilization",
        "vllm_tensor_parallel_size:tensor_parallel_size",
        "vllm_importance_sampling:importance_sampling",
    ),
    "loss": (
        "loss_type:type",
        "scale_rewards",
        "epsilon_low",
        "epsilon_high",
        "beta",
        "num_iterations",
        "mask_truncated_completions",
        "credit",
        "skip_zero_advantage",
        "ema_decay",
    ),
}


def _renamed() -> dict[str, str]:
    out = {}
    for section, keys in _MOVED.items():
        for spec in keys:
            old, _, new = spec.partition(":")
            out[old] = f"{section}.{new or old}"
    return out


@dataclass
class RLConfig(Config):
    RENAMED: ClassVar[dict[str, str]] = _renamed()

    # -- what is trained, on what, for which reward --
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
        "the suffix from the thought over an EMA no-think baseline, loss.ema_decay, loss.nothink_baseline) | ref_prob "
        "(RLPR: mean token probability of the suffix after the thought, under the policy) | synthetic_steps (step "
        "tasks of `synth tasks`: the predicted next steps process-verified, in any valid order) (suffix tasks; info_gain and "
        "ref_prob train only the thought, need vllm off, not under FSDP/ZeRO-3); default math for answer tasks, judge "
        "for suffix tasks.",
    )
    prompts: PromptsConfig = param(PromptsConfig(), "How a task record becomes a prompt and its answer.")
    judge: RLJudgeConfig = param(RLJudgeConfig(kind="token_f1"), "The judge of reward judge (rule judges, or kind llm with a backend).")
    # -- one step: rollouts, loss, update --
    rollout: RolloutConfig = param(RolloutConfig(), "Sampling of the G completions per prompt.")
    vllm: VLLMConfig = param(VLLMConfig(), "vLLM rollouts instead of the trainer's model (mode off by default).")
    loss: LossConfig = param(LossConfig(), "How rewards become a gradient (defaults: Dr. GRPO).")
    curriculum: CurriculumConfig = param(CurriculumConfig(), "Which prompts each step trains on (mode off: every prompt in turn).")
    probe: ProbeConfig = param(
        ProbeConfig(), "Live ground truth: held-out synthetic problems sampled and verified every N steps (off by default)."
    )
    early_stop: EarlyStopConfig = param(
        EarlyStopConfig(), "Stop on reward hacking seen by the probe, keeping the checkpoint before it (off by default)."
    )
    weights: RLWeightsConfig = param(
        RLWeightsConfig(),
        "Weight-space instruments: train only a subnetwork (weights.mask), log the changed ratio per layer (weights.watch).",
    )
    per_device_batch_size: int = param(8, "Completions per device per micro-batch (TRL counts completions, not prompts).", ge=1)
    optim: OptimConfig = param(
        RL_OPTIM,
        "AdamW and schedule; optim.grad_accum_steps = micro-batches per step, so prompts per step = "
        "per_device_batch_size · grad_accum_steps · processes / rollout.num_generations.",
    )
    max_steps: int = param(100, "Optimizer steps.", ge=1)
    seed: int = param(0, "Seed of sampling, data order and everything else.", ge=0, le=MAX_SEED)
    precision: Precision = param(
        "auto",
        "bf16 = bf16 autocast for generation and training (weights and optimizer stay fp32); auto = bf16 on GPUs that support it, fp32 on CPU (faster for RL steps of small models, bench/RESULTS.md).",
    )
    gradient_checkpointing: bool = param(False, "Recompute activations in the backward pass (saves memory, ~17% slower).")
    threads: int = param(0, "torch intra-op threads (0 = torch's default).", ge=0)
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
        if not self.data and self.curriculum.mode != "generate":
            raise ConfigError("key 'data': give at least one RL task file (or curriculum.mode: generate)")
        if not self.out:
            raise ConfigError("key 'out': give an output directory")
        self.prompts.validate("prompts.")  # (from_dict validated the sections already; a config built in Python not)
        self.vllm.validate("vllm.")
        self.weights.validate("weights.")
        self.optim.check()
        accum, G = self.optim.grad_accum_steps, self.rollout.num_generations
        if (self.per_device_batch_size * accum) % G:
            raise ConfigError(
                f"key 'per_device_batch_size': per_device_batch_size · optim.grad_accum_steps "
                f"({self.per_device_batch_size}·{accum}) must be a multiple of rollout.num_generations ({G})"
            )
        reward = self.resolved_reward()
        if (self.task == "suffix") != (reward in SUFFIX_REWARDS):
            raise ConfigError(
                f"key 'reward': task '{self.task}' cannot use reward '{reward}' "
                f"(suffix tasks use {', '.join(SUFFIX_REWARDS)}; answer tasks a verifier)"
            )
        if self.loss.credit == "first_error" and reward not in ("synthetic_process", "synthetic_strict"):
            raise ConfigError(
                "key 'loss.credit': first_error needs the synthetic world's process verifier "
                f"(reward synthetic_process or synthetic_strict, got '{reward}')"
            )
        if reward in POLICY_SCORED and self.vllm.mode != "off":
            raise ConfigError(
                f"key 'vllm.mode': reward {reward} scores with the trainer's own policy and stops at </think>; "
                f"use vllm.mode: off (got '{self.vllm.mode}')"
            )
        if self.loss.suffix_nll_weight and self.task != "suffix":
            raise ConfigError(
                f"key 'loss.suffix_nll_weight': the next-token loss on the true suffix needs task suffix (got task '{self.task}')"
            )
        if self.loss.baseline == "leave_one_out" and self.loss.scale_rewards != "none":
            raise ConfigError("key 'loss.baseline': leave_one_out (RLOO) scales mean-only advantages; it needs loss.scale_rewards: none")
        self.check_curriculum(reward)
        self.check_probe(reward)
        if reward == "judge" and self.judge.kind == "llm":  # a template file that is missing or lacks a placeholder fails now
            check_template(load_prompt(self.judge.prompt, "judge.prompt"), "judge.prompt", required=JUDGE_PLACEHOLDERS)
        check_report_to(self.report_to)

    def check_curriculum(self, reward: str) -> None:
        mode = self.curriculum.mode
        if mode == "off":
            return
        if self.vllm.mode != "off":
            raise ConfigError(f"key 'curriculum.mode': {mode} draws and refills prompts in the trainer; it needs vllm.mode: off")
        if self.loss.num_iterations != 1:
            raise ConfigError("key 'curriculum.mode': refill builds each step's batch anew; it needs loss.num_iterations: 1")
        if mode == "generate":
            if not reward.startswith("synthetic_") or reward == "synthetic_steps":  # (generated problems are no step tasks)
                raise ConfigError(
                    f"key 'curriculum.mode': generate draws synthetic problems; the reward must be synthetic_outcome, "
                    f"synthetic_process or synthetic_strict, got '{reward}'"
                )
            self.curriculum.generate.validate("curriculum.generate.")
            from midtrain.synth.generate import SynthConfig

            SynthConfig.from_dict({**self.curriculum.generate.world, "n": 1}, prefix="curriculum.generate.world.")

    def check_probe(self, reward: str) -> None:
        if not self.probe.every:
            if self.early_stop.hacking_rate:
                raise ConfigError("key 'early_stop.hacking_rate': early stopping reads the probe; set probe.every > 0")
            return
        if not reward.startswith("synthetic_"):
            raise ConfigError(
                f"key 'probe.every': the probe verifies synthetic-world traces; it needs a synthetic_* reward, got '{reward}'"
            )
        self.probe.validate("probe.")
        world = self.probe.world or self.curriculum.generate.world
        if not self.probe.problems and not world:
            raise ConfigError(
                "key 'probe.world': give the synthetic world of the probe problems (synth generate keys, as the training "
                "data was generated) or a problem file probe.problems"
            )
        if not self.probe.problems:
            from midtrain.synth.generate import SynthConfig

            where = "probe.world." if self.probe.world else "curriculum.generate.world."
            SynthConfig.from_dict({**world, "n": 1}, prefix=where)
        if self.early_stop.hacking_rate and self.keep_checkpoints == 1:
            raise ConfigError(
                "key 'keep_checkpoints': early_stop keeps the checkpoint before the hacking onset besides the newest one; use 0 or >= 2"
            )

    def resolved_reward(self) -> str:
        return self.reward or ("judge" if self.task == "suffix" else "math")

    def resolved_answer_field(self) -> str:
        return self.prompts.answer_field or ("reference" if self.task == "suffix" else "answer")


__all__ = [
    "Baseline",
    "Credit",
    "CurriculumConfig",
    "EarlyStopConfig",
    "GenerateConfig",
    "LossConfig",
    "POLICY_SCORED",
    "ProbeConfig",
    "PromptsConfig",
    "RLConfig",
    "RLJudgeConfig",
    "RLWeightsConfig",
    "RL_OPTIM",
    "RolloutConfig",
    "THINKING_TEMPLATE",
    "VLLMConfig",
]
