"""Per-Gaussian fused perceptual error (Taichi kernel `kernels/error_gather.py`, method.md Sec. 10.5)."""

from __future__ import annotations

import torch

from ..kernels import error_gather
from ..render.runtime import launch

FORMULAS = {"code": 0, "paper": 1}


def gather_gaussian_error(error_map: torch.Tensor, means2d: torch.Tensor, pixel_count: torch.Tensor,
                          blend_weight: torch.Tensor, formula: str = "code") -> torch.Tensor:
    """Ē_i for every Gaussian from a fused error map and its recorded rasterizer statistics.

    Args:
        error_map: [H,W] float, E(p) (e.g. losses.fused_error_map).
        means2d: [N,2] float pixel centres (RasterOutput.means2d).
        pixel_count: [N] int32 C_i; blend_weight: [N] float A_i.
        formula: "code" (official: window mean x A/(C+1)) or "paper" (window sum x A/C).
    Returns:
        [N] float32, 0 for Gaussians with C_i = 0.
    Raises:
        ValueError: unknown formula or mismatched shapes.
    """
    if formula not in FORMULAS:
        raise ValueError(f"formula: expected one of {sorted(FORMULAS)}, got {formula!r}")
    if error_map.ndim != 2:
        raise ValueError(f"error_map: expected [H,W], got {list(error_map.shape)}")
    n = means2d.shape[0]
    if means2d.shape != (n, 2) or pixel_count.shape != (n,) or blend_weight.shape != (n,):
        raise ValueError("means2d, pixel_count, blend_weight: expected [N,2], [N], [N]")
    dev = error_map.device
    H, W = error_map.shape
    out = torch.zeros(n, device=dev)
    if n == 0:
        return out
    integral = torch.empty(H + 1, W + 1, dtype=torch.float64, device=dev)
    launch(error_gather.integral_rows, error_map.detach().float().contiguous(), integral)
    launch(error_gather.integral_cols, integral)
    launch(error_gather.gather_error, integral, means2d.detach().float().contiguous(),
           pixel_count.to(torch.int32).contiguous(), blend_weight.detach().float().contiguous(), FORMULAS[formula], out)
    return out
