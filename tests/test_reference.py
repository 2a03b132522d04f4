"""Tests proving the float64 twin in ``tests/reference.py`` implements the contract.

The twin is the oracle for the Taichi rasterizer, so it has to be validated
independently of the Taichi code.  The checks here are:

1. ``torch.autograd.gradcheck`` of the full rasterizer on tiny scenes chosen so
   that no discrete decision (skip / stop / tile / cull / radius / clamps) flips
   under the finite-difference perturbation (asserted explicitly), w.r.t.
   means, quats, scales, opacities, colors, background and, separately, SH
   coefficients at degree 3.  Plus a gradcheck of the projection with the
   ``J`` clamp active, the zero gradient of ``min(0.99, .)`` and a
   finite-difference check of ``dL/dmeans2d`` obtained via ``retain_grad``.
2. Closed-form single-Gaussian cases (alpha = 0.5 exactly at the centre pixel;
   means2d / depths / radii / Sigma2D of an isotropic Gaussian worked by hand).
3. Agreement with a deliberately naive scalar Python implementation of the
   whole pipeline (projection and per-pixel, per-Gaussian sequential loop) on a
   scene with early stopping, a Gaussian behind the camera, one off screen,
   one in front of the near plane, one with the ``J`` clamp active, and depth
   ties.
4. The tile rule: no contribution outside the Gaussian's tile rectangle even
   where ``alpha > 1/255``.
5. Off-centre principal point and non-multiple-of-16 image sizes incl. 1x1.
Also: SH basis values / orthonormality, chunking and checkpoint invariance,
N = 0 and all-culled scenes.
"""
from __future__ import annotations

import math
import os
import sys

import pytest
import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import reference as ref  # noqa: E402
from reference import (  # noqa: E402
    reference_project,
    reference_rasterize,
    reference_sh_colors,
)

F64 = torch.float64


def t64(x):
    return torch.tensor(x, dtype=F64)


def make_K(fx, fy, cx, cy):
    return t64([[fx, 0.0, cx], [0.0, fy, cy], [0.0, 0.0, 1.0]])


def rot_axis_angle(axis, angle):
    """Rodrigues rotation matrix (plain floats -> float64 tensor)."""
    ax = t64(axis)
    ax = ax / ax.norm()
    x, y, z = ax.tolist()
    c, s = math.cos(angle), math.sin(angle)
    C = 1 - c
    return t64(
        [
            [c + x * x * C, x * y * C - z * s, x * z * C + y * s],
            [y * x * C + z * s, c + y * y * C, y * z * C - x * s],
            [z * x * C - y * s, z * y * C + x * s, c + z * z * C],
        ]
    )


def make_viewmat(R, t):
    V = torch.eye(4, dtype=F64)
    V[:3, :3] = R
    V[:3, 3] = t64(t)
    return V


def cam_to_world(p_cam, viewmat):
    """Inverse of p = R m + t, so scenes can be designed in camera space."""
    R = viewmat[:3, :3]
    t = viewmat[:3, 3]
    return (p_cam - t) @ R  # (R^T (p - t))^T


# --------------------------------------------------------------------------- #
# deliberately naive scalar implementation (plain Python floats, no torch)
# --------------------------------------------------------------------------- #
_C0 = 0.28209479177387814
_C1 = 0.4886025119029199
_C2 = [1.0925484305920792, -1.0925484305920792, 0.31539156525252005, -1.0925484305920792, 0.5462742152960396]
_C3 = [-0.5900435899266435, 2.890611442640554, -0.4570457994644658, 0.3731763325901154,
       -0.4570457994644658, 1.445305721320277, -0.5900435899266435]


def naive_sh_color(coeffs, degree, dx, dy, dz):
    """coeffs: list of K lists [r,g,b]; direction need not be normalised."""
    n = math.sqrt(dx * dx + dy * dy + dz * dz)
    x, y, z = dx / n, dy / n, dz / n
    basis = [_C0]
    if degree >= 1:
        basis += [-_C1 * y, _C1 * z, -_C1 * x]
    if degree >= 2:
        basis += [
            _C2[0] * x * y,
            _C2[1] * y * z,
            _C2[2] * (2 * z * z - x * x - y * y),
            _C2[3] * x * z,
            _C2[4] * (x * x - y * y),
        ]
    if degree >= 3:
        basis += [
            _C3[0] * y * (3 * x * x - y * y),
            _C3[1] * x * y * z,
            _C3[2] * y * (4 * z * z - x * x - y * y),
            _C3[3] * z * (2 * z * z - 3 * x * x - 3 * y * y),
            _C3[4] * x * (4 * z * z - x * x - y * y),
            _C3[5] * z * (x * x - y * y),
            _C3[6] * x * (x * x - 3 * y * y),
        ]
    out = []
    for ch in range(3):
        s = 0.0
        for k, b in enumerate(basis):
            s += b * coeffs[k][ch]
        out.append(max(s + 0.5, 0.0))
    return out


def naive_project_one(mean, quat, scale, V, K, width, height, near):
    """Return None if culled, else dict(u, v, z, conic(a,b,c), r, rect)."""
    R = [[V[i][j] for j in range(3)] for i in range(3)]
    t = [V[i][3] for i in range(3)]
    p = [R[i][0] * mean[0] + R[i][1] * mean[1] + R[i][2] * mean[2] + t[i] for i in range(3)]
    x, y, z = p
    if z < near:
        return None
    qn = math.sqrt(sum(c * c for c in quat))
    w, qx, qy, qz = (c / qn for c in quat)
    Rq = [
        [1 - 2 * (qy * qy + qz * qz), 2 * (qx * qy - w * qz), 2 * (qx * qz + w * qy)],
        [2 * (qx * qy + w * qz), 1 - 2 * (qx * qx + qz * qz), 2 * (qy * qz - w * qx)],
        [2 * (qx * qz - w * qy), 2 * (qy * qz + w * qx), 1 - 2 * (qx * qx + qy * qy)],
    ]
    S3 = [[sum(Rq[i][k] * scale[k] * scale[k] * Rq[j][k] for k in range(3)) for j in range(3)] for i in range(3)]
    # W S3 W^T
    WS = [[sum(R[i][k] * S3[k][j] for k in range(3)) for j in range(3)] for i in range(3)]
    Sc = [[sum(WS[i][k] * R[j][k] for k in range(3)) for j in range(3)] for i in range(3)]
    fx, fy, cx, cy = K[0][0], K[1][1], K[0][2], K[1][2]
    limxn = cx / fx + 0.3 * width / (2 * fx)
    limxp = (width - cx) / fx + 0.3 * width / (2 * fx)
    limyn = cy / fy + 0.3 * height / (2 * fy)
    limyp = (height - cy) / fy + 0.3 * height / (2 * fy)
    tx = z * min(max(x / z, -limxn), limxp)
    ty = z * min(max(y / z, -limyn), limyp)
    J = [[fx / z, 0.0, -fx * tx / (z * z)], [0.0, fy / z, -fy * ty / (z * z)]]
    JS = [[sum(J[i][k] * Sc[k][j] for k in range(3)) for j in range(3)] for i in range(2)]
    S2 = [[sum(JS[i][k] * J[j][k] for k in range(3)) for j in range(2)] for i in range(2)]
    sxx = S2[0][0] + 0.3
    syy = S2[1][1] + 0.3
    sxy = S2[0][1]
    det = sxx * syy - sxy * sxy
    if det <= 0:
        return None
    conic = (syy / det, -sxy / det, sxx / det)
    u = fx * x / z + cx
    v = fy * y / z + cy
    mid = 0.5 * (sxx + syy)
    lam = mid + math.sqrt(max(0.1, mid * mid - det))
    r = math.ceil(3 * math.sqrt(lam))
    if not (u + r > 0 and u - r < width and v + r > 0 and v - r < height):
        return None
    tiles_x = -(-width // 16)
    tiles_y = -(-height // 16)

    def cl(val, hi):
        return min(max(val, 0), hi)

    rect = (
        cl(math.floor((u - r) / 16), tiles_x - 1),
        cl(math.floor((v - r) / 16), tiles_y - 1),
        cl(math.floor((u + r) / 16), tiles_x - 1),
        cl(math.floor((v + r) / 16), tiles_y - 1),
    )
    return dict(u=u, v=v, z=z, conic=conic, r=r, rect=rect, cov=(sxx, sxy, syy))


def naive_rasterize(means, quats, scales, opacities, colors, viewmat, K, width, height,
                    background=None, near=0.01, sh=None, sh_degree=None):
    """Scalar double loop over pixels and depth-sorted Gaussians (rule 5)."""
    means, quats, scales = means.tolist(), quats.tolist(), scales.tolist()
    opacities = opacities.tolist()
    V, Kl = viewmat.tolist(), K.tolist()
    bg = [0.0, 0.0, 0.0] if background is None else background.tolist()
    n = len(means)
    if sh is not None:
        shl = sh.tolist()
        R = [[V[i][j] for j in range(3)] for i in range(3)]
        t = [V[i][3] for i in range(3)]
        cam = [-(R[0][j] * t[0] + R[1][j] * t[1] + R[2][j] * t[2]) for j in range(3)]
        colors = [naive_sh_color(shl[g], sh_degree, means[g][0] - cam[0], means[g][1] - cam[1],
                                 means[g][2] - cam[2]) for g in range(n)]
    else:
        colors = colors.tolist()
    proj = [naive_project_one(means[g], quats[g], scales[g], V, Kl, width, height, near) for g in range(n)]
    vis = [g for g in range(n) if proj[g] is not None]
    vis.sort(key=lambda g: (proj[g]["z"], g))
    image = [[[0.0] * 3 for _ in range(width)] for _ in range(height)]
    alpha = [[0.0] * width for _ in range(height)]
    count = [0] * n
    blend = [0.0] * n
    stopped = 0
    for i in range(height):
        for j in range(width):
            T = 1.0
            c = [0.0, 0.0, 0.0]
            for g in vis:
                P = proj[g]
                x0, y0, x1, y1 = P["rect"]
                if not (x0 <= j // 16 <= x1 and y0 <= i // 16 <= y1):
                    continue
                dx = j + 0.5 - P["u"]
                dy = i + 0.5 - P["v"]
                a, b, cc = P["conic"]
                power = -0.5 * (a * dx * dx + cc * dy * dy) - b * dx * dy
                if power > 0:
                    continue
                al = min(0.99, opacities[g] * math.exp(power))
                if al < 1.0 / 255.0:
                    continue
                nt = T * (1.0 - al)
                if nt < 1e-4:
                    stopped += 1
                    break
                for ch in range(3):
                    c[ch] += T * al * colors[g][ch]
                count[g] += 1
                blend[g] += T * al
                T = nt
            for ch in range(3):
                image[i][j][ch] = c[ch] + T * bg[ch]
            alpha[i][j] = 1.0 - T
    return dict(image=t64(image).reshape(height, width, 3), alpha=t64(alpha).reshape(height, width),
                pixel_count=torch.tensor(count, dtype=torch.int64), blend_weight=t64(blend), proj=proj,
                stopped=stopped)


def assert_matches_naive(out, nv, atol=1e-9):
    torch.testing.assert_close(out["image"].detach(), nv["image"], atol=atol, rtol=0)
    torch.testing.assert_close(out["alpha"].detach(), nv["alpha"], atol=atol, rtol=0)
    assert torch.equal(out["pixel_count"], nv["pixel_count"])
    torch.testing.assert_close(out["blend_weight"].detach(), nv["blend_weight"], atol=atol, rtol=0)
    for g, P in enumerate(nv["proj"]):
        if P is None:
            assert int(out["radii"][g]) == 0 and not bool(out["visible"][g])
            continue
        assert int(out["radii"][g]) == P["r"]
        assert tuple(out["tile_rect"][g].tolist()) == P["rect"]
        torch.testing.assert_close(out["means2d"][g].detach(), t64([P["u"], P["v"]]), atol=1e-10, rtol=0)
        torch.testing.assert_close(out["depths"][g].detach(), t64(P["z"]), atol=1e-12, rtol=0)
        torch.testing.assert_close(out["conics"][g].detach(), t64(list(P["conic"])), atol=1e-10, rtol=1e-10)


# --------------------------------------------------------------------------- #
# scenes
# --------------------------------------------------------------------------- #
def naive_scene():
    """12 Gaussians on a 20x18 image (2x2 tiles), generic camera pose."""
    W, H = 20, 18
    K = make_K(30.0, 28.0, 9.3, 8.1)
    viewmat = make_viewmat(rot_axis_angle([0.3, -0.5, 0.8], 0.4), [0.2, -0.1, 0.5])
    p_cam = t64([
        [0.00, 0.00, 3.0],    # 0  \
        [0.02, 0.01, 3.2],    # 1   |
        [-0.03, 0.02, 3.5],   # 2   | stacked, high opacity -> early stop
        [0.10, 0.10, -2.0],   # 3   |  behind the camera
        [5.00, 0.00, 3.0],    # 4   |  far off screen (right)
        [0.00, 0.00, 0.005],  # 5   |  in front of the near plane
        [0.30, 0.30, 4.0],    # 6   |  large, crosses tile borders, partly hidden
        [0.08, -0.06, 2.5],   # 7   |
        [-0.06, 0.07, 2.6],   # 8  /
        [-1.00, 0.00, 2.0],   # 9  left of the J clamp limit, big, partly visible
        [(5.0 - 9.3) * 3.0 / 30.0, (4.0 - 8.1) * 3.0 / 28.0, 3.0],      # 10 small, tile (0,0) only
        [(19.5 - 9.3) * 2.8 / 30.0, (17.5 - 8.1) * 2.8 / 28.0, 2.8],    # 11 small, tiles x 1, y 0..1
    ])
    means = cam_to_world(p_cam, viewmat)
    g = torch.Generator().manual_seed(1)
    quats = torch.randn(12, 4, generator=g, dtype=F64)
    scales = t64([
        [0.30, 0.27, 0.285], [0.27, 0.30, 0.285], [0.30, 0.315, 0.30], [0.2, 0.2, 0.2],
        [0.10, 0.10, 0.10], [0.05, 0.05, 0.05], [0.50, 0.40, 0.30], [0.24, 0.33, 0.15],
        [0.33, 0.27, 0.30], [0.50, 0.45, 0.40], [0.05, 0.04, 0.06], [0.03, 0.03, 0.03],
    ])
    # 2 has opacity > 0.99 so its alpha is clamped near its centre
    opac = t64([0.97, 0.98, 0.995, 0.9, 0.9, 0.9, 0.6, 0.97, 0.98, 0.5, 0.9, 0.85])
    colors = torch.rand(12, 3, generator=g, dtype=F64)
    return dict(means=means, quats=quats, scales=scales, opacities=opac, colors=colors,
                viewmat=viewmat, K=K, width=W, height=H)


def tiny_scene():
    """4 Gaussians, 12x10 image (single tile), safe for finite differences."""
    W, H = 12, 10
    K = make_K(14.0, 13.0, 5.7, 5.2)
    viewmat = make_viewmat(rot_axis_angle([0.2, 1.0, -0.3], 0.3), [0.1, 0.05, 0.3])
    p_cam = t64([
        [0.00, 0.00, 2.0],
        [0.10, -0.05, 2.3],
        [-0.20, 0.15, 2.6],
        [0.25, 0.25, 3.0],
    ])
    means = cam_to_world(p_cam, viewmat)
    quats = t64([[0.9, 0.1, -0.2, 0.3], [0.5, 0.5, 0.1, -0.4], [1.0, 0.0, 0.3, 0.1], [0.2, 0.8, 0.4, 0.1]])
    scales = t64([[0.12, 0.08, 0.10], [0.10, 0.14, 0.06], [0.16, 0.10, 0.12], [0.20, 0.15, 0.10]])
    opac = t64([0.97, 0.95, 0.9, 0.7])
    colors = t64([[0.9, 0.2, 0.1], [0.1, 0.8, 0.3], [0.2, 0.3, 0.9], [0.6, 0.6, 0.2]])
    bg = t64([0.1, 0.2, 0.3])
    return dict(means=means, quats=quats, scales=scales, opacities=opac, colors=colors,
                viewmat=viewmat, K=K, width=W, height=H, background=bg)


def assert_no_discrete_flip(scene, margin=1e-4):
    """Check the scene is far from every discrete threshold of rules 1-5.

    Finite differences in gradcheck perturb inputs by 1e-6, moving alphas and
    transmittances by well under 1e-5, so margins of 1e-4 are ample.
    """
    W, H = scene["width"], scene["height"]
    p = reference_project(scene["means"], scene["quats"], scene["scales"], scene["viewmat"],
                          scene["K"], W, H)
    assert bool(p["visible"].all())
    r = p["radii"].to(F64)
    u, v = p["means2d"][:, 0].detach(), p["means2d"][:, 1].detach()
    for edge in (u + r, W - (u - r), v + r, H - (v - r)):   # on-screen test
        assert bool((edge > margin).all())
    # tile rect: both bounds of every Gaussian stay in the same tile
    for val in (u - r, u + r, v - r, v + r):
        frac = torch.remainder(val, 16.0)
        assert bool(((frac > margin) & (frac < 16 - margin)).all())
    # radius: 3 sqrt(lambda) not near an integer
    cov = p["cov2d"].detach()
    mid = 0.5 * (cov[:, 0] + cov[:, 2])
    det = cov[:, 0] * cov[:, 2] - cov[:, 1] ** 2
    assert bool(((mid * mid - det) - 0.1).abs().gt(margin).all())
    lam = mid + torch.sqrt(torch.clamp(mid * mid - det, min=0.1))
    s = 3 * torch.sqrt(lam)
    assert bool(((s - s.round()).abs() > margin).all())
    # J clamp (rule 2) not at its boundary
    K = scene["K"]
    fx, fy, cx, cy = (float(K[0, 0]), float(K[1, 1]), float(K[0, 2]), float(K[1, 2]))
    Vm = scene["viewmat"]
    pc = scene["means"] @ Vm[:3, :3].T + Vm[:3, 3]
    for ratio, lims in ((pc[:, 0] / pc[:, 2], (-(cx / fx + 0.15 * W / fx), (W - cx) / fx + 0.15 * W / fx)),
                        (pc[:, 1] / pc[:, 2], (-(cy / fy + 0.15 * H / fy), (H - cy) / fy + 0.15 * H / fy))):
        assert bool(((ratio - lims[0]).abs() > margin).all() and ((ratio - lims[1]).abs() > margin).all())
    # compositing thresholds
    con = p["conics"].detach()
    jj, ii = torch.meshgrid(torch.arange(W, dtype=F64) + 0.5, torch.arange(H, dtype=F64) + 0.5, indexing="xy")
    dx = jj.reshape(-1, 1) - u[None]
    dy = ii.reshape(-1, 1) - v[None]
    power = -0.5 * (con[:, 0] * dx * dx + con[:, 2] * dy * dy) - con[:, 1] * dx * dy
    araw = scene["opacities"][None] * torch.exp(power)
    assert bool(((araw - ref.ALPHA_MIN).abs() > margin * ref.ALPHA_MIN).all())
    assert bool(((araw - ref.ALPHA_MAX).abs() > margin).all())
    order = torch.argsort(p["depths"].detach(), stable=True)
    a = torch.where(araw >= ref.ALPHA_MIN, torch.clamp(araw, max=ref.ALPHA_MAX), torch.zeros_like(araw))[:, order]
    tinc = torch.cumprod(1 - a, dim=1)
    assert bool((torch.log(tinc / ref.T_MIN).abs() > 1e-3).all())
    return tinc


def _run(scene, **kw):
    s = dict(scene)
    s.update(kw)
    args = [s.pop(k) for k in ("means", "quats", "scales", "opacities")]
    colors = s.pop("colors", None)
    return reference_rasterize(*args, colors, **s)


# --------------------------------------------------------------------------- #
# (1) gradients
# --------------------------------------------------------------------------- #
def test_gradcheck_tiny_scene_colors():
    sc = tiny_scene()
    tinc = assert_no_discrete_flip(sc)
    assert bool((tinc[:, -1] < 0.9).any())  # the scene actually covers pixels
    inputs = tuple(sc[k].clone().requires_grad_(True)
                   for k in ("means", "quats", "scales", "opacities", "colors", "background"))

    def f(means, quats, scales, opac, colors, bg):
        out = reference_rasterize(means, quats, scales, opac, colors, viewmat=sc["viewmat"], K=sc["K"],
                                  width=sc["width"], height=sc["height"], background=bg)
        return out["image"], out["alpha"], out["blend_weight"], out["means2d"], out["depths"]

    assert torch.autograd.gradcheck(f, inputs, eps=1e-6, atol=1e-7, rtol=1e-5)


def test_gradcheck_tiny_scene_with_early_stop():
    """Same tiny scene with all opacities near 0.98: early stopping occurs."""
    sc = tiny_scene()
    sc["means"] = cam_to_world(t64([[0.0, 0.0, 2.0], [0.03, -0.02, 2.3], [-0.02, 0.03, 2.6], [0.25, 0.25, 3.0]]),
                               sc["viewmat"])
    sc["opacities"] = t64([0.97, 0.96, 0.98, 0.7])
    sc["scales"] = t64([[0.30, 0.25, 0.28], [0.28, 0.30, 0.25], [0.30, 0.32, 0.30], [0.20, 0.15, 0.10]])
    tinc = assert_no_discrete_flip(sc)
    assert bool((tinc < ref.T_MIN).any()), "scene must trigger the early stop"
    inputs = tuple(sc[k].clone().requires_grad_(True) for k in ("means", "scales", "opacities", "colors"))

    def f(means, scales, opac, colors):
        out = reference_rasterize(means, sc["quats"], scales, opac, colors, viewmat=sc["viewmat"], K=sc["K"],
                                  width=sc["width"], height=sc["height"], background=sc["background"])
        return out["image"], out["alpha"], out["blend_weight"]

    assert torch.autograd.gradcheck(f, inputs, eps=1e-6, atol=1e-7, rtol=1e-5)
    # the forward of this scene agrees with the scalar loop as well
    out = _run(sc)
    nv = naive_rasterize(sc["means"], sc["quats"], sc["scales"], sc["opacities"], sc["colors"], sc["viewmat"],
                         sc["K"], sc["width"], sc["height"], background=sc["background"])
    assert_matches_naive(out, nv)
    assert nv["stopped"] > 0


def test_gradcheck_sh_degree3():
    sc = tiny_scene()
    assert_no_discrete_flip(sc)
    g = torch.Generator().manual_seed(3)
    sh = 0.15 * torch.randn(4, 16, 3, generator=g, dtype=F64)
    sh[:, 0] = 0.8  # keeps SH + 0.5 well above the max(., 0) clamp
    cols = reference_sh_colors(sh, 3, sc["means"], sc["viewmat"])
    assert bool((cols > 0.1).all())
    means = sc["means"].clone().requires_grad_(True)
    shp = sh.clone().requires_grad_(True)

    def f(means, sh):
        out = reference_rasterize(means, sc["quats"], sc["scales"], sc["opacities"], sh=sh, sh_degree=3,
                                  viewmat=sc["viewmat"], K=sc["K"], width=sc["width"], height=sc["height"])
        return out["image"], out["blend_weight"]

    assert torch.autograd.gradcheck(f, (means, shp), eps=1e-6, atol=1e-7, rtol=1e-5)


def test_gradcheck_projection_with_active_J_clamp():
    """Projection-only gradcheck where x/z is beyond the clamp limit (rule 2)."""
    K = make_K(30.0, 28.0, 9.3, 8.1)
    W, H = 20, 18
    viewmat = make_viewmat(rot_axis_angle([0.0, 1.0, 0.2], 0.2), [0.0, 0.0, 0.2])
    p_cam = t64([[-1.0, 0.05, 2.0], [0.1, 1.2, 2.2]])  # x/z = -0.5 < -0.41 ; y/z > upper limit
    means = cam_to_world(p_cam, viewmat).requires_grad_(True)
    quats = t64([[0.9, 0.1, -0.2, 0.3], [0.5, 0.5, 0.1, -0.4]]).requires_grad_(True)
    scales = t64([[0.5, 0.45, 0.4], [0.5, 0.6, 0.3]]).requires_grad_(True)
    Kp = K.clone().requires_grad_(True)
    p = reference_project(means, quats, scales, viewmat, K, W, H)
    assert bool(p["visible"].all())

    def f(means, quats, scales, Kp):
        p = reference_project(means, quats, scales, viewmat, Kp, W, H)
        return p["means2d"], p["conics"], p["cov2d"], p["depths"]

    assert torch.autograd.gradcheck(f, (means, quats, scales, Kp), eps=1e-6, atol=1e-7, rtol=1e-5)


def test_alpha_clamp_has_zero_gradient():
    """alpha = min(0.99, o e^0) with o = 1: d alpha / d o = 0 at the centre."""
    K = make_K(50.0, 50.0, 4.5, 3.5)
    op = t64([1.0]).requires_grad_(True)
    out = reference_rasterize(t64([[0.0, 0.0, 2.0]]), t64([[1.0, 0, 0, 0]]), t64([[0.05] * 3]), op,
                              t64([[1.0, 1.0, 1.0]]), viewmat=torch.eye(4, dtype=F64), K=K, width=9, height=7)
    a = out["alpha"][3, 4]
    assert float(a.detach()) == pytest.approx(0.99, abs=1e-15)
    (g,) = torch.autograd.grad(a, op, retain_graph=True)
    assert float(g) == 0.0
    # a pixel where the clamp is inactive does have a gradient
    (g2,) = torch.autograd.grad(out["alpha"][3, 6], op)
    assert float(g2) > 0.0


def test_means2d_retain_grad_matches_finite_difference():
    """dL/dmeans2d via retain_grad equals d/d(cx) by central differences.

    u_i = fx x_i/z_i + cx, so dL/dcx = sum_i dL/du_i as long as the J clamp is
    inactive and no discrete decision flips (the tiny scene guarantees both).
    """
    sc = tiny_scene()
    assert_no_discrete_flip(sc)
    wts = torch.rand(sc["height"], sc["width"], 3, generator=torch.Generator().manual_seed(5), dtype=F64)
    means = sc["means"].clone().requires_grad_(True)
    out = _run(sc, means=means)
    m2d = out["means2d"]
    assert m2d.grad_fn is not None
    m2d.retain_grad()
    ((out["image"] * wts).sum()).backward()
    assert m2d.grad is not None and m2d.grad.shape == (4, 2)

    def loss(dcx, dcy):
        K = sc["K"].clone()
        K[0, 2] += dcx
        K[1, 2] += dcy
        return float((_run(sc, K=K)["image"] * wts).sum())

    h = 1e-6
    fd_x = (loss(h, 0) - loss(-h, 0)) / (2 * h)
    fd_y = (loss(0, h) - loss(0, -h)) / (2 * h)
    assert float(m2d.grad[:, 0].sum()) == pytest.approx(fd_x, rel=1e-6, abs=1e-8)
    assert float(m2d.grad[:, 1].sum()) == pytest.approx(fd_y, rel=1e-6, abs=1e-8)


# --------------------------------------------------------------------------- #
# (2) closed-form cases
# --------------------------------------------------------------------------- #
def test_single_gaussian_at_pixel_centre_alpha_half():
    K = make_K(100.0, 100.0, 10.5, 7.5)   # principal point at the centre of pixel (7, 10)
    bg = t64([0.2, 0.1, 0.0])
    c = t64([[0.2, 0.4, 0.6]])
    out = reference_rasterize(t64([[0.0, 0.0, 5.0]]), t64([[2.0, 0.0, 0.0, 0.0]]), t64([[0.03, 0.02, 0.05]]),
                              t64([0.5]), c, viewmat=torch.eye(4, dtype=F64), K=K, width=32, height=24,
                              background=bg)
    assert out["means2d"][0].tolist() == [10.5, 7.5]
    assert float(out["alpha"][7, 10]) == 0.5
    torch.testing.assert_close(out["image"][7, 10], 0.5 * c[0] + 0.5 * bg, atol=1e-15, rtol=0)
    assert float(out["alpha"][7, 11]) < 0.5
    # every composited pixel contributes T*alpha = alpha for a single Gaussian
    torch.testing.assert_close(out["blend_weight"][0], out["alpha"].sum(), atol=1e-12, rtol=0)
    assert int(out["pixel_count"][0]) == int((out["alpha"] > 0).sum())


def test_single_isotropic_gaussian_hand_computed():
    """Hand computation (identity pose, fx = fy = 200, cx = 16, cy = 12, 32x24).

    mean (0.2, -0.1, 4), scale 0.05 -> Sigma_cam = 0.0025 I.
    u = 200*0.2/4 + 16 = 26, v = 200*(-0.1)/4 + 12 = 7, depth 4.
    x/z = 0.05 and y/z = -0.025 are inside the clamp limits (+-0.104, +-0.078).
    J = [[50, 0, -2.5], [0, 50, 1.25]];  J J^T = [[2506.25, -3.125], [-3.125, 2501.5625]]
    Sigma2D = 0.0025 J J^T + 0.3 I = [[6.565625, -0.0078125], [-0.0078125, 6.55390625]]
    mid = 6.559765625; mid^2 - det = 0.005859375^2 + 0.0078125^2 < 0.1
    lambda = mid + sqrt(0.1) = 6.87599339...; 3 sqrt(lambda) = 7.8666... -> r = 8.
    Tiles (2 x 2): u-r = 18, u+r = 34 -> cols 1..1 (clamped);  v-r = -1, v+r = 15 -> rows 0..0.
    """
    K = make_K(200.0, 200.0, 16.0, 12.0)
    p = reference_project(t64([[0.2, -0.1, 4.0]]), t64([[1.0, 0.0, 0.0, 0.0]]), t64([[0.05, 0.05, 0.05]]),
                          torch.eye(4, dtype=F64), K, 32, 24)
    torch.testing.assert_close(p["means2d"][0], t64([26.0, 7.0]), atol=1e-13, rtol=0)
    assert float(p["depths"][0]) == 4.0
    assert int(p["radii"][0]) == 8
    torch.testing.assert_close(p["cov2d"][0], t64([6.565625, -0.0078125, 6.55390625]), atol=1e-13, rtol=0)
    det = 6.565625 * 6.55390625 - 0.0078125 ** 2
    torch.testing.assert_close(p["conics"][0], t64([6.55390625 / det, 0.0078125 / det, 6.565625 / det]),
                               atol=1e-14, rtol=0)
    assert p["tile_rect"][0].tolist() == [1, 0, 1, 0]
    assert p["radii"].dtype == torch.int64


# --------------------------------------------------------------------------- #
# (3) naive loop agreement
# --------------------------------------------------------------------------- #
def test_matches_naive_loop_colors():
    sc = naive_scene()
    bg = t64([0.3, 0.2, 0.1])
    out = _run(sc, background=bg)
    nv = naive_rasterize(sc["means"], sc["quats"], sc["scales"], sc["opacities"], sc["colors"], sc["viewmat"],
                         sc["K"], sc["width"], sc["height"], background=bg)
    vis = [g for g, P in enumerate(nv["proj"]) if P is not None]
    # the scene exercises what it claims to
    assert {3, 4, 5}.isdisjoint(vis) and {0, 1, 2, 6, 7, 8, 9, 10, 11} <= set(vis)
    assert nv["proj"][10]["rect"] == (0, 0, 0, 0) and nv["proj"][11]["rect"] == (1, 0, 1, 1)
    assert nv["stopped"] >= 5                                          # early stop happens
    assert float(out["alpha"].max()) > 1 - 1e-3
    assert len({tuple(P["rect"]) for P in nv["proj"] if P is not None}) > 1
    assert_matches_naive(out, nv)


def test_matches_naive_loop_sh_degree3_and_degree1():
    sc = naive_scene()
    g = torch.Generator().manual_seed(7)
    sh = 0.3 * torch.randn(12, 16, 3, generator=g, dtype=F64)
    sc.pop("colors")
    for deg in (3, 1):
        out = _run(sc, sh=sh, sh_degree=deg)
        nv = naive_rasterize(sc["means"], sc["quats"], sc["scales"], sc["opacities"], None, sc["viewmat"],
                             sc["K"], sc["width"], sc["height"], sh=sh, sh_degree=deg)
        assert_matches_naive(out, nv)


def test_depth_ties_broken_by_index():
    """Two identical Gaussians at exactly equal depth: the lower index is in front."""
    K = make_K(40.0, 40.0, 8.0, 8.0)
    means = t64([[0.0, 0.0, 2.0], [0.0, 0.0, 2.0]])
    quats = t64([[1.0, 0, 0, 0]] * 2)
    scales = t64([[0.1] * 3] * 2)
    opac = t64([0.8, 0.8])
    cols = t64([[1.0, 0.0, 0.0], [0.0, 0.0, 1.0]])
    kw = dict(viewmat=torch.eye(4, dtype=F64), K=K, width=16, height=16)
    for c, front in ((cols, 0), (cols.flip(0), 2)):
        out = reference_rasterize(means, quats, scales, opac, c, **kw)
        nv = naive_rasterize(means, quats, scales, opac, c, kw["viewmat"], K, 16, 16)
        assert_matches_naive(out, nv)
        px = out["image"][7, 7]
        a = float(out["alpha"][7, 7])
        al = 1 - math.sqrt(1 - a)               # per-Gaussian alpha at that pixel
        # front colour weight alpha, back colour weight (1 - alpha) alpha
        assert float(px[front]) == pytest.approx(al, abs=1e-14)
        assert float(px[2 - front]) == pytest.approx(al * (1 - al), abs=1e-14)
        assert float(out["blend_weight"][0]) > float(out["blend_weight"][1])   # index 0 always in front


# --------------------------------------------------------------------------- #
# (4) the tile rule
# --------------------------------------------------------------------------- #
def test_no_contribution_outside_tile_rect():
    """A Gaussian whose u +- r, v +- r lie in tile (0, 0) of a 48x48 image.

    With r = ceil(3 sqrt(lambda)) and lambda = s2 + sqrt(0.1) for an isotropic
    Sigma2D = s2 I, choosing s2 just under 16 - sqrt(0.1) gives r = 12.  The
    centre (3.7, 3.7) then has u + r = 15.7 < 16, while alpha at the first pixel
    of the neighbouring tile (dx = 12.8) is 0.99 exp(-12.8^2 / (2 s2)) > 1/255.
    """
    fx = 100.0
    z = 5.0
    s2_target = 16.0 - math.sqrt(0.1) - 0.3 - 0.05      # projected variance (without the 0.3 blur)
    scale = math.sqrt(s2_target) * z / fx
    K = make_K(fx, fx, 3.7, 3.7)                           # centre on the optical axis -> J diagonal
    out = reference_rasterize(t64([[0.0, 0.0, z]]), t64([[1.0, 0, 0, 0]]), t64([[scale] * 3]), t64([0.99]),
                              t64([[1.0, 1.0, 1.0]]), viewmat=torch.eye(4, dtype=F64), K=K, width=48, height=48)
    assert int(out["radii"][0]) == 12
    assert out["tile_rect"][0].tolist() == [0, 0, 0, 0]
    con = out["conics"][0].detach()
    for (i, j) in ((3, 16), (16, 3), (16, 16)):
        dx, dy = j + 0.5 - 3.7, i + 0.5 - 3.7
        power = -0.5 * (con[0] * dx * dx + con[2] * dy * dy) - con[1] * dx * dy
        would_be = 0.99 * math.exp(float(power))
        if (i, j) != (16, 16):
            assert would_be > 1.0 / 255.0
        assert float(out["alpha"][i, j]) == 0.0
        assert out["image"][i, j].tolist() == [0.0, 0.0, 0.0]
    assert float(out["alpha"][3, 15]) > 1.0 / 255.0
    assert float(out["alpha"][15, 3]) > 1.0 / 255.0
    assert float(out["alpha"][:, 16:].abs().sum()) == 0.0 and float(out["alpha"][16:, :].abs().sum()) == 0.0
    # pixel_count = number of tile-(0,0) pixels with alpha >= 1/255
    assert int(out["pixel_count"][0]) == int((out["alpha"][:16, :16] >= 1.0 / 255.0).sum())
    nv = naive_rasterize(t64([[0.0, 0.0, z]]), t64([[1.0, 0, 0, 0]]), t64([[scale] * 3]), t64([0.99]),
                         t64([[1.0, 1.0, 1.0]]), torch.eye(4, dtype=F64), K, 48, 48)
    assert_matches_naive(out, nv)


# --------------------------------------------------------------------------- #
# (5) off-centre principal point, odd sizes
# --------------------------------------------------------------------------- #
@pytest.mark.parametrize("W,H", [(1, 1), (17, 5), (5, 17), (33, 19), (16, 16), (31, 47)])
def test_off_centre_principal_point_odd_sizes(W, H):
    g = torch.Generator().manual_seed(100 + W * 7 + H)
    n = 12
    cx, cy = 0.27 * W + 0.13, 0.68 * H - 0.21
    f = 1.5 * max(W, H) + 2.0
    K = make_K(f, 0.9 * f, cx, cy)
    viewmat = make_viewmat(rot_axis_angle([1.0, 0.4, -0.2], 0.25), [0.05, -0.1, 0.3])
    # pixels spread over (and a little beyond) the image, depths 1.5..4
    px = torch.rand(n, generator=g, dtype=F64) * (W + 4) - 2
    py = torch.rand(n, generator=g, dtype=F64) * (H + 4) - 2
    z = 1.5 + 2.5 * torch.rand(n, generator=g, dtype=F64)
    px[0], py[0], z[0] = cx, cy, 2.0     # one on the optical axis: always covers the image centre region
    p_cam = torch.stack([(px - cx) * z / f, (py - cy) * z / (0.9 * f), z], dim=-1)
    means = cam_to_world(p_cam, viewmat)
    quats = torch.randn(n, 4, generator=g, dtype=F64)
    scales = (0.02 + 0.1 * torch.rand(n, 3, generator=g, dtype=F64)) * z[:, None] * max(W, H) / f
    opac = 0.3 + 0.69 * torch.rand(n, generator=g, dtype=F64)
    colors = torch.rand(n, 3, generator=g, dtype=F64)
    bg = t64([0.5, 0.25, 0.125])
    out = reference_rasterize(means, quats, scales, opac, colors, viewmat=viewmat, K=K, width=W, height=H,
                              background=bg, pixel_chunk=64)
    assert out["image"].shape == (H, W, 3) and out["alpha"].shape == (H, W)
    assert int(out["pixel_count"].sum()) > 0
    nv = naive_rasterize(means, quats, scales, opac, colors, viewmat, K, W, H, background=bg)
    assert_matches_naive(out, nv)


# --------------------------------------------------------------------------- #
# SH, chunking, degenerate inputs
# --------------------------------------------------------------------------- #
def test_sh_basis_values_and_orthonormality():
    # explicit values along the axes (dir = +z, -x, +y)
    sh = torch.zeros(3, 16, 3, dtype=F64)
    sh[:, 2, 0] = 1.0     # z term
    sh[:, 3, 1] = 1.0     # -x term
    sh[:, 1, 2] = 1.0     # -y term
    sh[:, 12, 0] = 0.1    # z(2zz-3xx-3yy)
    dirs = t64([[0, 0, 1.0], [-2.0, 0, 0], [0, 3.0, 0]])
    cam = make_viewmat(torch.eye(3, dtype=F64), [0.0, 0.0, 0.0])
    c = reference_sh_colors(sh, 3, dirs, cam)
    torch.testing.assert_close(c[0], t64([0.5 + ref.SH_C1 + 0.1 * ref.SH_C3[3] * 2, 0.5, 0.5]))
    torch.testing.assert_close(c[1], t64([0.5, 0.5 + ref.SH_C1, 0.5]))
    torch.testing.assert_close(c[2], t64([0.5, 0.5, max(0.5 - 3.0 / 3.0 * ref.SH_C1, 0.0)]))
    # camera centre = -R^T t: moving the camera changes the direction
    R = rot_axis_angle([0, 1, 0], 0.5)
    Vm = make_viewmat(R, [0.3, -0.2, 1.0])
    centre = -(R.T @ Vm[:3, 3])
    c2 = reference_sh_colors(sh[:1], 1, (centre + t64([0, 0, 5.0]))[None], Vm)
    torch.testing.assert_close(c2[0], t64([0.5 + ref.SH_C1, 0.5, 0.5]))

    # Orthonormality of the 16 basis functions on the unit sphere, with a
    # quadrature that is exact for their products (polynomials of degree <= 6):
    # Gauss-Legendre in cos(theta) (Golub-Welsch, 6 nodes) x uniform phi (12).
    nz, nphi = 6, 12
    k = torch.arange(1, nz, dtype=F64)
    jacobi = torch.diag(k / torch.sqrt(4 * k * k - 1), 1)
    nodes, vecs = torch.linalg.eigh(jacobi + jacobi.T)
    wz = 2 * vecs[0] ** 2
    phi = torch.arange(nphi, dtype=F64) * (2 * math.pi / nphi)
    Z, PHI = torch.meshgrid(nodes, phi, indexing="ij")
    rho = torch.sqrt(1 - Z * Z)
    d = torch.stack([rho * torch.cos(PHI), rho * torch.sin(PHI), Z], -1).reshape(-1, 3)
    wts = (wz[:, None] * torch.full((nphi,), 2 * math.pi / nphi, dtype=F64)[None]).reshape(-1)
    Y = []
    for kk in range(16):
        shk = torch.zeros(d.shape[0], 16, 3, dtype=F64)
        shk[:, kk, 0] = 0.1
        Y.append((reference_sh_colors(shk, 3, d, cam)[:, 0] - 0.5) / 0.1)
    Y = torch.stack(Y, -1)
    gram = (Y * wts[:, None]).T @ Y
    torch.testing.assert_close(gram, torch.eye(16, dtype=F64), atol=1e-12, rtol=0)


def test_sh_degree_inference_and_truncation():
    g = torch.Generator().manual_seed(11)
    means = torch.randn(5, 3, generator=g, dtype=F64)
    V = make_viewmat(rot_axis_angle([1, 2, 3], 0.7), [0.1, 0.2, 0.3])
    sh16 = 0.2 * torch.randn(5, 16, 3, generator=g, dtype=F64)
    torch.testing.assert_close(reference_sh_colors(sh16, None, means, V), reference_sh_colors(sh16, 3, means, V))
    torch.testing.assert_close(reference_sh_colors(sh16, 1, means, V), reference_sh_colors(sh16[:, :4], None, means, V))
    torch.testing.assert_close(reference_sh_colors(sh16, 0, means, V), torch.clamp(ref.SH_C0 * sh16[:, 0] + 0.5, min=0))
    with pytest.raises(ValueError):
        reference_sh_colors(sh16[:, :5], None, means, V)
    with pytest.raises(ValueError):
        reference_sh_colors(sh16[:, :4], 2, means, V)
    # clamp max(., 0): strongly negative DC gives exactly 0 and zero gradient
    shn = torch.full((1, 1, 3), -5.0, dtype=F64, requires_grad=True)
    c = reference_sh_colors(shn, 0, means[:1], V)
    assert c.tolist() == [[0.0, 0.0, 0.0]]
    (gr,) = torch.autograd.grad(c.sum(), shn)
    assert float(gr.abs().sum()) == 0.0


def test_chunking_and_checkpoint_invariance():
    sc = naive_scene()
    bg = t64([0.3, 0.2, 0.1])
    keys = ("means", "quats", "scales", "opacities", "colors")
    results = []
    for chunk, ckpt in ((2048, False), (7, False), (50, True)):
        leaves = {k: sc[k].clone().requires_grad_(True) for k in keys}
        out = _run(sc, background=bg, pixel_chunk=chunk, checkpoint=ckpt, **leaves)
        out["means2d"].retain_grad()
        w = torch.linspace(0, 1, out["image"].numel(), dtype=F64).reshape(out["image"].shape)
        loss = (out["image"] * w).sum() + out["alpha"].sum() + out["blend_weight"].sum()
        loss.backward()
        results.append((out, {k: leaves[k].grad for k in keys}, out["means2d"].grad))
    o0, g0, m0 = results[0]
    for o, gr, m in results[1:]:
        for k in ("image", "alpha", "blend_weight", "means2d", "depths"):
            torch.testing.assert_close(o[k].detach(), o0[k].detach(), atol=1e-13, rtol=0)
        assert torch.equal(o["pixel_count"], o0["pixel_count"]) and torch.equal(o["radii"], o0["radii"])
        for k in keys:
            torch.testing.assert_close(gr[k], g0[k], atol=1e-11, rtol=1e-11)
        torch.testing.assert_close(m, m0, atol=1e-11, rtol=1e-11)
    # culled Gaussians receive exactly zero gradient except through depths
    for k in ("quats", "scales", "opacities", "colors"):
        assert float(g0[k][[3, 4, 5]].abs().sum()) == 0.0


def test_empty_and_all_culled():
    K = make_K(20.0, 20.0, 6.0, 4.0)
    bg = t64([0.25, 0.5, 0.75]).requires_grad_(True)
    out = reference_rasterize(torch.zeros(0, 3, dtype=F64), torch.zeros(0, 4, dtype=F64),
                              torch.zeros(0, 3, dtype=F64), torch.zeros(0, dtype=F64), torch.zeros(0, 3, dtype=F64),
                              viewmat=torch.eye(4, dtype=F64), K=K, width=13, height=9, background=bg)
    assert out["image"].shape == (9, 13, 3)
    assert torch.equal(out["image"].detach(), bg.detach().expand(9, 13, 3))
    assert float(out["alpha"].abs().sum()) == 0.0
    for k, shape in (("depths", (0,)), ("radii", (0,)), ("means2d", (0, 2)), ("pixel_count", (0,)),
                     ("blend_weight", (0,))):
        assert tuple(out[k].shape) == shape
    out["image"].sum().backward()
    torch.testing.assert_close(bg.grad, t64([117.0, 117.0, 117.0]))

    # all culled: behind camera, before near plane, off screen
    means = t64([[0.0, 0.0, -1.0], [0.0, 0.0, 0.001], [50.0, 0.0, 2.0]]).requires_grad_(True)
    out = reference_rasterize(means, t64([[1.0, 0, 0, 0]] * 3), t64([[0.1] * 3] * 3), t64([0.9] * 3),
                              t64([[1.0, 0, 0]] * 3), viewmat=torch.eye(4, dtype=F64), K=K, width=13, height=9)
    assert float(out["image"].detach().abs().sum()) == 0.0 and float(out["alpha"].detach().abs().sum()) == 0.0
    assert out["radii"].tolist() == [0, 0, 0] and out["pixel_count"].tolist() == [0, 0, 0]
    assert out["depths"].tolist() == [-1.0, 0.001, 2.0]
    out["image"].sum().backward()  # must not raise: outputs stay attached to the inputs
    assert float(means.grad.abs().sum()) == 0.0 and bool(torch.isfinite(means.grad).all())


def test_rejects_bad_colour_arguments():
    K = make_K(20.0, 20.0, 6.0, 4.0)
    base = (t64([[0.0, 0.0, 2.0]]), t64([[1.0, 0, 0, 0]]), t64([[0.1] * 3]), t64([0.5]))
    kw = dict(viewmat=torch.eye(4, dtype=F64), K=K, width=4, height=4)
    with pytest.raises(ValueError):
        reference_rasterize(*base, **kw)
    with pytest.raises(ValueError):
        reference_rasterize(*base, t64([[1.0, 0, 0]]), sh=torch.zeros(1, 1, 3, dtype=F64), **kw)


def test_float32_inputs_are_promoted_and_differentiable():
    sc = tiny_scene()
    m32 = sc["means"].float().requires_grad_(True)
    out = _run(sc, means=m32)
    assert out["image"].dtype == F64 and out["means2d"].dtype == F64
    out["image"].sum().backward()
    assert m32.grad is not None and m32.grad.dtype == torch.float32 and float(m32.grad.abs().sum()) > 0
