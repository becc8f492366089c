"""Console output: one rich console on stderr, one-line logs, progress bars, and one seed for everything."""

from __future__ import annotations

import os
import random
import sys
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from typing import TypeVar

from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)

T = TypeVar("T")

console = Console(stderr=True, highlight=False)


def quiet() -> bool:
    return os.environ.get("MIDTRAIN_QUIET", "") not in ("", "0")


def log(message: str) -> None:
    """One line to stderr (suppressed by MIDTRAIN_QUIET=1)."""
    if not quiet():
        console.print(message, markup=False, soft_wrap=True)


def progress(**kwargs) -> Progress:
    """A rich progress bar with count, rate fields and ETA; disabled when stderr is not a terminal or quiet."""
    return Progress(
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("{task.fields[info]}"),
        TimeElapsedColumn(),
        TimeRemainingColumn(),
        console=console,
        disable=quiet() or not sys.stderr.isatty(),
        **kwargs,
    )


def track(items: Iterable[T], description: str, total: int | None = None) -> Iterator[T]:
    with progress() as bar:
        task = bar.add_task(description, total=total, info="")
        for item in items:
            yield item
            bar.advance(task)


def seed_everything(seed: int) -> None:
    """Seed Python, NumPy and torch (CPU and CUDA) from one integer."""
    random.seed(seed)
    try:
        import numpy as np

        np.random.seed(seed % (2**32))
    except ImportError:
        pass
    try:
        import torch

        torch.manual_seed(seed)
    except ImportError:
        pass


def print_table(title: str, head: list[str], rows: list[list[str]]) -> None:
    """A rich table on stdout (the one result a command prints; logs stay on stderr)."""
    from rich.table import Table

    table = Table(title=title, title_justify="left")
    for i, h in enumerate(head):
        table.add_column(h, justify="left" if i == 0 else "right")
    for r in rows:
        table.add_row(*r)
    widths = [max(len(str(c)) for c in col) for col in zip(head, *rows)]
    Console(width=max(80, sum(w + 3 for w in widths) + 1)).print(table)


@contextmanager
def torch_threads(n: int) -> Iterator[None]:
    """Run the block with ``n`` torch intra-op threads (0: leave the setting alone), then restore it."""
    import torch

    before = torch.get_num_threads()
    if n:
        torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(before)
