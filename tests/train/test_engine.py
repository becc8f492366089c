"""The shared training engine: resume point, log truncation, MFU and windowed rates, the optimizer section."""

from __future__ import annotations

import json
from pathlib import Path
from types import SimpleNamespace

import pytest

from midtrain.cli import main
from midtrain.config import load_config
from midtrain.errors import ConfigError, RunDirError
from midtrain.runs import META, Run
from midtrain.train import engine, lm
from midtrain.train.engine import (
    CKPT_DIR,
    LOG,
    MFUMeter,
    OptimConfig,
    Periodic,
    PeriodicCallback,
    mfu,
    optimizer_kwargs,
    read_log,
    resume_point,
    start,
    table_peak,
    truncate_log,
)
from midtrain.train.pretrain import PretrainConfig
from midtrain.train.rl import RL_OPTIM, RLConfig

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


# -- logs --------------------------------------------------------------------------------------------------------
def test_truncate_log_drops_steps_after_the_checkpoint_and_a_torn_line(tmp_path):
    path = tmp_path / LOG
    _write_log(path, [1, 2, 3, 4, 5], torn=True)
    assert [r["step"] for r in read_log(path)] == [1, 2, 3, 4, 5]
    assert [r["step"] for r in truncate_log(path, 3, write=False)] == [1, 2, 3]
    assert len(path.read_text().splitlines()) == 6  # write=False leaves the file alone
    kept = truncate_log(path, 3)
    assert [r["step"] for r in kept] == [1, 2, 3] == [json.loads(line)["step"] for line in path.read_text().splitlines()]
    assert truncate_log(tmp_path / "missing.jsonl", 3) == [] and not (tmp_path / "missing.jsonl").exists()


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
    cfg = PretrainConfig(model="m", data=["d"], out=str(tmp_path / "r"))
    with engine.open_training_run(tmp_path / "r", "pretrain", cfg, {}, overwrite=False, seed=0) as run:
        assert not run.cached and not run.resumed
    assert not (tmp_path / "r" / META).exists()


# -- MFU and rates -----------------------------------------------------------------------------------------------
def test_mfu_never_exceeds_one():
    assert mfu(1e30, 989.4e12) == 1.0  # an absurd achieved rate
    assert mfu(494.7e12, 989.4e12) == pytest.approx(0.5)
    assert mfu(0.0, 1e12) == 0.0 and mfu(1e12, 0.0) == 1.0


def test_mfu_meter_raises_its_peak_when_beaten(tmp_path):
    meter = MFUMeter(flops_per_token=1e6, peak_flops_s=1e12)
    assert meter(5e5) == pytest.approx(0.5)
    assert meter(4e6) == 1.0  # 4e12 FLOP/s: above the peak used
    assert meter.peak == 4e12 and meter(2e6) == pytest.approx(0.5)


@pytest.mark.parametrize(
    "name, precision, peak",
    [
        ("NVIDIA H200", "bf16", 989.4e12),
        ("NVIDIA H200", "fp32", 494.7e12),
        ("NVIDIA H100 80GB HBM3", "bf16", 989.4e12),
        ("NVIDIA H100 PCIe", "bf16", 756.5e12),
        ("NVIDIA A100-SXM4-80GB", "bf16", 312e12),
        ("NVIDIA A100 80GB PCIe", "fp32", 156e12),
        ("NVIDIA L4", "bf16", 121e12),
        ("NVIDIA L40S", "bf16", None),  # not the L4
        ("NVIDIA A10G", "bf16", None),  # not the A10
        ("NVIDIA GeForce RTX 4090", "bf16", 165.2e12),
        ("Some Future Accelerator", "bf16", None),
    ],
)
def test_device_peak_table(name, precision, peak):
    assert table_peak(name, precision) == peak


def test_measured_peak_is_positive():
    assert engine.measure_peak("fp32", "cpu", size=64, iters=2) > 0


class _Clock:
    def __init__(self) -> None:
        self.t = 100.0

    def perf_counter(self) -> float:
        return self.t


def _step(cb, state, control, clock, seconds: float) -> None:
    clock.t += seconds
    state.global_step += 1
    cb.on_step_end(None, state, control)


def test_tok_s_is_the_rate_of_the_logging_window(tmp_path, monkeypatch):
    clock = _Clock()
    monkeypatch.setattr(engine, "time", clock)
    monkeypatch.setattr(lm, "peak_flops", lambda precision: 1e5)  # FLOP/s
    run = _run(tmp_path, resumed=False)
    cb = lm.LMLogCallback(run, max_steps=9, tokens_per_step=1000, flops_per_token=100.0, precision="fp32")
    state, control = SimpleNamespace(global_step=0, is_world_process_zero=True), SimpleNamespace(should_log=False)
    cb.on_train_begin(None, state, control)
    for seconds in (10.0, 1.0, 1.0, 1.0):  # a slow first step (warm-up), then 1 s per step
        _step(cb, state, control, clock, seconds)
    cb.on_log(None, state, control, logs={"loss": 2.0, "learning_rate": 1e-3})
    for _ in range(4):  # then 4 s per step
        _step(cb, state, control, clock, 4.0)
    cb.on_log(None, state, control, logs={"loss": 1.5, "learning_rate": 1e-3})
    assert not control.should_log
    _step(cb, state, control, clock, 4.0)
    assert control.should_log  # the last step is always logged
    cb.on_log(None, state, control, logs={"loss": 1.0, "learning_rate": 1e-3})
    log = read_log(run.path / LOG)
    assert [r["step"] for r in log] == [4, 8, 9]
    assert [r["tok_s"] for r in log] == [round(4000 / 13, 1), 250.0, 250.0]  # not cumulative (8000 / 29 at step 8)
    assert [r["mfu"] for r in log] == [round(4000 / 13 * 100 / 1e5, 4), 0.25, 0.25]
    assert cb.tokens_per_second() == pytest.approx(8 * 1000 / 23)  # steps 2..9, the first step left out
    assert cb.history[-1]["loss"] == 1.0


def test_periodic_callback_writes_on_rank_0_every_n_steps(tmp_path):
    calls = []
    probe = Periodic(3, "probe.jsonl", lambda model, tok, step: calls.append(step) or {"acc": step / 10})
    cb = PeriodicCallback(probe, tmp_path)
    for step in range(1, 8):
        cb.on_step_end(None, SimpleNamespace(global_step=step, is_world_process_zero=True), None, model="m", processing_class="t")
    cb.on_step_end(None, SimpleNamespace(global_step=9, is_world_process_zero=False), None)
    assert calls == [3, 6] and read_log(tmp_path / "probe.jsonl") == [{"step": 3, "acc": 0.3}, {"step": 6, "acc": 0.6}]


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
    for cls in (RLConfig, PretrainConfig):  # the nested section is checked inside every stage config
        with pytest.raises(ConfigError, match=rf"key 'optim.{key}'"):
            cls.from_dict({"model": "m", "data": ["d"], "out": "o", "optim": {key: value}})
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
