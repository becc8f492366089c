"""The shared training engine: resume point (complete checkpoints, torn markers), log cut-back on resume, a full
disk while saving, a non-zero rank's view of the run, the optimizer section."""

from __future__ import annotations

import errno
import json
from pathlib import Path
from types import SimpleNamespace

import pytest

from midtrain.cli import main
from midtrain.config import load_config
from midtrain.errors import ConfigError, RunDirError
from midtrain.runs import META, Run
from midtrain.train import engine
from midtrain.train.corpus import CorpusConfig
from midtrain.train.engine import CKPT_DIR, OptimConfig, optimizer_kwargs, resume_point, start
from midtrain.train.pretrain import PretrainConfig
from midtrain.train.rl_config import RL_OPTIM, RLConfig
from midtrain.train.steplog import LOG, StepLogCallback, read_log

MARK = "done.json"


def _ckpt(root: Path, step: int, complete: bool = True, **conf) -> Path:
    p = root / f"checkpoint-{step}"
    p.mkdir(parents=True)
    (p / "model.safetensors").write_bytes(b"x")
    if conf:
        (p / "config.json").write_text(json.dumps(conf))
    if complete:
        (p / MARK).write_text("{}")
    return p


def _write_log(path: Path, steps: list[int], torn: bool = False) -> None:
    path.write_text("".join(json.dumps({"step": s, "loss": 1.0 / s}) + "\n" for s in steps) + ('{"step": 9, "lo' if torn else ""))


# -- resume point ------------------------------------------------------------------------------------------------
def test_resume_point_is_the_newest_complete_checkpoint_and_incomplete_ones_go(tmp_path):
    root = tmp_path / CKPT_DIR
    _ckpt(root, 2)
    _ckpt(root, 10)
    _ckpt(root, 12, complete=False)  # killed mid-save
    _ckpt(root, 14, complete=False)
    (root / "checkpoint-x").mkdir()  # not a checkpoint name: left alone
    assert resume_point(root, MARK) == root / "checkpoint-10"  # 10 > 2 numerically, not as strings
    assert sorted(p.name for p in root.iterdir()) == ["checkpoint-10", "checkpoint-2", "checkpoint-x"]


def test_resume_point_keeps_incomplete_checkpoints_when_asked_and_none_without_any(tmp_path):
    root = tmp_path / CKPT_DIR
    assert resume_point(root, MARK) is None  # no directory at all
    _ckpt(root, 4, complete=False)
    assert resume_point(root, MARK, remove_incomplete=False) is None
    assert (root / "checkpoint-4").is_dir()  # a non-zero rank never deletes
    assert resume_point(root, MARK) is None and not (root / "checkpoint-4").exists()


def test_resume_point_refuses_another_architecture(tmp_path):
    root = tmp_path / CKPT_DIR
    _ckpt(root, 3, model_type="llama", hidden_size=64)
    ours = SimpleNamespace(model_type="llama", hidden_size=128)
    with pytest.raises(
        RunDirError, match=r"checkpoint-3 holds a checkpoint of another architecture \(hidden_size 64 vs 128\); use --overwrite"
    ):
        resume_point(root, MARK, ours)
    assert resume_point(root, MARK, SimpleNamespace(model_type="llama", hidden_size=64)) == root / "checkpoint-3"


def test_a_torn_json_marker_is_no_complete_checkpoint(tmp_path):
    """transformers writes trainer_state.json in place: a kill or a full disk mid-write leaves it torn."""
    root = tmp_path / CKPT_DIR
    _ckpt(root, 2)
    (_ckpt(root, 4, complete=False) / MARK).write_text('{"global_step": 4, "log_hist')
    assert resume_point(root, MARK) == root / "checkpoint-2" and not (root / "checkpoint-4").exists()


# -- a full disk while training ------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "error, full",
    [
        (RuntimeError("[enforce fail at inline_container.cc:626] . unexpected pos 4480 vs 4368"), True),
        (RuntimeError("PytorchStreamWriter failed writing file data/3: file write failed"), True),
        (OSError(errno.ENOSPC, "No space left on device"), True),
        (OSError(errno.EDQUOT, "Disk quota exceeded"), True),
        (OSError(errno.EACCES, "Permission denied"), False),
        (RuntimeError("mat1 and mat2 shapes cannot be multiplied (4x8 and 16x8)"), False),
    ],
)
def test_disk_full_recognises_short_writes_of_every_writer(error, full):
    assert engine.disk_full(error) is full


class _Trainer:
    """The surface of a Trainer that ``engine.train`` uses; ``train`` saves checkpoint-``step`` and fails."""

    def __init__(self, root: Path, step: int, fail: BaseException, logger=None) -> None:
        self.args, self.state = SimpleNamespace(output_dir=str(root)), SimpleNamespace(global_step=step)
        self.callback_handler = SimpleNamespace(callbacks=[logger] if logger else [])
        self.fail = fail

    def train(self, resume_from_checkpoint=None):
        ckpt = _ckpt(Path(self.args.output_dir), self.state.global_step, complete=False)
        (ckpt / "optimizer.pt").write_bytes(b"half")
        raise self.fail


def test_a_full_disk_while_saving_removes_the_checkpoint_and_names_it(tmp_path):
    root = tmp_path / CKPT_DIR
    _ckpt(root, 2)
    with pytest.raises(OSError) as e:
        engine.train(_Trainer(root, 4, RuntimeError("PytorchStreamWriter failed writing file data/0: unexpected pos 64 vs 32")), None)
    assert e.value.errno == errno.ENOSPC and e.value.filename == str(root / "checkpoint-4")
    assert "the disk is full" in e.value.strerror and "unexpected pos 64 vs 32" in e.value.strerror
    assert sorted(p.name for p in root.iterdir()) == ["checkpoint-2"]  # the next run resumes from it
    with pytest.raises(RuntimeError, match="shapes cannot be multiplied"):  # any other error passes through untouched
        engine.train(_Trainer(root, 6, RuntimeError("shapes cannot be multiplied")), None)
    assert (root / "checkpoint-6").is_dir()


class _Marked(StepLogCallback):
    def __init__(self, marked: Path) -> None:  # no run: only what engine.train reads
        self.marked, self.history = marked, []


def test_a_full_disk_after_a_marked_save_keeps_that_checkpoint(tmp_path):
    root = tmp_path / CKPT_DIR
    logger = _Marked(root / "checkpoint-4")  # the step log marked checkpoint-4 complete before the disk filled up
    with pytest.raises(OSError) as e:
        engine.train(_Trainer(root, 4, OSError(errno.ENOSPC, "No space left on device", str(tmp_path / "tb" / "events")), logger), None)
    assert e.value.filename == str(tmp_path / "tb" / "events") and (root / "checkpoint-4").is_dir()


def _run(tmp_path: Path, resumed: bool) -> Run:
    (tmp_path / "r").mkdir(exist_ok=True)
    return Run(tmp_path / "r", "pretrain", "key", {}, resumed=resumed)


def test_start_cuts_every_log_back_to_the_resume_checkpoint(tmp_path):
    run = _run(tmp_path, resumed=True)
    _ckpt(run.path / CKPT_DIR, 4)
    _ckpt(run.path / CKPT_DIR, 6, complete=False)
    _write_log(run.path / LOG, [2, 4, 6])
    _write_log(run.path / "diagnostics.jsonl", [3, 6])
    ckpt, history = start(run, MARK, None, logs=[LOG, "diagnostics.jsonl"])
    assert ckpt == run.path / CKPT_DIR / "checkpoint-4"
    assert [r["step"] for r in history] == [2, 4] == [r["step"] for r in read_log(run.path / LOG)]
    assert [r["step"] for r in read_log(run.path / "diagnostics.jsonl")] == [3]


def test_start_from_step_0_drops_what_an_earlier_attempt_logged(tmp_path):
    run = _run(tmp_path, resumed=True)  # started before, but killed before its first checkpoint
    _write_log(run.path / LOG, [1, 2])
    assert start(run, MARK, None) == (None, [])
    assert read_log(run.path / LOG) == []


def test_a_non_zero_rank_follows_the_run_without_writing(tmp_path, monkeypatch):
    monkeypatch.setenv("RANK", "1")
    cfg = PretrainConfig(model="m", corpus=CorpusConfig(files=["d"]), out=str(tmp_path / "r"))
    with engine.open_training_run(tmp_path / "r", "pretrain", cfg, {}, overwrite=False, seed=0) as run:
        assert not run.cached and not run.resumed
    assert not (tmp_path / "r" / META).exists()


# -- the optimizer section ---------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "key, value, rule",
    [
        ("lr", 0.0, "finite and > 0"),
        ("lr", float("inf"), "finite"),  # NaN and infinities: the rule every float field of every config has
        ("lr", float("nan"), "finite"),
        ("warmup_steps", -1, ">= 0"),
        ("beta1", 1.0, r"in \[0, 1\)"),
        ("beta2", -0.1, r"in \[0, 1\)"),
        ("grad_accum_steps", 0, ">= 1"),
        ("max_grad_norm", -1.0, "finite and >= 0"),
        ("max_grad_norm", float("inf"), "finite"),
        ("min_lr_ratio", 1.5, r"in \[0, 1\]"),
        ("weight_decay", -0.1, "finite and >= 0"),
    ],
)
def test_optim_ranges_name_the_key(key, value, rule):
    with pytest.raises(ConfigError, match=rf"key '(optim\.)?{key}': must be {rule}"):  # NaN/inf: the generic rule, no section
        OptimConfig.from_dict({key: value})
    inputs = {RLConfig: {"data": ["d"]}, PretrainConfig: {"corpus": {"files": ["d"]}}}
    for cls, data in inputs.items():  # the nested section is checked inside every stage config
        with pytest.raises(ConfigError, match=rf"key 'optim.{key}'"):
            cls.from_dict({"model": "m", **data, "out": "o", "optim": {key: value}})
    with pytest.raises(ConfigError, match=rf"key 'optim.{key}'"):  # also a section built in Python
        RLConfig(model="m", data=["d"], out="o", optim=OptimConfig(**{key: value})).check()


def test_rl_keeps_its_optimizer_defaults():
    assert (
        RLConfig().optim
        == RL_OPTIM
        == OptimConfig(lr=1e-6, schedule="constant", warmup_steps=0, weight_decay=0.0, beta2=0.999, min_lr_ratio=0.0)
    )
    kw = optimizer_kwargs(RL_OPTIM, max_steps=100)
    assert (kw["learning_rate"], kw["lr_scheduler_type"], kw["warmup_steps"], kw["weight_decay"]) == (1e-6, "constant_with_warmup", 0, 0.0)
    assert (kw["adam_beta1"], kw["adam_beta2"], kw["max_grad_norm"], kw["gradient_accumulation_steps"]) == (0.9, 0.999, 1.0, 1)
    cosine = optimizer_kwargs(OptimConfig(warmup_steps=50, max_grad_norm=0.0), max_steps=10)
    assert cosine["lr_scheduler_kwargs"] == {"min_lr_rate": 0.1} and cosine["warmup_steps"] == 10 and cosine["max_grad_norm"] == 1e9


@pytest.mark.parametrize("old, new", list(RLConfig.RENAMED.items()))
def test_old_flat_rl_key_in_yaml_names_the_new_one(old, new, tmp_path):
    value = {"lr_schedule": "cosine"}.get(old, 1)
    path = tmp_path / "rl.yaml"
    path.write_text(f"model: m\ndata: [d]\nout: o\n{old}: {value}\n")
    with pytest.raises(ConfigError, match=rf"^key '{old}' in .*rl\.yaml is now '{new}'$"):
        load_config(RLConfig, path)


@pytest.mark.parametrize("form", ["yaml", "flag", "override"])
def test_old_lr_through_the_cli_is_one_line_and_exit_2(form, tmp_path, capsys):
    args = ["rl", "--model", "m", "--data", "d", "--out", "o"]
    if form == "yaml":
        (tmp_path / "rl.yaml").write_text("lr: 1.0e-5\n")
        args += ["--config", str(tmp_path / "rl.yaml")]
    else:
        args += ["--lr", "1e-5"] if form == "flag" else ["lr=1e-5"]
    assert main(args + ["--dry-run"]) == 2
    captured = capsys.readouterr()
    err = captured.err.strip()
    assert err.count("\n") == 0 and "key 'lr'" in err and "is now 'optim.lr'" in err and captured.out == ""


def test_new_optim_keys_work_through_the_cli(capsys):
    assert main(["rl", "--model", "m", "--data", "d", "--out", "o", "--optim.lr", "2e-5", "optim.grad_accum_steps=2", "--dry-run"]) == 0
    out = capsys.readouterr().out
    assert "lr: 2.0e-05" in out and "grad_accum_steps: 2" in out
