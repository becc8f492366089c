"""Dr. GRPO pure functions against hand computations; gradient-accumulation invariance; TRL's loss equals ours; the
RMT dual objective (loss.suffix_nll_weight): its pure NLL by hand, and the trainer's gradient = RL + w · NLL by hand."""

import math

import pytest
import torch

from midtrain.train.grpo import (
    completion_mask,
    dr_grpo_loss,
    first_error_advantages,
    group_advantages,
    gspo_loss,
    informative_rows,
    rl_flops,
    rloo_advantages,
    suffix_nll,
    token_logprobs,
    zero_variance_fraction,
)


def test_group_advantages_mean_only_by_hand():
    rewards = torch.tensor([1.0, 0.0, 0.0, 1.0, 0.5, 0.5, 0.5, 0.5, 1.0, 1.0, 1.0, 0.0])  # B=3 groups of G=4
    adv = group_advantages(rewards, 4, "none")
    # group means 0.5, 0.5, 0.75 → R − mean, no std division
    expected = torch.tensor([0.5, -0.5, -0.5, 0.5, 0.0, 0.0, 0.0, 0.0, 0.25, 0.25, 0.25, -0.75])
    assert torch.allclose(adv, expected)
    assert abs(adv.view(3, 4).sum(1)).max() < 1e-7  # each group sums to zero


def test_group_and_batch_scaling_by_hand():
    rewards = torch.tensor([1.0, 0.0, 0.0, 1.0])
    std = math.sqrt((4 * 0.25) / 3)  # unbiased std of [1, 0, 0, 1]
    assert torch.allclose(group_advantages(rewards, 4, "group"), torch.tensor([0.5, -0.5, -0.5, 0.5]) / (std + 1e-4))
    r2 = torch.tensor([1.0, 0.0, 3.0, 3.0])  # groups of 2: means 0.5, 3
    batch_std = float(r2.std())
    assert torch.allclose(group_advantages(r2, 2, "batch"), torch.tensor([0.5, -0.5, 0.0, 0.0]) / (batch_std + 1e-4))
    with pytest.raises(ValueError):
        group_advantages(torch.zeros(5), 2)


def test_zero_variance_fraction():
    rewards = torch.tensor([1.0, 1.0, 0.0, 1.0, 0.0, 0.0, 0.3, 0.3])
    assert zero_variance_fraction(rewards, 2) == 0.75  # groups [1,1], [0,0], [0.3,0.3] have no variance
    assert zero_variance_fraction(rewards, 4) == 0.0


def test_dr_grpo_loss_hand_computed_with_clipping():
    # N=2 completions, T=3 tokens, L_max=4 (budget larger than T: the normaliser is the constant, not the length)
    logp = torch.log(torch.tensor([[0.5, 0.5, 0.5], [0.2, 0.9, 0.5]]))
    old = torch.log(torch.tensor([[0.25, 0.5, 0.5], [0.4, 0.6, 0.5]]))
    adv = torch.tensor([1.0, -2.0])
    mask = torch.tensor([[1, 1, 0], [1, 1, 1]])
    # ratios: [[2, 1, 1], [0.5, 1.5, 1]]
    # row 0 (A=+1): min(2·1, 1.2·1)=1.2; min(1,1)=1; masked → surrogate 2.2
    # row 1 (A=−2): min(0.5·−2, 0.8·−2)=−1.6; min(1.5·−2, 1.2·−2)=−3; min(−2,−2)=−2 → −6.6
    expected = -(2.2 + -6.6) / (2 * 4)
    got = dr_grpo_loss(logp, old, adv, mask, eps_low=0.2, eps_high=0.2, max_completion_len=4)
    assert got.item() == pytest.approx(expected, rel=1e-6)
    # the normaliser is the constant N·L_max: doubling L_max halves the loss, the mask length does not matter
    assert dr_grpo_loss(logp, old, adv, mask, 0.2, 0.2, 8).item() == pytest.approx(expected / 2, rel=1e-6)


def test_dr_grpo_loss_gradient_on_policy_is_advantage_weighted_logprob():
    # ratio = 1 (on-policy): ∇loss = −Σ A_i ∇logp_it / (N·L_max)
    logp = torch.tensor([[-1.0, -2.0], [-0.5, -0.1]], requires_grad=True)
    adv = torch.tensor([0.5, -0.5])
    mask = torch.tensor([[1, 1], [1, 0]])
    dr_grpo_loss(logp, logp.detach(), adv, mask, 0.2, 0.2, 5).backward()
    expected = -(adv[:, None] * mask) / (2 * 5)
    assert torch.allclose(logp.grad, expected)


def test_completion_mask_and_token_logprobs():
    ids = torch.tensor([[5, 6, 2, 7], [5, 5, 5, 5], [2, 9, 9, 9]])
    assert completion_mask(ids, 2).tolist() == [[1, 1, 1, 0], [1, 1, 1, 1], [1, 0, 0, 0]]
    logits = torch.zeros(1, 2, 4)
    logits[0, 0, 1] = math.log(3.0)  # probs [1,3,1,1]/6
    lp = token_logprobs(logits, torch.tensor([[1, 0]]))
    assert torch.allclose(lp, torch.log(torch.tensor([[0.5, 0.25]])))
    assert rl_flops(10, 3, 4) == 6 * 10 * 3 + 2 * 10 * 4


class _TinyPolicy(torch.nn.Module):
    """logits = embedding(context token) @ W: enough to test gradient bookkeeping."""

    def __init__(self, vocab=7, dim=5):
        super().__init__()
        torch.manual_seed(0)
        self.emb = torch.nn.Embedding(vocab, dim)
        self.out = torch.nn.Linear(dim, vocab)

    def logp(self, ids):  # [N, T] → [N, T-1]
        logits = self.out(self.emb(ids[:, :-1]))
        return token_logprobs(logits, ids[:, 1:])


def _batch():
    g = torch.Generator().manual_seed(1)
    ids = torch.randint(0, 7, (8, 6), generator=g)  # N=8 completions (B=2 prompts × G=4)
    mask = torch.ones(8, 5, dtype=torch.long)
    mask[1, 3:] = 0
    mask[6, 1:] = 0  # uneven lengths
    rewards = torch.tensor([1.0, 0.0, 1.0, 1.0, 0.0, 0.0, 1.0, 0.0])
    return ids, mask, group_advantages(rewards, 4)


def _update(micro_batches: int) -> dict[str, torch.Tensor]:
    """One SGD step over the batch split into ``micro_batches`` equal parts, TRL-style (loss / k per part)."""
    policy = _TinyPolicy()
    ids, mask, adv = _batch()
    with torch.no_grad():
        old = policy.logp(ids) + 0.05 * torch.arange(5.0)  # off-policy old logps so that clipping is active
    opt = torch.optim.SGD(policy.parameters(), lr=0.5)
    k = micro_batches
    n = ids.size(0) // k
    for i in range(k):
        sl = slice(i * n, (i + 1) * n)
        loss = dr_grpo_loss(policy.logp(ids[sl]), old[sl], adv[sl], mask[sl], 0.2, 0.28, 5) / k
        loss.backward()
    opt.step()
    return {name: p.detach().clone() for name, p in policy.named_parameters()}


def test_gradient_accumulation_invariance_2x4_vs_1x8():
    one = _update(1)
    two = _update(2)
    four = _update(4)
    for name in one:
        assert torch.allclose(one[name], two[name], atol=1e-6), name
        assert torch.allclose(one[name], four[name], atol=1e-6), name
    assert any(not torch.allclose(one[n], _TinyPolicy().state_dict()[n]) for n in one)  # the step moved weights


def test_micro_batch_losses_add_up_with_num_sequences():
    policy = _TinyPolicy()
    ids, mask, adv = _batch()
    with torch.no_grad():
        lp = policy.logp(ids)
    whole = dr_grpo_loss(lp, lp, adv, mask, 0.2, 0.2, 5)
    parts = sum(dr_grpo_loss(lp[s], lp[s], adv[s], mask[s], 0.2, 0.2, 5, num_sequences=8) for s in (slice(0, 4), slice(4, 8)))
    assert parts.item() == pytest.approx(whole.item(), abs=1e-7)


def test_informative_rows_keep_one_and_top_up_to_min_rows_in_order():
    adv = torch.tensor([0.0, 0.5, 0.0, 0.0, -0.5, 0.0])
    assert informative_rows(adv).tolist() == [1, 4]
    assert informative_rows(torch.zeros(4)).tolist() == [0]  # one row always runs a backward pass
    assert informative_rows(adv, min_rows=4).tolist() == [0, 1, 2, 4]  # as many rows as another rank forwards
    assert informative_rows(adv, min_rows=9).tolist() == [0, 1, 2, 3, 4, 5] and informative_rows(adv, min_rows=0).tolist() == [1, 4]
    assert informative_rows(torch.tensor([[0.0, 0.0], [0.0, 0.3], [0.0, 0.0]]), min_rows=2).tolist() == [0, 1]  # [N, T]


# -- process credit ------------------------------------------------------------------------------------------------
def test_first_error_advantages_by_hand():
    adv = torch.tensor([0.5, -0.25, -0.25, 0.0, 0.3, 0.2])
    err = torch.tensor([2, 1, -1, 3, -1, 0])  # token of the first wrong step; -1 = verified (no error)
    got = first_error_advantages(adv, err, 4)
    want = torch.tensor(
        [
            [0.5, 0.5, 0.0, 0.0],  # rewarded: credit only the tokens before its mistake
            [0.0, -0.25, -0.25, -0.25],  # failed: blame only the mistake and what follows
            [-0.25, -0.25, -0.25, -0.25],  # no error located: the sequence advantage
            [0.0, 0.0, 0.0, 0.0],
            [0.3, 0.3, 0.3, 0.3],
            [0.0, 0.0, 0.0, 0.0],  # rewarded although its first step was already wrong: no credit at all
        ]
    )
    assert torch.equal(got, want)
    assert informative_rows(got).tolist() == [0, 1, 2, 4]  # a row with Â_i ≠ 0 but no credited token is skipped too


def test_per_token_advantages_in_the_loss_equal_a_sum_of_masked_losses():
    """[N, T] advantages: each token weighted by its own Â_it (a constant row equals the [N] form)."""
    g = torch.Generator().manual_seed(0)
    lp, old = torch.randn(3, 4, generator=g), torch.randn(3, 4, generator=g) * 0.1
    mask = torch.ones(3, 4)
    adv = torch.tensor([0.5, -0.5, 0.25])
    assert dr_grpo_loss(lp, old, adv.unsqueeze(1).expand(3, 4), mask, max_completion_len=4).item() == pytest.approx(
        dr_grpo_loss(lp, old, adv, mask, max_completion_len=4).item()
    )
    per_token = first_error_advantages(adv, torch.tensor([2, 1, -1]), 4)
    keep = (per_token != 0).float()
    assert dr_grpo_loss(lp, old, per_token, mask, max_completion_len=4).item() == pytest.approx(
        dr_grpo_loss(lp, old, adv, mask * keep, max_completion_len=4).item()
    )


def test_rloo_advantages_by_hand():
    rewards = torch.tensor([1.0, 0.0, 0.0, 1.0, 1.0, 1.0, 1.0, 1.0])  # G=4
    # the first completion's baseline is the mean of the other three: (0 + 0 + 1) / 3
    expected = torch.tensor([1 - 1 / 3, 0 - 2 / 3, 0 - 2 / 3, 1 - 1 / 3, 0, 0, 0, 0])
    assert torch.allclose(rloo_advantages(rewards, 4), expected)
    assert torch.allclose(rloo_advantages(rewards, 4), group_advantages(rewards, 4) * 4 / 3)  # G/(G−1) × Dr. GRPO's
    with pytest.raises(ValueError):
        rloo_advantages(rewards, 1)


def test_gspo_loss_hand_computed():
    logp = torch.log(torch.tensor([[0.5, 0.5, 0.9], [0.2, 0.9, 0.5]]))
    old = torch.log(torch.tensor([[0.25, 0.5, 0.1], [0.4, 0.9, 0.5]]))
    mask = torch.tensor([[1, 1, 0], [1, 1, 1]])
    adv = torch.tensor([1.0, -2.0])
    s0 = math.exp((math.log(2.0) + 0.0) / 2)  # the masked third token does not count
    s1 = math.exp((math.log(0.5) + 0.0 + 0.0) / 3)
    # row 0 (A=+1): min(s0, clip(s0, 0.8, 1.2)) = 1.2; row 1 (A=−2): min(−2·s1, −2·clip(s1)) = −2·0.8
    expected = -(min(s0, 1.2) * 1.0 + min(-2 * s1, -2 * max(s1, 0.8))) / 2
    assert gspo_loss(logp, old, adv, mask, 0.2, 0.2).item() == pytest.approx(expected, rel=1e-6)
    # on-policy the ratio is 1 and the gradient is −A_i/(N·|o_i|) per valid token (length-normalised)
    lp = logp.clone().requires_grad_(True)
    gspo_loss(lp, lp.detach(), adv, mask).backward()
    lengths = mask.sum(1, keepdim=True)
    assert torch.allclose(lp.grad, -(adv[:, None] * mask) / (2 * lengths))


# -- RMT dual objective (loss.suffix_nll_weight) ------------------------------------------------------------------
def test_suffix_nll_by_hand():
    # Row 0: two suffix tokens with p = 1/2 and 1/4 → mean NLL (ln 2 + ln 4)/2; row 1: only its last token, p = 3/4.
    logits = torch.log(torch.tensor([[[0.5, 0.25, 0.25], [0.25, 0.25, 0.5]], [[0.1, 0.1, 0.8], [0.75, 0.125, 0.125]]]))  # [2, 2, 3]
    targets, mask = torch.tensor([[0, 1], [2, 0]]), torch.tensor([[1, 1], [0, 1]])
    row0, row1 = (math.log(2) + math.log(4)) / 2, -math.log(0.75)
    assert suffix_nll(logits, targets, mask).item() == pytest.approx((row0 + row1) / 2, rel=1e-6)  # rows weigh the same
    assert suffix_nll(logits, targets, torch.zeros(2, 2)).item() == 0.0
    lg = logits.clone().requires_grad_(True)  # the gradient of a row's mean NLL: (softmax − onehot)/|s| per token
    suffix_nll(lg, targets, mask).backward()
    want = (torch.softmax(logits, -1) - torch.nn.functional.one_hot(targets, 3)) * mask.unsqueeze(-1) / mask.sum(1).view(2, 1, 1) / 2
    assert torch.allclose(lg.grad, want, atol=1e-6)


# Suffix tasks with G = 2: completions that close their thought (then a continuation) and ones that never do; the
# references are each group's answer. Rewards (exact_match): [1, 0], [0, 0], [0, 0], [0, 1].
SUFFIX_GROUPS = [
    ("a=1.?a<think>", "3", ["1</think>3", "2</think>4"]),
    ("c=2.?c<think>", "22", ["5 5", "1 2 4"]),
    ("d=2.?d<think>", "4", ["</think>9", "7</think>"]),
    ("f=3.?f<think>", "5 1", ["9</think>3", "4</think>5 1"]),
]


def _hand_nll(model, tok, batch, refs, close) -> torch.Tensor:
    """Mean over rows of each true suffix's mean NLL after its prompt and its own thought, one unpadded row at a time."""
    drop = {tok.eos_token_id, tok.pad_token_id}
    total = torch.zeros(())
    for i, ref in enumerate(refs):
        prompt = batch["prompt_ids"][i][batch["prompt_mask"][i].bool()].tolist()
        comp = batch["completion_ids"][i][batch["completion_mask"][i].bool()].tolist()
        thought = comp[: comp.index(close) + 1] if close in comp else [t for t in comp if t not in drop] + [close]
        ids = prompt + thought + ref
        logp = torch.log_softmax(model(input_ids=torch.tensor([ids])).logits[0].float(), -1)  # [T, V]
        start = len(prompt) + len(thought) - 1  # position predicting ref[0]
        total = total - sum(logp[start + j, t] for j, t in enumerate(ref)) / len(ref)
    return total / len(refs)


@pytest.mark.usefixtures("one_thread")
def test_the_trainer_gradient_is_the_rl_gradient_plus_w_times_the_suffix_nll_gradient(make_rl_trainer):
    from rl_support import assert_same, loss_grads, scripted_batch, take_rows

    from midtrain.train.info_gain import close_token_id
    from midtrain.train.rl_config import LossConfig, RolloutConfig

    w = 0.7
    roll = RolloutConfig(num_generations=2, max_completion_length=6)
    trainer, tok = make_rl_trainer("exact_match", task="suffix", rollout=roll, loss=LossConfig(suffix_nll_weight=w))
    close = close_token_id(tok)
    trainer.extras.suffix_nll_weight, trainer.extras.close_id = w, close
    batch, scored = scripted_batch(trainer, tok, SUFFIX_GROUPS)
    assert scored.rewards[:, 0].tolist() == [1.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 1.0]  # two zero-variance groups
    refs = [tok(a, add_special_tokens=False)["input_ids"] for _, a, texts in SUFFIX_GROUPS for _ in texts]
    assert batch["suffix_mask"].sum(1).tolist() == [len(r) for r in refs]  # the true suffixes travel with their rows

    both = loss_grads(trainer, [batch])  # skip_zero_advantage on: the RL loss forwards 4 rows, the NLL all 8
    halves = loss_grads(trainer, [take_rows(batch, [0, 3, 4, 7]), take_rows(batch, [1, 2, 5, 6])])  # 2 × 4 accumulation
    trainer.extras.suffix_nll_weight = 0.0
    rl_only = loss_grads(trainer, [batch])
    trainer.model.zero_grad(set_to_none=True)
    _hand_nll(trainer.model, tok, batch, refs, close).backward()
    nll = [torch.zeros_like(p) if p.grad is None else p.grad.detach().clone() for p in trainer.model.parameters()]
    assert_same(both, [g + w * h for g, h in zip(rl_only, nll)], rel=1e-4)
    assert_same(halves, both, rel=1e-4)
    assert max(float(h.abs().max()) for h in nll) > 1e-6 and max(float(g.abs().max()) for g in rl_only) > 1e-6
