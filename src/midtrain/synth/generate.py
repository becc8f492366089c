"""``midtrain synth generate``: draw distinct synthetic problems and write them as JSONL.

Algorithm: :func:`midtrain.synth.generate.generate_problems` samples dependency graphs of the requested op counts in
the requested contexts and modes (forward or reverse), renders each (natural or compact) with its gold trace, and
keeps ``n`` distinct problems, none of them one of the ``exclude`` files' problems (a draw with an excluded id is
redrawn like a duplicate: a held-out set disjoint from the training data, which the few distinct problems of small op
counts make worth asking for). The file is written atomically (a reader sees the old file or the new one; a killed
writer's temporary is removed by the next write) under a lock on the file (``.NAME.lock`` beside it), so a second
``synth generate`` to the same ``--out`` started meanwhile fails naming the first one's pid. The same config and
seed give the same file: a rerun finds its records there and writes nothing, while an existing file holding anything
else is refused unless ``--overwrite``, as a run directory holding another run is.

Launch::

    midtrain synth generate --ops 2-8 --contexts zoo,teachers,movies --n 300 --seed 1 --out problems.jsonl
    midtrain synth generate --preset tiny-id --render compact --modulus 10 --order dependency --out id.jsonl
    midtrain synth generate --preset tiny-id --mode reverse --seed 7 --exclude train.jsonl --out heldout.jsonl
"""

from __future__ import annotations

import gzip
import json
import math
import random
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from midtrain.config import MAX_SEED, Config, param
from midtrain.console import log
from midtrain.data.corpus import iter_records
from midtrain.data.jsonl import write_jsonl
from midtrain.data.records import require
from midtrain.errors import ConfigError, MidtrainError, RunDirError
from midtrain.locks import PathLock
from midtrain.synth import mix, render
from midtrain.synth.stats import hist_line, histogram
from midtrain.synth.world import KINDS, MAX_OP, MIN_OP, WorldSpec, build_graph


@dataclass
class GenerateResult:
    out: str
    n: int
    seconds: float
    ops: dict[str, int] = field(default_factory=dict)
    contexts: dict[str, int] = field(default_factory=dict)
    modes: dict[str, int] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {"out": self.out, "n": self.n, "seconds": self.seconds, "ops": self.ops, "contexts": self.contexts, "modes": self.modes}

    def summary(self) -> str:
        rate = self.n / self.seconds if self.seconds > 0 else float("inf")
        return "\n".join(
            [
                f"synth generate: {self.n} problems → {self.out} ({rate:.0f}/s)",
                hist_line("op", self.ops),
                hist_line("context", self.contexts),
                hist_line("mode", self.modes),
            ]
        )


def generate(cfg: SynthConfig) -> GenerateResult:
    """Generate problems and write them as JSONL (see the module docstring)."""
    if not cfg.out:
        raise ConfigError("key 'out': give the output JSONL file (--out problems.jsonl)")
    if Path(cfg.out).is_dir():
        raise ConfigError(f"key 'out': {cfg.out} is a directory; give the output JSONL file")
    with PathLock(cfg.out, "file"):
        t0 = time.perf_counter()
        recs = generate_problems(cfg)
        seconds = time.perf_counter() - t0
        if not Path(cfg.out).exists():
            write_jsonl(cfg.out, recs)
        elif not holds(Path(cfg.out), recs):  # like a run directory holding another run: never replaced silently
            if not cfg.overwrite:
                raise RunDirError(f"{cfg.out} exists and holds other records than this config generates; use --overwrite to replace it")
            write_jsonl(cfg.out, recs)
    res = GenerateResult(
        cfg.out,
        len(recs),
        round(seconds, 3),
        histogram([r["op"] for r in recs]),
        histogram([r["context"] for r in recs]),
        histogram([r["mode"] for r in recs]),
    )
    log(f"synth generate: {len(recs)} problems → {cfg.out}")
    return res


def holds(path: Path, recs: list[dict[str, Any]]) -> bool:
    """Whether ``path`` already holds exactly ``recs`` as JSONL: the file an earlier run of the same config wrote
    (left as it is, so a rerun writes nothing). Anything unreadable or different does not."""
    try:
        raw = path.read_bytes()
        lines = (gzip.decompress(raw) if path.suffix == ".gz" else raw).decode("utf-8").splitlines()
        return [json.loads(line) for line in lines if line.strip()] == json.loads(json.dumps(recs))
    except (OSError, EOFError, ValueError):  # (BadGzipFile, UnicodeDecodeError and JSONDecodeError are ValueErrors)
        return False


__all__ = ["SynthConfig", "GenerateResult", "generate_problems", "generate", "holds", "excluded_ids"]


@dataclass
class SynthConfig(Config):
    """Generate synthetic dependency-graph problems."""

    ops: str | list[int] = param(
        "2-8", "Op counts (difficulty): a range '2-8', a list '2,4,6' or weighted ranges '2-5:0.6,6-8:0.4' (uniform within a range)."
    )
    preset: str | None = param(
        None,
        "A named op mixture used instead of ops: paper-id (2-10), paper-edge "
        "(11-14), paper-hard (15-20), tiny-id (2-5), tiny-edge (6-8), tiny-hard (9-12), "
        "... (midtrain.synth.mix.PRESETS).",
    )
    contexts: list[str] = param(
        ["zoo"],
        "Surface contexts: built-in names (zoo, teachers, movies) or context YAML "
        "paths; an optional ':weight' suffix sets the mixture (zoo:0.99,teachers:0.01).",
    )
    context_weights: dict[str, float] | None = param(
        None, "Mixture weights by context name (instead of ':weight' suffixes); default uniform.", ge=0
    )
    n: int = param(100, "Number of problems.", ge=1)
    seed: int = param(0, "Random seed: the same config gives the same records.", ge=0, le=MAX_SEED)
    mode: Literal["forward", "reverse", "mixed"] = param(
        "forward",
        "forward: compute the asked quantity; reverse: one constant is unknown and a downstream value "
        "is given; mixed: both (reverse_share).",
    )
    reverse_share: float = param(0.5, "Share of reverse problems when mode=mixed.", ge=0, le=1)
    render: Literal["natural", "compact"] = param(
        "natural", "natural: English sentences in a context; compact: letter names, one fact per '.' clause (tiny models)."
    )
    modulus: int | None = param(
        None, "Do all arithmetic modulo this number (10 for the compact tiny-model world); null: integers in 0..max_value.", ge=2
    )
    const_max: int = param(4, "Constants are drawn from 1..const_max.", ge=1)
    max_multiplier: int = param(3, "Products multiply by 2..max_multiplier (with a modulus: only those coprime with it).", ge=2)
    max_value: int = param(999, "Without a modulus every quantity stays within 0..max_value.", ge=0)
    kinds: list[str] = param(list(KINDS), "Allowed combination rules (constants always): sum, diff, mul, total.")
    distractors: bool = param(True, "Add facts that the answer does not need.")
    max_distractors: int = param(4, "With distractors: 1..max_distractors extra facts per problem.", ge=0)
    order: Literal["shuffled", "dependency"] = param(
        "shuffled", "Fact order: shuffled (the paper) or dependency order (learnable by tiny models, DESIGN §4)."
    )
    max_tries: int = param(200, "Draws per problem before the request is declared impossible (duplicates and dead ends are redrawn).", ge=1)
    exclude: list[str] = param(
        [],
        "Problem files (synth generate JSONL) whose problems this set must not contain: a draw with one of their ids is "
        "redrawn (a held-out set disjoint from the training data).",
    )
    out: str = param("", "Output JSONL file (synth generate).", path="file")
    overwrite: bool = param(False, "Replace an existing output file holding other records (a rerun of the same config leaves it as it is).")

    def check(self) -> None:

        if self.preset is not None:
            if self.preset not in mix.PRESETS:
                raise ConfigError(f"key 'preset': unknown preset '{self.preset}' (known: {', '.join(mix.PRESETS)})")
            if self.ops not in ("2-8", mix.PRESETS[self.preset]):
                raise ConfigError("keys 'ops' and 'preset': give one of them, not both")
        dist = mix.op_distribution(self)
        for key, ok, rule in [
            ("n", self.n >= 1, "must be at least 1"),
            ("modulus", self.modulus is None or self.modulus >= 2, "must be at least 2 (or null)"),
            ("const_max", self.const_max >= 1, "must be at least 1"),
            ("max_multiplier", self.max_multiplier >= 2, "must be at least 2"),
            ("max_value", self.max_value >= self.const_max, "must be at least const_max"),
            ("max_distractors", self.max_distractors >= 0, "must be >= 0"),
            ("max_tries", self.max_tries >= 1, "must be at least 1"),
            ("reverse_share", 0.0 <= self.reverse_share <= 1.0, "must be within 0..1"),
            ("kinds", bool(self.kinds) and set(self.kinds) <= set(KINDS), f"must be a non-empty subset of {', '.join(KINDS)}"),
        ]:
            if not ok:
                raise ConfigError(f"key '{key}': {rule}, got {getattr(self, key)!r}")
        if not self.multipliers():
            raise ConfigError(f"key 'max_multiplier': no multiplier in 2..{self.max_multiplier} is coprime with modulus {self.modulus}")
        bad = [op for op in dist.ops if not MIN_OP <= op <= MAX_OP]
        if bad:
            raise ConfigError(f"key 'ops': op counts must be within {MIN_OP}..{MAX_OP}, got {bad[0]}")
        if self.mode != "forward" and min(dist.ops) < 2:
            raise ConfigError("key 'ops': reverse problems need op >= 2 (an op-1 problem has nothing to solve for)")
        render.load_contexts(self.contexts, self.context_weights)  # names the bad context or YAML key

    def multipliers(self) -> tuple[int, ...]:
        ks = range(2, self.max_multiplier + 1)
        return tuple(k for k in ks if self.modulus is None or math.gcd(k, self.modulus) == 1)

    def spec(self) -> WorldSpec:
        return WorldSpec(self.const_max, self.multipliers(), self.modulus, self.max_value, tuple(self.kinds), self.max_distractors)


def generate_problems(cfg: SynthConfig | int | None = None, /, **fields: Any) -> list[dict[str, Any]]:
    """``cfg.n`` distinct problem records (see ``render.render_record`` for the format).

    Also callable as ``generate_problems(n, seed=1, ops="2-5", ...)``: SynthConfig fields as keywords.
    """

    if not isinstance(cfg, SynthConfig):
        cfg = SynthConfig.from_dict({**({} if cfg is None else {"n": cfg}), **fields})
    elif fields:
        cfg = cfg.replace(**fields)
    cfg.check()
    rng = random.Random(cfg.seed)
    contexts = render.load_contexts(cfg.contexts, cfg.context_weights)
    slots = mix.plan_slots(cfg.n, mix.op_distribution(cfg), contexts, cfg.mode, cfg.reverse_share, rng)
    spec = cfg.spec()
    excluded = excluded_ids(cfg.exclude)
    seen: set[str] = set(excluded)
    out: list[dict[str, Any]] = []
    for op, ctx, mode in slots:
        failures: Counter[str] = Counter()
        for _ in range(cfg.max_tries):
            graph, why = build_graph(op, mode, rng, spec, cfg.distractors)
            rec = None
            if graph is not None:
                rec, why = render.render_record(graph, ctx, cfg.render, cfg.order, rng, op=op, mode=mode)
            if rec is not None and rec["id"] in seen:
                why = "excluded" if rec["id"] in excluded else "duplicate"
                rec = None
            if rec is not None:
                break
            failures[why] += 1
        else:
            causes = ", ".join(f"{k} x{v}" for k, v in failures.most_common())
            raise MidtrainError(
                f"cannot generate problem {len(out) + 1} of {cfg.n} (op {op}, context '{ctx.name}', {mode}, "
                f"{cfg.render}): {cfg.max_tries} draws failed ({causes}). The request asks for more distinct "
                "problems than this setting has: lower n, widen ops, contexts, const_max or max_distractors, "
                "or turn distractors on"
            )
        seen.add(rec["id"])
        out.append(rec)
    return out


def excluded_ids(paths: list[str]) -> set[str]:
    """The problem ids of the ``exclude`` files (a DataError names a file and line whose record has no id)."""
    ids: set[str] = set()
    for path in paths:
        for rec in iter_records(path):
            require(rec, ["id"], path)
            ids.add(str(rec["id"]))
    return ids
