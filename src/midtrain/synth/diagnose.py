"""Skill diagnostics for models trained in the synthetic world: which sub-skill of a trace is learned.

A whole trace chains dozens of predictions, so verified accuracy stays near zero until *every* sub-skill is
near 1.0 (DESIGN §4). This module measures the sub-skills separately, cheaply enough to run every N steps:

- **Teacher-forced next-token accuracy per skill** on gold compact traces. Each completion character is
  labelled (``label_compact``): ``plan`` (which quantity the step computes: the name opening a clause),
  ``fact`` (the fact's expression, or a constant's value, found in the question), ``copy`` (parent values
  substituted into the expression), ``arith`` (the step's result), ``solve`` (reverse-mode equation clause),
  ``answer`` (the digits inside ``<answer>``) and ``format`` (``=``, ``.``, tags). A token is scored under the
  label of its first character; accuracy = argmax prediction equals the gold token.
- **Verified accuracy with a trace** (greedy generation from ``prompt``, process-verified by
  :func:`midtrain.synth.verify`) and **with a direct answer** (prompt = question then an empty solution,
  ``<think></think><answer>``; only the answer is compared), per op.

The verb ``midtrain synth diagnose`` (:func:`diagnose`) runs both on a checkpoint for each named op range
(``--ops.scale`` tiny: id 2-5, edge 6-8, hard 9-12; paper: 2-10, 11-14, 15-20; or ``ops.ranges``), on the first
``n_per_range`` compact problems of the files, and writes ``diagnose.json`` into the cached run directory ``out``::

    midtrain synth diagnose runs/sft --problems id.jsonl edge.jsonl --n-per-range 64 --out runs/diagnose-sft

During ``pretrain``/``sft`` (their ``diagnose`` section, :class:`DiagnosticsConfig`) the same two measurements run
as a training probe (:func:`training_callbacks`) into the run's ``diagnostics.jsonl``.
"""

from __future__ import annotations

import time
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, ClassVar

from midtrain.config import Config, param
from midtrain.console import log, torch_threads
from midtrain.data.corpus import read_all
from midtrain.data.records import where
from midtrain.errors import ConfigError, DataError
from midtrain.fileio import atomic_write_json
from midtrain.probes import Periodic
from midtrain.runs import Result, open_run
from midtrain.synth.summary import OPS_RENAMED, OpRangeConfig

SKILLS = ("plan", "fact", "copy", "arith", "solve", "answer", "format")


def label_compact(completion: str) -> list[str]:
    """One skill label per character of a compact completion (``a=2.b=3*a=3*2=6.</think><answer>6</answer>``)."""
    labels = ["format"] * len(completion)
    end = completion.find("</think>")
    trace = completion if end < 0 else completion[:end]
    pos = 0
    for clause in trace.split("."):
        if not clause:
            pos += 1
            continue
        if ":" in clause:  # reverse mode: "3a+2=8:a=2"
            for i, ch in enumerate(clause):
                if ch not in "=.:":
                    labels[pos + i] = "solve"
            pos += len(clause) + 1
            continue
        parts = clause.split("=")
        cursor = pos
        for k, part in enumerate(parts):
            if k == 0:
                skill = "plan"
            elif len(parts) == 2 or k == 1:
                skill = "fact"
            elif k == len(parts) - 1:
                skill = "arith"
            else:
                skill = "copy"
            for i in range(len(part)):
                labels[cursor + i] = skill
            cursor += len(part) + 1  # the '=' stays "format"
        pos += len(clause) + 1
    a0 = completion.find("<answer>")
    a1 = completion.find("</answer>")
    if a0 >= 0 and a1 > a0:
        for i in range(a0 + len("<answer>"), a1):
            if not completion[i].isspace():
                labels[i] = "answer"
    return labels


def skill_accuracy(model: Any, tokenizer: Any, problems: Sequence[dict], *, batch_size: int = 32) -> dict[str, float]:
    """Teacher-forced next-token accuracy per skill on the gold completions of compact problems."""
    import torch

    hits: dict[str, int] = defaultdict(int)
    total: dict[str, int] = defaultdict(int)
    bos = tokenizer.bos_token or ""
    model.eval()
    for start in range(0, len(problems), batch_size):
        chunk = problems[start : start + batch_size]
        texts = [bos + p["prompt"] + p["completion"] for p in chunk]
        enc = tokenizer(texts, return_offsets_mapping=True, add_special_tokens=False, padding=True, return_tensors="pt")
        with torch.inference_mode():
            pred = model(input_ids=enc["input_ids"], attention_mask=enc["attention_mask"]).logits.argmax(-1)  # [B, T]
        for row, p in enumerate(chunk):
            labels = label_compact(p["completion"])
            first = len(bos) + len(p["prompt"])
            ids = enc["input_ids"][row].tolist()
            for t, (a, b) in enumerate(enc["offset_mapping"][row].tolist()):
                if t == 0 or b <= a or a < first or not enc["attention_mask"][row, t]:
                    continue
                skill = labels[a - first]
                total[skill] += 1
                hits[skill] += int(pred[row, t - 1].item() == ids[t])
    return {s: round(hits[s] / total[s], 4) for s in SKILLS if total[s]}


def direct_prompt(problem: dict) -> str:
    """The prompt asking for the answer without a trace."""
    return problem["prompt"] + ("</think><answer>" if problem.get("render") == "compact" else " </think> <answer>")


def trace_and_direct_accuracy(
    model: Any, tokenizer: Any, problems: Sequence[dict], *, max_new_tokens: int | None = None, batch_size: int = 32
) -> dict[str, Any]:
    """Greedy verified accuracy with a trace and answer accuracy without one, overall and per op.

    ``max_new_tokens`` defaults to 1.5× the longest gold completion (a longer trace cannot verify anyway).
    """
    from midtrain.models.generation import generate
    from midtrain.synth.verify import verify

    if max_new_tokens is None:
        longest = max(len(tokenizer(p["completion"], add_special_tokens=False)["input_ids"]) for p in problems)
        max_new_tokens = int(1.5 * longest) + 4
    with_trace = generate(
        model, tokenizer, [p["prompt"] for p in problems], max_new_tokens=max_new_tokens, batch_size=batch_size, stop=["</answer>"]
    )
    direct = generate(model, tokenizer, [direct_prompt(p) for p in problems], max_new_tokens=8, batch_size=batch_size, stop=["</answer>"])
    by_op: dict[int, list[tuple[bool, bool]]] = defaultdict(list)
    for p, gens, dgens in zip(problems, with_trace, direct):
        ok_trace = verify(p, gens[0].text).verified
        guess = dgens[0].text.split("</answer>")[0].strip()
        by_op[p["op"]].append((ok_trace, guess == str(p["answer"]).strip()))
    rows = [r for v in by_op.values() for r in v]
    return {
        "trace_acc": round(sum(a for a, _ in rows) / max(len(rows), 1), 4),
        "direct_acc": round(sum(b for _, b in rows) / max(len(rows), 1), 4),
        "by_op": {
            op: {"n": len(v), "trace_acc": round(sum(a for a, _ in v) / len(v), 4), "direct_acc": round(sum(b for _, b in v) / len(v), 4)}
            for op, v in sorted(by_op.items())
        },
    }


DIAGNOSE_FIELDS = ("prompt", "completion", "op", "graph", "render", "answer")
DIAGNOSTICS_LOG = "diagnostics.jsonl"  # of a training run with diagnose.every_steps


@dataclass
class DiagnosticsConfig(Config):
    """Skill diagnostics during ``pretrain``/``sft``: the ``diagnose`` section of a causal-LM stage."""

    data: str = param("", "Synthetic compact problems (JSONL) for skill diagnostics during training.", path="file")
    every_steps: int = param(0, "Run skill diagnostics every N steps into diagnostics.jsonl (0: off).", ge=0)
    n: int = param(64, "Problems used per diagnostic.", ge=1)

    def check(self) -> None:
        if self.every_steps and not self.data:
            raise ConfigError("key 'data': every_steps > 0 needs a file of compact synthetic problems")


# The flat keys of the section before it was one (``RENAMED`` of the stages that have it).
DIAGNOSE_RENAMED = {"diagnose_data": "diagnose.data", "diagnose_every_steps": "diagnose.every_steps", "diagnose_n": "diagnose.n"}


def training_callbacks(cfg: DiagnosticsConfig) -> list[Periodic]:
    """The ``diagnose`` section of ``pretrain``/``sft`` as training probes (empty when off).

    Every ``every_steps`` optimizer steps, on rank 0: per-skill teacher-forced accuracy and greedy trace/direct
    accuracy on the first ``n`` compact problems of ``data``, one record per line in ``diagnostics.jsonl``
    (``{"step", "skills", "trace_acc", "direct_acc", "by_op"}``). The problems are read now, so that a bad file
    fails before the run directory exists.
    """
    if not (cfg.every_steps and cfg.data):
        return []
    problems = read_all(cfg.data, required=["prompt", "completion", "op", "graph"])[: cfg.n]

    def diagnostics(model: Any, tokenizer: Any, step: int) -> dict[str, Any]:
        was_training = model.training
        skills = skill_accuracy(model, tokenizer, problems)
        acc = trace_and_direct_accuracy(model, tokenizer, problems)
        model.train(was_training)
        log(
            f"diagnostics @ {step}: trace {acc['trace_acc']:.2f}  direct {acc['direct_acc']:.2f}  "
            + "  ".join(f"{k} {v:.2f}" for k, v in skills.items())
        )
        return {"skills": skills, **acc}

    return [Periodic(cfg.every_steps, DIAGNOSTICS_LOG, diagnostics)]


DIAGNOSE_JSON = "diagnose.json"


@dataclass
class SynthDiagnoseConfig(Config):
    RENAMED: ClassVar[dict[str, str]] = OPS_RENAMED

    model: str = param("", "Model checkpoint directory to diagnose.", positional=True)
    problems: list[str] = param(
        [],
        "Synthetic problem JSONL files rendered compact (midtrain synth generate "
        "--render compact); records need prompt, completion, op, graph, render, answer.",
        path="file",
    )
    ops: OpRangeConfig = param(OpRangeConfig(scale="tiny"), "The op ranges diagnosed, each on its own.")
    n_per_range: int = param(64, "Diagnose the first N problems of each range, in file order.", ge=1)
    batch_size: int = param(32, "Sequences per forward pass / generation batch.", ge=1)
    threads: int = param(0, "torch intra-op threads (0 = torch's default).", ge=0)
    out: str = param("", "Output run directory (diagnose.json).", path="dir")
    overwrite: bool = param(False, "Replace an existing output directory holding a different run.")

    def check(self) -> None:
        if not self.model:
            raise ConfigError("key 'model': give a model checkpoint directory")
        if not self.out:
            raise ConfigError("key 'out': give an output run directory (--out runs/diagnose)")
        if not self.problems:
            raise ConfigError("key 'problems': give compact synthetic problem JSONL files (--problems id.jsonl)")
        self.ops.validate("ops.")  # also when the section was built in Python rather than parsed

    def ranges(self) -> dict[str, list[int]]:
        return self.ops.resolve()


def select_for_diagnosis(cfg: SynthDiagnoseConfig) -> dict[str, list[dict[str, Any]]]:
    """The first ``n_per_range`` problems of each range (files in order), checked; empty ranges are left out.

    Errors (missing file, missing field, non-integer op, a non-compact record among the selected) name file:line.
    """
    recs: list[tuple[str, dict[str, Any]]] = []
    for path in cfg.problems:
        for rec in read_all(path, required=DIAGNOSE_FIELDS):
            if not isinstance(rec["op"], int) or isinstance(rec["op"], bool):
                raise DataError(f"{where(rec, path)}: 'op' must be an integer, got {rec['op']!r}")
            recs.append((path, rec))
    selected: dict[str, list[dict[str, Any]]] = {}
    for name, (lo, hi) in cfg.ranges().items():
        chosen = [(path, rec) for path, rec in recs if lo <= rec["op"] <= hi][: cfg.n_per_range]
        if not chosen:
            log(f"synth diagnose: no problems with op in [{lo}, {hi}]: range '{name}' skipped")
            continue
        for path, rec in chosen:
            if rec["render"] != "compact":
                raise DataError(
                    f"{where(rec, path)}: render is '{rec['render']}', but skills are only "
                    "defined for compact renderings (midtrain synth generate --render compact)"
                )
        selected[name] = [rec for _, rec in chosen]
    if not selected:
        raise DataError(
            f"no problems of {', '.join(cfg.problems)} fall in the op ranges "
            + ", ".join(f"{k} {lo}-{hi}" for k, (lo, hi) in cfg.ranges().items())
        )
    return selected


def diagnose(cfg: SynthDiagnoseConfig) -> Result:
    """Skill diagnostic of a checkpoint on the synthetic world; writes diagnose.json (see the module docstring)."""

    selected = select_for_diagnosis(cfg)  # before open_run: bad input leaves no output directory behind
    inputs: dict[str, str] = {"model": cfg.model, **{f"problems[{i}]": p for i, p in enumerate(cfg.problems)}}
    with open_run(cfg.out, "synth-diagnose", cfg, inputs, overwrite=cfg.overwrite) as run:
        if run.cached:
            return Result.of(run)
        import torch

        from midtrain.models.init import load_model
        from midtrain.models.tokenizer import load_tokenizer

        ranges = cfg.ranges()
        report: dict[str, Any] = {"model": cfg.model, "problems": list(cfg.problems), "ranges": {}}
        metrics: dict[str, Any] = {}
        with torch_threads(cfg.threads), torch.inference_mode():
            model, tok = load_model(cfg.model), load_tokenizer(cfg.model)
            model.eval()
            for name, probs in selected.items():
                t0 = time.perf_counter()
                skills = skill_accuracy(model, tok, probs, batch_size=cfg.batch_size)
                acc = trace_and_direct_accuracy(model, tok, probs, batch_size=cfg.batch_size)
                report["ranges"][name] = {
                    "ops": list(ranges[name]),
                    "n": len(probs),
                    "trace_acc": acc["trace_acc"],
                    "direct_acc": acc["direct_acc"],
                    "skills": skills,
                    "by_op": acc["by_op"],
                }
                metrics.update({f"{name}/trace_acc": acc["trace_acc"], f"{name}/direct_acc": acc["direct_acc"], f"{name}/n": len(probs)})
                log(
                    f"synth diagnose: {name} ({len(probs)} problems, {time.perf_counter() - t0:.1f}s) trace_acc "
                    f"{acc['trace_acc']:.4f} direct_acc {acc['direct_acc']:.4f} " + " ".join(f"{k} {v:.3f}" for k, v in skills.items())
                )
        atomic_write_json(run.path / DIAGNOSE_JSON, report)
        run.finish(metrics)
        return Result.of(run)
