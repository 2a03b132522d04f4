"""Torch-facing owner of the Temporal ADC sparse statistics (`kernels/density_stats.py`)."""

from __future__ import annotations

import torch

from ..kernels import density_stats as ds
from ..render.runtime import ensure_device, taichi_lock


class SparseDensityStats:
    """Per (cluster, Gaussian) gradient sum, visibility count, error sum and burst maximum.

    Capacity grows (doubling, active cells copied) when more Gaussians than it holds are
    accumulated; `reset(k)` deactivates cluster k's cells (end of its window, or after a densify
    step that re-indexed the Gaussians).
    """

    def __init__(self, max_clusters: int, capacity: int, device: torch.device):
        ensure_device(torch.device(device), "device")
        self.device = torch.device(device)
        self.max_clusters = max_clusters
        with taichi_lock():
            self.fields = ds.DensityFields(max_clusters, capacity)

    @property
    def capacity(self) -> int:
        return self.fields.capacity

    def _f(self):
        f = self.fields
        return f.grad, f.count, f.err, f.burst

    def ensure_capacity(self, n: int) -> None:
        if n <= self.capacity:
            return
        with taichi_lock():
            new = ds.DensityFields(self.max_clusters, max(n, 2 * self.capacity))
            ds.copy_active(*self._f(), new.grad, new.count, new.err, new.burst)
            self.fields.destroy()
            self.fields = new

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
