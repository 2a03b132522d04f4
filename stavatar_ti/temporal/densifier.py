"""Temporal ADC (STAvatar, method.md Sec. 10): FTC cluster schedule, fused-perceptual-error clone,
gradient split, prune, with statistics in Taichi sparse fields.

Schedules (`cluster_schedule`):

* ``sequential`` (paper, Sec. 10.2-10.3): clusters in label order, `epochs_per_cluster` reshuffled
  epochs each; densification once per cluster at the first iteration of its `densify_epoch`-th
  epoch (statistics cover the epochs before plus that iteration, then accumulation stops until the
  next cluster); then all training frames, reshuffled, until the budget epochs x N_train is used.
* ``interleaved`` (ours): all training frames, reshuffled every epoch, as in vanilla 3DGS; each
  frame's statistics go to its own cluster's window, and cluster k densifies once, at the iteration
  that brings its window to (densify_epoch - 1) passes over its frames plus one, i.e. on the same
  amount of statistics as in the paper's schedule.  The other clusters' open windows are re-indexed
  after each densify.  This keeps per-cluster densification and the fused error while avoiding the
  forgetting that sequential cluster training shows on short schedules (docs/performance.md).
  Since every cluster reaches its due count at about the same time, all clusters densify in one
  burst, early (about 20-30 % into training).
* ``staggered`` (ours): all training frames reshuffled every epoch as in ``interleaved``, but the
  K clusters densify one after another, spread evenly over vanilla ADC's window
  [`densify_from`, `densify_until`] (iterations): cluster k at its first frame at or after
  t_k = densify_from + k (densify_until - densify_from) / (K - 1), on the statistics of its
  frames over the (densify_epoch - 1) x N_train iterations before t_k (in expectation the same
  number of passes over its frames as in the paper's schedule).

Under `max_gaussians` every cluster gets an even share of the room left (`share_of_cap`); when the
clones plus splits (each +1: two children replace the parent) would exceed it, both are cut by the
same factor, keeping the largest errors and the largest gradients.

No opacity reset in any schedule.
"""

from __future__ import annotations

import numpy as np
import torch

from ..densify import ops
from ..densify.vanilla import Densifier, Step, ndc_grad_norm, shuffled_epochs
from ..losses.photometric import fused_error_map
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
        # built once at the Gaussian cap: no rebuild (recompile, leaked pool nodes) in a run (stats.py)
        self.stats = SparseDensityStats(max_clusters=max(cfg.k_max, 1) + 1, capacity=cfg.max_gaussians, device=device)
        self.stats.warm_up()
        self.window_iters = {}
        self.num_gaussians = 0
        self.clusters: list[np.ndarray] = []
        self.silhouette: dict = {}
        self.densified: set[int] = set()  # windows that have densified (their share of the cap is spent)

    # ------------------------------------------------------------------ schedule
    def plan(self, views, total, gen):
        c = self.cfg
        expr, pose, trans = _flame_features(views, self.table)
        timesteps = np.array([v.timestep for v in views])
        clusters, k, self.silhouette = ftc_cluster(timesteps, expr, pose, trans, range(c.k_min, c.k_max + 1),
                                                   n_components=c.pca_components)
        self.clusters = clusters
        position = {t: i for i, t in enumerate(timesteps)}
        if self.quirks.cluster_index_mode == "shuffled_index":
            # official code: the cluster's sorted timestep positions index a shuffled view list
            perm = torch.randperm(len(views), generator=gen).tolist()
            members = [[perm[position[t]] for t in cl] for cl in clusters]
        else:
            members = [[position[t] for t in cl] for cl in clusters]
        if c.cluster_schedule == "interleaved":
            return _interleaved_plan(members, len(views), total, c.densify_epoch, gen)
        if c.cluster_schedule == "staggered":
            return _staggered_plan(members, len(views), total, c.densify_epoch, c.densify_from, c.densify_until, gen)
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

    def phase_ends(self) -> list[int]:
        """Iterations at which the sequential schedule's cluster phases end (cluster k's last step,
        1-based): cumulative len(cluster) x epochs_per_cluster. The interleaved schedule has no phases;
        the same iterations are its comparison points."""
        return np.cumsum([len(c) * self.cfg.epochs_per_cluster for c in self.clusters]).astype(int).tolist()

    def start_window(self, window: int) -> None:
        if window in self.window_iters:  # interleaved plans re-enter windows; only the first entry opens one
            return
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
        over = _largest(torch.nonzero(err > c.clone_error_threshold).squeeze(1), err, c.clone_max)
        burst = torch.topk(s["burst"], min(c.burst_k, n)).indices
        burst = burst[s["burst"][burst] > 0]
        clone_ids = torch.unique(torch.cat([over, burst]))
        return clone_ids, grads, s

    def densify(self, window, avatar, optimizer, world_scales, generator=None) -> dict:
        c = self.cfg
        n = avatar.num_gaussians
        clone_ids, grads, s = self.select(window, n)
        room = self.share_of_cap(window, n)
        split_mask = (grads >= c.grad_threshold) & (world_scales.detach().amax(-1) > c.percent_dense * self.extent)
        split_ids = torch.nonzero(split_mask).squeeze(1)
        need = clone_ids.numel() + split_ids.numel()  # a split replaces its parent by two children: +1
        if need > room:  # cut clones and splits by the same factor
            n_clone = min(clone_ids.numel(), round(clone_ids.numel() * room / need))
            clone_ids = _largest(clone_ids, s["err"], n_clone)
            split_ids = _largest(split_ids, grads, room - n_clone)
        cloned = clone_with_noise(avatar, clone_ids, c.clone_noise, generator)
        children = ops.split_params(avatar, split_ids, world_scales, generator=generator)
        for key in ("features_dc", "features_rest"):
            children[key] = children[key] + c.clone_noise * torch.randn(children[key].shape, generator=generator).to(
                children[key])
        children["opacity"] = halve_opacity_logit(children["opacity"])
        keep = []
        result = ops.apply_densify(avatar, optimizer, clone_ids, cloned, split_ids, children, c.min_opacity,
                                   keep_out=keep)
        self.stats.reset(window)  # accumulation is off for the rest of this cluster
        self.densified.add(window)
        self._reindex_open_windows(window, n, keep[0])
        self.num_gaussians = avatar.num_gaussians
        return result

    def share_of_cap(self, window: int, n: int) -> int:
        """New Gaussians cluster `window` may add: the room left under `max_gaussians` divided evenly
        among the clusters that have not densified yet (this one included), so that a cap reached
        early does not leave the last clusters without new Gaussians (docs/performance.md, issue 21).
        The paper has no cap; with room for every cluster's clone_max this changes nothing."""
        room = max(0, self.cfg.max_gaussians - n)
        left = sum(1 for w in range(len(self.clusters)) if w not in self.densified and w != window) + 1
        return room // left

    def _reindex_open_windows(self, done: int, n_before: int, keep: torch.Tensor) -> None:
        """Move the other windows' statistics to the new Gaussian order (rows of removed Gaussians are
        dropped, the appended ones start empty). Only interleaved and staggered plans have such windows."""
        new_index = torch.cumsum(keep.long(), 0) - 1
        kept_old = torch.nonzero(keep[:n_before]).squeeze(1)
        n_after = int(keep.sum())
        for w in self.window_iters:
            if w == done or w >= self.stats.max_clusters or self.stats.active(w) == 0:
                continue
            old = self.stats.export(w, n_before)
            moved = {k: torch.zeros(n_after, dtype=v.dtype, device=v.device) for k, v in old.items()}
            for k, v in old.items():
                moved[k][new_index[kept_old].to(v.device)] = v[kept_old.to(v.device)]
            self.stats.restore(w, moved)

    def state(self) -> dict:
        """Window counters and each window's sparse statistics as dense tensors (checkpoints)."""
        stats = {str(k): self.stats.export(k, self.num_gaussians) for k in self.window_iters
                 if k < self.stats.max_clusters and self.stats.active(k) > 0}
        return {"window_iters": {str(k): v for k, v in self.window_iters.items()}, "stats": stats,
                "num_gaussians": self.num_gaussians, "densified": sorted(self.densified)}

    def load_state(self, state: dict) -> None:
        self.window_iters = {int(k): v for k, v in state.get("window_iters", {}).items()}
        self.num_gaussians = state.get("num_gaussians", 0)
        self.densified = set(state.get("densified", []))
        for k, values in state.get("stats", {}).items():
            self.stats.restore(int(k), values)


def _interleaved_plan(members, num_views: int, total: int, densify_epoch: int, gen) -> list[Step]:
    """All views reshuffled every epoch; view v accumulates into its cluster's window until that
    cluster has seen (densify_epoch - 1) passes over its frames plus one iteration, which densifies."""
    cluster_of = {v: w for w, ids in enumerate(members) for v in ids}
    seen = [0] * len(members)
    due = [(densify_epoch - 1) * len(ids) + 1 for ids in members]
    steps = []
    for v in shuffled_epochs(num_views, total, gen):
        w = cluster_of[v]
        seen[w] += 1
        steps.append(Step(v, w, seen[w] <= due[w], seen[w] == due[w]))
    return steps


def _staggered_plan(members, num_views: int, total: int, densify_epoch: int, start: int, until: int,
                    gen) -> list[Step]:
    """All views reshuffled every epoch; cluster k densifies at its first view at or after iteration
    t_k = start + k (until - start) / (K - 1) (1-based; K = 1: start) and accumulates its views over
    the (densify_epoch - 1) x num_views iterations before t_k."""
    k = len(members)
    cluster_of = {v: w for w, ids in enumerate(members) for v in ids}
    due = [start + (w * (until - start)) // max(k - 1, 1) for w in range(k)]
    span = (densify_epoch - 1) * num_views
    done = [False] * k
    steps = []
    for i, v in enumerate(shuffled_epochs(num_views, total, gen), start=1):
        w = cluster_of[v]
        densify = not done[w] and i >= due[w]
        steps.append(Step(v, w, not done[w] and i > due[w] - span, densify))
        done[w] = done[w] or densify
    return steps


def _largest(ids: torch.Tensor, score: torch.Tensor, count: int) -> torch.Tensor:
    """The `count` ids with the largest `score`, in index order."""
    if ids.numel() <= count:
        return ids
    return torch.sort(ids[torch.topk(score[ids], max(count, 0)).indices]).values


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
