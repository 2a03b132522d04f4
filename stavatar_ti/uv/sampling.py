"""Per-Gaussian UV coordinates by "hybrid sampling by binding" (method.md Sec. 4.4).

For every face f with n_f bound Gaussians and M_f covered texels (row-major order) of a UV raster:
- M_f >= n_f: n_f evenly spaced texels, index floor(linspace(0, M_f - 1, n_f)); the middle texel
  floor(M_f / 2) when n_f = 1;
- 1 <= M_f < n_f: all M_f texels, then n_f - M_f texels drawn uniformly with replacement;
- M_f = 0 (sub-texel or culled faces): n_f uniform barycentrics with the square-root trick
  a = sqrt(r1), bary = (1 - a, a (1 - r2), a r2) (Osada et al. 2002).
u_i = sum_k bary_k uv(corner k of the bound face's UV triangle), OBJ convention in [0,1]^2.
"""

from __future__ import annotations

import torch

from .raster import UVRaster


def sample_gaussian_uvs(binding: torch.Tensor, raster: UVRaster, uv_coords: torch.Tensor, uv_faces: torch.Tensor,
                        generator: torch.Generator | None = None) -> torch.Tensor:
    """UV coordinate of every Gaussian inside its bound face's UV triangle.

    Args:
        binding: [N] int64 face ids (each Gaussian's triangle).
        raster: UV raster of the layout (STAvatar: 256^2 with back-face culling).
        uv_coords: [T,2], uv_faces: [F,3] (the layout the raster was made from).
        generator: torch.Generator on the CPU for the random draws (reproducibility).
    Returns:
        [N,2] float32 UVs on binding's device.
    Raises:
        ValueError: binding out of range of the faces.
    """
    dev = binding.device
    num_faces = uv_faces.shape[0]
    n = binding.shape[0]
    if n and (binding.min() < 0 or binding.max() >= num_faces):
        raise ValueError("binding: face index out of range")
    binding = binding.long().cpu()
    fid = raster.face_id.flatten().cpu()
    bary_px = raster.bary.reshape(-1, 3).cpu()
    # texels grouped by face, row-major inside each group
    covered = torch.nonzero(fid >= 0).squeeze(1)
    order = covered[torch.argsort(fid[covered], stable=True)]
    counts = torch.bincount(fid[covered], minlength=num_faces)
    starts = torch.cumsum(counts, 0) - counts
    # rank of each Gaussian among those bound to the same face
    gorder = torch.argsort(binding, stable=True)
    n_f = torch.bincount(binding, minlength=num_faces)
    rank = torch.empty(n, dtype=torch.long)
    rank[gorder] = torch.arange(n) - (torch.cumsum(n_f, 0) - n_f)[binding[gorder]]
    M, nf = counts[binding], n_f[binding]
    spaced = torch.where(nf == 1, M // 2, (rank * (M - 1)) // (nf - 1).clamp_min(1))
    extra = (torch.rand(n, generator=generator) * M.clamp_min(1)).long().clamp_max((M - 1).clamp_min(0))
    pick = torch.where(M >= nf, spaced, torch.where(rank < M, rank, extra))
    bary = bary_px[order[(starts[binding] + pick).clamp(0, max(order.numel() - 1, 0))]] if order.numel() \
        else torch.zeros(n, 3)
    r1, r2 = torch.rand(n, generator=generator), torch.rand(n, generator=generator)
    a = r1.sqrt()
    random_bary = torch.stack([1 - a, a * (1 - r2), a * r2], -1)
    bary = torch.where((M == 0)[:, None], random_bary, bary)
    corners = uv_coords.detach().cpu().float()[uv_faces.cpu().long()[binding]]  # [N,3,2]
    return (bary[..., None] * corners).sum(1).to(dev)
