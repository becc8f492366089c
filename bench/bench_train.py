"""Pretrain/SFT throughput: midtrain's engine vs a bare PyTorch loop on the same model, rows and batch.

    .venv/bin/python bench/bench_train.py [--presets micro tiny] [--steps 40] [--seq-len 256] [--batch-size 8]

For each preset and precision (fp32, bf16 autocast) it runs, in one process:
  (a) a bare loop: forward (packed rows, per-document positions), backward, clip, AdamW step;
  (b) `midtrain pretrain` (transformers Trainer + our collator) for the same number of steps;
and prints tokens/s, the ratio (b)/(a) (target ≥ 0.9) and MFU against this machine's matmul peak, measured in
the same run (`midtrain.train.engine.peak_flops`). Warm-up steps are excluded from both timings.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("MIDTRAIN_QUIET", "1")
os.environ.setdefault("HF_HUB_OFFLINE", "1")

import torch  # noqa: E402

from midtrain.models.init import ModelInitConfig, init_model, load_model  # noqa: E402
from midtrain.models.tokenizer import TokenizerConfig, load_tokenizer, train_tokenizer
from midtrain.train.data import collate  # noqa: E402
from midtrain.train.engine import OptimConfig, peak_flops  # noqa: E402
from midtrain.train.lm import build_rows, flops_per_token, prepare_for_packed_training  # noqa: E402
from midtrain.train.pretrain import PretrainConfig, run  # noqa: E402

WARMUP = 5


def corpus(path: Path, n: int = 4000) -> Path:
    rng = random.Random(0)
    with open(path, "w") as f:
        for _ in range(n):
            depth = rng.randint(2, 8)
            facts = [f"{chr(97 + j)}={chr(96 + j)}+{rng.randint(1, 4)}" if j else f"a={rng.randint(1, 4)}" for j in range(depth)]
            f.write(
                json.dumps({"text": ".".join(facts) + f".?{chr(96 + depth)}<solution>" + "x" * rng.randint(10, 200) + "</solution>"}) + "\n"
            )
    return path


def bare(model_dir: Path, cfg: PretrainConfig, precision: str) -> float:
    torch.manual_seed(0)
    tok = load_tokenizer(model_dir)
    rows, _ = build_rows(cfg, tok)
    model = prepare_for_packed_training(load_model(model_dir)).train()
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3, betas=(0.9, 0.95), weight_decay=0.1)
    B = cfg.batch_size
    t0 = 0.0
    for step in range(cfg.max_steps):
        if step == WARMUP:
            t0 = time.perf_counter()
        batch = collate([rows[(step * B + i) % len(rows)] for i in range(B)])
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=precision == "bf16"):
            loss = model(**batch).loss
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        opt.zero_grad(set_to_none=True)
    return (cfg.max_steps - WARMUP) * B * cfg.seq_len / (time.perf_counter() - t0)


def engine(cfg: PretrainConfig) -> float:
    res = run(cfg)
    log = [json.loads(l) for l in (Path(cfg.out) / "log.jsonl").read_text().splitlines()]
    first = next(r for r in log if r["step"] >= WARMUP)
    last = log[-1]
    return (
        (last["tokens"] - first["tokens"]) / (last["elapsed_s"] - first["elapsed_s"])
        if last is not first
        else res.metrics["tokens_per_second"]
    )


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--presets", nargs="+", default=["micro", "tiny"])
    ap.add_argument("--precisions", nargs="+", default=["fp32", "bf16"])
    ap.add_argument("--steps", type=int, default=40)
    ap.add_argument("--seq-len", type=int, default=256)
    ap.add_argument("--batch-size", type=int, default=8)
    args = ap.parse_args()
    torch.set_num_threads(int(os.environ.get("OMP_NUM_THREADS", "2")))
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        data = corpus(tmp / "c.jsonl")
        train_tokenizer(TokenizerConfig(corpus=[str(data)], out=str(tmp / "tok"), vocab_size=512))
        print(f"matmul peak: fp32 {peak_flops('fp32') / 1e9:.0f} GFLOP/s, bf16 {peak_flops('bf16') / 1e9:.0f} GFLOP/s")
        print(f"{'preset':<8} {'prec':<5} {'bare tok/s':>11} {'midtrain tok/s':>15} {'ratio':>6} {'MFU':>6}")
        for preset in args.presets:
            mdir = tmp / f"init-{preset}"
            init_model(ModelInitConfig(preset=preset, tokenizer=str(tmp / "tok"), out=str(mdir)))
            fpt = flops_per_token(load_model(mdir), args.seq_len)
            for prec in args.precisions:
                cfg = PretrainConfig(
                    model=str(mdir),
                    data=[str(data)],
                    out=str(tmp / f"run-{preset}-{prec}"),
                    seq_len=args.seq_len,
                    batch_size=args.batch_size,
                    max_steps=args.steps,
                    precision=prec,
                    log_every_steps=1,
                    optim=OptimConfig(lr=1e-3, warmup_steps=5),
                )
                b = bare(mdir, cfg, prec)
                e = engine(cfg)
                print(f"{preset:<8} {prec:<5} {b:>11,.0f} {e:>15,.0f} {e / b:>6.2f} {e * fpt / peak_flops(prec):>6.1%}", flush=True)


if __name__ == "__main__":
    sys.exit(main())
