"""``midtrain augment tasks``: RL mid-training suffix tasks (prefix → reference) from augmented chunks.

Algorithm (DESIGN §1.1 step 3): for an augmented chunk with segments ``(x_1, τ_1) … (x_K, τ_K)``, a boundary
``k`` (1 ≤ k < K, after text ``x_k``; ``tasks_per_chunk`` boundaries chosen by hash among those whose prefix has at
least ``min_prefix_tokens`` tokens) gives

- prefix = ``x_1 τ_1 … x_{k-1} τ_{k-1} x_k`` (``keep_thoughts``) or ``x_1 … x_k``: the thought τ_k at the
  boundary is never shown, since it is what the policy must produce;
- reference = ``x_{k+1} …`` with thoughts stripped, cut to at most ``max_reference_sentences`` sentences and
  ``max_reference_tokens`` tokens (a first sentence over budget is cut at a token boundary), whitespace-trimmed;
- prompt = the template (shipped ``prompts/suffix_task.txt``: think inside ``<think>``, then continue) with
  ``{prefix}``.

Record: ``{"id": "<chunk id>@<k>", "prompt", "reference", "kind": "suffix", "meta": {...}}``; ``meta.prefix`` keeps
the bare prefix so that training can re-template it.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from midtrain.augment.chunking import sentences, token_counter
from midtrain.augment.split import accepted_records
from midtrain.config import Config, param
from midtrain.console import log
from midtrain.data.jsonl import write_jsonl
from midtrain.errors import ConfigError, DataError
from midtrain.llm.prompts import check_template, fill_template, load_prompt
from midtrain.runs import Result, open_run
from midtrain.shards import unit_interval
from midtrain.thoughts import THINK_CLOSE, THINK_OPEN

# -- split ------------------------------------------------------------------------------------------------------


# -- suffix tasks -----------------------------------------------------------------------------------------------
@dataclass
class TasksConfig(Config):
    input: str = param("", "A split directory (its rl.jsonl), an augment directory, or a file of augmented records.", positional=True)
    out: str = param("", "Output directory: tasks.jsonl, midtrain.json.", path="dir")
    tokenizer: str = param("", "The policy's tokenizer (token budgets of prefix and reference).", path="dir")
    keep_thoughts: bool = param(True, "Keep the thoughts inside the prefix (the one at the boundary is always dropped).")
    max_reference_tokens: int = param(256, "Reference budget N in tokens.", ge=1)
    max_reference_sentences: int = param(3, "Reference = at most this many sentences of the next segment(s).", ge=1)
    min_prefix_tokens: int = param(16, "Only boundaries with at least this many prefix tokens.", ge=0)
    tasks_per_chunk: int = param(1, "Boundaries (tasks) per chunk, chosen by hash.", ge=1)
    prompt: str = param("suffix_task", "Task prompt: a shipped name or a .txt template with a {prefix} placeholder.")
    salt: str = param("midtrain-suffix", "Hash salt of the boundary choice.")
    overwrite: bool = param(False, "Replace an existing output directory holding a different run.")

    def check(self) -> None:
        if not self.input or not self.out or not self.tokenizer:
            raise ConfigError("keys 'input', 'out' and 'tokenizer': all are required")
        check_template(load_prompt(self.prompt), "prompt", required=["prefix"])


def prefix_text(segments: list[dict[str, Any]], k: int, keep_thoughts: bool) -> str:
    """Text of segments ``[0, k)`` with their thoughts (if kept) except the one at the boundary."""
    parts = []
    for j, s in enumerate(segments[:k]):
        parts.append(s["text"])
        if keep_thoughts and j < k - 1 and s.get("thought"):
            parts.append(THINK_OPEN + s["thought"] + THINK_CLOSE)
    return "".join(parts)


def reference_text(segments: list[dict[str, Any]], k: int, tokenizer: Any, max_tokens: int, max_sentences: int) -> str:
    """The text after boundary ``k``, thoughts stripped, ≤ ``max_sentences`` sentences and ≤ ``max_tokens`` tokens."""
    count = token_counter(tokenizer)
    rest = "".join(s["text"] for s in segments[k:]).lstrip()
    sents = sentences(rest)[:max_sentences]
    if not sents:
        return ""
    counts = count(sents)
    take, total = 0, 0
    for c in counts:
        if total + c > max_tokens:
            break
        take, total = take + 1, total + c
    if take == 0:  # the first sentence alone is over budget: cut it at a token boundary
        ids = tokenizer(sents[0], add_special_tokens=False)["input_ids"][:max_tokens]
        return tokenizer.decode(ids).strip()
    text = "".join(sents[:take]).strip()
    while take > 1 and count([text])[0] > max_tokens:  # merges across boundaries can add a token
        take -= 1
        text = "".join(sents[:take]).strip()
    return text


def suffix_tasks(record: dict[str, Any], cfg: TasksConfig, tokenizer: Any, template: str) -> list[dict[str, Any]]:
    segs = record["segments"]
    count = token_counter(tokenizer)
    candidates = [k for k in range(1, len(segs)) if "".join(s["text"] for s in segs[k:]).strip()]
    if candidates:
        prefix_tokens = count([prefix_text(segs, k, False) for k in candidates])
        candidates = [k for k, n in zip(candidates, prefix_tokens) if n >= cfg.min_prefix_tokens]
    chosen = sorted(candidates, key=lambda k: unit_interval(f"{record['id']}@{k}", cfg.salt))[: cfg.tasks_per_chunk]
    out = []
    for k in sorted(chosen):
        prefix = prefix_text(segs, k, cfg.keep_thoughts)
        ref = reference_text(segs, k, tokenizer, cfg.max_reference_tokens, cfg.max_reference_sentences)
        if not ref:
            continue
        out.append(
            {
                "id": f"{record['id']}@{k}",
                "prompt": fill_template(template, prefix=prefix),
                "reference": ref,
                "kind": "suffix",
                "meta": {
                    "chunk_id": record["id"],
                    "source_id": record.get("source_id"),
                    "domain": record.get("domain"),
                    "boundary": k,
                    "segments": len(segs),
                    "keep_thoughts": cfg.keep_thoughts,
                    "prefix": prefix,
                    "prefix_tokens": count([prefix])[0],
                    "reference_tokens": count([ref])[0],
                },
            }
        )
    return out


def build(cfg: TasksConfig) -> Result:
    """RL mid-training suffix tasks from the RL part (see the module docstring)."""
    from midtrain.models.tokenizer import load_tokenizer

    template = load_prompt(cfg.prompt)
    check_template(template, "prompt", required=["prefix"])
    records = accepted_records(cfg.input)
    tokenizer = load_tokenizer(cfg.tokenizer)
    inputs: dict[str, str | Path] = {"input": cfg.input, "tokenizer": cfg.tokenizer}
    with open_run(cfg.out, "augment_tasks", cfg, inputs, overwrite=cfg.overwrite) as run:
        if run.cached:
            return Result.of(run)
        tasks: list[dict[str, Any]] = []
        skipped = 0
        for rec in records:
            made = suffix_tasks(rec, cfg, tokenizer, template)
            skipped += not made
            tasks += made
        if not tasks:
            raise DataError(f"{cfg.input}: no chunk has a usable boundary (need ≥ 2 segments and ≥ {cfg.min_prefix_tokens} prefix tokens)")
        write_jsonl(run.path / "tasks.jsonl", tasks)
        metrics = {
            "chunks": len(records),
            "tasks": len(tasks),
            "chunks_without_task": skipped,
            "mean_prefix_tokens": round(sum(t["meta"]["prefix_tokens"] for t in tasks) / len(tasks), 1),
            "mean_reference_tokens": round(sum(t["meta"]["reference_tokens"] for t in tasks) / len(tasks), 1),
        }
        run.finish(metrics)
        log(f"augment tasks: {len(tasks)} suffix tasks from {len(records)} chunks → {run.path / 'tasks.jsonl'}")
        return Result.of(run)


__all__ = ["TasksConfig", "build", "prefix_text", "reference_text", "suffix_tasks"]
