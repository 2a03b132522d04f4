"""torch.autograd wrappers around the Taichi rasterizer kernels, and the tile binning driver.

Three differentiable stages, split as in gsplat so that `means2d` is a non-leaf tensor between
them (its `.grad` after `retain_grad()` is the screen-space gradient used by densification):
    Project:   (means, quats, scales) -> means2d, conics (+ depths, radii, tile data, no grad)
    SHColors:  (sh, means) -> colors
    Composite: (means2d, conics, opacities, colors, background) -> image, alpha (+ statistics)
Binning and sorting run between Project and Composite without gradients. All tensors are
float32/int32, contiguous, on the device whose arch Taichi runs (`runtime.ensure_device`).
Gradients w.r.t. viewmat and K are not computed.
"""

from __future__ import annotations

import torch

from ..kernels import binning, projection, rasterize, sh
from ..kernels.common import TILE_SIZE
from .sorting import exclusive_scan, radix_sort_pairs
from .runtime import launch, taichi_lock

_INT32_MAX = 2**31 - 1


def _grad_or_zeros(grad: torch.Tensor | None, shape, device) -> torch.Tensor:
    """Upstream gradient as a contiguous tensor (zeros when autograd passes None)."""
    return torch.zeros(shape, device=device) if grad is None else grad.contiguous()


class Project(torch.autograd.Function):
    """EWA projection (kernels/projection.py). Outputs means2d [N,2], conics [N,3], depths [N],
    radii [N] i32, tile_rect [N,4] i32, tile_counts [N] i32; only means2d and conics carry grad."""

    @staticmethod
    def forward(ctx, means, quats, scales, viewmat, K, width: int, height: int, near_plane: float):
        n, dev = means.shape[0], means.device
        means2d = torch.empty(n, 2, device=dev)
        conics = torch.empty(n, 3, device=dev)
        depths = torch.empty(n, device=dev)
        radii = torch.empty(n, dtype=torch.int32, device=dev)
        tile_rect = torch.empty(n, 4, dtype=torch.int32, device=dev)
        tile_counts = torch.empty(n, dtype=torch.int32, device=dev)
        if n > 0:
            launch(projection.project_fwd, means, quats, scales, viewmat, K, width, height, near_plane,
                   means2d, conics, depths, radii, tile_rect, tile_counts)
        ctx.save_for_backward(means, quats, scales, viewmat, K, radii, conics)
        ctx.size = (width, height)
        ctx.mark_non_differentiable(depths, radii, tile_rect, tile_counts)
        return means2d, conics, depths, radii, tile_rect, tile_counts

    @staticmethod
    def backward(ctx, v_means2d, v_conics, *_):
        means, quats, scales, viewmat, K, radii, conics = ctx.saved_tensors
        v_means, v_quats, v_scales = (torch.zeros_like(t) for t in (means, quats, scales))
        if means.shape[0] > 0:
            launch(projection.project_bwd, means, quats, scales, viewmat, K, *ctx.size, radii, conics,
                   _grad_or_zeros(v_means2d, (means.shape[0], 2), means.device),
                   _grad_or_zeros(v_conics, conics.shape, means.device),
                   v_means, v_quats, v_scales)
        return v_means, v_quats, v_scales, None, None, None, None, None


class SHColors(torch.autograd.Function):
    """colors [N,3] = max(SH_degree(sh, normalise(means - campos)) + 0.5, 0) (kernels/sh.py)."""

    @staticmethod
    def forward(ctx, sh_coeffs, means, viewmat, degree: int):
        colors = torch.empty(means.shape[0], 3, device=means.device)
        if means.shape[0] > 0:
            launch(sh.sh_fwd, sh_coeffs, means, viewmat, degree, colors)
        ctx.save_for_backward(sh_coeffs, means, viewmat)
        ctx.degree = degree
        return colors

    @staticmethod
    def backward(ctx, v_colors):
        sh_coeffs, means, viewmat = ctx.saved_tensors
        v_sh, v_means = torch.zeros_like(sh_coeffs), torch.zeros_like(means)
        if means.shape[0] > 0:
            v_colors = _grad_or_zeros(v_colors, means.shape, means.device)
            launch(sh.sh_bwd, sh_coeffs, means, viewmat, ctx.degree, v_colors,
                   v_sh, v_means)
        return v_sh, v_means, None, None


def bin_gaussians(depths, radii, tile_rect, tile_counts, width: int, height: int,
                  num_intersections: int | None = None):
    """Sorted (tile, Gaussian) intersections and per-tile ranges (kernels/binning.py).

    Args:
        num_intersections: M = tile_counts.sum() when the caller already read it (the forward's
            one host sync); None reads it here.
    Returns:
        tile_start, tile_end [num_tiles] i32 and isect_ids [M] i32 (Gaussian ids, each tile's
        run in ascending depth, ties by index).
    Raises:
        ValueError: more than 2**31 - 1 intersections.
    """
    dev = depths.device
    n = depths.shape[0]
    num_tiles = -(-width // TILE_SIZE) * -(-height // TILE_SIZE)
    tile_start = torch.zeros(num_tiles, dtype=torch.int32, device=dev)
    tile_end = torch.zeros(num_tiles, dtype=torch.int32, device=dev)
    if num_intersections is None:  # host sync: sizes the buffers
        num_intersections = int(tile_counts.sum(dtype=torch.int64)) if n > 0 else 0
    m = int(num_intersections)
    if m > _INT32_MAX:
        raise ValueError(f"means: {m} tile intersections exceed the int32 limit; use fewer or smaller Gaussians")
    if m == 0:
        return tile_start, tile_end, torch.zeros(0, dtype=torch.int32, device=dev)
    keys = torch.empty(n, dtype=torch.int32, device=dev)
    index = torch.empty(n, dtype=torch.int32, device=dev)
    with taichi_lock():
        launch(binning.depth_keys, depths, radii, keys, index)
        _, order = radix_sort_pairs(keys, index, 31)
        counts_sorted = torch.empty_like(order)
        launch(binning.gather_counts, order, tile_counts, counts_sorted)
        offsets = exclusive_scan(counts_sorted)
        isect_tiles = torch.empty(m, dtype=torch.int32, device=dev)
        isect_ids = torch.empty(m, dtype=torch.int32, device=dev)
        launch(binning.emit_intersections, order, offsets, counts_sorted, tile_rect, -(-width // TILE_SIZE),
               isect_tiles, isect_ids)
        isect_tiles, isect_ids = radix_sort_pairs(isect_tiles, isect_ids, max(1, (num_tiles - 1).bit_length()))
        launch(binning.tile_ranges, isect_tiles, tile_start, tile_end)
    return tile_start, tile_end, isect_ids


class Composite(torch.autograd.Function):
    """Tile compositing (kernels/rasterize.py). Outputs image [H,W,3], alpha [H,W],
    pixel_count [N] i32 and blend_weight [N] f32 (the last two without grad)."""

    @staticmethod
    def forward(ctx, means2d, conics, opacities, colors, background, tile_start, tile_end, isect_ids,
                width: int, height: int):
        dev, n = means2d.device, means2d.shape[0]
        tiles_x = -(-width // TILE_SIZE)
        image = background.expand(height, width, 3).contiguous()
        T_final = torch.ones(height, width, device=dev)
        last = torch.zeros(height, width, dtype=torch.int32, device=dev)
        pixel_count = torch.zeros(n, dtype=torch.int32, device=dev)
        blend_weight = torch.zeros(n, device=dev)
        if isect_ids.numel() > 0:
            launch(rasterize.rasterize_fwd, tile_start, tile_end, isect_ids, means2d, conics, opacities, colors,
                   background, tiles_x, image, T_final, last, pixel_count, blend_weight)
        ctx.save_for_backward(means2d, conics, opacities, colors, background, tile_start, isect_ids, T_final, last)
        ctx.mark_non_differentiable(pixel_count, blend_weight)
        return image, 1.0 - T_final, pixel_count, blend_weight

    @staticmethod
    def backward(ctx, v_image, v_alpha, *_):
        means2d, conics, opacities, colors, background, tile_start, isect_ids, T_final, last = ctx.saved_tensors
        v_image = _grad_or_zeros(v_image, (*T_final.shape, 3), T_final.device)
        v_alpha = _grad_or_zeros(v_alpha, T_final.shape, T_final.device)
        grads = [torch.zeros_like(t) for t in (means2d, conics, opacities, colors)]
        if isect_ids.numel() > 0:
            tiles_x = -(-T_final.shape[1] // TILE_SIZE)
            launch(rasterize.rasterize_bwd, tile_start, isect_ids, means2d, conics, opacities, colors, background,
                   tiles_x, T_final, last, v_image, v_alpha, *grads)
        v_background = (T_final[..., None] * v_image).sum((0, 1)) if ctx.needs_input_grad[4] else None
        return (*grads, v_background, None, None, None, None, None)
