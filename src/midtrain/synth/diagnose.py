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
"""

from __future__ import annotations

from collections import defaultdict
from typing import Any, Sequence

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
    from midtrain.generation import generate
    from midtrain.synth.verify import verify

    if max_new_tokens is None:
        longest = max(len(tokenizer(p["completion"], add_special_tokens=False)["input_ids"]) for p in problems)
        max_new_tokens = int(1.5 * longest) + 4
    with_trace = generate(model, tokenizer, [p["prompt"] for p in problems], max_new_tokens=max_new_tokens,
                          batch_size=batch_size, stop=["</answer>"])
    direct = generate(model, tokenizer, [direct_prompt(p) for p in problems], max_new_tokens=8,
                      batch_size=batch_size, stop=["</answer>"])
    by_op: dict[int, list[tuple[bool, bool]]] = defaultdict(list)
    for p, gens, dgens in zip(problems, with_trace, direct):
        ok_trace = verify(p, gens[0].text).verified
        guess = dgens[0].text.split("</answer>")[0].strip()
        by_op[p["op"]].append((ok_trace, guess == str(p["answer"]).strip()))
    rows = [r for v in by_op.values() for r in v]
    return {
        "trace_acc": round(sum(a for a, _ in rows) / max(len(rows), 1), 4),
        "direct_acc": round(sum(b for _, b in rows) / max(len(rows), 1), 4),
        "by_op": {op: {"n": len(v), "trace_acc": round(sum(a for a, _ in v) / len(v), 4),
                       "direct_acc": round(sum(b for _, b in v) / len(v), 4)} for op, v in sorted(by_op.items())},
    }
