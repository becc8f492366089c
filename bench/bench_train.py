"""Pretrain/SFT throughput: midtrain's engine vs a bare PyTorch loop on the same model, rows and batch.

    .venv/bin/python bench/bench_train.py [--presets micro tiny] [--steps 40] [--seq-len 256] [--batch-size 8]
    python bench/bench_train.py --device cuda --presets interplay-100m --precisions bf16 --seq-len 1024 --batch-size 16

For each preset and precision (fp32, bf16 autocast) it runs, in one process:
  (a) a bare loop: forward (packed rows, per-document positions), backward, clip, AdamW step;
  (b) `midtrain pretrain` (transformers Trainer + our collator) for the same number of steps;
and prints tokens/s, the ratio (b)/(a) (target ≥ 0.9) and MFU against the device's dense peak for the precision
(`midtrain.train.mfu.peak_flops`: the vendor figure for known GPUs, the nominal one for x86 CPUs, a matmul measured
in this run otherwise).
Warm-up steps are excluded from both timings. On CUDA the bare loop uses fused AdamW, as the Trainer does, and
both sides synchronise the device before reading the clock. ``--json FILE`` also writes the rows (gpu_check.sh).
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
from midtrain.train.corpus import CorpusConfig  # noqa: E402
from midtrain.train.data import collate  # noqa: E402
from midtrain.train.engine import OptimConfig
from midtrain.train.lm import build_dataset, flops_per_token, prepare_for_packed_training  # noqa: E402
from midtrain.train.mfu import peak_flops  # noqa: E402
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


def bare(model_dir: Path, cfg: PretrainConfig, precision: str, device: str) -> float:
    torch.manual_seed(0)
    tok = load_tokenizer(model_dir)
    rows, _ = build_dataset(cfg, tok, Path(tempfile.mkdtemp(prefix="bench-rows-")), cfg.max_steps, cfg.batch_size)
    model = prepare_for_packed_training(load_model(model_dir)).to(device).train()
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3, betas=(0.9, 0.95), weight_decay=0.1, fused=device == "cuda")
    B = cfg.batch_size
    t0 = 0.0
    for step in range(cfg.max_steps):
        if step == WARMUP:
            sync(device)
            t0 = time.perf_counter()
        batch = {k: v.to(device, non_blocking=True) for k, v in collate([rows[(step * B + i) % len(rows)] for i in range(B)]).items()}
        with torch.autocast(device, dtype=torch.bfloat16, enabled=precision == "bf16"):
            loss = model(**batch).loss
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        opt.zero_grad(set_to_none=True)
    sync(device)
    return (cfg.max_steps - WARMUP) * B * cfg.seq_len / (time.perf_counter() - t0)


def sync(device: str) -> None:
    if device == "cuda":
        torch.cuda.synchronize()


def engine(cfg: PretrainConfig) -> tuple[float, float]:
    """Steady tok/s of `midtrain pretrain` (from its log, past the warm-up) and the largest MFU its log printed."""
    res = run(cfg)
    log = [json.loads(line) for line in (Path(cfg.out) / "log.jsonl").read_text().splitlines()]
    first = next(r for r in log if r["step"] >= WARMUP)
    last = log[-1]
    rate = (
        (last["tokens"] - first["tokens"]) / (last["elapsed_s"] - first["elapsed_s"])
        if last is not first
        else res.metrics["tokens_per_second"]
    )
    return rate, max(r["mfu"] for r in log)


def main() -> None:
    ap = argparse.ArgumentParser(allow_abbrev=False, description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--presets", nargs="+", default=["micro", "tiny"])
    ap.add_argument("--precisions", nargs="+", default=["fp32", "bf16"])
    ap.add_argument("--steps", type=int, default=40)
    ap.add_argument("--seq-len", type=int, default=256)
    ap.add_argument("--batch-size", type=int, default=8)
    ap.add_argument("--device", choices=["auto", "cpu", "cuda"], default="auto")
    ap.add_argument("--json", metavar="FILE", help="Also write the rows as JSON.")
    args = ap.parse_args()
    device = ("cuda" if torch.cuda.is_available() else "cpu") if args.device == "auto" else args.device
    if device == "cpu":
        torch.set_num_threads(int(os.environ.get("OMP_NUM_THREADS", "2")))
    out: list[dict] = []
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        data = corpus(tmp / "c.jsonl")
        train_tokenizer(TokenizerConfig(corpus=[str(data)], out=str(tmp / "tok"), vocab_size=512))
        print(f"{device}: fp32 {peak_flops('fp32')}; bf16 {peak_flops('bf16')}")
        print(f"{'preset':<8} {'prec':<5} {'bare tok/s':>11} {'midtrain tok/s':>15} {'ratio':>6} {'MFU':>6}")
        for preset in args.presets:
            mdir = tmp / f"init-{preset}"
            init_model(ModelInitConfig(preset=preset, tokenizer=str(tmp / "tok"), out=str(mdir)))
            fpt = flops_per_token(load_model(mdir), args.seq_len)
            for prec in args.precisions:
                cfg = PretrainConfig(
                    model=str(mdir),
                    corpus=CorpusConfig(files=[str(data)]),
                    out=str(tmp / f"run-{preset}-{prec}"),
                    seq_len=args.seq_len,
                    batch_size=args.batch_size,
                    max_steps=args.steps,
                    precision=prec,
                    log_every_steps=1,
                    optim=OptimConfig(lr=1e-3, warmup_steps=5),
                )
                b = bare(mdir, cfg, prec, device)
                e, log_mfu = engine(cfg)
                peak = peak_flops(prec).flops
                print(f"{preset:<8} {prec:<5} {b:>11,.0f} {e:>15,.0f} {e / b:>6.2f} {e * fpt / peak:>6.1%}", flush=True)
                out.append(
                    dict(
                        preset=preset,
                        precision=prec,
                        device=device,
                        seq_len=args.seq_len,
                        batch_size=args.batch_size,
                        bare_tok_s=b,
                        midtrain_tok_s=e,
                        ratio=e / b,
                        bare_mfu=b * fpt / peak,
                        midtrain_mfu=e * fpt / peak,
                        log_mfu_max=log_mfu,
                        peak_flops=peak,
                    )
                )
    if args.json:
        Path(args.json).write_text(json.dumps(out, indent=2))


if __name__ == "__main__":
    sys.exit(main())
