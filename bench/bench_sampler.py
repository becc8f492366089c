"""Generation: HF ``model.generate`` (DynamicCache) vs midtrain's KV-cache sampler (:mod:`midtrain.models.sampler`).

The demo model (src/midtrain/assets/demo-base, 0.82M-parameter Llama), one thread, a batch of 256 real synthetic
prompts (``midtrain synth generate --ops 6-8 --render compact --modulus 10 --order dependency ...``, generated in
process), up to 96 new tokens, EOS = the tokenizer's. Two settings: T=1 sampling and greedy. Per repeat the arms
alternate (HF, ours, HF, ours, ...) so that load from other jobs hits both alike; the medians are compared.

- **total**: prefill + decode of the batch; **decode**: total minus a prefill-only run (max_new_tokens=1) of the
  same arm;
- **compaction**: ours with and without dropping finished rows, and the share of row-steps it leaves
  (``Sampled.row_steps / full_steps``);
- **exact**: greedy tokens of the two arms compared row by row; for sampling the mean completion lengths.

    .venv/bin/python bench/bench_sampler.py                 # 3 repeats
    .venv/bin/python bench/bench_sampler.py --reps 1 --batch 64
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from pathlib import Path

os.environ.setdefault("MIDTRAIN_QUIET", "1")

import torch  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
DEMO = ROOT / "src" / "midtrain" / "assets" / "demo-base"


def prompts(n: int) -> list[str]:
    from midtrain.synth.generate import SynthConfig, generate_problems

    cfg = SynthConfig(
        ops="6-8", n=n, render="compact", modulus=10, order="dependency", distractors=False, const_max=9, max_multiplier=9, seed=0
    )
    return [p["prompt"] for p in generate_problems(cfg)]


def hf_arm(model, enc, eos: int, pad: int, n_new: int, sample: bool) -> tuple[float, list[list[int]]]:
    opts = dict(do_sample=True, temperature=1.0) if sample else dict(do_sample=False, temperature=None, top_p=None, top_k=None)
    t0 = time.perf_counter()
    with torch.inference_mode():
        ids = model.generate(**enc, max_new_tokens=n_new, pad_token_id=pad, eos_token_id=eos, **opts)
    dt = time.perf_counter() - t0
    rows = []
    for row in ids[:, enc["input_ids"].shape[1] :].tolist():
        rows.append(row[: row.index(eos) + 1] if eos in row else row)
    return dt, rows


def our_arm(model, enc, eos: int, n_new: int, sample: bool, compact: bool = True):
    from midtrain.models.sampler import sample as run

    opts = dict(do_sample=True, temperature=1.0) if sample else dict(do_sample=False)
    t0 = time.perf_counter()
    out = run(model, enc["input_ids"], enc["attention_mask"], max_new_tokens=n_new, eos_token_ids=[eos], compact=compact, **opts)
    return time.perf_counter() - t0, out


def main() -> None:
    ap = argparse.ArgumentParser(allow_abbrev=False, description=__doc__.split("\n")[0])
    ap.add_argument("--batch", type=int, default=256)
    ap.add_argument("--new", type=int, default=96)
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--threads", type=int, default=1)
    a = ap.parse_args()
    torch.set_num_threads(a.threads)
    from midtrain.models.init import load_model
    from midtrain.models.sampler import supported
    from midtrain.models.tokenizer import load_tokenizer

    model, tok = load_model(DEMO).eval(), load_tokenizer(DEMO)
    tok.padding_side = "left"
    enc = tok([tok.bos_token + p for p in prompts(a.batch)], return_tensors="pt", padding=True, add_special_tokens=False)
    eos, pad = tok.eos_token_id, tok.pad_token_id
    print(f"demo model, batch {a.batch}, prompt tokens ≤ {enc['input_ids'].shape[1]}, {a.new} new tokens, {a.threads} thread(s)")
    assert supported(model, do_sample=True, temperature=1.0) is None
    for sample in (True, False):
        name = "T=1 sampling" if sample else "greedy"
        t: dict[str, list[float]] = {k: [] for k in ("hf", "ours", "hf_pre", "ours_pre", "ours_nocompact")}
        for rep in range(a.reps):
            torch.manual_seed(rep)
            dt_hf, rows_hf = hf_arm(model, enc, eos, pad, a.new, sample)
            torch.manual_seed(rep)
            dt_ours, res = our_arm(model, enc, eos, a.new, sample)
            t["hf"].append(dt_hf)
            t["ours"].append(dt_ours)
            t["hf_pre"].append(hf_arm(model, enc, eos, pad, 1, sample)[0])
            t["ours_pre"].append(our_arm(model, enc, eos, 1, sample)[0])
            torch.manual_seed(rep)
            dt_nc, res_nc = our_arm(model, enc, eos, a.new, sample, compact=False)
            t["ours_nocompact"].append(dt_nc)
            mean = lambda rows: sum(map(len, rows)) / len(rows)  # noqa: E731
            same = sum(x == y for x, y in zip(rows_hf, res.tokens))
            print(
                f"  {name} rep {rep}: hf {dt_hf:.2f}s  ours {dt_ours:.2f}s ({dt_hf / dt_ours:.2f}x)  no-compaction {dt_nc:.2f}s"
                f"  | mean len hf {mean(rows_hf):.1f} ours {mean(res.tokens):.1f}  identical rows {same}/{len(rows_hf)}"
                f"  | row-steps kept {res.row_steps / max(res.full_steps, 1):.2f}"
                + ("" if sample else f"  compaction changes nothing: {res_nc.tokens == res.tokens}")
            )
            sys.stdout.flush()
        m = {k: statistics.median(v) for k, v in t.items()}
        dec_hf, dec_ours = m["hf"] - m["hf_pre"], m["ours"] - m["ours_pre"]
        print(
            f"{name}: median hf {m['hf']:.2f}s ours {m['ours']:.2f}s → {m['hf'] / m['ours']:.2f}x total;"
            f" decode-only hf {dec_hf:.2f}s ours {dec_ours:.2f}s → {dec_hf / dec_ours:.2f}x;"
            f" prefill hf {m['hf_pre']:.2f}s ours {m['ours_pre']:.2f}s;"
            f" compaction {m['ours_nocompact']:.2f}s → {m['ours']:.2f}s ({m['ours_nocompact'] / m['ours']:.2f}x)"
        )


if __name__ == "__main__":
    main()
