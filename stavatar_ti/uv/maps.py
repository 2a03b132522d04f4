"""UV position and displacement maps, the network's geometric inputs (method.md Sec. 4.2-4.3)."""

from __future__ import annotations

import torch

from .raster import UVRaster, interpolate_attributes


def normalize_minmax(vertices: torch.Tensor) -> torch.Tensor:
    """Per-mesh, per-axis min-max normalisation to [-1, 1]: x' = 2 (x - min) / (max - min) - 1.

    Args:
        vertices: [B,V,3]. Returns a new tensor (the input is not modified, unlike the official code).
    """
    lo = vertices.amin(1, keepdim=True)
    hi = vertices.amax(1, keepdim=True)
    return 2.0 * (vertices - lo) / (hi - lo).clamp_min(1e-12) - 1.0


def uv_position_map(vertices: torch.Tensor, faces: torch.Tensor, raster: UVRaster) -> torch.Tensor:
    """UV_pos: the min-max normalised mesh rasterised into UV space.

    Args:
        vertices: [B,V,3] posed mesh (for STAvatar, frame 0 with tracked parameters).
        faces: [F,3] mesh faces matching the UV layout of `raster`.
        raster: `rasterize_uv(uv_coords, uv_faces, 256)` (no culling).
    Returns:
        [B,3,H,W] in [-1,1] on covered texels, 0 elsewhere.
    """
    return interpolate_attributes(raster, faces, normalize_minmax(vertices))


def uv_displacement_map(vertices: torch.Tensor, faces: torch.Tensor, raster: UVRaster,
                        position_map: torch.Tensor) -> torch.Tensor:
    """UV_disp(t) = UV(normalise(V_t)) - UV_pos, detached (no gradient to the FLAME parameters).

    Args:
        vertices: [B,V,3] posed mesh of frame t. position_map: [1 or B,3,H,W] UV_pos.
    Returns:
        [B,3,H,W].
    """
    with torch.no_grad():
        return uv_position_map(vertices.detach(), faces, raster) - position_map


def uv_region_masks(regions: dict, faces: torch.Tensor, raster: UVRaster, num_vertices: int) -> dict:
    """Binary UV masks of named vertex regions (method.md Sec. 2, "region masks").

    Each region's vertices are painted 1, the indicator is interpolated into UV space and
    thresholded at > 0, as the official masks were made from FLAME_masks vertex sets.

    Args:
        regions: name -> [K] int64 vertex ids (e.g. FlameModel.regions).
        faces: [F,3] mesh faces of the raster's UV layout. num_vertices: V.
    Returns:
        name -> [H,W] bool mask (upright, row ~ (1 - v) H).
    """
    out = {}
    for name, ids in regions.items():
        paint = torch.zeros(1, num_vertices, 1, device=faces.device)
        paint[0, ids.to(faces.device).long(), 0] = 1.0
        out[name] = interpolate_attributes(raster, faces, paint)[0, 0] > 0
    return out
