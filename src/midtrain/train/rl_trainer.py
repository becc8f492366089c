"""The trainer under ``midtrain rl``: TRL's GRPOTrainer, six of its step hooks overridden, the update left as TRL's.

One optimizer step, as TRL runs it (▸: a hook overridden here; the comment at each says what it changes and why
the result stays exact):

    _prepare_inputs(batch)                          every steps_per_generation·μ micro-batches, a new generation batch:
    ▸ _generate_and_score_completions(inputs)       TRL's generate → score → advantages, then per-token credit
      ▸ _generate(prompts)                            timed, bf16 autocast when asked, tokens and thought lengths counted
        ▸ _generate_single_turn(prompt_ids, …)          the KV-cache sampler when exact (rollouts.py), else TRL's
      ▸ _calculate_rewards(inputs, …)                 timed, reward errors and statistics summed, first wrong steps found
        advantages Â = R − mean_group(R)              TRL (scale_rewards none: Dr. GRPO, :mod:`midtrain.train.grpo`)
    ▸ compute_loss(model, micro_batch)              rows with Â = 0 skipped and the loss rescaled: the same gradient
                                                    + w · NLL of the true suffix after each own thought (RMT, suffix_nll_weight)
      ▸ _get_per_token_logps_and_entropies(…)         rows in length-sorted chunks trimmed of padding: the same log-probs

Everything midtrain adds comes in through one typed constructor argument, :class:`RLExtras` (counters, the reward,
credit, ...), and nothing is set on the trainer after construction. ``GRPOTrainer._generate`` returns a positional
8-tuple; :class:`Generation` reads it by name. The hooks are TRL's private API: pyproject pins TRL's minor version,
:data:`TRL_HOOKS` records each hooked signature and :func:`hook_changes` compares them (and ``_generate``'s return
names) with the installed TRL: a trainer refuses to start on a mismatch, and tests/train/test_rl_trainer.py names it.

:func:`build_grpo_config` maps :class:`midtrain.train.rl_config.RLConfig` onto TRL's ``GRPOConfig``.
"""

from __future__ import annotations

import ast
import inspect
import math
import textwrap
import time
from contextlib import nullcontext
from dataclasses import dataclass, field
from typing import Any, NamedTuple

import torch
import trl
from trl import GRPOConfig, GRPOTrainer

from midtrain.errors import MidtrainError
from midtrain.synth.credit import first_error
from midtrain.thoughts import THINK_CLOSE, THINK_OPEN
from midtrain.train.curriculum import Curriculum
from midtrain.train.engine import resolve_precision, trainer_kwargs
from midtrain.train.grpo import first_error_advantages, informative_rows, suffix_nll
from midtrain.train.info_gain import reference_logits, suffix_columns, suffix_nll_inputs
from midtrain.train.proxies import ProxyMeter
from midtrain.train.refill import RefillPlan, group_informative
from midtrain.train.rewards import SafeReward, SuccessFn, for_trl, synthetic_problem
from midtrain.train.rl_config import Baseline, Credit, RLConfig
from midtrain.train.rl_log import Counters
from midtrain.train.rl_packing import plan_chunks, scatter_back, shift_free
from midtrain.train.rollouts import sampler_rollouts
from midtrain.train.trackers import run_name

# -- the TRL surface this module depends on -----------------------------------------------------------------------
TESTED_TRL = "1.16"  # the minor version pyproject.toml pins
# Parameters (name=default) of every GRPOTrainer method the trainer overrides, as TRL 1.16 declares them.
TRL_HOOKS: dict[str, str] = {
    "__init__": (
        "self, model, reward_funcs=None, args=None, train_dataset=None, eval_dataset=None, processing_class=None, "
        "reward_processing_classes=None, callbacks=None, optimizers=(None, None), quantization_config=None, "
        "peft_config=None, tools=None, rollout_func=None, environment_factory=None"
    ),
    "_generate": "self, prompts",
    "_generate_single_turn": "self, prompt_ids, images, multimodal_fields, num_generations, has_tool_images=False",
    "_calculate_rewards": "self, inputs, prompts, completions, completion_ids_list",
    "_generate_and_score_completions": "self, inputs",
    "compute_loss": "self, model, inputs, return_outputs=False, num_items_in_batch=None",
    "_get_per_token_logps_and_entropies": (
        "self, model, input_ids, attention_mask, logits_to_keep, batch_size=None, compute_entropy=False, "
        "compute_aux_loss=False, pixel_values=None, image_grid_thw=None, num_images=None, pixel_attention_mask=None, "
        "spatial_shapes=None, num_tiles=None, image_sizes=None, token_type_ids=None, mm_token_type_ids=None, "
        "image_position_ids=None"
    ),
}
# Keys of the batch dict that _generate_and_score_completions returns which this module reads.
BATCH_KEYS = ("prompt_mask", "completion_ids", "completion_mask", "advantages")


class Generation(NamedTuple):
    """``GRPOTrainer._generate``'s return value by name (TRL 1.16 returns these eight values positionally; a
    NamedTuple is still the tuple TRL unpacks)."""

    prompt_ids: list[list[int]]  # per completion, the prompt's token ids
    completion_ids: list[list[int]]  # per completion, its ids up to and including the first stop id
    tool_mask: list[list[int]] | None  # 1 = model token, 0 = tool output (None without tools)
    completions: list[Any]  # decoded text (or chat messages)
    logprobs: list[list[float]] | None  # sampling log-probs (vLLM only)
    extra_fields: dict[str, Any]  # extra columns of a custom rollout_func
    images: Any
    tool_images: list[Any]

    @classmethod
    def of(cls, values: tuple) -> Generation:
        if len(values) != len(cls._fields):
            raise MidtrainError(
                f"TRL {trl.__version__}: GRPOTrainer._generate returned {len(values)} values, midtrain reads "
                f"{len(cls._fields)} ({', '.join(cls._fields)}); install the TRL version pyproject.toml pins"
            )
        return cls(*values)


def parameters(fn: Any) -> str:
    """``fn``'s parameters as ``name`` / ``name=default``, comma-separated (annotations left out: they render
    differently across Python versions without changing what a caller passes)."""
    out = []
    for p in inspect.signature(fn).parameters.values():
        stars = "*" if p.kind is p.VAR_POSITIONAL else "**" if p.kind is p.VAR_KEYWORD else ""
        out.append(stars + p.name + ("" if p.default is p.empty else f"={p.default!r}"))
    return ", ".join(out)


def _names(node: ast.AST) -> list[str]:
    return [e.id if isinstance(e, ast.Name) else "?" for e in getattr(node, "elts", [])]


def hook_changes() -> list[str]:
    """One line per difference between the installed TRL and what this module was written against: a hooked
    signature, the names ``_generate`` returns, or a batch key read here. Empty when they agree."""
    changes = []
    for name, recorded in TRL_HOOKS.items():
        now = parameters(getattr(GRPOTrainer, name))
        if now != recorded:
            changes.append(
                f"TRL {trl.__version__} changed GRPOTrainer.{name}({now}); midtrain's RL trainer overrides it as "
                f"TRL {TESTED_TRL} declared it: ({recorded})"
            )
    try:  # the source of an installed package; a zipped install has none, and then only the signatures are compared
        tree = ast.parse(textwrap.dedent(inspect.getsource(GRPOTrainer._generate)))
        batch = ast.parse(textwrap.dedent(inspect.getsource(GRPOTrainer._generate_and_score_completions)))
    except (OSError, TypeError):
        return changes
    returned = [_names(n.value) for n in ast.walk(tree) if isinstance(n, ast.Return) and isinstance(n.value, ast.Tuple)]
    if returned != [list(Generation._fields)]:
        changes.append(f"TRL {trl.__version__}: GRPOTrainer._generate returns {returned}, midtrain reads ({', '.join(Generation._fields)})")
    keys = {k.value for n in ast.walk(batch) if isinstance(n, ast.Dict) for k in n.keys if isinstance(k, ast.Constant)}
    missing = [k for k in BATCH_KEYS if k not in keys]
    if missing:
        changes.append(f"TRL {trl.__version__}: GRPOTrainer._generate_and_score_completions no longer returns {', '.join(missing)}")
    return changes


def build_grpo_config(cfg: RLConfig, output_dir: str) -> GRPOConfig:
    """TRL's GRPOConfig for ``cfg`` (the key mapping is docs/scale-out.md's table)."""
    roll, loss, vllm = cfg.rollout, cfg.loss, cfg.vllm
    use_vllm: dict[str, Any] = {}
    if vllm.mode != "off":
        use_vllm = dict(
            use_vllm=True,
            vllm_mode=vllm.mode,
            vllm_gpu_memory_utilization=vllm.gpu_memory_utilization,
            vllm_tensor_parallel_size=vllm.tensor_parallel_size,
            vllm_importance_sampling_correction=vllm.importance_sampling,
        )
        if vllm.mode == "server" and vllm.server_url:
            use_vllm["vllm_server_base_url"] = vllm.server_url
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
        num_generations=roll.num_generations,
        max_completion_length=roll.max_completion_length,
        temperature=roll.temperature,
        top_p=roll.top_p,
        top_k=roll.top_k,
        num_iterations=loss.num_iterations,
        epsilon=loss.epsilon_low,
        epsilon_high=loss.epsilon_high,
        beta=loss.beta,
        # GSPO is TRL's per-sequence mean ("grpo") over a sequence-level ratio (grpo.gspo_loss states it)
        loss_type="grpo" if loss.type == "gspo" else loss.type,
        importance_sampling_level="sequence" if loss.type == "gspo" else "token",
        scale_rewards=loss.scale_rewards,
        mask_truncated_completions=loss.mask_truncated_completions,
        save_strategy="steps" if cfg.save_every_steps else "no",
        save_steps=cfg.save_every_steps or 500,
        save_total_limit=cfg.keep_checkpoints or None,
        log_completions=False,
        **use_vllm,
    )


# -- what the trainer measures per completion ------------------------------------------------------------------
_SPANS = ((THINK_OPEN, THINK_CLOSE), ("<solution>", "</solution>"))  # thoughts; the synthetic world's traces


def thinking_tokens(ids: list[int], completion: str, prompt: str, tokenizer: Any) -> int:
    """Tokens of a completion spent reasoning: up to its last ``</think>`` (or, in the synthetic world, its last
    ``</solution>``), or all of them while a span the prompt or the completion opened is still open."""
    for open_tag, close_tag in _SPANS:
        opened = prompt.rfind(open_tag) > prompt.rfind(close_tag)
        close_ids = tokenizer.encode(close_tag, add_special_tokens=False)
        if len(close_ids) == 1 and close_ids[0] in ids:  # tags are single tokens in our tokenizers: count ids
            return len(ids) - ids[::-1].index(close_ids[0])
        cut = completion.rfind(close_tag)
        if cut >= 0:  # a multi-token tag: count the text up to it
            return min(len(ids), len(tokenizer(completion[: cut + len(close_tag)], add_special_tokens=False)["input_ids"]))
        if opened or open_tag in completion:
            return len(ids)
    return 0


def token_at(ids: list[int], text: str, offset: int, tokenizer: Any) -> int:
    """Index of the token of ``ids`` (decoded as ``text``) that holds character ``offset``; len(ids) past the end."""
    ends, n = [], 0
    for i in ids:  # one decode per token: exact when pieces concatenate to the text (char and most BPE tokenizers)
        n += len(tokenizer.decode([i], skip_special_tokens=True))
        ends.append(n)
    if n != len(text):  # pieces that do not concatenate (a UTF-8 character split over tokens): decode prefixes
        ends = [len(tokenizer.decode(ids[: k + 1], skip_special_tokens=True)) for k in range(len(ids))]
    return next((k for k, end in enumerate(ends) if end > offset), len(ids))


def first_error_tokens(rows: list[dict], completions: list[str], completion_ids: list[Any], tokenizer: Any) -> list[int]:
    """Per completion, the token of its first wrong step (:mod:`midtrain.synth.credit`) or −1 when it is verified;
    ``rows`` carry the synthetic problem as their ``record`` column (a JSON string or a dict)."""
    out = []
    for row, text, ids in zip(rows, completions, completion_ids, strict=True):
        offset = first_error(synthetic_problem(row["record"]), text)
        out.append(-1 if offset is None else token_at(list(ids), text, offset, tokenizer))
    return out


def add_stop_ids(trainer: GRPOTrainer, ids: tuple[int, ...]) -> None:
    """Make each of ``ids`` end a completion: an EOS id for generation (``generation_kwargs``, ``generation_config``)
    and for TRL's completion mask (``eos_token_ids``), so the loss stops at it too. No ids: nothing changes."""
    if not ids:
        return
    eos = list(trainer.eos_token_ids) + [i for i in ids if i not in trainer.eos_token_ids]
    trainer.eos_token_ids = eos
    trainer.generation_kwargs["eos_token_id"] = eos
    trainer.generation_config.eos_token_id = eos


# -- the trainer -------------------------------------------------------------------------------------------------
@dataclass
class RLExtras:
    """What midtrain adds to TRL's GRPOTrainer, as its one extra constructor argument (TRL's own options are the
    ``GRPOConfig``; :func:`build_grpo_config`)."""

    counters: Counters  # seconds and tokens of the run: incremented here, logged and checkpointed by rl_log.py
    reward: SafeReward  # the reward TRL calls (through for_trl); its error count and statistics are read per call
    reward_stats: dict[str, float] = field(default_factory=dict)  # the log callback's dict: sums over ranks, reset per log
    bf16_generation: bool = False  # generate under bf16 autocast (precision bf16 without vLLM; the sampler steps aside)
    skip_zero_advantage: bool = True  # forward only completions with Â ≠ 0 (applies under dr_grpo with β = 0)
    credit: Credit = "sequence"  # first_error: per-token advantages from the verifier's first wrong step
    stop_ids: tuple[int, ...] = ()  # token ids that end a completion besides EOS (info_gain: </think>)
    baseline: Baseline = "group_mean"  # leave_one_out: RLOO, Â scaled by G/(G−1) (grpo.rloo_advantages)
    curriculum: Curriculum | None = None  # the online curriculum: prompts drawn and refilled here (curriculum.py)
    max_generation_factor: float = 3.0  # refill cap: generated groups per step ≤ this × the step's groups
    success: SuccessFn | None = None  # with a curriculum: what counts as solved (the verified check in the synthetic world)
    suffix_nll_weight: float = 0.0  # RMT dual objective: + w · the true suffix's NLL after each own thought (grpo.suffix_nll)
    close_id: int | None = None  # the id of </think>, where suffix_nll_weight cuts each completion's thought
    pack_rows: int = 32  # score log-probs in length-sorted chunks of this many rows, trimmed of padding (0: TRL's one batch)
    proxies: ProxyMeter | None = None  # the per-step proxy detectors of reward hacking, fed each scored batch (proxies.py)


@dataclass
class BatchRewards:
    """What ``_calculate_rewards`` found for the generation batch in flight (read by the rest of that batch's
    scoring; a refill or curriculum hook reads it too)."""

    rewards: torch.Tensor  # [N_all, F] TRL's reward matrix, gathered over ranks (F reward functions; midtrain has 1)
    first_errors: list[int] | None  # credit first_error: per local completion, its first wrong token (−1: verified)
    failed: torch.Tensor  # [N_all] bool, gathered over ranks: the sample's reward call failed (scored 0 by SafeReward)
    success: list[float] | None = None  # with a curriculum: per local completion, solved (1) or not (0)


class MidtrainGRPOTrainer(GRPOTrainer):
    """GRPOTrainer + midtrain's bookkeeping, the KV-cache sampler and process credit (module docstring).

    Every rank runs these hooks in lockstep, so the sums over ranks (:meth:`_global_sum`) pair up; counts are summed
    over ranks, seconds are this rank's.
    """

    def __init__(self, extras: RLExtras, **trl_kwargs: Any) -> None:
        # TRL: builds the trainer from the model, reward functions, GRPOConfig and dataset. Midtrain passes its one
        # reward (wrapped for TRL's calling convention, so the SafeReward that counts errors is the one called) and
        # adds extras.stop_ids to the ids that end a completion; every other argument goes to TRL unchanged.
        changes = hook_changes()
        if changes:  # the hooks below would silently mis-read TRL: refuse to train
            raise MidtrainError(changes[0])
        self.extras = extras
        self.batch_rewards: BatchRewards | None = None
        super().__init__(reward_funcs=for_trl(extras.reward), **trl_kwargs)
        add_stop_ids(self, extras.stop_ids)

    def _global_sum(self, *values: float) -> list[float]:
        t = torch.tensor(values, dtype=torch.float64, device=self.accelerator.device)
        if self.accelerator.num_processes > 1:
            t = self.accelerator.gather(t.unsqueeze(0)).sum(0)
        return t.tolist()

    def _generate_and_score_completions(self, inputs):
        # TRL: one generation batch generated (_generate), scored (_calculate_rewards), its advantages computed
        # (Â = R − group mean), plus the old/reference log-probs the loss needs; returned as a dict of tensors.
        # Midtrain, with a curriculum: TRL's batch of prompts only sets how many groups the step has; the prompts
        # are drawn from the curriculum and refilled until the groups are informative (_refilled). Without one,
        # TRL's prompts, scored as _scored says.
        if self.extras.curriculum is not None and self.model.training:
            return self._refilled(len(inputs))
        return self._scored(inputs)[0]

    def _scored(self, inputs: list[dict[str, Any]]) -> tuple[dict[str, Any], BatchRewards]:
        """TRL's scored batch for ``inputs``, then midtrain's three changes to its advantages, all exact:

        - a group with a failed reward call (a judge down, a reward that raised) gets Â = 0 on every row: a
          failure scored 0 would otherwise be a gradient toward whatever the other completions did;
        - baseline leave_one_out: Â·G/(G−1), RLOO's unbiased baseline (grpo.rloo_advantages);
        - credit first_error: each Â becomes per token, cut at its first wrong step ([N] → [N, T]); TRL's loss takes
          [N, T] advantages as they are.
        """
        batch = super()._generate_and_score_completions(inputs)
        scored, self.batch_rewards = self.batch_rewards, None
        assert scored is not None, "TRL scored a batch without calling _calculate_rewards"
        G, adv = self.num_generations, batch["advantages"]  # [n] local rows
        if self.extras.baseline == "leave_one_out":
            adv = adv * (G / (G - 1))
        bad_groups = scored.failed.view(-1, G).any(dim=1)  # [N_all / G]
        if bad_groups.any():
            rank, n = self.accelerator.process_index, len(inputs)
            bad_rows = bad_groups.repeat_interleave(G)[rank * n : (rank + 1) * n].to(adv.device)  # [n]
            adv = adv.masked_fill(bad_rows, 0.0)
            self.extras.counters.groups_masked += float(bad_groups.sum())  # (gathered already: the same on every rank)
        if self.extras.proxies is not None:  # reads the sequence advantages and rewards, changes nothing (proxies.py)
            self.extras.proxies.observe(inputs, batch, adv, scored.rewards, self.accelerator.process_index, self.processing_class)
        if self.extras.credit == "first_error":
            errors = torch.tensor(scored.first_errors or [], dtype=torch.long)
            adv = first_error_advantages(adv, errors, batch["completion_ids"].size(1))
        batch["advantages"] = adv
        if self.extras.suffix_nll_weight:  # the true suffixes travel with their rows (through shuffles, splits, refills)
            batch.update(suffix_columns(inputs, self.processing_class, adv.device))
        return batch, scored

    def _refilled(self, n_rows: int) -> dict[str, Any]:
        """A step of informative groups drawn from the curriculum (refill.py states why it trains exactly as those
        rows given directly). Every rank draws the same keys from the same state and takes its slice, and the
        decisions that end a round use sums over ranks, so all ranks run the same rounds in lockstep."""
        ex, G = self.extras, self.num_generations
        cur = ex.curriculum
        assert cur is not None
        world, rank, step = self.accelerator.num_processes, self.accelerator.process_index, self.state.global_step
        plan = RefillPlan(n_rows // G, G)
        cap = max(plan.want, math.ceil(ex.max_generation_factor * plan.want))
        served: set[str] = set()
        results: list[tuple[str, float, int]] = []
        generated = informative_seen = round_ = 0
        while generated < cap:
            (need,) = self._global_max(plan.missing)
            if need <= 0:
                break
            rate = max(informative_seen / generated, 0.2) if generated else 1.0  # informative share so far
            m = min(cap - generated, math.ceil(need / rate))
            keys = cur.draw(m * world, step, round_, served)
            if not keys:
                if round_ == 0:
                    raise MidtrainError("curriculum: no prompt left to serve (every one retired or served curriculum.max_reuse times)")
                break
            keys = (keys * math.ceil(m * world / len(keys)))[: m * world]  # a dry pool repeats rather than stalls
            served.update(keys)
            rows = [dict(cur.rows[k]) for k in keys[rank * m : (rank + 1) * m] for _ in range(G)]
            batch, scored = self._scored(rows)
            local = slice(rank * m * G, (rank + 1) * m * G)
            informative = group_informative(scored.rewards.nansum(dim=1)[local], G, scored.failed[local])  # [m]
            plan.add(batch, informative.cpu())
            successes = torch.tensor(scored.success or [0.0] * len(rows), dtype=torch.float64).view(m, G).sum(dim=1)  # [m]
            all_successes = self._gather(successes)  # [m·world], in key order
            results += [(k, float(c), G) for k, c in zip(keys, all_successes.tolist())]
            (inf,) = self._global_sum(float(informative.sum()))
            informative_seen += int(inf) // world  # per rank, as generated counts
            generated += m
            round_ += 1
        cur.update(results, step)
        merged, topped = plan.merge(self._tokenizer.pad_token_id)
        merged["num_items_in_batch"] = self._gather(merged["completion_mask"].sum().unsqueeze(0)).sum()
        counters = ex.counters
        (topped_all,) = self._global_sum(float(topped))
        counters.groups_requested += plan.want * world
        counters.groups_generated += generated * world
        counters.groups_topped_up += topped_all
        counters.refill_rounds += round_
        counters.cap_binds += float(topped_all > 0)
        return merged

    def _gather(self, t: torch.Tensor) -> torch.Tensor:
        t = t.to(self.accelerator.device)
        return self.accelerator.gather(t) if self.accelerator.num_processes > 1 else t

    def _global_max(self, *values: float) -> list[float]:
        t = torch.tensor(values, dtype=torch.float64, device=self.accelerator.device)
        if self.accelerator.num_processes > 1:
            t = self.accelerator.gather(t.unsqueeze(0)).max(0).values
        return t.tolist()

    def _generate(self, prompts: list) -> Generation:
        # TRL: tokenize the prompts, sample (_generate_single_turn), decode. Midtrain times it, counts generated and
        # thinking tokens, and with bf16_generation runs it under bf16 autocast, the precision the run asked for;
        # the completions are TRL's own.
        t0 = time.perf_counter()
        bf16 = self.extras.bf16_generation
        with torch.autocast(self.accelerator.device.type, dtype=torch.bfloat16) if bf16 else nullcontext():
            out = Generation.of(super()._generate(prompts))
        counters = self.extras.counters
        counters.gen_s += time.perf_counter() - t0
        texts = [c if isinstance(c, str) else c[-1]["content"] for c in out.completions]  # chat: the last message
        think_here = sum(
            thinking_tokens(ids, c, p if isinstance(p, str) else "", self._tokenizer)
            for ids, c, p in zip(out.completion_ids, texts, prompts)
        )
        tokens, n, think = self._global_sum(sum(len(c) for c in out.completion_ids), len(out.completion_ids), think_here)
        counters.tokens_generated += tokens
        counters.completions += n
        counters.think_tokens += think
        return out

    def _generate_single_turn(self, prompt_ids, images, multimodal_fields, num_generations, has_tool_images=False):
        # TRL: model.generate on the left-padded prompts (or vLLM), each row cut after its first stop id. Midtrain:
        # the KV-cache sampler (rollouts.py) when it reproduces that path: the same padding and positions, the same
        # temperature → top-k → top-p distribution and stop ids (identical completions when sampling is
        # deterministic; ~2x less generation time on CPU). Anything it does not reproduce falls back to TRL's.
        completions = sampler_rollouts(self, prompt_ids, images, multimodal_fields, has_tool_images, bf16=self.extras.bf16_generation)
        if completions is not None:
            return completions, None  # no per-token sampling log-probs, like TRL's transformers path
        return super()._generate_single_turn(prompt_ids, images, multimodal_fields, num_generations, has_tool_images)

    def _calculate_rewards(self, inputs, prompts, completions, completion_ids_list):
        # TRL: call the reward on this rank's completions and gather the [N_all, F] matrix over ranks. Midtrain reads
        # without changing it: the time; which samples failed (gathered, so every rank masks the same groups); the
        # judge's failures summed over ranks, so that a step past judge.max_error_frac stops every rank at once (one
        # rank raising alone would leave the others waiting in the next collective); the reward's statistics; for
        # credit first_error each local completion's first wrong step; with a curriculum, which ones are solved.
        t0 = time.perf_counter()
        rewards = super()._calculate_rewards(inputs, prompts, completions, completion_ids_list)
        extras = self.extras
        flags = extras.reward.last_failed if len(extras.reward.last_failed) == len(inputs) else [False] * len(inputs)
        failed = self._gather(torch.tensor(flags, dtype=torch.long)).bool()  # [N_all]
        n_failed, asked = self._global_sum(*extras.reward.take_judge_tally())
        extras.reward.abort_if_failed(int(n_failed), int(asked))
        errors_at = None
        if extras.credit == "first_error":
            errors_at = first_error_tokens(inputs, completions, completion_ids_list, self._tokenizer)
        success = None
        if extras.success is not None:
            texts = [c if isinstance(c, str) else c[-1]["content"] for c in completions]
            rank, n = self.accelerator.process_index, len(inputs)
            success = extras.success(inputs, texts, rewards.nansum(dim=1)[rank * n : (rank + 1) * n].tolist())
        self.batch_rewards = BatchRewards(rewards, errors_at, failed, success)
        extras.counters.reward_s += time.perf_counter() - t0
        (errors,) = self._global_sum(extras.reward.take_errors())
        extras.counters.reward_errors += errors
        take = getattr(extras.reward.fn, "take_stats", None)
        if callable(take):  # info_gain: sums of the gain and its two terms, the same keys on every rank
            stats = take()
            for k, v in zip(stats, self._global_sum(*stats.values())):
                extras.reward_stats[k] = extras.reward_stats.get(k, 0.0) + v
        return rewards

    def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
        # TRL: the clipped surrogate over every row of the micro-batch, Σ tokens / (n·L_max) under dr_grpo. A row whose
        # advantage is 0 on every token adds exactly 0 to that sum and to its gradient (min(r·0, clip(r)·0) = 0) but
        # costs a forward and a backward. Under dr_grpo with β = 0 (no KL term to keep it) midtrain forwards only the
        # K rows with Â ≠ 0 and multiplies TRL's loss by K/n, which restores the normaliser n·L_max: the same loss and
        # gradient (tests/train/test_rl_invariance.py compares them). Every rank forwards the same K, the most any rank
        # needs, topped up with Â = 0 rows: after the loss TRL gathers per-row clip statistics over ranks, and a gather
        # of unequal lengths aborts a gloo run (NCCL does not check sizes). It also counts the trained tokens over ranks.
        n = inputs["completion_ids"].size(0)
        dual = self._suffix_nll_term(model, inputs)  # RMT: every row, before the skip below drops the Â = 0 ones
        scale = 1.0
        # (grpo, and so gspo, averages per-sequence losses over the n rows: the same K/n rescaling is exact there too)
        if self.extras.skip_zero_advantage and self.loss_type in ("dr_grpo", "grpo") and self.beta == 0.0:
            (most,) = self._global_max(float(informative_rows(inputs["advantages"]).numel()))
            keep = informative_rows(inputs["advantages"], min_rows=int(most))
            if keep.numel() < n:
                inputs = {k: v.index_select(0, keep) if torch.is_tensor(v) and v.dim() and v.size(0) == n else v for k, v in inputs.items()}
                scale = keep.numel() / n
        (tokens,) = self._global_sum(float(inputs["prompt_mask"].sum() + inputs["completion_mask"].sum()))
        self.extras.counters.tokens_trained += tokens
        loss = super().compute_loss(model, inputs, return_outputs, num_items_in_batch)
        loss = loss * scale if scale != 1.0 else loss
        return loss if dual is None else loss + dual

    def _suffix_nll_term(self, model: Any, inputs: dict[str, Any]) -> torch.Tensor | None:
        """``loss.suffix_nll_weight``: w · :func:`midtrain.train.grpo.suffix_nll` of the micro-batch's true suffixes,
        each teacher-forced after its prompt and its own completion's thought (cut at ``</think>``), in one padded
        forward of ``model`` with the gradient (:func:`midtrain.train.info_gain.reference_logits`); divided by the
        accumulation steps as TRL divides its loss, so the micro-batches add up to the batch's mean. Every row counts
        (zero-advantage ones too: their NLL is not zero), and its tokens count as trained. None when off."""
        w, close = self.extras.suffix_nll_weight, self.extras.close_id
        if not w or "suffix_ids" not in inputs:
            return None
        assert close is not None, "suffix_nll_weight needs RLExtras.close_id"
        contexts, refs, pad = suffix_nll_inputs(inputs, self.processing_class, close)
        nll = suffix_nll(*reference_logits(model, contexts, refs, pad))
        tokens, total, ranks = self._global_sum(sum(map(len, contexts + refs)), float(nll.detach()), 1.0)
        self.extras.counters.tokens_trained += tokens
        mode = "train" if self.model.training else "eval"
        self._metrics[mode]["suffix_nll"].append(total / ranks)
        return w * nll / (self.current_gradient_accumulation_steps if mode == "train" else 1.0)

    def _get_per_token_logps_and_entropies(
        self, model, input_ids, attention_mask, logits_to_keep, batch_size=None, compute_entropy=False, compute_aux_loss=False, **media
    ):
        # TRL: one forward per batch_size rows (all rows, in the loss) over the whole padded width [n, P + T]; the
        # log-probs (and entropies) of the last T = logits_to_keep positions, 0 where the label is padding. Midtrain,
        # with pack_rows: the rows sorted by length in chunks of pack_rows, each forwarded on only the columns its rows
        # use (rl_packing.py): the same values, so the loss and its gradient are TRL's for every loss type, on fewer
        # padded positions. TRL's path for images, MoE aux losses, FSDP and DeepSpeed (which gather sharded weights per
        # forward and are used with one forward per backward); DDP's reducer takes several forwards before one
        # backward (each parameter's gradient hook fires once per backward).
        rows = min(self.extras.pack_rows, batch_size or input_ids.size(0))
        sharded = self.is_fsdp_enabled or self.is_deepspeed_enabled
        if rows < 1 or compute_aux_loss or sharded or any(v is not None for v in media.values()):
            return super()._get_per_token_logps_and_entropies(
                model, input_ids, attention_mask, logits_to_keep, batch_size, compute_entropy, compute_aux_loss, **media
            )
        P = input_ids.size(1) - logits_to_keep  # prompt columns
        trim_left = shift_free(self.accelerator.unwrap_model(model).config)  # rotary positions: a shift changes nothing
        chunks = plan_chunks(attention_mask, logits_to_keep, rows, trim_left=trim_left)
        logps, entropies = [], []
        for c in chunks:
            idx = c.rows.to(input_ids.device)
            ids, mask = input_ids[idx, c.start : c.end], attention_mask[idx, c.start : c.end]  # [k, end − start]
            lp, ent, _ = super()._get_per_token_logps_and_entropies(model, ids, mask, c.end - P, compute_entropy=compute_entropy)
            logps.append(lp)  # [k, end − P]: the chunk's first end − P completion columns
            entropies.append(ent)
        ent_all = scatter_back(chunks, entropies, logits_to_keep) if compute_entropy else None
        return scatter_back(chunks, logps, logits_to_keep), ent_all, None


__all__ = [
    "BATCH_KEYS",
    "BatchRewards",
    "Generation",
    "MidtrainGRPOTrainer",
    "RLExtras",
    "TESTED_TRL",
    "TRL_HOOKS",
    "add_stop_ids",
    "build_grpo_config",
    "first_error_tokens",
    "hook_changes",
    "parameters",
    "thinking_tokens",
    "token_at",
]
