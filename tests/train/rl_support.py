"""Helpers of the RL trainer tests: a real trainer as the tests build it, a scored batch from scripted completions,
its rows, the gradients of one optimizer step, and the two-process runs (``accelerate launch`` of this file).

``accelerate launch tests/train/rl_support.py MODE ...`` runs one of two modes on every rank:

- ``grads MODEL WORK IN OUT``: data parallelism as DDP does it, by hand. ``IN`` holds a scored batch (TRL's dict)
  and a list of row orders; for each order, every rank takes its contiguous share of the rows (TRL's split of a
  generation batch over ranks), runs the trainer's loss on it and a backward pass, and the parameter gradients are
  all-reduced and divided by the number of ranks. Rank 0 saves the averaged gradients, one list per order, to ``OUT``.
- ``rl DEAD_URL -- ARGS``: ``midtrain ARGS`` (an ``rl`` run with an LLM judge) where rank 1's judge talks to
  ``DEAD_URL``, a server that is down, so that only rank 1's judge calls fail. The nano policy never closes a
  thought, so on every rank the judge reads the whole completion as its continuation (as test_rl_judge.py's
  ``judge_everything`` fixture does in-process).
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import torch

HERE = Path(__file__).resolve().parent
SCRIPT = str(HERE / "rl_support.py")  # what launch_two runs on each rank
G_DEFAULT = 4


def rl_trainer(model: Path, work: Path, reward: str = "math", extras: dict | None = None, **cfg_kw: Any):
    """``(trainer, tokenizer)``: a real MidtrainGRPOTrainer on ``model`` (8 completions per micro-batch, G = 4,
    max_completion_length 6, fp32, no checkpoints), in train mode; ``cfg_kw`` holds RLConfig keys and sections,
    ``extras`` fields of RLExtras besides the counters and the reward."""
    from datasets import Dataset

    from midtrain.models.init import load_model
    from midtrain.models.tokenizer import load_tokenizer
    from midtrain.train.rewards import build_reward
    from midtrain.train.rl_config import RL_OPTIM, RLConfig, RolloutConfig
    from midtrain.train.rl_log import Counters
    from midtrain.train.rl_trainer import MidtrainGRPOTrainer, RLExtras, build_grpo_config

    base = dict(
        model=str(model),
        data=["unused.jsonl"],
        out=str(work / "x"),
        max_steps=1,
        per_device_batch_size=8,
        rollout=RolloutConfig(num_generations=G_DEFAULT, max_completion_length=6),
        optim=RL_OPTIM.replace(lr=1e-4),
        save_every_steps=0,
        precision="fp32",
    )
    cfg = RLConfig(**{**base, **cfg_kw})
    tok = load_tokenizer(model)
    tok.padding_side = "left"
    trainer = MidtrainGRPOTrainer(
        RLExtras(counters=Counters(), reward=build_reward(reward), **(extras or {})),
        model=load_model(model),
        args=build_grpo_config(cfg, str(work / "ck")),
        train_dataset=Dataset.from_list([{"prompt": "q", "answer": "3"}] * 8),
        processing_class=tok,
    )
    trainer.model.train()
    return trainer, tok


Group = tuple[str, str, list[str]]  # (prompt, gold answer, its G completions)


def scripted_batch(trainer: Any, tok: Any, groups: list[Group], stale: bool = True) -> tuple[dict[str, Any], Any]:
    """``(batch, BatchRewards)``: TRL's scored batch of ``groups`` through the trainer's own scoring (``_scored``: TRL's
    ``_generate_and_score_completions``, then midtrain's masking and baselines), generation scripted to return the
    given completions (each ended by EOS). ``stale``: add old log-probs (:func:`stale_logps`) so that clipping binds."""
    prompts = [p for p, _, texts in groups for _ in texts]
    texts = [t for _, _, ts in groups for t in ts]
    prompt_ids = [tok(p)["input_ids"] for p in prompts]
    completion_ids = [tok(t, add_special_tokens=False)["input_ids"] + [tok.eos_token_id] for t in texts]
    trainer._generate = lambda batch: (prompt_ids, completion_ids, None, texts, None, {}, None, [])
    rows = [{"prompt": p, "answer": a} for p, a, ts in groups for _ in ts]
    batch, scored = trainer._scored(rows)
    if stale:
        batch["old_per_token_logps"] = stale_logps(trainer.model, batch)
    return batch, scored


def policy_logps(model: Any, batch: dict[str, Any]) -> torch.Tensor:
    """[N, T] log-probs of the batch's completion tokens under ``model`` (temperature 1, as the tests sample)."""
    from midtrain.train.grpo import token_logprobs

    ids = torch.cat([batch["prompt_ids"], batch["completion_ids"]], dim=1)  # [N, P+T]
    attn = torch.cat([batch["prompt_mask"], batch["completion_mask"]], dim=1)  # [N, P+T]
    T = batch["completion_ids"].size(1)
    logits = model(input_ids=ids, attention_mask=attn).logits[:, -T - 1 : -1]  # [N, T, V]: position t predicts token t
    return token_logprobs(logits, batch["completion_ids"])


def stale_logps(model: Any, batch: dict[str, Any]) -> torch.Tensor:
    """[N, T] log-probs of an older policy: the current ones moved by 0.5·sin(1.3·token + 0.7·t), a fixed function of
    each token and its position, so that ratios leave the clip range both ways and a row gets the same values in
    any batch it is scored in; 0 on padding (as a merged batch pads them)."""
    with torch.no_grad():
        logp = policy_logps(model, batch)
    t = torch.arange(logp.size(1))  # [T]
    shift = 0.5 * torch.sin(1.3 * batch["completion_ids"] + 0.7 * t)  # [N, T]
    return (logp + shift) * batch["completion_mask"]


def take_rows(batch: dict[str, Any], idx: torch.Tensor | list[int]) -> dict[str, Any]:
    """The rows ``idx`` of a scored batch (every per-row tensor indexed, as the trainer's zero-advantage skip does;
    scalars such as ``num_items_in_batch`` kept)."""
    idx = torch.as_tensor(idx, dtype=torch.long)
    n = batch["completion_ids"].size(0)
    return {k: v.index_select(0, idx) if torch.is_tensor(v) and v.dim() and v.size(0) == n else v for k, v in batch.items()}


def assert_same(got: list[torch.Tensor], want: list[torch.Tensor], rel: float = 1e-5) -> None:
    """Gradients equal to rounding: each entry within ``rel`` of the largest gradient entry (fp32 sums in another order)."""
    scale = max(float(w.abs().max()) for w in want)
    assert scale > 1e-6, "a zero gradient proves nothing"
    assert len(got) == len(want)
    for i, (g, w) in enumerate(zip(got, want)):
        assert torch.allclose(g, w, rtol=rel, atol=rel * scale), f"parameter {i}: max diff {float((g - w).abs().max()):.3g} of {scale:.3g}"


def loss_grads(trainer: Any, micro_batches: list[dict[str, Any]], accumulation: int | None = None) -> list[torch.Tensor]:
    """Parameter gradients of one optimizer step as TRL's training loop takes it: ``current_gradient_accumulation_steps``
    set to the number of micro-batches (or ``accumulation``), and the backward passes of their losses summed."""
    trainer.model.zero_grad(set_to_none=True)
    trainer.current_gradient_accumulation_steps = accumulation or len(micro_batches)
    for mb in micro_batches:
        trainer.compute_loss(trainer.model, dict(mb)).backward()
    return [torch.zeros_like(p) if p.grad is None else p.grad.detach().clone() for p in trainer.model.parameters()]


def launch_two(args: list[str], timeout_s: float = 600) -> subprocess.CompletedProcess:
    """``accelerate launch`` of 2 CPU processes over gloo running ``args`` (a script and its arguments, or ``-m
    module ...``), one torch thread each, on a free port. A launch that outlives ``timeout_s`` (a rank waiting for
    another forever) is killed with every process it started, and the test fails saying so."""
    import shutil
    import signal
    import socket

    with socket.socket() as sock:  # a free port: other jobs on the box may hold torchrun's default 29500
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    accelerate = shutil.which("accelerate", path=str(Path(sys.executable).parent))
    assert accelerate, "accelerate is not installed beside this Python"
    cmd = [accelerate, "launch", "--multi_gpu", "--num_processes", "2", "--num_machines", "1", "--mixed_precision", "no"]
    cmd += ["--dynamo_backend", "no", "--main_process_port", str(port), *args]
    path = os.pathsep.join(p for p in (str(HERE), os.environ.get("PYTHONPATH")) if p)  # the script imports nothing from
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": path}  # tests/, but a `-m` run may import its helpers
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env, start_new_session=True)
    try:
        out, err = proc.communicate(timeout=timeout_s)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)  # the launcher and both ranks: a hung rank must not outlive the test
        out, err = proc.communicate()
        raise AssertionError(f"2-process run still going after {timeout_s:g} s (a rank hangs):\n{err[-3000:]}") from None
    return subprocess.CompletedProcess(cmd, proc.returncode, out, err)


def _grads_mode(model: str, work: str, src: str, dst: str) -> None:
    saved = torch.load(src, weights_only=False)  # our own file: the batch and the RLConfig keys it was scored under
    trainer, _ = rl_trainer(Path(model), Path(work), per_device_batch_size=saved["per_rank"], **saved.get("cfg", {}))
    acc = trainer.accelerator
    world, rank = acc.num_processes, acc.process_index
    out = []
    for order in saved["orders"]:
        rows = take_rows(saved["batch"], order)
        n = rows["completion_ids"].size(0) // world
        grads = loss_grads(trainer, [take_rows(rows, list(range(rank * n, (rank + 1) * n)))], accumulation=1)
        for g in grads:  # DDP's all-reduce: the mean of the ranks' gradients
            torch.distributed.all_reduce(g)
            g /= world
        out.append(grads)
    if rank == 0:
        torch.save({"world": world, "grads": out}, dst)
    torch.distributed.barrier()
    torch.distributed.destroy_process_group()  # a rank leaving gloo open aborts at exit (SIGABRT)


def _rl_mode(dead_url: str, argv: list[str]) -> int:
    import midtrain.llm.judge as judge_mod
    import midtrain.train.rl as rl
    from midtrain.cli import main

    judge_mod.continuation = lambda completion: completion.strip() or "empty"  # type: ignore[assignment]
    if os.environ.get("RANK") == "1":
        build = rl.build_judge

        def dead_judge(spec: Any) -> Any:
            return build(spec.replace(backend=spec.backend.replace(base_url=dead_url)))

        rl.build_judge = dead_judge  # type: ignore[assignment]
    return main(argv)


if __name__ == "__main__":
    mode, *rest = sys.argv[1:]
    if mode == "grads":
        _grads_mode(*rest)
    elif mode == "rl":
        sys.exit(_rl_mode(rest[0], rest[rest.index("--") + 1 :]))
    else:
        sys.exit(f"unknown mode {mode!r}")
