"""MFU: achieved model FLOP/s ÷ the device's dense peak FLOP/s for the run's precision, never above 100%.

The peak (:func:`peak_flops`, a :class:`Peak` that says where its figure comes from; the step log prints it once)
must not move with the machine's load, or a busy machine would read as a well-used one (a loaded CPU once showed
MFU 54% at 7 GFLOP/s against a peak measured under that load). So it is never measured where it can be derived:

- a known accelerator: the vendor's dense figure (:data:`DEVICE_PEAKS`);
- an x86 CPU: the nominal peak, ``cores × clock × FLOP/cycle`` (:func:`nominal_cpu_peak`). FLOP/cycle is
  2 (an FMA) × 2 FMA pipes × the fp32 lanes of the widest vector unit (AVX-512 16, AVX 8, SSE 4), twice that for
  bf16 with a bf16 dot product (``avx512_bf16``: two products per fp32 lane), and 1,024 for bf16 on AMX tiles.
  Cores are the torch threads, at most one per physical core (SMT siblings share a core's FMA pipes). The clock
  is the highest the OS states: cpufreq's maximum, else the model name's "@ x.xxGHz", else ``cpu MHz``, which in a
  VM is the base clock (turbo can exceed it: this project's 2-core Zen 5 VM states 2.6 GHz and has a quiet bf16
  matmul of 920 GFLOP/s, above its 665 nominal, while its fp32 matmul, 189, is far below the 332 nominal).
- anything else (another GPU, an ARM CPU, no ``/proc/cpuinfo``): a large matmul measured once per process, which
  the log calls load-dependent.

Simplifications: two FMA pipes per core is assumed (true of the x86 server cores of the last decade; a few Xeon
SKUs have one, so their peak reads 2x high); AMD's family 0x19 (Zen 4) runs 512-bit instructions as two 256-bit
halves and is counted at 256 bits. A peak below the achieved rate (a turbo clock, an unknown chip) is handled by
construction: MFU is achieved ÷ max(peak, achieved) (:func:`mfu`), and :class:`MFUMeter` raises its peak to the
achieved rate when that happens, saying so once.
"""

from __future__ import annotations

import functools
import math
import os
import re
import time
from dataclasses import dataclass
from pathlib import Path

from midtrain.console import log
from midtrain.train.ranks import is_main

# Dense (no structured sparsity) tensor-core peaks in FLOP/s from the vendors' datasheets: (name pattern, bf16,
# tf32). NVIDIA prints the sparse figure with an asterisk; dense is half of it. First match wins, so the more
# specific names come first. fp32 training is compared with the TF32 peak, the fastest fp32-input math of the chip.
DEVICE_PEAKS: tuple[tuple[str, float, float], ...] = (
    (r"H200 NVL", 835.5e12, 417.5e12),  # H200 NVL: BF16 1,671 / TF32 835 TFLOPS with sparsity
    (r"H100 NVL", 835.5e12, 417.5e12),  # H100 NVL: BF16 1,671 / TF32 835 with sparsity
    (r"H100 PCIe", 756.5e12, 378.0e12),  # H100 PCIe: BF16 1,513 / TF32 756 with sparsity
    (r"H200", 989.4e12, 494.7e12),  # H200 SXM (also GH200): BF16 1,979 / TF32 989 with sparsity
    (r"H100", 989.4e12, 494.7e12),  # H100 SXM ("H100 80GB HBM3"): BF16 1,979 / TF32 989 with sparsity
    (r"A100", 312e12, 156e12),  # A100 SXM and PCIe: BF16 312 / TF32 156 dense
    (r"\bL4\b", 121e12, 60e12),  # L4: BF16 242 / TF32 120 with sparsity (\b: not L40)
    (r"\bA10\b", 125e12, 62.5e12),  # A10: BF16 125 / TF32 62.5 dense (A10G differs; it is measured)
    (r"RTX 4090", 165.2e12, 82.6e12),  # Ada whitepaper: BF16 with FP32 accumulate 165.2 / TF32 82.6 dense
)
FMA_PIPES = 2  # FMA units per core assumed for a CPU's nominal peak (module docstring)
AMX_BF16_FLOP_PER_CYCLE = 1024  # TDPBF16PS: 16x16x32 multiply-adds per 16 cycles per core
CPUFREQ_MAX = Path("/sys/devices/system/cpu/cpu0/cpufreq/cpuinfo_max_freq")  # kHz
CPUINFO = Path("/proc/cpuinfo")


@dataclass(frozen=True)
class Peak:
    """A device's dense peak FLOP/s for one precision and where the figure comes from."""

    flops: float
    source: str  # "datasheet" | "nominal" | "measured"
    detail: str  # how it was obtained, in words

    def __str__(self) -> str:
        value = f"{self.flops / 1e12:,.1f} TFLOP/s" if self.flops >= 1e12 else f"{self.flops / 1e9:,.0f} GFLOP/s"
        return f"{self.source} peak {value} ({self.detail})"


def table_peak(device_name: str, precision: str) -> float | None:
    """The dense peak FLOP/s of a known accelerator (by ``torch.cuda.get_device_name()``), or None."""
    for pattern, bf16, tf32 in DEVICE_PEAKS:
        if re.search(pattern, device_name):
            return bf16 if precision == "bf16" else tf32
    return None


def measure_peak(precision: str, device: str, *, size: int | None = None, iters: int = 5) -> float:
    """Best-of-``iters`` FLOP/s of one large square matmul (GPU 8192², CPU 2048²) after a warm-up.

    Large, because small matmuls leave a GPU mostly idle and a measured "peak" far below the chip's (an H200 once
    showed 100.5% MFU against a 1024² measurement). It moves with the machine's load: the last resort only.
    """
    import torch

    n = size or (8192 if device == "cuda" else 2048)
    dtype = torch.bfloat16 if precision == "bf16" else torch.float32
    a = torch.randn(n, n, dtype=dtype, device=device)  # [n, n]
    b = torch.randn(n, n, dtype=dtype, device=device)  # [n, n]
    sync = torch.cuda.synchronize if device == "cuda" else (lambda: None)
    best = math.inf
    for i in range(iters + 1):
        sync()
        t0 = time.perf_counter()
        a @ b
        sync()
        if i:  # the first is the warm-up
            best = min(best, time.perf_counter() - t0)
    return 2 * n**3 / best


# -- a CPU's nominal peak ---------------------------------------------------------------------------------------
@dataclass(frozen=True)
class CpuInfo:
    """What ``/proc/cpuinfo`` says about the CPUs this process may run on."""

    model: str
    vendor: str
    family: int | None
    flags: frozenset[str]
    mhz: float | None  # the highest "cpu MHz" line
    cores: int  # distinct physical cores among the allowed CPUs


def parse_cpuinfo(text: str, allowed: set[int] | None = None) -> CpuInfo:
    """:class:`CpuInfo` of a ``/proc/cpuinfo`` text; ``allowed``: the logical CPUs to count (all when None)."""
    blocks = [dict(_fields(b)) for b in re.split(r"\n\s*\n", text) if "processor" in b]
    mine = [b for b in blocks if allowed is None or int(b.get("processor", -1)) in allowed] or blocks
    first = mine[0] if mine else {}
    mhz = [float(b["cpu MHz"]) for b in mine if _is_number(b.get("cpu MHz"))]
    # SMT siblings share one (physical id, core id); without those lines every logical CPU counts as a core
    cores = {(b.get("physical id"), b.get("core id")) if "core id" in b else b.get("processor") for b in mine}
    return CpuInfo(
        model=first.get("model name", ""),
        vendor=first.get("vendor_id", ""),
        family=int(first["cpu family"]) if first.get("cpu family", "").isdigit() else None,
        flags=frozenset(first.get("flags", "").split()),
        mhz=max(mhz) if mhz else None,
        cores=max(len(cores), 1),
    )


def _fields(block: str) -> list[tuple[str, str]]:
    return [(k.strip(), v.strip()) for k, sep, v in (line.partition(":") for line in block.splitlines()) if sep]


def _is_number(s: str | None) -> bool:
    try:
        return s is not None and math.isfinite(float(s))
    except ValueError:
        return False


def flops_per_cycle(info: CpuInfo, precision: str) -> tuple[int, str] | None:
    """Dense FLOP per cycle per core for ``precision`` and the unit it comes from; None if not an x86 CPU we know."""
    f = info.flags
    if precision == "bf16" and "amx_bf16" in f:
        return AMX_BF16_FLOP_PER_CYCLE, "AMX bf16 tiles"
    width = 512 if "avx512f" in f else 256 if "avx" in f else 128 if "sse2" in f else 0
    if not width:
        return None
    unit = "avx512f" if width == 512 else "avx" if width == 256 else "sse2"
    if width == 512 and info.vendor == "AuthenticAMD" and info.family == 0x19:
        width, unit = 256, "avx512f on 256-bit halves (Zen 4)"
    per_lane = 2 * FMA_PIPES if "fma" in f or "avx512f" in f else FMA_PIPES  # an FMA is 2 FLOP; else mul + add pipes
    flop = width // 32 * per_lane
    if precision == "bf16" and "avx512_bf16" in f:
        return 2 * flop, f"avx512_bf16 dot products, {unit}, {FMA_PIPES} FMA pipes"
    return flop, f"{unit} fp32 FMA, {FMA_PIPES} pipes" + (" (bf16 runs as fp32 here)" if precision == "bf16" else "")


def cpu_clock(info: CpuInfo, cpufreq_max: Path = CPUFREQ_MAX) -> tuple[float, str] | None:
    """The CPU's clock in Hz and where it comes from: cpufreq's maximum, else the model name's, else ``cpu MHz``."""
    try:
        return int(cpufreq_max.read_text().strip()) * 1e3, "cpufreq max"
    except (OSError, ValueError):
        pass
    if m := re.search(r"@\s*([\d.]+)\s*GHz", info.model):
        return float(m.group(1)) * 1e9, "model name"
    if info.mhz:
        return info.mhz * 1e6, "cpu MHz: the base clock in a VM"
    return None


def nominal_cpu_peak(info: CpuInfo, precision: str, threads: int, clock: tuple[float, str] | None) -> Peak | None:
    """``cores × clock × FLOP/cycle`` (module docstring); cores: ``threads`` at most one per physical core."""
    per_cycle = flops_per_cycle(info, precision)
    if per_cycle is None or clock is None:
        return None
    cores = max(min(threads, info.cores), 1)
    hz, how = clock
    return Peak(
        cores * hz * per_cycle[0],
        "nominal",
        f"{precision}: {cores} core{'s' * (cores > 1)} × {hz / 1e9:.2f} GHz ({how}) × {per_cycle[0]} FLOP/cycle "
        f"({per_cycle[1]}); {info.model or 'CPU'}",
    )


def cpu_peak(precision: str, threads: int) -> Peak | None:
    """This machine's nominal CPU peak on ``threads`` threads, or None without ``/proc/cpuinfo`` or a known ISA."""
    try:
        text = CPUINFO.read_text(encoding="utf-8", errors="replace")
    except OSError:
        return None
    allowed = os.sched_getaffinity(0) if hasattr(os, "sched_getaffinity") else None
    info = parse_cpuinfo(text, allowed)
    return nominal_cpu_peak(info, precision, threads, cpu_clock(info))


def peak_flops(precision: str) -> Peak:
    """This device's dense peak FLOP/s for ``precision`` (module docstring): datasheet, nominal, else measured."""
    import torch

    return _peak(precision, torch.get_num_threads())


@functools.cache  # per thread count: a process may change it between stages
def _peak(precision: str, threads: int) -> Peak:
    import torch

    if torch.cuda.is_available():
        name = torch.cuda.get_device_name()
        known = table_peak(name, precision)
        if known is not None:
            return Peak(known, "datasheet", f"{precision}, dense: {name}")
        return Peak(measure_peak(precision, "cuda"), "measured", f"{precision} 8192² matmul on {name}, under the current load")
    nominal = cpu_peak(precision, threads)
    if nominal is not None:
        return nominal
    return Peak(measure_peak(precision, "cpu"), "measured", f"{precision} 2048² matmul on {threads} threads, under the current load")


def mfu(achieved_flops_s: float, peak_flops_s: float) -> float:
    """Model FLOPs utilisation in [0, 1]: achieved ÷ max(peak, achieved), so a peak that is too low (measured, or
    an unknown chip) caps the readout at 100% instead of printing more."""
    if achieved_flops_s <= 0:
        return 0.0
    return achieved_flops_s / max(peak_flops_s, achieved_flops_s)


class MFUMeter:
    """MFU of a run's token rate; when the achieved rate beats the peak it says so once and uses it as the peak."""

    def __init__(self, flops_per_token: float, peak_flops_s: float) -> None:
        self.flops_per_token, self.peak = flops_per_token, peak_flops_s

    def __call__(self, tokens_per_second: float) -> float:
        achieved = tokens_per_second * self.flops_per_token
        if achieved > self.peak:
            if is_main():
                log(
                    f"MFU: achieved {achieved / 1e12:.3g} TFLOP/s exceeds the peak used ({self.peak / 1e12:.3g}); "
                    "MFU is now relative to the achieved rate"
                )
            self.peak = achieved
        return mfu(achieved, self.peak)
