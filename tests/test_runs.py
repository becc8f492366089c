import json
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest

from midtrain.config import Config, param
from midtrain.errors import RunDirError
from midtrain.runs import MARKER, atomic_write_json, content_hash, open_run


@dataclass
class C(Config):
    x: int = param(1, "x")
    out: str = param("", "out")


def _run(out, cfg, inputs=None, **kw):
    with open_run(out, "stage", cfg, inputs or {}, **kw) as run:
        if run.cached:
            return run
        (run.path / "result.txt").write_text(str(cfg.x))
        run.finish({"x": cfg.x})
        return run


def test_fresh_run_writes_config_meta_and_marker(tmp_path):
    run = _run(tmp_path / "r", C(x=3))
    meta = json.loads((tmp_path / "r" / "midtrain.json").read_text())
    assert meta["stage"] == "stage" and meta["status"] == "complete" and meta["metrics"] == {"x": 3}
    assert "torch" in meta["versions"] and meta["config"]["x"] == 3
    assert (tmp_path / "r" / MARKER).read_text().strip() == run.key
    assert "x: 3" in (tmp_path / "r" / "config.yaml").read_text()


def test_cache_hit_does_nothing(tmp_path):
    _run(tmp_path / "r", C(x=3))
    (tmp_path / "r" / "result.txt").write_text("untouched")
    run = _run(tmp_path / "r", C(x=3))
    assert run.cached and run.metrics == {"x": 3}
    assert (tmp_path / "r" / "result.txt").read_text() == "untouched"


def test_bookkeeping_fields_do_not_change_the_key(tmp_path):
    _run(tmp_path / "r", C(x=3, out="a"))
    assert _run(tmp_path / "r", C(x=3, out="b")).cached


def test_different_config_refused_then_overwritten(tmp_path):
    _run(tmp_path / "r", C(x=3))
    with pytest.raises(RunDirError, match=r"finished 'stage' run .*changed: x.*--overwrite"):
        _run(tmp_path / "r", C(x=4))
    run = _run(tmp_path / "r", C(x=4), overwrite=True)
    assert not run.cached and (tmp_path / "r" / "result.txt").read_text() == "4"


def test_changed_input_is_not_a_cache_hit(tmp_path):
    inp = tmp_path / "data.txt"
    inp.write_text("a")
    _run(tmp_path / "r", C(), {"data": inp})
    inp.write_text("b")
    with pytest.raises(RunDirError, match="input 'data'"):
        _run(tmp_path / "r", C(), {"data": inp})


def test_foreign_directory_refused(tmp_path):
    (tmp_path / "r").mkdir()
    (tmp_path / "r" / "precious.txt").write_text("keep me")
    with pytest.raises(RunDirError, match="not a midtrain run directory"):
        _run(tmp_path / "r", C())
    assert (tmp_path / "r" / "precious.txt").read_text() == "keep me"


def test_failed_fresh_run_leaves_nothing(tmp_path):
    with pytest.raises(ValueError):
        with open_run(tmp_path / "r", "stage", C()):
            raise ValueError("boom")
    assert not (tmp_path / "r").exists()


_KILLED_WHILE_OPENING = """
import os, signal, sys
import midtrain.runs as runs
from tests.test_runs import C

def die(*a, **k):
    os.kill(os.getpid(), signal.SIGKILL)

runs.{target} = die
with runs.open_run(sys.argv[1], "stage", C()):
    pass
"""


@pytest.mark.parametrize("target", ["versions", "atomic_write_text"])
def test_run_killed_while_opening_leaves_no_foreign_directory(tmp_path, target):
    """kill -9 at any point of opening leaves no directory that a re-run would refuse (CI saw one once)."""
    code = _KILLED_WHILE_OPENING.replace("{target}", target)
    proc = subprocess.run([sys.executable, "-c", code, str(tmp_path / "r")], cwd=Path(__file__).parent.parent)
    assert proc.returncode == -9
    assert not (tmp_path / "r").exists()  # killed before the directory appeared, with its midtrain.json
    run = _run(tmp_path / "r", C(x=5))  # the re-run starts fresh and removes the dead process's staging dir
    assert not run.cached and (tmp_path / "r" / "result.txt").read_text() == "5"
    assert [p.name for p in tmp_path.iterdir()] == ["r"]


def test_failed_fresh_run_in_an_existing_empty_directory(tmp_path):
    (tmp_path / "r").mkdir()
    run = _run(tmp_path / "r", C(x=2))
    assert json.loads((run.path / "midtrain.json").read_text())["status"] == "complete"
    with pytest.raises(ValueError):
        with open_run(tmp_path / "s", "stage", C()):
            raise ValueError("boom")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["r"]


def test_failed_run_after_keep_is_resumed(tmp_path):
    with pytest.raises(ValueError):
        with open_run(tmp_path / "r", "stage", C()) as run:
            run.keep()
            (run.path / "ckpt").write_text("state")
            raise ValueError("killed")
    assert json.loads((tmp_path / "r" / "midtrain.json").read_text())["status"] == "failed"
    with open_run(tmp_path / "r", "stage", C()) as run:
        assert run.resumed and (run.path / "ckpt").read_text() == "state"
        run.finish()


def test_content_hash_of_finished_run_is_its_key(tmp_path):
    run = _run(tmp_path / "r", C())
    assert content_hash(tmp_path / "r") == "run:" + run.key


def test_atomic_write_leaves_no_temp_files(tmp_path):
    atomic_write_json(tmp_path / "a.json", {"a": 1})
    assert [p.name for p in tmp_path.iterdir()] == ["a.json"]


def test_atomic_writes_have_ordinary_permissions(tmp_path):
    import os

    from midtrain.data import write_jsonl

    atomic_write_json(tmp_path / "a.json", {})
    write_jsonl(tmp_path / "b.jsonl", [{"a": 1}])
    mask = os.umask(0)
    os.umask(mask)
    for name in ("a.json", "b.jsonl"):
        assert (tmp_path / name).stat().st_mode & 0o777 == 0o666 & ~mask


def test_saved_models_have_ordinary_permissions(nano_model, tmp_path):
    """safetensors writes 0600 whatever the umask; `model init` (and the trainers' saves) give 0666 & ~umask."""
    import os

    import torch
    from safetensors.torch import save_file

    from midtrain.runs import ordinary_permissions

    mask = os.umask(0o022)
    try:
        save_file({"w": torch.zeros(2)}, str(tmp_path / "w.safetensors"))
        assert (tmp_path / "w.safetensors").stat().st_mode & 0o777 == 0o600  # the library's doing
        ordinary_permissions(tmp_path)
        assert (tmp_path / "w.safetensors").stat().st_mode & 0o777 == 0o644
    finally:
        os.umask(mask)
    assert (nano_model / "model.safetensors").stat().st_mode & 0o777 == 0o666 & ~mask


def test_a_malformed_midtrain_json_is_one_clear_error(tmp_path):
    from midtrain.errors import DataError
    from midtrain.runs import read_json

    (tmp_path / "r").mkdir()
    (tmp_path / "r" / "midtrain.json").write_text("{not json")
    with pytest.raises(RunDirError, match=r"midtrain.json:1: not valid JSON .*; use --overwrite"):
        _run(tmp_path / "r", C())
    (tmp_path / "r" / "midtrain.json").write_text("[1, 2]")
    with pytest.raises(RunDirError, match="a JSON object was expected"):
        _run(tmp_path / "r", C())
    assert _run(tmp_path / "r", C(), overwrite=True).created
    (tmp_path / "m.json").write_text("{")
    with pytest.raises(DataError, match=r"m.json:1: not valid JSON"):
        read_json(tmp_path / "m.json")


# -- runs made by an older midtrain: options added since, at their defaults, keep the run --------------------------
@dataclass
class Inner(Config):
    lr: float = param(0.1, "lr")


@dataclass
class InnerPlus(Config):
    lr: float = param(0.1, "lr")
    beta: float = param(0.9, "an option added later")


@dataclass
class Old(Config):
    x: int = param(1, "x")
    optim: Inner = param(Inner(), "optim")
    out: str = param("", "out")


@dataclass
class New(Config):
    x: int = param(1, "x")
    y: str = param("sequence", "an option added later")
    optim: InnerPlus = param(InnerPlus(), "optim")
    out: str = param("", "out")


@dataclass
class NewDefault(Config):
    x: int = param(2, "x: its default changed")
    optim: Inner = param(Inner(), "optim")
    out: str = param("", "out")


def test_options_added_at_their_defaults_keep_a_finished_run(tmp_path):
    old = _run(tmp_path / "r", Old(x=3))
    before = content_hash(tmp_path / "r")
    (tmp_path / "r" / "result.txt").write_text("untouched")
    run = _run(tmp_path / "r", New(x=3))
    assert run.cached and run.key == old.key and run.metrics == {"x": 3}
    assert (tmp_path / "r" / "result.txt").read_text() == "untouched"
    assert content_hash(tmp_path / "r") == before  # stages downstream keep their inputs


@pytest.mark.parametrize(("cfg", "changed"), [(New(x=3, y="first_error"), "y"), (New(x=3, optim=InnerPlus(beta=0.5)), "optim.beta")])
def test_options_added_away_from_their_defaults_are_a_different_run(tmp_path, cfg, changed):
    _run(tmp_path / "r", Old(x=3))
    with pytest.raises(RunDirError, match=rf"changed: {changed}"):
        _run(tmp_path / "r", cfg)


def test_a_changed_default_is_a_different_run(tmp_path):
    _run(tmp_path / "r", Old())  # x = 1, the default then
    with pytest.raises(RunDirError, match="changed: x"):
        _run(tmp_path / "r", NewDefault())


def test_a_removed_option_is_a_different_run(tmp_path):
    _run(tmp_path / "r", New(x=3))
    with pytest.raises(RunDirError, match="changed: .*y"):
        _run(tmp_path / "r", Old(x=3))


def test_an_unfinished_older_run_resumes_and_keeps_its_key(tmp_path):
    with pytest.raises(RuntimeError), open_run(tmp_path / "r", "stage", Old(x=3)) as run:
        run.keep()
        old_key = run.key
        raise RuntimeError("killed")
    with open_run(tmp_path / "r", "stage", New(x=3)) as run:
        assert run.resumed and run.key == old_key
        run.finish({})
    assert (tmp_path / "r" / MARKER).read_text().strip() == old_key
    assert json.loads((tmp_path / "r" / "midtrain.json").read_text())["run_key"] == old_key
