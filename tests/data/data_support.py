"""Shared inputs of the ``midtrain.data`` tests: records, and writers of JSONL, Parquet and hub-layout dirs."""

from __future__ import annotations

import json
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

from midtrain.data.records import clean

RECS = [{"id": f"r{i}", "text": f"document {i} " + "word " * (i % 5)} for i in range(30)]

README = """---
license: mit
configs:
- config_name: default
  data_files:
  - split: train
    path: data/train-*
  - split: test
    path: data/test-*
---
# A corpus
"""


def jsonl(path: Path, recs: list[dict[str, Any]]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(r) + "\n" for r in recs))
    return path


def parquet(path: Path, recs: list[dict[str, Any]], row_group_size: int = 4) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    pq.write_table(pa.Table.from_pylist(recs), path, row_group_size=row_group_size)
    return path


def hub_dir(root: Path, readme: bool = True) -> Path:
    """Parquet shards as the hub lays them out: two train files, one test file (never read)."""
    parquet(root / "data" / "train-00000-of-00002.parquet", RECS[:17])
    parquet(root / "data" / "train-00001-of-00002.parquet", RECS[17:])
    parquet(root / "data" / "test-00000-of-00001.parquet", [{"id": "test0", "text": "held out"}])
    if readme:
        (root / "README.md").write_text(README)
    return root


def plain(recs: Iterable[dict[str, Any]]) -> list[dict[str, Any]]:
    return [clean(r) for r in recs]
