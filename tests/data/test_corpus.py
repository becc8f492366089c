"""Corpus readers (``midtrain.data.corpus``): every source kind read whole or as one rank's part."""

from __future__ import annotations

import gzip
import json
import tempfile
from collections import Counter
from pathlib import Path

import pyarrow.parquet as pq
import pytest
from data_support import RECS, hub_dir, jsonl, parquet, plain
from hypothesis import given, settings
from hypothesis import strategies as st

from midtrain.data.corpus import iter_corpus, iter_records, read_all
from midtrain.data.records import clean
from midtrain.errors import DataError


def test_glob_hub_dir_and_save_to_disk_dir_read_the_same_records(tmp_path):
    datasets = pytest.importorskip("datasets")
    jsonl(tmp_path / "corpus" / "a.jsonl", RECS[:10])
    jsonl(tmp_path / "corpus" / "sub" / "b.jsonl", RECS[10:])
    datasets.Dataset.from_list(RECS).save_to_disk(str(tmp_path / "saved"))
    glob = str(tmp_path / "corpus" / "**" / "*.jsonl")
    for spec in (glob, str(hub_dir(tmp_path / "hub")), str(tmp_path / "saved"), str(tmp_path / "corpus")):
        assert plain(iter_records(spec)) == RECS, spec
    recs = list(iter_records(str(tmp_path / "hub")))  # each record names its own file and row
    assert (Path(recs[17]["_file"]).name, recs[17]["_line"]) == ("train-00001-of-00002.parquet", 1)


def test_bad_file_inside_a_glob_names_that_file_and_line(tmp_path):
    jsonl(tmp_path / "c" / "a.jsonl", RECS[:3])
    (tmp_path / "c" / "b.jsonl").write_text('{"id": "x", "text": "ok"}\n\n{"id": "y", "text": \n')
    with pytest.raises(DataError, match=r"c/b\.jsonl:3: malformed JSON"):
        list(iter_records(str(tmp_path / "c" / "*.jsonl")))
    jsonl(tmp_path / "d" / "a.jsonl", RECS[:3])
    jsonl(tmp_path / "d" / "b.jsonl", [{"id": "z"}])
    with pytest.raises(DataError, match=r"d/b\.jsonl:1: record has no 'text' field"):
        read_all(str(tmp_path / "d" / "*.jsonl"), required=["text"])
    (tmp_path / "empty.jsonl").write_text("\n\n")
    with pytest.raises(DataError, match=r"empty dataset: .*empty\.jsonl has no records"):
        read_all(tmp_path / "empty.jsonl")


def test_hub_id_is_refused_offline_and_a_missing_file_named(tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(DataError, match=r"someorg/somedata: .*HF_HUB_OFFLINE.*--local-dir"):
        list(iter_records("someorg/somedata"))
    with pytest.raises(DataError, match="file not found"):  # a missing local path is not taken for a hub id
        list(iter_records(str(tmp_path / "missing.jsonl")))


def test_a_text_file_is_one_record_under_the_text_field(tmp_path):
    (tmp_path / "notes.txt").write_text("line one\nline two\n")
    assert plain(iter_records(tmp_path / "notes.txt", text_field="body")) == [{"id": "notes", "body": "line one\nline two\n"}]


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


def test_a_bad_shard_argument_is_refused(tmp_path):
    with pytest.raises(ValueError, match=r"shard \(2, 2\): need 0 <= i < n"):
        list(iter_corpus([str(jsonl(tmp_path / "a.jsonl", RECS))], shard=(2, 2)))


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
