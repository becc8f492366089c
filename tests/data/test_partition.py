"""Rank partitioning (``midtrain.data.partition``): the arithmetic of the shard axis, on hand-made sizes."""

from __future__ import annotations

import pytest

from midtrain.data.partition import Source, contiguous_part, every, lay_out, owner, part_bounds, parts_over, row_range
from midtrain.errors import DataError


@pytest.mark.parametrize("n, total", [(1, 10), (3, 10), (4, 7), (7, 4), (5, 100)])
def test_parts_tile_the_axis_and_owner_inverts_part_bounds(n, total):
    bounds = [part_bounds(i, n, total) for i in range(n)]
    assert bounds[0][0] == 0 and bounds[-1][1] == total
    assert all(a[1] == b[0] for a, b in zip(bounds, bounds[1:]))  # contiguous, no gap, no overlap
    for pos in range(total):
        i = owner(pos, n, total)
        lo, hi = bounds[i]
        assert lo <= pos < hi


def test_lay_out_puts_sources_end_to_end_by_bytes(tmp_path):
    (tmp_path / "a.jsonl").write_bytes(b"x" * 10)
    (tmp_path / "b.parquet").write_bytes(b"y" * 5)
    (tmp_path / "c.txt").write_bytes(b"")  # an empty file still gets a position, hence an owner
    got = lay_out([str(tmp_path / n) for n in ("a.jsonl", "b.parquet", "c.txt")])
    assert [(s.kind, s.offset, s.weight) for s in got] == [("jsonl", 0, 10), ("parquet", 10, 5), ("text", 15, 1)]
    (tmp_path / "d.csv").write_text("a,b\n")
    with pytest.raises(DataError, match=r"d\.csv: unsupported file type"):
        lay_out([str(tmp_path / "d.csv")])


def test_parts_over_a_source_and_its_row_ranges():
    src = Source("f", "parquet", offset=10, weight=10)  # positions [10, 20) of an axis of 40
    assert parts_over(src, 4, 40) == [1]
    assert parts_over(Source("g", "gz", 5, 20), 4, 40) == [0, 1, 2]
    assert parts_over(Source("h", "hub", 0, 0), 3, 0) == [0, 1, 2]  # a hub stream spans every part
    # 8 rows over [10, 20): parts of 8 cut the axis every 5 positions, at rows 0 and 4
    assert [row_range(src, 8, i, 8, 40) for i in range(8)] == [(0, 0), (0, 0), (0, 4), (4, 8), (8, 8), (8, 8), (8, 8), (8, 8)]


@pytest.mark.parametrize("rows, n", [(10, 3), (3, 5), (0, 2), (7, 7)])
def test_contiguous_part_matches_dataset_shard(rows, n):
    parts = [contiguous_part(rows, n, i) for i in range(n)]
    assert parts[0][0] == 0 and parts[-1][1] == rows and all(a[1] == b[0] for a, b in zip(parts, parts[1:]))
    sizes = [b - a for a, b in parts]
    assert max(sizes) - min(sizes) <= 1 and sizes == sorted(sizes, reverse=True)  # the extra rows go first


def test_every_is_round_robin():
    assert list(every(range(10), 3, 1)) == [1, 4, 7]
    assert sorted(x for k in range(3) for x in every(range(10), 3, k)) == list(range(10))
