"""What every text backend shares, below the backends themselves: failures and how they are counted and told.

A generation request that failed for good raises (or, with ``errors="return"``, yields in its slot) a
:class:`BackendError` that carries a short ``kind`` (``connection refused``, ``HTTP 500``, ``timeout``,
``HTTP 401``, ``HTTP 302 redirect``, an exception class name, …) by which failures are counted, an optional
``hint`` (what to fix, e.g. the API key variable) and ``fatal`` (every further request would fail the same way:
bad credentials, a redirecting URL; callers stop instead of sending more). A *failed* item is an outage, never a
result: the stages count them apart from *rejected* answers (a legitimate outcome), refuse to mark such a run
complete, and retry exactly the failed items on the next run. :func:`failure_message` is the one line they print:
``augment: 12 of 40 chunks failed (connection refused ×12); re-run to retry them``.

:func:`warn_sampling_ignored` says, once per backend, that samples at temperature > 0 came back identical (a server
that ignores the sampling fields). :func:`run_sync` runs a coroutine from synchronous code (also inside a running event loop).
"""

from __future__ import annotations

import asyncio
import concurrent.futures
from collections import Counter
from collections.abc import Iterable
from typing import Any, Literal

from midtrain.console import log
from midtrain.errors import MidtrainError

Errors = Literal["raise", "return"]


class BackendError(MidtrainError):
    """A generation request that failed for good (after the backend's own retries).

    ``kind`` groups failures in counts; ``hint`` says what to fix; ``fatal``: every further request would fail alike.
    Positional arguments with defaults, so that the error survives pickling (datatrove workers) as far as its message.
    """

    def __init__(self, message: str, kind: str = "error", hint: str = "", fatal: bool = False) -> None:
        super().__init__(message)
        self.kind, self.hint, self.fatal = kind, hint, fatal


def as_backend_error(e: BaseException, name: str) -> BackendError:
    """Any exception of a backend call as a :class:`BackendError` (kind: the exception's class name)."""
    if isinstance(e, BackendError):
        return e
    return BackendError(f"{name}: {type(e).__name__}: {e}", type(e).__name__)


def fail_all(n: int, err: BackendError, errors: Errors) -> list[Any]:
    """A whole batch failed: raise, or ``err`` in each of the ``n`` slots."""
    if errors == "raise":
        raise err
    return [err] * n


def describe_kinds(kinds: Counter) -> str:
    """``connection refused ×12, HTTP 500 ×3`` (most frequent first)."""
    return ", ".join(f"{k} ×{c}" for k, c in kinds.most_common())


def failure_message(stage: str, failed: int, total: int, unit: str, kinds: Counter, hints: Iterable[str] = ()) -> str:
    """The one line a stage ends with when items failed: counts by kind, the hints, and that a re-run retries them."""
    hint = "; ".join(dict.fromkeys(h for h in hints if h))
    return (
        f"{stage}: {failed} of {total} {unit} failed ({describe_kinds(kinds)}); "
        + (f"{hint}; " if hint else "")
        + "re-run the same command to retry them (finished ones are kept)"
    )


def warn_sampling_ignored(backend: Any, temperature: float, n: int) -> None:
    """Say once per backend that a server returned identical samples at temperature > 0."""
    if getattr(backend, "sampling_warned", False):
        return
    backend.sampling_warned = True
    backend.stats["identical_samples"] += 1
    log(
        f"[warning] {backend.name}: {n} samples at temperature {temperature:g} came back identical: the server seems "
        "to ignore the sampling fields (transformers serve samples only if the model's generation config sets "
        "do_sample), so retries and n > 1 sample nothing new; use vLLM/SGLang, or set do_sample in generation_config.json"
    )


def run_sync(coro: Any) -> Any:
    """Run a coroutine from synchronous code, also when called inside a running event loop (own thread)."""
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return asyncio.run(coro)
    with concurrent.futures.ThreadPoolExecutor(1) as ex:
        return ex.submit(asyncio.run, coro).result()


__all__ = [
    "BackendError",
    "Errors",
    "as_backend_error",
    "describe_kinds",
    "fail_all",
    "failure_message",
    "run_sync",
    "warn_sampling_ignored",
]
