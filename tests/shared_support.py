"""Where the tests find the shared data (``../shared`` beside the checkout, or ``$MIDTRAIN_DATA_ROOT``).

Through the package's own resolution (:func:`midtrain.eval.benchmarks.data_root`), so that a test needing the
benchmark files runs exactly where ``midtrain eval`` would find them, and skips with the reason everywhere else.
Imported by module name (``tests/`` is on ``sys.path`` as the root conftest's directory).
"""

from __future__ import annotations

from pathlib import Path

import pytest

from midtrain.errors import DataError
from midtrain.eval.benchmarks import data_root, default_data_roots


def benchmark_root() -> Path | None:
    """The benchmark directory the package reads, if it holds the benchmark files (GSM8K's test split)."""
    try:
        root = data_root()
    except DataError:
        return None
    return root if (root / "gsm8k" / "test.jsonl").is_file() else None


def needs_benchmarks_reason() -> str:
    tried = ", ".join(str(p) for p in default_data_roots())
    return f"no benchmark files (gsm8k/test.jsonl) under the data root (tried {tried}; set MIDTRAIN_DATA_ROOT)"


needs_benchmarks = pytest.mark.skipif(benchmark_root() is None, reason=needs_benchmarks_reason())
