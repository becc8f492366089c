"""midtrain.train.subnetwork: which entries train (mask, complement, random control), the refusals that name the
tensor, frozen entries bit-identical under AdamW with and without weight decay (and why the restore is needed),
and a 2-step ``midtrain rl`` run with a mask that freezes half of every tensor (plus ``weights.watch``'s keys)."""

from __future__ import annotations

import json

import pytest
import torch
from safetensors.torch import load_file, save_file

from midtrain.errors import ConfigError
from midtrain.train.instruments import RLWeightsConfig
from midtrain.train.rl_config import RL_OPTIM, RLConfig, RolloutConfig
from midtrain.train.subnetwork import MASK_FILE, Subnetwork, match, read_masks, trained_entries


class Toy(torch.nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.model = torch.nn.Module()
        self.model.embed_tokens = torch.nn.Embedding(8, 4)
        self.model.layers = torch.nn.ModuleList([torch.nn.Linear(4, 4) for _ in range(2)])
        self.model.norm = torch.nn.LayerNorm(4)
        self.lm_head = torch.nn.Linear(4, 8, bias=False)

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        h = self.model.embed_tokens(ids)  # [n, 4]
        for layer in self.model.layers:
            h = torch.tanh(layer(h))
        return self.lm_head(self.model.norm(h))  # [n, 8]


def checkerboard(shape) -> torch.Tensor:
    """Every other entry (row-major): half of any tensor."""
    n = torch.Size(shape).numel()
    return (torch.arange(n) % 2 == 0).reshape(shape)


def bits(x: torch.Tensor) -> torch.Tensor:
    return x.detach().contiguous().reshape(-1).view(torch.int32)


def test_controls_choose_the_trained_entries():
    g = torch.Generator().manual_seed(0)
    masks = {"a": torch.rand(200, 50, generator=g) < 0.2, "b": torch.rand(300, generator=g) < 0.7}
    assert trained_entries(masks, "mask", 0) is masks
    assert torch.equal(trained_entries(masks, "complement", 0)["a"], ~masks["a"])
    r1, r2, r3 = (trained_entries(masks, "random", s) for s in (7, 7, 8))
    assert all(torch.equal(r1[k], r2[k]) for k in masks) and not torch.equal(r1["a"], r3["a"])
    for k, m in masks.items():  # each tensor keeps its own density, at other entries
        assert float(r1[k].float().mean()) == pytest.approx(float(m.float().mean()), abs=0.05)
        assert not torch.equal(r1[k], m)


def test_mask_files_and_mismatches_are_refused_naming_the_tensor(tmp_path):
    m = Toy()
    masks = {n: torch.ones(p.shape, dtype=torch.bool) for n, p in m.named_parameters()}
    (tmp_path / "run").mkdir()
    save_file(masks, str(tmp_path / "run" / MASK_FILE))
    assert set(read_masks(tmp_path / "run")) == set(masks)  # a run directory: its mask.safetensors
    with pytest.raises(ConfigError, match=r"key 'weights\.mask': no mask file"):
        read_masks(tmp_path / "nothing")
    save_file({"x": torch.zeros(2)}, str(tmp_path / "f.safetensors"))
    with pytest.raises(ConfigError, match=r"tensor 'x' .* not a bool mask"):
        read_masks(tmp_path / "f.safetensors")
    with pytest.raises(ConfigError, match=r"the mask has no tensor 'model\.norm\.bias'"):
        match(m, {k: v for k, v in masks.items() if k != "model.norm.bias"})
    with pytest.raises(ConfigError, match=r"tensor 'extra\.weight', which is no trainable parameter"):
        match(m, {**masks, "extra.weight": torch.ones(2, dtype=torch.bool)})
    with pytest.raises(ConfigError, match=r"tensor 'lm_head\.weight' has shape \[3, 3\] in the mask, \[8, 4\] in the model"):
        match(m, {**masks, "lm_head.weight": torch.ones(3, 3, dtype=torch.bool)})
    with pytest.raises(ConfigError, match=r"key 'weights\.mask_control': random is a control of a mask"):
        RLConfig.from_dict({"model": "m", "data": ["d"], "out": "o", "weights": {"mask_control": "random"}})


@pytest.mark.parametrize("decay, restore, frozen_kept", [(0.0, False, True), (0.1, False, False), (0.1, True, True)])
def test_frozen_entries_stay_bit_identical_under_adamw(decay, restore, frozen_kept):
    """Zeroed gradients keep AdamW's update of a frozen entry exactly 0; weight decay still shrinks it unless the kept
    values are written back after each step."""
    torch.manual_seed(0)
    m = Toy()
    trained = {n: checkerboard(p.shape) for n, p in m.named_parameters()}
    before = {n: p.detach().clone() for n, p in m.named_parameters()}
    sub = Subnetwork(m, trained, restore=restore)
    opt = torch.optim.AdamW(m.parameters(), lr=1e-2, weight_decay=decay)
    for _ in range(3):
        opt.zero_grad()
        m(torch.randint(0, 8, (6,))).logsumexp(-1).mean().backward()
        torch.nn.utils.clip_grad_norm_(m.parameters(), 0.1)
        for n, p in m.named_parameters():
            assert not p.grad[~trained[n]].any(), n  # no gradient reaches a frozen entry
        opt.step()
        sub.on_optimizer_step(None, None, None)
    moved_frozen = 0
    for n, p in m.named_parameters():
        f = ~trained[n]
        moved_frozen += int((bits(p)[f.reshape(-1)] != bits(before[n])[f.reshape(-1)]).sum())
        assert (p.detach()[trained[n]] != before[n][trained[n]]).any(), n  # the subnetwork trains
    assert (moved_frozen == 0) == frozen_kept
    assert sub.stats()["subnetwork_share"] == pytest.approx(0.5, abs=0.02)


def test_two_step_rl_run_freezes_half_of_every_tensor(nano_model, rl_tasks, tmp_path, monkeypatch, one_thread):
    from midtrain.train import rewards
    from midtrain.train.rl import run

    # a reward that differs between completions, so that every group has advantages and the policy gets gradients
    monkeypatch.setattr(rewards, "math_reward", lambda completions, answer, **kw: [float(sum(map(ord, c)) % 5) for c in completions])
    initial = load_file(str(nano_model / "model.safetensors"))
    trained = {k: checkerboard(v.shape) for k, v in initial.items()}
    (tmp_path / "mask").mkdir()
    save_file(trained, str(tmp_path / "mask" / MASK_FILE))
    out = tmp_path / "rl"
    cfg = RLConfig(
        model=str(nano_model),
        data=[str(rl_tasks)],
        out=str(out),
        max_steps=2,
        per_device_batch_size=8,
        rollout=RolloutConfig(num_generations=4, max_completion_length=8),
        optim=RL_OPTIM.replace(lr=1e-3, weight_decay=0.1),
        save_every_steps=0,
        precision="fp32",
        weights=RLWeightsConfig(mask=str(tmp_path / "mask"), watch=["bf16", "fp32"]),
    )
    run(cfg)
    final = load_file(str(out / "model.safetensors"))
    big_moves = 0
    for k, w0 in initial.items():
        if k not in final:  # (a tied head is saved once)
            continue
        f = ~trained[k].reshape(-1)
        assert torch.equal(bits(final[k])[f], bits(w0)[f]), f"{k}: a frozen entry moved"
        delta = (final[k] - w0).reshape(-1)[~f]
        assert (delta != 0).any(), f"{k}: no trained entry moved"
        big_moves += int((delta.abs() > 5e-4).sum())  # beyond what weight decay alone does (≤ 2·lr·λ·|w|)
    assert big_moves > 0  # the gradient reached the subnetwork
    log = [json.loads(line) for line in (out / "log.jsonl").read_text().splitlines()]
    last = log[-1]
    assert last["subnetwork_share"] == pytest.approx(0.5, abs=0.01)
    assert 0 < last["changed_bf16/all"] <= last["changed_fp32/all"] <= last["subnetwork_share"] + 1e-6
    assert {"changed_fp32/embed", "changed_bf16/layer.0", "changed_fp32/norm"} <= set(last)
