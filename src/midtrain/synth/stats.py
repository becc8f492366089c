"""``midtrain synth stats``: what a problem file holds.

Algorithm: histograms of op count, context, mode and rendering, and percentiles (mean, p50, p90, p99, max) of
the lengths of prompt, completion and both, in characters or, with ``--tokenizer DIR``, in tokens (batched).

Launch: ``midtrain synth stats problems.jsonl --tokenizer runs/tok``.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass
from typing import Any

from midtrain.config import Config, param
from midtrain.data.corpus import read_all
from midtrain.errors import ConfigError


@dataclass
class StatsConfig(Config):
    file: str = param("", "Problem JSONL to describe.", positional=True, path="file")
    tokenizer: str | None = param(None, "Tokenizer directory: lengths in tokens instead of characters.", path="dir")

    def check(self) -> None:
        if not self.file:
            raise ConfigError("key 'file': give the problem JSONL to describe")


def hist_line(label: str, hist: dict[str, int]) -> str:
    return f"{label:<8} " + "  ".join(f"{k}: {v}" for k, v in hist.items())


def histogram(values: list[Any]) -> dict[str, int]:
    c = Counter(values)
    keys = sorted(c, key=lambda x: (isinstance(x, str), x))
    return {str(k): c[k] for k in keys}


@dataclass
class StatsResult:
    file: str
    n: int
    unit: str
    ops: dict[str, int]
    contexts: dict[str, int]
    modes: dict[str, int]
    renders: dict[str, int]
    lengths: dict[str, dict[str, float]]

    def to_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)

    def summary(self) -> str:
        lines = [
            f"{self.file}: {self.n} records",
            hist_line("op", self.ops),
            hist_line("context", self.contexts),
            hist_line("mode", self.modes),
            hist_line("render", self.renders),
            f"\nlength ({self.unit}) " + "".join(f"{q:>8}" for q in ("mean", "p50", "p90", "p99", "max")),
        ]
        for name, s in self.lengths.items():
            lines.append(
                f"{name:<16}" + "".join(f"{s[q]:>8.1f}" if q == "mean" else f"{s[q]:>8.0f}" for q in ("mean", "p50", "p90", "p99", "max"))
            )
        return "\n".join(lines)


def _percentiles(xs: list[int]) -> dict[str, float]:
    s = sorted(xs)

    def q(p: float) -> float:
        return float(s[min(len(s) - 1, max(0, -(-int(p * len(s)) // 100) - 1))]) if s else 0.0

    return {"mean": round(sum(s) / len(s), 2) if s else 0.0, "p50": q(50), "p90": q(90), "p99": q(99), "max": float(s[-1]) if s else 0.0}


def stats(cfg: StatsConfig) -> StatsResult:
    """Histograms and length percentiles of a problem file (see the module docstring)."""
    recs = read_all(cfg.file, required=("op", "context", "mode", "prompt", "completion"))
    texts = {"prompt": [r["prompt"] for r in recs], "completion": [r["completion"] for r in recs]}
    texts["prompt+completion"] = [p + c for p, c in zip(texts["prompt"], texts["completion"])]
    if cfg.tokenizer:
        from midtrain.models.tokenizer import load_tokenizer

        tok = load_tokenizer(cfg.tokenizer)
        unit = "tokens"

        def length(xs: list[str]) -> list[int]:
            return [len(ids) for i in range(0, len(xs), 512) for ids in tok(xs[i : i + 512], add_special_tokens=False)["input_ids"]]
    else:
        unit = "chars"

        def length(xs: list[str]) -> list[int]:
            return [len(x) for x in xs]

    return StatsResult(
        cfg.file,
        len(recs),
        unit,
        histogram([r["op"] for r in recs]),
        histogram([r["context"] for r in recs]),
        histogram([r["mode"] for r in recs]),
        histogram([r.get("render", "?") for r in recs]),
        {name: _percentiles(length(xs)) for name, xs in texts.items()},
    )
