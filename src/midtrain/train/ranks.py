"""Which process this is under a distributed launcher (torchrun, accelerate): its rank and the world size.

Read from the launcher's environment (``RANK``, ``WORLD_SIZE``), so that it answers before (and without) a process
group: rank 0 owns the run directory's files and prints; the other ranks compute and follow.
"""

from __future__ import annotations

import os


def world_size() -> int:
    return int(os.environ.get("WORLD_SIZE", "1"))


def is_main() -> bool:
    """Rank 0 (or no launcher): the one process that owns the run directory's files."""
    return int(os.environ.get("RANK", "0")) == 0
