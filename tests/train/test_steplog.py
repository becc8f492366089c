"""The step log (``midtrain.train.steplog``): windowed rates, the last step always logged, log cut-back on resume,
periodic probes, and the whole run's mean loss."""

from __future__ import annotations

import json
from pathlib import Path
from types import SimpleNamespace

import pytest

from midtrain.probes import Periodic
from midtrain.runs import Run
from midtrain.train import lm, steplog
from midtrain.train.mfu import Peak
from midtrain.train.steplog import LOG, PeriodicCallback, read_log, run_mean_loss, truncate_log


def _write_log(path: Path, steps: list[int], torn: bool = False) -> None:
    path.write_text("".join(json.dumps({"step": s, "loss": 1.0 / s}) + "\n" for s in steps) + ('{"step": 9, "lo' if torn else ""))


def _run(tmp_path: Path) -> Run:
    (tmp_path / "r").mkdir(exist_ok=True)
    return Run(tmp_path / "r", "pretrain", "key", {})


def test_truncate_log_drops_steps_after_the_checkpoint_and_a_torn_line(tmp_path):
    path = tmp_path / LOG
    _write_log(path, [1, 2, 3, 4, 5], torn=True)
    assert [r["step"] for r in read_log(path)] == [1, 2, 3, 4, 5]
    assert [r["step"] for r in truncate_log(path, 3, write=False)] == [1, 2, 3]
    assert len(path.read_text().splitlines()) == 6  # write=False leaves the file alone
    kept = truncate_log(path, 3)
    assert [r["step"] for r in kept] == [1, 2, 3] == [json.loads(line)["step"] for line in path.read_text().splitlines()]
    assert truncate_log(tmp_path / "missing.jsonl", 3) == [] and not (tmp_path / "missing.jsonl").exists()


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
    monkeypatch.setattr(steplog, "time", clock)
    monkeypatch.setattr(lm, "peak_flops", lambda precision: Peak(1e5, "nominal", "test"))  # FLOP/s
    run = _run(tmp_path)
    cb = lm.LMLogCallback(run, max_steps=9, tokens_per_step=1000, flops_per_token=100.0, precision="fp32")
    state, control = SimpleNamespace(global_step=0, is_world_process_zero=True), SimpleNamespace(should_log=False)
    said: list[str] = []
    monkeypatch.setattr(lm, "log", said.append)
    cb.on_train_begin(None, state, control)
    assert said == ["MFU is relative to the nominal peak 0 GFLOP/s (test)"]  # which peak, said before the first line
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


def test_run_mean_loss_weights_windows_by_steps_and_skips_the_cut_steps():
    assert run_mean_loss([{"step": 2, "loss": 4.0}, {"step": 6, "loss": 1.0}]) == pytest.approx((2 * 4 + 4 * 1) / 6)
    # resumed at 5: the record at 8 covers steps 6-8 only (the log of steps 5 and beyond was cut back)
    assert run_mean_loss([{"step": 4, "loss": 2.0}, {"step": 8, "loss": 1.0}], resumed_at=5) == pytest.approx((4 * 2 + 3 * 1) / 7)
    assert run_mean_loss([]) is None
