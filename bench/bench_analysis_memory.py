"""Peak memory and time of ``midtrain analyze weights`` on two locally created ≥ 1B-parameter checkpoints.

Creates two randomly initialised Llama-shaped checkpoints (TinyLlama-1.1B shapes by default: hidden 2048,
22 layers, GQA 32/4 heads, intermediate 5632, vocab 32000, untied lm_head; fp32, so the largest tensor, the
embedding, is 262 MB) as sharded safetensors with an index, written tensor by tensor with a streaming writer so
that creating them needs one tensor of RAM. AFTER = BEFORE with 5% of the entries of every tensor moved by
1e-3 (an RL-like sparse update). Then runs

    /usr/bin/time -v .venv/bin/midtrain analyze weights BEFORE AFTER --json

at the full depth and at half the depth (same shapes, half the layers) to show that time is linear in the
parameter count, plus a baseline process that only imports the analysis module (the fixed floor of any run).
Prints peak RSS, wall seconds and ratios; checks that the reported fraction changed matches the 5% planted.
The big files are deleted at the end (``--keep`` keeps them). ``--record`` rewrites this benchmark's section of
bench/RESULTS.md, leaving other sections intact.

    .venv/bin/python bench/bench_analysis_memory.py [--dir /tmp/midtrain-bench-analysis] [--record]
"""

from __future__ import annotations

import argparse
import json
import math
import os
import re
import shutil
import struct
import subprocess
import sys
import time
from pathlib import Path

import torch

from midtrain.fileio import atomic_write_text

ROOT = Path(__file__).resolve().parent.parent
MIDTRAIN = ROOT / ".venv" / "bin" / "midtrain"
PYTHON = ROOT / ".venv" / "bin" / "python"
SECTION = "## analyze weights: peak memory on two 1.1B-parameter checkpoints"
CHANGED = 0.05
BOUND_MIB = 512  # the stated peak-RSS bound at the default chunk_elements
DTYPES = {"F32": (torch.float32, 4), "BF16": (torch.bfloat16, 2)}


def llama_shapes(layers: int, hidden: int = 2048, inter: int = 5632, vocab: int = 32000, heads: int = 32, kv: int = 4):
    head_dim = hidden // heads
    shapes = {"model.embed_tokens.weight": (vocab, hidden)}
    for i in range(layers):
        p = f"model.layers.{i}."
        shapes.update(
            {
                p + "input_layernorm.weight": (hidden,),
                p + "self_attn.q_proj.weight": (hidden, hidden),
                p + "self_attn.k_proj.weight": (kv * head_dim, hidden),
                p + "self_attn.v_proj.weight": (kv * head_dim, hidden),
                p + "self_attn.o_proj.weight": (hidden, hidden),
                p + "post_attention_layernorm.weight": (hidden,),
                p + "mlp.gate_proj.weight": (inter, hidden),
                p + "mlp.up_proj.weight": (inter, hidden),
                p + "mlp.down_proj.weight": (hidden, inter),
            }
        )
    shapes["model.norm.weight"] = (hidden,)
    shapes["lm_head.weight"] = (vocab, hidden)
    config = {
        "architectures": ["LlamaForCausalLM"],
        "model_type": "llama",
        "hidden_size": hidden,
        "intermediate_size": inter,
        "num_hidden_layers": layers,
        "num_attention_heads": heads,
        "num_key_value_heads": kv,
        "vocab_size": vocab,
        "tie_word_embeddings": False,
        "rms_norm_eps": 1e-5,
        "max_position_embeddings": 2048,
    }
    return shapes, config


def tensor_pair(name: str, shape: tuple[int, ...], seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(before, after) for one tensor: N(0, 0.02²) weights (ones for norms); 5% of the entries moved by 1e-3."""
    g = torch.Generator().manual_seed(seed)
    before = torch.ones(shape) if "norm" in name else torch.randn(shape, generator=g) * 0.02
    after = before.clone()
    flat = after.view(-1)
    idx = torch.randperm(flat.numel(), generator=g)[: round(CHANGED * flat.numel())]
    flat[idx] += 1e-3
    return before, after


def write_sharded(dirs: list[Path], shapes: dict, config: dict, dtype: str, shard_bytes: int) -> None:
    """Stream both checkpoints to disk tensor by tensor: headers first (offsets are known), then the data."""
    tdtype, size = DTYPES[dtype]
    shards: list[list[str]] = [[]]
    used = 0
    for name, shape in shapes.items():
        nbytes = math.prod(shape) * size
        if shards[-1] and used + nbytes > shard_bytes:
            shards.append([])
            used = 0
        shards[-1].append(name)
        used += nbytes
    files = [f"model-{i + 1:05d}-of-{len(shards):05d}.safetensors" for i in range(len(shards))]
    handles = []
    for d in dirs:
        d.mkdir(parents=True, exist_ok=True)
        (d / "config.json").write_text(json.dumps(config, indent=2))
        index = {
            "metadata": {"total_size": sum(math.prod(s) * size for s in shapes.values())},
            "weight_map": {n: files[i] for i, names in enumerate(shards) for n in names},
        }
        (d / "model.safetensors.index.json").write_text(json.dumps(index, indent=2))
    seed = 0
    for fname, names in zip(files, shards):
        header, offset = {"__metadata__": {"format": "pt"}}, 0
        for n in names:
            nbytes = math.prod(shapes[n]) * size
            header[n] = {"dtype": dtype, "shape": list(shapes[n]), "data_offsets": [offset, offset + nbytes]}
            offset += nbytes
        raw = json.dumps(header, separators=(",", ":")).encode()
        raw += b" " * (-len(raw) % 8)
        handles = [open(d / fname, "wb") for d in dirs]
        for h in handles:
            h.write(struct.pack("<Q", len(raw)) + raw)
        for n in names:
            seed += 1
            for h, t in zip(handles, tensor_pair(n, shapes[n], seed)):
                h.write(t.to(tdtype).contiguous().view(torch.uint8).numpy().tobytes())
        for h in handles:
            h.close()


def timed(cmd: list[str]) -> dict:
    """Run under /usr/bin/time -v: peak RSS (MiB), wall seconds, stdout."""
    t0 = time.time()
    proc = subprocess.run(["/usr/bin/time", "-v", *cmd], capture_output=True, text=True, env={**os.environ, "MIDTRAIN_QUIET": "1"})
    wall = time.time() - t0
    if proc.returncode != 0:
        sys.exit(f"command failed ({proc.returncode}): {' '.join(cmd)}\n{proc.stderr[-2000:]}")
    rss_kb = int(re.search(r"Maximum resident set size \(kbytes\): (\d+)", proc.stderr).group(1))
    return {"rss_mib": rss_kb / 1024, "seconds": wall, "stdout": proc.stdout}


def main() -> None:
    ap = argparse.ArgumentParser(allow_abbrev=False, description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--dir", default="/tmp/midtrain-bench-analysis")
    ap.add_argument("--layers", type=int, default=22)
    ap.add_argument("--dtype", choices=list(DTYPES), default="F32")
    ap.add_argument("--shard-gb", type=float, default=1.0)
    ap.add_argument("--keep", action="store_true", help="Keep the checkpoints afterwards.")
    ap.add_argument("--record", action="store_true", help="Rewrite this benchmark's section of bench/RESULTS.md.")
    args = ap.parse_args()
    root = Path(args.dir)
    rows = []
    try:
        base = timed([str(PYTHON), "-c", "import midtrain.analysis.weights, midtrain.cli"])
        for layers in (args.layers // 2, args.layers):
            shapes, config = llama_shapes(layers)
            params = sum(math.prod(s) for s in shapes.values())
            size = DTYPES[args.dtype][1]
            largest = max(math.prod(s) for s in shapes.values()) * size
            pair = [root / f"L{layers}" / "before", root / f"L{layers}" / "after"]
            t0 = time.time()
            write_sharded(pair, shapes, config, args.dtype, int(args.shard_gb * 2**30))
            made = time.time() - t0
            run = timed([str(MIDTRAIN), "analyze", "weights", str(pair[0]), str(pair[1]), "--json"])
            frac = json.loads(run["stdout"])["fraction_changed"]
            rows.append(
                {
                    "layers": layers,
                    "params": params,
                    "ckpt_gib": params * size / 2**30,
                    "largest_mib": largest / 2**20,
                    "create_s": made,
                    **run,
                    "fraction_changed": frac,
                }
            )
            print(
                f"L={layers}: {params / 1e9:.3f}B params, {params * size / 2**30:.2f} GiB/ckpt, created in {made:.0f}s; "
                f"peak RSS {run['rss_mib']:.0f} MiB, {run['seconds']:.1f}s, fraction changed {frac:.5f}",
                flush=True,
            )
            if abs(frac - CHANGED) > 1e-3:
                sys.exit(f"fraction changed {frac} differs from the planted {CHANGED}")
            if layers == args.layers:  # the same with a run dir: content hashes of both inputs, weights.json, plot
                outdir = root / "run"
                with_out = timed([str(MIDTRAIN), "analyze", "weights", str(pair[0]), str(pair[1]), "--out", str(outdir)])
                rows[-1]["with_out"] = with_out
                print(f"  with --out: peak RSS {with_out['rss_mib']:.0f} MiB, {with_out['seconds']:.1f}s", flush=True)
            if not args.keep:
                shutil.rmtree(root / f"L{layers}")
    finally:
        if not args.keep:
            shutil.rmtree(root, ignore_errors=True)
    half, full = rows
    lines = [
        SECTION,
        "",
        f"Command: `.venv/bin/python bench/bench_analysis_memory.py --record` (2-core box shared with other jobs, "
        f"load average {os.getloadavg()[0]:.1f} at the end, {time.strftime('%Y-%m-%d')}); "
        f"each row runs `/usr/bin/time -v .venv/bin/midtrain analyze weights BEFORE AFTER --json` on two random-init "
        f"Llama-shaped {args.dtype} checkpoints (sharded safetensors + index, {args.shard_gb:g} GiB shards; AFTER = BEFORE "
        f"with {CHANGED:.0%} of every tensor moved by 1e-3), default `chunk_elements` = 1,048,576 and `threads` = 1.",
        "",
        "| layers | parameters | GiB per checkpoint | largest tensor | peak RSS | wall | fraction changed |",
        "|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        lines.append(
            f"| {r['layers']} | {r['params'] / 1e9:.3f}B | {r['ckpt_gib']:.2f} | {r['largest_mib']:.0f} MiB | "
            f"{r['rss_mib']:.0f} MiB | {r['seconds']:.1f} s | {r['fraction_changed']:.5f} |"
        )
    lines += [
        "",
        f"- With `--out DIR` (run dir: SHA-256 content hashes of both checkpoints for the run key, weights.json, heatmap): "
        f"peak RSS {full['with_out']['rss_mib']:.0f} MiB, {full['with_out']['seconds']:.1f} s.",
        f"- Baseline in the same run: a process that only imports `midtrain.analysis.weights` peaks at {base['rss_mib']:.0f} MiB, so the "
        f"streaming itself adds {full['rss_mib'] - base['rss_mib']:.0f} MiB at 1.1B.",
        f"- Peak RSS / (two checkpoints loaded whole, {2 * full['ckpt_gib']:.1f} GiB) = "
        f"{full['rss_mib'] / (2 * full['ckpt_gib'] * 1024):.3f}; peak RSS / (two largest tensors, "
        f"{2 * full['largest_mib']:.0f} MiB) = {full['rss_mib'] / (2 * full['largest_mib']):.2f}.",
        f"- Peak RSS {full['layers']} vs {half['layers']} layers: {full['rss_mib'] / half['rss_mib']:.2f}x (flat: bounded by the "
        f"slice size, not the model); time ratio {full['seconds'] / half['seconds']:.2f}x for "
        f"{full['params'] / half['params']:.2f}x the parameters (linear).",
        f"- Stated bound: peak RSS under {BOUND_MIB} MiB whatever the model size, at the default `chunk_elements` "
        f"(held: {max(r['rss_mib'] for r in rows):.0f} MiB).",
    ]
    text = "\n".join(lines) + "\n"
    print("\n" + text)
    if args.record:
        path = ROOT / "bench" / "RESULTS.md"
        old = path.read_text(encoding="utf-8") if path.is_file() else "# Benchmark results\n"
        pattern = re.compile(re.escape(SECTION) + r".*?(?=^## |\Z)", re.S | re.M)
        new = pattern.sub(lambda _: text + "\n", old) if pattern.search(old) else old.rstrip("\n") + "\n\n" + text
        atomic_write_text(path, new)
        print(f"recorded in {path}")
    if max(r["rss_mib"] for r in rows) > BOUND_MIB:
        sys.exit(f"peak RSS above the stated bound of {BOUND_MIB} MiB")


if __name__ == "__main__":
    main()
