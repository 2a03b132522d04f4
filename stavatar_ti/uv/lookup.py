"""Bilinear lookup of UV-space maps at per-Gaussian UV coordinates (method.md Sec. 4.5)."""

from __future__ import annotations

import torch
import torch.nn.functional as F


def lookup_uv(maps: torch.Tensor, uvs: torch.Tensor, flip_v: bool = False, align_corners: bool = False) -> torch.Tensor:
    """Sample [B,C,H,W] maps (stored upright, row ~ (1 - v) H) at [N,2] UVs (differentiable).

    Args:
        maps: [B,C,H,W].
        uvs: [N,2] OBJ-convention UVs in [0,1]^2.
        flip_v: False (default) reads the texel the UV was rasterised to (grid y = 1 - 2v);
            True reproduces the official code, which reads the vertically mirrored location
            (grid y = 2v - 1; method.md Sec. 4.5, config `uv_lookup_flip_v`).
        align_corners: False (default) maps u to texel centres exactly as the UV rasteriser does
            ((j + 0.5) / W); True is the official code's convention (u = 0 and 1 at the centres of
            the first and last texel; a (W-1)/W scale mismatch).
    Returns:
        [B,N,C]; bilinear, border padding.
    """
    if maps.ndim != 4:
        raise ValueError(f"maps: expected [B,C,H,W], got {list(maps.shape)}")
    if uvs.ndim != 2 or uvs.shape[1] != 2:
        raise ValueError(f"uvs: expected [N,2], got {list(uvs.shape)}")
    gx = 2.0 * uvs[:, 0] - 1.0
    gy = 2.0 * uvs[:, 1] - 1.0 if flip_v else 1.0 - 2.0 * uvs[:, 1]
    grid = torch.stack([gx, gy], -1).to(maps)[None, None].expand(maps.shape[0], 1, -1, 2)
    out = F.grid_sample(maps, grid, mode="bilinear", padding_mode="border", align_corners=align_corners)
    return out[:, :, 0].transpose(1, 2)
