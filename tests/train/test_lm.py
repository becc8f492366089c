import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

from midtrain.errors import ConfigError, DataError
from midtrain.synth.diagnose import DiagnosticsConfig
from midtrain.train.corpus import CorpusConfig
from midtrain.train.lm import OptimConfig
from midtrain.train.pretrain import PretrainConfig, run


def _cfg(nano_model, corpus, out, **kw):
    base = dict(
        model=str(nano_model),
        corpus=CorpusConfig(files=[str(corpus)]),
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


def recording_steps(monkeypatch, crash_at=None):
    """Patch ``Trainer.training_step`` to record the input_ids of every step (what the model saw) and optionally
    raise at call ``crash_at``; returns the list it fills."""
    import transformers

    current = transformers.Trainer.training_step
    orig = getattr(current, "orig", current)  # not an earlier recorder
    seen = []

    def step(self, model, inputs, *a, **k):
        if crash_at is not None and len(seen) + 1 == crash_at:
            raise RuntimeError("simulated crash")
        seen.append(inputs["input_ids"].tolist())
        return orig(self, model, inputs, *a, **k)

    step.orig = orig
    monkeypatch.setattr(transformers.Trainer, "training_step", step)
    return seen


def test_resume_follows_the_uninterrupted_curve(nano_model, corpus, tmp_path, monkeypatch):
    full_batches = recording_steps(monkeypatch)
    run(_cfg(nano_model, corpus, tmp_path / "full", max_steps=24, save_every_steps=8))
    full = {r["step"]: r["loss"] for r in _log(tmp_path / "full")}
    assert len(full_batches) == 24 and len({str(b) for b in full_batches}) == 24

    recording_steps(monkeypatch, crash_at=19)
    with pytest.raises(RuntimeError, match="simulated crash"):
        run(_cfg(nano_model, corpus, tmp_path / "part", max_steps=24, save_every_steps=8))
    assert (tmp_path / "part" / "checkpoints" / "checkpoint-16").is_dir()
    resumed_batches = recording_steps(monkeypatch)
    res = run(_cfg(nano_model, corpus, tmp_path / "part", max_steps=24, save_every_steps=8))
    assert resumed_batches == full_batches[16:]  # the exact rows after the checkpoint, in the same order
    resumed = {r["step"]: r["loss"] for r in _log(tmp_path / "part")}
    assert sorted(resumed) == sorted(full)  # no step lost or logged twice
    for step in (20, 24):
        assert resumed[step] == pytest.approx(full[step], rel=1e-4, abs=1e-5)
    assert not res.cached


def test_default_config_killed_after_the_first_interval_resumes_from_a_checkpoint(nano_model, corpus, tmp_path, monkeypatch):
    """The default save policy (500 steps or 30 minutes) on a run whose steps take 16 minutes of a fake clock: a
    save every second step, so a crash in step 5 loses step 5 only and the re-run resumes from checkpoint-4."""
    from midtrain.train import checkpointing

    ticks = iter(range(0, 10**6, 16 * 60))  # each reading of the clock is 16 minutes later
    monkeypatch.setattr(checkpointing, "now", lambda: float(next(ticks)))
    cfg = _cfg(nano_model, corpus, tmp_path / "r", max_steps=8, log_every_steps=1)
    assert (cfg.save_every_steps, cfg.save_every_minutes) == (500, 30.0)  # nothing about saving is set here
    recording_steps(monkeypatch, crash_at=5)
    with pytest.raises(RuntimeError, match="simulated crash"):
        run(cfg)
    assert sorted(p.name for p in (tmp_path / "r" / "checkpoints").iterdir()) == ["checkpoint-2", "checkpoint-4"]  # keep 2
    resumed = recording_steps(monkeypatch)
    res = run(cfg)
    assert len(resumed) == 4  # steps 5-8: only what came after the newest checkpoint
    assert [r["step"] for r in _log(tmp_path / "r")] == list(range(1, 9)) and res.metrics["steps"] == 8


def test_max_tokens_counts_rows_times_seq_len(nano_model, corpus, tmp_path):
    from midtrain.train.lm import planned_steps

    assert planned_steps(7, 10**9, 512) == 7  # max_steps wins
    assert planned_steps(0, 1024, 512) == 2 and planned_steps(0, 1025, 512) == 3 and planned_steps(0, 0, 512) == 0
    res = run(_cfg(nano_model, corpus, tmp_path / "r", max_steps=0, max_tokens=3 * 8 * 64 - 10, log_every_steps=10))
    m = res.metrics
    assert m["steps"] == 3 and m["rows"] == 24 and m["tokens"] == 3 * 8 * 64  # exactly the rows of 3 steps
    assert (tmp_path / "r" / "tokens" / "COMPLETE").is_file() and list((tmp_path / "r" / "plan").glob("*.rows.npy"))
    assert sum(m["tokens_per_domain"].values()) == pytest.approx(m["packing_efficiency"] * 24 * 64, abs=1)


def test_training_from_a_token_store_and_completion_only(nano_model, tmp_path):
    from midtrain.train.tokenize import TokenizeConfig
    from midtrain.train.tokenize import run as tokenize

    recs = [{"prompt": f"a={i % 5}.?a<think>", "completion": f"a={i % 5}.</think><answer>{i % 5}</answer>"} for i in range(64)]
    (tmp_path / "pc.jsonl").write_text("".join(json.dumps(r) + "\n" for r in recs))
    tokenize(TokenizeConfig(model=str(nano_model), corpus=CorpusConfig(files=[str(tmp_path / "pc.jsonl")]), out=str(tmp_path / "tok")))
    base = dict(model=str(nano_model), tokens=str(tmp_path / "tok"), out=str(tmp_path / "r"), seq_len=64, batch_size=4, max_steps=2)
    full = run(PretrainConfig(**base)).metrics
    masked = run(PretrainConfig(**{**base, "out": str(tmp_path / "m"), "completion_only": True})).metrics
    assert masked["rows"] == full["rows"] and 0 < masked["target_tokens"] < full["target_tokens"]
    assert not (tmp_path / "r" / "tokens").exists()  # the given store is used, nothing tokenized again
    with pytest.raises(ConfigError, match="key 'tokens'"):
        PretrainConfig(**{**base, "corpus": CorpusConfig(files=[str(tmp_path / "pc.jsonl")])}).validate()
    with pytest.raises(ConfigError, match="weights.nope"):
        run(PretrainConfig(**{**base, "out": str(tmp_path / "w"), "weights": {"nope": 1.0}}))


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
        "--corpus.files",
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
    from midtrain.data.jsonl import write_jsonl
    from midtrain.synth.generate import generate_problems

    probs = generate_problems(n=40, ops="2-3", render="compact", modulus=10, order="dependency", seed=3)
    write_jsonl(tmp_path / "p.jsonl", probs)
    run(
        _cfg(
            nano_model,
            tmp_path / "p.jsonl",
            tmp_path / "r",
            max_steps=6,
            diagnose=DiagnosticsConfig(data=str(tmp_path / "p.jsonl"), every_steps=3, n=4),
        )
    )
    rows = [json.loads(l) for l in (tmp_path / "r" / "diagnostics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows] == [3, 6]
    assert {"trace_acc", "direct_acc", "by_op", "skills"} <= set(rows[0]) and "arith" in rows[0]["skills"]


RANK_RECORDER = """
import json, os, sys
import transformers
from midtrain.cli import main

orig = transformers.Trainer.training_step


def step(self, model, inputs, *a, **k):
    with open(os.path.join(sys.argv[1], f"rank{os.environ['RANK']}.jsonl"), "a") as f:
        f.write(json.dumps(inputs["input_ids"].tolist()) + "\\n")
    return orig(self, model, inputs, *a, **k)


transformers.Trainer.training_step = step
sys.exit(main(sys.argv[2:]))
"""


@pytest.mark.slow
def test_two_gloo_ranks_see_disjoint_rows_covering_all(nano_model, corpus, tmp_path):
    """Under DDP (2 gloo processes), rank 1 waits for rank 0's token store and plan; the ranks train on disjoint
    rows whose union is every planned row."""
    from midtrain.models.tokenizer import load_tokenizer
    from midtrain.train.data import PackedDataset
    from midtrain.train.tokenize import open_store

    script = tmp_path / "record.py"
    script.write_text(RANK_RECORDER)
    accelerate = shutil.which("accelerate", path=str(Path(sys.executable).parent))
    args = ["--model", str(nano_model), "--corpus.files", str(corpus), "--seq-len", "64", "--batch-size", "4", "--max-steps", "3"]
    args += ["--precision", "fp32", "--out", str(tmp_path / "r")]
    launch = [accelerate, "launch", "--multi_gpu", "--num_processes", "2", "--num_machines", "1", "--mixed_precision", "no"]
    proc = subprocess.run(
        [*launch, "--dynamo_backend", "no", str(script), str(tmp_path), "pretrain", *args], capture_output=True, text=True
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    seen = {r: [row for line in (tmp_path / f"rank{r}.jsonl").read_text().splitlines() for row in json.loads(line)] for r in (0, 1)}
    assert len(seen[0]) == len(seen[1]) == 3 * 4
    rows0, rows1 = {json.dumps(x) for x in seen[0]}, {json.dumps(x) for x in seen[1]}
    assert not rows0 & rows1
    store = open_store(tmp_path / "r" / "tokens")
    (plan,) = (tmp_path / "r" / "plan").glob("*.rows.npy")
    segments = np.load(str(plan).replace(".rows.npy", ".segments.npy"))
    ds = PackedDataset(store.shards, segments, np.load(plan), 64, load_tokenizer(nano_model).pad_token_id)
    assert len(ds) == 24 and rows0 | rows1 == {json.dumps(ds[i]["input_ids"].tolist()) for i in range(len(ds))}
