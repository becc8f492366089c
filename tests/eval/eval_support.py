"""Shared constants of the evaluation tests (imported by module name; conftest.py holds the fixtures, and
``shared_support`` finds the benchmark files)."""

from __future__ import annotations

from pathlib import Path

FIXTURES = Path(__file__).resolve().parent / "fixtures"
