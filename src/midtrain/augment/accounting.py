"""Accounting of ``midtrain augment``: counts by status, reason and failure kind, the manifest, and failed shards.

A :class:`Tally` counts the records of a shard (status, ``status:reason``, thoughts, corpus tokens, a few examples
per reason, failed chunks by error kind and the hints of their errors, and in insert mode the outcome of every
thought checked: kept or its rejection reason); shard markers hold it, and
:func:`merge_manifest` sums the markers of all finished shards. A shard that ended with failed chunks has no marker
but ``shard-i-of-N.failed.json`` (:func:`failed_summary_path`, the same counts plus ``total`` and
``not_attempted``); :func:`stop_on_failures` turns those of an invocation into one error line naming the counts by
kind, after recording them in ``midtrain.json``, so the run is neither complete nor a cache hit. On resume
:func:`drop_failed` rewrites a shard file without its failed records (atomically), so their chunks are asked
again and every chunk ends up once.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from midtrain.console import log
from midtrain.data.jsonl import write_jsonl
from midtrain.errors import MidtrainError
from midtrain.fileio import read_json
from midtrain.llm.base import failure_message
from midtrain.shards import read_done, shard_paths
from midtrain.thoughts import REASONS

EXAMPLES_PER_REASON = 3


@dataclass
class Tally:
    """Counts by status and reason, thoughts and tokens, plus a few examples per reason."""

    status: Counter = field(default_factory=Counter)
    reasons: Counter = field(default_factory=Counter)
    thoughts: int = 0
    tokens: int = 0
    examples: dict[str, list[dict[str, str]]] = field(default_factory=dict)
    failures: Counter = field(default_factory=Counter)  # failed chunks by error kind (connection refused, HTTP 500, …)
    hints: dict[str, None] = field(default_factory=dict)  # what to fix, from the failures (ordered, unique)
    thought_checks: Counter = field(default_factory=Counter)  # insert mode: answers checked, "kept" or by reason

    def add(self, rec: dict[str, Any]) -> None:
        self.status[rec["status"]] += 1
        if rec["status"] == "failed":
            self.failures[rec.get("error") or "error"] += 1
            if rec.get("hint"):
                self.hints.setdefault(rec["hint"])
        self.tokens += int(rec.get("tokens") or 0)
        self.thought_checks.update(rec.get("thought_checks") or ())
        if rec["status"] == "accepted":
            self.thoughts += sum(1 for s in rec["segments"] if s.get("thought"))
        else:
            reason = rec.get("reason") or "unknown"
            self.reasons[f"{rec['status']}:{reason}"] += 1
            ex = self.examples.setdefault(reason, [])
            if len(ex) < EXAMPLES_PER_REASON:
                ex.append({"id": rec["id"], "detail": str(rec.get("detail", ""))[:300]})

    def merge(self, d: dict[str, Any]) -> None:
        self.status.update(d.get("status", {}))
        self.reasons.update(d.get("reasons", {}))
        self.thoughts += d.get("thoughts", 0)
        self.tokens += d.get("tokens", 0)
        self.failures.update(d.get("failures", {}))
        self.hints.update(dict.fromkeys(d.get("hints", [])))
        self.thought_checks.update(d.get("thought_checks", {}))
        for reason, ex in d.get("examples", {}).items():
            mine = self.examples.setdefault(reason, [])
            mine += ex[: EXAMPLES_PER_REASON - len(mine)]

    def to_dict(self) -> dict[str, Any]:
        return {
            "status": dict(self.status),
            "reasons": dict(self.reasons),
            "thoughts": self.thoughts,
            "tokens": self.tokens,
            "examples": self.examples,
            "failures": dict(self.failures),
            "hints": list(self.hints),
            "thought_checks": dict(self.thought_checks),
        }

    @property
    def chunks(self) -> int:
        return sum(self.status.values())


def failed_summary_path(jsonl: Path) -> Path:
    """``shard-i-of-N.failed.json`` next to the shard file: the counts of a shard that ended with failed chunks."""
    return jsonl.with_name(jsonl.stem + ".failed.json")


def drop_failed(path: Path, records: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The records to keep on resume: failed ones are removed from the shard file (one atomic rewrite), so that
    their chunks are asked again and end up once."""
    kept = [r for r in records if r.get("status") != "failed"]
    if len(kept) < len(records):
        write_jsonl(path, kept)
        log(f"augment: {path.name}: retrying {len(records) - len(kept)} chunk(s) that failed before")
    return kept


def merge_manifest(out: str | Path, num_shards: int) -> dict[str, Any]:
    """Counts over all finished shards; ``shards_done < num_shards`` while some are missing."""
    tally, done, files = Tally(), 0, []
    for i in range(num_shards):
        paths = shard_paths(out, i, num_shards)
        info = read_done(paths)
        if info is None:
            continue
        done += 1
        tally.merge(info)
        files.append((paths.parquet if info.get("format") == "parquet" else paths.jsonl).name)
    n = tally.chunks
    acc = tally.status["accepted"]
    rejected = {r.split(":", 1)[1]: k for r, k in sorted(tally.reasons.items()) if r.startswith("rejected:")}
    failed = {r.split(":", 1)[1]: k for r, k in sorted(tally.reasons.items()) if r.startswith("failed:")}
    return {
        "num_shards": num_shards,
        "shards_done": done,
        "chunks": n,
        "accepted": acc,
        "rejected": tally.status["rejected"],
        "failed": tally.status["failed"],
        "acceptance_rate": round(acc / n, 4) if n else 0.0,
        "rejected_by_reason": {r: rejected.get(r, 0) for r in REASONS if rejected.get(r)},
        "failed_by_reason": failed,
        "thoughts_per_accepted_chunk": round(tally.thoughts / acc, 3) if acc else 0.0,
        "chunk_tokens": tally.tokens,
        "thought_checks": thought_check_summary(tally.thought_checks),
        "files": files,
        "examples": tally.examples,
    }


def thought_check_summary(outcomes: Counter) -> dict[str, Any]:
    """Insert mode: how many thought answers were checked and kept, and the rejections by reason (report order)
    with their share of the answers; empty in rewrite mode."""
    answers = sum(outcomes.values())
    if not answers:
        return {}
    rejected = {r: outcomes[r] for r in REASONS if outcomes.get(r)}
    rejected.update({r: k for r, k in sorted(outcomes.items()) if r != "kept" and r not in rejected})
    return {
        "answers": answers,
        "kept": outcomes["kept"],
        "kept_rate": round(outcomes["kept"] / answers, 4),
        "rejected_by_reason": rejected,
        "rejected_share": {r: round(k / answers, 4) for r, k in rejected.items()},
    }


def stop_on_failures(out: str | Path, num_shards: int, shards: Iterable[int], run_: Any, manifest: dict[str, Any]) -> None:
    """Shards of this invocation that ended with failed chunks: record the counts, keep the run resumable (not
    complete) and exit non-zero with one line naming the failures by kind."""
    tally, total, not_attempted = Tally(), 0, 0
    for i in shards:
        paths = shard_paths(out, i, num_shards)
        summary = failed_summary_path(paths.jsonl)
        if summary.is_file() and read_done(paths) is None:
            info = read_json(summary)
            tally.merge(info)
            total += int(info.get("total", 0))
            not_attempted += int(info.get("not_attempted", 0))
    if not (tally.failures or not_attempted):
        return
    kinds = Counter(tally.failures)
    if not_attempted:
        kinds["not attempted after a fatal error"] += not_attempted
    failed = sum(kinds.values())
    run_.update(metrics={**manifest, "failed": failed, "failed_by_kind": dict(kinds)})
    raise MidtrainError(failure_message("augment", failed, manifest["chunks"] + total, "chunks", kinds, tally.hints))


__all__ = [
    "EXAMPLES_PER_REASON",
    "Tally",
    "drop_failed",
    "failed_summary_path",
    "merge_manifest",
    "stop_on_failures",
    "thought_check_summary",
]
