"""Torch-facing drivers of the Taichi scan and radix-sort kernels (buffers are torch tensors).

The kernels live in `stavatar_ti.kernels.scan` / `.sort`; this module picks chunk sizes, allocates
scratch tensors on the input's device and runs the passes. torch.sort is used only as a test oracle.
"""

from __future__ import annotations

import torch

from ..kernels import scan as _scan
from ..kernels import sort as _sort
from ..kernels.common import RADIX_BINS, RADIX_BITS
from .runtime import ensure_device, taichi_lock

# Threads worth of chunks per launch: enough to fill the device without a huge histogram.
_TARGET_CHUNKS = {"cpu": 64, "cuda": 4096}
# A launch costs tens of microseconds of Python argument handling (more on the CPU backend,
# which also wakes its thread pool): below this many elements one thread scans serially.
_SERIAL_SCAN = {"cpu": 16384, "cuda": 1024}


def _chunk(n: int, device: torch.device, minimum: int = 64) -> int:
    return max(minimum, -(-n // _TARGET_CHUNKS[device.type]))


def _check_1d(x: torch.Tensor, name: str, dtypes: tuple) -> None:
    if not isinstance(x, torch.Tensor) or x.ndim != 1 or x.dtype not in dtypes:
        raise ValueError(f"{name}: expected a 1-D tensor of dtype {' or '.join(map(str, dtypes))}")


def _scan_into(src: torch.Tensor, dst: torch.Tensor) -> None:
    """Exclusive scan src -> dst (may alias): reduce per chunk, scan the sums recursively, scan."""
    n = src.shape[0]
    if n <= _SERIAL_SCAN[src.device.type]:
        _scan.chunk_scan(src, dst, n, n, torch.zeros(1, dtype=torch.int32, device=src.device))
        return
    chunk = _chunk(n, src.device)
    sums = torch.empty(-(-n // chunk), dtype=torch.int32, device=src.device)
    _scan.chunk_sums(src, n, chunk, sums)
    _scan_into(sums, sums)
    _scan.chunk_scan(src, dst, n, chunk, sums)


def exclusive_scan(x: torch.Tensor) -> torch.Tensor:
    """Exclusive prefix sum out[i] = sum(x[:i]) computed by Taichi kernels.

    Args:
        x: [n] int32 on CPU or CUDA. Sums must fit in int32.
    Returns:
        [n] int32 tensor on x's device.
    Raises:
        ValueError: x is not a 1-D int32 tensor, or its device does not match the Taichi arch.
    """
    _check_1d(x, "x", (torch.int32,))
    ensure_device(x.device, "x")
    x = x.contiguous()
    out = torch.empty_like(x)
    if x.numel() == 0:
        return out
    with taichi_lock():
        _scan_into(x, out)
    return out


def radix_sort_pairs(keys: torch.Tensor, values: torch.Tensor, num_bits: int | None = None):
    """Stable ascending sort of (keys, values) by keys with the Taichi LSD radix sort.

    Args:
        keys: [n] int32 or int64, non-negative.
        values: [n] int32 (typically indices), carried along.
        num_bits: number of low key bits to sort on (default: all non-sign bits of the dtype);
            keys must be < 2**num_bits.
    Returns:
        (sorted_keys, sorted_values), new tensors on the input device. Equal keys keep their input
        order, so the result equals `torch.sort(keys, stable=True)` with values gathered.
    Raises:
        ValueError: wrong dtypes/shapes, num_bits out of range, or a device/arch mismatch.
    Source: LSD radix sort (Satish et al. 2009), 8-bit digits, see `kernels/sort.py`.
    """
    _check_1d(keys, "keys", (torch.int32, torch.int64))
    _check_1d(values, "values", (torch.int32,))
    if values.shape != keys.shape or values.device != keys.device:
        raise ValueError("values: must have the same shape and device as keys")
    max_bits = 31 if keys.dtype == torch.int32 else 63
    num_bits = max_bits if num_bits is None else int(num_bits)
    if not 0 <= num_bits <= max_bits:
        raise ValueError(f"num_bits: expected 0..{max_bits} for {keys.dtype} keys, got {num_bits}")
    ensure_device(keys.device, "keys")
    n = keys.shape[0]
    k_in, v_in = keys.contiguous().clone(), values.contiguous().clone()
    if n <= 1 or num_bits == 0:
        return k_in, v_in
    k_out, v_out = torch.empty_like(k_in), torch.empty_like(v_in)
    chunk = _chunk(n, keys.device, minimum=256)
    num_chunks = -(-n // chunk)
    hist = torch.empty(RADIX_BINS * num_chunks, dtype=torch.int32, device=keys.device)
    with taichi_lock():
        for shift in range(0, num_bits, RADIX_BITS):
            _sort.radix_histogram(k_in, n, shift, chunk, hist)
            _scan_into(hist, hist)
            _sort.radix_scatter(k_in, v_in, k_out, v_out, n, shift, chunk, hist)
            k_in, k_out, v_in, v_out = k_out, k_in, v_out, v_in
    return k_in, v_in
