"""Torch-facing owner of the Temporal ADC sparse statistics (`kernels/density_stats.py`), and the
size of Taichi's CUDA memory pool they allocate from.

Memory (Taichi 1.7.4, CUDA): sparse SNode nodes come out of one device memory pool of
`device_memory_GB` (ti.init; 1 GiB by default). Destroying a field tree does not give its nodes
back to the pool, every rebuilt tree compiles its own kernel instances, and a full pool is a
device-side assert that leaves the CUDA context unusable. So: the trainer builds the tree at the
Gaussian cap (`densify.max_gaussians`) once, which costs only its dense pointer array until cells
are touched, and sizes the pool with `pool_gb`; growth past the capacity (a model that starts above
the cap, direct users) doubles, so a run rebuilds at most log2(final / initial) times and all
trees together stay under twice the last one.
"""

from __future__ import annotations

import math

import torch

from ..kernels import density_stats as ds
from ..render.runtime import ensure_device, taichi_lock

_GIB = 2**30
TAICHI_DEFAULT_POOL_GB = 1.0
POOL_HEADROOM_GB = 0.5  # Taichi's own runtime buffers (element lists, node allocator metadata)


def pool_gb(max_clusters: int, max_gaussians: int) -> float:
    """Taichi CUDA memory pool (ti.init `device_memory_GB`) for Temporal ADC statistics.

    Twice a fully active tree of `max_clusters` x `max_gaussians` cells (room for the geometric
    growth path, whose trees sum to less than twice the last) plus `POOL_HEADROOM_GB`, and never
    below Taichi's default of 1 GiB. Example: the paper config (13 windows, 200,000 Gaussians)
    needs 2 x 53 MiB + 0.5 GiB, so it keeps the 1 GiB default; 13 x 10M needs 7.125 GiB.

    Returns:
        GiB as a float, rounded up to 1/8 GiB.
    """
    need = 2 * ds.tree_bytes(max_clusters, max_gaussians) / _GIB + POOL_HEADROOM_GB
    return max(TAICHI_DEFAULT_POOL_GB, math.ceil(need * 8) / 8)


class SparseDensityStats:
    """Per (cluster, Gaussian) gradient sum, visibility count, error sum and burst maximum.

    Capacity grows geometrically (at least doubling, active cells copied exactly) when more
    Gaussians than it holds are accumulated or restored; `rebuilds` counts the growths.
    `reset(k)` deactivates cluster k's cells (end of its window, or after a densify step that
    re-indexed the Gaussians).
    """

    def __init__(self, max_clusters: int, capacity: int, device: torch.device):
        ensure_device(torch.device(device), "device")
        self.device = torch.device(device)
        self.max_clusters = max_clusters
        self.rebuilds = 0
        with taichi_lock():
            self.fields = ds.DensityFields(max_clusters, capacity)

    @property
    def capacity(self) -> int:
        return self.fields.capacity

    def _f(self):
        f = self.fields
        return f.grad, f.count, f.err, f.burst

    def ensure_capacity(self, n: int) -> None:
        """Grow to hold n Gaussians: the new capacity is at least double the old (one rebuild and
        one kernel compilation per growth, so only logarithmically many)."""
        if n <= self.capacity:
            return
        with taichi_lock():
            new = ds.DensityFields(self.max_clusters, max(n, 2 * self.capacity))
            ds.copy_active(*self._f(), new.grad, new.count, new.err, new.burst)
            self.fields.destroy()
            self.fields = new
            self.rebuilds += 1

    def warm_up(self) -> None:
        """Compile the kernel instances of this field set (accumulate, export, count, reset,
        restore) now rather than at the first densification; changes no statistic."""
        zeros_f = torch.zeros(1, device=self.device)
        zeros_i = torch.zeros(1, dtype=torch.int32, device=self.device)
        with taichi_lock():
            ds.accumulate(*self._f(), 0, zeros_f, zeros_i, zeros_f)  # invisible, no error: no cell touched
            ds.export(*self._f(), 0, zeros_f.clone(), zeros_i.clone(), zeros_f.clone(), zeros_f.clone())
            ds.count_active(self.fields.grad, 0)
            ds.restore(*self._f(), 0, zeros_f, zeros_i, zeros_f, zeros_f)  # zero rows stay inactive
        # compile the deactivation on a cluster that holds nothing (a no-op there)
        if self.active(self.max_clusters - 1) == 0:
            self.reset(self.max_clusters - 1)

    def accumulate(self, k: int, grad_norm: torch.Tensor, visible: torch.Tensor, error: torch.Tensor) -> None:
        """Add one iteration's per-Gaussian values ([N] each) to cluster k."""
        if not 0 <= k < self.max_clusters:
            raise ValueError(f"k: cluster index {k} outside 0..{self.max_clusters - 1}")
        self.ensure_capacity(grad_norm.shape[0])
        with taichi_lock():
            ds.accumulate(*self._f(), k, grad_norm.detach().float().contiguous(),
                          visible.to(torch.int32).contiguous(), error.detach().float().contiguous())

    def export(self, k: int, n: int) -> dict:
        """Dense [n] tensors grad, count, err, burst of cluster k (0 where inactive)."""
        out = {"grad": torch.zeros(n, device=self.device), "count": torch.zeros(n, dtype=torch.int32, device=self.device),
               "err": torch.zeros(n, device=self.device), "burst": torch.zeros(n, device=self.device)}
        if n:
            with taichi_lock():
                ds.export(*self._f(), k, out["grad"], out["count"], out["err"], out["burst"])
        return out

    def restore(self, k: int, values: dict) -> None:
        """Inverse of `export` (checkpoint resume): cluster k's cells are reset, then set."""
        self.reset(k)
        n = values["grad"].shape[0]
        self.ensure_capacity(n)
        if n:
            with taichi_lock():
                ds.restore(*self._f(), k, *(values[key].to(self.device).contiguous()
                                             for key in ("grad", "count", "err", "burst")))

    def active(self, k: int) -> int:
        """Number of active (cluster k, Gaussian) cells."""
        with taichi_lock():
            return int(ds.count_active(self.fields.grad, k))

    def reset(self, k: int) -> None:
        with taichi_lock():
            ds.deactivate_cluster(self.fields.blocks, k)
