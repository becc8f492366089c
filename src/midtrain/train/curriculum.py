"""The online edge-of-competence curriculum of ``midtrain rl``: which prompts each step's groups are drawn from.

Dr. GRPO learns only from a group whose rewards differ (its advantages are R_i − mean R; a group of equal rewards
contributes exactly zero). On random edge prompts most groups are all-wrong or all-right, and their generation —
most of a CPU step — teaches nothing. Other frameworks filter a fixed pool by an outcome reward (verl
``filter_groups``, OpenRLHF ``dynamic_filtering``, open-instruct ``active_sampling``, prime-rl
``DifficultyPoolSampler``). This module does the same with three differences: the pass rate it tracks is the
*verified* (process) rate in the synthetic world, so a reward-hacked group does not look solved; prompts can be
*generated* where the policy's edge is, instead of drawn from a finite pool; and the whole state is plain JSON that
lives in every checkpoint, so a killed run resumes to the same prompts.

Algorithm (all state on every rank, identical, updated from the gathered results of all ranks):

1. **Estimate.** Prompt i keeps decayed counts (s_i, n_i) of verified successes over rollouts: after a group of G
   with k successes, s_i ← λ·s_i + k, n_i ← λ·n_i + G; a prompt not served keeps its estimate (its last
   measurement is still the best one). p̂_i = (s_i + 2·m)/(n_i + 2): the prior is worth two rollouts and centred
   on m, the pass rate of every group the run has scored (decayed per step), not on 1/2 — an empirical-Bayes
   prior: on an edge pool that the policy solves 8% of the time, one group with no success must not look like a
   coin flip. With a binary success, a group of G is informative with probability P_inf(p) = 1 − p^G − (1 − p)^G. With a
   binary success, a group of G is informative with probability P_inf(p) = 1 − p^G − (1 − p)^G.
2. **Draw.** A round asks for m groups. ``revisit_share`` of them come from prompts already seen, drawn without
   replacement with weights P_inf(p̂_i) (Gumbel top-k on a generator seeded by (seed, step, round), so the same
   state draws the same prompts); the rest are *fresh*: the next unseen prompts of a seeded permutation of the
   pool, or, in ``generate`` mode, new problems at an op count drawn with weight P_inf(p̂_op) among the op counts
   whose measured rate lies in the band [band_min, band_max] (others keep a small weight so their rate can be
   re-measured as the policy moves). A prompt is never served twice in one step nor more than ``max_reuse`` times.
3. **Retire and defer.** A prompt solved by all G rollouts in ``retire_after`` consecutive groups is retired; one
   solved by none in ``defer_after`` consecutive groups waits ``defer_steps·2^d`` steps (d = times deferred) and
   then competes with its weight multiplied by ``deferred_weight``.
4. **Refill** (the trainer, :mod:`midtrain.train.rl_trainer`): groups with equal rewards are dropped and new rounds
   are drawn until the step holds the requested number of informative groups, or the generated groups reach
   ``max_generation_factor`` × the requested ones; then the step is topped up with zero-variance groups, which add
   nothing to the loss, and the binding cap is counted.

The module is pure Python (no torch, no TRL): the trainer hands it (prompt key, successes, rewards) per group, and
``generate`` mode receives a ``make_problems(op, n, seed)`` function from ``midtrain rl``.
"""

from __future__ import annotations

import math
import random
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

MakeProblems = Callable[[int, int, int], list[tuple[str, dict[str, Any]]]]  # (op, n, seed) -> (problem id, row) × ≤ n


def informative_probability(p: float, G: int) -> float:
    """P(a group of G binary rollouts with success rate p has unequal rewards) = 1 − p^G − (1 − p)^G."""
    p = min(max(p, 0.0), 1.0)
    return max(0.0, 1.0 - p**G - (1.0 - p) ** G)


def beta_mean(successes: float, trials: float, prior_mean: float = 0.5, strength: float = 2.0) -> float:
    """Posterior mean after ``successes`` of ``trials`` (decayed counts) under a Beta prior of mean ``prior_mean``
    worth ``strength`` trials (Beta(1, 1) by default)."""
    return (successes + strength * prior_mean) / (trials + strength)


def gumbel_top_k(weights: Sequence[float], k: int, rng: random.Random) -> list[int]:
    """Indices of k draws without replacement with probabilities ∝ weights (Gumbel top-k); weights ≤ 0 never drawn."""
    keys = []
    for i, w in enumerate(weights):
        if w > 0:
            u = max(rng.random(), 1e-300)
            keys.append((math.log(w) - math.log(-math.log(u)), i))
    keys.sort(reverse=True)
    return [i for _, i in keys[:k]]


@dataclass
class PromptState:
    """One prompt's record: decayed successes and trials, streaks, and how often it was served."""

    s: float = 0.0
    n: float = 0.0
    served: int = 0
    solved_streak: int = 0
    unsolved_streak: int = 0
    deferred: int = 0  # times deferred
    wait_until: int = -1  # deferred until this step (exclusive)
    retired: bool = False

    def to_list(self) -> list[Any]:
        return [self.s, self.n, self.served, self.solved_streak, self.unsolved_streak, self.deferred, self.wait_until, self.retired]

    @classmethod
    def from_list(cls, v: Sequence[Any]) -> PromptState:
        s, n, served, solved, unsolved, deferred, wait, retired = v
        return cls(float(s), float(n), int(served), int(solved), int(unsolved), int(deferred), int(wait), bool(retired))


@dataclass
class CurriculumSettings:
    """The knobs of :class:`Curriculum` (the ``curriculum`` section of ``midtrain rl`` carries them)."""

    group_size: int = 8
    decay: float = 0.5
    revisit_share: float = 0.5
    max_reuse: int = 4
    retire_after: int = 2
    defer_after: int = 2
    defer_steps: int = 10
    deferred_weight: float = 0.25
    band_min: float = 0.02
    band_max: float = 0.7
    outside_band_weight: float = 0.02
    seed: int = 0


@dataclass
class Curriculum:
    """Per-prompt pass-rate estimates and the draw of each round (module docstring).

    ``rows`` is the prompt pool (pool mode); in generate mode it starts empty and ``make_problems`` fills it. Rows
    are addressed by a string key: the row's position in pool mode, the problem id in generate mode.
    """

    settings: CurriculumSettings
    rows: dict[str, dict[str, Any]]
    ops: list[int] = field(default_factory=list)  # generate mode: the op counts it may draw from
    make_problems: MakeProblems | None = None
    prompts: dict[str, PromptState] = field(default_factory=dict)
    op_counts: dict[int, list[float]] = field(default_factory=dict)  # op → [decayed successes, decayed trials]
    order: list[str] = field(default_factory=list)  # pool mode: fresh prompts in a seeded order
    cursor: int = 0  # next fresh position in ``order``
    generated: int = 0  # generate mode: generator calls so far (the generator's seed offset)
    pool_counts: list[float] = field(default_factory=lambda: [0.0, 0.0])  # [decayed successes, trials] of all groups
    op_of: dict[str, int] = field(default_factory=dict)  # generate mode: each generated problem's op count
    stats: dict[str, float] = field(default_factory=dict)  # running totals for the log

    def __post_init__(self) -> None:
        if not self.order and self.make_problems is None:
            self.order = sorted(self.rows, key=int)
            random.Random(self.settings.seed).shuffle(self.order)
        for op in self.ops:
            self.op_counts.setdefault(op, [0.0, 0.0])

    @property
    def generating(self) -> bool:
        return self.make_problems is not None

    # -- drawing --------------------------------------------------------------------------------------------
    def draw(self, m: int, step: int, round_: int, exclude: set[str]) -> list[str]:
        """Keys of ``m`` prompts for one round of ``step`` (none of ``exclude``, the keys already served this step).

        Fewer than ``m`` only when the pool has nothing left to serve (every prompt retired or used up).
        """
        rng = random.Random(f"curriculum:{self.settings.seed}:{step}:{round_}")  # str seeds hash with SHA-512: stable
        want_revisit = round(m * self.settings.revisit_share)
        picked = self._revisits(want_revisit, step, rng, exclude)
        picked += self._fresh(m - len(picked), step, rng, exclude | set(picked))
        if len(picked) < m:  # no fresh prompt left: more revisits (deferred ones included)
            picked += self._revisits(m - len(picked), step, rng, exclude | set(picked), any_wait=True)
        for key in picked:
            self.prompts.setdefault(key, PromptState()).served += 1
        return picked

    def prior_mean(self) -> float:
        """m: the pass rate of every group scored so far (Beta(1, 1) over the decayed pool counts)."""
        return beta_mean(*self.pool_counts)

    def rate_of(self, st: PromptState) -> float:
        """p̂ of one prompt: its own decayed evidence under the empirical-Bayes prior (module docstring)."""
        return beta_mean(st.s, st.n, self.prior_mean())

    def weight(self, st: PromptState, step: int, any_wait: bool) -> float:
        if st.retired or st.served >= self.settings.max_reuse:
            return 0.0
        w = informative_probability(self.rate_of(st), self.settings.group_size)
        if st.deferred:
            if step < st.wait_until and not any_wait:
                return 0.0
            w *= self.settings.deferred_weight
        return w

    def _revisits(self, m: int, step: int, rng: random.Random, exclude: set[str], any_wait: bool = False) -> list[str]:
        if m <= 0:
            return []
        keys = [k for k in self.prompts if k not in exclude and k in self.rows]
        weights = [self.weight(self.prompts[k], step, any_wait) for k in keys]
        return [keys[i] for i in gumbel_top_k(weights, m, rng)]

    def _fresh(self, m: int, step: int, rng: random.Random, exclude: set[str]) -> list[str]:
        if m <= 0:
            return []
        if self.generating:
            return self._generate(m, rng)
        out: list[str] = []
        while len(out) < m and self.cursor < len(self.order):
            key = self.order[self.cursor]
            self.cursor += 1
            if key not in exclude and key not in self.prompts:
                out.append(key)
        return out

    def op_weights(self) -> dict[int, float]:
        """Generate mode: each op count's draw weight, P_inf of its measured rate inside the band, small outside."""
        s = self.settings
        out = {}
        for op in self.ops:
            succ, trials = self.op_counts[op]
            p = beta_mean(succ, trials)
            w = informative_probability(p, s.group_size)
            out[op] = w if s.band_min <= p <= s.band_max else w * s.outside_band_weight
        return out

    def _generate(self, m: int, rng: random.Random) -> list[str]:
        assert self.make_problems is not None
        weights = self.op_weights()
        ops = list(weights)
        total = sum(weights.values())
        probs = [weights[o] / total for o in ops] if total > 0 else [1.0 / len(ops)] * len(ops)
        per_op: dict[int, int] = {}
        for _ in range(m):
            op = rng.choices(ops, probs)[0]
            per_op[op] = per_op.get(op, 0) + 1
        out: list[str] = []
        for op in sorted(per_op):
            made = self.make_problems(op, per_op[op], self.settings.seed * 1_000_003 + self.generated)
            self.generated += 1
            for key, row in made:
                if key in self.rows or key in self.prompts:  # a problem this run has met: never a fresh one twice
                    continue
                self.rows[key] = row
                self.op_of[key] = op
                out.append(key)
        self.stats["generated"] = self.stats.get("generated", 0.0) + len(out)
        return out

    # -- learning from a step --------------------------------------------------------------------------------
    def update(self, results: Sequence[tuple[str, float, int]], step: int) -> None:
        """Fold one step's groups in: (key, successes, rollouts) per group, from every rank (successes may be fractional
        for a reward in [0, 1] that is not pass/fail)."""
        s = self.settings
        # The policy moved: older evidence counts less. A prompt's own evidence decays when new evidence arrives,
        # never in between: decaying every prompt every step would pull the estimates of prompts not revisited back
        # to the prior (p̂ → 1/2, the most informative-looking value), and stale never-solved prompts would crowd
        # out the edge (measured: zero-variance groups stayed at 0.64-0.75 of generated ones). An op count is
        # measured at every step, so its evidence decays per step and an op left alone is re-measured.
        for counts in [*self.op_counts.values(), self.pool_counts]:
            counts[0] *= s.decay
            counts[1] *= s.decay
        for key, k, g in results:
            self.pool_counts[0] += k
            self.pool_counts[1] += g
            st = self.prompts.setdefault(key, PromptState())
            st.s = st.s * s.decay + k
            st.n = st.n * s.decay + g
            st.solved_streak = st.solved_streak + 1 if k == g else 0
            st.unsolved_streak = st.unsolved_streak + 1 if k == 0 else 0
            if st.solved_streak >= s.retire_after:
                st.retired = True
                self.stats["retired"] = self.stats.get("retired", 0.0) + 1
            elif st.unsolved_streak >= s.defer_after:
                st.wait_until = step + s.defer_steps * 2**st.deferred
                st.deferred += 1
                st.unsolved_streak = 0
                self.stats["deferred"] = self.stats.get("deferred", 0.0) + 1
            op = self.op_of.get(key)
            if op is not None and op in self.op_counts:
                self.op_counts[op][0] += k
                self.op_counts[op][1] += g
        self._prune()

    def _prune(self) -> None:
        """Generate mode: forget the rows that can never be served again (retired or used up); their stats stay."""
        if not self.generating:
            return
        done = [k for k, st in self.prompts.items() if (st.retired or st.served >= self.settings.max_reuse) and k in self.rows]
        for k in done:
            del self.rows[k]
            self.op_of.pop(k, None)

    # -- checkpoints -----------------------------------------------------------------------------------------
    def state_dict(self) -> dict[str, Any]:
        """Everything a resumed run needs to draw the same prompts (plain JSON)."""
        return {
            "prompts": {k: st.to_list() for k, st in self.prompts.items()},
            "op_counts": {str(op): c for op, c in self.op_counts.items()},
            "cursor": self.cursor,
            "generated": self.generated,
            "stats": self.stats,
            "rows": self.rows if self.generating else None,  # the generated problems still in play
            "op_of": self.op_of,
            "pool_counts": self.pool_counts,
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.prompts = {k: PromptState.from_list(v) for k, v in state["prompts"].items()}
        self.op_counts = {int(op): [float(c[0]), float(c[1])] for op, c in state["op_counts"].items()}
        self.cursor = int(state["cursor"])
        self.generated = int(state["generated"])
        self.pool_counts = [float(c) for c in state.get("pool_counts", [0.0, 0.0])]
        self.stats = {k: float(v) for k, v in state["stats"].items()}
        if self.generating:
            self.rows = dict(state["rows"] or {})
            self.op_of = {k: int(v) for k, v in state.get("op_of", {}).items()}

    def summary(self) -> dict[str, float]:
        """Counts for the log: prompts seen, retired, deferred now, generated, and the mean rate of the seen ones."""
        seen = list(self.prompts.values())
        return {
            "prompts_seen": float(len(seen)),
            "prompts_retired": float(sum(st.retired for st in seen)),
            "prompts_generated": self.stats.get("generated", 0.0),
            "seen_pass_rate": sum(self.rate_of(st) for st in seen) / len(seen) if seen else 0.0,
            "pool_pass_rate": self.prior_mean(),
        }


__all__ = [
    "Curriculum",
    "CurriculumSettings",
    "MakeProblems",
    "PromptState",
    "beta_mean",
    "gumbel_top_k",
    "informative_probability",
]
