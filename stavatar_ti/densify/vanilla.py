"""Vanilla adaptive density control (3DGS, Kerbl et al. 2023 Sec. 5; GaussianAvatars binding rules).

Every `densify_interval` iterations in [densify_from, densify_until]: Gaussians whose mean
screen-space gradient (NDC units, ‖dL/dmeans2d · (W/2, H/2)‖) reaches `grad_threshold` are cloned
when their largest world scale is <= percent_dense · E and split into two otherwise; then
Gaussians with opacity < min_opacity are pruned (every face keeps at least one). The UVs of all
Gaussians are resampled by the caller afterwards (`Densifier.after_densify`).
"""

from __future__ import annotations

import torch

from . import ops


class Densifier:
    """Interface the trainer drives; Temporal ADC (method.md Sec. 10) implements the same seam."""

    def start_window(self, iteration: int, frames: list[int] | None = None) -> None:
        """A new accumulation window starts (a cluster for Temporal ADC)."""

    def accumulate(self, avatar, means2d_grad: torch.Tensor, radii: torch.Tensor, width: int, height: int,
                   stats: dict | None = None) -> None:
        raise NotImplementedError

    def should_densify(self, iteration: int) -> bool:
        raise NotImplementedError

    def densify(self, avatar, optimizer, world_scales: torch.Tensor, generator=None) -> dict:
        raise NotImplementedError


class VanillaADC(Densifier):
    """3DGS ADC. `extent` is the scene extent E (metres)."""

    def __init__(self, cfg, extent: float):
        self.cfg, self.extent = cfg, extent
        self.grad_accum = None
        self.denom = None

    def _reset(self, n: int, device) -> None:
        self.grad_accum = torch.zeros(n, device=device)
        self.denom = torch.zeros(n, device=device)

    def accumulate(self, avatar, means2d_grad, radii, width, height, stats=None):
        n = avatar.num_gaussians
        if self.grad_accum is None or self.grad_accum.shape[0] != n:
            self._reset(n, avatar.xyz.device)
        vis = radii > 0
        scale = torch.tensor([width / 2.0, height / 2.0], device=means2d_grad.device)
        self.grad_accum[vis] += (means2d_grad[vis] * scale).norm(dim=-1)
        self.denom[vis] += 1

    def should_densify(self, iteration: int) -> bool:
        c = self.cfg
        return c.densify_from <= iteration <= c.densify_until and iteration % c.densify_interval == 0

    def densify(self, avatar, optimizer, world_scales, generator=None) -> dict:
        c = self.cfg
        if self.grad_accum is None:
            return {"cloned": 0, "split": 0, "pruned": 0}
        grads = torch.nan_to_num(self.grad_accum / self.denom)
        hot = grads >= c.grad_threshold
        room = max(0, c.max_gaussians - avatar.num_gaussians)
        big = world_scales.detach().amax(-1) > c.percent_dense * self.extent
        clone_ids = torch.nonzero(hot & ~big).squeeze(1)[:room]
        split_ids = torch.nonzero(hot & big).squeeze(1)[:max(0, room - clone_ids.numel())]
        n0 = avatar.num_gaussians
        cloned = ops.clone_params(avatar, clone_ids)
        children = ops.split_params(avatar, split_ids, world_scales, generator=generator)
        new = {k: torch.cat([cloned[k], children[k]], 0) for k in cloned}
        new_binding = torch.cat([avatar.binding[clone_ids], avatar.binding[split_ids].repeat(2)])
        ops.append(avatar, optimizer, new, new_binding)
        # remove split parents, then low-opacity Gaussians
        remove = torch.zeros(avatar.num_gaussians, dtype=torch.bool, device=avatar.xyz.device)
        remove[split_ids] = True
        remove |= torch.sigmoid(avatar.opacity.detach()) < c.min_opacity
        remove[n0:] = False  # newly added Gaussians are not pruned in the same step
        pruned = ops.prune(avatar, optimizer, remove) - split_ids.numel()
        self._reset(avatar.num_gaussians, avatar.xyz.device)
        return {"cloned": int(clone_ids.numel()), "split": int(split_ids.numel()), "pruned": max(0, pruned)}
