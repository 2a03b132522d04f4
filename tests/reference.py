"""Independent float64 PyTorch reference ("twin") of the stavatar_ti rasterizer.

This module is the *test oracle* for the Taichi Gaussian-splatting rasterizer.
It was written only from the rasterizer contract (reproduced in condensed form
below), never from the Taichi kernels, so that disagreements between the two
point at a bug in one of them rather than at a shared misunderstanding.

Everything is computed in ``torch.float64`` with plain autograd, so the
gradients of this module are the "true derivatives" the contract asks for.
Discrete decisions (culling, radius, tile membership, the ``alpha < 1/255`` skip
and the ``T < 1e-4`` early stop) are computed on detached values and therefore
carry no gradient; ``min(0.99, .)`` and ``max(., 0)`` are implemented with
``torch.clamp`` whose gradient is zero where the clamp is active.

Contract summary (the source of all the maths below)
----------------------------------------------------
Conventions
    * ``viewmat`` is a 4x4 world->camera matrix ``[R t; 0 1]`` with OpenCV
      axes (x right, y down, z forward).  ``K`` holds pixel intrinsics
      ``fx=K[0,0], fy=K[1,1], cx=K[0,2], cy=K[1,2]``.
    * ``quats`` are (w, x, y, z) and are normalised here.
    * Pixel (row i, column j) has its centre at ``(j + 0.5, i + 0.5)`` pixels.

Forward rules
    1. Camera point ``p = R @ mean + t``; culled when ``p.z < near_plane``.
    2. ``Sigma3D = R(q) S S^T R(q)^T`` with ``S = diag(scales)``;
       ``Sigma2D = J W Sigma3D W^T J^T + 0.3 I`` (``W`` = rotation of
       ``viewmat``) with
       ``J = [[fx/z, 0, -fx tx/z^2], [0, fy/z, -fy ty/z^2]]`` where
       ``tx = z clamp(x/z, -(cx/fx + 0.3 width/(2 fx)),
       (width - cx)/fx + 0.3 width/(2 fx))`` and ``ty`` likewise with
       ``(cy, fy, height)``.  The clamp is used inside ``J`` only.  Culled when
       ``det(Sigma2D) <= 0``.  ``conic = Sigma2D^-1 = [[a, b], [b, c]]``.
    3. ``u = fx x/z + cx``, ``v = fy y/z + cy`` (no clamp).
       ``lambda_max = mid + sqrt(max(0.1, mid^2 - det))``,
       ``mid = (Sigma2D_xx + Sigma2D_yy)/2``, radius ``r = ceil(3 sqrt(lambda_max))``.
       Visible iff ``u + r > 0, u - r < width, v + r > 0, v - r < height``.
    4. 16x16 tiles.  A Gaussian is evaluated at every pixel of the tiles with
       column index ``clamp(floor((u -/+ r)/16), 0, tiles_x - 1)`` and row index
       ``clamp(floor((v -/+ r)/16), 0, tiles_y - 1)`` (inclusive ranges) and at
       no other pixel.
    5. Per pixel, visible Gaussians in ascending depth (stable, ties by index):
       ``power = -1/2 (a dx^2 + c dy^2) - b dx dy`` (skip if ``power > 0``),
       ``alpha = min(0.99, o exp(power))`` (skip if ``alpha < 1/255``); if
       ``T (1 - alpha) < 1e-4`` the pixel stops (this Gaussian and all later
       ones are not composited); otherwise ``colour += T alpha c``,
       ``C_i += 1``, ``A_i += T alpha``, ``T <- T (1 - alpha)``.  ``T`` starts
       at 1; ``image = colour + T background``; ``alpha = 1 - T``.

Spherical harmonics (3DGS real SH basis and sign pattern)
    ``colour = max(SH(dir) + 0.5, 0)``, ``dir = normalise(mean - camera
    centre)``, camera centre ``= -R^T t``.

Public API
----------
``reference_project``, ``reference_sh_colors``, ``reference_rasterize``.
"""
from __future__ import annotations

import math
from typing import Dict, Optional

import torch
from torch.utils.checkpoint import checkpoint as _torch_checkpoint

__all__ = [
    "TILE_SIZE",
    "ALPHA_MIN",
    "ALPHA_MAX",
    "T_MIN",
    "COV2D_BLUR",
    "FOV_CLAMP_MARGIN",
    "LAMBDA_FLOOR",
    "SH_C0",
    "SH_C1",
    "SH_C2",
    "SH_C3",
    "quat_to_rotmat",
    "reference_project",
    "reference_sh_colors",
    "reference_rasterize",
]

DTYPE = torch.float64

#: Tile edge length in pixels (contract rule 4).
TILE_SIZE = 16
#: Alpha below which a (pixel, Gaussian) pair is skipped (contract rule 5).
ALPHA_MIN = 1.0 / 255.0
#: Upper clamp of the per-pair alpha (contract rule 5).
ALPHA_MAX = 0.99
#: A pixel stops when T * (1 - alpha) would fall below this (contract rule 5).
T_MIN = 1e-4
#: Isotropic screen-space blur added to Sigma2D, in pixels^2 (contract rule 2).
COV2D_BLUR = 0.3
#: Fraction of the half field of view added to the J clamp limits (rule 2).
FOV_CLAMP_MARGIN = 0.3
#: Floor of ``mid^2 - det`` inside the largest-eigenvalue formula (rule 3).
LAMBDA_FLOOR = 0.1

#: 3DGS real spherical-harmonics constants (contract text).
SH_C0 = 0.28209479177387814
SH_C1 = 0.4886025119029199
SH_C2 = (
    1.0925484305920792,
    -1.0925484305920792,
    0.31539156525252005,
    -1.0925484305920792,
    0.5462742152960396,
)
SH_C3 = (
    -0.5900435899266435,
    2.890611442640554,
    -0.4570457994644658,
    0.3731763325901154,
    -0.4570457994644658,
    1.445305721320277,
    -0.5900435899266435,
)


# --------------------------------------------------------------------------- #
# helpers
# --------------------------------------------------------------------------- #
def _as_f64(x: torch.Tensor) -> torch.Tensor:
    """Differentiable cast to float64 (``Tensor.double`` keeps the graph)."""
    if not torch.is_tensor(x):
        x = torch.as_tensor(x)
    return x.double()


def quat_to_rotmat(quats: torch.Tensor) -> torch.Tensor:
    """Rotation matrices from (possibly unnormalised) quaternions.

    Args:
        quats: ``[N, 4]`` tensor, component order ``(w, x, y, z)``; any
            floating dtype (computed in the input dtype).  The quaternion is
            normalised first, so ``q`` and ``s*q`` (``s > 0``) give the same
            matrix; the normalisation is differentiable.

    Returns:
        ``[N, 3, 3]`` rotation matrices ``R(q)`` (Hamilton convention, the
        usual 3DGS formula), acting on column vectors.
    """
    q = quats / quats.norm(dim=-1, keepdim=True)
    w, x, y, z = q.unbind(-1)
    rows = [
        1.0 - 2.0 * (y * y + z * z), 2.0 * (x * y - w * z), 2.0 * (x * z + w * y),
        2.0 * (x * y + w * z), 1.0 - 2.0 * (x * x + z * z), 2.0 * (y * z - w * x),
        2.0 * (x * z - w * y), 2.0 * (y * z + w * x), 1.0 - 2.0 * (x * x + y * y),
    ]
    return torch.stack(rows, dim=-1).reshape(q.shape[:-1] + (3, 3))


def _bmm3(A: torch.Tensor, B: torch.Tensor) -> torch.Tensor:
    """Matrix product of small (<= 3x3) matrices as an explicit broadcast sum.

    ``A [..., m, k] @ B [..., k, n]``.  Used instead of ``@`` because MKL's
    threaded GEMM has millisecond-scale overhead for tiny float64 products on
    some machines; the maths is identical.
    """
    return (A[..., :, :, None] * B[..., None, :, :]).sum(dim=-2)


def _check_image_size(width: int, height: int) -> None:
    if int(width) != width or int(height) != height or width < 1 or height < 1:
        raise ValueError(f"width/height must be positive ints, got {width}x{height}")


# --------------------------------------------------------------------------- #
# projection
# --------------------------------------------------------------------------- #
def reference_project(
    means: torch.Tensor,
    quats: torch.Tensor,
    scales: torch.Tensor,
    viewmat: torch.Tensor,
    K: torch.Tensor,
    width: int,
    height: int,
    near_plane: float = 0.01,
) -> Dict[str, torch.Tensor]:
    """Project 3D Gaussians to the image plane (contract rules 1-4).

    Args:
        means: ``[N, 3]`` Gaussian centres, world units.
        quats: ``[N, 4]`` rotations ``(w, x, y, z)``, need not be normalised.
        scales: ``[N, 3]`` linear standard deviations along the local axes,
            world units, ``> 0``.
        viewmat: ``[4, 4]`` world->camera ``[R t; 0 1]``, OpenCV axes.
        K: ``[3, 3]`` intrinsics in pixels (``fx, fy, cx, cy`` used).
        width, height: image size in pixels.
        near_plane: Gaussians with camera ``z < near_plane`` are culled.

    All floating inputs are cast to float64 with the differentiable
    ``.double()``, so gradients reach the caller's tensors (including
    ``viewmat`` and ``K`` if they require grad).

    Returns:
        dict of tensors (float64 unless stated):

        * ``means2d`` ``[N, 2]`` pixel coordinates ``(u, v)`` of the projected
          centres; **zero for non-visible Gaussians**.
        * ``conics`` ``[N, 3]`` ``(a, b, c)`` of ``Sigma2D^-1``, pixels^-2;
          zero for non-visible Gaussians.
        * ``cov2d`` ``[N, 3]`` ``(Sxx, Sxy, Syy)`` of ``Sigma2D`` (blur
          included), pixels^2; zero for non-visible Gaussians.
        * ``depths`` ``[N]`` camera-space ``z`` (world units) for *all*
          Gaussians, culled or not.
        * ``radii`` ``[N]`` int64 pixel radius ``ceil(3 sqrt(lambda_max))``,
          0 for culled Gaussians.  No gradient.
        * ``tile_rect`` ``[N, 4]`` int64 inclusive tile indices
          ``(x0, y0, x1, y1)``; ``(0, 0, -1, -1)`` (an empty range) for
          non-visible Gaussians.  No gradient.
        * ``visible`` ``[N]`` bool: passed the near plane, ``det > 0`` and the
          on-screen test.  No gradient.
    """
    _check_image_size(width, height)
    means = _as_f64(means)
    quats = _as_f64(quats)
    scales = _as_f64(scales)
    viewmat = _as_f64(viewmat)
    K = _as_f64(K)
    n = means.shape[0]
    if means.shape != (n, 3) or quats.shape != (n, 4) or scales.shape != (n, 3):
        raise ValueError(
            f"bad shapes means {tuple(means.shape)} quats {tuple(quats.shape)} "
            f"scales {tuple(scales.shape)}"
        )
    if viewmat.shape != (4, 4) or K.shape != (3, 3):
        raise ValueError("viewmat must be [4,4] and K [3,3]")

    # rule 1: world -> camera
    Rw = viewmat[:3, :3]
    tw = viewmat[:3, 3]
    p_cam = _bmm3(means[:, None, :], Rw.transpose(0, 1))[:, 0, :] + tw
    x, y, z = p_cam.unbind(-1)
    depth_ok = (z >= near_plane).detach()
    # Substitute a harmless depth for culled Gaussians so that no inf/nan is
    # produced (a nan in an unselected torch.where branch would still poison
    # the backward pass through 0 * nan).
    z_s = torch.where(depth_ok, z, torch.ones_like(z))

    # rule 2: covariances
    Rq = quat_to_rotmat(quats)                           # [N,3,3]
    M = Rq * scales[:, None, :]                          # R(q) S
    cov3d = _bmm3(M, M.transpose(-1, -2))                      # R S S^T R^T
    cov_cam = _bmm3(_bmm3(Rw, cov3d), Rw.transpose(0, 1))            # W Sigma3D W^T

    fx, fy, cx, cy = K[0, 0], K[1, 1], K[0, 2], K[1, 2]
    lim_x_neg = cx / fx + FOV_CLAMP_MARGIN * width / (2.0 * fx)
    lim_x_pos = (width - cx) / fx + FOV_CLAMP_MARGIN * width / (2.0 * fx)
    lim_y_neg = cy / fy + FOV_CLAMP_MARGIN * height / (2.0 * fy)
    lim_y_pos = (height - cy) / fy + FOV_CLAMP_MARGIN * height / (2.0 * fy)
    tx = z_s * torch.clamp(x / z_s, min=-lim_x_neg, max=lim_x_pos)
    ty = z_s * torch.clamp(y / z_s, min=-lim_y_neg, max=lim_y_pos)

    zero = torch.zeros_like(z_s)
    J = torch.stack(
        [
            torch.stack([fx / z_s, zero, -fx * tx / (z_s * z_s)], dim=-1),
            torch.stack([zero, fy / z_s, -fy * ty / (z_s * z_s)], dim=-1),
        ],
        dim=-2,
    )                                                    # [N,2,3]
    cov2 = _bmm3(_bmm3(J, cov_cam), J.transpose(-1, -2))             # [N,2,2]
    sxx = cov2[:, 0, 0] + COV2D_BLUR
    syy = cov2[:, 1, 1] + COV2D_BLUR
    sxy = 0.5 * (cov2[:, 0, 1] + cov2[:, 1, 0])          # symmetric by construction
    det = sxx * syy - sxy * sxy
    det_ok = depth_ok & (det > 0).detach()
    det_s = torch.where(det_ok, det, torch.ones_like(det))
    conic = torch.stack([syy / det_s, -sxy / det_s, sxx / det_s], dim=-1)

    # rule 3: centre, radius and on-screen test
    u = fx * x / z_s + cx
    v = fy * y / z_s + cy
    with torch.no_grad():
        mid = 0.5 * (sxx + syy)
        lam = mid + torch.sqrt(torch.clamp(mid * mid - det, min=LAMBDA_FLOOR))
        r = torch.ceil(3.0 * torch.sqrt(lam))
        r = torch.where(det_ok, r, torch.zeros_like(r))
        ud, vd = u.detach(), v.detach()
        on_screen = (ud + r > 0) & (ud - r < width) & (vd + r > 0) & (vd - r < height)
        visible = det_ok & on_screen
        radii = torch.where(visible, r, torch.zeros_like(r)).to(torch.int64)

        # rule 4: inclusive tile rectangle
        tiles_x = (width + TILE_SIZE - 1) // TILE_SIZE
        tiles_y = (height + TILE_SIZE - 1) // TILE_SIZE
        x0 = torch.clamp(torch.floor((ud - r) / TILE_SIZE), 0, tiles_x - 1)
        x1 = torch.clamp(torch.floor((ud + r) / TILE_SIZE), 0, tiles_x - 1)
        y0 = torch.clamp(torch.floor((vd - r) / TILE_SIZE), 0, tiles_y - 1)
        y1 = torch.clamp(torch.floor((vd + r) / TILE_SIZE), 0, tiles_y - 1)
        rect = torch.stack([x0, y0, x1, y1], dim=-1).to(torch.int64)
        empty = torch.tensor([0, 0, -1, -1], dtype=torch.int64).expand(n, 4)
        rect = torch.where(visible[:, None], rect, empty)

    vis2 = visible[:, None]
    means2d = torch.where(vis2, torch.stack([u, v], dim=-1), torch.zeros_like(p_cam[:, :2]))
    conics = torch.where(vis2, conic, torch.zeros_like(conic))
    cov2d = torch.stack([sxx, sxy, syy], dim=-1)
    cov2d = torch.where(vis2, cov2d, torch.zeros_like(cov2d))
    return {
        "means2d": means2d,
        "conics": conics,
        "cov2d": cov2d,
        "depths": z,
        "radii": radii,
        "tile_rect": rect,
        "visible": visible,
    }


# --------------------------------------------------------------------------- #
# spherical harmonics
# --------------------------------------------------------------------------- #
def _infer_sh_degree(num_coeffs: int, sh_degree: Optional[int]) -> int:
    if sh_degree is None:
        d = math.isqrt(num_coeffs) - 1
        if (d + 1) ** 2 != num_coeffs:
            raise ValueError(
                f"sh_degree=None needs a square number of coefficients, got {num_coeffs}"
            )
    else:
        d = int(sh_degree)
    if not 0 <= d <= 3:
        raise ValueError(f"sh_degree must be in 0..3, got {d}")
    if num_coeffs < (d + 1) ** 2:
        raise ValueError(f"sh_degree {d} needs >= {(d + 1) ** 2} coefficients, got {num_coeffs}")
    return d


def reference_sh_colors(
    sh: torch.Tensor,
    sh_degree: Optional[int],
    means: torch.Tensor,
    viewmat: torch.Tensor,
) -> torch.Tensor:
    """View-dependent RGB from 3DGS real spherical harmonics.

    Args:
        sh: ``[N, K, 3]`` SH coefficients per colour channel, ``K >= (d+1)^2``;
            only the first ``(d+1)^2`` are used.
        sh_degree: ``d`` in 0..3, or ``None`` for ``d = sqrt(K) - 1`` (``K``
            must then be a perfect square).
        means: ``[N, 3]`` world-space centres.
        viewmat: ``[4, 4]`` world->camera ``[R t; 0 1]``; the camera centre is
            ``-R^T t``.

    Returns:
        ``[N, 3]`` float64 ``max(SH(dir) + 0.5, 0)`` with
        ``dir = (mean - centre) / |mean - centre|`` and the 3DGS basis / sign
        pattern (contract text): ``SH = C0 sh0 - C1 y sh1 + C1 z sh2 - C1 x sh3
        + C2[0] xy sh4 + C2[1] yz sh5 + C2[2] (2zz-xx-yy) sh6 + C2[3] xz sh7
        + C2[4] (xx-yy) sh8 + C3[0] y(3xx-yy) sh9 + C3[1] xyz sh10
        + C3[2] y(4zz-xx-yy) sh11 + C3[3] z(2zz-3xx-3yy) sh12
        + C3[4] x(4zz-xx-yy) sh13 + C3[5] z(xx-yy) sh14 + C3[6] x(xx-3yy) sh15``.
        The ``max(., 0)`` has zero gradient where active.  A mean exactly at the
        camera centre (always culled) gets a guarded, finite direction.
    """
    sh = _as_f64(sh)
    means = _as_f64(means)
    viewmat = _as_f64(viewmat)
    if sh.dim() != 3 or sh.shape[-1] != 3 or sh.shape[0] != means.shape[0]:
        raise ValueError(f"sh must be [N,K,3] matching means, got {tuple(sh.shape)}")
    d = _infer_sh_degree(sh.shape[1], sh_degree)

    R = viewmat[:3, :3]
    t = viewmat[:3, 3]
    centre = -(R * t[:, None]).sum(dim=0)          # -R^T t
    dirs = means - centre
    dirs = dirs / dirs.norm(dim=-1, keepdim=True).clamp_min(1e-300)
    x, y, z = (c[:, None] for c in dirs.unbind(-1))     # [N,1] to broadcast over RGB

    res = SH_C0 * sh[:, 0]
    if d >= 1:
        res = res - SH_C1 * y * sh[:, 1] + SH_C1 * z * sh[:, 2] - SH_C1 * x * sh[:, 3]
    if d >= 2:
        xx, yy, zz = x * x, y * y, z * z
        xy, yz, xz = x * y, y * z, x * z
        res = (
            res
            + SH_C2[0] * xy * sh[:, 4]
            + SH_C2[1] * yz * sh[:, 5]
            + SH_C2[2] * (2.0 * zz - xx - yy) * sh[:, 6]
            + SH_C2[3] * xz * sh[:, 7]
            + SH_C2[4] * (xx - yy) * sh[:, 8]
        )
    if d >= 3:
        res = (
            res
            + SH_C3[0] * y * (3.0 * xx - yy) * sh[:, 9]
            + SH_C3[1] * xy * z * sh[:, 10]
            + SH_C3[2] * y * (4.0 * zz - xx - yy) * sh[:, 11]
            + SH_C3[3] * z * (2.0 * zz - 3.0 * xx - 3.0 * yy) * sh[:, 12]
            + SH_C3[4] * x * (4.0 * zz - xx - yy) * sh[:, 13]
            + SH_C3[5] * z * (xx - yy) * sh[:, 14]
            + SH_C3[6] * x * (xx - 3.0 * yy) * sh[:, 15]
        )
    return torch.clamp(res + 0.5, min=0.0)


# --------------------------------------------------------------------------- #
# compositing
# --------------------------------------------------------------------------- #
def _composite_chunk(
    pix: torch.Tensor,
    means2d: torch.Tensor,
    conics: torch.Tensor,
    opacities: torch.Tensor,
    colors: torch.Tensor,
    rect: torch.Tensor,
    width: int,
):
    """Alpha-composite one chunk of pixels (contract rules 4-5), vectorised.

    Args:
        pix: ``[P]`` int64 flat pixel indices ``row * width + col``.
        means2d, conics, opacities, colors, rect: the ``V`` visible Gaussians
            *already sorted by depth* (``[V,2]``, ``[V,3]``, ``[V]``, ``[V,3]``,
            ``[V,4]`` int64 inclusive tile rectangle).
        width: image width in pixels.

    Returns:
        ``(rgb [P,3], T [P], blend [V], count [V] int64)``: accumulated colour
        (without background), final transmittance, and this chunk's
        contribution to ``A_i`` and ``C_i`` per sorted Gaussian.

    Method: ``alpha[P,V']`` is built for the Gaussians whose tile rectangle
    touches the chunk (``V'`` of them, order kept), with zeros where the pair is
    skipped.  Because ``T`` never increases, "the pixel has not stopped before
    or at Gaussian k" is exactly ``cumprod(1 - alpha)[k] >= 1e-4``, so the
    composited mask is ``valid & (inclusive cumprod >= 1e-4)``.  The exclusive
    cumprod of ``(1 - alpha * composited)`` is then the transmittance ``T``
    seen by each Gaussian.
    """
    P = pix.shape[0]
    V = means2d.shape[0]
    rows = torch.div(pix, width, rounding_mode="floor")
    cols = pix - rows * width
    tile_c = torch.div(cols, TILE_SIZE, rounding_mode="floor")
    tile_r = torch.div(rows, TILE_SIZE, rounding_mode="floor")

    covered = (
        (tile_c[:, None] >= rect[None, :, 0])
        & (tile_c[:, None] <= rect[None, :, 2])
        & (tile_r[:, None] >= rect[None, :, 1])
        & (tile_r[:, None] <= rect[None, :, 3])
    )                                                    # [P,V]
    active = covered.any(dim=0).nonzero().squeeze(1)    # ascending: depth order kept
    covered = covered[:, active]
    m2d = means2d[active]
    con = conics[active]
    op = opacities[active]
    col = colors[active]

    px = cols.to(DTYPE) + 0.5
    py = rows.to(DTYPE) + 0.5
    dx = px[:, None] - m2d[None, :, 0]
    dy = py[:, None] - m2d[None, :, 1]
    power = -0.5 * (con[None, :, 0] * dx * dx + con[None, :, 2] * dy * dy) - con[None, :, 1] * dx * dy
    power_pos = (power > 0).detach()
    # keep exp() finite in the unselected branch (avoids 0 * inf in backward)
    power_safe = torch.where(power_pos, torch.zeros_like(power), power)
    alpha = torch.clamp(op[None, :] * torch.exp(power_safe), max=ALPHA_MAX)
    valid = covered & ~power_pos & (alpha.detach() >= ALPHA_MIN)
    alpha = torch.where(valid, alpha, torch.zeros_like(alpha))

    with torch.no_grad():
        t_incl = torch.cumprod(1.0 - alpha, dim=1)
        composited = valid & (t_incl >= T_MIN)
    alpha_c = torch.where(composited, alpha, torch.zeros_like(alpha))
    one_minus = 1.0 - alpha_c
    t_cum = torch.cumprod(one_minus, dim=1)
    t_excl = torch.cat([torch.ones_like(t_cum[:, :1]), t_cum[:, :-1]], dim=1)
    w = alpha_c * t_excl                                 # [P,V'] = T * alpha
    if w.numel() >= 65536:
        rgb = w @ col                                    # [P,3], GEMM for big chunks
    else:                                                # tiny: avoid GEMM thread overhead
        rgb = (w[:, :, None] * col[None, :, :]).sum(dim=1)
    if t_cum.shape[1] > 0:
        t_final = t_cum[:, -1]
    else:
        t_final = torch.ones(P, dtype=DTYPE)
    blend = torch.zeros(V, dtype=DTYPE).index_add(0, active, w.sum(dim=0))
    count = torch.zeros(V, dtype=torch.int64).index_add(
        0, active, composited.sum(dim=0).to(torch.int64)
    )
    return rgb, t_final, blend, count


def reference_rasterize(
    means: torch.Tensor,
    quats: torch.Tensor,
    scales: torch.Tensor,
    opacities: torch.Tensor,
    colors: Optional[torch.Tensor] = None,
    *,
    sh: Optional[torch.Tensor] = None,
    sh_degree: Optional[int] = None,
    viewmat: torch.Tensor,
    K: torch.Tensor,
    width: int,
    height: int,
    background: Optional[torch.Tensor] = None,
    near_plane: float = 0.01,
    pixel_chunk: int = 2048,
    checkpoint: bool = False,
) -> Dict[str, torch.Tensor]:
    """Float64 reference of the full contract ``rasterize`` (rules 1-5).

    Args:
        means: ``[N, 3]`` world-space centres.
        quats: ``[N, 4]`` ``(w, x, y, z)``, normalised internally.
        scales: ``[N, 3]`` linear scales (> 0), world units.
        opacities: ``[N]`` in ``[0, 1]``.
        colors: ``[N, 3]`` post-activation RGB; exactly one of ``colors`` and
            ``sh`` must be given.
        sh: ``[N, K, 3]`` SH coefficients (see :func:`reference_sh_colors`).
        sh_degree: SH degree 0..3 or ``None`` (inferred from ``K``).
        viewmat: ``[4, 4]`` world->camera, OpenCV axes.
        K: ``[3, 3]`` pixel intrinsics.
        width, height: image size in pixels (any positive ints).
        background: ``[3]`` RGB or ``None`` (black).
        near_plane: camera-z culling threshold.
        pixel_chunk: pixels composited per vectorised chunk (memory knob; the
            result does not depend on it).
        checkpoint: wrap each chunk in ``torch.utils.checkpoint``
            (``use_reentrant=False``) so only per-chunk inputs/outputs are kept
            for backward; the ``[P, V]`` intermediates are recomputed.

    Returns:
        dict:

        * ``image`` ``[H, W, 3]`` float64, ``colour + T * background``.
        * ``alpha`` ``[H, W]`` float64, ``1 - T``.
        * ``depths`` ``[N]`` float64 camera z (all Gaussians).
        * ``radii`` ``[N]`` int64, 0 = culled.
        * ``means2d`` ``[N, 2]`` float64 projected centres in pixels; this is
          the very (non-leaf) tensor the compositing consumed, so
          ``out["means2d"].retain_grad()`` before ``backward`` yields
          ``dL/dmeans2d``.  Zero (and gradient-free) for culled Gaussians.
        * ``pixel_count`` ``[N]`` int64 ``C_i``: number of composited pixels.
        * ``blend_weight`` ``[N]`` float64 ``A_i = sum T * alpha`` over the
          composited pixels (differentiable).
        * extras: ``conics`` ``[N,3]``, ``cov2d`` ``[N,3]``, ``tile_rect``
          ``[N,4]`` int64, ``visible`` ``[N]`` bool, ``colors`` ``[N,3]``
          (the RGB actually used, i.e. SH-evaluated when ``sh`` is given).
    """
    _check_image_size(width, height)
    if (colors is None) == (sh is None):
        raise ValueError("pass exactly one of colors or sh")
    if pixel_chunk < 1:
        raise ValueError("pixel_chunk must be >= 1")
    means = _as_f64(means)
    n = means.shape[0]
    opacities = _as_f64(opacities)
    if opacities.shape != (n,):
        raise ValueError(f"opacities must be [N], got {tuple(opacities.shape)}")

    proj = reference_project(means, quats, scales, viewmat, K, width, height, near_plane)
    if sh is not None:
        colors = reference_sh_colors(sh, sh_degree, means, viewmat)
    else:
        colors = _as_f64(colors)
        if colors.shape != (n, 3):
            raise ValueError(f"colors must be [N,3], got {tuple(colors.shape)}")
    if background is None:
        bg = torch.zeros(3, dtype=DTYPE)
    else:
        bg = _as_f64(background).reshape(3)

    means2d = proj["means2d"]
    visible = proj["visible"]
    vis_idx = visible.nonzero().squeeze(1)                           # ascending index
    order = torch.sort(proj["depths"].detach()[vis_idx], stable=True).indices
    sidx = vis_idx[order]                                            # front-to-back
    V = int(sidx.numel())
    n_pix = width * height

    if V == 0:
        # Nothing to composite.  Keep the outputs attached to the differentiable
        # inputs (with exactly zero gradient) so that ``loss.backward()`` on an
        # empty / fully culled frame works like on any other frame.
        anchor = 0.0 * (means2d.sum() + opacities.sum() + colors.sum())
        rgb = torch.zeros(n_pix, 3, dtype=DTYPE) + anchor
        t_final = torch.ones(n_pix, dtype=DTYPE) + anchor
        blend_s = torch.zeros(0, dtype=DTYPE)
        count_s = torch.zeros(0, dtype=torch.int64)
    else:
        m2d_s = means2d[sidx]
        con_s = proj["conics"][sidx]
        op_s = opacities[sidx]
        col_s = colors[sidx]
        rect_s = proj["tile_rect"][sidx]
        rgbs, ts, blends, counts = [], [], [], []
        for start in range(0, n_pix, pixel_chunk):
            pix = torch.arange(start, min(start + pixel_chunk, n_pix), dtype=torch.int64)
            args = (pix, m2d_s, con_s, op_s, col_s, rect_s, width)
            if checkpoint and torch.is_grad_enabled():
                out = _torch_checkpoint(_composite_chunk, *args, use_reentrant=False)
            else:
                out = _composite_chunk(*args)
            rgbs.append(out[0])
            ts.append(out[1])
            blends.append(out[2])
            counts.append(out[3])
        rgb = torch.cat(rgbs, dim=0)
        t_final = torch.cat(ts, dim=0)
        blend_s = torch.stack(blends, dim=0).sum(dim=0)
        count_s = torch.stack(counts, dim=0).sum(dim=0)

    image = (rgb + t_final[:, None] * bg[None, :]).reshape(height, width, 3)
    alpha = (1.0 - t_final).reshape(height, width)
    blend_weight = torch.zeros(n, dtype=DTYPE).index_add(0, sidx, blend_s)
    pixel_count = torch.zeros(n, dtype=torch.int64).index_add(0, sidx, count_s)
    return {
        "image": image,
        "alpha": alpha,
        "depths": proj["depths"],
        "radii": proj["radii"],
        "means2d": means2d,
        "pixel_count": pixel_count,
        "blend_weight": blend_weight,
        "conics": proj["conics"],
        "cov2d": proj["cov2d"],
        "tile_rect": proj["tile_rect"],
        "visible": visible,
        "colors": colors,
    }
