"""``midtrain synth select``: the problems at a checkpoint's edge of competence, measured, for RL.

Algorithm (Interplay's edge: pass@k > 0 with a low pass@1, measured per problem). Read a ``midtrain eval`` run
that sampled k completions of every problem of a synthetic pool (``--n-samples k --temperature 1``) and, per
problem, the number of process-verified completions v out of its n samples. Keep the problems with
``v ≥ min_verified`` (some sample solves it: RL can find a reward) and ``v / n ≤ max_rate`` (the checkpoint does not
already solve it: a group of rollouts is unlikely to be all right, so it carries a gradient). The kept records are
written unchanged, in pool order, with ``measured = {verified: v, samples: n}`` added, to ``problems.jsonl``;
``midtrain.json`` holds the pool's verified-count histogram and the kept counts per op.

Why per problem rather than per op range: at a fixed op count the checkpoint solves some problems always and
others never (docs/claims.md: 60–70% of the RL groups on random edge problems had zero reward variance). Only the problems in between
give Dr. GRPO a non-zero advantage, and RL on them raised held-out edge accuracy more than RL on the whole range.

Launch::

    midtrain synth generate --ops 6-8 --n 4000 --seed 41 --render compact --modulus 10 --out pool.jsonl
    midtrain eval --model runs/sft --synthetic pool.jsonl --n-samples 8 --temperature 1 --out runs/pool-t1
    midtrain synth select runs/pool-t1 --out runs/edge-prompts        # → runs/edge-prompts/problems.jsonl
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from midtrain.config import Config, param
from midtrain.console import log
from midtrain.data.jsonl import iter_jsonl, write_jsonl
from midtrain.data.records import clean, where
from midtrain.errors import ConfigError, DataError
from midtrain.outputs import SAMPLES
from midtrain.runs import META, Result, is_complete, open_run, read_meta
from midtrain.synth.stats import histogram
from midtrain.synth.summary import load_problems


@dataclass
class SelectConfig(Config):
    """Select synthetic problems by a checkpoint's measured pass rate."""

    samples: str = param(
        "", "A finished `midtrain eval` run directory that sampled k completions of every pool problem.", positional=True, path="dir"
    )
    problems: str = param("", "The pool's problem JSONL; empty: the file the eval run evaluated (its config's `synthetic`).", path="file")
    out: str = param("", "Output directory: problems.jsonl (the kept problems) and midtrain.json.", path="dir")
    min_verified: int = param(1, "Keep a problem only if at least this many of its samples are verified (1: pass@k > 0).", ge=0)
    max_rate: float = param(0.5, "Keep a problem only if at most this share of its samples are verified (a low pass@1).", ge=0, le=1)
    overwrite: bool = param(False, "Replace an existing output directory holding a different run.")

    def check(self) -> None:
        if not self.samples or not self.out:
            raise ConfigError("keys 'samples' and 'out': give the eval run directory and the output directory")


def keep(verified: int, samples: int, min_verified: int, max_rate: float) -> bool:
    """The selection rule: some sample solves it, and not more than ``max_rate`` of them do."""
    return samples > 0 and verified >= min_verified and verified <= max_rate * samples


def count_verified(path: Path) -> dict[str, tuple[int, int]]:
    """``{problem id: (verified samples, samples)}`` from an eval run's ``samples.jsonl`` (synthetic rows only)."""
    counts: dict[str, tuple[int, int]] = {}
    seen: set[tuple[str, Any]] = set()
    for row in iter_jsonl(path):
        if row.get("benchmark", "synthetic") != "synthetic":
            continue
        if "id" not in row or not isinstance(row.get("verified"), bool):
            raise DataError(f"{where(row, path)}: a synthetic sample row needs 'id' and a boolean 'verified'")
        key = (str(row["id"]), row.get("sample", row.get("_line")))
        if key in seen:  # a sample counted twice would inflate its problem's pass rate
            raise DataError(f"{where(row, path)}: sample {key[1]} of '{key[0]}' occurs twice")
        seen.add(key)
        v, n = counts.get(str(row["id"]), (0, 0))
        counts[str(row["id"])] = (v + row["verified"], n + 1)
    if not counts:
        raise DataError(f"{path}: no synthetic sample rows; evaluate the pool with `midtrain eval --synthetic POOL`")
    return counts


def pool_file(cfg: SelectConfig, run_dir: Path, scored: dict[str, Any]) -> str:
    """The problem file: ``cfg.problems``, else the one the eval run (``scored``: its midtrain.json) read, which
    must exist from here."""
    path = cfg.problems or str(scored.get("config", {}).get("synthetic") or "")
    if not path:
        raise ConfigError(f"key 'problems': {run_dir} did not evaluate a synthetic file; give the pool with --problems")
    if not Path(path).is_file():
        if cfg.problems:
            raise DataError(f"key 'problems': file not found: {path}")
        raise ConfigError(
            f"key 'problems': {run_dir} evaluated {path}, which does not exist from here ({Path.cwd()}); a relative path "
            "there is relative to where the eval ran: give the pool with --problems"
        )
    return path


def check_same_file(path: str, digest: str, scored: dict[str, Any], run_dir: Path) -> None:
    """The eval run recorded the content hash of the problem file it scored; ``path`` (hashing to ``digest``) must
    hash the same."""
    recorded = scored.get("inputs", {}).get("data:synthetic")
    if recorded and digest != recorded:
        raise DataError(
            f"{path}: not the file {run_dir} evaluated (its content hash differs: changed since, or another pool with the "
            "same ids); its counts would be paired with other problems. Give the evaluated pool with --problems"
        )


def select(cfg: SelectConfig) -> Result:
    """Write the pool problems at the checkpoint's edge of competence (see the module docstring)."""
    run_dir = Path(cfg.samples)
    if not (run_dir / META).is_file() or not is_complete(run_dir):
        raise DataError(f"{run_dir}: not a finished `midtrain eval` run (needs {META} and a COMPLETE marker)")
    scored = read_meta(run_dir / META)
    problems_path = pool_file(cfg, run_dir, scored)
    cfg = cfg.replace(problems=problems_path)  # the key names the file read, whether given or taken from the run
    with open_run(cfg.out, "synth_select", cfg, {"samples": run_dir, "problems": problems_path}, overwrite=cfg.overwrite) as run:
        if run.cached:
            return Result.of(run)
        problems = load_problems(problems_path)
        counts = count_verified(run_dir / SAMPLES)
        check_coverage(problems, counts, problems_path, run_dir)
        # same ids, other content (e.g. the pool regenerated with other knobs); open_run hashed the file already
        check_same_file(problems_path, run.meta["inputs"]["problems"], scored, run_dir)
        kept = [clean(p) | {"measured": {"verified": counts[p["id"]][0], "samples": counts[p["id"]][1]}}
                for p in problems if keep(*counts[p["id"]], cfg.min_verified, cfg.max_rate)]  # fmt: skip
        if not kept:
            raise DataError(
                f"{run_dir}: no problem of {problems_path} has ≥ {cfg.min_verified} verified samples and a verified "
                f"share ≤ {cfg.max_rate}; lower min_verified, raise max_rate or sample more (--n-samples)"
            )
        write_jsonl(run.path / "problems.jsonl", kept)
        run.finish(metrics(problems, counts, kept))
        log(f"synth select: {len(kept)} of {len(problems)} problems at the edge → {run.path / 'problems.jsonl'}")
        return Result.of(run)


def check_coverage(problems: list[dict[str, Any]], counts: dict[str, tuple[int, int]], path: str, run_dir: Path) -> None:
    """Every pool problem was sampled, and every sampled id is a pool problem: else the run evaluated another file."""
    ids = {p["id"] for p in problems}
    missing = [p["id"] for p in problems if p["id"] not in counts]
    if missing:
        raise DataError(
            f"{run_dir}: {len(missing)} of the {len(problems)} problems of {path} have no samples (first: {missing[0]}); "
            "evaluate the whole pool (no --limit, no --synth-ranges)"
        )
    extra = [i for i in counts if i not in ids]
    if extra:
        raise DataError(f"{run_dir}: samples of {len(extra)} problems that are not in {path} (first: {extra[0]}); wrong --problems?")


def metrics(problems: list[dict[str, Any]], counts: dict[str, tuple[int, int]], kept: list[dict[str, Any]]) -> dict[str, Any]:
    samples = [counts[p["id"]][1] for p in problems]
    rate = sum(counts[p["id"]][0] for p in problems) / sum(samples)
    kept_rate = sum(r["measured"]["verified"] for r in kept) / sum(r["measured"]["samples"] for r in kept)
    return {
        "pool": len(problems),
        "selected": len(kept),
        "samples_per_problem": min(samples) if min(samples) == max(samples) else f"{min(samples)}-{max(samples)}",
        "pool_verified_rate": round(rate, 4),
        "selected_verified_rate": round(kept_rate, 4),
        "verified_hist": histogram([counts[p["id"]][0] for p in problems]),
        "pool_ops": histogram([p["op"] for p in problems]),
        "selected_ops": histogram([r["op"] for r in kept]),
    }


__all__ = ["SelectConfig", "count_verified", "keep", "select"]
