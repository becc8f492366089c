"""``report_to``: the trackers get log.jsonl's values step by step, the run's config, and nothing when 'none'."""

from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest

from midtrain.cli import main
from midtrain.config import load_config
from midtrain.errors import ConfigError
from midtrain.train import rl, trackers
from midtrain.train.corpus import CorpusConfig
from midtrain.train.lm import OptimConfig, training_args
from midtrain.train.pretrain import PretrainConfig
from midtrain.train.rl_config import RL_OPTIM, RLConfig, RolloutConfig
from midtrain.train.rl_trainer import build_grpo_config

pytestmark = pytest.mark.usefixtures("one_thread")  # tiny models: one thread is faster and deterministic

tensorboard = pytest.importorskip("tensorboard")


def _log(out: Path) -> list[dict]:
    return [json.loads(line) for line in (out / "log.jsonl").read_text().splitlines()]


def _events(out: Path, sub: str = trackers.TB_DIR):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    acc = EventAccumulator(str(out / sub))
    acc.Reload()
    return acc


def _assert_scalars_equal_log(acc, log: list[dict]) -> int:
    """Every number of every log.jsonl record is the tracker's ``train/<name>`` at that step; returns how many."""
    tags = set(acc.Tags()["scalars"])
    checked = 0
    for rec in log:
        for key, value in rec.items():
            if key == "step" or not isinstance(value, (int, float)):
                continue
            series = {e.step: e.value for e in acc.Scalars(f"train/{key}")}
            assert series[rec["step"]] == pytest.approx(value, rel=1e-6, abs=1e-9), (key, rec["step"])  # float32 events
            checked += 1
    assert all(len(acc.Scalars(t)) == len(log) for t in tags if t.removeprefix("train/") in log[-1])  # no extra steps
    return checked


def _config_text(acc) -> str:
    (event,) = acc.Tensors(f"{trackers.CONFIG_TAG}/text_summary")
    return event.tensor_proto.string_val[0].decode()


def _pretrain_argv(nano_model, corpus, out, *extra) -> list[str]:
    return [
        "pretrain",
        "--model",
        str(nano_model),
        "--corpus.files",
        str(corpus),
        "--out",
        str(out),
        "--seq-len",
        "32",
        "--batch-size",
        "4",
        "--max-steps",
        "5",
        "--log-every-steps",
        "2",
        "--precision",
        "fp32",
        *extra,
    ]


def test_pretrain_tensorboard_holds_the_log_jsonl_values(nano_model, corpus, tmp_path):
    out = tmp_path / "r"
    assert main(_pretrain_argv(nano_model, corpus, out, "--report-to", "tensorboard")) == 0
    log, acc = _log(out), _events(out)
    assert [r["step"] for r in log] == [2, 4, 5]
    assert _assert_scalars_equal_log(acc, log) >= 3 * 6  # loss, lr, grad_norm, tokens, tok_s, mfu, elapsed_s
    tags = set(acc.Tags()["scalars"])
    assert {"train/loss", "train/lr", "train/tok_s", "train/mfu", "train/tokens"} <= tags
    assert "train/learning_rate" not in tags  # renamed to lr: one series per quantity
    text = _config_text(acc)
    assert "seq_len: 32" in text and "report_to:" in text and "- tensorboard" in text


def test_none_writes_no_events_and_trackers_do_not_change_the_run(nano_model, corpus, tmp_path):
    out = tmp_path / "r"
    assert main(_pretrain_argv(nano_model, corpus, out, "--report-to", "none")) == 0
    assert not (out / trackers.TB_DIR).exists() and not list(out.rglob("events.out.tfevents*"))
    meta = (out / "midtrain.json").read_text()
    assert main(_pretrain_argv(nano_model, corpus, out, "--report-to", "tensorboard")) == 0
    # report_to is bookkeeping, not part of the run key: the finished run is a cache hit, not retrained
    assert (out / "midtrain.json").read_text() == meta and not (out / trackers.TB_DIR).exists()


def test_bad_value_names_the_key_and_the_choices(nano_model, corpus, tmp_path, capsys):
    assert main(_pretrain_argv(nano_model, corpus, tmp_path / "r", "--report-to", "tensorbord")) != 0
    err = capsys.readouterr().err
    assert "report_to" in err and all(f"'{t}'" in err for t in trackers.TRACKERS) and not (tmp_path / "r").exists()
    with pytest.raises(ConfigError, match="report_to.*'none' cannot be combined with tensorboard"):
        load_config(PretrainConfig, overrides={"model": "m", "corpus.files": ["d"], "out": "o", "report_to": ["none", "tensorboard"]})
    with pytest.raises(ConfigError, match=r"report_to\[0\].*'wandb'"):
        RLConfig(model="m", data=["d"], out="o", report_to=["mlflow"]).check()  # type: ignore[list-item]


@pytest.mark.parametrize("name", ["wandb", "trackio"])
def test_missing_tracker_package_is_a_clear_error(name, nano_model, corpus, tmp_path, capsys):
    if importlib.util.find_spec(name) is not None:
        pytest.skip(f"{name} is installed here")
    assert main(_pretrain_argv(nano_model, corpus, tmp_path / "r", "--report-to", name)) != 0
    err = capsys.readouterr().err
    assert f"'{name}' needs the {name} package" in err and "midtrain[trackers]" in err and not (tmp_path / "r").exists()


def test_wandb_and_trackio_are_configured_in_the_trainer_arguments(tmp_path):
    lm = PretrainConfig(
        model="m",
        corpus=CorpusConfig(files=["d"]),
        out=str(tmp_path / "base-1"),
        report_to=["wandb", "trackio", "wandb"],
        optim=OptimConfig(),
    )
    args = training_args(lm, tmp_path / "base-1" / "checkpoints", 10, "fp32")
    assert (args.report_to, args.run_name, args.project) == (["wandb", "trackio"], "base-1", "midtrain")
    grpo = build_grpo_config(RLConfig(model="m", data=["d"], out=str(tmp_path / "rl-a"), report_to=["trackio"], precision="fp32"), "x")
    assert (grpo.report_to, grpo.run_name) == (["trackio"], "rl-a")
    default = training_args(PretrainConfig(model="m", corpus=CorpusConfig(files=["d"]), out="o"), tmp_path, 10, "fp32")
    assert default.report_to == []


def test_wandb_and_trackio_get_the_run_config(monkeypatch):
    """The config callback updates each chosen tracker's config with the run's config (stand-in modules)."""
    updates: dict[str, list] = {"wandb": [], "trackio": []}
    for name in updates:
        config = SimpleNamespace(update=lambda d, allow_val_change=None, n=name: updates[n].append((d, allow_val_change)))
        monkeypatch.setitem(sys.modules, name, SimpleNamespace(run=object(), config=config))
    cfg = RLConfig(model="m", data=["d"], out="o", report_to=["wandb", "trackio"])
    cb = trackers.TrackerConfigCallback(cfg.to_dict(), "", cfg.report_to, [])
    cb.on_train_begin(None, SimpleNamespace(is_world_process_zero=False), None)
    assert updates == {"wandb": [], "trackio": []}  # rank 0 only
    cb.on_train_begin(None, SimpleNamespace(is_world_process_zero=True, global_step=0), None)
    for name in updates:
        ((sent, allow),) = updates[name]
        assert sent["midtrain"]["model"] == "m" and sent["midtrain"]["report_to"] == ["wandb", "trackio"] and allow


def test_resumed_writer_hides_the_steps_after_the_checkpoint(tmp_path):
    """An attempt killed after logging steps 1-4 resumes from checkpoint-2: readers see its 1-2, then the new 3-4."""
    first = trackers.tensorboard_writer(tmp_path, 0)
    for step in range(1, 5):
        first.add_scalar("train/loss", float(step), step)
    first.close()
    again = trackers.tensorboard_writer(tmp_path, 2)
    for step in (3, 4):
        again.add_scalar("train/loss", 10.0 + step, step)
    again.close()
    acc = _events(tmp_path, "")
    assert [(e.step, e.value) for e in acc.Scalars("train/loss")] == [(1, 1.0), (2, 2.0), (3, 13.0), (4, 14.0)]


def test_rl_tensorboard_holds_the_log_jsonl_values(nano_model, rl_tasks, tmp_path):
    out = tmp_path / "r"
    cfg = RLConfig(
        model=str(nano_model),
        data=[str(rl_tasks)],
        out=str(out),
        max_steps=2,
        per_device_batch_size=8,
        rollout=RolloutConfig(num_generations=4, max_completion_length=8),
        optim=RL_OPTIM.replace(lr=1e-4),
        save_every_steps=0,
        precision="fp32",
        report_to=["tensorboard"],
    )
    rl.run(cfg)
    log, acc = _log(out), _events(out)
    assert [r["step"] for r in log] == [1, 2]
    assert _assert_scalars_equal_log(acc, log) >= 2 * 12
    tags = set(acc.Tags()["scalars"])
    assert {"train/reward_mean", "train/reward_std", "train/zero_var_frac", "train/gen_s", "train/tokens_generated"} <= tags
    assert not tags & {"train/reward", "train/learning_rate", "train/frac_reward_zero_std"}  # renamed in log.jsonl
    assert "num_generations: 4" in _config_text(acc)
