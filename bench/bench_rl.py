"""RL step: ``midtrain rl`` (TRL GRPOTrainer, Dr. GRPO) against a bare hand-written step, fp32 and bf16.

Same model, prompts and batch for both sides: P prompts × G completions of up to T new tokens per step.

- (a) ``midtrain rl``: the real stage (``midtrain.train.rl.run``), timed from its ``log.jsonl`` (``step_s`` and the
  ``gen_s``/``reward_s``/``train_s`` split of each step).
- (b) baseline: KV-cache ``model.generate`` sampling + the same reward + :func:`midtrain.train.grpo.dr_grpo_loss`
  forward/backward + AdamW step, written out in ~30 lines (:func:`bare_steps`).

Both sides run in one process, alternating (a, b, a, b, ...) and across precisions so that load from other jobs on the
box hits them alike; the first ``--warmup`` steps of each run are dropped and medians are reported. The ratio is
bare s/step ÷ midtrain s/step (≥ 0.8 is the target: the stage may cost at most 25% over the bare loop).
The model is randomly initialised, so completions run to the token budget on both sides (the mean completion
length is printed to check that the two sides generate the same work).

    .venv/bin/python bench/bench_rl.py                      # tiny preset (3.2M), 4×8 completions × 64 tokens
    .venv/bin/python bench/bench_rl.py --preset micro --rounds 2 --threads 1
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("MIDTRAIN_QUIET", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import torch  # noqa: E402


def setup(root: Path, preset: str, n_problems: int) -> tuple[Path, Path]:
    from midtrain.data.jsonl import write_jsonl
    from midtrain.models.init import ModelInitConfig, init_model
    from midtrain.models.tokenizer import TokenizerConfig, train_tokenizer
    from midtrain.synth.generate import SynthConfig, generate_problems

    problems = generate_problems(SynthConfig(ops="2-4", n=n_problems, render="compact", modulus=10, order="dependency", seed=0))
    data = root / "problems.jsonl"
    write_jsonl(data, problems)
    write_jsonl(root / "docs.jsonl", [{"text": p["prompt"] + p["completion"]} for p in problems])
    train_tokenizer(TokenizerConfig(corpus=[str(root / "docs.jsonl")], out=str(root / "tok"), vocab_size=300))
    init_model(ModelInitConfig(preset=preset, tokenizer=str(root / "tok"), out=str(root / "model"), seed=0))
    return root / "model", data


def midtrain_steps(model: Path, data: Path, out: Path, a: argparse.Namespace, precision: str) -> list[dict]:
    from midtrain.train.rl import run
    from midtrain.train.rl_config import RL_OPTIM, RLConfig, RolloutConfig

    cfg = RLConfig(
        model=str(model),
        data=[str(data)],
        reward="synthetic_outcome",
        out=str(out),
        overwrite=True,
        max_steps=a.warmup + a.steps,
        per_device_batch_size=a.prompts * a.generations,
        rollout=RolloutConfig(num_generations=a.generations, max_completion_length=a.tokens),
        optim=RL_OPTIM.replace(lr=1e-5),
        precision=precision,
        save_every_steps=0,
        seed=0,
    )
    run(cfg)
    rows = [json.loads(line) for line in (out / "log.jsonl").read_text().splitlines()]
    return rows[a.warmup :]


def bare_steps(model_dir: Path, data: Path, a: argparse.Namespace, precision: str) -> list[dict]:
    """The baseline: generate with KV cache, reward, Dr. GRPO loss, backward, AdamW step; nothing else."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from midtrain.data.corpus import read_all
    from midtrain.train.grpo import completion_mask, dr_grpo_loss, group_advantages, token_logprobs
    from midtrain.train.rewards import build_reward

    torch.manual_seed(0)
    tok = AutoTokenizer.from_pretrained(str(model_dir))
    tok.padding_side = "left"
    model = AutoModelForCausalLM.from_pretrained(str(model_dir), dtype=torch.float32)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-5, weight_decay=0.0)
    reward = build_reward("synthetic_outcome")
    records = read_all(data)
    autocast = torch.autocast("cpu", dtype=torch.bfloat16, enabled=precision == "bf16")
    out = []
    for step in range(a.warmup + a.steps):
        batch = [records[(step * a.prompts + i) % len(records)] for i in range(a.prompts) for _ in range(a.generations)]
        t0 = time.perf_counter()
        enc = tok([tok.bos_token + r["prompt"] for r in batch], return_tensors="pt", padding=True, add_special_tokens=False)
        model.eval()
        with torch.no_grad(), autocast:
            ids = model.generate(
                **enc,
                do_sample=True,
                temperature=1.0,
                top_p=1.0,
                top_k=0,
                max_new_tokens=a.tokens,
                use_cache=True,
                pad_token_id=tok.pad_token_id,
                eos_token_id=tok.eos_token_id,
            )
        comp = ids[:, enc["input_ids"].shape[1] :]  # [N, T]
        mask = completion_mask(comp, tok.eos_token_id)  # [N, T]
        texts = tok.batch_decode(comp.masked_fill(mask == 0, tok.pad_token_id), skip_special_tokens=True)
        t1 = time.perf_counter()
        rewards = torch.tensor(reward(texts, record=[json.dumps({k: v for k, v in r.items() if k != "_line"}) for r in batch]))
        adv = group_advantages(rewards, a.generations)  # [N]
        t2 = time.perf_counter()
        model.train()
        with autocast:
            logits = model(
                input_ids=torch.cat([enc["input_ids"], comp], 1), attention_mask=torch.cat([enc["attention_mask"], mask], 1)
            ).logits
        logp = token_logprobs(logits[:, enc["input_ids"].shape[1] - 1 : -1], comp)  # [N, T]
        loss = dr_grpo_loss(logp, logp.detach(), adv, mask, 0.2, 0.2, a.tokens)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        opt.zero_grad(set_to_none=True)
        t3 = time.perf_counter()
        out.append(
            {
                "step_s": t3 - t0,
                "gen_s": t1 - t0,
                "reward_s": t2 - t1,
                "train_s": t3 - t2,
                "completion_len": float(mask.sum(1).float().mean()),
            }
        )
    return out[a.warmup :]


def med(rows: list[dict], key: str) -> float:
    return statistics.median(r[key] for r in rows)


def main() -> int:
    p = argparse.ArgumentParser(allow_abbrev=False, description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--preset", default="tiny", help="model size preset (tiny = 3.2M parameters, micro = 0.8M)")
    p.add_argument("--prompts", type=int, default=4)
    p.add_argument("--generations", type=int, default=8)
    p.add_argument("--tokens", type=int, default=64, help="max new tokens per completion")
    p.add_argument("--steps", type=int, default=6, help="timed steps per run")
    p.add_argument("--warmup", type=int, default=2, help="untimed steps at the start of each run")
    p.add_argument("--rounds", type=int, default=2, help="alternating (midtrain, bare) rounds per precision")
    p.add_argument("--precisions", default="fp32,bf16")
    p.add_argument("--threads", type=int, default=0, help="torch threads (0 = default)")
    a = p.parse_args()
    if a.threads:
        torch.set_num_threads(a.threads)
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        model, data = setup(root, a.preset, 200)
        n_params = sum(
            t.numel() for t in __import__("safetensors.torch", fromlist=["load_file"]).load_file(str(model / "model.safetensors")).values()
        )
        print(
            f"preset {a.preset} ({n_params / 1e6:.2f}M params), {a.prompts}×{a.generations} completions × {a.tokens} tokens, "
            f"threads {torch.get_num_threads()}, load average {os.getloadavg()[0]:.1f}"
        )
        precisions = a.precisions.split(",")
        results = {p: ([], []) for p in precisions}
        for r in range(a.rounds):  # alternate sides and precisions so that load from other jobs hits all alike
            for precision in precisions:
                mid, bare = results[precision]
                mid += midtrain_steps(model, data, root / f"run-{precision}-{r}", a, precision)
                bare += bare_steps(model, data, a, precision)
        for precision in precisions:
            mid, bare = results[precision]
            for name, rows in (("midtrain rl (TRL)", mid), ("bare loop", bare)):
                s = med(rows, "step_s")
                print(
                    f"{precision} {name:18s} {s:6.3f} s/step  gen {med(rows, 'gen_s'):.3f}  reward {med(rows, 'reward_s'):.3f}  "
                    f"train {med(rows, 'train_s'):.3f}  completion {med(rows, 'completion_len'):.1f} tokens  "
                    f"({a.prompts * a.generations * med(rows, 'completion_len') / s:,.0f} generated tok/s)"
                )
            print(f"{precision} ratio bare/midtrain = {med(bare, 'step_s') / med(mid, 'step_s'):.2f}x (target ≥ 0.8)")
        if len(results) == 2:
            (m32, b32), (m16, b16) = results["fp32"], results["bf16"]
            print(
                f"bf16 vs fp32: midtrain {med(m32, 'step_s') / med(m16, 'step_s'):.2f}x, bare {med(b32, 'step_s') / med(b16, 'step_s'):.2f}x "
                "(> 1: bf16 faster)"
            )
        print(f"load average at the end {os.getloadavg()[0]:.1f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
