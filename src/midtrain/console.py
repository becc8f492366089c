"""Console output: one rich console on stderr, one-line logs, progress bars, and one seed for everything."""

from __future__ import annotations

import os
import random
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TaskID,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)

console = Console(stderr=True, highlight=False)


def quiet() -> bool:
    return os.environ.get("MIDTRAIN_QUIET", "") not in ("", "0")


def log(message: str) -> None:
    """One line to stderr (suppressed by MIDTRAIN_QUIET=1)."""
    if not quiet():
        console.print(message, markup=False, soft_wrap=True)


def progress(*, log_every_s: float | None = None, **kwargs: Any) -> Progress:
    """A rich progress bar with count, rate fields and ETA; disabled when stderr is not a terminal or quiet.

    With ``log_every_s``, a run without a terminal (a pipe, a log file, a batch job) is not silent: each task logs
    one plain line at most every ``log_every_s`` seconds and one when it completes (:class:`LineProgress`).
    """
    columns = (
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("{task.fields[info]}"),
        TimeElapsedColumn(),
        TimeRemainingColumn(),
    )
    disable = quiet() or not sys.stderr.isatty()
    if log_every_s is None:
        return Progress(*columns, console=console, disable=disable, **kwargs)
    return LineProgress(*columns, console=console, disable=disable, log_every_s=log_every_s, lines=disable and not quiet(), **kwargs)


def clock(seconds: float) -> str:
    """``seconds`` as ``M:SS`` or ``H:MM:SS``: the package's one duration format (every ETA, as rich's bars show it)."""
    m, s = divmod(int(max(seconds, 0)), 60)
    h, m = divmod(m, 60)
    return f"{h}:{m:02d}:{s:02d}" if h else f"{m}:{s:02d}"


def fmt_num(v: Any, spec: str = ".4f", missing: str = "n/a") -> str:
    """One value as text, the package's one number formatter (log lines, summaries, report tables).

    A float by the format ``spec`` (NaN and infinities print as ``nan``/``inf``: a diverged loss must show); an int
    as is (a count); a bool as ``true``/``false``; None (no value) as ``missing``; anything else with ``str``.
    """
    if v is None:
        return missing
    if isinstance(v, bool):
        return str(v).lower()
    if isinstance(v, int):
        return str(v)
    if isinstance(v, float):
        return format(v, spec)
    return str(v)


class LineProgress(Progress):
    """A rich :class:`Progress` that also logs ``description: done/total (pct) · info · elapsed · ETA`` lines.

    With ``lines`` (the bar is hidden), every ``update``/``advance`` of a task logs a line when ``log_every_s``
    seconds have passed since its last one (its first after ``log_every_s`` seconds; 0: every call), and once when
    it completes. The ETA is the mean rate since the task started, steadier in a log than the bar's recent rate.
    """

    def __init__(self, *columns: Any, log_every_s: float, lines: bool, **kwargs: Any) -> None:
        super().__init__(*columns, **kwargs)
        self.log_every_s, self.lines = log_every_s, lines
        self._started: dict[TaskID, float] = {}
        self._last: dict[TaskID, float] = {}
        self._done: set[TaskID] = set()

    def add_task(self, *args: Any, **kwargs: Any) -> TaskID:
        task_id = super().add_task(*args, **kwargs)
        self._started[task_id] = self._last[task_id] = time.monotonic()
        return task_id

    def update(self, task_id: TaskID, **kwargs: Any) -> None:
        super().update(task_id, **kwargs)
        self._maybe_log(task_id)

    def advance(self, task_id: TaskID, advance: float = 1) -> None:
        super().advance(task_id, advance)
        self._maybe_log(task_id)

    def _maybe_log(self, task_id: TaskID) -> None:
        if not self.lines or task_id in self._done:
            return
        task = next(t for t in self.tasks if t.id == task_id)
        now = time.monotonic()
        finished = task.total is not None and task.completed >= task.total
        if not finished and now - self._last[task_id] < self.log_every_s:
            return
        self._last[task_id] = now
        if finished:
            self._done.add(task_id)
        elapsed = now - self._started[task_id]
        parts = [f"{task.completed:g}/{task.total:g} ({task.completed / task.total:.0%})" if task.total else f"{task.completed:g}"]
        if task.fields.get("info"):
            parts.append(str(task.fields["info"]))
        parts.append(f"{clock(elapsed)} elapsed")
        if task.total and 0 < task.completed < task.total:
            parts.append(f"ETA {clock(elapsed * (task.total - task.completed) / task.completed)}")
        log(f"{task.description}: " + " · ".join(parts))


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
