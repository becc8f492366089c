"""midtrain.train.rl_packing and ``loss.pack_rows``: length-sorted, trimmed chunks give TRL's per-token log-probs,
and so its loss and gradient, on fewer padded positions.

The chunk plan and its inverse by hand; then through the real trainer on a scored batch of completions of 1 to 4
tokens under prompts of different lengths (rl_support.scripted_batch, old log-probs moved so that clipping binds):
the log-probs and entropies of every position, the loss and every parameter gradient with packing equal those
without it, for Dr. GRPO, GSPO and per-token (first_error) advantages, while the forwards cover fewer positions. A
model with learned absolute positions (GPT-2) is packed on its right padding only, and the test shows why: trimming
its left padding would change its log-probs.
"""

from __future__ import annotations

from types import SimpleNamespace

import pytest
import torch
from rl_support import assert_same, loss_grads, scripted_batch

from midtrain.train.grpo import first_error_advantages
from midtrain.train.rl_config import LossConfig, RolloutConfig
from midtrain.train.rl_packing import chunk_tokens, plan_chunks, scatter_back, shift_free

pytestmark = pytest.mark.usefixtures("one_thread")  # tiny models: one thread is faster and deterministic

ROLLOUT = RolloutConfig(num_generations=2, max_completion_length=6)
# Four groups of G = 2, prompts of 3 lengths, completions of 1 to 4 tokens (+ EOS); rewards [1, 0], [1, 1], [0, 0], [0, 1]
GROUPS = [
    ("a=1.b=a+2.?b", "3", ["3", "x 4"]),
    ("c=2.?c", "2", ["2", "2"]),
    ("d=22.e=d+1.?e", "3", ["5 5", "1 2 4"]),
    ("f=3.g=f+1.?g", "4", ["9", "1 4"]),
]


# -- the plan, by hand ---------------------------------------------------------------------------------------------
MASK = torch.tensor(
    [  # P = 3 prompt columns (left-padded) | T = 3 completion columns (right-padded)
        [0, 1, 1, 1, 1, 0],  # span [1, 5): 4
        [1, 1, 1, 1, 1, 1],  # span [0, 6): 6
        [0, 0, 1, 1, 0, 0],  # span [2, 4): 2
        [0, 1, 1, 0, 0, 0],  # no completion token (a masked truncation): span [1, 4), one completion column kept
    ]
)


def test_chunks_are_length_sorted_and_trimmed_to_their_rows():
    chunks = plan_chunks(MASK, completion_width=3, rows=2)
    assert [(c.rows.tolist(), c.start, c.end) for c in chunks] == [([1, 0], 0, 6), ([3, 2], 1, 4)]
    assert chunk_tokens(chunks) == 2 * 6 + 2 * 3 < MASK.numel()
    one = plan_chunks(MASK, completion_width=3, rows=1)  # one row per chunk: no padding but the kept minimum
    assert [(c.start, c.end) for c in one] == [(0, 6), (1, 5), (1, 4), (2, 4)]
    assert [(c.rows.tolist(), c.start, c.end) for c in plan_chunks(MASK, 3, rows=8)] == [([1, 0, 3, 2], 0, 6)]


def test_without_left_trimming_every_prompt_column_is_kept():
    chunks = plan_chunks(MASK, completion_width=3, rows=2, trim_left=False)
    assert [(c.rows.tolist(), c.start, c.end) for c in chunks] == [([1, 0], 0, 6), ([2, 3], 0, 4)]  # sorted by end
    with pytest.raises(ValueError, match="rows must be"):
        plan_chunks(MASK, 3, rows=0)


def test_scatter_back_restores_row_order_and_fills_zeros():
    chunks = plan_chunks(MASK, completion_width=3, rows=2)  # rows [1, 0] with 3 columns, rows [3, 2] with 1
    a = torch.tensor([[11.0, 12.0, 13.0], [1.0, 2.0, 3.0]], requires_grad=True)
    b = torch.tensor([[31.0], [21.0]], requires_grad=True)
    out = scatter_back(chunks, [a, b], width=3)
    assert out.tolist() == [[1, 2, 3], [11, 12, 13], [21, 0, 0], [31, 0, 0]]
    (out * torch.arange(1.0, 13.0).view(4, 3)).sum().backward()  # each value's gradient is its slot's weight
    assert a.grad.tolist() == [[4, 5, 6], [1, 2, 3]] and b.grad.tolist() == [[10], [7]]


def test_only_static_rotary_positions_are_shift_free():
    from transformers import GPT2Config, LlamaConfig

    assert shift_free(LlamaConfig())
    assert not shift_free(GPT2Config())  # learned absolute positions
    assert shift_free(SimpleNamespace(rope_parameters={"rope_type": "llama3", "factor": 8.0}))
    assert not shift_free(SimpleNamespace(rope_parameters={"rope_type": "dynamic", "factor": 2.0}))  # scaled by length
    per_layer = {"full_attention": {"rope_type": "default"}, "sliding_attention": {"rope_type": "linear"}}
    assert shift_free(SimpleNamespace(rope_parameters=per_layer))
    assert not shift_free(SimpleNamespace(rope_parameters={**per_layer, "x": {"rope_type": "longrope"}}))


# -- through the trainer -------------------------------------------------------------------------------------------
def forwarded(model) -> tuple[list[tuple[int, int]], object]:
    """Shapes of the input_ids of every forward of ``model`` from now on, and the hook's handle."""
    shapes: list[tuple[int, int]] = []
    handle = model.register_forward_pre_hook(lambda m, args, kw: shapes.append(tuple(kw["input_ids"].shape)), with_kwargs=True)
    return shapes, handle


def logps_of(trainer, batch: dict, pack_rows: int) -> tuple[torch.Tensor, torch.Tensor, list[tuple[int, int]]]:
    trainer.extras.pack_rows = pack_rows
    ids = torch.cat([batch["prompt_ids"], batch["completion_ids"]], dim=1)  # [N, P+T]
    attn = torch.cat([batch["prompt_mask"], batch["completion_mask"]], dim=1)  # [N, P+T]
    T = batch["completion_ids"].size(1)
    shapes, handle = forwarded(trainer.model)
    with torch.no_grad():
        logp, ent, _ = trainer._get_per_token_logps_and_entropies(trainer.model, ids, attn, T, compute_entropy=True)
    handle.remove()
    return logp, ent, shapes


@pytest.mark.parametrize("pack_rows", [1, 3])
def test_packed_log_probs_and_entropies_are_the_padded_ones(make_rl_trainer, pack_rows):
    trainer, tok = make_rl_trainer(rollout=ROLLOUT)
    batch, _ = scripted_batch(trainer, tok, GROUPS)
    want_lp, want_ent, want_shapes = logps_of(trainer, batch, 0)
    got_lp, got_ent, shapes = logps_of(trainer, batch, pack_rows)
    mask = batch["completion_mask"].bool()
    assert want_shapes == [(8, batch["prompt_ids"].size(1) + batch["completion_ids"].size(1))]  # TRL: one padded batch
    assert len(shapes) == -(-8 // pack_rows) and sum(r * w for r, w in shapes) < 8 * want_shapes[0][1]
    assert torch.allclose(got_lp, want_lp, rtol=1e-5, atol=1e-6) and torch.allclose(got_ent, want_ent, rtol=1e-5, atol=1e-6)
    assert (got_lp[~mask] == 0).all() and (got_ent[~mask] == 0).all()  # padding scores 0, as in TRL
    assert (want_lp[mask] < 0).all()


CASES = {
    "dr_grpo": (LossConfig(), False),
    "gspo": (LossConfig(type="gspo", epsilon_low=0.05, epsilon_high=0.1), False),
    "first_error": (LossConfig(), True),  # per-token advantages, as the trainer makes them under loss.credit first_error
}


@pytest.mark.parametrize("skip", [True, False], ids=["skip", "noskip"])
@pytest.mark.parametrize("case", sorted(CASES))
def test_packing_changes_neither_loss_nor_gradient(make_rl_trainer, case, skip):
    loss_cfg, per_token = CASES[case]
    trainer, tok = make_rl_trainer(rollout=ROLLOUT, loss=loss_cfg, extras={"skip_zero_advantage": skip})
    batch, _ = scripted_batch(trainer, tok, GROUPS)
    if per_token:  # a rewarded row credited before its token 1, failed rows blamed from tokens 1 and 2 (−1: verified)
        errors = torch.tensor([-1, 1, -1, -1, 0, -1, 2, 1])
        batch["advantages"] = first_error_advantages(batch["advantages"], errors, batch["completion_ids"].size(1))
    results = []
    for pack_rows in (0, 3):
        trainer.extras.pack_rows = pack_rows
        trainer.current_gradient_accumulation_steps = 1
        with torch.no_grad():
            loss = trainer.compute_loss(trainer.model, dict(batch)).item()
        entropy = trainer._metrics["train"]["entropy"][-1]
        shapes, handle = forwarded(trainer.model)
        grads = loss_grads(trainer, [batch])
        handle.remove()
        results.append((loss, entropy, grads, sum(r * w for r, w in shapes)))
    (loss0, ent0, grads0, tokens0), (loss1, ent1, grads1, tokens1) = results
    assert abs(loss0) > 1e-4 and loss1 == pytest.approx(loss0, rel=1e-5, abs=1e-8)
    assert ent1 == pytest.approx(ent0, rel=1e-5)
    assert_same(grads1, grads0)
    assert tokens1 < tokens0  # the packed forwards covered fewer positions


def test_absolute_positions_are_packed_on_the_right_only(make_rl_trainer, monkeypatch):
    """GPT-2 (learned positions): right-trimmed chunks give the padded log-probs; trimming the left too would not."""
    from transformers import GPT2Config, GPT2LMHeadModel
    from trl.trainer.utils import add_fused_lm_head

    from midtrain.train import rl_trainer

    trainer, tok = make_rl_trainer(rollout=ROLLOUT)
    batch, _ = scripted_batch(trainer, tok, GROUPS, stale=False)
    torch.manual_seed(0)
    ids = dict(bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id, pad_token_id=tok.pad_token_id)
    gpt2 = GPT2LMHeadModel(GPT2Config(vocab_size=len(tok), n_positions=64, n_embd=32, n_layer=1, n_head=2, **ids)).eval()
    add_fused_lm_head(gpt2, outputs=("log_probs", "entropy"))  # as the trainer patches its policy
    trainer.model = gpt2  # the hook scores the model it is given (the policy, or a reference model)
    want, _, _ = logps_of(trainer, batch, 0)
    got, _, shapes = logps_of(trainer, batch, 1)
    assert torch.allclose(got, want, rtol=1e-5, atol=1e-6)
    assert len({w for _, w in shapes}) > 1  # trimmed on the right: chunks of different widths
    monkeypatch.setattr(rl_trainer, "shift_free", lambda config: True)  # what trimming its left padding would do
    wrong, _, _ = logps_of(trainer, batch, 1)
    assert not torch.allclose(wrong, want, rtol=1e-3, atol=1e-4)
