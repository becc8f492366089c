"""File IO of the floor (``midtrain.fileio``): the one atomic writer, ordinary permissions, JSON reads."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from midtrain.errors import DataError
from midtrain.fileio import atomic_file, atomic_write_json, ordinary_permissions, read_json, remove_stale_temps
from midtrain.shards import to_parquet


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def test_atomic_write_leaves_no_temp_files_and_ordinary_permissions(tmp_path):
    from midtrain.data.jsonl import write_jsonl

    atomic_write_json(tmp_path / "a.json", {"a": 1})
    write_jsonl(tmp_path / "b.jsonl", [{"a": 1}])
    assert read_json(tmp_path / "a.json") == {"a": 1}
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.json", "b.jsonl"]
    for name in ("a.json", "b.jsonl"):
        assert (tmp_path / name).stat().st_mode & 0o777 == 0o666 & ~_umask()


def test_parquet_shards_go_through_the_same_writer(tmp_path):
    assert to_parquet([{"id": "a", "n": 1}, {"id": "b", "n": 2}], tmp_path / "s.parquet")
    assert (tmp_path / "s.parquet").stat().st_mode & 0o777 == 0o666 & ~_umask()
    assert [p.name for p in tmp_path.iterdir()] == ["s.parquet"]


def test_a_failed_block_leaves_the_old_file_and_no_temporary(tmp_path):
    atomic_write_json(tmp_path / "old.json", [1])
    with pytest.raises(ValueError), atomic_file(tmp_path / "old.json") as f:
        f.write(b"half")
        raise ValueError
    with pytest.raises(ValueError), atomic_file(tmp_path / "new.bin") as f:
        f.write(b"half")
        raise ValueError
    assert [p.name for p in tmp_path.iterdir()] == ["old.json"] and read_json(tmp_path / "old.json") == [1]


def test_an_os_error_without_a_file_name_is_raised_naming_the_target(tmp_path):
    import errno

    with pytest.raises(OSError) as e, atomic_file(tmp_path / "full.bin"):
        raise OSError(errno.ENOSPC, "No space left on device")
    assert e.value.errno == errno.ENOSPC and e.value.filename == str(tmp_path / "full.bin")
    assert not list(tmp_path.iterdir())


def test_remove_stale_temps_removes_only_dead_writers_temporaries(tmp_path):
    dead = tmp_path / ".a.json.4194305.x1.tmp"  # above Linux's pid_max: never a live process
    live = tmp_path / f".a.json.{os.getpid()}.x2.tmp"
    other = tmp_path / ".b.json.4194305.x3.tmp"
    for p in (dead, live, other):
        p.write_text("")
    assert remove_stale_temps(tmp_path / "a.json") == [dead]
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted([live.name, other.name])


def test_saved_models_have_ordinary_permissions(nano_model, tmp_path):
    """safetensors writes 0600 whatever the umask; `model init` (and the trainers' saves) give 0666 & ~umask."""
    import torch
    from safetensors.torch import save_file

    mask = os.umask(0o022)
    try:
        save_file({"w": torch.zeros(2)}, str(tmp_path / "w.safetensors"))
        assert (tmp_path / "w.safetensors").stat().st_mode & 0o777 == 0o600  # the library's doing
        ordinary_permissions(tmp_path)
        assert (tmp_path / "w.safetensors").stat().st_mode & 0o777 == 0o644
    finally:
        os.umask(mask)
    assert (Path(nano_model) / "model.safetensors").stat().st_mode & 0o777 == 0o666 & ~mask


def test_read_json_names_file_and_line(tmp_path):
    (tmp_path / "m.json").write_text("{\n  1")
    with pytest.raises(DataError, match=r"m\.json:2: not valid JSON"):
        read_json(tmp_path / "m.json")
    (tmp_path / "u.json").write_bytes(b'{"a": "\xff"}')
    with pytest.raises(DataError, match=r"u\.json: not UTF-8 text \(byte 7\)"):
        read_json(tmp_path / "u.json")
