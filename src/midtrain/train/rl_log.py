"""What one ``midtrain rl`` step logs, and what a checkpoint must hold to resume the counts.

:class:`Counters` accumulate over the run what the trainer measures (:mod:`midtrain.train.rl_trainer`): seconds in
generation and reward, generated and trained tokens, completions, thinking tokens and reward errors (counts summed
over ranks, seconds rank 0's). They are saved into every checkpoint as ``midtrain_counters.json``, whose presence
marks the checkpoint complete, and restored on resume. :class:`RLLogCallback` turns them, averaged over the logging
window, into one ``log.jsonl`` record and one progress line per logged step: reward mean/std, zero-variance groups,
completion and thinking lengths, s/step split into generation / reward / training. A reward with ``take_stats()``
(info_gain: the gain and its two log-prob terms, as sums with a count ``n``) adds its per-sample means;
``checkpoint_hooks`` write extra state (the info_gain EMA) into a checkpoint before its completion marker;
``record_hooks`` add values to every record (the live probe's ``probe_*`` and the ``proxy_*`` detectors of
:mod:`midtrain.train.probe`), and :meth:`RLLogCallback.add_record` writes a record of no training step (the probe at
step 0, before the first update).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, ClassVar

from midtrain.console import clock, fmt_num
from midtrain.fileio import atomic_write_json
from midtrain.runs import Run
from midtrain.train.steplog import StepLogCallback, Window, append_log

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
        "groups_masked",  # groups left out of the loss because a reward call failed
        # the online curriculum (zero without one): groups the steps asked for, generated, topped up with
        # zero-variance groups when the refill cap bound, refill rounds, and steps where the cap bound
        "groups_requested",
        "groups_generated",
        "groups_topped_up",
        "refill_rounds",
        "cap_binds",
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
    groups_masked: float
    groups_requested: float
    groups_generated: float
    groups_topped_up: float
    refill_rounds: float
    cap_binds: float

    def __init__(self) -> None:
        for f in self.FIELDS:
            setattr(self, f, 0.0)

    def to_dict(self) -> dict[str, float]:
        return {f: getattr(self, f) for f in self.FIELDS}

    def load(self, d: dict[str, float]) -> None:
        for f in self.FIELDS:
            setattr(self, f, float(d.get(f, 0.0)))


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
        self.reward_stats: dict[str, float] = {}  # summed over ranks by the trainer (RLExtras.reward_stats: this object)
        self.checkpoint_hooks: list[Callable[[Path], None]] = []
        self.extra_stats: list[Callable[[], dict[str, float]]] = []  # more values per record (the curriculum's counts)
        self.record_hooks: list[Callable[[], dict[str, Any]]] = []  # values for every record (probe, proxies, weight stats)
        self._groups_logged = (counters.groups_requested, counters.groups_generated)

    def on_step_begin(self, args, state, control, **kw):
        self._t0 = time.perf_counter()
        self._snap = (self.c.gen_s, self.c.reward_s, self.c.tokens_generated, self.c.completions, self.c.think_tokens)

    def on_step_end(self, args, state, control, **kw):
        wall = time.perf_counter() - self._t0
        gen, rew = self.c.gen_s - self._snap[0], self.c.reward_s - self._snap[1]
        self.c.train_s += max(wall - gen - rew, 0.0)  # the rest of the step: forward, backward, optimizer
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
            **({"suffix_nll": logs["suffix_nll"]} if logs.get("suffix_nll") is not None else {}),  # loss.suffix_nll_weight (RMT)
            "tokens_generated": int(self.c.tokens_generated),
            "tokens_trained": int(self.c.tokens_trained),
            **reward_means(self.reward_stats),
            **self.curriculum_record(),
            **{k: v for hook in self.record_hooks for k, v in hook().items()},
        }
        self.reward_stats.clear()
        return {k: (round(v, 6) if isinstance(v, float) else v) for k, v in rec.items()}

    def curriculum_record(self) -> dict[str, Any]:
        """The refill counts of the logging window (overgen = generated / requested groups) and the run's totals."""
        c = self.c
        out: dict[str, Any] = {"groups_masked": int(c.groups_masked)} if c.groups_masked else {}
        if not c.groups_requested:
            return out
        asked, made = c.groups_requested - self._groups_logged[0], c.groups_generated - self._groups_logged[1]
        self._groups_logged = (c.groups_requested, c.groups_generated)
        out.update(overgen=made / asked if asked else None, groups_generated=int(c.groups_generated))
        out.update(groups_topped_up=int(c.groups_topped_up), cap_binds=int(c.cap_binds))
        for stats in self.extra_stats:
            out.update(stats())
        return out

    def line(self, rec: dict[str, Any], window: Window) -> str:
        share = lambda k: 100 * rec[k] / max(rec["step_s"], 1e-9)  # noqa: E731
        errors = rec["reward_errors"]
        return (
            f"rl step {rec['step']}/{self.max_steps}  loss {fmt_num(rec['loss'], '.3f')}  reward {fmt_num(rec['reward_mean'], '.3f')}±{fmt_num(rec['reward_std'], '.3f')}"
            f"  zero-var {fmt_num(rec['zero_var_frac'], '.2f')}  len {rec['completion_len']:.0f} (think {rec['think_len']:.0f})"
            f"  {rec['step_s']:.2f} s/step (gen {share('gen_s'):.0f}% reward {share('reward_s'):.0f}% train {share('train_s'):.0f}%)"
            f"{'  errors ' + str(errors) if errors else ''}{gain_text(rec)}{refill_text(rec)}{probe_text(rec)}  ETA {clock((self.max_steps - rec['step']) * rec['step_s'])}"
        )

    def add_record(self, rec: dict[str, Any], main: bool) -> None:
        """A record that is no training step's (the probe at step 0): into the history and, on rank 0, log.jsonl."""
        self.history.append(rec)
        if main:
            append_log(self.path, rec)

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
    nothink = f" nothink {rec['logp_nothink']:.3f}" if "logp_nothink" in rec else ""  # (none without the EMA baseline)
    return f"  gain {rec['info_gain']:.3f} (logp think {rec['logp_think']:.3f}{nothink})"


def probe_text(rec: dict[str, Any]) -> str:
    """The live probe's part of a progress line (:mod:`midtrain.train.probe`; empty without one in the record)."""
    if rec.get("probe_verified") is None:
        return ""
    first = rec.get("probe_first_wrong_step")
    return (
        f"  probe verified {rec['probe_verified']:.3f} outcome {rec['probe_outcome']:.3f} hacking {rec['probe_hacking']:.3f}"
        + (f" (first wrong step at {first:.2f})" if first is not None else "")
        + ("  EARLY STOP" if rec.get("early_stop") else "")
    )


def refill_text(rec: dict[str, Any]) -> str:
    if rec.get("overgen") is None:
        return ""
    return f"  overgen {rec['overgen']:.2f}x (cap bound {rec['cap_binds']})"


__all__ = ["COUNTERS", "Counters", "RLLogCallback", "gain_text", "probe_text", "refill_text", "reward_means"]
