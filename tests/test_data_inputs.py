"""Input specs (files, globs, shard dirs in hub layout, save_to_disk dirs, hub ids) and sharded streaming reads."""

from __future__ import annotations

import gzip
import json
import tempfile
from collections import Counter
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from midtrain.data import clean, expand_input, input_files, iter_corpus, iter_records, read_all
from midtrain.errors import DataError
from midtrain.runs import content_hash

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


def jsonl(path: Path, recs: list[dict]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(r) + "\n" for r in recs))
    return path


def parquet(path: Path, recs: list[dict], row_group_size: int = 4) -> Path:
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


def plain(recs) -> list[dict]:
    return [clean(r) for r in recs]


def test_glob_hub_dir_and_save_to_disk_dir_read_the_same_records(tmp_path):
    datasets = pytest.importorskip("datasets")
    jsonl(tmp_path / "corpus" / "a.jsonl", RECS[:10])
    jsonl(tmp_path / "corpus" / "sub" / "b.jsonl", RECS[10:])
    (tmp_path / "corpus" / "notes.csv").write_text("not matched\n")
    datasets.Dataset.from_list(RECS).save_to_disk(str(tmp_path / "saved"))
    glob = str(tmp_path / "corpus" / "**" / "*.jsonl")
    assert expand_input(glob) == [str(tmp_path / "corpus" / "a.jsonl"), str(tmp_path / "corpus" / "sub" / "b.jsonl")]
    assert expand_input(str(hub_dir(tmp_path / "hub"))) == [
        str(tmp_path / "hub" / "data" / f"train-0000{k}-of-00002.parquet") for k in (0, 1)
    ]
    assert expand_input(str(tmp_path / "saved")) == [str(tmp_path / "saved")]
    for spec in (glob, str(tmp_path / "hub"), str(tmp_path / "saved"), str(tmp_path / "corpus")):
        assert plain(iter_records(spec)) == RECS, spec
    recs = list(iter_records(str(tmp_path / "hub")))  # each record names its own file and row
    assert (Path(recs[17]["_file"]).name, recs[17]["_line"]) == ("train-00001-of-00002.parquet", 1)


def test_hub_dir_without_readme_reads_its_train_files_and_readme_picks_the_default_config(tmp_path):
    root = hub_dir(tmp_path / "hub", readme=False)
    assert [Path(f).name for f in expand_input(str(root))] == ["train-00000-of-00002.parquet", "train-00001-of-00002.parquet"]
    (root / "README.md").write_text(
        "---\nconfigs:\n- config_name: small\n  data_files: data/train-00000-*\n"
        "- config_name: other\n  default: true\n  data_files:\n    train: [data/test-*]\n---\n"
    )
    assert [Path(f).name for f in expand_input(str(root))] == ["test-00000-of-00001.parquet"]
    (root / "README.md").write_text("---\nconfigs:\n- config_name: default\n  data_files: data/nothing-*\n---\n")
    with pytest.raises(DataError, match=r"README.md: data_files pattern 'data/nothing-\*' matches no file"):
        expand_input(str(root))


def test_bad_file_inside_a_glob_names_that_file_and_line(tmp_path):
    jsonl(tmp_path / "c" / "a.jsonl", RECS[:3])
    (tmp_path / "c" / "b.jsonl").write_text('{"id": "x", "text": "ok"}\n\n{"id": "y", "text": \n')
    with pytest.raises(DataError, match=r"c/b\.jsonl:3: malformed JSON"):
        list(iter_records(str(tmp_path / "c" / "*.jsonl")))
    jsonl(tmp_path / "d" / "a.jsonl", RECS[:3])
    jsonl(tmp_path / "d" / "b.jsonl", [{"id": "z"}])
    with pytest.raises(DataError, match=r"d/b\.jsonl:1: record has no 'text' field"):
        read_all(str(tmp_path / "d" / "*.jsonl"), required=["text"])
    with pytest.raises(DataError, match=r"no files match .*nothing-\*\.jsonl"):
        list(iter_records(str(tmp_path / "nothing-*.jsonl")))


def test_hub_id_is_refused_offline_with_the_way_to_pass_local_files(tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(DataError, match=r"someorg/somedata: .*HF_HUB_OFFLINE.*--local-dir"):
        list(iter_records("someorg/somedata"))
    assert input_files("data[0]", str(tmp_path)) == {"data[0]": str(tmp_path)}
    with pytest.raises(DataError, match="file not found"):  # a missing local path is not taken for a hub id
        list(iter_records(str(tmp_path / "missing.jsonl")))
    with pytest.raises(DataError, match="file not found: data/missing.jsonl"):
        expand_input("data/missing.jsonl")


def test_input_files_hash_the_resolved_files_not_the_pattern(tmp_path):
    a, b = jsonl(tmp_path / "c" / "a.jsonl", RECS[:3]), jsonl(tmp_path / "c" / "b.jsonl", RECS[3:6])
    files = input_files("input[0]", str(tmp_path / "c" / "*.jsonl"))
    assert files == {"input[0][0]": str(a), "input[0][1]": str(b)}
    before = {k: content_hash(v) for k, v in files.items()}
    jsonl(b, RECS[3:7])
    assert {k: content_hash(v) for k, v in input_files("input[0]", str(tmp_path / "c" / "*.jsonl")).items()} != before
    assert input_files("input[0]", str(a)) == {"input[0]": str(a)}


def test_parquet_streams_row_groups_of_its_part_only(tmp_path, monkeypatch):
    path = parquet(tmp_path / "p.parquet", RECS, row_group_size=3)  # 10 row groups
    monkeypatch.setattr(pq, "read_table", lambda *a, **k: pytest.fail("read a whole table"))
    groups: list[list[int]] = []
    real = pq.ParquetFile.iter_batches

    def spy(self, *a, row_groups=None, **k):
        groups.append(list(row_groups))
        return real(self, *a, row_groups=row_groups, **k)

    monkeypatch.setattr(pq.ParquetFile, "iter_batches", spy)
    part = list(iter_records(str(path), shard=(1, 5)))
    assert [r["_line"] for r in part] == list(range(7, 13)) and plain(part) == RECS[6:12]
    assert sorted(g for gs in groups for g in gs) == [2, 3]  # rows 6..11 live in row groups 2 and 3


def test_jsonl_parts_keep_file_line_numbers_and_read_their_own_lines(tmp_path):
    path = jsonl(tmp_path / "a.jsonl", RECS)
    parts = [list(iter_records(str(path), shard=(i, 6))) for i in range(6)]
    assert all(3 <= len(p) <= 7 for p in parts)  # ≈ 1/6 of the lines each
    assert [r["_line"] for p in parts for r in p] == list(range(1, 31))
    assert plain(r for p in parts for r in p) == RECS
    same = jsonl(tmp_path / "same.jsonl", [{"id": f"e{i:02d}", "text": "same length"} for i in range(12)])
    for n in (2, 3, 4, 6, 12):  # every part boundary falls exactly on a line start
        lines = [[r["_line"] for r in iter_records(str(same), shard=(i, n))] for i in range(n)]
        assert lines == [list(range(i * 12 // n + 1, (i + 1) * 12 // n + 1)) for i in range(n)]
    (tmp_path / "bad.jsonl").write_text("".join(json.dumps(r) + "\n" for r in RECS[:20]) + "{broken\n")
    assert len(list(iter_records(str(tmp_path / "bad.jsonl"), shard=(0, 2)))) > 5  # the broken line is part 1's
    with pytest.raises(DataError, match=r"bad\.jsonl:21: malformed JSON"):
        list(iter_records(str(tmp_path / "bad.jsonl"), shard=(1, 2)))


def test_datasets_dir_parts_are_dataset_shard_contiguous(tmp_path):
    datasets = pytest.importorskip("datasets")
    ds = datasets.Dataset.from_list(RECS)
    ds.save_to_disk(str(tmp_path / "saved"))
    for n in (1, 4, 7):
        for i in range(n):
            got = list(iter_records(str(tmp_path / "saved"), shard=(i, n)))
            assert plain(got) == ds.shard(n, i, contiguous=True).to_list()
            assert [r["_line"] for r in got] == [RECS.index(clean(r)) + 1 for r in got]


def write_source(root: Path, k: int, kind: str, recs: list[dict], group: int) -> None:
    if kind == "jsonl":  # blank lines between records: they belong to no part
        (root / f"s{k}.jsonl").write_text("".join(json.dumps(r) + "\n" + "\n" * (j % 2) for j, r in enumerate(recs)))
    elif kind == "gz":
        with gzip.open(root / f"s{k}.jsonl.gz", "wt") as f:
            f.write("".join(json.dumps(r) + "\n" for r in recs))
    elif kind == "parquet" and recs:
        parquet(root / f"s{k}.parquet", recs, row_group_size=group)
    elif kind == "txt":
        (root / f"s{k}.txt").write_text(" ".join(r["text"] for r in recs))


@settings(max_examples=40, deadline=None)
@given(
    sources=st.lists(
        st.tuples(st.sampled_from(["jsonl", "gz", "parquet", "txt"]), st.lists(st.integers(0, 60), max_size=25), st.integers(1, 6)),
        min_size=1,
        max_size=4,
    ),
    n=st.integers(1, 12),
)
def test_property_parts_hold_every_record_exactly_once(sources, n):
    with tempfile.TemporaryDirectory() as d:
        root = Path(d)
        for k, (kind, sizes, group) in enumerate(sources):
            write_source(root, k, kind, [{"id": f"{k}-{j}", "text": "x" * s} for j, s in enumerate(sizes)], group)
        if not any(root.iterdir()):
            return
        spec = str(root / "s*")
        key = lambda r: (r["_file"], r["_line"], r.get("id"), r["text"])  # noqa: E731
        whole = [key(r) for r in iter_records(spec)]
        parts = [[key(r) for r in iter_records(spec, shard=(i, n))] for i in range(n)]
        assert Counter(x for p in parts for x in p) == Counter(whole) and len(set(whole)) == len(whole)
        if len(sources) == 1 and sources[0][0] in ("jsonl", "parquet"):  # seekable: parts are contiguous, in order
            assert [x for p in parts for x in p] == whole


def test_parts_of_several_inputs_split_the_bytes_evenly(tmp_path):
    files = [str(jsonl(tmp_path / f"f{k}.jsonl", RECS)) for k in range(4)]
    counts = [sum(1 for _ in iter_corpus(files, shard=(i, 8))) for i in range(8)]
    assert sum(counts) == 4 * len(RECS) and max(counts) - min(counts) <= 2


def test_a_run_directory_is_no_corpus(tmp_path):
    jsonl(tmp_path / "run" / "shards" / "shard-0-of-1.jsonl", RECS[:2])
    jsonl(tmp_path / "run" / "log.jsonl", [{"step": 1}])
    (tmp_path / "run" / "midtrain.json").write_text("{}")
    with pytest.raises(DataError, match="a midtrain run directory, not a corpus"):
        list(iter_records(str(tmp_path / "run")))
    assert plain(iter_records(str(tmp_path / "run" / "shards" / "*.jsonl"))) == RECS[:2]


def test_stage_errors_on_a_glob_name_the_file_not_the_pattern(tmp_path):
    """Every stage's own record checks (here judge's and rl's) name the file a bad record came from."""
    from midtrain.data import where
    from midtrain.llm.judge import JudgeConfig
    from midtrain.llm.judge import run as judge

    assert where({"_file": "c/b.jsonl", "_line": 7}, "c/*.jsonl") == "c/b.jsonl:7"
    assert where({}, "x.jsonl") == "x.jsonl:?"
    jsonl(tmp_path / "p" / "a.jsonl", [{"completion": "a", "reference": "a"}])
    jsonl(tmp_path / "p" / "b.jsonl", [{"completion": "a", "reference": "a"}, {"completion": 3, "reference": "b"}])
    cfg = JudgeConfig(input=str(tmp_path / "p" / "*.jsonl"), judge="exact", out=str(tmp_path / "out"))
    with pytest.raises(DataError, match=r"p/b\.jsonl:2: 'completion' is not a string"):
        judge(cfg)
