"""Stable LSD radix sort of (key, value) pairs, one 8-bit digit per pass.

Per pass (Satish et al., "Designing efficient sorting algorithms for manycore GPUs", 2009, in
its simplest chunked form): each thread owns a contiguous chunk of the input and
1. counts its digits into column `chunk` of a digit-major histogram [bins, num_chunks];
2. the caller exclusive-scans that histogram in digit-major order (kernels.scan);
3. the thread walks its chunk again in order and scatters every pair to its digit's running
   offset. Chunks are contiguous and walked in order, so each pass is stable, which makes the
   whole LSD sort stable.
Keys are int32 or int64 and must be non-negative (they are ordered by their low `num_bits` bits);
values are int32. Shapes: keys/values [n]; hist [bins * num_chunks] int32.
"""

import taichi as ti

from .common import RADIX_BINS


@ti.kernel
def radix_histogram(keys: ti.types.ndarray(ndim=1), n: ti.i32, shift: ti.i32, chunk: ti.i32,
                    hist: ti.types.ndarray(dtype=ti.i32, ndim=1)):
    num_chunks = hist.shape[0] // RADIX_BINS
    for c in range(num_chunks):
        for d in range(RADIX_BINS):
            hist[d * num_chunks + c] = 0
        for i in range(c * chunk, ti.min(n, (c + 1) * chunk)):
            d = ti.cast((keys[i] >> shift) & (RADIX_BINS - 1), ti.i32)
            # the column is owned by this thread: a plain store avoids an atomic
            hist[d * num_chunks + c] = hist[d * num_chunks + c] + 1


@ti.kernel
def radix_scatter(keys_in: ti.types.ndarray(ndim=1), values_in: ti.types.ndarray(dtype=ti.i32, ndim=1),
                  keys_out: ti.types.ndarray(ndim=1), values_out: ti.types.ndarray(dtype=ti.i32, ndim=1),
                  n: ti.i32, shift: ti.i32, chunk: ti.i32, offsets: ti.types.ndarray(dtype=ti.i32, ndim=1)):
    num_chunks = offsets.shape[0] // RADIX_BINS
    for c in range(num_chunks):
        for i in range(c * chunk, ti.min(n, (c + 1) * chunk)):
            key = keys_in[i]
            slot = ti.cast((key >> shift) & (RADIX_BINS - 1), ti.i32) * num_chunks + c
            pos = offsets[slot]
            offsets[slot] = pos + 1
            keys_out[pos] = key
            values_out[pos] = values_in[i]
