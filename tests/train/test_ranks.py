"""Ranks (``midtrain.train.ranks``): read from the launcher's environment, rank 0 without one."""

from __future__ import annotations

from midtrain.train.ranks import is_main, world_size


def test_rank_and_world_size_come_from_the_launcher(monkeypatch):
    monkeypatch.delenv("RANK", raising=False)
    monkeypatch.delenv("WORLD_SIZE", raising=False)
    assert is_main() and world_size() == 1  # no launcher: one process, which owns the run directory
    monkeypatch.setenv("RANK", "1")
    monkeypatch.setenv("WORLD_SIZE", "4")
    assert not is_main() and world_size() == 4
