"""midtrain.analysis.diff: tensor names to module types and layers, the changed mask (absolute and relative
tau, the bf16 view), and the overlap measures between two updates (Jaccard, cosine)."""

from __future__ import annotations

import pytest
import torch

from midtrain.analysis.diff import changed_mask, cosine, jaccard, prepare
from midtrain.models.names import layer_index, module_type


# -- naming ----------------------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "name, kind, layer",
    [
        ("model.layers.3.self_attn.q_proj.weight", "attention", 3),
        ("model.layers.3.self_attn.k_proj.bias", "attention", 3),
        ("model.layers.12.mlp.gate_proj.weight", "mlp", 12),
        ("model.layers.0.input_layernorm.weight", "norms", 0),
        ("model.layers.0.self_attn.q_norm.weight", "norms", 0),
        ("model.norm.weight", "norms", None),
        ("model.embed_tokens.weight", "embeddings", None),
        ("lm_head.weight", "embeddings", None),
        ("transformer.h.5.attn.c_attn.weight", "attention", 5),
        ("transformer.h.5.ln_1.weight", "norms", 5),
        ("model.layers.1.block_sparse_moe.experts.0.w1.weight", "mlp", 1),
        ("model.rotary_emb.inv_freq", "other", None),
    ],
)
def test_module_type_and_layer(name, kind, layer):
    assert module_type(name) == kind
    assert layer_index(name) == layer


# -- pure functions --------------------------------------------------------------------------------------------
def test_changed_mask_tau_and_relative():
    w0 = torch.tensor([0.0, 0.0, 1.0, 10.0, -2.0])
    w1 = torch.tensor([2e-5, 5e-6, 1.5, 10.5, -2.0])
    assert changed_mask(w0, w1, 1e-5).tolist() == [True, False, True, True, False]
    assert changed_mask(w0, w1, 0.1, relative=True).tolist() == [True, True, True, False, False]
    # bf16 cast: 1 + 1e-4 rounds back to 1 in bf16 (ulp 2^-7) → unchanged after prepare
    a, b = torch.tensor([1.0]), torch.tensor([1.0 + 1e-4])
    assert changed_mask(a, b, 1e-5).item() and not changed_mask(prepare(a, True), prepare(b, True), 1e-5).item()


def test_jaccard_and_cosine():
    m1 = torch.tensor([1, 1, 0, 0, 1], dtype=torch.bool)
    m2 = torch.tensor([0, 1, 1, 0, 1], dtype=torch.bool)
    assert jaccard(m1, m2) == pytest.approx(2 / 4)
    assert jaccard(torch.zeros(3, dtype=torch.bool), torch.zeros(3, dtype=torch.bool)) == 1.0
    d1, d2 = torch.tensor([1.0, 0.0, 1.0]), torch.tensor([1.0, 1.0, 0.0])
    assert cosine(d1, d2) == pytest.approx(0.5)
    assert cosine(d1, -3 * d1) == pytest.approx(-1.0)
    assert cosine(d1, torch.zeros(3)) == 0.0
