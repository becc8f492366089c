"""Rewards that score the true suffix under the policy itself, for ``midtrain rl --task suffix``: RLP's information
gain (``reward: info_gain``; NVlabs, arXiv 2510.01265) and RLPR's reference probability (``reward: ref_prob``;
arXiv 2506.18254). Both are dense and verifier-free, and both reward the *thought*.

Algorithm. A suffix task is a prefix x ending in ``<think>`` and the true next segment s (the ``reference``). The
policy θ samples a thought c, which ends at ``</think>`` (generation stops there: only thought tokens are
trained). The reward of c is how well it lets the policy predict s:

    info_gain:  r(c) = mean_j log p_θ(s_j | x, c, s_<j)  −  mean_j log p_EMA(s_j | x', s_<j)
    ref_prob:   r(c) = mean_j p_θ(s_j | x, c, s_<j)                       (:func:`reference_probability`)

(c includes its ``</think>``), where x' is the prefix without the thought (the record's ``meta.prefix``, else the
prompt with its trailing ``<think>`` removed) and EMA is an exponential moving average of the policy's weights,
``φ ← decay·φ + (1 − decay)·θ`` after every optimizer step, initialised from the policy. Every term is scored
without gradient (the reward is a constant of the policy gradient); the Dr. GRPO advantage subtracts the group mean
as for every reward. RLPR averages token *probabilities*, not log-probabilities: a reward in [0, 1] that one
unlikely token cannot drive to −∞.

The no-think baseline cancels (``loss.nothink_baseline``). The G completions of a group share their prompt, so
log p_EMA(s | x') is one constant per group, and a group-centred advantage R_i − mean_j R_j removes it exactly
(so does RLOO's, and the group std of ``scale_rewards: group`` does not move either; NVlabs/RLP issue #3). The
baseline only makes the logged value interpretable as a gain; the gradient is the same without it
(tests/train/test_info_gain.py checks it through the trainer). ``nothink_baseline: none`` therefore builds no EMA
copy (a full fp32 model) and runs no second forward per scored batch: issue 29 puts that cost near 30% of a step
(info_gain 13.8 against exact_match 9.5 s/step in docs/claims.md; not timed for this key alone). The logged
``info_gain`` is then the raw mean log-likelihood ``logp_think``. The exceptions are ``scale_rewards: batch``,
whose std over the whole batch sees the per-prompt constants, and a curriculum, whose success is the reward
clipped to [0, 1].

Scoring is batched (:func:`reference_logits`, shared by both rewards and by the RMT loss of the trainer): the B
contexts (prompt + thought) are left-padded into one batch with an attention mask and explicit position ids, so
that every row ends with its reference tokens; one forward then returns only the last ``max_j |s| + 1``
positions' logits (``logits_to_keep``), and the reference tokens are gathered there. The EMA contexts are a second
batch, one forward. The EMA is a full fp32 copy of the policy on each process, saved with every checkpoint as
``ema.safetensors`` (written before the checkpoint's completion marker) and loaded on resume, so a resumed run
continues the same average. Both rewards score with the whole parameters (no FSDP / DeepSpeed ZeRO-3).
"""

from __future__ import annotations

import copy
import inspect
import os
from collections.abc import Callable, Iterable, Sequence
from contextlib import nullcontext
from pathlib import Path
from typing import Any, Literal

import torch
from transformers import TrainerCallback

from midtrain.errors import ConfigError, MidtrainError
from midtrain.fileio import atomic_file
from midtrain.thoughts import THINK_CLOSE, THINK_OPEN
from midtrain.train.grpo import token_logprobs

EMA_FILE = "ema.safetensors"  # in each checkpoint-N of an info_gain run (nothink_baseline ema)
NothinkBaseline = Literal["ema", "none"]
Score = Callable[[torch.Tensor, torch.Tensor, torch.Tensor], torch.Tensor]  # (logits, targets, mask) → per row


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


def reference_probability(logits: torch.Tensor, targets: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """RLPR's reward: per-sequence mean token *probability* of ``targets`` over ``mask`` (in [0, 1]).

    ``logits`` [N, K, V] predict ``targets`` [N, K] (already shifted); ``mask`` [N, K] is 1 at the reference
    tokens. Returns [N]; a row without any masked token is 0.
    """
    p = token_logprobs(logits, targets).exp()  # [N, K]: p(target_k | ·)
    m = mask.to(p.dtype)  # [N, K]
    return (p * m).sum(dim=1) / m.sum(dim=1).clamp(min=1.0)  # [N]


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


def thought_contexts(
    prompt_ids: torch.Tensor,
    prompt_mask: torch.Tensor,
    completion_ids: torch.Tensor,
    completion_mask: torch.Tensor,
    close_id: int,
    drop: Iterable[int],
) -> list[list[int]]:
    """Per row of a TRL batch, its prompt (left padding removed) followed by its completion's closed thought
    (:func:`thought_ids` of the completion's unmasked tokens): [N, P], [N, P], [N, T], [N, T] → N id lists."""
    gone = set(drop)
    out = []
    for p, pm, c, cm in zip(prompt_ids.tolist(), prompt_mask.tolist(), completion_ids.tolist(), completion_mask.tolist()):
        prompt = [t for t, m in zip(p, pm) if m]
        out.append(prompt + thought_ids([t for t, m in zip(c, cm) if m], close_id, gone))
    return out


def right_pad(seqs: Sequence[Sequence[int]], pad_id: int) -> tuple[torch.Tensor, torch.Tensor]:
    """``(ids, mask)``, each [N, max(1, max len)]: rows left-aligned, padded with ``pad_id`` (mask 0)."""
    K = max(1, max((len(s) for s in seqs), default=0))
    ids = torch.full((len(seqs), K), pad_id, dtype=torch.long)  # [N, K]
    mask = torch.zeros((len(seqs), K), dtype=torch.long)  # [N, K]
    for i, s in enumerate(seqs):
        ids[i, : len(s)] = torch.tensor(list(s), dtype=torch.long)
        mask[i, : len(s)] = 1
    return ids, mask


def unpad(ids: torch.Tensor, mask: torch.Tensor) -> list[list[int]]:
    """The inverse of :func:`right_pad` (and of left padding): each row's ids where ``mask`` is 1 ([N, K] → N lists)."""
    return [[t for t, m in zip(row, ms) if m] for row, ms in zip(ids.tolist(), mask.tolist())]


def pad_id_of(tokenizer: Any) -> int:
    """The id that pads a batch: the tokenizer's pad token, else EOS, else 0 (padding is masked either way)."""
    return tokenizer.pad_token_id if tokenizer.pad_token_id is not None else (tokenizer.eos_token_id or 0)


def suffix_columns(rows: Sequence[dict[str, Any]], tokenizer: Any, device: Any) -> dict[str, torch.Tensor]:
    """The RMT loss's true suffixes (each row's ``answer`` column, as the rewards tokenize it), right-padded into
    ``suffix_ids`` and ``suffix_mask`` ([N, K] each) on ``device``: per-row tensors of TRL's batch, so TRL's shuffle
    and split, the zero-advantage skip and a refill's merge (``refill.RIGHT_PADDED``) carry them with their rows."""
    ids, mask = right_pad([tokenizer(str(r["answer"]), add_special_tokens=False)["input_ids"] for r in rows], pad_id_of(tokenizer))
    return {"suffix_ids": ids.to(device), "suffix_mask": mask.to(device)}


def suffix_nll_inputs(batch: dict[str, Any], tokenizer: Any, close_id: int) -> tuple[list[list[int]], list[list[int]], int]:
    """``(contexts, refs, pad_id)`` of the RMT loss for a TRL micro-batch that carries :func:`suffix_columns`: each
    row's prompt + its own closed thought (:func:`thought_contexts`), its true suffix, and the padding id."""
    drop = {t for t in (tokenizer.eos_token_id, tokenizer.pad_token_id) if t is not None}
    contexts = thought_contexts(
        batch["prompt_ids"], batch["prompt_mask"], batch["completion_ids"], batch["completion_mask"], close_id, drop
    )
    return contexts, unpad(batch["suffix_ids"], batch["suffix_mask"]), pad_id_of(tokenizer)


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
    inner = getattr(model, "module", model)  # DDP's forward takes **kwargs: ask the wrapped model
    try:
        return "logits_to_keep" in inspect.signature(inner.forward).parameters
    except (TypeError, ValueError):
        return False


def reference_logits(
    model: Any, contexts: Sequence[Sequence[int]], refs: Sequence[Sequence[int]], pad_id: int
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """One padded forward of ``context + ref`` per row: ``(logits [N, K, V], targets [N, K], mask [N, K])``, where
    K = max |ref|, ``logits[:, k]`` predicts ``targets[:, k]`` and ``mask`` marks each row's last |ref| positions.

    Gradients flow when the caller enables them (the RMT loss); the rewards call it under ``no_grad``.
    """
    if len(contexts) != len(refs) or not contexts:
        raise ValueError(f"reference_logits: {len(contexts)} contexts for {len(refs)} references")
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
    return logits, targets, mask


@torch.no_grad()
def score_references(
    model: Any, contexts: Sequence[Sequence[int]], refs: Sequence[Sequence[int]], pad_id: int, score: Score = masked_mean_logprob
) -> torch.Tensor:
    """``score`` of each row's reference after its context (default: mean log p_model(ref_j | context, ref_<j)),
    in one padded forward (:func:`reference_logits`; [N, ...] float32, on the CPU)."""
    return score(*reference_logits(model, contexts, refs, pad_id)).float().cpu()


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


# -- the rewards -------------------------------------------------------------------------------------------------
class SuffixScorer:
    """What both rewards share: the live policy (bound before training starts), the thought contexts of a call's
    completions, the references' tokens, and statistics summed per call for the step log (:meth:`take_stats`)."""

    __name__ = "suffix_scorer"
    needs_ema = False  # whether attach() must build (or load) the EMA copy

    def __init__(self, tokenizer: Any, close_id: int, *, bf16: bool = False, stats: tuple[str, ...] = ()) -> None:
        self.tok, self.close_id, self.bf16 = tokenizer, close_id, bf16
        self.policy: Any = None
        self.ema: EMAModel | None = None
        self.pad_id = pad_id_of(tokenizer)
        self.drop = {t for t in (tokenizer.eos_token_id, tokenizer.pad_token_id) if t is not None}
        self.stats = (*stats, "n")
        self.sums = dict.fromkeys(self.stats, 0.0)

    def bind(self, policy: Any, ema: EMAModel | None = None) -> None:
        self.policy, self.ema = policy, ema

    def inputs(self, prompts: list[str], completion_ids: list[list[int]], answer: list[str]) -> tuple[list[list[int]], list[list[int]]]:
        """``(contexts, refs)``: each prompt (tokenized as TRL tokenized it) + its completion's closed thought, and
        each reference's tokens."""
        if self.policy is None or (self.needs_ema and self.ema is None):
            raise MidtrainError(f"{self.__name__}: the reward was called before bind()")
        prompt_ids = self.tok(text=list(prompts))["input_ids"]
        refs = [self.tok(str(a), add_special_tokens=False)["input_ids"] for a in answer]
        ctx = [list(p) + thought_ids(c, self.close_id, self.drop) for p, c in zip(prompt_ids, completion_ids, strict=True)]
        return ctx, refs

    def autocast(self) -> Any:
        device = next(self.policy.parameters()).device
        return torch.autocast(device.type, dtype=torch.bfloat16) if self.bf16 else nullcontext()

    def add(self, *columns: torch.Tensor) -> None:
        """Add the sums of ``columns`` (one [N] tensor per statistic, in order) and N."""
        for k, v in zip(self.stats, [float(c.sum()) for c in columns] + [float(len(columns[0]))], strict=True):
            self.sums[k] += v

    def take_stats(self) -> dict[str, float]:
        """The sums since the previous call (always the same keys: every rank sums them in lockstep)."""
        out, self.sums = self.sums, dict.fromkeys(self.stats, 0.0)
        return out


class InfoGainReward(SuffixScorer):
    """The ``info_gain`` reward callable: ``(completions, answer, nothink, prompts, completion_ids) -> rewards``.

    ``bind`` gives it the live policy (the trainer's unwrapped model) and, with ``baseline="ema"``, the EMA before
    training starts. Each call adds its sums (gain, log p_think, [log p_nothink], count) to :meth:`take_stats`.
    With ``baseline="none"`` the gain is log p_think itself (the same advantages: module docstring).
    """

    __name__ = "info_gain"

    def __init__(self, tokenizer: Any, close_id: int, *, bf16: bool = False, baseline: NothinkBaseline = "ema") -> None:
        terms = ("info_gain", "logp_think", "logp_nothink") if baseline == "ema" else ("info_gain", "logp_think")
        super().__init__(tokenizer, close_id, bf16=bf16, stats=terms)
        self.baseline = baseline
        self.needs_ema = baseline == "ema"

    def __call__(
        self, completions: list[str], answer: list[str], nothink: list[str], prompts: list[str], completion_ids: list[list[int]], **_: Any
    ) -> list[float]:
        ctx, refs = self.inputs(prompts, completion_ids, answer)
        ema = self.ema if self.needs_ema else None
        with self.autocast():
            think = score_references(self.policy, ctx, refs, self.pad_id)  # [N]
            if ema is None:  # nothink_baseline none: the gain is log p_think (the same advantages)
                self.add(think, think)
                return think.tolist()
            base_ids = self.tok(text=list(nothink))["input_ids"]
            base = score_references(ema.model, base_ids, refs, self.pad_id)  # [N]
        gain = information_gain(think, base)  # [N]
        self.add(gain, think, base)
        return gain.tolist()


def probability_and_logprob(logits: torch.Tensor, targets: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """[N, 2]: :func:`reference_probability` and :func:`masked_mean_logprob` of each row, from one set of logits."""
    return torch.stack([reference_probability(logits, targets, mask), masked_mean_logprob(logits, targets, mask)], dim=1)


class RefProbReward(SuffixScorer):
    """The ``ref_prob`` reward callable (RLPR): ``(completions, answer, prompts, completion_ids) -> rewards``, the
    mean token probability of the reference after the prompt and the thought, under the live policy (no EMA).
    The step log gets ``ref_prob`` and ``logp_think`` (the same forward's mean log-probability, as info_gain logs it)."""

    __name__ = "ref_prob"

    def __init__(self, tokenizer: Any, close_id: int, *, bf16: bool = False) -> None:
        super().__init__(tokenizer, close_id, bf16=bf16, stats=("ref_prob", "logp_think"))

    def __call__(
        self, completions: list[str], answer: list[str], prompts: list[str], completion_ids: list[list[int]], **_: Any
    ) -> list[float]:
        ctx, refs = self.inputs(prompts, completion_ids, answer)
        with self.autocast():
            scores = score_references(self.policy, ctx, refs, self.pad_id, score=probability_and_logprob)  # [N, 2]
        self.add(scores[:, 0], scores[:, 1])
        return scores[:, 0].tolist()


def close_token_id(tokenizer: Any, key: str = "reward", who: str = "info_gain") -> int:
    """The id of ``</think>``; ``who`` (info_gain, ref_prob: generation stops there; the RMT loss: the thought is
    cut there) needs it to be one token of the tokenizer, else a ConfigError naming ``key``."""
    ids = tokenizer.encode(THINK_CLOSE, add_special_tokens=False)
    if len(ids) != 1:
        raise ConfigError(
            f"key '{key}': {who} ends the thought at {THINK_CLOSE}, which this tokenizer splits into {len(ids)} tokens; "
            "add it as a token (it is one in midtrain's tokenizers)"
        )
    return int(ids[0])


class EMACallback(TrainerCallback):
    """Updates the EMA from the policy after every optimizer step (before that step's checkpoint is saved)."""

    def __init__(self, ema: EMAModel, policy: Any) -> None:
        self.ema, self.policy = ema, policy

    def on_step_end(self, args, state, control, **kw):
        self.ema.update(self.policy)


def attach(trainer: Any, scorer: SuffixScorer, decay: float, resume: Path | None) -> EMAModel | None:
    """Wire a scorer into a built GRPOTrainer whose completions stop at ``</think>`` (its ``RLExtras.stop_ids``):
    refuse sharded parameters and bind the policy; for info_gain with its EMA baseline, also create the EMA from the
    policy on its device (or load it from the ``resume`` checkpoint) and update it after each optimizer step.
    Returns the EMA, or None when the scorer has none."""
    check_full_parameters(trainer, scorer.__name__, ema=scorer.needs_ema)
    policy = trainer.accelerator.unwrap_model(trainer.model)
    if not scorer.needs_ema:
        scorer.bind(policy)
        return None
    ema = EMAModel(policy, decay).to(next(policy.parameters()).device)
    if resume is not None:
        ema.load(resume / EMA_FILE)
    scorer.bind(policy, ema)
    trainer.add_callback(EMACallback(ema, policy))
    return ema


def check_full_parameters(trainer: Any = None, reward: str = "info_gain", *, ema: bool = True) -> None:
    """A ConfigError when the parameters are sharded (FSDP, DeepSpeed ZeRO-3): the scorer forwards the unwrapped
    policy (and the EMA copies it) whole. Without ``trainer``, reads what ``accelerate launch`` exported (checked
    before the run directory exists)."""
    fsdp = os.environ.get("ACCELERATE_USE_FSDP", "").lower() in ("1", "true")
    zero3 = os.environ.get("ACCELERATE_DEEPSPEED_ZERO_STAGE", "") == "3"
    if trainer is not None:
        fsdp = fsdp or bool(getattr(trainer, "is_fsdp_enabled", False))
        plugin = getattr(getattr(trainer.accelerator, "state", None), "deepspeed_plugin", None)
        zero3 = zero3 or getattr(plugin, "zero_stage", None) == 3
    if fsdp or zero3:
        what = "keeps a full EMA copy of the policy" if ema else "scores the suffix with the whole policy"
        raise ConfigError(
            f"key 'reward': {reward} {what}, which {'FSDP' if fsdp else 'DeepSpeed ZeRO-3'} "
            "shards; launch it with DDP (configs/accelerate/ddp.yaml) or one process"
        )


__all__ = [
    "EMA_FILE",
    "EMACallback",
    "EMAModel",
    "InfoGainReward",
    "NothinkBaseline",
    "RefProbReward",
    "Score",
    "SuffixScorer",
    "attach",
    "check_full_parameters",
    "close_token_id",
    "ema_update_",
    "information_gain",
    "left_pad",
    "masked_mean_logprob",
    "nothink_prompt",
    "pad_id_of",
    "probability_and_logprob",
    "reference_logits",
    "reference_probability",
    "right_pad",
    "score_references",
    "suffix_columns",
    "suffix_nll_inputs",
    "thought_contexts",
    "thought_ids",
    "unpad",
]
