"""midtrain.analysis.tensorfile: a safetensors file written slice by slice reads back exactly with safetensors itself
(dtypes, scalars, empty tensors, metadata, alignment), and a writer that breaks the file's contract leaves no file."""

from __future__ import annotations

import json
import struct

import pytest
import torch
from safetensors import safe_open

from midtrain.analysis.tensorfile import TensorSpec, layout, write_safetensors


def tensors() -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(0)
    return {
        "a.bool": torch.rand(5, 3, generator=g) > 0.5,
        "b.f32": torch.randn(7, 4, generator=g),
        "c.bf16": torch.randn(6, 2, generator=g).bfloat16(),
        "d.i64": torch.arange(9).reshape(3, 3),
        "e.scalar": torch.tensor(2.5),
        "f.empty": torch.zeros(0, 4),
        "g.f64": torch.randn(3, generator=g).double(),
    }


def write_in_slices(path, data: dict[str, torch.Tensor], rows: int, metadata=None) -> None:
    specs = [
        TensorSpec(
            k,
            {torch.bool: "BOOL", torch.float32: "F32", torch.bfloat16: "BF16", torch.int64: "I64", torch.float64: "F64"}[v.dtype],
            tuple(v.shape),
        )
        for k, v in data.items()
    ]
    with write_safetensors(path, specs, metadata) as w:
        for spec in layout(specs):
            t = data[spec.name]
            if t.dim() == 0:
                w.write(spec.name, t)
                continue
            for start in range(0, t.shape[0], rows):
                w.write(spec.name, t[start : start + rows])


@pytest.mark.parametrize("rows", [1, 2, 100])
def test_round_trip_in_slices(tmp_path, rows):
    data = tensors()
    path = tmp_path / "x.safetensors"
    write_in_slices(path, data, rows, {"format": "pt", "who": "test"})
    with safe_open(str(path), framework="pt") as f:
        assert set(f.keys()) == set(data) and f.metadata() == {"format": "pt", "who": "test"}
        for k, v in data.items():
            got = f.get_tensor(k)
            assert got.dtype == v.dtype and got.shape == v.shape and torch.equal(got, v), k
    raw = path.read_bytes()
    (n,) = struct.unpack("<Q", raw[:8])
    assert n % 8 == 0  # the data starts 8-aligned ...
    header = json.loads(raw[8 : 8 + n])
    for k, v in data.items():  # ... and every tensor at a multiple of its element size
        assert header[k]["data_offsets"][0] % v.element_size() == 0, k


def test_a_broken_contract_leaves_no_file(tmp_path):
    path = tmp_path / "x.safetensors"
    specs = [TensorSpec("a", "F32", (2, 2)), TensorSpec("b", "F32", (2,))]
    with pytest.raises(ValueError, match=r"tensor 'a': 4 of its 16 bytes"):
        with write_safetensors(path, specs) as w:
            w.write("a", torch.zeros(1))
            w.write("b", torch.zeros(2))
    with pytest.raises(ValueError, match=r"tensor 'b': 0 of its 8 bytes"):
        with write_safetensors(path, specs) as w:
            w.write("a", torch.zeros(2, 2))
    with pytest.raises(ValueError, match=r"a torch.float64 slice for a F32 tensor"):
        with write_safetensors(path, specs) as w:
            w.write("a", torch.zeros(2, 2, dtype=torch.float64))
    with pytest.raises(ValueError, match=r"more than its 8 bytes"):
        with write_safetensors(path, specs) as w:
            w.write("a", torch.zeros(2, 2))
            w.write("b", torch.zeros(3))
    with pytest.raises(ValueError, match=r"tensor 'a' is not \(or no longer\) expected"):
        with write_safetensors(path, specs) as w:
            w.write("a", torch.zeros(2, 2))
            w.write("b", torch.zeros(2))
            w.write("a", torch.zeros(1))
    assert list(tmp_path.iterdir()) == []  # no file, no temporary
