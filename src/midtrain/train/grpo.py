"""Dr. GRPO as small pure functions: mean-only group advantage + clipped surrogate with a constant normaliser.

Dr. GRPO (Liu et al., arXiv 2503.20783; DESIGN §1.4). For each prompt, G completions o_i are sampled and scored
with rewards R_i. Then

    Â_i  = R_i − mean_j R_j                                   (no division by the group std)
    loss = −1/(N·L_max) Σ_i Σ_t min(r_it·Â_i, clip(r_it, 1−ε_low, 1+ε_high)·Â_i),   r_it = π_θ/π_old per token

where N is the number of completions and L_max the generation budget (``max_completion_length``), a constant and
not |o_i|: dividing by each completion's own length (GRPO) or by the batch's token count (DAPO) makes the
per-token weight depend on length, the bias Dr. GRPO removes. β = 0 (no KL term).

``midtrain rl`` trains through TRL's GRPOTrainer (``loss_type="dr_grpo"``, ``scale_rewards="none"``, ``beta=0``),
which computes the same quantities itself. These functions document and test the algorithm, drive the hand-written
baseline step of ``bench/bench_rl.py``, and a test checks that TRL's loss equals :func:`dr_grpo_loss` on one batch.

Process credit (``loss.credit: first_error``, :func:`first_error_advantages`): one scalar Â_i per completion blames
the correct first steps of a failed trace as much as its mistake, and rewards the steps after a mistake in a trace
whose answer happened to be right. With the synthetic world's verifier locating each trace's first wrong step at
token e_i (:mod:`midtrain.synth.credit`), the advantage becomes per token:

    Â_it = Â_i·[t < e_i]  if Â_i > 0        (credit only what was right)
    Â_it = Â_i·[t ≥ e_i]  if Â_i < 0        (blame only the mistake and what follows it)

and Â_it = Â_i for a verified completion (no e_i). The loss above is unchanged, with Â_it in place of Â_i.

Gradient accumulation: with k micro-batches of n = N/k completions each, TRL divides each micro-batch's loss
``Σ/(n·L_max)`` by k, which sums to ``Σ/(N·L_max)``: the update does not depend on how the batch is split
(``tests/train/test_grpo.py`` checks 2×4 against 1×8).

Two more objectives, as options of ``midtrain rl``'s ``loss`` section:

- **RLOO** (Ahmadian et al., arXiv 2402.14740; ``baseline: leave_one_out``): each completion's baseline is the mean
  reward of the *other* G − 1 completions of its prompt, Â_i = R_i − (Σ_j R_j − R_i)/(G − 1) = G/(G − 1)·(R_i −
  mean_j R_j). It is Dr. GRPO's advantage scaled by G/(G − 1): the same direction, an unbiased baseline
  (:func:`rloo_advantages`).
- **GSPO** (Zheng et al., arXiv 2507.18071; ``objective: gspo``): one importance ratio per *sequence*, the
  length-normalised s_i = exp(mean_t (log π_θ − log π_old)), clipped per sequence, and the loss averaged over
  sequences: −1/N Σ_i min(s_i·Â_i, clip(s_i, 1−ε_low, 1+ε_high)·Â_i) (:func:`gspo_loss`). TRL computes it as
  ``importance_sampling_level="sequence"`` with ``loss_type="grpo"``; a test checks TRL's loss against this one.

And one term added to any of them, for ``suffix`` tasks (``loss.suffix_nll_weight: w``): an **RMT-style dual
objective** (arXiv 2509.24375): loss + w · NLL, where NLL is the mean over completions of the mean next-token
negative log-likelihood of the *true* suffix s_i, teacher-forced after the prompt and completion i's own thought
c_i (:func:`suffix_nll`): −1/N Σ_i 1/|s_i| Σ_j log π_θ(s_ij | x_i, c_i, s_i,<j), with the gradient through the
policy (not through the sampled c_i, a constant). Every completion counts, zero-advantage ones too.
"""

from __future__ import annotations

from typing import Literal

import torch

Scale = Literal["none", "group", "batch"]


def group_advantages(rewards: torch.Tensor, G: int, scale: Scale = "none", eps: float = 1e-4) -> torch.Tensor:
    """Advantages of ``rewards`` laid out as B groups of G consecutive completions.

    ``scale="none"`` is Dr. GRPO (mean-only). ``"group"`` divides by each group's std (original GRPO), ``"batch"`` by
    the std of the whole batch; both use the unbiased std plus ``eps``, like TRL.
    """
    if rewards.dim() != 1 or rewards.numel() % G:
        raise ValueError(f"rewards must be 1-D with a multiple of G={G} entries, got shape {tuple(rewards.shape)}")
    r = rewards.float().view(-1, G)  # [B, G]
    adv = r - r.mean(dim=1, keepdim=True)  # [B, G]
    if scale == "group":
        adv = adv / (r.std(dim=1, keepdim=True) + eps)  # [B, G] / [B, 1]
    elif scale == "batch":
        adv = adv / (r.std() + eps)
    elif scale != "none":
        raise ValueError(f"unknown scale {scale!r}; use 'none', 'group' or 'batch'")
    return adv.reshape(-1)  # [B*G]


def zero_variance_fraction(rewards: torch.Tensor, G: int) -> float:
    """Fraction of groups whose G rewards are all equal: those groups have zero advantage and give no gradient."""
    r = rewards.float().view(-1, G)  # [B, G]
    same = torch.isclose(r, r[:, :1]).all(dim=1)  # [B]
    return same.float().mean().item()


def token_logprobs(logits: torch.Tensor, ids: torch.Tensor, temperature: float = 1.0) -> torch.Tensor:
    """log π(ids[t] | ·) from ``logits`` [N, T, V] that already predict ``ids`` [N, T] (shifted by the caller).

    Logits are divided by the sampling temperature first, as TRL does, so that the ratio compares the policy that
    actually sampled.
    """
    logp = torch.log_softmax(logits.float() / temperature, dim=-1)  # [N, T, V]
    return logp.gather(-1, ids.unsqueeze(-1)).squeeze(-1)  # [N, T]


def completion_mask(completion_ids: torch.Tensor, eos_token_id: int | list[int]) -> torch.Tensor:
    """1 for the tokens up to and including the first EOS of each row, 0 after it ([N, T] → [N, T] long)."""
    eos = torch.as_tensor(eos_token_id if isinstance(eos_token_id, list) else [eos_token_id], device=completion_ids.device)
    is_eos = torch.isin(completion_ids, eos)  # [N, T]
    T = completion_ids.size(1)
    first = torch.where(is_eos.any(dim=1), is_eos.int().argmax(dim=1), torch.full_like(is_eos[:, 0], T, dtype=torch.long))  # [N]
    pos = torch.arange(T, device=completion_ids.device).expand_as(completion_ids)  # [N, T]
    return (pos <= first.unsqueeze(1)).long()  # [N, T]


def dr_grpo_loss(
    logp: torch.Tensor,
    old_logp: torch.Tensor,
    adv: torch.Tensor,
    mask: torch.Tensor,
    eps_low: float = 0.2,
    eps_high: float = 0.2,
    max_completion_len: int = 256,
    num_sequences: int | None = None,
) -> torch.Tensor:
    """The Dr. GRPO loss (scalar): clipped surrogate summed over valid tokens / (N · L_max).

    ``logp``/``old_logp``/``mask`` are [N, T] (T ≤ L_max), ``adv`` is [N] (or [N, T] per token). ``num_sequences`` overrides N, for a
    micro-batch that is part of a larger batch (then the micro-batch losses add up to the full-batch loss).
    """
    n = logp.size(0) if num_sequences is None else num_sequences
    ratio = torch.exp(logp - old_logp)  # [N, T]
    a = (adv.unsqueeze(1) if adv.dim() == 1 else adv).to(ratio.dtype)  # [N, 1] or [N, T]
    unclipped = ratio * a  # [N, T]
    clipped = torch.clamp(ratio, 1.0 - eps_low, 1.0 + eps_high) * a  # [N, T]
    per_token = -torch.minimum(unclipped, clipped)  # [N, T]
    return (per_token * mask).sum() / (n * max_completion_len)


def rloo_advantages(rewards: torch.Tensor, G: int) -> torch.Tensor:
    """Leave-one-out advantages of ``rewards`` laid out as groups of G: R_i − mean of the other G − 1 ([B*G] → [B*G])."""
    if G < 2:
        raise ValueError(f"RLOO needs at least 2 completions per prompt, got G={G}")
    r = rewards.float().view(-1, G)  # [B, G]
    others = (r.sum(dim=1, keepdim=True) - r) / (G - 1)  # [B, G]
    return (r - others).reshape(-1)  # [B*G]


def gspo_loss(
    logp: torch.Tensor, old_logp: torch.Tensor, adv: torch.Tensor, mask: torch.Tensor, eps_low: float = 3e-4, eps_high: float = 4e-4
) -> torch.Tensor:
    """The GSPO loss (scalar): a clipped surrogate on the sequence-level, length-normalised ratio, averaged over sequences.

    ``logp``/``old_logp``/``mask`` are [N, T], ``adv`` is [N]. The default ε are the paper's (3e-4, 4e-4): a
    sequence ratio moves far less than a token's.
    """
    lengths = mask.sum(dim=1).clamp(min=1)  # [N]
    log_ratio = ((logp - old_logp) * mask).sum(dim=1) / lengths  # [N]
    ratio = torch.exp(log_ratio)  # [N]
    a = adv.to(ratio.dtype)  # [N]
    per_seq = -torch.minimum(ratio * a, torch.clamp(ratio, 1.0 - eps_low, 1.0 + eps_high) * a)  # [N]
    return per_seq.mean()


def first_error_advantages(advantages: torch.Tensor, first_error: torch.Tensor, length: int) -> torch.Tensor:
    """Per-token advantages under process credit (module docstring): [N] advantages and [N] first-error token
    positions (−1: none, the row keeps Â_i on every token) → [N, length]."""
    t = torch.arange(length, device=advantages.device).unsqueeze(0)  # [1, T]
    e = first_error.to(advantages.device).unsqueeze(1)  # [N, 1]
    a = advantages.unsqueeze(1)  # [N, 1]
    keep = torch.where(a > 0, t < e, t >= e) | (e < 0)  # [N, T]
    return a * keep  # [N, T]


def informative_rows(advantages: torch.Tensor, min_rows: int = 1) -> torch.Tensor:
    """Indices, in order, of the completions whose advantage is not 0 on some token, topped up with zero-advantage
    ones (the first of them) to at least ``min_rows`` ([N] or [N, T] → [K], min(min_rows, N) ≤ K ≤ N).

    Under Dr. GRPO with β = 0 a completion with Â = 0 (every completion of a zero-variance group) contributes
    exactly 0 to the loss and its gradient, whatever its ratio, while its forward and backward cost as much as any
    other: the trainer forwards only these rows and rescales by K/N so that the constant normaliser N·L_max is
    unchanged. One row is always kept (its loss is 0 if its advantage is 0) so that every process still runs a
    backward pass, which DDP and FSDP need; ``min_rows`` lets every process forward as many rows as the one with
    the most (the trainer's statistics gather per-row values over processes).
    """
    nonzero = advantages != 0 if advantages.dim() == 1 else (advantages != 0).any(dim=1)  # [N]
    short = max(min_rows, 1) - int(nonzero.sum())
    if short > 0:  # the first `short` zero-advantage rows join (their loss and gradient are 0)
        nonzero = nonzero | (~nonzero & ((~nonzero).cumsum(0) <= short))  # [N]
    return nonzero.nonzero(as_tuple=True)[0]  # [K]


def rl_flops(n_params: int, trained_tokens: int, generated_tokens: int) -> float:
    """Compute estimate for experiment accounting: 6·N per trained token (forward + backward) + 2·N per generated one."""
    return 6.0 * n_params * trained_tokens + 2.0 * n_params * generated_tokens


def suffix_nll(logits: torch.Tensor, targets: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """RMT's next-token term (scalar): the mean over rows of each row's mean −log p(target) over ``mask``.

    ``logits`` [N, K, V] predict ``targets`` [N, K] (already shifted by the caller: the true suffix after the
    prompt and the row's own thought); ``mask`` [N, K] is 1 at the suffix tokens. Each row weighs the same whatever
    its suffix length, so that the mean of the micro-batches' values (TRL's 1/k per micro-batch) is the batch's.
    A row without any masked token counts as 0.
    """
    nll = -token_logprobs(logits, targets)  # [N, K]
    m = mask.to(nll.dtype)  # [N, K]
    per_row = (nll * m).sum(dim=1) / m.sum(dim=1).clamp(min=1.0)  # [N]
    return per_row.mean()


__all__ = [
    "group_advantages",
    "zero_variance_fraction",
    "token_logprobs",
    "completion_mask",
    "dr_grpo_loss",
    "gspo_loss",
    "rloo_advantages",
    "first_error_advantages",
    "informative_rows",
    "rl_flops",
    "suffix_nll",
]
