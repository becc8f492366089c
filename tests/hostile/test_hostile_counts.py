"""Hostile counts (issue 32, item 8): ``max_steps: 2**63`` hung; every integer field is bounded by what the code can
count, and the error names the key.

Every int field of every stage's config (sections included) refuses 2**63 (:data:`midtrain.config.MAX_INT` unless
the field declares its own bound); a step count within the int range that the packing plan cannot hold in memory is
refused before the plan is built; and the CLI says so in one line naming the key.
"""

from __future__ import annotations

import dataclasses
import types
import typing
from collections.abc import Iterator
from typing import Any

import pytest
from hostile_support import Case, Env, check_case, params

from midtrain.config import MAX_INT, Config, check_fields
from midtrain.errors import ConfigError
from midtrain.stages import STAGES

pytestmark = pytest.mark.timeout(60)
HUGE = 2**63


def holds_int(tp: Any) -> bool:
    if tp is int:
        return True
    origin = typing.get_origin(tp)
    if origin in (typing.Union, types.UnionType):
        return any(holds_int(a) for a in typing.get_args(tp))
    if origin in (list, dict):
        return holds_int(typing.get_args(tp)[-1])
    return False


def int_fields(cfg: Config, prefix: str = "") -> Iterator[tuple[Config, str, str, Any]]:
    """(config or section, field name, dotted key, annotation) of every int-holding field, sections included."""
    hints = typing.get_type_hints(type(cfg))
    for f in dataclasses.fields(cfg):
        value = getattr(cfg, f.name)
        if isinstance(value, Config):
            yield from int_fields(value, f"{prefix}{f.name}.")
        elif holds_int(hints[f.name]):
            yield cfg, f.name, prefix + f.name, hints[f.name]


def huge(tp: Any) -> Any:
    origin = typing.get_origin(tp)
    return [HUGE] if origin is list else {"k": HUGE} if origin is dict else HUGE


FIELDS = [
    pytest.param(st.verb, key, id=f"{st.verb}:{key}")
    for st in STAGES
    for _, _, key, _ in int_fields(st.resolve()[1].from_dict({}, check=False))
]


@pytest.mark.parametrize("verb, key", FIELDS)
def test_every_int_field_refuses_2_to_the_63(verb: str, key: str) -> None:
    cls = next(st for st in STAGES if st.verb == verb).resolve()[1]
    cfg = cls.from_dict({}, check=False)
    owner, name, _, tp = next(f for f in int_fields(cfg) if f[2] == key)
    setattr(owner, name, huge(tp))
    with pytest.raises(ConfigError, match=rf"key '{key}(\[0\]|\.k)?'"):
        check_fields(cfg)


def test_the_int_range_itself_is_accepted() -> None:
    from midtrain.synth.generate import SynthConfig

    assert SynthConfig.from_dict({"max_tries": MAX_INT}).max_tries == MAX_INT
    with pytest.raises(ConfigError, match=rf"key 'max_tries': must be <= {MAX_INT}"):
        SynthConfig.from_dict({"max_tries": MAX_INT + 1})


def PRE(e: Env, *extra: str, verb: str = "pretrain") -> list[str]:
    return [verb, "--model", str(e.a.nano), "--corpus.files", str(e.a.corpus), "--seq-len", "32", "--out", str(e.out), *extra]


CASES = [
    Case("counts/pretrain-max-steps-2**63", lambda e: PRE(e, "--max-steps", str(HUGE)), ["max_steps", str(MAX_INT)]),
    Case("counts/sft-max-steps-2**63", lambda e: PRE(e, "--max-steps", str(HUGE), verb="sft"), ["max_steps"]),
    Case("counts/pretrain-warmup-negative-2**63", lambda e: PRE(e, "--optim.warmup-steps", str(-HUGE)), ["optim.warmup_steps"]),
    Case("counts/pretrain-max-tokens-2**63", lambda e: PRE(e, "--max-tokens", str(HUGE)), ["max_tokens"]),
    # within the int range, but the packing plan of 2**31 steps would not fit in any machine's memory
    Case("counts/pretrain-max-steps-int-max", lambda e: PRE(e, "--max-steps", str(MAX_INT)), ["max_steps", "memory"]),
    Case("counts/pretrain-max-tokens-plan", lambda e: PRE(e, "--max-tokens", str(2**53)), ["max_tokens", "memory"]),
    Case(
        "counts/rl-max-steps-2**63",
        lambda e: ["rl", "--model", str(e.a.nano), "--data", str(e.a.rl_tasks), "--max-steps", str(HUGE), "--out", str(e.out)],
        ["max_steps"],
    ),
    Case("counts/synth-n-2**63", lambda e: ["synth", "generate", "--n", str(HUGE), "--out", str(e.path("p.jsonl"))], ["key 'n'"]),
    Case(
        "counts/eval-n-samples-2**63",
        lambda e: ["eval", "--model", str(e.a.nano), "--synthetic", str(e.a.problems), "--n-samples", str(HUGE), "--out", str(e.out)],
        ["n_samples"],
    ),
]


@pytest.mark.parametrize("case", params(CASES))
def test_hostile(case: Case, env: Env, capsys) -> None:
    check_case(case, env, capsys)
