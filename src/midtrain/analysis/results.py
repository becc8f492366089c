"""What both ``midtrain analyze`` verbs return: the result type and its JSON and text helpers."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any


def strip_per_tensor(obj: Any) -> Any:
    """The JSON summary: the result without per-tensor rows."""
    if isinstance(obj, dict):
        return {k: strip_per_tensor(v) for k, v in obj.items() if k != "per_tensor"}
    if isinstance(obj, list):
        return [strip_per_tensor(v) for v in obj]
    return obj


@dataclass
class AnalysisResult:
    """``data`` is the content of weights.json / cka.json; ``out`` the run dir (None without --out)."""

    data: dict[str, Any]
    out: str | None = None
    cached: bool = False

    def to_dict(self) -> dict[str, Any]:
        return {**strip_per_tensor(self.data), "out": self.out, "cached": self.cached}
