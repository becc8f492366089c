"""Mixtures of the synthetic world: op distributions, named presets, context mixtures and replay mixes.

- An **op distribution** maps op counts (difficulty) to probabilities. Spec strings: ``"2-8"`` (uniform),
  ``"2,4,6"``, or weighted ranges ``"2-5:0.6,6-8:0.3,9-12:0.1"`` (a range's weight is spread uniformly over its
  ops; weights are normalised). Without weights every listed op is equally likely, so ``"2-5,6-8" == "2-8"``.
- **Presets** name the paper's ranges (in-distribution op 2-10, OOD-edge 11-14, OOD-hard 15-20) and scaled-down
  ranges for tiny CPU models (2-5, 6-8, 9-12), plus the continued-pretraining mixes of DESIGN §1.3 (edge data with
  20% replay of in-distribution data). ``difficulty_mix`` weights easy/medium/hard ranges of either scale.
- **Context mixtures**: ``"zoo:0.99"``-style suffixes or a ``{name: weight}`` mapping; default uniform.
- **Replay**: ``replay_mix`` mixes two op distributions; ``mix_records`` mixes two record lists so that a share
  of the result comes from the previous stage's data (continued pretraining with replay).
- **Stratified slots**: ``plan_slots`` splits n problems over ops, contexts and modes by their weights (integer
  parts exactly, the remaining units drawn in proportion to the fractional parts), shuffles each factor and
  zips them. Counts per op are then as even as n allows instead of multinomially noisy.
"""

from __future__ import annotations

import random
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from midtrain.errors import ConfigError

# Difficulty scales: (easy, medium, hard) op ranges.
SCALES: dict[str, tuple[tuple[int, int], tuple[int, int], tuple[int, int]]] = {
    "paper": ((2, 10), (11, 14), (15, 20)),  # Interplay: ID, OOD-edge, OOD-hard
    "tiny": ((2, 5), (6, 8), (9, 12)),  # what a ~1M-parameter CPU model can reach (DESIGN §4)
}

PRESETS: dict[str, str] = {
    "paper-id": "2-10",
    "paper-edge": "11-14",
    "paper-hard": "15-20",
    "paper-all": "2-20",
    "paper-midtrain": "11-14:0.8,2-10:0.2",  # continued pretraining on the edge with 20% replay
    "tiny-id": "2-5",
    "tiny-edge": "6-8",
    "tiny-hard": "9-12",
    "tiny-all": "2-12",
    "tiny-midtrain": "6-8:0.8,2-5:0.2",
}


@dataclass(frozen=True)
class OpDistribution:
    probs: tuple[tuple[int, float], ...]  # (op, probability), ops ascending, probabilities summing to 1

    @property
    def ops(self) -> list[int]:
        return [op for op, _ in self.probs]

    @property
    def weights(self) -> list[float]:
        return [p for _, p in self.probs]

    def sample(self, rng: random.Random) -> int:
        return rng.choices(self.ops, self.weights)[0]

    def spec(self) -> str:
        """A spec string that parses back to this distribution."""
        return ",".join(f"{op}:{p:.6g}" for op, p in self.probs)


def _from_weights(weights: dict[int, float]) -> OpDistribution:
    total = sum(weights.values())
    return OpDistribution(tuple((op, w / total) for op, w in sorted(weights.items()) if w > 0))


def parse_ops(spec: str | Sequence[int], key: str = "ops") -> OpDistribution:
    """An op distribution from ``"2-8"``, ``"2,4,6"``, ``"2-5:0.6,6-8:0.4"`` or a list of ints."""
    if not isinstance(spec, str):
        items = [str(int(x)) for x in spec]
    else:
        items = [s.strip() for s in spec.split(",") if s.strip()]
    if not items:
        raise ConfigError(f"key '{key}': empty op specification")
    weights: dict[int, float] = {}
    weighted = [":" in it for it in items]
    if any(weighted) and not all(weighted):
        raise ConfigError(f"key '{key}': give a weight to every range or to none ('{spec}')")
    for it in items:
        rng_part, _, w_part = it.partition(":")
        try:
            lo_s, _, hi_s = rng_part.partition("-")
            lo, hi = int(lo_s), int(hi_s or lo_s)
            w = float(w_part) if w_part else float(hi - lo + 1)
        except ValueError:
            raise ConfigError(f"key '{key}': cannot read '{it}' (use '2-8', '2,4,6' or '2-5:0.6,6-8:0.4')") from None
        if hi < lo or w < 0:
            raise ConfigError(f"key '{key}': bad range or weight '{it}'")
        for op in range(lo, hi + 1):
            weights[op] = weights.get(op, 0.0) + w / (hi - lo + 1)
    if sum(weights.values()) <= 0:
        raise ConfigError(f"key '{key}': all weights are zero")
    return _from_weights(weights)


def op_distribution(cfg: Any) -> OpDistribution:
    """The op distribution of a SynthConfig: its preset if set, else its ``ops``."""
    if getattr(cfg, "preset", None):
        if cfg.preset not in PRESETS:
            raise ConfigError(f"key 'preset': unknown preset '{cfg.preset}' (known: {', '.join(PRESETS)})")
        return parse_ops(PRESETS[cfg.preset], "preset")
    return parse_ops(cfg.ops)


def difficulty_mix(easy: float, medium: float, hard: float, scale: str = "paper") -> OpDistribution:
    """Weights over the easy/medium/hard ranges of a scale (``paper`` or ``tiny``), uniform within a range."""
    if scale not in SCALES:
        raise ConfigError(f"unknown difficulty scale '{scale}' (known: {', '.join(SCALES)})")
    spec = ",".join(f"{lo}-{hi}:{w}" for (lo, hi), w in zip(SCALES[scale], (easy, medium, hard)))
    return parse_ops(spec, "difficulty_mix")


def replay_mix(new: OpDistribution | str, old: OpDistribution | str, replay_share: float) -> OpDistribution:
    """(1 - replay_share) of ``new`` plus replay_share of ``old`` (e.g. edge 11-14 with 20% of 2-10)."""
    if not 0.0 <= replay_share <= 1.0:
        raise ConfigError(f"replay_share must be within 0..1, got {replay_share}")
    new_d = parse_ops(new) if isinstance(new, str) else new
    old_d = parse_ops(old) if isinstance(old, str) else old
    weights: dict[int, float] = {}
    for dist, share in ((new_d, 1.0 - replay_share), (old_d, replay_share)):
        for op, p in dist.probs:
            weights[op] = weights.get(op, 0.0) + share * p
    return _from_weights(weights)


def parse_context_item(item: str) -> tuple[str, float | None]:
    """``"zoo:0.99"`` → ("zoo", 0.99); ``"zoo"`` → ("zoo", None)."""
    head, sep, tail = item.rpartition(":")
    if sep:
        try:
            return head.strip(), float(tail)
        except ValueError:
            pass
    return item.strip(), None


def allocate(n: int, weights: Sequence[float], rng: random.Random) -> list[int]:
    """Integer counts summing to n in proportion to ``weights`` (fractional parts drawn at random)."""
    total = float(sum(weights))
    quotas = [n * w / total for w in weights]
    counts = [int(q) for q in quotas]
    frac = [q - c for q, c in zip(quotas, counts)]
    for _ in range(n - sum(counts)):
        i = rng.choices(range(len(frac)), [f + 1e-12 for f in frac])[0]
        counts[i] += 1
        frac[i] = 0.0
    return counts


def _stratified(n: int, values: Sequence[Any], weights: Sequence[float], rng: random.Random) -> list[Any]:
    out = [v for v, c in zip(values, allocate(n, weights, rng)) for _ in range(c)]
    rng.shuffle(out)
    return out


def plan_slots(
    n: int, ops: OpDistribution, contexts: Sequence[tuple[Any, float]], mode: str, reverse_share: float, rng: random.Random
) -> list[tuple[int, Any, str]]:
    """n (op, context, mode) slots, each factor stratified by its weights."""
    op_list = _stratified(n, ops.ops, ops.weights, rng)
    ctx_list = _stratified(n, [c for c, _ in contexts], [w for _, w in contexts], rng)
    if mode == "mixed":
        modes = _stratified(n, ["forward", "reverse"], [1.0 - reverse_share, reverse_share], rng)
    else:
        modes = [mode] * n
    return list(zip(op_list, ctx_list, modes))


def mix_records(primary: Sequence[dict], replay: Sequence[dict], replay_share: float, *, n: int | None = None, seed: int = 0) -> list[dict]:
    """A shuffled mix in which ``replay_share`` of the records come from ``replay`` (the previous stage's data).

    ``n`` defaults to all of ``primary`` plus as many replay records as the share asks for; replay records are
    drawn without replacement (cycling through a shuffled copy if more are needed than exist).
    """
    if not 0.0 <= replay_share < 1.0:
        raise ConfigError(f"replay_share must be within 0..1 (exclusive of 1), got {replay_share}")
    if replay_share > 0 and not replay:
        raise ConfigError("replay_share > 0 needs replay records")
    rng = random.Random(seed)
    if n is None:
        n_primary = len(primary)
        n_replay = round(n_primary * replay_share / (1.0 - replay_share))
    else:
        n_replay = round(n * replay_share)
        n_primary = n - n_replay

    def draw(pool: Sequence[dict], k: int) -> list[dict]:
        out: list[dict] = []
        while len(out) < k and pool:
            batch = list(pool)
            rng.shuffle(batch)
            out += batch[: k - len(out)]
        return out

    mixed = draw(primary, n_primary) + draw(replay, n_replay)
    rng.shuffle(mixed)
    return mixed


__all__ = [
    "SCALES",
    "PRESETS",
    "OpDistribution",
    "parse_ops",
    "op_distribution",
    "difficulty_mix",
    "replay_mix",
    "parse_context_item",
    "allocate",
    "plan_slots",
    "mix_records",
]
