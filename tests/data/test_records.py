"""Record conventions (``midtrain.data.records``): errors name the record's own file and line."""

from __future__ import annotations

import pytest
from data_support import jsonl

from midtrain.data.records import clean, require, where
from midtrain.errors import DataError


def test_where_require_and_clean():
    assert where({"_file": "c/b.jsonl", "_line": 7}, "c/*.jsonl") == "c/b.jsonl:7"
    assert where({}, "x.jsonl") == "x.jsonl:?"
    rec = {"id": "a", "_file": "f.jsonl", "_line": 3}
    require(rec, ["id"], "glob*")
    with pytest.raises(DataError, match=r"^f\.jsonl:3: record has no 'text' field \(fields: id\)$"):
        require(rec, ["id", "text"], "glob*")
    assert clean(rec) == {"id": "a"}


def test_stage_errors_on_a_glob_name_the_file_not_the_pattern(tmp_path):
    """Every stage's own record checks (here judge's) name the file a bad record came from."""
    from midtrain.llm.judge import JudgeConfig
    from midtrain.llm.judge import run as judge

    jsonl(tmp_path / "p" / "a.jsonl", [{"completion": "a", "reference": "a"}])
    jsonl(tmp_path / "p" / "b.jsonl", [{"completion": "a", "reference": "a"}, {"completion": 3, "reference": "b"}])
    cfg = JudgeConfig(input=str(tmp_path / "p" / "*.jsonl"), judge="exact", out=str(tmp_path / "out"))
    with pytest.raises(DataError, match=r"p/b\.jsonl:2: 'completion' is not a string"):
        judge(cfg)
