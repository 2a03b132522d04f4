"""UV machinery: the Taichi UV rasteriser against brute force, maps, hybrid sampling, lookup."""

import numpy as np
import pytest
import torch

from conftest import DEVICE
from stavatar_ti.uv import (interpolate_attributes, lookup_uv, normalize_minmax, rasterize_uv,
                            sample_gaussian_uvs, uv_displacement_map, uv_position_map)


def cross2(p, q):
    return p[0] * q[1] - p[1] * q[0]


def brute_force_uv_raster(uv, faces, H, W, cull):
    """Per texel, per face, float64: lowest face id whose barycentrics are all >= -1e-5."""
    face_id = np.full((H, W), -1, dtype=np.int64)
    bary = np.zeros((H, W, 3))
    for i in range(H):
        for j in range(W):
            p = np.array([(j + 0.5) / W, 1.0 - (i + 0.5) / H])
            for f, (a, b, c) in enumerate(uv[faces]):
                area = cross2(b - a, c - a)
                if area == 0 or (cull and area <= 0):
                    continue
                w0 = cross2(b - p, c - p) / area
                w1 = cross2(c - p, a - p) / area
                w = np.array([w0, w1, 1 - w0 - w1])
                if w.min() >= -1e-5:
                    face_id[i, j], bary[i, j] = f, w
                    break
    return face_id, bary


def random_layout(seed, n=16):
    rng = np.random.default_rng(seed)
    centres = rng.random((n, 2)) * 0.9 + 0.05
    uv = (centres[:, None] + rng.normal(0, 0.25, (n, 3, 2))).clip(0, 1).reshape(-1, 2)
    return uv, np.arange(3 * n).reshape(n, 3)


@pytest.mark.parametrize("cull", [False, True])
@pytest.mark.parametrize("H,W,seed", [(29, 37, 0), (16, 16, 1), (1, 1, 2), (40, 9, 3)])
def test_uv_raster_matches_brute_force(H, W, seed, cull):
    uv, faces = random_layout(seed)
    ref_id, ref_bary = brute_force_uv_raster(uv, faces, H, W, cull)
    out = rasterize_uv(torch.tensor(uv, dtype=torch.float32, device=DEVICE), torch.tensor(faces, device=DEVICE),
                       (H, W), cull_backfaces=cull)
    assert np.array_equal(out.face_id.cpu().numpy(), ref_id)
    assert np.allclose(out.bary.cpu().numpy(), ref_bary, atol=2e-5)
    if H > 1:  # the scene covers a good share of the texels (half of the faces are culled with cull)
        assert (ref_id >= 0).sum() > (0.1 if cull else 0.2) * H * W


def test_uv_raster_orientation_and_culling():
    # a counter-clockwise triangle near the top of the UV square (v ~ 0.97) and its clockwise twin
    uv = torch.tensor([[0.1, 0.95], [0.4, 0.95], [0.25, 0.99], [0.6, 0.95], [0.75, 0.99], [0.9, 0.95]])
    faces = torch.tensor([[0, 1, 2], [3, 4, 5]])
    kept = rasterize_uv(uv, faces, 256)
    rows = torch.nonzero(kept.face_id == 0)[:, 0]
    assert rows.min() >= 2 and rows.max() <= 13  # row ~ (1 - v) * 256
    assert (kept.face_id == 1).sum() > 0
    culled = rasterize_uv(uv, faces, 256, cull_backfaces=True)
    assert (culled.face_id == 1).sum() == 0 and torch.equal(culled.face_id == 0, kept.face_id == 0)


def grid_mesh(n=9, lo=0.1, hi=0.9):
    """A planar grid whose UVs equal its (x, y) positions, two counter-clockwise triangles per cell."""
    t = torch.linspace(lo, hi, n)
    yy, xx = torch.meshgrid(t, t, indexing="ij")
    uv = torch.stack([xx.flatten(), yy.flatten()], -1)
    faces = []
    for r in range(n - 1):
        for c in range(n - 1):
            a, b, d, e = r * n + c, r * n + c + 1, (r + 1) * n + c, (r + 1) * n + c + 1
            faces += [(a, b, e), (a, e, d)]
    return uv, torch.tensor(faces)


def test_map_sampled_at_vertex_uv_returns_vertex_attribute():
    uv, faces = grid_mesh()
    raster = rasterize_uv(uv, faces, 64)
    attr = torch.stack([2 * uv[:, 0] - 0.3, -uv[:, 1], uv[:, 0] + 3 * uv[:, 1]], -1)  # affine in (u, v)
    maps = interpolate_attributes(raster, faces, attr[None])
    assert maps.shape == (1, 3, 64, 64)
    interior = ((uv > 0.15) & (uv < 0.85)).all(-1)
    got = lookup_uv(maps, uv[interior])[0]
    assert torch.allclose(got, attr[interior], atol=1e-5)
    # the official-code switches read elsewhere: the mirrored row, and a (W-1)/W scaled grid
    mirrored = uv[interior] * torch.tensor([1.0, -1.0]) + torch.tensor([0.0, 1.0])
    assert torch.allclose(lookup_uv(maps, uv[interior], flip_v=True), lookup_uv(maps, mirrored))
    assert not torch.allclose(lookup_uv(maps, uv[interior], align_corners=True)[0], attr[interior], atol=1e-3)


def test_position_and_displacement_maps():
    uv, faces = grid_mesh()
    raster = rasterize_uv(uv, faces, 32)
    g = torch.Generator().manual_seed(0)
    verts = torch.randn(1, uv.shape[0], 3, generator=g)
    original = verts.clone()
    pos = uv_position_map(verts, faces, raster)
    assert torch.equal(verts, original)  # normalisation works on a copy
    covered = raster.mask
    assert pos[0][:, covered].min() >= -1 - 1e-6 and pos[0][:, covered].max() <= 1 + 1e-6
    assert (pos[0][:, ~covered] == 0).all()
    norm = normalize_minmax(verts)
    assert torch.allclose(norm.amin(1), -torch.ones(1, 3)) and torch.allclose(norm.amax(1), torch.ones(1, 3))
    moved = (verts * 1.0).requires_grad_()
    disp = uv_displacement_map(moved * torch.tensor([1.0, 1.3, 1.0]) + 0.2, faces, raster, pos)
    assert not disp.requires_grad
    assert torch.allclose(disp, torch.zeros_like(disp), atol=1e-5)  # min-max removes scale and shift
    bent = verts.clone()
    bent[0, 40, 2] += 1.0
    assert uv_displacement_map(bent, faces, raster, pos).abs().max() > 0.05


def test_hybrid_sampling_rules():
    uv, faces = grid_mesh(n=5)  # 32 faces, each about 0.02 UV^2 -> tens of texels at 64^2
    # add a sub-texel face (no texel centre inside) and a clockwise face (culled)
    uv = torch.cat([uv, torch.tensor([[0.951, 0.951], [0.952, 0.951], [0.951, 0.952],
                                      [0.02, 0.02], [0.02, 0.08], [0.08, 0.02]])])
    faces = torch.cat([faces, torch.tensor([[25, 26, 27], [28, 29, 30]])])
    raster = rasterize_uv(uv, faces, 64, cull_backfaces=True)
    counts = torch.bincount(raster.face_id[raster.mask], minlength=faces.shape[0])
    assert counts[32] == 0 and counts[33] == 0 and (counts[:32] > 10).all()
    binding = torch.cat([torch.zeros(1), torch.full((3,), 1), torch.full((200,), 2), torch.full((5,), 32),
                         torch.full((4,), 33), torch.arange(3, 32)]).long()
    gen = torch.Generator().manual_seed(0)
    uvs = sample_gaussian_uvs(binding, raster, uv, faces, generator=gen)
    # every UV lies inside its bound face's UV triangle
    a, b, c = (uv[faces[binding, k]] for k in range(3))
    cross = lambda p, q: p[:, 0] * q[:, 1] - p[:, 1] * q[:, 0]  # noqa: E731
    area = cross(b - a, c - a)
    w0, w1 = cross(b - uvs, c - uvs) / area, cross(c - uvs, a - uvs) / area
    assert (torch.stack([w0, w1, 1 - w0 - w1], -1) >= -1e-5).all()
    # n_f = 1: the middle texel (row-major) of the face
    texels = torch.nonzero(raster.face_id.flatten() == 0).squeeze(1)
    mid = texels[texels.numel() // 2]
    i, j = mid // 64, mid % 64
    assert torch.allclose(uvs[0], torch.tensor([(j + 0.5) / 64, 1 - (i + 0.5) / 64]), atol=1e-5)
    # n_f = 3 <= M: first, middle and last texel of the face
    texels = torch.nonzero(raster.face_id.flatten() == 1).squeeze(1)
    picks = texels[torch.tensor([0, (texels.numel() - 1) // 2, texels.numel() - 1])]
    expected = torch.stack([(picks % 64 + 0.5) / 64, 1 - (picks // 64 + 0.5) / 64], -1).float()
    assert torch.allclose(uvs[1:4], expected, atol=1e-5)
    # n_f = 200 > M: every texel of the face is used, the rest are repeats of its texels
    face2 = uvs[4:204]
    texel_uvs = torch.stack([(torch.nonzero(raster.face_id == 2)[:, 1] + 0.5) / 64,
                             1 - (torch.nonzero(raster.face_id == 2)[:, 0] + 0.5) / 64], -1)
    dist = torch.cdist(face2.double(), texel_uvs.double())
    assert (dist.min(1).values < 1e-5).all() and (dist.min(0).values < 1e-5).all()
    # deterministic with the same generator
    again = sample_gaussian_uvs(binding, raster, uv, faces, generator=torch.Generator().manual_seed(0))
    assert torch.equal(uvs, again)
    with pytest.raises(ValueError, match="binding"):
        sample_gaussian_uvs(torch.tensor([99]), raster, uv, faces)


def test_region_masks_cover_faces_around_region_vertices():
    from stavatar_ti.uv import uv_region_masks

    uv, faces = grid_mesh()
    raster = rasterize_uv(uv, faces, 64)
    masks = uv_region_masks({"spot": torch.tensor([40]), "none": torch.tensor([], dtype=torch.long)}, faces, raster,
                            uv.shape[0])
    adjacent = (faces == 40).any(1)
    in_adjacent = adjacent[raster.face_id.clamp_min(0)] & raster.mask
    assert masks["spot"].sum() > 0 and not (masks["spot"] & ~in_adjacent).any()
    assert masks["none"].sum() == 0
