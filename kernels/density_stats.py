"""Temporal ADC statistics per (cluster, Gaussian) in Taichi sparse fields (method.md Sec. 10.6).

Layout: pointer(cluster, block of 64 Gaussians) -> bitmasked(1, 64) -> place(grad, count, err,
burst). Writing to a cell activates it, so only the (cluster, Gaussian) pairs that were touched
use memory: a Gaussian outside the view of a cluster's frames never activates a cell there.
- grad  += ||dL/dmeans2d (NDC units)|| when visible (radius > 0); count += 1 when visible
- err   += per-Gaussian fused perceptual error of the iteration (when > 0)
- burst  = max over the window of the per-iteration error (the "burst" set is its top-k)
Fields are module-independent objects built by `DensityFields`; kernels take them as templates,
so a rebuilt (grown) field set compiles its own kernel instances.
Shapes of the dense per-Gaussian inputs/outputs: [N] (f32, or i32 for counts/visibility).
"""

import taichi as ti

BLOCK = 64


CELL_BYTES = 16  # grad, count, err, burst: 4 bytes each


def _pow2(n: int) -> int:
    return 1 << max(0, (int(n) - 1).bit_length())


def tree_bytes(max_clusters: int, capacity: int) -> int:
    """Bytes of a fully active `DensityFields(max_clusters, capacity)`: the dense pointer array
    (8 bytes a slot) plus every (cluster, block) node (64 cells and a 64-bit mask)."""
    slots = _pow2(max_clusters) * _pow2(-(-max(capacity, 1) // BLOCK))
    return slots * 8 + max_clusters * (slots // _pow2(max_clusters)) * (BLOCK * CELL_BYTES + 8)


@ti.data_oriented
class DensityFields:
    """The four sparse fields for `max_clusters` x `capacity` (rounded up to a block multiple)."""

    def __init__(self, max_clusters: int, capacity: int):
        self.max_clusters = max_clusters
        self.capacity = _pow2(-(-max(capacity, 1) // BLOCK)) * BLOCK
        self.grad = ti.field(ti.f32)
        self.count = ti.field(ti.i32)
        self.err = ti.field(ti.f32)
        self.burst = ti.field(ti.f32)
        fb = ti.FieldsBuilder()
        # power-of-two extents: with a pointer extent of 3, struct-fors over the bitmasked cells
        # skipped active cells in taichi 1.7.4 (x64; reproduced in tests/test_temporal.py)
        self.blocks = fb.pointer(ti.ij, (_pow2(max_clusters), _pow2(self.capacity // BLOCK)))
        self.blocks.bitmasked(ti.ij, (1, BLOCK)).place(self.grad, self.count, self.err, self.burst)
        self.tree = fb.finalize()

    def destroy(self) -> None:
        self.tree.destroy()


@ti.kernel
def accumulate(grad: ti.template(), count: ti.template(), err: ti.template(), burst: ti.template(), k: ti.i32,
               grad_norm: ti.types.ndarray(dtype=ti.f32, ndim=1), visible: ti.types.ndarray(dtype=ti.i32, ndim=1),
               error: ti.types.ndarray(dtype=ti.f32, ndim=1)):
    for i in grad_norm:
        if visible[i] != 0:
            grad[k, i] += grad_norm[i]
            count[k, i] += 1
        e = error[i]
        if e > 0.0:
            err[k, i] += e
            ti.atomic_max(burst[k, i], e)


@ti.kernel
def export(grad: ti.template(), count: ti.template(), err: ti.template(), burst: ti.template(), k: ti.i32,
           out_grad: ti.types.ndarray(dtype=ti.f32, ndim=1), out_count: ti.types.ndarray(dtype=ti.i32, ndim=1),
           out_err: ti.types.ndarray(dtype=ti.f32, ndim=1), out_burst: ti.types.ndarray(dtype=ti.f32, ndim=1)):
    """Copy cluster k's active cells into dense arrays (pre-zeroed by the caller; length >= N used)."""
    n = out_grad.shape[0]
    for kk, i in grad:  # struct-for: active cells only
        if kk == k and i < n:
            out_grad[i] = grad[kk, i]
            out_count[i] = count[kk, i]
            out_err[i] = err[kk, i]
            out_burst[i] = burst[kk, i]


@ti.kernel
def count_active(grad: ti.template(), k: ti.i32) -> ti.i32:
    total = 0
    for kk, i in grad:
        if kk == k:
            total += 1
    return total


@ti.kernel
def deactivate_cluster(blocks: ti.template(), k: ti.i32):
    """Free every block of cluster k (the bitmasked cells under it go with it)."""
    for kk, b in blocks:
        if kk == k:
            ti.deactivate(blocks, [ti.cast(kk, ti.i32), ti.cast(b, ti.i32)])


@ti.kernel
def copy_active(src_grad: ti.template(), src_count: ti.template(), src_err: ti.template(), src_burst: ti.template(),
                dst_grad: ti.template(), dst_count: ti.template(), dst_err: ti.template(), dst_burst: ti.template()):
    """Move every active cell into a larger field set (growth)."""
    for kk, i in src_grad:
        dst_grad[kk, i] = src_grad[kk, i]
        dst_count[kk, i] = src_count[kk, i]
        dst_err[kk, i] = src_err[kk, i]
        dst_burst[kk, i] = src_burst[kk, i]


@ti.kernel
def restore(grad: ti.template(), count: ti.template(), err: ti.template(), burst: ti.template(), k: ti.i32,
            in_grad: ti.types.ndarray(dtype=ti.f32, ndim=1), in_count: ti.types.ndarray(dtype=ti.i32, ndim=1),
            in_err: ti.types.ndarray(dtype=ti.f32, ndim=1), in_burst: ti.types.ndarray(dtype=ti.f32, ndim=1)):
    """Set cluster k's cells from dense arrays (checkpoint resume); zero entries stay inactive."""
    for i in in_grad:
        if in_count[i] != 0 or in_err[i] != 0.0 or in_grad[i] != 0.0:
            grad[k, i] = in_grad[i]
            count[k, i] = in_count[i]
            err[k, i] = in_err[i]
            burst[k, i] = in_burst[i]
