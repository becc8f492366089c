"""``midtrain analyze weights`` (midtrain.analysis.weights): weight-change streaming on hand-built safetensors
pairs (exact counts, bf16, tau, sharding, mismatches, tied embeddings), overlap of two updates, the timeline,
and the run directory with its plots and cache."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file

from midtrain.analysis.diff import cosine, jaccard
from midtrain.analysis.weights import WeightsConfig, analyze_weights, weights
from midtrain.cli import main
from midtrain.errors import ConfigError, DataError

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
