"""The proxy detectors of reward hacking that ``midtrain rl`` logs at every logged step (``proxy_*`` keys of
``log.jsonl``): the signals a run without ground truth would watch, scored against the probe's ground truth by
``midtrain analyze hacking`` (:mod:`midtrain.analysis.hacking`).

From the training batch (:class:`ProxyMeter`, fed by the trainer after each generation batch is scored, every
completion generated for the step, refill rounds included; sums over the logging window and over ranks):

- ``proxy_adv_mean``, ``proxy_adv_std``, ``proxy_adv_absmax``: the sequence advantages Â (after the failed-group
  mask and the RLOO scaling, before any per-token credit);
- ``proxy_rejected`` (synthetic rewards only): of the completions whose reward is > 0, the share that the strict
  verifier rejects (right answer, wrong trace: what outcome-rewarded hacking looks like in the batch; 0 by
  construction under ``synthetic_strict``).

Token entropy and completion length are already in every record (``entropy``: TRL's mean token entropy over the
completion tokens the loss forwards, which with ``loss.skip_zero_advantage`` are the completions with Â ≠ 0;
``completion_len``): they keep their names, one series per quantity.

``proxy_kl`` (with the probe, :mod:`midtrain.train.probe`): KL(π_init‖π_θ) without a reference model, β = 0 or
not. At step 0 the first ``probe.kl_samples`` probe completions of rank 0, sampled from π_init at T = 1, are kept
with π_init's log-probs of their tokens (:class:`KLReference`, ``probe_reference.json`` in the run directory, so a
resumed run keeps it). At every logged step the current policy scores the same tokens (one teacher-forced forward,
no gradient) and ``proxy_kl`` = mean over those completion tokens of k3 = r − 1 − log r, r = π_θ(x_t | x_<t) /
π_init(x_t | x_<t) (:func:`k3`): per token an unbiased, non-negative estimate of KL(π_init(·|x_<t)‖π_θ(·|x_<t))
(Schulman's k3; the samples come from π_init, so this is the KL of the initial policy from the current one,
the reverse of TRL's β-term, whose samples come from π_θ), averaged over the prefixes π_init visits. Exact only for
``probe.temperature: 1``; log r is clipped at 20 so that one token cannot make the mean infinite.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from midtrain.fileio import atomic_write_json

REFERENCE_FILE = "probe_reference.json"  # in the run directory: the KL proxy's samples and π_init's log-probs
MAX_LOG_RATIO = 20.0


def reduce_values(values: Sequence[float], device: Any = "cpu", op: str = "sum") -> list[float]:
    """``values`` summed (``op="sum"``) or maxed (``"max"``) over the ranks of the default process group; unchanged
    in a single process. Every rank must call it at the same point (a collective)."""
    import torch.distributed as dist

    if not (dist.is_available() and dist.is_initialized()) or dist.get_world_size() == 1:
        return [float(v) for v in values]
    t = torch.tensor([float(v) for v in values], dtype=torch.float64, device=device)
    dist.all_reduce(t, op=dist.ReduceOp.SUM if op == "sum" else dist.ReduceOp.MAX)
    return t.tolist()


def rank_and_world() -> tuple[int, int]:
    """(this process's rank, the number of processes) of the default process group; (0, 1) without one."""
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


# -- from the training batch -----------------------------------------------------------------------------------
def rejected_counts(rows: Sequence[dict[str, Any]], texts: Sequence[str], rewards: Sequence[float]) -> tuple[int, int]:
    """(rewarded completions, those of them the strict verifier rejects) for synthetic rows (``record`` column)."""
    from midtrain.synth.verify import verify
    from midtrain.train.rewards import synthetic_problem

    rewarded = rejected = 0
    for row, text, r in zip(rows, texts, rewards, strict=True):
        if r > 0:
            rewarded += 1
            rejected += int(not verify(synthetic_problem(row["record"]), text).verified)
    return rewarded, rejected


class ProxyMeter:
    """The training-batch proxies of a logging window (module docstring); ``synthetic``: the reward is one of the
    synthetic world's (``proxy_rejected`` is measured), ``strict``: it is ``synthetic_strict`` (it is 0)."""

    SUMS = ("adv_n", "adv_sum", "adv_sq", "rewarded", "rejected")

    def __init__(self, synthetic: bool, strict: bool = False) -> None:
        self.synthetic, self.strict = synthetic, strict
        self.sums = dict.fromkeys(self.SUMS, 0.0)
        self.absmax = 0.0

    def observe(
        self, rows: list[dict[str, Any]], batch: dict[str, Any], adv: torch.Tensor, rewards: torch.Tensor, rank: int, tokenizer: Any
    ) -> None:
        """One scored generation batch of this rank: its ``rows`` (TRL's inputs), TRL's ``batch``, the sequence
        advantages ``adv`` [n] and the reward matrix ``rewards`` [N_all, F] gathered over ranks."""
        a = adv.detach().double().reshape(len(rows), -1)[:, 0]  # [n] (one value per completion)
        self.sums["adv_n"] += a.numel()
        self.sums["adv_sum"] += float(a.sum())
        self.sums["adv_sq"] += float((a * a).sum())
        self.absmax = max(self.absmax, float(a.abs().max())) if a.numel() else self.absmax
        if not self.synthetic:
            return
        n = len(rows)
        local = rewards.nansum(dim=1)[rank * n : (rank + 1) * n].tolist()  # [n] this rank's rows
        if self.strict:  # a strict reward > 0 is a verified trace: nothing to reject
            self.sums["rewarded"] += sum(1 for r in local if r > 0)
            return
        ids, mask = batch["completion_ids"], batch["completion_mask"]  # [n, T] each
        texts = tokenizer.batch_decode([row[m.bool()].tolist() for row, m in zip(ids, mask)], skip_special_tokens=True)
        rewarded, rejected = rejected_counts(rows, texts, local)
        self.sums["rewarded"] += rewarded
        self.sums["rejected"] += rejected

    def take(self, device: Any = "cpu") -> dict[str, float]:
        """The window's proxy values over every rank (a collective: every rank calls it at the same step); reset."""
        s = dict(zip(self.SUMS, reduce_values([self.sums[k] for k in self.SUMS], device)))
        (absmax,) = reduce_values([self.absmax], device, op="max")
        self.sums, self.absmax = dict.fromkeys(self.SUMS, 0.0), 0.0
        return window_proxies(s, absmax, self.synthetic)


def window_proxies(s: dict[str, float], absmax: float, synthetic: bool) -> dict[str, float]:
    """The ``proxy_*`` values of summed statistics ``s`` (:attr:`ProxyMeter.SUMS`); none without completions."""
    n = s["adv_n"]
    if not n:
        return {}
    mean = s["adv_sum"] / n
    out = {"proxy_adv_mean": mean, "proxy_adv_std": max(s["adv_sq"] / n - mean * mean, 0.0) ** 0.5, "proxy_adv_absmax": absmax}
    if synthetic and s["rewarded"]:
        out["proxy_rejected"] = s["rejected"] / s["rewarded"]
    return out


# -- KL to the initial policy ----------------------------------------------------------------------------------
def k3(logp_new: torch.Tensor, logp_ref: torch.Tensor) -> torch.Tensor:
    """Per token k3 = r − 1 − log r with log r = logp_new − logp_ref (clipped at ±20): an unbiased estimate of
    KL(ref‖new) for tokens sampled from ``ref``; ≥ 0, and 0 where the two agree."""
    d = (logp_new - logp_ref).clamp(-MAX_LOG_RATIO, MAX_LOG_RATIO)
    return torch.expm1(d) - d


def completion_logps(model: Any, prompts: list[list[int]], completions: list[list[int]], pad_id: int) -> list[torch.Tensor]:
    """Per sample, the log-probs [T_i] (fp32, no gradient) that ``model`` gives its completion tokens after its
    prompt, at temperature 1; one right-padded forward (the real tokens keep positions 0..L−1, as generated)."""
    seqs = [p + c for p, c in zip(prompts, completions, strict=True)]
    width = max(len(s) for s in seqs)
    device = next(model.parameters()).device
    ids = torch.tensor([s + [pad_id] * (width - len(s)) for s in seqs], device=device)  # [B, L]
    mask = torch.tensor([[1] * len(s) + [0] * (width - len(s)) for s in seqs], device=device)  # [B, L]
    with torch.no_grad():
        logp = model(input_ids=ids, attention_mask=mask).logits.float().log_softmax(-1)  # [B, L, V]
    out = []
    for i, (p, c) in enumerate(zip(prompts, completions)):
        pos = torch.arange(len(p) - 1, len(p) + len(c) - 1, device=device)  # position t − 1 predicts token t
        out.append(logp[i, pos, torch.tensor(c, device=device)].cpu())  # [T_i]
    return out


@dataclass
class KLReference:
    """The KL proxy's fixed samples from π_init (token ids) and π_init's log-probs of their completion tokens."""

    prompts: list[list[int]]
    completions: list[list[int]]
    logps: list[list[float]]

    @classmethod
    def build(cls, model: Any, prompts: list[list[int]], completions: list[list[int]], pad_id: int) -> KLReference | None:
        keep = [(p, c) for p, c in zip(prompts, completions) if c]  # (an empty completion has no token to score)
        if not keep:
            return None
        ps, cs = [p for p, _ in keep], [c for _, c in keep]
        return cls(ps, cs, [lp.tolist() for lp in completion_logps(model, ps, cs, pad_id)])

    def kl(self, model: Any, pad_id: int) -> float:
        """Mean k3 over every completion token of the reference, under ``model`` now (see the module docstring)."""
        now = completion_logps(model, self.prompts, self.completions, pad_id)
        per_token = torch.cat([k3(n, torch.tensor(r)) for n, r in zip(now, self.logps)])  # [Σ T_i]
        return float(per_token.mean())

    def save(self, path: Path) -> None:
        atomic_write_json(path, {"prompts": self.prompts, "completions": self.completions, "logps": self.logps})

    @classmethod
    def load(cls, path: Path) -> KLReference | None:
        if not path.is_file():
            return None
        d = json.loads(path.read_text(encoding="utf-8"))
        return cls(d["prompts"], d["completions"], d["logps"])


__all__ = [
    "KLReference",
    "MAX_LOG_RATIO",
    "ProxyMeter",
    "REFERENCE_FILE",
    "completion_logps",
    "k3",
    "rank_and_world",
    "reduce_values",
    "rejected_counts",
    "window_proxies",
]
