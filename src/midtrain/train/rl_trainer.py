"""The trainer under ``midtrain rl``: TRL's GRPOTrainer plus the bookkeeping the stage logs and resumes.

Nothing in the update changes (:mod:`midtrain.train.grpo` states the Dr. GRPO objective); the subclass only times
generation and reward, counts generated and trained tokens, completions, thinking tokens and reward errors
(:class:`Counters`, saved into every checkpoint as ``midtrain_counters.json``, whose presence marks the checkpoint
complete, and restored on resume), and :class:`RLLogCallback` turns them into one ``log.jsonl`` line and one progress
line per logged step (reward mean/std, zero-variance groups, completion and thinking lengths, s/step with the
generation / reward / training shares). Counts are summed over ranks; seconds are rank 0's. With process credit
(``credit = "first_error"``, :func:`midtrain.train.grpo.first_error_advantages`) the reward step also locates each
completion's first wrong step (:mod:`midtrain.synth.credit`, a character offset mapped to the token it falls in)
and the advantages handed to the loss become per token. A reward with
``take_stats()`` (info_gain: the gain and its two log-prob terms, as sums with a count ``n``) adds its per-sample
means over the logging window to the record; ``checkpoint_hooks`` write extra state (the info_gain EMA) into a
checkpoint before its completion marker.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from contextlib import nullcontext
from pathlib import Path
from typing import Any, ClassVar

import torch

from midtrain.runs import Run, atomic_write_json
from midtrain.synth.credit import first_error
from midtrain.thoughts import THINK_CLOSE, THINK_OPEN
from midtrain.train.engine import (
    StepLogCallback,
    Window,
)
from midtrain.train.grpo import first_error_advantages, informative_rows
from midtrain.train.rewards import (
    SafeReward,
    synthetic_problem,
)
from midtrain.train.rollouts import SamplerRollouts

COUNTERS = "midtrain_counters.json"  # written into a checkpoint once it is complete


class Counters:
    """Seconds and tokens accumulated over the run (saved with each checkpoint, restored on resume)."""

    FIELDS: ClassVar[tuple[str, ...]] = (
        "gen_s",
        "reward_s",
        "train_s",
        "tokens_generated",
        "tokens_trained",
        "completions",
        "reward_errors",
        "think_tokens",
    )
    # One float attribute per name in FIELDS (set by __init__ and load).
    gen_s: float
    reward_s: float
    train_s: float
    tokens_generated: float
    tokens_trained: float
    completions: float
    reward_errors: float
    think_tokens: float

    def __init__(self) -> None:
        for f in self.FIELDS:
            setattr(self, f, 0.0)

    def to_dict(self) -> dict[str, float]:
        return {f: getattr(self, f) for f in self.FIELDS}

    def load(self, d: dict[str, float]) -> None:
        for f in self.FIELDS:
            setattr(self, f, float(d.get(f, 0.0)))


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


def make_trainer_class() -> type:
    from trl import GRPOTrainer

    class MidtrainGRPOTrainer(SamplerRollouts, GRPOTrainer):  # rollouts: the KV-cache sampler when exact (rollouts.py)
        """GRPOTrainer + time spent in generation and reward, token and error counts (nothing else changes).

        Counts are summed over processes (every rank runs these methods in lockstep); times are this rank's.
        """

        counters: Counters
        reward: SafeReward
        reward_stats: dict[str, float]  # summed over ranks; the log callback reads and resets it
        use_bf16_generation: bool = False
        skip_zero_advantage: bool = True  # forward only completions with Â ≠ 0 (exact under Dr. GRPO, β = 0)
        credit: str = "sequence"  # or "first_error": per-token advantages from the first wrong step
        first_errors: list[int] | None = None  # this step's first-error token per local completion (−1: none)

        def _global_sum(self, *values: float) -> list[float]:
            t = torch.tensor(values, dtype=torch.float64, device=self.accelerator.device)
            if self.accelerator.num_processes > 1:
                t = self.accelerator.gather(t.unsqueeze(0)).sum(0)
            return t.tolist()

        def _generate(self, prompts: list):
            t0 = time.perf_counter()
            bf16 = self.use_bf16_generation
            with torch.autocast(self.accelerator.device.type, dtype=torch.bfloat16) if bf16 else nullcontext():
                out = super()._generate(prompts)
            self.counters.gen_s += time.perf_counter() - t0
            completion_ids, completions = out[1], out[3]
            think_here = sum(
                thinking_tokens(ids, c if isinstance(c, str) else c[-1]["content"], p if isinstance(p, str) else "", self._tokenizer)
                for ids, c, p in zip(completion_ids, completions, prompts)
            )
            tokens, n, think = self._global_sum(sum(len(c) for c in completion_ids), len(completion_ids), think_here)
            self.counters.tokens_generated += tokens
            self.counters.completions += n
            self.counters.think_tokens += think
            return out

        def _calculate_rewards(self, inputs, prompts, completions, completion_ids_list):
            t0 = time.perf_counter()
            out = super()._calculate_rewards(inputs, prompts, completions, completion_ids_list)
            if self.credit == "first_error":
                self.first_errors = first_error_tokens(inputs, completions, completion_ids_list, self._tokenizer)
            self.counters.reward_s += time.perf_counter() - t0
            (errors,) = self._global_sum(self.reward.take_errors())
            self.counters.reward_errors += errors
            take = getattr(self.reward.fn, "take_stats", None)
            if callable(take):
                stats = take()
                for k, v in zip(stats, self._global_sum(*stats.values())):
                    self.reward_stats[k] = self.reward_stats.get(k, 0.0) + v
            return out

        def _generate_and_score_completions(self, inputs):
            out = super()._generate_and_score_completions(inputs)
            if self.credit == "first_error":  # [N] → [N, T]; TRL's loss takes per-token advantages as they are
                errors = torch.tensor(self.first_errors or [], dtype=torch.long)
                out["advantages"] = first_error_advantages(out["advantages"], errors, out["completion_ids"].size(1))
            return out

        def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
            n = inputs["completion_ids"].size(0)
            scale = 1.0
            if self.skip_zero_advantage and self.loss_type == "dr_grpo" and self.beta == 0.0:
                keep = informative_rows(inputs["advantages"])
                if keep.numel() < n:  # the loss divides by the rows it sees: K/N restores the N·L_max normaliser
                    inputs = {
                        k: v.index_select(0, keep) if torch.is_tensor(v) and v.dim() and v.size(0) == n else v for k, v in inputs.items()
                    }
                    scale = keep.numel() / n
            (tokens,) = self._global_sum(float(inputs["prompt_mask"].sum() + inputs["completion_mask"].sum()))
            self.counters.tokens_trained += tokens
            loss = super().compute_loss(model, inputs, return_outputs, num_items_in_batch)
            return loss * scale if scale != 1.0 else loss

    return MidtrainGRPOTrainer


class RLLogCallback(StepLogCallback):
    """RL's ``log.jsonl`` record and progress line (reward, zero-variance groups, lengths, seconds per step split
    into generation/reward/training, averaged over the logging window); a checkpoint is complete once it holds
    the counters."""

    # TRL's log keys that the record renames (learning_rate → lr, reward → reward_mean, ...): one tracker series each
    REPLACES: ClassVar[tuple[str, ...]] = ("learning_rate", "reward", "frac_reward_zero_std", "completions/clipped_ratio")

    def __init__(self, run: Run, counters: Counters, max_steps: int, history: list[dict[str, Any]] | None = None) -> None:
        super().__init__(run, max_steps, history)
        self.c = counters
        self._errors_logged = counters.reward_errors
        self.window: list[dict[str, float]] = []
        self.reward_stats: dict[str, float] = {}  # the trainer's reward_stats (same object)
        self.checkpoint_hooks: list[Callable[[Path], None]] = []

    def on_step_begin(self, args, state, control, **kw):
        self._t0 = time.perf_counter()
        self._snap = (self.c.gen_s, self.c.reward_s, self.c.tokens_generated, self.c.completions, self.c.think_tokens)

    def on_step_end(self, args, state, control, **kw):
        wall = time.perf_counter() - self._t0
        gen, rew = self.c.gen_s - self._snap[0], self.c.reward_s - self._snap[1]
        self.c.train_s += max(wall - gen - rew, 0.0)
        n = max(self.c.completions - self._snap[3], 1)
        self.window.append(
            {
                "step_s": wall,
                "gen_s": gen,
                "reward_s": rew,
                "train_s": max(wall - gen - rew, 0.0),
                "completion_len": (self.c.tokens_generated - self._snap[2]) / n,
                "think_len": (self.c.think_tokens - self._snap[4]) / n,
            }
        )
        super().on_step_end(args, state, control, **kw)

    def record(self, state: Any, logs: dict[str, Any], window: Window) -> dict[str, Any] | None:
        if not self.window:
            return None
        errors = int(self.c.reward_errors - self._errors_logged)
        self._errors_logged = self.c.reward_errors
        avg = {k: sum(w[k] for w in self.window) / len(self.window) for k in self.window[0]}
        self.window = []
        rec = {
            "step": state.global_step,
            "loss": logs.get("loss"),
            "reward_mean": logs.get("reward"),
            "reward_std": logs.get("reward_std"),
            "zero_var_frac": logs.get("frac_reward_zero_std"),
            "completion_len": avg["completion_len"],
            "think_len": avg["think_len"],
            "gen_s": avg["gen_s"],
            "reward_s": avg["reward_s"],
            "train_s": avg["train_s"],
            "step_s": avg["step_s"],
            "reward_errors": errors,
            "clipped_frac": logs.get("completions/clipped_ratio"),
            "entropy": logs.get("entropy"),
            "grad_norm": logs.get("grad_norm"),
            "lr": logs.get("learning_rate"),
            "tokens_generated": int(self.c.tokens_generated),
            "tokens_trained": int(self.c.tokens_trained),
            **reward_means(self.reward_stats),
        }
        self.reward_stats.clear()
        return {k: (round(v, 6) if isinstance(v, float) else v) for k, v in rec.items()}

    def line(self, rec: dict[str, Any], window: Window) -> str:
        share = lambda k: 100 * rec[k] / max(rec["step_s"], 1e-9)  # noqa: E731
        errors = rec["reward_errors"]
        return (
            f"rl step {rec['step']}/{self.max_steps}  loss {fmt_value(rec['loss'])}  reward {fmt_value(rec['reward_mean'])}±{fmt_value(rec['reward_std'])}"
            f"  zero-var {fmt_value(rec['zero_var_frac'], 2)}  len {rec['completion_len']:.0f} (think {rec['think_len']:.0f})"
            f"  {rec['step_s']:.2f} s/step (gen {share('gen_s'):.0f}% reward {share('reward_s'):.0f}% train {share('train_s'):.0f}%)"
            f"{'  errors ' + str(errors) if errors else ''}{gain_text(rec)}  ETA {format_eta((self.max_steps - rec['step']) * rec['step_s'])}"
        )

    def mark_checkpoint(self, ckpt: Path, state: Any) -> None:
        for hook in self.checkpoint_hooks:  # first: the counters file marks the checkpoint complete
            hook(ckpt)
        atomic_write_json(ckpt / COUNTERS, {"step": state.global_step, **self.c.to_dict()})


def reward_means(stats: dict[str, float]) -> dict[str, float]:
    """Per-sample means of a reward's summed statistics (``n`` = the samples); nothing when none were counted."""
    n = stats.get("n", 0.0)
    return {k: v / n for k, v in stats.items() if k != "n"} if n else {}


def gain_text(rec: dict[str, Any]) -> str:
    if "info_gain" not in rec:
        return ""
    return f"  gain {rec['info_gain']:.3f} (logp think {rec['logp_think']:.3f} nothink {rec['logp_nothink']:.3f})"


def fmt_value(v: Any, digits: int = 3) -> str:
    return "nan" if v is None else f"{v:.{digits}f}"


def format_eta(seconds: float) -> str:
    m, s = divmod(int(seconds), 60)
    h, m = divmod(m, 60)
    return f"{h}h{m:02d}m" if h else f"{m}m{s:02d}s"


__all__ = ["COUNTERS", "Counters", "RLLogCallback", "fmt_value", "format_eta", "make_trainer_class", "thinking_tokens"]
