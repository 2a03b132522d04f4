"""Exclusive prefix sum of an int32 array in chunks (Blelloch-style reduce-then-scan, 3 phases).

Phase 1 sums each chunk, phase 2 scans the chunk sums (recursively, by the caller), phase 3 scans
each chunk serially starting from its chunk offset. Each chunk is handled by one thread, so the
work is O(n) and the parallelism is n / chunk. Shapes: src, dst [n] int32; sums [ceil(n/chunk)].
`dst` may alias `src` (each element is read before it is written by the same thread).
"""

import taichi as ti


@ti.kernel
def chunk_sums(src: ti.types.ndarray(dtype=ti.i32, ndim=1), n: ti.i32, chunk: ti.i32,
               sums: ti.types.ndarray(dtype=ti.i32, ndim=1)):
    for c in range(sums.shape[0]):
        acc = 0
        for i in range(c * chunk, ti.min(n, (c + 1) * chunk)):
            acc += src[i]
        sums[c] = acc


@ti.kernel
def chunk_scan(src: ti.types.ndarray(dtype=ti.i32, ndim=1), dst: ti.types.ndarray(dtype=ti.i32, ndim=1),
               n: ti.i32, chunk: ti.i32, offsets: ti.types.ndarray(dtype=ti.i32, ndim=1)):
    for c in range(offsets.shape[0]):
        acc = offsets[c]
        for i in range(c * chunk, ti.min(n, (c + 1) * chunk)):
            x = src[i]
            dst[i] = acc
            acc += x
