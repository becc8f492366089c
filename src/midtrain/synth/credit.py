"""Process credit: where in a completion the first wrong step of its trace begins.

Used by ``midtrain rl --loss.credit first_error`` (:func:`midtrain.train.grpo.first_error_advantages`) to give a failed
completion's negative advantage only to the tokens from its first error on, and a rewarded but flawed one's positive
advantage only to the tokens before it. The trace is parsed as :mod:`midtrain.synth.verify` does, and the steps
are walked in the order they were written:

1. A step is **right** when it is the first step for a necessary quantity, its parents equal the gold parents and
   its value the gold value. The first step that is not (a wrong value or dependency, a quantity the answer does
   not need, a repeated quantity) is the first error: its clause's offset in the completion is returned.
2. When every written step is right but the completion is not verified (a necessary step is missing, or the
   answer is wrong or missing), the error is where the trace ends: what comes after it (the answer, or the
   stop) is what went wrong.
3. A verified completion has no error: None.

Offsets are characters of the completion text; the trainer maps them to token positions. The same bounds as
verification hold (hostile text is answered in linear time, never by an exception).
"""

from __future__ import annotations

from typing import Any

from midtrain.synth.verify import gold_of, parse_steps, split_completion, verify


def first_error(problem: dict[str, Any], completion: str) -> int | None:
    """Character offset in ``completion`` of its first wrong step (see the module docstring); None if verified."""
    v = verify(problem, completion)
    if v.verified:
        return None
    if v.reason in ("not text", "too long", "empty"):
        return 0
    gold = gold_of(problem)
    trace, _ = split_completion(completion)
    base = completion.find(trace) if trace else 0  # the trace starts at the completion's start or after <think>
    seen: set[str] = set()
    for step in parse_steps(trace, gold)[0]:
        key = step.key
        if key is None:  # a letter the trace never bound (natural rendering): not a quantity of the problem
            return base + step.start
        right = (
            key in gold.values
            and key not in seen
            and step.value is not None
            and step.value == gold.values[key].mod(gold.modulus)
            and step.parents == gold.parents[key]
        )
        if not right:
            return base + step.start
        seen.add(key)
    return base + len(trace)


__all__ = ["first_error"]
