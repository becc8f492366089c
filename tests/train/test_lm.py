import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from midtrain.errors import DataError
from midtrain.train.lm import OptimConfig
from midtrain.train.pretrain import PretrainConfig, run


def _cfg(nano_model, corpus, out, **kw):
    base = dict(
        model=str(nano_model),
        data=[str(corpus)],
        out=str(out),
        seq_len=64,
        batch_size=8,
        max_steps=40,
        precision="fp32",
        log_every_steps=4,
        optim=OptimConfig(lr=3e-3, warmup_steps=5),
        seed=0,
    )
    base.update(kw)
    return PretrainConfig(**base)


def _log(out):
    return [json.loads(l) for l in (Path(out) / "log.jsonl").read_text().splitlines()]


def test_pretraining_lowers_loss_and_saves_hf_checkpoint(nano_model, corpus, tmp_path):
    from transformers import AutoModelForCausalLM

    res = run(_cfg(nano_model, corpus, tmp_path / "r"))
    log = _log(tmp_path / "r")
    assert log[-1]["step"] == 40 and log[-1]["loss"] < 0.6 * log[0]["loss"]  # stated margin: -40%
    assert {"loss", "lr", "tok_s", "mfu", "tokens"} <= set(log[0])
    assert all(r["tok_s"] > 0 and 0 <= r["mfu"] <= 1 for r in log) and res.metrics["tokens_per_second"] > 0
    m = AutoModelForCausalLM.from_pretrained(str(tmp_path / "r"))
    assert m.config.model_type == "llama"
    meta = json.loads((tmp_path / "r" / "midtrain.json").read_text())
    assert meta["status"] == "complete" and meta["metrics"]["flops"] > 0 and meta["parents"][0]["input"] == "model"
    assert res.metrics["steps"] == 40
    before = load_file(str(Path(nano_model) / "model.safetensors"))
    after = load_file(str(tmp_path / "r" / "model.safetensors"))
    assert any(not torch.equal(before[k], after[k]) for k in before)
    assert run(_cfg(nano_model, corpus, tmp_path / "r")).cached


def test_last_step_is_logged_whatever_the_log_interval(nano_model, corpus, tmp_path):
    res = run(_cfg(nano_model, corpus, tmp_path / "r", max_steps=6, log_every_steps=4))
    log = _log(tmp_path / "r")
    assert [r["step"] for r in log] == [4, 6]
    assert res.metrics["final_loss"] == log[-1]["loss"]


def test_resume_follows_the_uninterrupted_curve(nano_model, corpus, tmp_path, monkeypatch):
    run(_cfg(nano_model, corpus, tmp_path / "full", max_steps=24, save_every_steps=8))
    full = {r["step"]: r["loss"] for r in _log(tmp_path / "full")}

    import transformers

    orig = transformers.Trainer.training_step
    calls = {"n": 0}

    def crashing(self, *a, **k):
        calls["n"] += 1
        if calls["n"] == 19:
            raise RuntimeError("simulated crash")
        return orig(self, *a, **k)

    monkeypatch.setattr(transformers.Trainer, "training_step", crashing)
    with pytest.raises(RuntimeError, match="simulated crash"):
        run(_cfg(nano_model, corpus, tmp_path / "part", max_steps=24, save_every_steps=8))
    monkeypatch.setattr(transformers.Trainer, "training_step", orig)
    assert (tmp_path / "part" / "checkpoints" / "checkpoint-16").is_dir()
    res = run(_cfg(nano_model, corpus, tmp_path / "part", max_steps=24, save_every_steps=8))
    resumed = {r["step"]: r["loss"] for r in _log(tmp_path / "part")}
    assert sorted(resumed) == sorted(full)  # no step lost or logged twice
    for step in (20, 24):
        assert resumed[step] == pytest.approx(full[step], rel=1e-4, abs=1e-5)
    assert not res.cached


def test_gradient_accumulation_invariance(nano_model, corpus, tmp_path):
    a = _cfg(nano_model, corpus, tmp_path / "a", max_steps=2, batch_size=8)
    b = _cfg(nano_model, corpus, tmp_path / "b", max_steps=2, batch_size=4, optim=OptimConfig(lr=3e-3, warmup_steps=5, grad_accum_steps=2))
    run(a), run(b)
    wa = load_file(str(tmp_path / "a" / "model.safetensors"))
    wb = load_file(str(tmp_path / "b" / "model.safetensors"))
    w0 = load_file(str(Path(nano_model) / "model.safetensors"))
    for k in wa:
        moved = (wa[k] - w0[k]).abs().max()
        torch.testing.assert_close(wa[k], wb[k], atol=1e-6 + 1e-3 * float(moved), rtol=0)


def test_bad_data_leaves_no_run_dir(nano_model, tmp_path):
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"id": 1, "body": "no text"}\n')
    with pytest.raises(DataError, match="bad.jsonl:1"):
        run(_cfg(nano_model, bad, tmp_path / "r"))
    assert not (tmp_path / "r").exists()


def test_other_architecture_checkpoint_is_a_clear_error(tmp_path, corpus):
    from midtrain.errors import MidtrainError

    (tmp_path / "ckpt").mkdir()
    (tmp_path / "ckpt" / "config.json").write_text('{"model_type": "no-such-arch"}')
    with pytest.raises(MidtrainError, match="ckpt"):
        run(_cfg(tmp_path / "ckpt", corpus, tmp_path / "r"))
    assert not (tmp_path / "r").exists()


@pytest.mark.slow
def test_two_gloo_processes_match_one(nano_model, corpus, tmp_path):
    """2 processes over gloo: same loss as 1 process with the same global batch.

    Note: `accelerate launch --cpu --num_processes 2` starts ONE process unless MPI is configured (accelerate's
    simple launcher); `--multi_gpu` on a machine without GPUs starts torchrun workers that use gloo on the CPU.
    """
    common = [
        "--model",
        str(nano_model),
        "--data",
        str(corpus),
        "--seq-len",
        "64",
        "--max-steps",
        "6",
        "--precision",
        "fp32",
        "--log-every-steps",
        "1",
        "optim.lr=3e-3",
        "optim.warmup_steps=2",
    ]
    one = subprocess.run(
        [sys.executable, "-m", "midtrain", "sft", *common, "--batch-size", "8", "--out", str(tmp_path / "one")],
        capture_output=True,
        text=True,
    )
    assert one.returncode == 0, one.stderr[-2000:]
    accelerate = shutil.which("accelerate", path=str(Path(sys.executable).parent))
    two = subprocess.run(
        [
            accelerate,
            "launch",
            "--multi_gpu",
            "--num_processes",
            "2",
            "--num_machines",
            "1",
            "--mixed_precision",
            "no",
            "--dynamo_backend",
            "no",
            "-m",
            "midtrain",
            "sft",
            *common,
            "--batch-size",
            "4",
            "--out",
            str(tmp_path / "two"),
        ],
        capture_output=True,
        text=True,
    )
    assert two.returncode == 0, two.stderr[-3000:]
    l1, l2 = _log(tmp_path / "one"), _log(tmp_path / "two")
    assert [r["step"] for r in l1] == [r["step"] for r in l2]
    for r1, r2 in zip(l1, l2):
        assert r2["loss"] == pytest.approx(r1["loss"], rel=1e-4)
    assert "two" in two.stdout and two.stdout.count("sft:") == 1  # only rank 0 reports


def test_diagnostics_during_pretraining(nano_model, tmp_path):
    from midtrain.data import write_jsonl
    from midtrain.synth import generate_problems

    probs = generate_problems(n=40, ops="2-3", render="compact", modulus=10, order="dependency", seed=3)
    write_jsonl(tmp_path / "p.jsonl", probs)
    run(
        _cfg(
            nano_model,
            tmp_path / "p.jsonl",
            tmp_path / "r",
            max_steps=6,
            diagnose_data=str(tmp_path / "p.jsonl"),
            diagnose_every_steps=3,
            diagnose_n=4,
        )
    )
    rows = [json.loads(l) for l in (tmp_path / "r" / "diagnostics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows] == [3, 6]
    assert {"trace_acc", "direct_acc", "by_op", "skills"} <= set(rows[0]) and "arith" in rows[0]["skills"]
