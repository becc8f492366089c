"""``midtrain analyze mask`` (midtrain.analysis.mask): the bool masks of the entries changed between two hand-made
checkpoints, exactly, in the bf16 and the stored view, whatever the slice size; refusals before any output."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from safetensors import safe_open
from safetensors.torch import save_file

from midtrain.analysis.mask import MASK_FILE, MASK_JSON, MaskConfig, mask
from midtrain.errors import ConfigError, DataError

SHAPES = {"model.embed_tokens.weight": (10, 4), "model.layers.0.mlp.up_proj.weight": (6, 4), "model.norm.weight": (4,)}


def save(path: Path, tensors: dict[str, torch.Tensor]) -> Path:
    path.mkdir(parents=True, exist_ok=True)
    save_file({k: v.contiguous() for k, v in tensors.items()}, str(path / "model.safetensors"))
    return path


def pair(tmp_path: Path) -> tuple[Path, Path, dict[str, torch.Tensor]]:
    """BEFORE, AFTER and the expected masks: a few entries moved by 0.5, every other one by 1e-5 (sub-ulp in bf16)."""
    g = torch.Generator().manual_seed(0)
    w0 = {k: (torch.randn(s, generator=g) + 3.0).bfloat16().float() for k, s in SHAPES.items()}
    w1, want = {}, {}
    for k, v in w0.items():
        m = torch.rand(v.shape, generator=g) < 0.3
        w1[k] = v + 0.5 * m + 1e-5 * ~m
        want[k] = m
    return save(tmp_path / "a", w0), save(tmp_path / "b", w1), want


def read(out: Path) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    with safe_open(str(out / MASK_FILE), framework="pt") as f:
        return {k: f.get_tensor(k) for k in f.keys()}, f.metadata()


@pytest.mark.parametrize("chunk", [1 << 20, 3])
def test_masks_are_exactly_the_changed_entries(tmp_path, chunk):
    a, b, want = pair(tmp_path)
    res = mask(MaskConfig(checkpoints=[str(a), str(b)], out=str(tmp_path / "m"), chunk_elements=chunk))
    got, meta = read(tmp_path / "m")
    assert set(got) == set(SHAPES)
    for k, m in want.items():
        assert got[k].dtype == torch.bool and torch.equal(got[k], m), k
    n = sum(int(m.sum()) for m in want.values())
    assert res.data["changed"] == n and res.data["parameters"] == sum(m.numel() for m in want.values())
    assert res.data["per_tensor"]["model.norm.weight"]["changed"] == int(want["model.norm.weight"].sum())
    assert "rel_frob" not in res.data and "rel_frob" not in res.data["per_module_type"]["mlp"]
    assert meta["before"] == str(a) and meta["bf16"] == "true" and float(meta["tau"]) == 1e-5
    assert json.loads((tmp_path / "m" / MASK_JSON).read_text())["changed"] == n


def test_the_stored_view_sees_sub_ulp_changes(tmp_path):
    a, b, _ = pair(tmp_path)
    mask(MaskConfig(checkpoints=[str(a), str(b)], out=str(tmp_path / "m"), bf16=False, tau=0.0))
    got, _ = read(tmp_path / "m")
    assert all(bool(m.all()) for m in got.values())  # every entry moved, by 0.5 or by 1e-5


def test_refusals_leave_no_output(tmp_path):
    a, _, _ = pair(tmp_path)
    other = save(tmp_path / "other", {"model.norm.weight": torch.zeros(4)})
    with pytest.raises(DataError, match=r"tensor 'model\.embed_tokens\.weight'"):
        mask(MaskConfig(checkpoints=[str(a), str(other)], out=str(tmp_path / "m")))
    assert not (tmp_path / "m").exists()
    with pytest.raises(ConfigError, match=r"key 'checkpoints': give exactly two"):
        MaskConfig(checkpoints=[str(a)], out="x").check()
