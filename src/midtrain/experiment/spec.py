"""The shared types of an experiment's plan, in a leaf module: a compared arm (:class:`ArmSpec`) and a resolved
stage for one seed (:class:`Step`).

The plan (:mod:`midtrain.experiment.graph`) builds them; the executor, the launcher of out-of-process stages
(:mod:`midtrain.experiment.launch`) and the compute accounting (:mod:`midtrain.experiment.compute`) read them. They
import them from here, never from the plan or the runner, so no module of the package imports the one that imports it.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from midtrain.config import Config, param


@dataclass
class ArmSpec(Config):
    """One compared arm: a chain of training stages after the base, and the eval of its final checkpoint."""

    label: str = param("", "Display name, e.g. 'base → SFT(think) → RL'.")
    chain: list[str] = param([], "Training stages after the base, in order (compute is summed over them).")
    eval: str = param("", "The eval stage of the arm's final checkpoint.")


@dataclass
class Step:
    """One stage for one seed, fully resolved."""

    name: str
    seed: int | None  # None: a per-experiment stage
    verb: str
    out: Path
    config: Config | None  # None for `path` stages; a ServiceSpec for services
    deps: list[str]
    fingerprint: str = ""  # the cache key of a stage that uses services (see plan)

    @property
    def key(self) -> str:
        return f"{self.name}@seed-{self.seed}" if self.seed is not None else f"{self.name}@shared"


__all__ = ["ArmSpec", "Step"]
