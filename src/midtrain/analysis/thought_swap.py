"""``midtrain analyze thought-swap``: does a checkpoint use its own thought to predict the continuation? (issue 29 §4)

Algorithm. Each suffix task i of ``data`` is a prompt x_i ending in ``<think>`` and its true suffix s_i (the
``reference``). The model samples one thought c_i per task (``temperature``; 0 = greedy) up to and including its
``</think>``; a thought that hits ``max_thought_tokens`` or EOS first is closed with ``</think>``, as the RL rewards
close it (:func:`midtrain.train.info_gain.thought_ids`). π is a fixed derangement of the tasks drawn from ``seed``
(:func:`derangement`, Sattolo's algorithm: a uniformly random n-cycle, so no task keeps its own thought). Each
suffix is then scored twice by teacher forcing, in padded batches (:func:`midtrain.train.info_gain.reference_logits`):

    own_i = f(s_i | x_i, c_i)          swapped_i = f(s_i | x_i, c_π(i))

for three f (:func:`suffix_scores`): ``logp``, the mean log p(s_ij | ·, s_i,<j) (RLP's term); ``prob``, the mean
token probability (RLPR's reward); ``exact``, 1 iff greedy decoding after the context reproduces s_i, i.e. every
suffix token is the argmax at its position (RPT's exact match, read off the same forward: :func:`greedy_match`).
Reported per f (:func:`swap_table`): the means over tasks with their standard errors (std/√n) and the paired drop
d_i = own_i − swapped_i, mean ± s.e. A drop of several s.e. says that the continuation depends on the thought; a
drop near 0 says that the model ignores it. Another task's thought is the control because it changes the thought's
content and keeps its form (its length distribution, its tags), which an empty thought would not.

With ``--out DIR`` the run directory holds ``thought_swap.json``: the table, n, the mean thought length and the
share of thoughts the model closed itself.

    midtrain analyze thought-swap runs/rlmt runs/tasks/rl.jsonl --max-examples 200 --out runs/swap
"""

from __future__ import annotations

import math
import random
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import torch

from midtrain.analysis.results import AnalysisResult
from midtrain.config import MAX_SEED, Config, param
from midtrain.console import fmt_num, log
from midtrain.data.corpus import iter_records
from midtrain.data.records import require, where
from midtrain.errors import DataError
from midtrain.fileio import atomic_write_json, read_json
from midtrain.runs import open_run
from midtrain.train.info_gain import (
    close_token_id,
    left_pad,
    masked_mean_logprob,
    pad_id_of,
    reference_probability,
    score_references,
    thought_ids,
)

THOUGHT_SWAP_JSON = "thought_swap.json"
METRICS = ("logp", "prob", "exact")  # the columns of suffix_scores, in order
Scorer = Callable[[list[list[int]], list[list[int]]], dict[str, list[float]]]  # (contexts, refs) → metric → per row


# -- pure functions --------------------------------------------------------------------------------------------
def derangement(n: int, seed: int) -> list[int]:
    """A permutation π of range(n) with π(i) ≠ i for every i (n ≥ 2): Sattolo's algorithm, a uniformly random
    n-cycle, fixed by ``seed``."""
    if n < 2:
        raise ValueError(f"a derangement needs at least 2 items, got {n}")
    perm = list(range(n))
    rng = random.Random(seed)
    for i in range(n - 1, 0, -1):
        j = rng.randrange(i)  # j < i (never i itself): what makes the result one cycle
        perm[i], perm[j] = perm[j], perm[i]
    return perm


def greedy_match(logits: torch.Tensor, targets: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """1.0 per row iff every masked target is the argmax of its logits, else 0.0 ([N, K, V], [N, K], [N, K] → [N]):
    greedy decoding from the context reproduces the targets exactly (up to ties), without generating."""
    hit = logits.argmax(dim=-1) == targets  # [N, K]
    return (hit | ~mask.bool()).all(dim=1).float()  # [N]


def suffix_scores(logits: torch.Tensor, targets: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """[N, 3]: per row the mean log-probability, the mean probability and the greedy exact match (:data:`METRICS`)."""
    cols = (masked_mean_logprob(logits, targets, mask), reference_probability(logits, targets, mask), greedy_match(logits, targets, mask))
    return torch.stack(cols, dim=1)


def mean_se(values: Sequence[float]) -> dict[str, float | None]:
    """``{"mean", "se"}`` of ``values``: the mean and its standard error std/√n (unbiased std; None below 2 values)."""
    n = len(values)
    mean = sum(values) / n if n else math.nan
    se = math.sqrt(sum((v - mean) ** 2 for v in values) / (n - 1) / n) if n >= 2 else None
    return {"mean": mean if n else None, "se": se}


def swap_table(own: dict[str, list[float]], swapped: dict[str, list[float]]) -> dict[str, dict[str, Any]]:
    """Per metric: own and swapped means ± s.e., and the paired drop own − swapped, mean ± s.e. over tasks."""
    out = {}
    for m in own:
        drop = [a - b for a, b in zip(own[m], swapped[m], strict=True)]
        out[m] = {"own": mean_se(own[m]), "swapped": mean_se(swapped[m]), "drop": mean_se(drop)}
    return out


def probe(
    prompts: Sequence[list[int]], thoughts: Sequence[list[int]], refs: Sequence[list[int]], score: Scorer, perm: Sequence[int]
) -> tuple[dict[str, list[float]], dict[str, list[float]]]:
    """``(own, swapped)`` scores of each reference after its prompt + its own thought, and after its prompt + the
    thought of task ``perm[i]``."""
    own = score([list(p) + list(t) for p, t in zip(prompts, thoughts, strict=True)], list(refs))
    swapped = score([list(p) + list(thoughts[j]) for p, j in zip(prompts, perm, strict=True)], list(refs))
    return own, swapped


# -- the model side --------------------------------------------------------------------------------------------
@dataclass
class ThoughtSwapConfig(Config):
    model: str = param("", "Checkpoint to probe (an HF checkpoint dir, e.g. a midtrain rl run).", positional=True)
    data: str = param("", "Suffix tasks (JSONL/Parquet: `augment tasks` or synthetic suffix-task records).", positional=True)
    prompt_field: str = param("prompt", "Record field of the prompt (it ends in <think>: the model writes the thought).")
    reference_field: str = param("reference", "Record field of the true suffix.")
    max_examples: int = param(256, "Tasks probed (the first ones in the file).", ge=2)
    temperature: float = param(1.0, "Sampling temperature of the thoughts (0 = greedy; top-k and top-p off).", ge=0)
    max_thought_tokens: int = param(256, "Thought budget in tokens; a thought still open there is closed with </think>.", ge=1)
    batch_size: int = param(16, "Sequences per generation batch and per scoring forward.", ge=1)
    seed: int = param(0, "Seed of the thought sampling and of the derangement.", ge=0, le=MAX_SEED)
    out: str = param("", "Run directory for thought_swap.json (empty: print only).", path="dir")
    overwrite: bool = param(False, "Replace an existing output directory holding a different run.")


def load_suffix_tasks(cfg: ThoughtSwapConfig, tokenizer: Any) -> tuple[list[list[int]], list[list[int]]]:
    """``(prompts, refs)`` as token ids: each prompt as generation sees it (the tokenizer's specials, the leading BOS
    the model was trained with), each reference without specials (as the RL rewards tokenize it)."""
    from midtrain.models.tokenizer import leading_bos

    bos = leading_bos(tokenizer)
    prompts, refs = [], []
    for rec in iter_records(cfg.data):
        require(rec, [cfg.prompt_field, cfg.reference_field], cfg.data)
        prompt, ref = rec[cfg.prompt_field], rec[cfg.reference_field]
        if not isinstance(prompt, str) or not prompt.strip() or not isinstance(ref, (str, int, float)) or not str(ref).strip():
            raise DataError(f"{where(rec, cfg.data)}: '{cfg.prompt_field}' and '{cfg.reference_field}' must be non-empty strings")
        ids = tokenizer(prompt, add_special_tokens=True)["input_ids"]
        prompts.append(ids if not bos or ids[:1] == bos else bos + ids)
        refs.append(tokenizer(str(ref), add_special_tokens=False)["input_ids"])
        if len(prompts) >= cfg.max_examples:
            break
    if len(prompts) < 2:
        raise DataError(f"{cfg.data}: {len(prompts)} task(s); the thought swap needs at least 2")
    return prompts, refs


def sample_thoughts(model: Any, tokenizer: Any, prompts: list[list[int]], cfg: ThoughtSwapConfig) -> tuple[list[list[int]], int]:
    """One closed thought per prompt (generation stops at ``</think>`` or EOS), and how many the model closed itself."""
    from midtrain.models.generation import generate_rows

    close = close_token_id(tokenizer, "model", "the thought swap")
    eos, pad = tokenizer.eos_token_id, pad_id_of(tokenizer)
    kwargs: dict[str, Any] = dict(
        max_new_tokens=cfg.max_thought_tokens, use_cache=True, pad_token_id=pad, eos_token_id=[t for t in (eos, close) if t is not None]
    )
    if cfg.temperature > 0:
        kwargs.update(do_sample=True, temperature=cfg.temperature, top_p=1.0, top_k=0)  # RL's rollout defaults
    else:
        kwargs.update(do_sample=False, temperature=None, top_p=None, top_k=None)
    torch.manual_seed(cfg.seed)
    device = next(model.parameters()).device
    thoughts, closed = [], 0
    for start in range(0, len(prompts), cfg.batch_size):
        ids, att, _ = left_pad(prompts[start : start + cfg.batch_size], pad)  # [B, P]
        for row in generate_rows(model, {"input_ids": ids.to(device), "attention_mask": att.to(device)}, kwargs):
            closed += close in row
            thoughts.append(thought_ids(row, close, {t for t in (eos, pad) if t is not None}))
    return thoughts, closed


def model_scorer(model: Any, pad_id: int, batch_size: int) -> Scorer:
    """The :data:`Scorer` of ``model``: :func:`suffix_scores` of each reference after its context, ``batch_size``
    rows per forward."""

    def score(contexts: list[list[int]], refs: list[list[int]]) -> dict[str, list[float]]:
        parts = [
            score_references(model, contexts[i : i + batch_size], refs[i : i + batch_size], pad_id, score=suffix_scores)
            for i in range(0, len(contexts), batch_size)
        ]
        table = torch.cat(parts)  # [N, 3]
        return {m: table[:, k].tolist() for k, m in enumerate(METRICS)}

    return score


def analyze_thought_swap(cfg: ThoughtSwapConfig) -> dict[str, Any]:
    """The thought_swap.json content (module docstring); no files written."""
    from midtrain.models.init import load_model
    from midtrain.models.tokenizer import load_tokenizer

    tok = load_tokenizer(cfg.model)  # (checked before the run directory exists: thought_swap)
    prompts, refs = load_suffix_tasks(cfg, tok)
    model = load_model(cfg.model).eval()
    t0 = time.time()
    with torch.inference_mode():
        thoughts, closed = sample_thoughts(model, tok, prompts, cfg)
        own, swapped = probe(
            prompts, thoughts, refs, model_scorer(model, pad_id_of(tok), cfg.batch_size), derangement(len(prompts), cfg.seed)
        )
    n = len(prompts)
    return {
        "model": cfg.model,
        "data": cfg.data,
        "n": n,
        "temperature": cfg.temperature,
        "seed": cfg.seed,
        "thought_tokens_mean": sum(len(t) for t in thoughts) / n,
        "thoughts_closed": closed / n,
        "metrics": swap_table(own, swapped),
        "seconds": round(time.time() - t0, 3),
    }


def _pm(d: dict[str, Any], sign: str = "") -> str:
    return f"{fmt_num(d['mean'], sign + '.3f')} ± {fmt_num(d['se'], '.3f')}"


@dataclass
class ThoughtSwapResult(AnalysisResult):
    def summary(self) -> str:
        d = self.data
        sampling = f"T={d['temperature']:g}" if d["temperature"] > 0 else "greedy"
        lines = [
            f"analyze thought-swap: {d['model']} on {d['n']} tasks of {d['data']}, thoughts {sampling} "
            f"(mean {d['thought_tokens_mean']:.1f} tokens, {100 * d['thoughts_closed']:.0f}% closed by the model)"
            + (f" → {self.out}" if self.out else ""),
            f"  {'metric':<7} {'own thought':>17} {'swapped thought':>17} {'drop (own − swapped)':>22}",
        ]
        for m, row in d["metrics"].items():
            lines.append(f"  {m:<7} {_pm(row['own']):>17} {_pm(row['swapped']):>17} {_pm(row['drop'], '+'):>22}")
        return "\n".join(lines)


def thought_swap(cfg: ThoughtSwapConfig) -> ThoughtSwapResult:
    """``midtrain analyze thought-swap``: the suffix scored after the model's own thought and after another task's."""
    if not cfg.out:
        return ThoughtSwapResult(analyze_thought_swap(cfg))
    from midtrain.models.init import check_model_dir
    from midtrain.models.tokenizer import load_tokenizer

    check_model_dir(cfg.model)  # bad input fails before the run directory exists
    load_suffix_tasks(cfg, load_tokenizer(cfg.model))
    with open_run(
        cfg.out, "analyze_thought_swap", cfg, {"model": cfg.model, "data": cfg.data}, overwrite=cfg.overwrite, seed=cfg.seed
    ) as run:
        if run.cached:
            return ThoughtSwapResult(read_json(run.path / THOUGHT_SWAP_JSON), str(run.path), cached=True)
        data = analyze_thought_swap(cfg)
        atomic_write_json(run.path / THOUGHT_SWAP_JSON, data)
        run.finish({"n": data["n"], **{f"drop_{m}": row["drop"]["mean"] for m, row in data["metrics"].items()}})
        log(f"analyze thought-swap: logp drop {_pm(data['metrics']['logp']['drop'], '+')} over {data['n']} tasks → {run.path}")
        return ThoughtSwapResult(data, str(run.path))


__all__ = [
    "METRICS",
    "THOUGHT_SWAP_JSON",
    "Scorer",
    "ThoughtSwapConfig",
    "ThoughtSwapResult",
    "analyze_thought_swap",
    "derangement",
    "greedy_match",
    "load_suffix_tasks",
    "mean_se",
    "model_scorer",
    "probe",
    "sample_thoughts",
    "suffix_scores",
    "swap_table",
    "thought_swap",
]
