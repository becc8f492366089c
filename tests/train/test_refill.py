"""Refill algebra: informative groups, row selection, and a merged batch that trains exactly as the same rows given directly."""

from __future__ import annotations

import pytest
import torch

from midtrain.train.grpo import dr_grpo_loss, group_advantages, token_logprobs
from midtrain.train.refill import group_informative, group_rows, merge_rows

PAD = 0


def test_group_informative_by_hand():
    rewards = torch.tensor([1.0, 0.0, 1.0, 1.0, 0.0, 0.0, 0.5, 0.5000001])  # G=2: [1,0] [1,1] [0,0] [0.5,0.5+ε]
    assert group_informative(rewards, 2).tolist() == [True, False, False, False]
    failed = torch.tensor([False, True, False, False, False, False, False, False])
    assert group_informative(rewards, 2, failed).tolist() == [False, False, False, False]
    assert group_rows(torch.tensor([0, 2]), 3).tolist() == [0, 1, 2, 6, 7, 8]


def make_round(prompts: list[list[int]], completions: list[list[int]], adv: list[float]) -> dict:
    """A TRL-shaped round: prompts left-padded, completions right-padded to the round's own widest row."""
    P = max(map(len, prompts))
    C = max(map(len, completions))
    return {
        "prompt_ids": torch.tensor([[PAD] * (P - len(p)) + p for p in prompts]),
        "prompt_mask": torch.tensor([[0] * (P - len(p)) + [1] * len(p) for p in prompts]),
        "completion_ids": torch.tensor([c + [PAD] * (C - len(c)) for c in completions]),
        "completion_mask": torch.tensor([[1] * len(c) + [0] * (C - len(c)) for c in completions]),
        "old_per_token_logps": torch.tensor([[-1.0] * len(c) + [0.0] * (C - len(c)) for c in completions]),
        "advantages": torch.tensor(adv),
        "num_items_in_batch": torch.tensor(float(sum(map(len, completions)))),
    }


def test_merge_pads_each_side_and_concatenates_the_chosen_rows():
    r1 = make_round([[5, 6], [7]], [[1, 2, 3], [4]], [0.5, -0.5])
    r2 = make_round([[3, 3, 3]], [[9, 9, 9, 9, 9]], [1.0])
    out = merge_rows([(r1, torch.tensor([1, 0])), (r2, torch.tensor([0]))], PAD)
    assert out["prompt_ids"].tolist() == [[0, 0, 7], [0, 5, 6], [3, 3, 3]]
    assert out["prompt_mask"].tolist() == [[0, 0, 1], [0, 1, 1], [1, 1, 1]]
    assert out["completion_ids"].tolist() == [[4, 0, 0, 0, 0], [1, 2, 3, 0, 0], [9, 9, 9, 9, 9]]
    assert out["completion_mask"].sum(1).tolist() == [1, 3, 5]
    assert out["advantages"].tolist() == [-0.5, 0.5, 1.0]
    assert "num_items_in_batch" not in out
    with pytest.raises(ValueError):
        merge_rows([], PAD)


class TinyPolicy(torch.nn.Module):
    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.emb = torch.nn.Embedding(12, 6)
        self.out = torch.nn.Linear(6, 12)

    def logp(self, batch: dict) -> torch.Tensor:  # completion logps from the previous token (prompt's last for t=0)
        ids = torch.cat([batch["prompt_ids"][:, -1:], batch["completion_ids"]], dim=1)  # [N, 1+C]
        return token_logprobs(self.out(self.emb(ids[:, :-1])), ids[:, 1:])  # [N, C]


def grads(batch: dict) -> dict[str, torch.Tensor]:
    policy = TinyPolicy()
    logp = policy.logp(batch)
    old = batch["old_per_token_logps"]
    dr_grpo_loss(logp, old, batch["advantages"], batch["completion_mask"], 0.2, 0.2, max_completion_len=8).backward()
    return {n: p.grad.clone() for n, p in policy.named_parameters()}


def test_a_refilled_batch_trains_as_the_same_rows_given_directly_and_zero_groups_add_nothing():
    G = 2
    # round 1: two groups, the first informative; round 2: one informative group with longer completions
    r1_rewards = torch.tensor([1.0, 0.0, 1.0, 1.0])
    r1 = make_round([[5], [5], [6], [6]], [[1, 2], [3], [4, 4], [4]], group_advantages(r1_rewards, G).tolist())
    r2_rewards = torch.tensor([0.0, 1.0])
    r2 = make_round([[7, 8], [7, 8]], [[9, 10, 11, 2], [1]], group_advantages(r2_rewards, G).tolist())
    keep1 = group_rows(group_informative(r1_rewards, G).nonzero(as_tuple=True)[0], G)
    keep2 = group_rows(group_informative(r2_rewards, G).nonzero(as_tuple=True)[0], G)
    topup = group_rows(torch.tensor([1]), G)  # the zero-variance group of round 1 keeps N = 3 groups
    merged = merge_rows([(r1, keep1), (r2, keep2), (r1, topup)], PAD)
    direct = make_round(
        [[5], [5], [7, 8], [7, 8], [6], [6]],
        [[1, 2], [3], [9, 10, 11, 2], [1], [4, 4], [4]],
        [0.5, -0.5, -0.5, 0.5, 0.0, 0.0],
    )
    got, want = grads(merged), grads(direct)
    for name in want:
        assert torch.allclose(got[name], want[name], atol=1e-7), name
    assert any(g.abs().sum() > 0 for g in want.values())
    # the top-up group contributes exactly zero: the same rows without it, at the same normaliser, give the same grads
    informative_only = merge_rows([(r1, keep1), (r2, keep2)], PAD)
    policy = TinyPolicy()
    loss = dr_grpo_loss(
        policy.logp(informative_only),
        informative_only["old_per_token_logps"],
        informative_only["advantages"],
        informative_only["completion_mask"],
        0.2,
        0.2,
        max_completion_len=8,
        num_sequences=6,
    )
    loss.backward()
    for name, p in policy.named_parameters():
        assert torch.equal(p.grad, got[name]) or torch.allclose(p.grad, got[name], atol=1e-8), name
