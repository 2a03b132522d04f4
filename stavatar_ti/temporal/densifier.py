"""Temporal ADC (STAvatar, method.md Sec. 10): FTC cluster schedule, fused-perceptual-error clone,
gradient split, prune, with statistics in Taichi sparse fields.

Schedule (Sec. 10.2-10.3): clusters in label order, `epochs_per_cluster` reshuffled epochs each;
densification once per cluster at the first iteration of its `densify_epoch`-th epoch (statistics
cover the epochs before plus that iteration, then accumulation stops until the next cluster); then
all training frames, reshuffled, until the budget epochs x N_train is used. No opacity reset.
"""

from __future__ import annotations

import numpy as np
import torch

from ..densify import ops
from ..densify.vanilla import Densifier, Step, ndc_grad_norm, shuffled_epochs
from ..losses import fused_error_map
from .clustering import ftc_cluster
from .error import gather_gaussian_error
from .stats import SparseDensityStats


def _flame_features(views, table):
    """expr [T,E], pose [T,15] = [jaw, neck, eyes, rotation], translation [T,3] of the views' timesteps."""
    t = torch.tensor([v.timestep for v in views])
    with torch.no_grad():
        expr = table.expr[t].cpu().numpy()
        pose = torch.cat([table.jaw_pose[t], table.neck_pose[t], table.eyes_pose[t], table.rotation[t]], 1)
        return expr, pose.cpu().numpy(), table.translation[t].cpu().numpy()


class TemporalADC(Densifier):
    """Temporal ADC. `extent` is the scene extent E; `table` the FlameTable (tracked parameters)."""

    def __init__(self, cfg, quirks, extent: float, table, device):
        self.cfg, self.quirks, self.extent, self.table = cfg, quirks, extent, table
        self.stats = SparseDensityStats(max_clusters=max(cfg.k_max, 1) + 1, capacity=16384, device=device)
        self.window_iters = {}
        self.num_gaussians = 0
        self.clusters: list[np.ndarray] = []
        self.silhouette: dict = {}

    # ------------------------------------------------------------------ schedule
    def plan(self, views, total, gen):
        c = self.cfg
        expr, pose, trans = _flame_features(views, self.table)
        timesteps = np.array([v.timestep for v in views])
        clusters, k, self.silhouette = ftc_cluster(timesteps, expr, pose, trans, range(c.k_min, c.k_max + 1))
        self.clusters = clusters
        position = {t: i for i, t in enumerate(timesteps)}
        if self.quirks.cluster_index_mode == "shuffled_index":
            # official code: the cluster's sorted timestep positions index a shuffled view list
            perm = torch.randperm(len(views), generator=gen).tolist()
            members = [[perm[position[t]] for t in cl] for cl in clusters]
        else:
            members = [[position[t] for t in cl] for cl in clusters]
        steps: list[Step] = []
        for w, ids in enumerate(members):
            for epoch in range(1, c.epochs_per_cluster + 1):
                order = [ids[i] for i in torch.randperm(len(ids), generator=gen).tolist()]
                for j, v in enumerate(order):
                    densify_here = epoch == c.densify_epoch and j == 0
                    accumulate = epoch < c.densify_epoch or densify_here
                    steps.append(Step(v, w, accumulate, densify_here))
        remaining = max(0, total - len(steps))
        steps += [Step(v, len(members), False, False) for v in shuffled_epochs(len(views), remaining, gen)]
        return steps[:total]

    def start_window(self, window: int) -> None:
        if window < self.stats.max_clusters:
            self.stats.reset(window)
        self.window_iters[window] = 0

    # ------------------------------------------------------------------ statistics
    def accumulate(self, window, avatar, out, means2d_grad, image, gt, width, height):
        with torch.no_grad():
            emap = fused_error_map(image.detach(), gt, lambda_fpe=self.cfg.lambda_fpe)
            err = gather_gaussian_error(emap, out.means2d.detach(), out.pixel_count, out.blend_weight,
                                        self.cfg.fpe_formula)
            vis = out.radii > 0
            grad = torch.where(vis, ndc_grad_norm(means2d_grad, width, height), torch.zeros_like(err))
        self.stats.accumulate(window, grad, vis, err)
        self.window_iters[window] = self.window_iters.get(window, 0) + 1
        self.num_gaussians = avatar.num_gaussians

    # ------------------------------------------------------------------ densify and prune (Sec. 10.7)
    def select(self, window: int, n: int) -> tuple[torch.Tensor, torch.Tensor, dict]:
        """Clone candidates (error) and per-Gaussian mean gradients from the window's statistics."""
        c = self.cfg
        s = self.stats.export(window, n)
        grads = torch.nan_to_num(s["grad"] / s["count"].float())
        err = s["err"] / max(1, self.window_iters.get(window, 0))
        over = torch.nonzero(err > c.clone_error_threshold).squeeze(1)
        if over.numel() > c.clone_max:
            over = over[torch.topk(err[over], c.clone_max).indices]
        burst = torch.topk(s["burst"], min(c.burst_k, n)).indices
        burst = burst[s["burst"][burst] > 0]
        clone_ids = torch.unique(torch.cat([over, burst]))
        return clone_ids, grads, s

    def densify(self, window, avatar, optimizer, world_scales, generator=None) -> dict:
        c = self.cfg
        n = avatar.num_gaussians
        clone_ids, grads, _ = self.select(window, n)
        room = max(0, c.max_gaussians - n)
        clone_ids = clone_ids[:room]
        split_mask = (grads >= c.grad_threshold) & (world_scales.detach().amax(-1) > c.percent_dense * self.extent)
        split_ids = torch.nonzero(split_mask).squeeze(1)[:max(0, (room - clone_ids.numel()) // 2)]
        cloned = clone_with_noise(avatar, clone_ids, c.clone_noise, generator)
        children = ops.split_params(avatar, split_ids, world_scales, generator=generator)
        for key in ("features_dc", "features_rest"):
            children[key] = children[key] + c.clone_noise * torch.randn(children[key].shape, generator=generator).to(
                children[key])
        children["opacity"] = halve_opacity_logit(children["opacity"])
        result = ops.apply_densify(avatar, optimizer, clone_ids, cloned, split_ids, children, c.min_opacity)
        self.stats.reset(window)  # indices changed; accumulation is off for the rest of the cluster
        return result

    def state(self) -> dict:
        """Window counters and each window's sparse statistics as dense tensors (checkpoints)."""
        stats = {str(k): self.stats.export(k, self.num_gaussians) for k in self.window_iters
                 if k < self.stats.max_clusters and self.stats.active(k) > 0}
        return {"window_iters": {str(k): v for k, v in self.window_iters.items()}, "stats": stats,
                "num_gaussians": self.num_gaussians}

    def load_state(self, state: dict) -> None:
        self.window_iters = {int(k): v for k, v in state.get("window_iters", {}).items()}
        self.num_gaussians = state.get("num_gaussians", 0)
        for k, values in state.get("stats", {}).items():
            self.stats.restore(int(k), values)


def halve_opacity_logit(logit: torch.Tensor) -> torch.Tensor:
    """Logit of 1 - sqrt(1 - sigmoid(logit)): two such layers composite to the original opacity."""
    alpha = torch.sigmoid(logit)
    new = (1.0 - torch.sqrt((1.0 - alpha).clamp_min(0.0))).clamp(1e-6, 1 - 1e-6)
    return torch.log(new / (1.0 - new))


def clone_with_noise(avatar, select: torch.Tensor, noise: float, generator=None) -> dict:
    """Error-driven copies (Sec. 10.7 step 1): local p + N(0, (noise exp(σ))²), SH + N(0, noise²),
    same σ and ρ, opacity 1 - sqrt(1 - α) (the original keeps its opacity)."""
    out = ops.clone_params(avatar, select)
    out = {k: v.clone() for k, v in out.items()}
    std = noise * torch.exp(out["scaling"])
    out["xyz"] = out["xyz"] + torch.randn(std.shape, generator=generator).to(std) * std
    for key in ("features_dc", "features_rest"):
        out[key] = out[key] + noise * torch.randn(out[key].shape, generator=generator).to(out[key])
    out["opacity"] = halve_opacity_logit(out["opacity"])
    return out


__all__ = ["TemporalADC", "clone_with_noise", "halve_opacity_logit"]
