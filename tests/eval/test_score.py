"""``midtrain eval score --format lm-eval``: lm-evaluation-harness ``--log_samples`` files scored by midtrain."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from eval_support import FIXTURES

from midtrain.cli import main
from midtrain.errors import DataError
from midtrain.eval.score import ScoreConfig, read_lm_eval, score, sniff_format

LM_EVAL = FIXTURES / "lm_eval_samples_gsm8k_style.jsonl"  # 3 docs x 2 filters (strict-match, flexible-extract)


def problems(tmp_path: Path) -> Path:
    """The fixture's three problems as a custom benchmark (ids of our own, other order than lm-eval's doc_ids)."""
    docs = {}
    for line in LM_EVAL.read_text().splitlines():
        rec = json.loads(line)
        docs[rec["doc_id"]] = rec["doc"]
    rows = [
        {"id": f"p{k}", "problem": docs[i]["question"], "answer": docs[i]["answer"].split("####")[-1].strip()}
        for k, i in enumerate((2, 0, 1))
    ]
    path = tmp_path / "arith.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def test_lm_eval_samples_are_scored_from_the_raw_generations(tmp_path: Path, capsys) -> None:
    data = problems(tmp_path)
    assert sniff_format(LM_EVAL) == "lm-eval"
    rows = read_lm_eval(LM_EVAL, [json.loads(x) for x in data.read_text().splitlines()])
    assert [(r["id"], r["sample"]) for r in rows] == [("p1", 0), ("p2", 0), ("p0", 0)]  # matched by question text, once per doc
    assert main(["eval", "score", "--data", str(data), "--completions", str(LM_EVAL), "--format", "lm-eval", "--json"]) == 0
    s = json.loads(capsys.readouterr().out)
    # lm-eval's strict-match filter gave 1/3 ('\boxed{18}' is [invalid] to it); midtrain reads the raw text: 2/3
    assert s["n"] == 3 and s["samples"] == 3 and s["accuracy"] == pytest.approx(2 / 3) and s["missing"] == 0
    auto = score(ScoreConfig.from_dict(dict(data=str(data), completions=str(LM_EVAL)))).to_dict()
    assert auto["accuracy"] == s["accuracy"]  # format auto recognises the file


def test_lm_eval_repeats_positions_and_errors(tmp_path: Path) -> None:
    records = [{"id": "a", "problem": "1+1?", "answer": "2"}, {"id": "b", "problem": "2+2?", "answer": "4"}]
    f = tmp_path / "s.jsonl"
    # no question text in doc: doc_id is the position; repeats give several samples of one doc
    f.write_text(json.dumps({"doc_id": 1, "doc": {"x": 1}, "resps": [["4", "\\boxed{5}"]], "filtered_resps": ["4"]}) + "\n")
    rows = read_lm_eval(f, records)
    assert [(r["id"], r["sample"], r["completion"]) for r in rows] == [("b", 0, "4"), ("b", 1, "\\boxed{5}")]
    f.write_text(json.dumps({"doc_id": 0, "doc": {"question": "3+3?"}, "resps": [["6"]]}) + "\n")
    with pytest.raises(DataError, match=rf"{f}:1: doc_id 0: its question is not in the benchmark"):
        read_lm_eval(f, records)
    f.write_text(json.dumps({"doc_id": 0, "doc": {"question": "1+1?"}, "resps": [[[-0.5, False]], [[-2.1, False]]]}) + "\n")
    with pytest.raises(DataError, match="no generated text"):
        read_lm_eval(f, records)
    f.write_text(json.dumps({"doc_id": 7, "doc": {}, "resps": [["6"]]}) + "\n")
    with pytest.raises(DataError, match="doc_id 7 is not a position"):
        read_lm_eval(f, records)
    f.write_text(json.dumps({"id": "a", "completion": "2"}) + "\n")
    with pytest.raises(DataError, match="needs 'doc_id' and 'resps'"):
        read_lm_eval(f, records)
    assert sniff_format(f) == "midtrain"
