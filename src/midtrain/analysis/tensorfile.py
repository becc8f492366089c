"""Streamed safetensors writing: a file whose tensors arrive slice by slice and are never held whole.

The safetensors format is 8 bytes (little-endian u64) N, then N bytes of JSON header ``{name: {"dtype", "shape",
"data_offsets": [begin, end]}, "__metadata__": {str: str}}`` padded with spaces to a multiple of 8, then the
tensors' bytes back to back (offsets counted from the end of the header, row-major, little-endian). Every shape
and dtype is known before any data is computed, so :func:`write_safetensors` writes the header first and each
tensor's bytes are appended as they come (:meth:`TensorFileWriter.write`, in the order of the specs given, any
number of row slices per tensor). Tensors are laid out by element size, largest first, so that every tensor
starts at a multiple of its element size (readers map them without a copy). The file is written through
:func:`midtrain.fileio.atomic_file`: a writer that fails, or whose tensors did not all receive exactly their
bytes, leaves no file behind. Used by ``midtrain analyze transplant`` and ``midtrain analyze mask``.
"""

from __future__ import annotations

import json
import math
import struct
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

import torch

from midtrain.fileio import atomic_file

# safetensors' dtype names ↔ torch dtypes (the ones torch can hold; others are refused by name).
DTYPES: dict[str, torch.dtype] = {
    "F64": torch.float64,
    "F32": torch.float32,
    "F16": torch.float16,
    "BF16": torch.bfloat16,
    "F8_E4M3": torch.float8_e4m3fn,
    "F8_E5M2": torch.float8_e5m2,
    "I64": torch.int64,
    "I32": torch.int32,
    "I16": torch.int16,
    "I8": torch.int8,
    "U8": torch.uint8,
    "BOOL": torch.bool,
}
NAMES = {v: k for k, v in DTYPES.items()}


def torch_dtype(name: str) -> torch.dtype:
    """The torch dtype of a safetensors dtype name; ValueError for one torch cannot hold."""
    if name not in DTYPES:
        raise ValueError(f"safetensors dtype {name} is not supported here")
    return DTYPES[name]


@dataclass(frozen=True)
class TensorSpec:
    """One tensor of the file: its name, safetensors dtype name and shape."""

    name: str
    dtype: str
    shape: tuple[int, ...]

    @property
    def nbytes(self) -> int:
        return math.prod(self.shape) * torch_dtype(self.dtype).itemsize


def layout(specs: list[TensorSpec]) -> list[TensorSpec]:
    """The specs in file order: element size descending (alignment), then as given (a stable sort)."""
    return sorted(specs, key=lambda s: -torch_dtype(s.dtype).itemsize)


def header_bytes(specs: list[TensorSpec], metadata: dict[str, str] | None = None) -> bytes:
    """The 8-byte length and the JSON header of ``specs`` laid out in the given order, padded to 8 bytes."""
    header: dict[str, object] = {"__metadata__": dict(metadata)} if metadata else {}
    offset = 0
    for s in specs:
        header[s.name] = {"dtype": s.dtype, "shape": list(s.shape), "data_offsets": [offset, offset + s.nbytes]}
        offset += s.nbytes
    text = json.dumps(header, separators=(",", ":")).encode("utf-8")
    text += b" " * (-len(text) % 8)
    return struct.pack("<Q", len(text)) + text


class TensorFileWriter:
    """Appends the tensors' bytes in file order; see the module docstring. Obtain one from :func:`write_safetensors`."""

    def __init__(self, f: BinaryIO, specs: list[TensorSpec]) -> None:
        self.f, self.specs = f, specs
        self.i, self.filled = 0, 0  # the tensor being written, and its bytes so far

    def write(self, name: str, chunk: torch.Tensor) -> None:
        """The next row slice of tensor ``name`` (its dtype; the slices of one tensor in row order)."""
        while self.i < len(self.specs) and self.specs[self.i].name != name:
            self._require_full()
            self.i, self.filled = self.i + 1, 0
        if self.i == len(self.specs):
            raise ValueError(f"tensor '{name}' is not (or no longer) expected: tensors are written in file order")
        spec = self.specs[self.i]
        if chunk.dtype != torch_dtype(spec.dtype):
            raise ValueError(f"tensor '{name}': a {chunk.dtype} slice for a {spec.dtype} tensor")
        data = chunk.detach().contiguous().reshape(-1).view(torch.uint8).numpy()  # [bytes] raw little-endian
        if self.filled + data.nbytes > spec.nbytes:
            raise ValueError(f"tensor '{name}': more than its {spec.nbytes} bytes")
        self.f.write(memoryview(data))
        self.filled += data.nbytes

    def finish(self) -> None:
        """Check that every tensor received all its bytes (empty tensors need none)."""
        while self.i < len(self.specs):
            self._require_full()
            self.i, self.filled = self.i + 1, 0

    def _require_full(self) -> None:
        spec = self.specs[self.i]
        if self.filled != spec.nbytes:
            raise ValueError(f"tensor '{spec.name}': {self.filled} of its {spec.nbytes} bytes written")


@contextmanager
def write_safetensors(path: str | Path, specs: list[TensorSpec], metadata: dict[str, str] | None = None) -> Iterator[TensorFileWriter]:
    """A writer for the safetensors file ``path`` holding ``specs``; the file appears (atomically) when the block
    ends with every tensor complete. Call :meth:`TensorFileWriter.write` in the order of :func:`layout`'s result,
    which is the order of ``specs`` when they share one element size."""
    names = [s.name for s in specs]
    if len(set(names)) != len(names):
        raise ValueError("tensor names must be unique")
    ordered = layout(specs)
    with atomic_file(path) as f:
        f.write(header_bytes(ordered, metadata))
        writer = TensorFileWriter(f, ordered)
        yield writer
        writer.finish()


__all__ = ["DTYPES", "NAMES", "TensorFileWriter", "TensorSpec", "header_bytes", "layout", "torch_dtype", "write_safetensors"]
