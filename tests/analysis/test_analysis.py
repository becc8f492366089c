"""Tests of midtrain.analysis.weights: weight-change streaming (hand-built safetensors pairs, sharding, mismatches,
overlap, timeline, run dir) and linear CKA (estimators on hand-made features, collection on a tiny model)."""

from __future__ import annotations

import json
import math
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file

from midtrain.analysis.cka import CkaConfig, MinibatchCKA, cka, hsic1, linear_cka, minibatch_cka
from midtrain.analysis.diff import changed_mask, cosine, jaccard, layer_index, module_type, prepare
from midtrain.analysis.weights import WeightsConfig, analyze_weights, weights
from midtrain.cli import main
from midtrain.errors import ConfigError, DataError, MidtrainError

# -- helpers ---------------------------------------------------------------------------------------------------
NAMES = {
    "model.embed_tokens.weight": (32, 8),
    "model.layers.0.self_attn.q_proj.weight": (8, 8),
    "model.layers.0.mlp.up_proj.weight": (16, 8),
    "model.layers.0.input_layernorm.weight": (8,),
    "model.layers.1.self_attn.o_proj.weight": (8, 8),
    "model.layers.1.mlp.down_proj.weight": (8, 16),
    "model.norm.weight": (8,),
    "lm_head.weight": (32, 8),
}


def base_tensors(seed: int = 0) -> dict[str, torch.Tensor]:
    """Random fp32 tensors whose values are exactly representable in bf16."""
    g = torch.Generator().manual_seed(seed)
    return {k: torch.randn(*s, generator=g).bfloat16().float() for k, s in NAMES.items()}


def save(path: Path, tensors: dict[str, torch.Tensor], config: dict | None = None) -> Path:
    path.mkdir(parents=True, exist_ok=True)
    save_file({k: v.contiguous() for k, v in tensors.items()}, str(path / "model.safetensors"))
    if config is not None:
        (path / "config.json").write_text(json.dumps(config))
    return path


def save_sharded(path: Path, tensors: dict[str, torch.Tensor], shards: int) -> Path:
    path.mkdir(parents=True, exist_ok=True)
    names = list(tensors)
    weight_map = {}
    for s in range(shards):
        fname = f"model-{s + 1:05d}-of-{shards:05d}.safetensors"
        part = {k: tensors[k].contiguous() for k in names[s::shards]}
        save_file(part, str(path / fname))
        weight_map.update({k: fname for k in part})
    (path / "model.safetensors.index.json").write_text(json.dumps({"metadata": {}, "weight_map": weight_map}))
    return path


def change(tensors: dict[str, torch.Tensor], counts: dict[str, int], amount: float = 0.5, seed: int = 1):
    """A copy with exactly counts[name] entries of each tensor moved by ``amount``; returns (copy, masks)."""
    g = torch.Generator().manual_seed(seed)
    out, masks = {}, {}
    for k, v in tensors.items():
        flat = v.clone().flatten()
        idx = torch.randperm(flat.numel(), generator=g)[: counts.get(k, 0)]
        flat[idx] += amount
        mask = torch.zeros(flat.numel(), dtype=torch.bool)
        mask[idx] = True
        out[k], masks[k] = flat.view_as(v), mask.view_as(v)
    return out, masks


def run_weights(*paths, **kw) -> dict:
    return analyze_weights(WeightsConfig(checkpoints=[str(p) for p in paths], **kw))


COUNTS = {
    "model.embed_tokens.weight": 5,
    "model.layers.0.self_attn.q_proj.weight": 3,
    "model.layers.0.mlp.up_proj.weight": 0,
    "model.layers.0.input_layernorm.weight": 8,
    "model.layers.1.self_attn.o_proj.weight": 64,
    "model.layers.1.mlp.down_proj.weight": 1,
    "model.norm.weight": 2,
    "lm_head.weight": 7,
}


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


# -- weights: counts, bf16, tau --------------------------------------------------------------------------------
def test_exactly_k_changed_per_tensor_and_total(tmp_path):
    w0 = base_tensors()
    w1, _ = change(w0, COUNTS)
    # sub-ulp noise on every other entry: invisible after the bf16 cast, visible without it at a tiny tau
    noise = {k: v + 1e-7 * (torch.arange(v.numel()).view_as(v) % 2) for k, v in w1.items()}
    a, b = save(tmp_path / "a", w0), save(tmp_path / "b", noise)
    res = run_weights(a, b)
    per_tensor = res["comparisons"][0]["per_tensor"]
    for name, k in COUNTS.items():
        assert per_tensor[name]["changed"] == k, name
        assert per_tensor[name]["fraction_changed"] == pytest.approx(k / math.prod(NAMES[name]))
    total = sum(math.prod(s) for s in NAMES.values())
    assert res["changed"] == sum(COUNTS.values())
    assert res["parameters"] == total
    assert res["fraction_changed"] == pytest.approx(sum(COUNTS.values()) / total)
    assert res["per_layer"]["0"]["changed"] == 3 + 0 + 8
    assert res["per_layer"]["1"]["changed"] == 64 + 1
    assert res["per_module_type"]["embeddings"]["changed"] == 5 + 7
    assert res["per_module_type"]["norms"]["changed"] == 8 + 2
    assert res["per_layer_module_type"]["1"]["attention"]["fraction_changed"] == 1.0
    assert res["per_layer_module_type"]["none"]["norms"]["changed"] == 2
    # without the cast, the noise counts at tau below it, and not at the default tau
    raw = run_weights(a, b, bf16=False, tau=1e-8)
    assert raw["changed"] > res["changed"]
    assert run_weights(a, b, bf16=False)["changed"] == sum(COUNTS.values())
    # relative Frobenius norm of one tensor, by hand
    name = "model.layers.0.self_attn.q_proj.weight"
    assert per_tensor[name]["rel_frob"] == pytest.approx(math.sqrt(3 * 0.25) / float(w0[name].double().norm()), rel=1e-6)


def test_tau_and_relative_tau_respected(tmp_path):
    w0 = {"x.weight": torch.tensor([0.0, 0.0, 0.0, 1.0, 10.0])}
    w1 = {"x.weight": torch.tensor([2e-5, 5e-6, 0.0, 1.5, 10.5])}
    a, b = save(tmp_path / "a", w0), save(tmp_path / "b", w1)
    assert run_weights(a, b)["changed"] == 3  # 2e-5 (as bf16 ≈ 2.0027e-5), 0.5, 0.5
    assert run_weights(a, b, tau=1e-6)["changed"] == 4
    assert run_weights(a, b, tau=0.6)["changed"] == 0
    assert run_weights(a, b, tau=0.1, relative_tau=True)["changed"] == 3  # 10 → 10.5 is 5%: unchanged


def test_scalar_and_empty_tensors(tmp_path):
    w0 = {"logit_scale": torch.tensor(1.0), "empty.weight": torch.zeros(0, 4), "x.weight": torch.zeros(3)}
    w1 = {"logit_scale": torch.tensor(2.0), "empty.weight": torch.zeros(0, 4), "x.weight": torch.tensor([0.0, 1.0, 0.0])}
    res = run_weights(save(tmp_path / "a", w0), save(tmp_path / "b", w1))
    assert (res["changed"], res["parameters"]) == (2, 4)
    assert res["comparisons"][0]["per_tensor"]["empty.weight"]["fraction_changed"] == 0.0
    assert res["per_module_type"]["other"]["changed"] == 2


def test_chunk_size_does_not_change_results(tmp_path):
    w0 = base_tensors()
    w1, _ = change(w0, COUNTS)
    a, b = save(tmp_path / "a", w0), save(tmp_path / "b", w1)
    big, small = run_weights(a, b), run_weights(a, b, chunk_elements=7)  # slices of one row / 7 elements
    assert big["changed"] == small["changed"] == sum(COUNTS.values())
    for name in NAMES:
        t_big, t_small = big["comparisons"][0]["per_tensor"][name], small["comparisons"][0]["per_tensor"][name]
        assert t_big["changed"] == t_small["changed"]
        assert t_big["rel_frob"] == pytest.approx(t_small["rel_frob"], rel=1e-12)
    assert big["rel_frob"] == pytest.approx(small["rel_frob"], rel=1e-12)


def _tiny_llama(seed: int, arch: str = "llama"):
    from transformers import AutoModelForCausalLM

    from midtrain.models.init import model_config

    torch.manual_seed(seed)
    return AutoModelForCausalLM.from_config(model_config("nano", 64, arch))


def test_sharded_checkpoint_matches_unsharded(tmp_path):
    model = _tiny_llama(0)
    model.save_pretrained(tmp_path / "a1")
    model.save_pretrained(tmp_path / "a3", max_shard_size="150KB")
    with torch.no_grad():
        for i, p in enumerate(model.parameters()):
            if i % 2 == 0:
                p.view(-1)[: 17 * (i + 1)] += 0.01
    model.save_pretrained(tmp_path / "b1")
    model.save_pretrained(tmp_path / "b3", max_shard_size="150KB")
    assert (tmp_path / "a3" / "model.safetensors.index.json").is_file()
    assert len(list((tmp_path / "a3").glob("*.safetensors"))) >= 3
    one, many = run_weights(tmp_path / "a1", tmp_path / "b1"), run_weights(tmp_path / "a3", tmp_path / "b3")
    for key in ("changed", "parameters", "fraction_changed", "rel_frob", "per_layer", "per_module_type", "per_layer_module_type"):
        assert one[key] == many[key], key
    assert one["comparisons"][0]["per_tensor"] == many["comparisons"][0]["per_tensor"]
    assert one["changed"] > 0 and set(one["per_module_type"]) == {"attention", "mlp", "embeddings", "norms"}


# -- weights: errors -------------------------------------------------------------------------------------------
def test_mismatched_names_and_shapes_name_the_tensor(tmp_path):
    w0 = base_tensors()
    a = save(tmp_path / "a", w0)
    missing = save(tmp_path / "missing", {k: v for k, v in w0.items() if k != "model.layers.1.mlp.down_proj.weight"})
    with pytest.raises(DataError, match=r"tensor 'model\.layers\.1\.mlp\.down_proj\.weight'"):
        run_weights(a, missing)
    reshaped = save(tmp_path / "reshaped", {**w0, "model.norm.weight": torch.zeros(9)})
    with pytest.raises(DataError, match=r"tensor 'model\.norm\.weight': shapes \[8\]"):
        run_weights(a, reshaped)


def test_different_architectures_error_via_cli(tmp_path, capsys):
    _tiny_llama(0, "llama").save_pretrained(tmp_path / "llama")
    _tiny_llama(0, "qwen2").save_pretrained(tmp_path / "qwen")  # qwen2 has q/k/v biases
    capsys.readouterr()
    code = main(["analyze", "weights", str(tmp_path / "llama"), str(tmp_path / "qwen"), "--out", str(tmp_path / "run")])
    err = capsys.readouterr().err
    assert code == 2
    assert "checkpoints differ at tensor 'model.layers.0.self_attn.k_proj.bias'" in err
    assert len(err.strip().splitlines()) == 1
    assert not (tmp_path / "run").exists()  # bad input leaves no run dir behind


def test_tied_embeddings_alias(tmp_path):
    w0 = base_tensors()
    tied = {k: v for k, v in w0.items() if k != "lm_head.weight"}
    untied = {**w0, "lm_head.weight": w0["model.embed_tokens.weight"].clone()}
    untied["lm_head.weight"][0, :3] += 1.0
    a = save(tmp_path / "tied", tied, {"tie_word_embeddings": True})
    b = save(tmp_path / "untied", untied, {"tie_word_embeddings": False})
    res = run_weights(a, b)
    assert res["comparisons"][0]["per_tensor"]["lm_head.weight"]["changed"] == 3
    assert res["changed"] == 3
    c = save(tmp_path / "notie", tied, {"tie_word_embeddings": False})
    with pytest.raises(DataError, match=r"tensor 'lm_head\.weight'.*missing from .*notie"):
        run_weights(c, b)


def test_bad_checkpoint_dirs(tmp_path):
    w0 = base_tensors()
    sharded = save_sharded(tmp_path / "s", w0, 3)
    (sharded / "model-00002-of-00003.safetensors").unlink()
    with pytest.raises(DataError, match="model-00002-of-00003.safetensors"):
        run_weights(sharded, sharded)
    (tmp_path / "bin").mkdir()
    (tmp_path / "bin" / "pytorch_model.bin").write_bytes(b"x")
    with pytest.raises(DataError, match="no safetensors"):
        run_weights(tmp_path / "bin", tmp_path / "bin")
    with pytest.raises(ConfigError, match="checkpoints"):
        WeightsConfig(checkpoints=["x"]).check()
    with pytest.raises(ConfigError, match="compare"):
        WeightsConfig(checkpoints=["a", "b", "c"], compare=["d", "e"]).check()


# -- weights: overlap and timeline -----------------------------------------------------------------------------
def test_compare_two_updates_jaccard_and_cosine(tmp_path):
    base = {"model.layers.0.mlp.up_proj.weight": torch.zeros(4, 5)}
    d1 = torch.zeros(20)
    d2 = torch.zeros(20)
    d1[[0, 1, 2, 3, 4, 5]] = 1.0  # |m1| = 6
    d2[[4, 5, 6, 7]] = torch.tensor([1.0, 1.0, 2.0, 2.0])  # |m2| = 4, |m1 ∧ m2| = 2, |m1 ∨ m2| = 8
    a = save(tmp_path / "a", base)
    b = save(tmp_path / "b", {"model.layers.0.mlp.up_proj.weight": d1.view(4, 5)})
    c = save(tmp_path / "c", {"model.layers.0.mlp.up_proj.weight": torch.ones(4, 5)})
    d = save(tmp_path / "d", {"model.layers.0.mlp.up_proj.weight": (1 + d2).view(4, 5)})
    res = analyze_weights(WeightsConfig(checkpoints=[str(a), str(b)], compare=[str(c), str(d)]))
    assert res["kind"] == "compare"
    o = res["overlaps"][0]
    assert (o["intersection"], o["union"]) == (2, 8)
    assert o["jaccard"] == pytest.approx(0.25) == pytest.approx(jaccard(d1 != 0, d2 != 0))
    assert o["cosine"] == pytest.approx(cosine(d1, d2)) and o["cosine"] == pytest.approx(2 / (math.sqrt(6) * math.sqrt(10)))
    p1, p2 = 6 / 20, 4 / 20
    assert o["jaccard_random"] == pytest.approx(p1 * p2 / (p1 + p2 - p1 * p2))
    assert o["per_layer"]["0"]["jaccard"] == pytest.approx(0.25)
    assert [c["fraction_changed"] for c in res["comparisons"]] == [pytest.approx(0.3), pytest.approx(0.2)]


def test_timeline(tmp_path):
    name = "model.layers.0.self_attn.v_proj.weight"
    c = [torch.zeros(10) for _ in range(4)]
    c[1][[0, 1, 2, 3]] = 1.0  # update 1 touches 0-3
    c[2] = c[1].clone()
    c[2][[2, 3, 4]] += 1.0  # update 2 touches 2-4 (∩ 2, ∪ 5)
    c[3] = c[2].clone()
    c[3][[9]] += 1.0  # update 3 touches 9 (∩ 0 with update 2)
    paths = [save(tmp_path / f"c{i}", {name: t.view(2, 5)}) for i, t in enumerate(c)]
    res = run_weights(*paths)
    assert res["kind"] == "timeline"
    steps = res["timeline"]
    assert [s["fraction_changed_successive"] for s in steps] == pytest.approx([0.4, 0.3, 0.1])
    assert [s["fraction_changed_from_first"] for s in steps] == pytest.approx([0.4, 0.5, 0.6])
    assert [s["jaccard_with_next"] for s in steps] == [pytest.approx(2 / 5), pytest.approx(0.0), None]
    assert res["fraction_changed"] == pytest.approx(0.6)  # primary comparison: c0 → c3
    assert res["first_step_share"] == pytest.approx(0.4 / 0.6)


def test_cli_json_run_dir_plots_and_cache(tmp_path, capsys):
    w0 = base_tensors()
    w1, _ = change(w0, COUNTS)
    a, b = save(tmp_path / "a", w0), save(tmp_path / "b", w1)
    out = tmp_path / "run"
    assert main(["analyze", "weights", str(a), str(b), "--out", str(out), "--json"]) == 0
    summary = json.loads(capsys.readouterr().out)
    assert summary["fraction_changed"] == pytest.approx(sum(COUNTS.values()) / sum(math.prod(s) for s in NAMES.values()))
    assert {"per_layer", "per_module_type", "per_layer_module_type"} <= set(summary)
    assert "per_tensor" not in json.dumps(summary)
    full = json.loads((out / "weights.json").read_text())
    assert set(full["comparisons"][0]["per_tensor"]) == set(NAMES)
    assert (out / "weights_heatmap.png").stat().st_size > 1000 and (out / "COMPLETE").is_file()
    res = weights(WeightsConfig(checkpoints=[str(a), str(b)], out=str(out)))
    assert res.cached and res.data["changed"] == sum(COUNTS.values())
    assert "fraction changed" in res.summary()


def test_timeline_plot_written(tmp_path):
    w = base_tensors()
    paths = [save(tmp_path / "c0", w)]
    for i in range(1, 3):
        w, _ = change(w, {k: i for k in NAMES}, seed=i)
        paths.append(save(tmp_path / f"c{i}", w))
    res = weights(WeightsConfig(checkpoints=[str(p) for p in paths], out=str(tmp_path / "run")))
    assert (tmp_path / "run" / "weights_timeline.png").is_file() and (tmp_path / "run" / "weights_heatmap.png").is_file()
    assert "step 2" in res.summary()


def test_one_cka_plot_for_analysis_and_report(tmp_path):
    """plot_cka draws what analyze cka writes and what the report finds (partial results included), at one DPI."""
    from midtrain.analysis.plots import cka_curves, plot_cka
    from midtrain.plots import DPI

    data = {
        "per_layer": [1.0, 0.9],
        "pooling": "mean",
        "estimator": "full",
        "probes": {"a": {"rows": 8, "per_layer": [1.0, 0.8]}, "b": {"rows": 6, "per_layer": [1.0, None]}},
    }
    assert list(cka_curves(data)) == ["mean over probes", "a (n=8)", "b (n=6)"]
    assert list(cka_curves({"per_layer": [1.0], "probes": {"a": {"per_layer": [1.0]}}})) == ["a"]  # one probe: no mean
    assert list(cka_curves({"per_layer": [1.0, 0.5]})) == ["mean over probes"]  # an older result without probes
    assert plot_cka({"min_cka": 1.0}, tmp_path / "none.png") is None and not (tmp_path / "none.png").exists()
    png = plot_cka(data, tmp_path / "c.png", title="run")
    head = png.read_bytes()
    assert head[:8] == b"\x89PNG\r\n\x1a\n"
    phys = head.index(b"pHYs") + 4  # pixels per metre, x then y
    assert round(int.from_bytes(head[phys : phys + 4], "big") * 0.0254) == DPI
    assert [p.name for p in tmp_path.iterdir()] == ["c.png"]  # written atomically: no temporary file left


# -- CKA estimators --------------------------------------------------------------------------------------------
def _features(n: int, d1: int, d2: int, noise: float, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, d1, generator=g, dtype=torch.float64) @ torch.diag(torch.linspace(0.5, 2.0, d1, dtype=torch.float64))
    y = x @ torch.randn(d1, d2, generator=g, dtype=torch.float64) + noise * torch.randn(n, d2, generator=g, dtype=torch.float64)
    return x, y


@pytest.mark.parametrize("n", [10, 300])  # Gram route (n < d1 + d2) and feature route
def test_cka_self_orthogonal_and_scaling_invariance(n):
    x, y = _features(n, 12, 9, 1.0)
    q, _ = torch.linalg.qr(torch.randn(12, 12, generator=torch.Generator().manual_seed(3), dtype=torch.float64))
    base = linear_cka(x, y)
    assert linear_cka(x, x) == pytest.approx(1.0, abs=1e-12)
    assert linear_cka(x @ q, y) == pytest.approx(base, abs=1e-10)
    assert linear_cka(3.7 * x, 0.2 * y) == pytest.approx(base, abs=1e-10)
    assert linear_cka(x + 5.0, y) == pytest.approx(base, abs=1e-10)  # column centring
    assert 0.0 < base < 1.0
    if n >= 8:
        assert minibatch_cka(x, x, batch_size=max(n // 3, 4)) == pytest.approx(1.0, abs=1e-12)
        mb = minibatch_cka(x, y, batch_size=max(n // 3, 4))
        assert minibatch_cka(2.5 * (x @ q) + 1.0, y, batch_size=max(n // 3, 4)) == pytest.approx(mb, abs=1e-9)


def test_cka_analytic_cases():
    # orthogonal centred columns with equal norms; Y = the first k of d columns → CKA = sqrt(k / d)
    h = torch.linalg.qr(torch.randn(64, 64, generator=torch.Generator().manual_seed(0), dtype=torch.float64))[0]
    basis = h[:, 1:9] - h[:, 1:9].mean(0)  # 8 columns, re-centred
    basis = torch.linalg.qr(basis)[0] * 3.0  # orthonormal centred columns, norm 3
    for k in (1, 2, 4, 8):
        assert linear_cka(basis, basis[:, :k]) == pytest.approx(math.sqrt(k / 8), abs=1e-10)
    # one feature each: CKA = squared Pearson correlation
    x, y = _features(50, 1, 1, 0.7, seed=4)
    r = torch.corrcoef(torch.stack([x[:, 0], y[:, 0]]))[0, 1].item()
    assert linear_cka(x, y) == pytest.approx(r * r, abs=1e-12)


def test_minibatch_estimator_agrees_with_full():
    x, y = _features(4096, 16, 12, 2.0, seed=1)
    full = linear_cka(x, y)
    mb = minibatch_cka(x, y, batch_size=256, seed=0)
    assert abs(full - mb) < 0.02, (full, mb)
    acc = MinibatchCKA()  # streaming use: the same batches in order give the same value
    order = torch.randperm(4096, generator=torch.Generator().manual_seed(0))
    for s in range(0, 4096, 256):
        acc.update(x[order[s : s + 256]], y[order[s : s + 256]])
    assert acc.value() == pytest.approx(mb, abs=1e-12) and acc.batches == 16


def test_minibatch_estimator_is_unbiased_for_independent_features():
    g = torch.Generator().manual_seed(5)
    x, y = torch.randn(2048, 64, generator=g), torch.randn(2048, 64, generator=g)
    assert linear_cka(x, y) > 0.02  # the full estimator's small-sample bias (≈ d/n)
    assert abs(minibatch_cka(x, y, batch_size=128)) < 0.01


def test_hsic1_formula_on_small_case():
    # brute-force U-statistic: HSIC₁ equals the mean over distinct (i, j, q, r) of the symmetrised h-function
    import itertools

    x, y = _features(6, 2, 2, 0.5, seed=2)
    k, l = x @ x.T, y @ y.T
    n = 6
    total = 0.0
    for i, j, q, r in itertools.permutations(range(n), 4):
        total += k[i, j] * l[i, j] + k[i, j] * l[q, r] - 2 * k[i, j] * l[i, q]
    assert hsic1(k, l) == pytest.approx(float(total) / (n * (n - 1) * (n - 2) * (n - 3)), rel=1e-10)


# -- CKA end to end on a tiny model ----------------------------------------------------------------------------
@pytest.fixture(scope="module")
def tiny_pair(tmp_path_factory):
    from midtrain.models.init import model_config
    from midtrain.models.tokenizer import TokenizerConfig, train_tokenizer

    root = tmp_path_factory.mktemp("cka")
    texts = [f"Sample {i}: the quick brown fox jumps over {i * 7} lazy dogs, then rests." for i in range(24)]
    corpus = root / "probe.jsonl"
    corpus.write_text("".join(json.dumps({"text": t}) + "\n" for t in texts))
    math_probe = root / "math.jsonl"
    math_probe.write_text("".join(json.dumps({"problem": f"What is {i} + {i * 3}?"}) + "\n" for i in range(12)))
    train_tokenizer(TokenizerConfig(corpus=[str(corpus)], out=str(root / "tok"), kind="char"))
    from transformers import AutoModelForCausalLM

    from midtrain.models.tokenizer import load_tokenizer

    tok = load_tokenizer(root / "tok")
    torch.manual_seed(0)
    model = AutoModelForCausalLM.from_config(model_config("nano", len(tok), pad_token_id=tok.pad_token_id))
    model.save_pretrained(root / "a")
    tok.save_pretrained(root / "a")
    with torch.no_grad():
        for p in model.parameters():
            p.add_(0.05 * torch.randn_like(p))
    model.save_pretrained(root / "b")
    tok.save_pretrained(root / "b")
    return root


def test_cka_same_model_is_one_and_run_dir(tiny_pair, capsys):
    root = tiny_pair
    out = root / "run"
    code = main(
        [
            "analyze",
            "cka",
            str(root / "a"),
            str(root / "a"),
            "--probe",
            str(root / "probe.jsonl"),
            str(root / "math.jsonl"),
            "--max-examples",
            "12",
            "--max-length",
            "32",
            "--batch-size",
            "4",
            "--out",
            str(out),
            "--json",
        ]
    )
    assert code == 0
    summary = json.loads(capsys.readouterr().out)
    assert summary["layers"] == 5  # embeddings + 4 blocks of the nano preset
    for probe in summary["probes"].values():
        assert probe["rows"] == 12
        assert all(v == pytest.approx(1.0, abs=1e-6) for v in probe["per_layer"])
    assert (out / "cka.json").is_file() and (out / "cka_per_layer.png").stat().st_size > 1000


def test_cka_perturbed_model_token_pooling_and_minibatch(tiny_pair):
    root = tiny_pair
    common = dict(a=str(root / "a"), b=str(root / "b"), probe=[str(root / "probe.jsonl")], max_examples=16, max_length=32, batch_size=8)
    seq = cka(CkaConfig(**common))
    values = next(iter(seq.data["probes"].values()))["per_layer"]
    assert all(0.0 < v < 1.0 + 1e-9 for v in values) and values[0] > 0.5
    tok = cka(CkaConfig(**common, pooling="token", max_tokens_per_sequence=8, estimator="minibatch", minibatch_size=32))
    probe = next(iter(tok.data["probes"].values()))
    assert probe["rows"] == 16 * 8
    assert all(v is not None and v < 1.0 + 1e-9 for v in probe["per_layer"])
    assert "layer" in tok.summary()


def test_cka_synthetic_probe(tiny_pair):
    pytest.importorskip("midtrain.synth.world")
    res = cka(CkaConfig(a=str(tiny_pair / "a"), b=str(tiny_pair / "b"), probe=["synthetic:6"], max_length=48))
    probe = res.data["probes"]["synthetic"]
    assert probe["examples"] == 6 and probe["rows"] == 6 and len(probe["per_layer"]) == 5


def test_cka_errors(tiny_pair, monkeypatch):
    root = tiny_pair
    monkeypatch.setitem(sys.modules, "midtrain.synth", None)  # as if the module were not there
    with pytest.raises(MidtrainError, match="synthetic:5.*midtrain.synth"):
        cka(CkaConfig(a=str(root / "a"), b=str(root / "a"), probe=["synthetic:5"]))
    with pytest.raises(ConfigError, match="probe"):
        CkaConfig(a="x", b="y", probe=["synthetic:zero"]).check()
    with pytest.raises(DataError, match="none of the text fields"):
        cka(CkaConfig(a=str(root / "a"), b=str(root / "a"), probe=[str(root / "math.jsonl")], text_fields=["body"], out=str(root / "bad")))
    assert not (root / "bad").exists()
