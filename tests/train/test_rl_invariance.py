"""The RL update does not depend on how its batch is split or assembled, through the real trainer (issue 28 item 5).

Dr. GRPO's loss is Σ_i Σ_t surrogate_it / (N·L_max) with N the completions of the step, a constant. The normaliser
bugs RL libraries keep shipping (TRL #6024 is one) make it depend on the micro-batch, the rank, the rows a speed-up
skips or the rows a refill brought in. Each test takes a batch scored by MidtrainGRPOTrainer itself (TRL's
``_generate_and_score_completions`` on scripted completions of different lengths; informative and zero-variance
groups; old log-probs moved so that clipping binds both ways) and compares the parameter gradients of
``trainer.compute_loss(...).backward()``, summed over micro-batches as TRL's loop sums them, to rounding:

- 1 × 8 against 2 × 4 gradient accumulation (shuffled halves, and halves of which one holds no informative row);
- the zero-advantage skip on and off;
- a refilled batch (rows of two differently padded rounds plus a zero-variance top-up) against the same rows scored
  in one batch;
- a zero-variance group: exactly zero gradient, and the batch without it at the same normaliser;
- 2 gloo ranks × 4 (gradients all-reduced and averaged, as DDP does) against 1 × 8 (slow);

and the two other objectives against their pure functions in :mod:`midtrain.train.grpo`: GSPO's loss and gradient
through the trainer are ``gspo_loss``'s, RLOO's advantages are ``rloo_advantages`` = G/(G−1) × the group-mean ones.
"""

from __future__ import annotations

import pytest
import torch
from rl_support import SCRIPT, assert_same, launch_two, loss_grads, policy_logps, scripted_batch, take_rows

from midtrain.train.grpo import group_advantages, gspo_loss, rloo_advantages
from midtrain.train.refill import RefillPlan, group_informative
from midtrain.train.rl_config import LossConfig, RolloutConfig

pytestmark = pytest.mark.usefixtures("one_thread")  # tiny models: one thread is faster and deterministic

G = 2
ROLLOUT = RolloutConfig(num_generations=G, max_completion_length=6)
# Four groups of G = 2 with completions of 1 to 4 tokens (+ EOS): rewards [1, 0], [1, 1], [0, 0], [0, 1]
INFORMATIVE_A = ("a=1.b=a+2.?b", "3", ["3", "x 4"])
SOLVED = ("c=2.?c", "2", ["2", "2"])
UNSOLVED = ("d=22.e=d+1.?e", "3", ["5 5", "1 2 4"])
INFORMATIVE_B = ("f=3.g=f+1.?g", "4", ["9", "1 4"])
GROUPS = [INFORMATIVE_A, SOLVED, UNSOLVED, INFORMATIVE_B]
ZERO_ROWS, INFORMATIVE_ROWS = [2, 3, 4, 5], [0, 1, 6, 7]


def fixed_batch(trainer, tok) -> dict:
    batch, scored = scripted_batch(trainer, tok, GROUPS)
    assert scored.rewards[:, 0].tolist() == [1.0, 0.0, 1.0, 1.0, 0.0, 0.0, 0.0, 1.0]
    assert batch["advantages"].tolist() == [0.5, -0.5, 0.0, 0.0, 0.0, 0.0, -0.5, 0.5]
    return batch


def test_the_fixed_batch_clips_both_ways(make_rl_trainer):
    """The batch every test here uses: ratios leave the clip range on both sides where the clipped term binds."""
    trainer, tok = make_rl_trainer(rollout=ROLLOUT)
    batch = fixed_batch(trainer, tok)
    with torch.no_grad():
        ratio = torch.exp(policy_logps(trainer.model, batch) - batch["old_per_token_logps"])  # [N, T]
    adv, mask = batch["advantages"].unsqueeze(1), batch["completion_mask"].bool()  # [N, 1], [N, T]
    assert ((ratio > 1.2) & (adv > 0) & mask).any() and ((ratio < 0.8) & (adv < 0) & mask).any()  # clipped: no gradient
    assert ((ratio < 0.8) & (adv > 0) & mask).any() and ((ratio > 1.2) & (adv < 0) & mask).any()  # beyond the clip, kept
    assert len(set(batch["completion_mask"].sum(1).tolist())) >= 3  # completions of several lengths


@pytest.mark.parametrize("skip", [True, False], ids=["skip", "noskip"])
@pytest.mark.parametrize("loss_type", ["dr_grpo", "gspo"])
def test_gradient_accumulation_1x8_equals_2x4(make_rl_trainer, loss_type, skip):
    trainer, tok = make_rl_trainer(rollout=ROLLOUT, loss=LossConfig(type=loss_type), extras={"skip_zero_advantage": skip})
    batch = fixed_batch(trainer, tok)
    one = loss_grads(trainer, [batch])
    shuffled = torch.randperm(8, generator=torch.Generator().manual_seed(0)).tolist()  # TRL shuffles before it splits
    for order in (shuffled, INFORMATIVE_ROWS + ZERO_ROWS):  # the second: one micro-batch without an informative row
        two = loss_grads(trainer, [take_rows(batch, order[:4]), take_rows(batch, order[4:])])
        assert_same(two, one)


@pytest.mark.parametrize("loss_type", ["dr_grpo", "gspo"])
def test_the_zero_advantage_skip_changes_no_gradient(make_rl_trainer, loss_type):
    trainer, tok = make_rl_trainer(rollout=ROLLOUT, loss=LossConfig(type=loss_type))
    batch = fixed_batch(trainer, tok)
    for split in ([batch], [take_rows(batch, ZERO_ROWS), take_rows(batch, INFORMATIVE_ROWS)]):
        counted = []
        for skip in (False, True):
            trainer.extras.skip_zero_advantage = skip
            before = trainer.extras.counters.tokens_trained
            counted.append((loss_grads(trainer, split), trainer.extras.counters.tokens_trained - before))
        (off, tokens_off), (on, tokens_on) = counted
        assert_same(on, off)
        assert tokens_on < tokens_off  # the zero-variance rows were not forwarded


def test_a_zero_variance_group_contributes_exactly_zero(make_rl_trainer):
    trainer, tok = make_rl_trainer(rollout=ROLLOUT, extras={"skip_zero_advantage": False})  # forwarded, not skipped
    batch = fixed_batch(trainer, tok)
    zero = loss_grads(trainer, [take_rows(batch, ZERO_ROWS)])
    assert all(torch.count_nonzero(g) == 0 for g in zero)  # min(r·0, clip(r)·0) = 0 for every ratio: exactly 0
    # the batch without them at the same normaliser N·L_max (4 rows, accumulation 2: Σ/(4·L_max·2) = Σ/(8·L_max))
    assert_same(loss_grads(trainer, [take_rows(batch, INFORMATIVE_ROWS)], accumulation=2), loss_grads(trainer, [batch]))


def test_a_refilled_batch_trains_as_the_same_rows_given_directly(make_rl_trainer):
    """Round 1 (short prompts and completions) keeps one informative group; round 2 (the longest prompt and completion,
    in its zero-variance group) keeps one more; the cap then tops the step up with round 1's zero-variance group."""
    trainer, tok = make_rl_trainer(rollout=ROLLOUT)
    plan = RefillPlan(want=3, G=G)
    widths = []
    for groups in ([INFORMATIVE_A, SOLVED], [INFORMATIVE_B, UNSOLVED]):
        batch, scored = scripted_batch(trainer, tok, groups)
        assert plan.add(batch, group_informative(scored.rewards.nansum(dim=1), G, scored.failed)) == 1
        widths.append((batch["prompt_ids"].size(1), batch["completion_ids"].size(1)))
    merged, topped = plan.merge(tok.pad_token_id)
    direct, _ = scripted_batch(trainer, tok, [INFORMATIVE_A, INFORMATIVE_B, SOLVED])
    assert topped == 1 and widths[0][0] < widths[1][0] and widths[0][1] < widths[1][1]  # rounds padded differently
    assert merged["completion_ids"].size(1) > direct["completion_ids"].size(1)  # round 2's unused group was the widest
    assert merged["advantages"].tolist() == direct["advantages"].tolist() == [0.5, -0.5, -0.5, 0.5, 0.0, 0.0]
    assert merged["completion_mask"].sum(1).tolist() == direct["completion_mask"].sum(1).tolist()
    for skip in (True, False):
        trainer.extras.skip_zero_advantage = skip
        assert_same(loss_grads(trainer, [merged]), loss_grads(trainer, [direct]))


@pytest.mark.slow
def test_two_gloo_ranks_of_4_equal_one_process_of_8(make_rl_trainer, nano_model, tmp_path):
    """DDP's update: each rank's loss on its 4 rows, gradients all-reduced and averaged. In the second order rank 1
    holds only zero-variance groups (its skip forwards one row, and a backward pass still runs for the all-reduce)."""
    trainer, tok = make_rl_trainer(rollout=ROLLOUT)
    batch = fixed_batch(trainer, tok)
    orders = [list(range(8)), INFORMATIVE_ROWS + ZERO_ROWS]
    want = [loss_grads(trainer, [take_rows(batch, order)]) for order in orders]
    src, dst = tmp_path / "batch.pt", tmp_path / "grads.pt"
    torch.save({"batch": batch, "orders": orders, "per_rank": 4, "cfg": {"rollout": ROLLOUT}}, src)
    proc = launch_two([SCRIPT, "grads", str(nano_model), str(tmp_path / "w"), str(src), str(dst)])
    assert proc.returncode == 0, proc.stderr[-3000:]
    got = torch.load(dst, weights_only=False)
    assert got["world"] == 2 and len(got["grads"]) == len(orders)
    for g, w in zip(got["grads"], want):
        assert_same(g, w)


# -- GSPO and RLOO through the trainer ----------------------------------------------------------------------------
def test_gspo_through_the_trainer_is_gspo_loss(make_rl_trainer):
    """loss.type gspo: TRL's loss (sequence-level ratio, per-sequence mean) and its gradient equal grpo.gspo_loss's,
    with the zero-advantage skip on (its K/N rescaling is exact for a mean over sequences too)."""
    eps_low, eps_high = 0.05, 0.1
    trainer, tok = make_rl_trainer(rollout=ROLLOUT, loss=LossConfig(type="gspo", epsilon_low=eps_low, epsilon_high=eps_high))
    batch = fixed_batch(trainer, tok)
    trainer.current_gradient_accumulation_steps = 1
    with torch.no_grad():
        loss_trl = trainer.compute_loss(trainer.model, dict(batch))
    grads_trl = loss_grads(trainer, [batch])

    trainer.model.zero_grad(set_to_none=True)
    logp, old, mask = policy_logps(trainer.model, batch), batch["old_per_token_logps"], batch["completion_mask"]
    ours = gspo_loss(logp, old, batch["advantages"], mask, eps_low, eps_high)
    ours.backward()
    grads_ours = [torch.zeros_like(p) if p.grad is None else p.grad for p in trainer.model.parameters()]
    assert abs(ours.item()) > 1e-4 and loss_trl.item() == pytest.approx(ours.item(), rel=1e-5, abs=1e-8)
    assert_same(grads_trl, grads_ours)
    seq_ratio = torch.exp(((logp - old) * mask).sum(1) / mask.sum(1)).detach()  # [N]
    outside = (seq_ratio < 1 - eps_low) | (seq_ratio > 1 + eps_high)
    assert outside[batch["advantages"] != 0].any() and not outside[batch["advantages"] != 0].all()  # some clipped, some not


def test_rloo_advantages_through_the_trainer(make_rl_trainer):
    """baseline leave_one_out: the trainer's advantages are grpo.rloo_advantages, = G/(G−1) × Dr. GRPO's."""
    trainer, tok = make_rl_trainer(extras={"baseline": "leave_one_out"}, loss=LossConfig(baseline="leave_one_out"))  # G = 4
    groups = [("a=1.b=a+2.?b", "3", ["3", "x 4", "3", "9"]), ("f=3.g=f+1.?g", "4", ["9", "4", "1", "2"])]
    batch, scored = scripted_batch(trainer, tok, groups, stale=False)
    rewards = scored.rewards[:, 0]
    assert rewards.tolist() == [1.0, 0.0, 1.0, 0.0, 0.0, 1.0, 0.0, 0.0]
    assert torch.allclose(batch["advantages"], rloo_advantages(rewards, 4))
    assert torch.allclose(batch["advantages"], 4 / 3 * group_advantages(rewards, 4))
    assert batch["advantages"][:4].tolist() == pytest.approx([2 / 3, -2 / 3, 2 / 3, -2 / 3])  # 1 − mean of the other three
