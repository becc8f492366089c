"""``midtrain rl``: Dr. GRPO through TRL's GRPOTrainer, for answer tasks (RLVR) and suffix tasks (RL mid-training).

Algorithm (DESIGN §1.4, :mod:`midtrain.train.grpo`): each step takes P prompts, samples G completions per prompt
with the KV cache (never without it: 15x slower on CPU), scores them with a reward, and updates the policy with the
clipped surrogate, mean-only group advantages Â = R − mean(R) and the constant normaliser N·L_max; β = 0 (no KL,
no reference model). TRL options: ``loss_type="dr_grpo"``, ``scale_rewards="none"``, ``beta=0.0`` (every knob is a
key of :class:`midtrain.train.rl_config.RLConfig`, grouped in sections: ``prompts``, ``judge``, ``rollout``,
``vllm``, ``loss``, ``optim``).

Two task kinds, one trainer:

- ``answer`` (RL post-training): prompt → ``<think>…</think>`` → final answer, scored by a verifier (``math``:
  math-verify, ``choice``: option letter, ``synthetic_*``: the controlled world's outcome/process/strict reward).
  ``prompts.template: thinking`` wraps raw questions (GSM8K, MATH) in a thinking prompt that ends in ``<think>``.
- ``suffix`` (RL mid-training, DESIGN §1.1 step 3): prompt = prefix of an augmented chunk, the model thinks and
  predicts the continuation. Four rewards: ``judge`` (a judge compares the continuation with the true suffix; the
  seed paper's, ``judge.kind: llm`` the real one), ``exact_match`` (RPT, arXiv 2506.08007: 1 iff the continuation
  equals the true next segment), ``info_gain`` (RLP, arXiv 2510.01265, :mod:`midtrain.train.info_gain`:
  generation stops at ``</think>``, only the thought is trained, and its reward is the mean log-likelihood of the
  true suffix given the thought under the policy minus that under an EMA of the policy given no thought;
  ``loss.ema_decay``; ``loss.nothink_baseline: none`` drops the EMA, which cancels from the advantages) and
  ``ref_prob`` (RLPR, arXiv 2506.18254: the same thought-only setup, rewarded by the mean token probability of the
  true suffix after the thought under the policy). Any suffix reward can add RMT's next-token loss on the true
  suffix after each completion's own thought (arXiv 2509.24375, ``loss.suffix_nll_weight``, logged as ``suffix_nll``).

Rewards are the plain callables of :mod:`midtrain.train.rewards`; a sample whose reward raises, or whose judge
request failed, scores 0 and is counted (``reward_errors``); a step whose judging failed (``judge.max_error_frac``
of it, default all) stops the run. LLM-judge verdicts are cached in ``verdict_cache.jsonl`` of the run directory
(a resumed run does not re-ask them); the verdict budget is ``judge.max_new_tokens`` (thoughts are stripped
first). The run directory is an HF checkpoint dir at the end (``save_pretrained`` + tokenizer), with ``log.jsonl``
(one line per logged step, :mod:`midtrain.train.rl_log`: loss, reward mean/std, zero-variance groups, completion
and thinking lengths (tokens up to the last ``</think>``, or ``</solution>`` in the synthetic world), seconds in
generation/reward/training; info_gain adds ``info_gain``, ``logp_think``, ``logp_nothink`` (with its EMA), ref_prob
``ref_prob``, ``logp_think``), ``checkpoints/checkpoint-N`` for resume (+ ``ema.safetensors`` with info_gain's
EMA; a re-run of an interrupted run continues from the newest complete checkpoint), and ``midtrain.json`` metrics
(final reward, steps, tokens, FLOPs ≈ 6·N·trained + 2·N·generated tokens; the RMT loss's forwards count as trained).

Weight-space instruments (``weights``, PRISM): ``weights.mask`` trains only the entries of a mask (subnetwork RL,
:mod:`midtrain.train.subnetwork`: every other entry stays bit-identical), ``weights.watch`` logs the share of
entries changed since the start per layer in the bf16 and fp32 views (``changed_bf16/<group>``,
:mod:`midtrain.train.weight_watch`).

Reward hacking, live (``probe``, ``early_stop``; :mod:`midtrain.train.probe`): on a synthetic reward, held-out
problems are sampled at T = 1 and process-verified at step 0 and every ``probe.every`` steps (``probe_verified``,
``probe_outcome``, ``probe_hacking``, ``probe_first_wrong_step`` in ``log.jsonl``); ``early_stop`` ends a run whose
probe hacks and keeps the checkpoint before the onset as its model. Every record also holds proxy detectors
(``proxy_*``, :mod:`midtrain.train.proxies`): advantage statistics, the share of rewarded completions the strict
verifier rejects, and a k3 estimate of the KL to the initial policy without a reference model.

Simplifications: completions are plain text (no chat template, no tools); the seconds in ``log.jsonl`` are rank
0's (token and error counts are summed over ranks).

Where things are: the config (:mod:`midtrain.train.rl_config`), task records → prompts
(:mod:`midtrain.train.rl_tasks`), the trainer and its TRL hooks (:mod:`midtrain.train.rl_trainer`), the step log
and checkpoint counters (:mod:`midtrain.train.rl_log`); this module validates every input before the run directory
exists, builds the reward, and runs. The optimizer is the ``optim`` section shared with pretrain/sft (RL defaults:
AdamW lr 1e-6, constant, no warm-up, no weight decay); what every training stage shares — run directory on rank 0,
resume point, log truncation, precision, the step-log callback base, the final save — is
:mod:`midtrain.train.engine`.

Launch: ``midtrain rl --model CKPT --data tasks.jsonl --out runs/rl`` on one CPU/GPU;
``accelerate launch --config_file configs/accelerate/ddp.yaml -m midtrain rl --config x.yaml`` to scale out,
``vllm.mode: colocate|server`` for vLLM rollouts (docs/scale-out.md).
"""

from __future__ import annotations

import importlib.util
import json
import time
from collections.abc import Sequence
from typing import Any

import torch
from transformers import PrinterCallback
from transformers.utils import logging as hf_logging

from midtrain.console import fmt_num, log, seed_everything
from midtrain.errors import ConfigError, MidtrainError
from midtrain.fileio import atomic_write_json
from midtrain.llm.judge import VERDICT_CACHE, LLMJudge, VerdictCache, build_judge
from midtrain.models.init import check_model_dir, load_model
from midtrain.runs import Result
from midtrain.train.curriculum import Curriculum, CurriculumSettings
from midtrain.train.engine import CKPT_DIR, open_training_run, resolve_precision, save_final, start, train
from midtrain.train.grpo import rl_flops
from midtrain.train.info_gain import EMA_FILE, InfoGainReward, RefProbReward, SuffixScorer, attach, check_full_parameters, close_token_id
from midtrain.train.probe import HackingMonitor, ProbeItem, attach_monitor, kept_weights, probe_metrics, probe_set, restore_weights
from midtrain.train.proxies import ProxyMeter
from midtrain.train.ranks import is_main
from midtrain.train.rewards import SafeReward, build_reward, success_fn
from midtrain.train.rl_config import POLICY_SCORED, RLConfig
from midtrain.train.rl_log import COUNTERS, Counters, RLLogCallback
from midtrain.train.rl_tasks import load_tasks, problem_maker
from midtrain.train.subnetwork import Subnetwork, load_masks
from midtrain.train.trackers import check_installed, connect
from midtrain.train.weight_watch import WeightWatch


def check_vllm(cfg: RLConfig) -> None:
    """A ConfigError unless the ``vllm.mode`` asked for can run here (vLLM installed; colocate: a CUDA GPU)."""
    mode = cfg.vllm.mode
    if mode == "off":
        return
    if importlib.util.find_spec("vllm") is None:
        raise ConfigError(f"key 'vllm.mode': '{mode}' needs vLLM (pip install 'midtrain[vllm]'); use vllm.mode=off on this machine")
    if mode == "colocate" and not torch.cuda.is_available():
        raise ConfigError("key 'vllm.mode': colocate needs a CUDA GPU; use vllm.mode=off on CPU")


def bf16_generation(cfg: RLConfig) -> bool:
    """Whether the trainer generates under bf16 autocast: precision bf16 here, and no vLLM (which has its own)."""
    return resolve_precision(cfg.precision) == "bf16" and cfg.vllm.mode == "off"


def make_reward(cfg: RLConfig, tokenizer: Any) -> tuple[SafeReward, Any, SuffixScorer | None]:
    """The stage's reward, with its judge (reward judge) or its policy scorer (info_gain, ref_prob; bound later)."""
    judge: Any = None
    scorer: InfoGainReward | RefProbReward | None = None
    name = cfg.resolved_reward()
    if name == "judge":
        judge = build_judge(cfg.judge)  # verdicts in memory until the run directory exists (run)
    if name in POLICY_SCORED:
        baseline = cfg.loss.nothink_baseline if name == "info_gain" else "none"
        check_full_parameters(reward=name, ema=baseline == "ema")
        close, bf16 = close_token_id(tokenizer, who=name), bf16_generation(cfg)  # scored as generated
        if name == "info_gain":
            scorer = InfoGainReward(tokenizer, close, bf16=bf16, baseline=cfg.loss.nothink_baseline)
        else:
            scorer = RefProbReward(tokenizer, close, bf16=bf16)
    reward = build_reward(name, judge=judge, judge_max_error_frac=cfg.judge.max_error_frac, scorer=scorer)
    return reward, judge, scorer


def bind_scorer(trainer: Any, scorer: SuffixScorer, cfg: RLConfig, callback: RLLogCallback, resume: Any) -> None:
    """A policy scorer bound to the trainer's policy; with info_gain's EMA baseline, the EMA updated after every
    step and saved into every checkpoint before its completion marker."""
    ema = attach(trainer, scorer, cfg.loss.ema_decay, resume)
    if ema is not None:
        save_ema = ema.save
        callback.checkpoint_hooks.append(lambda ckpt: save_ema(ckpt / EMA_FILE))


def weight_space(cfg: RLConfig, model: Any, callback: RLLogCallback) -> list[Any]:
    """The callbacks of the ``weights`` section, built on the initial ``model``: subnetwork RL (``weights.mask``,
    :mod:`midtrain.train.subnetwork`) and the changed ratio per layer (``weights.watch``,
    :mod:`midtrain.train.weight_watch`); their values join every log record."""
    w = cfg.weights
    out: list[Subnetwork | WeightWatch] = []
    if w.mask:
        out.append(Subnetwork(model, load_masks(w.mask, w.mask_control, cfg.seed), restore=cfg.optim.weight_decay > 0))
    if w.watch:
        out.append(WeightWatch(model, w.watch))
    callback.record_hooks.extend(c.stats for c in out)
    return out


CURRICULUM_FILE = "curriculum.json"  # the curriculum's state, in every checkpoint


def make_curriculum(cfg: RLConfig, tokenizer: Any, rows: list[dict[str, Any]], held_out: Sequence[ProbeItem] = ()) -> Curriculum | None:
    """The online curriculum of ``cfg.curriculum`` over the task rows (mode pool) or over generated problems (mode
    generate, never one of the ``held_out`` probe problems); None with mode off."""
    c = cfg.curriculum
    if c.mode == "off":
        return None
    settings = CurriculumSettings(
        group_size=cfg.rollout.num_generations,
        decay=c.decay,
        revisit_share=c.revisit_share,
        max_reuse=c.max_reuse,
        retire_after=c.retire_after,
        defer_after=c.defer_after,
        defer_steps=c.defer_steps,
        deferred_weight=c.deferred_weight,
        band_min=c.generate.band_min,
        band_max=c.generate.band_max,
        seed=cfg.seed,
    )
    if c.mode == "pool":
        return Curriculum(settings, {str(i): row for i, row in enumerate(rows)})
    make, probe_ids = problem_maker(cfg, tokenizer), {str(it.record.get("id")) for it in held_out}
    return Curriculum(
        settings,
        {},
        ops=c.generate.op_list(),
        make_problems=lambda op, n, seed: [(k, r) for k, r in make(op, n, seed) if k not in probe_ids],
    )


def make_extras(
    cfg: RLConfig,
    counters: Counters,
    reward: SafeReward,
    callback: RLLogCallback,
    scorer: Any,
    curriculum: Curriculum | None,
    close_id: int | None = None,
) -> Any:
    """The trainer's one extra argument (:class:`midtrain.train.rl_trainer.RLExtras`) for ``cfg`` (``close_id``: the
    id of ``</think>``, which ``loss.suffix_nll_weight`` needs)."""
    from midtrain.train.rl_trainer import RLExtras  # imports TRL

    return RLExtras(
        counters=counters,
        reward=reward,
        reward_stats=callback.reward_stats,
        bf16_generation=bf16_generation(cfg),
        skip_zero_advantage=cfg.loss.skip_zero_advantage,
        pack_rows=cfg.loss.pack_rows,
        credit=cfg.loss.credit,
        stop_ids=(scorer.close_id,) if scorer is not None else (),  # info_gain, ref_prob: the thought only
        baseline=cfg.loss.baseline,
        curriculum=curriculum,
        max_generation_factor=cfg.curriculum.max_generation_factor,
        success=success_fn(cfg.resolved_reward()) if curriculum is not None else None,
        suffix_nll_weight=cfg.loss.suffix_nll_weight,
        close_id=close_id,
        proxies=ProxyMeter(cfg.resolved_reward().startswith("synthetic_"), strict=cfg.resolved_reward() == "synthetic_strict"),
    )


def keep_curriculum(curriculum: Curriculum, callback: RLLogCallback, resume: Any) -> None:
    """The curriculum's state into every checkpoint (before its completion marker), back from the one resumed
    (so a killed run draws the same prompts), and its counts into every log record."""
    if resume is not None and (resume / CURRICULUM_FILE).exists():
        curriculum.load_state_dict(json.loads((resume / CURRICULUM_FILE).read_text()))
    callback.checkpoint_hooks.append(lambda ckpt: atomic_write_json(ckpt / CURRICULUM_FILE, curriculum.state_dict()))
    callback.extra_stats.append(curriculum.summary)


def placeholder_rows(cfg: RLConfig) -> list[dict[str, Any]]:
    """TRL's dataset when the curriculum generates every prompt: TRL's sampler then only counts the step's groups."""
    per_step = cfg.per_device_batch_size * cfg.optim.grad_accum_steps // cfg.rollout.num_generations
    return [{"prompt": f"(drawn by the curriculum {i})"} for i in range(max(per_step, 1))]


def run(cfg: RLConfig) -> Result:
    """Dr. GRPO RL on ``cfg.data`` starting from ``cfg.model`` (see the module docstring)."""
    from datasets import Dataset

    from midtrain.models.tokenizer import load_tokenizer
    from midtrain.train.rl_trainer import MidtrainGRPOTrainer, build_grpo_config  # imports TRL

    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    hf_logging.disable_progress_bar()  # no "Loading weights" / "Writing model shards" bars between our log lines
    check_vllm(cfg)
    check_installed(cfg.report_to)
    model_conf = check_model_dir(cfg.model)  # every input is validated before the run dir exists
    tokenizer = load_tokenizer(cfg.model)
    tokenizer.padding_side = "left"
    rows, data_stats = load_tasks(cfg, tokenizer, getattr(model_conf, "max_position_embeddings", None))
    curriculum = make_curriculum(cfg, tokenizer, rows, probes := probe_set(cfg, rows))  # probes: held out (none when off)
    reward, judge, scorer = make_reward(cfg, tokenizer)
    close = close_token_id(tokenizer, "loss.suffix_nll_weight", "the RMT loss") if cfg.loss.suffix_nll_weight else None
    vocab = getattr(model_conf.get_text_config(), "vocab_size", None)
    if vocab is not None and len(tokenizer) > vocab:
        raise MidtrainError(f"model '{cfg.model}': the tokenizer has {len(tokenizer)} tokens but the model only {vocab} embeddings")
    inputs = {"model": cfg.model, **{f"data[{i}]": p for i, p in enumerate(cfg.data)}}
    with open_training_run(cfg.out, "rl", cfg, inputs, overwrite=cfg.overwrite, seed=cfg.seed) as run_:
        if run_.cached:
            return Result.of(run_)
        model = load_model(cfg.model)  # (a bad checkpoint fails here and leaves no run directory behind)
        if isinstance(judge, LLMJudge):  # verdicts kept in the run dir, as `midtrain judge` does: a resume does not re-ask
            judge.cache = VerdictCache(run_.path / VERDICT_CACHE)
        seed_everything(cfg.seed)
        counters = Counters()
        resume, history = start(run_, COUNTERS, model_conf)
        if resume is not None:
            counters.load(json.loads((resume / COUNTERS).read_text()))
        args = build_grpo_config(cfg, str(run_.path / CKPT_DIR))
        callback = RLLogCallback(run_, counters, cfg.max_steps, history)  # the steps before a checkpoint count too
        extras = make_extras(cfg, counters, reward, callback, scorer, curriculum, close)
        if curriculum is not None:
            keep_curriculum(curriculum, callback, resume)
        trainer = MidtrainGRPOTrainer(
            extras,
            model=model,
            args=args,
            train_dataset=Dataset.from_list(rows or placeholder_rows(cfg)),
            processing_class=tokenizer,
            callbacks=[callback, *weight_space(cfg, model, callback)],  # (before a resume loads weights: the initial ones)
        )
        trainer.remove_callback(PrinterCallback)  # our callback prints one line per logged step
        connect(trainer, callback, cfg, cfg.report_to, run_.path, resume)
        if scorer is not None:
            bind_scorer(trainer, scorer, cfg, callback, resume)
        monitor = attach_monitor(trainer, callback, cfg, probes, extras.proxies, run_.path, bf16_generation(cfg))  # probe, proxies
        n_params = sum(p.numel() for p in model.parameters())
        t0 = time.time()
        if is_main():
            log(
                f"rl: {cfg.task} task, reward {reward.name}, {len(rows)} prompts, G={cfg.rollout.num_generations}, "
                f"{n_params / 1e6:.2f}M params, {'bf16' if args.bf16 else 'fp32'}, {cfg.max_steps} steps → {run_.path}"
            )
        steps = train_until_stop(trainer, monitor, cfg, resume, run_.path / CKPT_DIR)
        save_final(trainer, tokenizer, run_.path)
        if not is_main():
            return Result.of(run_)
        metrics = final_metrics(cfg, callback.history, counters, reward, data_stats, n_params, steps)
        metrics.update(
            **probe_metrics(callback.history, monitor.stop),
            train_seconds_this_session=round(time.time() - t0, 3),
            resumed_from=resume.name if resume is not None else None,
            precision="bf16" if args.bf16 else "fp32",
        )
        run_.finish(metrics)
        log(
            f"rl: done, reward {fmt_num(metrics['reward_mean_first'], '.3f')} → {fmt_num(metrics['reward_mean_final'], '.3f')}, "
            f"{metrics['tokens_generated']} tokens generated → {run_.path}"
        )
        return Result.of(run_)


def train_until_stop(trainer: Any, monitor: HackingMonitor, cfg: RLConfig, resume: Any, ckpt_dir: Any) -> int:
    """Train (unless the probe's history already stopped the run before a kill); after an early stop the model is the
    kept pre-onset weights (probe.py). The run's step count."""
    if monitor.stop is None:
        train(trainer, resume)
    stop = monitor.stop
    if stop is None:
        return int(trainer.state.global_step)
    source = kept_weights(cfg, ckpt_dir, stop)
    if source.is_dir():
        restore_weights(trainer, source)
    elif is_main():  # (a checkpoint removed by hand: nothing to restore from)
        log(f"[warning] early stop: {source} is missing; the final model is the last trained one")
    return stop.stopped_at


def final_metrics(
    cfg: RLConfig, history: list[dict[str, Any]], c: Counters, reward: SafeReward, data_stats: dict[str, int], n_params: int, steps: int
) -> dict[str, Any]:
    """``midtrain.json``'s metrics of a finished run, from the step log's records and the run's counters."""
    history = [h for h in history if "reward_mean" in h]  # training steps (not the probe's step-0 record)
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


__all__ = ["bf16_generation", "check_vllm", "final_metrics", "make_reward", "run"]
