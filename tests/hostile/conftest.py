"""Fixtures of the hostile-input suite (issue #14): the shared inputs, built once per session, and a case's world."""

from __future__ import annotations

import pytest
from hostile_support import Assets, Env, build_assets


@pytest.fixture(scope="session")
def assets(tmp_path_factory, tokenizer_dir, nano_model) -> Assets:
    return build_assets(tmp_path_factory.mktemp("hostile_assets"), tokenizer_dir, nano_model)


@pytest.fixture
def env(tmp_path, assets) -> Env:
    """The case's own directory (a child of tmp_path, so that nothing else pytest writes is in its tree)."""
    case = tmp_path / "case"
    case.mkdir()
    return Env(case, assets)
