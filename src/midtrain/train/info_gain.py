"""RLP's information-gain reward for ``midtrain rl --task suffix --reward info_gain``: a dense, verifier-free reward
for the *thought* (RLP, NVlabs, arXiv 2510.01265).

Algorithm. A suffix task is a prefix x ending in ``<think>`` and the true next segment s (the ``reference``). The
policy θ samples a thought c, which ends at ``</think>`` (generation stops there: only thought tokens are
trained). The reward of c is how much the thought helps to predict s, against a no-think baseline:

    r(c) = mean_j log p_θ(s_j | x, c, </think>, s_<j)  −  mean_j log p_EMA(s_j | x', s_<j)

where x' is the prefix without the thought (the record's ``meta.prefix``, else the prompt with its trailing
``<think>`` removed) and EMA is an exponential moving average of the policy's weights,
``φ ← decay·φ + (1 − decay)·θ`` after every optimizer step, initialised from the policy. Both terms are scored
without gradient (the reward is a constant of the policy gradient); the Dr. GRPO advantage subtracts the group mean
as for every reward. A thought that makes the continuation likelier than the slowly moving no-think model scores > 0.

Scoring is batched: the B contexts (prompt + thought) are left-padded into one batch with an attention mask and
explicit position ids, so that every row ends with its reference tokens; one forward then returns only the last
``max_j |s| + 1`` positions' logits (``logits_to_keep``), and the reference log-probs are gathered there. The EMA
contexts are a second batch, one forward. The EMA is a full fp32 copy of the policy on each process (so it needs
the full parameters: no FSDP / DeepSpeed ZeRO-3), saved with every checkpoint as ``ema.safetensors`` (written
before the checkpoint's completion marker) and loaded on resume, so a resumed run continues the same average.
"""

from __future__ import annotations

import copy
import inspect
import os
from collections.abc import Iterable, Sequence
from contextlib import nullcontext
from pathlib import Path
from typing import Any

import torch
from transformers import TrainerCallback

from midtrain.errors import ConfigError, MidtrainError
from midtrain.fileio import atomic_file
from midtrain.thoughts import THINK_CLOSE, THINK_OPEN

EMA_FILE = "ema.safetensors"  # in each checkpoint-N of an info_gain run


# -- pure math ---------------------------------------------------------------------------------------------------
def masked_mean_logprob(logits: torch.Tensor, targets: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Per-sequence mean log-probability of ``targets`` over ``mask``.

    ``logits`` [N, K, V] predict ``targets`` [N, K] (already shifted by the caller); ``mask`` [N, K] is 1 at the
    reference tokens. Returns [N]; a row without any masked token is 0.
    """
    logp = torch.log_softmax(logits.float(), dim=-1)  # [N, K, V]
    tok = logp.gather(-1, targets.unsqueeze(-1)).squeeze(-1)  # [N, K]
    m = mask.to(tok.dtype)  # [N, K]
    return (tok * m).sum(dim=1) / m.sum(dim=1).clamp(min=1.0)  # [N]


def information_gain(logp_think: torch.Tensor, logp_nothink: torch.Tensor) -> torch.Tensor:
    """RLP's reward: the thought's mean log-likelihood gain on the reference over the no-think baseline ([N] → [N])."""
    return logp_think - logp_nothink


@torch.no_grad()
def ema_update_(ema: Iterable[torch.Tensor], params: Iterable[torch.Tensor], decay: float) -> None:
    """In place: ``e ← decay·e + (1 − decay)·p`` for each pair (decay 1 = a frozen copy, 0 = the policy itself)."""
    for e, p in zip(ema, params, strict=True):
        e.lerp_(p.detach().to(e.dtype), 1.0 - decay)


# -- contexts ----------------------------------------------------------------------------------------------------
def thought_ids(completion: Sequence[int], close_id: int, drop: Iterable[int] = ()) -> list[int]:
    """The completion's thought, closed: up to its first ``</think>`` (kept), or all of it without the ``drop`` ids
    (EOS/padding) and ``</think>`` appended when the model did not emit one (budget hit, or EOS first)."""
    ids = list(completion)
    if close_id in ids:
        return ids[: ids.index(close_id) + 1]
    gone = set(drop)
    return [t for t in ids if t not in gone] + [close_id]


def left_pad(seqs: Sequence[Sequence[int]], pad_id: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """``(input_ids, attention_mask, position_ids)``, each [N, T]: rows right-aligned, positions counting from 0 at
    each row's first real token (what generation uses for left-padded rows)."""
    T = max(len(s) for s in seqs)
    ids = torch.full((len(seqs), T), pad_id, dtype=torch.long)  # [N, T]
    att = torch.zeros((len(seqs), T), dtype=torch.long)  # [N, T]
    for i, s in enumerate(seqs):
        if s:
            ids[i, T - len(s) :] = torch.tensor(list(s), dtype=torch.long)
            att[i, T - len(s) :] = 1
    pos = (att.cumsum(dim=1) - 1).clamp(min=0)  # [N, T]
    return ids, att, pos


def _keeps_logits(model: Any) -> bool:
    try:
        return "logits_to_keep" in inspect.signature(model.forward).parameters
    except (TypeError, ValueError):
        return False


@torch.no_grad()
def score_references(model: Any, contexts: Sequence[Sequence[int]], refs: Sequence[Sequence[int]], pad_id: int) -> torch.Tensor:
    """Mean log p_model(ref_j | context, ref_<j) of each row, in one padded forward ([N] float32, on the CPU)."""
    if len(contexts) != len(refs) or not contexts:
        raise ValueError(f"score_references: {len(contexts)} contexts for {len(refs)} references")
    device = next(model.parameters()).device
    K = max(1, max(len(r) for r in refs))
    ids, att, pos = left_pad([list(c) + list(r) for c, r in zip(contexts, refs)], pad_id)  # [N, T]
    ids, att, pos = ids.to(device), att.to(device), pos.to(device)
    extra = {"logits_to_keep": K + 1} if _keeps_logits(model) else {}
    logits = model(input_ids=ids, attention_mask=att, position_ids=pos, use_cache=False, **extra).logits  # [N, ≤T, V]
    logits = logits[:, -(K + 1) : -1]  # [N, K, V]: position t predicts token t+1, i.e. the last K tokens
    targets = ids[:, -K:]  # [N, K]
    lens = torch.tensor([len(r) for r in refs], device=device)  # [N]
    mask = torch.arange(K, device=device).unsqueeze(0) >= (K - lens).unsqueeze(1)  # [N, K]: each row's last |ref|
    return masked_mean_logprob(logits, targets, mask).float().cpu()  # [N]


def nothink_prompt(rendered: str) -> str:
    """The no-think baseline's context: ``rendered`` without a trailing ``<think>`` (and the blanks before it)."""
    text = rendered.rstrip()
    return text[: -len(THINK_OPEN)].rstrip() if text.endswith(THINK_OPEN) else rendered


# -- the EMA -----------------------------------------------------------------------------------------------------
class EMAModel:
    """An exponential moving average of a policy's weights: a frozen fp32 copy, updated after each optimizer step."""

    def __init__(self, policy: Any, decay: float) -> None:
        self.decay = decay
        self.model = copy.deepcopy(policy).float().eval().requires_grad_(False)

    def to(self, device: Any) -> EMAModel:
        self.model.to(device)
        return self

    def update(self, policy: Any) -> None:
        ema_update_(self.model.parameters(), policy.parameters(), self.decay)

    def tensors(self) -> dict[str, torch.Tensor]:
        """Name → weight, each shared (tied) tensor once (``named_parameters`` deduplicates)."""
        return {k: v.detach().cpu().contiguous() for k, v in self.model.named_parameters()}

    def save(self, path: str | Path) -> None:
        from safetensors.torch import save

        data = save(self.tensors(), metadata={"decay": repr(self.decay)})
        with atomic_file(path) as f:
            f.write(data)

    def load(self, path: str | Path) -> None:
        from safetensors.torch import load_file

        if not Path(path).is_file():
            raise MidtrainError(f"{path}: the EMA of this info_gain checkpoint is missing; rerun with --overwrite")
        saved = load_file(str(path))
        params = dict(self.model.named_parameters())
        if set(saved) != set(params):
            raise MidtrainError(f"{path}: the EMA's weights do not match the policy's ({len(saved)} vs {len(params)} tensors)")
        with torch.no_grad():
            for k, p in params.items():
                p.copy_(saved[k].to(p.dtype))


# -- the reward --------------------------------------------------------------------------------------------------
class InfoGainReward:
    """The ``info_gain`` reward callable: ``(completions, answer, nothink, prompts, completion_ids) -> rewards``.

    ``bind`` gives it the live policy (the trainer's unwrapped model) and the EMA before training starts. Each call
    adds its sums (gain, log p_think, log p_nothink, count) to what :meth:`take_stats` returns for the step log.
    """

    __name__ = "info_gain"
    STATS = ("info_gain", "logp_think", "logp_nothink", "n")

    def __init__(self, tokenizer: Any, close_id: int, *, bf16: bool = False) -> None:
        self.tok, self.close_id, self.bf16 = tokenizer, close_id, bf16
        self.policy: Any = None
        self.ema: EMAModel | None = None
        self.pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else (tokenizer.eos_token_id or 0)
        self.drop = {t for t in (tokenizer.eos_token_id, tokenizer.pad_token_id) if t is not None}
        self.sums = dict.fromkeys(self.STATS, 0.0)

    def bind(self, policy: Any, ema: EMAModel) -> None:
        self.policy, self.ema = policy, ema

    def __call__(
        self, completions: list[str], answer: list[str], nothink: list[str], prompts: list[str], completion_ids: list[list[int]], **_: Any
    ) -> list[float]:
        if self.policy is None or self.ema is None:
            raise MidtrainError("info_gain: the reward was called before bind(policy, ema)")
        prompt_ids = self.tok(text=list(prompts))["input_ids"]  # as TRL tokenized the prompts
        base_ids = self.tok(text=list(nothink))["input_ids"]
        refs = [self.tok(str(a), add_special_tokens=False)["input_ids"] for a in answer]
        think_ctx = [list(p) + thought_ids(c, self.close_id, self.drop) for p, c in zip(prompt_ids, completion_ids, strict=True)]
        device = next(self.policy.parameters()).device
        amp = torch.autocast(device.type, dtype=torch.bfloat16) if self.bf16 else nullcontext()
        with amp:
            think = score_references(self.policy, think_ctx, refs, self.pad_id)  # [N]
            base = score_references(self.ema.model, base_ids, refs, self.pad_id)  # [N]
        gain = information_gain(think, base)  # [N]
        for k, v in zip(self.STATS, (gain.sum().item(), think.sum().item(), base.sum().item(), float(len(gain)))):
            self.sums[k] += v
        return gain.tolist()

    def take_stats(self) -> dict[str, float]:
        """The sums since the previous call (always the same keys: every rank sums them in lockstep)."""
        out, self.sums = self.sums, dict.fromkeys(self.STATS, 0.0)
        return out


def close_token_id(tokenizer: Any) -> int:
    """The id of ``</think>``; info_gain stops generation there, so it must be one token of the tokenizer."""
    ids = tokenizer.encode(THINK_CLOSE, add_special_tokens=False)
    if len(ids) != 1:
        raise ConfigError(
            f"key 'reward': info_gain stops generation at {THINK_CLOSE}, which this tokenizer splits into {len(ids)} tokens; "
            "add it as a token (it is one in midtrain's tokenizers)"
        )
    return int(ids[0])


class EMACallback(TrainerCallback):
    """Updates the EMA from the policy after every optimizer step (before that step's checkpoint is saved)."""

    def __init__(self, ema: EMAModel, policy: Any) -> None:
        self.ema, self.policy = ema, policy

    def on_step_end(self, args, state, control, **kw):
        self.ema.update(self.policy)


def attach(trainer: Any, scorer: InfoGainReward, decay: float, resume: Path | None) -> EMAModel:
    """Wire info_gain into a built GRPOTrainer whose completions stop at ``</think>`` (its ``RLExtras.stop_ids``):
    refuse sharded parameters, create the EMA from the policy on its device (or load it from the ``resume``
    checkpoint), bind the scorer, update the EMA after each optimizer step."""
    check_full_parameters(trainer)
    policy = trainer.accelerator.unwrap_model(trainer.model)
    ema = EMAModel(policy, decay).to(next(policy.parameters()).device)
    if resume is not None:
        ema.load(resume / EMA_FILE)
    scorer.bind(policy, ema)
    trainer.add_callback(EMACallback(ema, policy))
    return ema


def check_full_parameters(trainer: Any = None) -> None:
    """A ConfigError when the parameters are sharded (FSDP, DeepSpeed ZeRO-3): the EMA copy needs them whole.
    Without ``trainer``, reads what ``accelerate launch`` exported (checked before the run directory exists)."""
    fsdp = os.environ.get("ACCELERATE_USE_FSDP", "").lower() in ("1", "true")
    zero3 = os.environ.get("ACCELERATE_DEEPSPEED_ZERO_STAGE", "") == "3"
    if trainer is not None:
        fsdp = fsdp or bool(getattr(trainer, "is_fsdp_enabled", False))
        plugin = getattr(getattr(trainer.accelerator, "state", None), "deepspeed_plugin", None)
        zero3 = zero3 or getattr(plugin, "zero_stage", None) == 3
    if fsdp or zero3:
        raise ConfigError(
            f"key 'reward': info_gain keeps a full EMA copy of the policy, which {'FSDP' if fsdp else 'DeepSpeed ZeRO-3'} "
            "shards; launch it with DDP (configs/accelerate/ddp.yaml) or one process"
        )


__all__ = [
    "EMA_FILE",
    "EMACallback",
    "EMAModel",
    "InfoGainReward",
    "attach",
    "check_full_parameters",
    "close_token_id",
    "ema_update_",
    "information_gain",
    "left_pad",
    "masked_mean_logprob",
    "nothink_prompt",
    "score_references",
    "thought_ids",
]
