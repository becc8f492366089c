"""The ``${...}`` references of experiment files: finding them, substituting them, and the stage each names.

A reference is ``${name}`` with ``name`` a stage (its output path), ``seed``, ``out``, ``vars.KEY``, or a service's
``NAME.url`` / ``NAME.port`` (:mod:`midtrain.experiment.service`). :func:`substitute` replaces them through a
lookup function; a string that is exactly one reference takes the referenced value's type (``"${seed}"`` → 3).
"""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any

REF = re.compile(r"\$\{([A-Za-z_][\w.\-]*)\}")


def references(value: Any) -> list[str]:
    """Every ``${...}`` name inside a nested value."""
    if isinstance(value, str):
        return REF.findall(value)
    if isinstance(value, dict):
        return [r for v in value.values() for r in references(v)]
    if isinstance(value, (list, tuple)):
        return [r for v in value for r in references(v)]
    return []


def substitute(value: Any, lookup: Callable[[str], Any]) -> Any:
    """Replace references; a string that is exactly one reference takes the referenced value's type."""
    if isinstance(value, str):
        m = REF.fullmatch(value)
        if m:
            return lookup(m.group(1))
        return REF.sub(lambda mm: str(lookup(mm.group(1))), value)
    if isinstance(value, dict):
        return {k: substitute(v, lookup) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [substitute(v, lookup) for v in value]
    return value


def ref_stage(stages: dict[str, Any], ref: str) -> str | None:
    """The stage a reference names: ``NAME`` itself, or the service of ``NAME.url`` / ``NAME.port``; else None."""
    if ref in stages:
        return ref
    name, _, attr = ref.rpartition(".")
    return name if attr in ("url", "port") and name in stages and stages[name].service.command else None


__all__ = ["REF", "ref_stage", "references", "substitute"]
