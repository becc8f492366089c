"""SFT/RL split and RL mid-training suffix tasks."""

from __future__ import annotations

import json

import pytest

from midtrain.augment.split import SplitConfig, is_rl, split
from midtrain.augment.tasks import TasksConfig, build, prefix_text, reference_text, suffix_tasks
from midtrain.errors import DataError
from midtrain.models.tokenizer import load_tokenizer
from midtrain.thoughts import THINK_OPEN, render_augmented

SEGMENTS = [
    {"text": "The river froze early. ", "thought": "Winter came soon; what happened to the town?"},
    {"text": "The town was cut off for a month. ", "thought": "Supplies must have run low."},
    {"text": "Food ran short by March. People left. Some came back in May. Most did not.", "thought": None},
]
RECORD = {
    "id": "d#0000",
    "source_id": "d",
    "chunk": "".join(s["text"] for s in SEGMENTS),
    "domain": "general",
    "segments": SEGMENTS,
    "annotator": "x",
    "status": "accepted",
}


@pytest.fixture(scope="module")
def tok(tokenizer_dir):
    return load_tokenizer(tokenizer_dir)


def write(path, records):
    path.write_text("".join(json.dumps(r) + "\n" for r in records))
    return path


def test_prefix_drops_the_boundary_thought_and_optionally_all():
    assert prefix_text(SEGMENTS, 1, True) == "The river froze early. "
    with_thoughts = prefix_text(SEGMENTS, 2, True)
    assert with_thoughts == (
        "The river froze early. <think>Winter came soon; what happened to the town?</think>The town was cut off for a month. "
    )
    assert THINK_OPEN not in prefix_text(SEGMENTS, 2, False)
    assert "Supplies" not in with_thoughts  # the thought at the boundary is the policy's to write


def test_reference_budgets(tok):
    assert reference_text(SEGMENTS, 2, tok, 1000, 3) == "Food ran short by March. People left. Some came back in May."
    assert reference_text(SEGMENTS, 2, tok, 1000, 1) == "Food ran short by March."
    short = reference_text(SEGMENTS, 2, tok, 5, 3)
    assert 0 < len(tok(short, add_special_tokens=False)["input_ids"]) <= 5 and "Food".startswith(short[:4])
    assert reference_text(SEGMENTS, 1, tok, 1000, 3).startswith("The town was cut off")
    assert THINK_OPEN not in reference_text(SEGMENTS, 1, tok, 1000, 3)


def test_suffix_task_records(tok):
    cfg = TasksConfig(input="x", out="y", tokenizer="t", min_prefix_tokens=1, tasks_per_chunk=5)
    tasks = suffix_tasks(RECORD, cfg, tok, "Think, then continue.\n\n{prefix}")
    assert [t["id"] for t in tasks] == ["d#0000@1", "d#0000@2"]
    t = tasks[1]
    assert t["kind"] == "suffix" and set(t) == {"id", "prompt", "reference", "kind", "meta"}
    assert t["prompt"] == "Think, then continue.\n\n" + t["meta"]["prefix"]
    assert t["meta"]["boundary"] == 2 and t["meta"]["reference_tokens"] <= 256 and t["meta"]["keep_thoughts"]
    one = suffix_tasks(RECORD, TasksConfig(input="x", out="y", tokenizer="t", min_prefix_tokens=1), tok, "{prefix}")
    assert len(one) == 1 and one == suffix_tasks(
        RECORD, TasksConfig(input="x", out="y", tokenizer="t", min_prefix_tokens=1), tok, "{prefix}"
    )
    assert suffix_tasks(RECORD, TasksConfig(input="x", out="y", tokenizer="t", min_prefix_tokens=10_000), tok, "{prefix}") == []


def test_split_is_deterministic_by_chunk_text(tmp_path):
    recs = [{**RECORD, "id": f"d{i}#0000", "chunk": f"chunk {i}", "segments": [{"text": f"chunk {i}", "thought": "t"}]} for i in range(200)]
    recs.append({**recs[0], "id": "copy#0000"})  # same text as d0#0000
    recs.append({**recs[1], "status": "rejected"})
    src = write(tmp_path / "aug.jsonl", recs)
    m = split(SplitConfig(input=str(src), out=str(tmp_path / "s"), rl_fraction=0.3)).metrics
    assert m["accepted"] == 201 and m["sft"] + m["rl"] == 201 and 30 <= m["rl"] <= 90
    rl = [json.loads(x) for x in (tmp_path / "s" / "rl.jsonl").read_text().splitlines()]
    sft = [json.loads(x) for x in (tmp_path / "s" / "sft.jsonl").read_text().splitlines()]
    assert all(is_rl(r["chunk"], 0.3) for r in rl) and not any(is_rl(r["chunk"], 0.3) for r in sft)
    assert ("d0#0000" in {r["id"] for r in rl}) == ("copy#0000" in {r["id"] for r in rl})
    assert all(r["text"] == render_augmented(r) for r in sft)
    m2 = split(SplitConfig(input=str(src), out=str(tmp_path / "s2"), rl_fraction=0.3)).metrics
    assert m2["rl"] == m["rl"] and (tmp_path / "s2" / "rl.jsonl").read_text() == (tmp_path / "s" / "rl.jsonl").read_text()
    assert split(SplitConfig(input=str(src), out=str(tmp_path / "s3"), rl_fraction=0.0)).metrics["rl"] == 0


def test_build_tasks_and_input_errors(tmp_path, tokenizer_dir):
    src = write(tmp_path / "rl.jsonl", [RECORD, {**RECORD, "id": "e#0000"}])
    m = build(TasksConfig(input=str(src), out=str(tmp_path / "t"), tokenizer=str(tokenizer_dir), min_prefix_tokens=1)).metrics
    assert m["tasks"] == 2 and m["chunks"] == 2
    rows = [json.loads(x) for x in (tmp_path / "t" / "tasks.jsonl").read_text().splitlines()]
    assert all(r["kind"] == "suffix" and "<think>" in r["prompt"] for r in rows)  # the prompt asks for thinking
    unfinished = tmp_path / "unfinished"
    unfinished.mkdir()
    (unfinished / "midtrain.json").write_text("{}")
    with pytest.raises(DataError, match="not finished"):
        build(TasksConfig(input=str(unfinished), out=str(tmp_path / "u"), tokenizer=str(tokenizer_dir)))
    with pytest.raises(DataError, match="no accepted"):
        split(SplitConfig(input=str(write(tmp_path / "none.jsonl", [{**RECORD, "status": "failed"}])), out=str(tmp_path / "n")))
