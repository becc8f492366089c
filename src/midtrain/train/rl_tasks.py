"""RL task records → the rows of TRL's dataset: one prompt (and its answer, record or baseline prompt) per record.

For each record of ``cfg.data`` (in file order, at most ``prompts.max_examples``): the prompt field is rendered into
``prompts.template`` (``{field}`` placeholders filled from the record, option lists as lettered lines, unknown
names and LaTeX braces left alone), a BOS token is prepended when the tokenizer does not add one itself (TRL
tokenizes prompts with special tokens, as generation does), and the columns the reward reads are attached:
``answer`` (the gold answer or true suffix), ``nothink`` (info_gain's baseline context: the prefix without its
``<think>``), ``record`` (the synthetic problem as JSON), ``choices``, ``steps_k`` (judge, exact_match: k of a step
task of ``midtrain synth tasks``, whose continuation is the generated text itself; 0 for other records). A step task
under a reward that scores the suffix after the thought (info_gain, ref_prob) is a ConfigError. Prompts longer than
``prompts.max_tokens`` (default: the model's context minus the completion budget) are dropped and counted. Every
error names the file and line; all of it runs before the run directory exists.
"""

from __future__ import annotations

import json
from typing import Any

from midtrain.data.corpus import iter_records
from midtrain.data.records import clean, require, where
from midtrain.errors import ConfigError, DataError
from midtrain.llm.prompts import fill_template
from midtrain.models.tokenizer import leading_bos
from midtrain.synth.tasks import step_meta
from midtrain.train.curriculum import MakeProblems
from midtrain.train.info_gain import nothink_prompt
from midtrain.train.ranks import world_size
from midtrain.train.rewards import REWARD_COLUMNS
from midtrain.train.rl_config import POLICY_SCORED, RLConfig


def render_prompt(template: str, rec: dict[str, Any], prompt: str) -> str:
    """``template`` with ``{prompt}`` and the record's scalar fields filled in; a list field of up to 26 scalars
    renders as lettered lines ``A. …\\nB. …``."""
    values = {k: str(v) for k, v in rec.items() if not k.startswith("_") and isinstance(v, (str, int, float))}
    for k, v in rec.items():
        if isinstance(v, list) and 0 < len(v) <= 26 and all(isinstance(x, (str, int, float)) for x in v):
            values[k] = "\n".join(f"{chr(65 + i)}. {x}" for i, x in enumerate(v))
    values["prompt"] = prompt
    return fill_template(template, **values)


def task_row(cfg: RLConfig, rec: dict[str, Any], path: str, bos: str) -> dict[str, Any]:
    """One dataset row of ``rec`` (read from ``path``), with the columns the reward needs."""
    reward, afield, field = cfg.resolved_reward(), cfg.resolved_answer_field(), cfg.prompts.field
    needs, template, loc = REWARD_COLUMNS[reward], cfg.prompts.text_template(), where(rec, path)
    require(rec, [field] + ([afield] if "answer" in needs else []), path)
    check_step_task(cfg, rec, loc)
    prompt = rec[field]
    if not isinstance(prompt, str) or not prompt.strip():
        raise DataError(f"{loc}: '{field}' must be a non-empty string")
    row: dict[str, Any] = {"prompt": bos + render_prompt(template, rec, prompt)}
    if "answer" in needs:
        ans = rec[afield]
        if not isinstance(ans, (str, int, float)) or isinstance(ans, bool) or str(ans).strip() == "":
            raise DataError(f"{loc}: '{afield}' must be a non-empty string or number, got {ans!r}")
        row["answer"] = str(ans)
    if "nothink" in needs:  # info_gain's no-think baseline: the prefix without the thought's <think>
        prefix = rec.get("meta", {}).get("prefix") if isinstance(rec.get("meta"), dict) else None
        text = prefix if isinstance(prefix, str) and prefix.strip() else prompt
        row["nothink"] = nothink_prompt(bos + render_prompt(template, rec, text))
        if not row["nothink"].strip():
            raise DataError(f"{loc}: the prompt without its <think> is empty: info_gain has no prefix to score from")
    if "steps_k" in needs:  # > 0 marks a step task: its continuation is the generated text itself, not after </think>
        meta = step_meta(rec)
        row["steps_k"] = int(meta["k"]) if meta else 0
    if "record" in needs:
        check_synthetic_record(rec, loc)
        row["record"] = json.dumps(clean(rec), ensure_ascii=False)
    if reward == "choice" and isinstance(rec.get("choices"), list):
        row["choices"] = [str(c) for c in rec["choices"]]
    return row


def prompt_bos(cfg: RLConfig, tokenizer: Any) -> str:
    """The BOS text to prepend to each prompt: the tokenizer's BOS when it has one and does not add it itself."""
    ids = tokenizer("x", add_special_tokens=True)["input_ids"]
    adds_bos = bool(ids) and ids[0] == tokenizer.bos_token_id  # TRL tokenizes prompts with special tokens
    return tokenizer.bos_token if cfg.prompts.add_bos and leading_bos(tokenizer) and not adds_bos else ""


def problem_maker(cfg: RLConfig, tokenizer: Any) -> MakeProblems:
    """``curriculum.mode: generate``: a function (op, n, seed) → up to n fresh rows of synthetic problems of ``op``
    operations in ``curriculum.generate.world``, as (problem id, row); problems of the ``exclude`` files (held-out
    sets) are dropped, so training never meets an evaluation problem."""
    from midtrain.synth.generate import SynthConfig, generate_problems

    gen = cfg.curriculum.generate
    world = SynthConfig.from_dict({**gen.world, "n": 1}, prefix="curriculum.generate.world.")
    excluded = {str(rec.get("id")) for path in gen.exclude for rec in iter_records(path)}
    bos = prompt_bos(cfg, tokenizer)

    def make(op: int, n: int, seed: int) -> list[tuple[str, dict[str, Any]]]:
        records = generate_problems(world.replace(ops=str(op), n=n, seed=seed))
        where_ = f"<generated: op {op}, seed {seed}>"
        return [(str(r["id"]), task_row(cfg, r, where_, bos)) for r in records if str(r["id"]) not in excluded]

    return make


def load_tasks(cfg: RLConfig, tokenizer: Any, max_positions: int | None) -> tuple[list[dict[str, Any]], dict[str, int]]:
    """The RL dataset rows (prompt, answer, [record], [choices], [nothink]) after validation, and their counts."""
    bos = prompt_bos(cfg, tokenizer)
    if not cfg.data:  # curriculum.mode generate: the curriculum makes every prompt (problem_maker)
        return [], {"prompts": 0, "prompts_dropped_too_long": 0, "prompt_tokens_max": 0}
    cap = cfg.prompts.max_examples
    rows: list[dict[str, Any]] = []
    for path in cfg.data:
        for rec in iter_records(path):
            rows.append(task_row(cfg, rec, path, bos))
            if cap and len(rows) >= cap:
                break
        if cap and len(rows) >= cap:
            break
    if not rows:
        raise DataError(f"empty dataset: no records in {', '.join(cfg.data)}")
    if cfg.resolved_reward() == "choice" and 0 < sum("choices" in r for r in rows) < len(rows):
        for r in rows:  # (a column present in some rows only would not build one dataset)
            r.setdefault("choices", [])
    budget = cfg.rollout.max_completion_length
    limit = cfg.prompts.max_tokens or ((max_positions or 10**9) - budget)
    if limit < 1:
        raise ConfigError(
            f"key 'rollout.max_completion_length': {budget} leaves no room for a prompt in the model's {max_positions}-token context"
        )
    lengths = [len(x) for x in tokenizer([r["prompt"] for r in rows], add_special_tokens=True)["input_ids"]]
    kept = [r for r, n in zip(rows, lengths) if n <= limit]
    if not kept:
        raise DataError(f"every prompt in {', '.join(cfg.data)} is longer than {limit} tokens (prompts.max_tokens)")
    per_step = cfg.per_device_batch_size * cfg.optim.grad_accum_steps * world_size() // cfg.rollout.num_generations
    if len(kept) < per_step:
        raise DataError(f"{', '.join(cfg.data)}: {len(kept)} usable prompts, but one step needs {per_step} distinct prompts")
    stats = {"prompts": len(kept), "prompts_dropped_too_long": len(rows) - len(kept), "prompt_tokens_max": max(lengths)}
    return kept, stats


def check_step_task(cfg: RLConfig, rec: dict[str, Any], where: str) -> None:
    """Step tasks (``midtrain synth tasks``) against the reward: ``synthetic_steps`` needs one; the rewards scored
    with the policy (info_gain, ref_prob) and the suffix loss read the suffix *after* the thought, and a step task's
    generated steps are thought and prediction at once, so they have no sound definition there: a ConfigError."""
    reward, meta = cfg.resolved_reward(), step_meta(rec)
    if reward == "synthetic_steps" and meta is None:
        raise DataError(f"{where}: reward synthetic_steps needs step task records (midtrain synth tasks), got kind {rec.get('kind')!r}")
    if meta is None:
        return
    if reward in POLICY_SCORED:
        raise ConfigError(
            f"key 'reward': {reward} scores the suffix after the thought, and a step task's steps ({where}) are both; "
            "use synthetic_steps, exact_match or judge"
        )
    if getattr(cfg.loss, "suffix_nll_weight", 0):
        raise ConfigError(f"key 'loss.suffix_nll_weight': the suffix after the thought is undefined on step tasks ({where}); use 0")
    if not isinstance(meta.get("k"), int) or meta["k"] < 1 or not isinstance(meta.get("j"), int):
        raise DataError(f"{where}: a step task needs integer meta.j and meta.k ≥ 1")


def check_synthetic_record(rec: dict[str, Any], where: str) -> None:
    """A DataError naming ``where`` (file:line) unless ``rec`` is a problem the synthetic rewards can score:
    without ``answer`` and ``graph`` every completion would score 0 and the run would learn nothing."""
    from midtrain.synth.verify import gold_of

    missing = [f for f in ("answer", "graph") if f not in rec]
    if missing:
        raise DataError(
            f"{where}: a synthetic reward needs the problem's {' and '.join(repr(m) for m in missing)} (synth generate records)"
        )
    try:
        gold_of(rec)
    except (KeyError, TypeError, ValueError, IndexError, AttributeError) as e:
        raise DataError(f"{where}: not a synthetic problem record (bad graph: {type(e).__name__} {e})") from None


__all__ = ["check_step_task", "check_synthetic_record", "load_tasks", "problem_maker", "prompt_bos", "render_prompt", "task_row"]
