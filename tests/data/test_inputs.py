"""Input specs (``midtrain.data.inputs``): files, globs, shard dirs in hub layout, save_to_disk dirs, hub ids."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from data_support import RECS, hub_dir, jsonl

from midtrain.data.inputs import expand_input, input_files, train_patterns
from midtrain.errors import DataError
from midtrain.runs import content_hash


def test_glob_hub_dir_and_save_to_disk_dir_expand_to_their_files(tmp_path):
    datasets = pytest.importorskip("datasets")
    jsonl(tmp_path / "corpus" / "a.jsonl", RECS[:10])
    jsonl(tmp_path / "corpus" / "sub" / "b.jsonl", RECS[10:])
    (tmp_path / "corpus" / "notes.csv").write_text("not matched\n")
    datasets.Dataset.from_list(RECS).save_to_disk(str(tmp_path / "saved"))
    glob = str(tmp_path / "corpus" / "**" / "*.jsonl")
    assert expand_input(glob) == [str(tmp_path / "corpus" / "a.jsonl"), str(tmp_path / "corpus" / "sub" / "b.jsonl")]
    assert expand_input(str(tmp_path / "corpus")) == expand_input(glob)  # a shard dir: its data files, recursively
    assert expand_input(str(hub_dir(tmp_path / "hub"))) == [
        str(tmp_path / "hub" / "data" / f"train-0000{k}-of-00002.parquet") for k in (0, 1)
    ]
    assert expand_input(str(tmp_path / "saved")) == [str(tmp_path / "saved")]


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


@pytest.mark.parametrize(
    "data_files, train",
    [
        ("data/*.jsonl", ["data/*.jsonl"]),
        (["a.jsonl", "b.jsonl"], ["a.jsonl", "b.jsonl"]),
        ({"train": "t.jsonl", "test": "x.jsonl"}, ["t.jsonl"]),
        ([{"split": "train", "path": ["a", "b"]}, {"split": "test", "path": "c"}], ["a", "b"]),
        ([{"path": "a"}], ["a"]),  # no split: train, as the hub reads it
        (None, []),
    ],
)
def test_train_patterns_of_every_data_files_form(data_files, train):
    assert train_patterns(data_files) == train


@pytest.mark.parametrize("entry", ["../outside.jsonl", "data/../../outside.jsonl", "/abs/outside.jsonl"])
def test_readme_entries_that_point_outside_the_directory_are_refused(tmp_path, entry):
    jsonl(tmp_path / "outside.jsonl", RECS[:2])
    root = tmp_path / "ds"
    jsonl(root / "data" / "in.jsonl", RECS[:2])
    entry = entry.replace("/abs", str(tmp_path))
    (root / "README.md").write_text(f"---\nconfigs:\n- config_name: default\n  data_files: {entry}\n---\n")
    with pytest.raises(DataError, match=rf"ds/README.md: data_files entry '{re.escape(entry)}' points outside"):
        expand_input(str(root))


def test_a_readme_entry_matching_a_symlink_out_of_the_directory_is_refused(tmp_path):
    jsonl(tmp_path / "secret.jsonl", RECS[:2])
    root = tmp_path / "ds"
    jsonl(root / "data" / "in.jsonl", RECS[:2])
    (root / "data" / "link.jsonl").symlink_to(tmp_path / "secret.jsonl")
    (root / "README.md").write_text("---\nconfigs:\n- config_name: default\n  data_files: data/*.jsonl\n---\n")
    with pytest.raises(DataError, match=r"README.md: data_files entry 'data/\*.jsonl' matches .*link.jsonl, which resolves outside"):
        expand_input(str(root))
    (root / "data" / "link.jsonl").unlink()
    (root / "data" / "inner.jsonl").symlink_to(root / "data" / "in.jsonl")  # a link that stays inside is fine
    assert [Path(f).name for f in expand_input(str(root))] == ["in.jsonl", "inner.jsonl"]


def test_hub_id_is_refused_offline_and_a_missing_path_is_no_hub_id(tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(DataError, match=r"someorg/somedata: .*HF_HUB_OFFLINE.*--local-dir"):
        expand_input("someorg/somedata")
    assert input_files("data[0]", str(tmp_path)) == {"data[0]": str(tmp_path)}
    with pytest.raises(DataError, match="file not found: data/missing.jsonl"):
        expand_input("data/missing.jsonl")
    with pytest.raises(DataError, match=r"no files match .*nothing-\*\.jsonl"):
        expand_input(str(tmp_path / "nothing-*.jsonl"))


def test_input_files_hash_the_resolved_files_not_the_pattern(tmp_path):
    a, b = jsonl(tmp_path / "c" / "a.jsonl", RECS[:3]), jsonl(tmp_path / "c" / "b.jsonl", RECS[3:6])
    files = input_files("input[0]", str(tmp_path / "c" / "*.jsonl"))
    assert files == {"input[0][0]": str(a), "input[0][1]": str(b)}
    before = {k: content_hash(v) for k, v in files.items()}
    jsonl(b, RECS[3:7])
    assert {k: content_hash(v) for k, v in input_files("input[0]", str(tmp_path / "c" / "*.jsonl")).items()} != before
    assert input_files("input[0]", str(a)) == {"input[0]": str(a)}


def test_a_run_directory_is_no_corpus(tmp_path):
    jsonl(tmp_path / "run" / "shards" / "shard-0-of-1.jsonl", RECS[:2])
    jsonl(tmp_path / "run" / "log.jsonl", [{"step": 1}])
    (tmp_path / "run" / "midtrain.json").write_text("{}")
    with pytest.raises(DataError, match="a midtrain run directory, not a corpus"):
        expand_input(str(tmp_path / "run"))
    assert expand_input(str(tmp_path / "run" / "shards" / "*.jsonl")) == [str(tmp_path / "run" / "shards" / "shard-0-of-1.jsonl")]
