"""UV-layout rasterisation (Taichi kernel `kernels/uv_raster.py`) and per-texel interpolation of
per-vertex attributes (method.md Sec. 4.1)."""

from __future__ import annotations

from dataclasses import dataclass

import torch

from ..kernels import uv_raster
from ..render.runtime import launch
from ..render.validation import check_positive_int


@dataclass
class UVRaster:
    """face_id [H,W] int64 (-1 = no face), bary [H,W,3] float32 (barycentrics of the texel centre
    in that face). Texel (i, j) has its centre at u = (j+0.5)/W, v = 1-(i+0.5)/H (stored upright)."""

    face_id: torch.Tensor
    bary: torch.Tensor

    @property
    def mask(self) -> torch.Tensor:
        """[H,W] bool, texels covered by a face."""
        return self.face_id >= 0


def rasterize_uv(uv_coords: torch.Tensor, uv_faces: torch.Tensor, size=256, cull_backfaces: bool = False) -> UVRaster:
    """Rasterise the UV triangles: which face covers each texel centre, and where.

    Args:
        uv_coords: [T,2] float, OBJ-convention UVs (v up) in [0,1].
        uv_faces: [F,3] int, indices into uv_coords.
        size: int or (H, W).
        cull_backfaces: skip triangles that are not counter-clockwise in (u, v).
    Returns:
        UVRaster on uv_coords' device.
    Raises:
        ValueError: bad shapes, indices out of range, or a bad size.
    """
    H, W = (size, size) if isinstance(size, int) else tuple(size)
    H, W = check_positive_int(H, "size"), check_positive_int(W, "size")
    if not torch.is_tensor(uv_coords) or uv_coords.ndim != 2 or uv_coords.shape[1] != 2:
        raise ValueError("uv_coords: expected a [T,2] tensor")
    if not torch.is_tensor(uv_faces) or uv_faces.ndim != 2 or uv_faces.shape[1] != 3:
        raise ValueError("uv_faces: expected an [F,3] tensor")
    if uv_faces.numel() and (uv_faces.min() < 0 or uv_faces.max() >= uv_coords.shape[0]):
        raise ValueError("uv_faces: index out of range of uv_coords")
    dev = uv_coords.device
    uv = uv_coords.detach().to(torch.float32).contiguous()
    faces = uv_faces.to(device=dev, dtype=torch.int32).contiguous()
    face_id = torch.full((H, W), faces.shape[0], dtype=torch.int32, device=dev)
    bary = torch.zeros(H, W, 3, device=dev)
    if faces.shape[0] > 0:
        launch(uv_raster.uv_coverage, uv, faces, int(cull_backfaces), face_id)
    launch(uv_raster.uv_barycentrics, uv, faces, face_id, bary)
    return UVRaster(face_id=face_id.long(), bary=bary)


def interpolate_attributes(raster: UVRaster, faces: torch.Tensor, attributes: torch.Tensor) -> torch.Tensor:
    """Barycentric interpolation of per-vertex attributes into UV space (differentiable).

    Args:
        raster: from `rasterize_uv` of the mesh's UV layout.
        faces: [F,3] mesh vertex ids (face f of the UV layout is mesh face f).
        attributes: [B,V,C] per-vertex values.
    Returns:
        [B,C,H,W] maps (CHW), 0 where no face covers the texel.
    """
    if attributes.ndim != 3:
        raise ValueError(f"attributes: expected [B,V,C], got {list(attributes.shape)}")
    mask = raster.mask
    fid = raster.face_id.clamp_min(0)
    corner_ids = faces.to(attributes.device)[fid]  # [H,W,3]
    values = attributes[:, corner_ids]  # [B,H,W,3,C]
    out = (values * raster.bary.to(attributes)[None, ..., None]).sum(-2) * mask[None, ..., None]
    return out.permute(0, 3, 1, 2).contiguous()
