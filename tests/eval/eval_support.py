"""Shared constants of the evaluation tests (imported by module name; conftest.py holds the fixtures)."""

from __future__ import annotations

from pathlib import Path

import pytest

SHARED_BENCH = Path(__file__).resolve().parents[3] / "shared" / "benchmarks"
FIXTURES = Path(__file__).resolve().parent / "fixtures"


def have_benchmarks() -> bool:
    return (SHARED_BENCH / "gsm8k" / "test.jsonl").is_file()


needs_benchmarks = pytest.mark.skipif(not have_benchmarks(), reason=f"benchmark files not found under {SHARED_BENCH}")
