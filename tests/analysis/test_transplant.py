"""``midtrain analyze transplant`` (midtrain.analysis.transplant): D = C + s·(B − A) exactly on hand-made checkpoints,
scale 0 gives C bit for bit, a bf16 target's rounding is reported, shards and checkpoint files follow C, refusals
name the tensor, and the output is a checkpoint every stage loads."""

from __future__ import annotations

import json
import math
import shutil
from pathlib import Path

import pytest
import torch
from safetensors import safe_open
from safetensors.torch import load_file, save_file

from midtrain.analysis.transplant import TRANSPLANT_JSON, TransplantConfig, transplant, transplant_rows
from midtrain.cli import main
from midtrain.errors import ConfigError, DataError

SHAPES = {
    "model.embed_tokens.weight": (12, 4),
    "model.layers.0.self_attn.q_proj.weight": (4, 4),
    "model.layers.0.mlp.up_proj.weight": (8, 4),
    "model.layers.0.input_layernorm.weight": (4,),
    "model.layers.1.self_attn.o_proj.weight": (4, 4),
    "model.norm.weight": (4,),
    "lm_head.weight": (12, 4),
}
DEMO_BASE = Path(__file__).resolve().parents[2] / "src" / "midtrain" / "assets" / "demo-base"


def quarters(seed: int, dtype: torch.dtype = torch.float32) -> dict[str, torch.Tensor]:
    """Tensors of multiples of 1/4 in [-4, 4]: sums and differences of them are exact in fp32 and bf16."""
    g = torch.Generator().manual_seed(seed)
    return {k: (torch.randint(-16, 17, s, generator=g) / 4).to(dtype) for k, s in SHAPES.items()}


def save(path: Path, tensors: dict[str, torch.Tensor], config: dict | None = None) -> Path:
    path.mkdir(parents=True, exist_ok=True)
    save_file({k: v.contiguous() for k, v in tensors.items()}, str(path / "model.safetensors"))
    (path / "config.json").write_text(json.dumps(config or {"model_type": "llama"}))
    return path


def run(a, b, c, out, **kw) -> dict:
    res = transplant(TransplantConfig(start=str(a), tuned=str(b), target=str(c), out=str(out), **kw))
    return res.data


def weights(path: Path) -> dict[str, torch.Tensor]:
    out: dict[str, torch.Tensor] = {}
    for f in sorted(path.glob("*.safetensors")):
        out.update(load_file(str(f)))
    return out


def same_bits(x: torch.Tensor, y: torch.Tensor) -> bool:
    return x.dtype == y.dtype and x.shape == y.shape and torch.equal(x.reshape(-1).view(torch.uint8), y.reshape(-1).view(torch.uint8))


# -- values --------------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("chunk", [1 << 20, 5])
def test_d_is_c_plus_b_minus_a_exactly(tmp_path, chunk):
    A, B, C = quarters(0), quarters(1), quarters(2)
    B["model.norm.weight"] = A["model.norm.weight"].clone()  # an unchanged tensor
    a, b, c = save(tmp_path / "a", A), save(tmp_path / "b", B), save(tmp_path / "c", C)
    (c / "tokenizer.json").write_text("{}")
    (c / "log.jsonl").write_text("")  # not a checkpoint file: not copied
    data = run(a, b, c, tmp_path / "d", chunk_elements=chunk)
    D = weights(tmp_path / "d")
    assert set(D) == set(C)
    for k in SHAPES:
        assert torch.equal(D[k], C[k] + B[k] - A[k]), k
    delta = {k: (B[k] - A[k]).double() for k in SHAPES}
    assert data["delta_norm"] == pytest.approx(math.sqrt(sum(float((d * d).sum()) for d in delta.values())))
    assert data["realized_share"] == pytest.approx(1.0)  # fp32 holds every change exactly
    assert data["changed"] == sum(int((d != 0).sum()) for d in delta.values())
    assert data["per_tensor"]["model.norm.weight"]["changed"] == 0
    assert data["parameters"] == sum(math.prod(s) for s in SHAPES.values())
    assert data["per_layer"]["0"]["parameters"] == 16 + 32 + 4
    assert (tmp_path / "d" / "tokenizer.json").is_file() and (tmp_path / "d" / "config.json").is_file()
    assert not (tmp_path / "d" / "log.jsonl").exists() and data["copied"] == ["config.json", "tokenizer.json"]
    assert json.loads((tmp_path / "d" / TRANSPLANT_JSON).read_text())["changed"] == data["changed"]


def test_scale_moves_part_of_the_change_and_zero_gives_c_bit_for_bit(tmp_path):
    A, B = quarters(0), quarters(1)
    C = {k: torch.randn(s, generator=torch.Generator().manual_seed(3)) for k, s in SHAPES.items()}
    C["model.norm.weight"][0] = -0.0  # a negative zero survives
    C["model.layers.0.input_layernorm.weight"] = C["model.layers.0.input_layernorm.weight"].bfloat16()  # C's dtype is kept
    a, b, c = save(tmp_path / "a", A), save(tmp_path / "b", B), save(tmp_path / "c", C)
    run(a, b, c, tmp_path / "zero", scale=0.0, chunk_elements=3)
    D = weights(tmp_path / "zero")
    assert all(same_bits(D[k], C[k]) for k in SHAPES)
    half = run(a, b, c, tmp_path / "half", scale=0.5)
    D = weights(tmp_path / "half")
    k = "model.layers.0.mlp.up_proj.weight"
    assert torch.equal(D[k], (C[k].double() + 0.5 * (B[k] - A[k]).double()).float())
    assert D["model.layers.0.input_layernorm.weight"].dtype == torch.bfloat16
    full = run(a, b, c, tmp_path / "full")
    assert half["delta_norm"] == pytest.approx(full["delta_norm"] / 2)


def test_a_bf16_target_rounds_small_updates_away():
    c = torch.ones(4, 4, dtype=torch.bfloat16)  # bf16 spacing at 1.0 is 2**-7
    a = torch.zeros(4, 4)
    b = torch.full((4, 4), 1e-4)  # far below half a unit: every update is lost
    b[0, 0] = 0.5  # one survives
    d, stats = transplant_rows(a, b, c, 1.0)
    assert d.dtype == torch.bfloat16 and float(d[0, 0]) == 1.5 and stats.changed == 1
    summary = stats.summary()
    assert summary["realized_norm"] == pytest.approx(0.5) and summary["realized_share"] < 1.0
    assert summary["delta_norm"] == pytest.approx(math.sqrt(0.25 + 15 * 1e-8), rel=1e-6)


def test_sharded_target_keeps_its_shards_and_index(tmp_path):
    A, B, C = quarters(0), quarters(1), quarters(2)
    c = tmp_path / "c"
    c.mkdir()
    names = list(C)
    weight_map = {}
    for i, part in enumerate((names[::2], names[1::2])):
        fname = f"model-0000{i + 1}-of-00002.safetensors"
        save_file({k: C[k] for k in part}, str(c / fname))
        weight_map.update({k: fname for k in part})
    (c / "model.safetensors.index.json").write_text(json.dumps({"metadata": {}, "weight_map": weight_map}))
    (c / "config.json").write_text("{}")
    run(save(tmp_path / "a", A), save(tmp_path / "b", B), c, tmp_path / "d")
    out = tmp_path / "d"
    assert sorted(p.name for p in out.glob("*.safetensors")) == sorted(set(weight_map.values()))
    for fname in set(weight_map.values()):
        with safe_open(str(out / fname), framework="pt") as f:
            assert set(f.keys()) == {k for k, v in weight_map.items() if v == fname}
    assert json.loads((out / "model.safetensors.index.json").read_text())["weight_map"] == weight_map
    D = weights(out)
    assert all(torch.equal(D[k], C[k] + B[k] - A[k]) for k in SHAPES)


# -- refusals --------------------------------------------------------------------------------------------------------
def test_mismatches_are_refused_naming_the_tensor_before_any_output(tmp_path):
    A = quarters(0)
    a, c = save(tmp_path / "a", A), save(tmp_path / "c", quarters(2))
    missing = save(tmp_path / "missing", {k: v for k, v in A.items() if k != "model.layers.1.self_attn.o_proj.weight"})
    with pytest.raises(DataError, match=r"tensor 'model\.layers\.1\.self_attn\.o_proj\.weight'"):
        run(a, missing, c, tmp_path / "d")
    reshaped = save(tmp_path / "reshaped", {**A, "model.norm.weight": torch.zeros(5)})
    with pytest.raises(DataError, match=r"tensor 'model\.norm\.weight': shapes"):
        run(a, a, reshaped, tmp_path / "d")
    tied = save(tmp_path / "tied", {k: v for k, v in quarters(2).items() if k != "lm_head.weight"}, {"tie_word_embeddings": True})
    with pytest.raises(DataError, match=r"tensor 'lm_head\.weight': the target .* ties it"):
        run(a, a, tied, tmp_path / "d")
    file_target = tmp_path / "c" / "model.safetensors"
    with pytest.raises(DataError, match="not a checkpoint directory"):
        run(a, a, file_target, tmp_path / "d")
    (tmp_path / "noconf").mkdir()
    shutil.copy(file_target, tmp_path / "noconf")
    with pytest.raises(DataError, match="no config.json"):
        run(a, a, tmp_path / "noconf", tmp_path / "d")
    assert not (tmp_path / "d").exists()
    with pytest.raises(ConfigError, match=r"key 'out': .* holds the target checkpoint"):
        TransplantConfig(start=str(a), tuned=str(a), target=str(c), out=str(c)).check()
    with pytest.raises(ConfigError, match=r"key 'tuned'"):
        TransplantConfig(start=str(a), target=str(c), out=str(tmp_path / "d")).check()


def test_cli_error_is_one_line(tmp_path, capsys):
    A = quarters(0)
    a, c = save(tmp_path / "a", A), save(tmp_path / "c", quarters(2))
    b = save(tmp_path / "b", {**A, "model.layers.0.mlp.up_proj.weight": torch.zeros(4, 8)})
    capsys.readouterr()
    code = main(["analyze", "transplant", "--start", str(a), "--tuned", str(b), "--target", str(c), "--out", str(tmp_path / "d")])
    err = capsys.readouterr().err.strip()
    assert code == 2 and len(err.splitlines()) == 1 and "tensor 'model.layers.0.mlp.up_proj.weight'" in err


# -- a real checkpoint -----------------------------------------------------------------------------------------------
def test_output_is_a_loadable_checkpoint_and_the_run_is_cached(tmp_path, capsys):
    from midtrain.models.init import load_model

    tuned = tmp_path / "tuned"
    shutil.copytree(DEMO_BASE, tuned, ignore=shutil.ignore_patterns("*.jsonl", "COMPLETE", "midtrain.json", "config.yaml"))
    w = load_file(str(tuned / "model.safetensors"))
    k = next(n for n in w if n.endswith("q_proj.weight"))
    w[k] = w[k] + 0.25
    save_file(w, str(tuned / "model.safetensors"))
    argv = ["analyze", "transplant", "--start", str(DEMO_BASE), "--tuned", str(tuned), "--target", str(DEMO_BASE)]
    assert main([*argv, "--out", str(tmp_path / "d"), "--json"]) == 0
    res = json.loads(capsys.readouterr().out)
    assert "per_tensor" not in res and res["fraction_changed"] > 0
    model = load_model(tmp_path / "d")  # D = base + (tuned − base) = tuned
    assert torch.equal(dict(model.named_parameters())[k].detach(), w[k])
    assert main([*argv, "--out", str(tmp_path / "d"), "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["cached"] is True
