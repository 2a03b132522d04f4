"""Vanilla adaptive density control (3DGS, Kerbl et al. 2023 Sec. 5; GaussianAvatars binding rules).

Every `densify_interval` iterations in [densify_from, densify_until]: Gaussians whose mean
screen-space gradient (NDC units, ‖dL/dmeans2d · (W/2, H/2)‖) reaches `grad_threshold` are cloned
when their largest world scale is <= percent_dense · E and split into two otherwise; then
Gaussians with opacity < min_opacity are pruned (every face keeps at least one). The trainer
resamples the UVs of all Gaussians afterwards.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from . import ops


@dataclass
class Step:
    """One planned iteration: which training view, which accumulation window, and whether to
    accumulate statistics and to densify after its backward pass."""

    view: int
    window: int = 0
    accumulate: bool = True
    densify: bool = False


def shuffled_epochs(num_views: int, total: int, gen: torch.Generator) -> list[int]:
    """View indices for `total` iterations: reshuffled every pass over the views."""
    order = []
    while len(order) < total:
        order += torch.randperm(num_views, generator=gen).tolist()
    return order[:total]


def ndc_grad_norm(means2d_grad: torch.Tensor, width: int, height: int) -> torch.Tensor:
    """‖dL/dmeans2d‖ in 3DGS's NDC units: the pixel gradient times (W/2, H/2)."""
    scale = torch.tensor([width / 2.0, height / 2.0], device=means2d_grad.device)
    return (means2d_grad * scale).norm(dim=-1)


class Densifier:
    """Interface the trainer drives; Temporal ADC (stavatar_ti.temporal) implements the same seam.

    plan(...) fixes the order of views and the densification points for the whole run;
    start_window(w) is called when the plan enters a new window; accumulate(...) after every
    backward pass of an accumulating step; densify(...) at the planned points, with `world_scales`
    [N,3] the coarse world scales s̃ = exp(σ) k_f of the densifying frame (metres, no network δs;
    the clone/split size tests and the split noise use them, method.md Sec. 10.7).
    """

    def plan(self, views, total: int, gen: torch.Generator) -> list[Step]:
        raise NotImplementedError

    def start_window(self, window: int) -> None:
        """A new accumulation window starts (a cluster for Temporal ADC)."""

    def accumulate(self, window: int, avatar, out, means2d_grad, image, gt, width: int, height: int) -> None:
        raise NotImplementedError

    def densify(self, window: int, avatar, optimizer, world_scales: torch.Tensor, generator=None) -> dict:
        raise NotImplementedError

    def state(self) -> dict:
        return {}

    def load_state(self, state: dict) -> None:
        """Restore what `state` returned (checkpoint resume)."""


class VanillaADC(Densifier):
    """3DGS ADC. `extent` is the scene extent E (metres)."""

    def __init__(self, cfg, extent: float):
        self.cfg, self.extent = cfg, extent
        self.grad_accum = None
        self.denom = None

    def plan(self, views, total, gen):
        c = self.cfg
        return [Step(v, 0, True, c.densify_from <= i <= c.densify_until and i % c.densify_interval == 0)
                for i, v in enumerate(shuffled_epochs(len(views), total, gen), start=1)]

    def _reset(self, n: int, device) -> None:
        self.grad_accum = torch.zeros(n, device=device)
        self.denom = torch.zeros(n, device=device)

    def accumulate(self, window, avatar, out, means2d_grad, image, gt, width, height):
        n = avatar.num_gaussians
        if self.grad_accum is None or self.grad_accum.shape[0] != n:
            self._reset(n, avatar.xyz.device)
        vis = out.radii > 0
        self.grad_accum[vis] += ndc_grad_norm(means2d_grad[vis], width, height)
        self.denom[vis] += 1

    def densify(self, window, avatar, optimizer, world_scales, generator=None) -> dict:
        c = self.cfg
        if self.grad_accum is None:
            return {"cloned": 0, "split": 0, "pruned": 0}
        grads = torch.nan_to_num(self.grad_accum / self.denom)
        hot = grads >= c.grad_threshold
        room = max(0, c.max_gaussians - avatar.num_gaussians)
        big = world_scales.detach().amax(-1) > c.percent_dense * self.extent
        clone_ids = torch.nonzero(hot & ~big).squeeze(1)[:room]
        split_ids = torch.nonzero(hot & big).squeeze(1)[:max(0, room - clone_ids.numel())]
        cloned = ops.clone_params(avatar, clone_ids)
        children = ops.split_params(avatar, split_ids, world_scales, generator=generator)
        stats = ops.apply_densify(avatar, optimizer, clone_ids, cloned, split_ids, children, c.min_opacity)
        self._reset(avatar.num_gaussians, avatar.xyz.device)
        return stats

    def state(self) -> dict:
        return {"grad_accum": self.grad_accum, "denom": self.denom}

    def load_state(self, state: dict) -> None:
        self.grad_accum, self.denom = state.get("grad_accum"), state.get("denom")
