"""midtrain.train.weight_watch: the share of entries changed since the start, per group, in the bf16 and fp32 views
(exact counts on a toy model), and the refusal of replaced or emptied (sharded) parameters. The keys in a real RL
run's log.jsonl are checked in tests/train/test_subnetwork.py's run."""

from __future__ import annotations

import pytest
import torch

from midtrain.errors import ConfigError
from midtrain.train.weight_watch import WeightWatch, changed_entries, group_of


class Toy(torch.nn.Module):
    """Parameter names as a HF Llama has them: model.embed_tokens, model.layers.N, model.norm, lm_head."""

    def __init__(self) -> None:
        super().__init__()
        self.model = torch.nn.Module()
        self.model.embed_tokens = torch.nn.Embedding(8, 4)
        self.model.layers = torch.nn.ModuleList([torch.nn.Linear(4, 4, bias=False) for _ in range(2)])
        self.model.norm = torch.nn.LayerNorm(4)
        self.lm_head = torch.nn.Linear(4, 8, bias=False)


@pytest.mark.parametrize(
    "name, group",
    [
        ("model.embed_tokens.weight", "embed"),
        ("model.layers.0.self_attn.q_proj.weight", "layer.0"),
        ("model.layers.11.mlp.down_proj.weight", "layer.11"),
        ("model.layers.3.input_layernorm.weight", "layer.3"),
        ("model.norm.weight", "norm"),
        ("lm_head.weight", "lm_head"),
        ("transformer.h.2.attn.c_attn.weight", "layer.2"),
        ("transformer.wte.weight", "embed"),
        ("model.rotary_emb.inv_freq", "other"),
    ],
)
def test_group_of(name, group):
    assert group_of(name) == group


def test_the_bf16_view_misses_what_bf16_cannot_hold():
    p0 = torch.ones(4)
    p = torch.tensor([1.0, 1.0 + 1e-4, 1.5, 1.0])  # 1e-4 is far below half a bf16 unit at 1.0 (2**-8)
    assert changed_entries(p, p0.bfloat16(), "bf16") == 1
    assert changed_entries(p, p0.clone(), "fp32") == 2


def test_shares_per_group_and_view():
    m = Toy()
    with torch.no_grad():
        for p in m.parameters():
            p.fill_(1.0)
    watch = WeightWatch(m, ["bf16", "fp32"])
    with torch.no_grad():
        m.model.layers[0].weight[0, :3] += 0.5  # 3 of 16: seen in both views
        m.model.layers[0].weight[1, 0] += 1e-4  # 1 of 16: fp32 only
        m.lm_head.weight[0, 0] += 0.5  # 1 of 32
        m.model.norm.bias[2] += 1e-4  # 1 of the norm's 8: fp32 only
    s = watch.stats()
    assert s["changed_bf16/layer.0"] == 3 / 16 and s["changed_fp32/layer.0"] == 4 / 16
    assert s["changed_bf16/layer.1"] == s["changed_fp32/layer.1"] == 0.0
    assert s["changed_bf16/lm_head"] == s["changed_fp32/lm_head"] == 1 / 32
    assert s["changed_bf16/norm"] == 0.0 and s["changed_fp32/norm"] == 1 / 8
    total = sum(p.numel() for p in m.parameters())
    assert s["changed_bf16/all"] == 4 / total and s["changed_fp32/all"] == 6 / total
    groups = [k.split("/")[1] for k in s if k.startswith("changed_bf16/")]
    assert groups == ["embed", "layer.0", "layer.1", "norm", "lm_head", "all"]
    assert WeightWatch(m, ["bf16"]).stats()["changed_bf16/all"] == 0.0  # a new watch starts from the current weights


def test_replaced_or_emptied_parameters_are_refused():
    m = Toy()
    watch = WeightWatch(m, ["bf16"])
    watch.on_train_begin(None, None, None, model=m)  # whole: fine
    m.model.layers[1].weight = torch.nn.Parameter(torch.zeros(4, 4))  # FSDP replaces the parameters
    with pytest.raises(ConfigError, match=r"key 'weights\.watch': parameter 'model\.layers\.1\.weight' is sharded or replaced"):
        watch.on_train_begin(None, None, None, model=m)
    m = Toy()
    watch = WeightWatch(m, ["fp32"])
    m.lm_head.weight.data = torch.empty(0)  # ZeRO-3 empties them
    with pytest.raises(ConfigError, match=r"parameter 'lm_head\.weight'"):
        watch.on_train_begin(None, None, None, model=m)
