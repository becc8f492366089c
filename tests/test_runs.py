import json
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar

import pytest

from midtrain.config import Config, param
from midtrain.errors import RunDirError
from midtrain.runs import MARKER, content_hash, open_run


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


def test_a_cache_hit_takes_no_lock_and_writes_nothing(tmp_path, monkeypatch):
    """A finished run may sit on read-only storage: recognising it must not create the lock file (issue 32)."""
    import midtrain.runs as runs

    _run(tmp_path / "r", C(x=3))
    before = {str(p): p.stat().st_mtime_ns for p in tmp_path.rglob("*")}
    monkeypatch.setattr(runs, "PathLock", lambda *a, **k: pytest.fail("a cache hit took the run directory's lock"))
    with open_run(tmp_path / "r", "stage", C(x=3)) as run:
        assert run.cached and run.metrics == {"x": 3} and run.lock is None
    assert {str(p): p.stat().st_mtime_ns for p in tmp_path.rglob("*")} == before
    with pytest.raises(pytest.fail.Exception, match="took the run directory's lock"):  # another config: the lock
        with open_run(tmp_path / "r", "stage", C(x=4)):
            pass


def test_content_hash_of_finished_run_is_its_key(tmp_path):
    run = _run(tmp_path / "r", C())
    assert content_hash(tmp_path / "r") == "run:" + run.key


def test_a_malformed_midtrain_json_is_one_clear_error(tmp_path):
    (tmp_path / "r").mkdir()
    (tmp_path / "r" / "midtrain.json").write_text("{not json")
    with pytest.raises(RunDirError, match=r"midtrain.json:1: not valid JSON .*; use --overwrite"):
        _run(tmp_path / "r", C())
    (tmp_path / "r" / "midtrain.json").write_text("[1, 2]")
    with pytest.raises(RunDirError, match="a JSON object was expected"):
        _run(tmp_path / "r", C())
    assert _run(tmp_path / "r", C(), overwrite=True).created


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


# -- runs made before a key moved into a section (a config's RENAMED) stay this run --------------------------------
@dataclass
class Flat(Config):
    data: list[str] = param([], "files")
    fmt: str = param("auto", "format")
    vllm: str = param("off", "a plain value that a section replaces later")
    seq_len: int = param(8, "seq_len")
    out: str = param("", "out")


@dataclass
class Corpus(Config):
    files: list[str] = param([], "files")
    fmt: str = param("auto", "format")


@dataclass
class Vllm(Config):
    mode: str = param("off", "mode")


@dataclass
class Nested(Config):
    RENAMED: ClassVar[dict[str, str]] = {"data": "corpus.files", "fmt": "corpus.fmt", "vllm": "vllm.mode"}

    corpus: Corpus = param(Corpus(), "corpus")
    vllm: Vllm = param(Vllm(), "vllm")
    seq_len: int = param(8, "seq_len")
    out: str = param("", "out")


def _done(out, cfg):
    with open_run(out, "stage", cfg, {}) as run:
        if not run.cached:
            run.finish({})
        return run


def test_keys_moved_into_sections_keep_a_finished_run(tmp_path):
    from midtrain.runs import in_current_layout

    assert in_current_layout(Nested, {"data": ["a"], "fmt": "text", "vllm": "colocate", "seq_len": 8}) == {
        "corpus": {"files": ["a"], "fmt": "text"},
        "vllm": {"mode": "colocate"},
        "seq_len": 8,
    }
    old = _done(tmp_path / "r", Flat(data=["a"], fmt="text", vllm="colocate"))
    run = _done(tmp_path / "r", Nested(corpus=Corpus(files=["a"], fmt="text"), vllm=Vllm(mode="colocate")))
    assert run.cached and run.key == old.key
    with pytest.raises(RunDirError, match=r"\(changed: seq_len\)"):  # a real change is named alone, not the moves
        _done(tmp_path / "r", Nested(corpus=Corpus(files=["a"], fmt="text"), vllm=Vllm(mode="colocate"), seq_len=16))
    with pytest.raises(RunDirError, match=r"\(changed: corpus\.files\)"):
        _done(tmp_path / "r", Nested(corpus=Corpus(files=["b"], fmt="text"), vllm=Vllm(mode="colocate")))


def test_how_often_a_run_saves_is_not_in_its_key(tmp_path):
    @dataclass
    class Saves(Config):
        save_every_steps: int = param(0, "save every")
        save_every_minutes: float = param(0.0, "save every")
        keep_checkpoints: int = param(1, "keep")
        out: str = param("", "out")

    old = _done(tmp_path / "r", Saves())
    assert _done(tmp_path / "r", Saves(save_every_steps=500, save_every_minutes=30.0, keep_checkpoints=2)).key == old.key
