"""Rotation helpers in torch (batched, differentiable): axis-angle, matrices, quaternions (w,x,y,z).

Sources: Rodrigues' formula; the Hamilton product; Shepperd's method ("Quaternion from rotation
matrix", J. Guidance and Control 1978) for matrix -> quaternion.
"""

from __future__ import annotations

import torch


def axis_angle_to_matrix(aa: torch.Tensor) -> torch.Tensor:
    """Rodrigues: [...,3] axis-angle (radians, axis * angle) -> [...,3,3] rotation matrices.

    Smooth at zero angle (uses the angle with an epsilon, as SMPL/FLAME's batch_rodrigues).
    """
    angle = torch.linalg.norm(aa + 1e-8, dim=-1, keepdim=True)
    axis = aa / angle
    cos, sin = torch.cos(angle)[..., None], torch.sin(angle)[..., None]
    x, y, z = axis.unbind(-1)
    zero = torch.zeros_like(x)
    Kx = torch.stack([zero, -z, y, z, zero, -x, -y, x, zero], -1).reshape(*aa.shape[:-1], 3, 3)
    eye = torch.eye(3, dtype=aa.dtype, device=aa.device).expand_as(Kx)
    return eye + sin * Kx + (1.0 - cos) * (Kx @ Kx)


def quat_to_matrix(q: torch.Tensor) -> torch.Tensor:
    """[...,4] quaternions (w,x,y,z), normalised inside -> [...,3,3] rotation matrices."""
    q = q / q.norm(dim=-1, keepdim=True)
    w, x, y, z = q.unbind(-1)
    return torch.stack([
        1 - 2 * (y * y + z * z), 2 * (x * y - w * z), 2 * (x * z + w * y),
        2 * (x * y + w * z), 1 - 2 * (x * x + z * z), 2 * (y * z - w * x),
        2 * (x * z - w * y), 2 * (y * z + w * x), 1 - 2 * (x * x + y * y),
    ], -1).reshape(*q.shape[:-1], 3, 3)


def matrix_to_quat(R: torch.Tensor) -> torch.Tensor:
    """[...,3,3] rotation matrices -> [...,4] unit quaternions (w,x,y,z) with w >= 0.

    Shepperd's method: pick the largest of the four squared-component candidates for stability.
    """
    m = R
    diag = torch.stack([
        1 + m[..., 0, 0] + m[..., 1, 1] + m[..., 2, 2],
        1 + m[..., 0, 0] - m[..., 1, 1] - m[..., 2, 2],
        1 - m[..., 0, 0] + m[..., 1, 1] - m[..., 2, 2],
        1 - m[..., 0, 0] - m[..., 1, 1] + m[..., 2, 2],
    ], -1)
    best = diag.argmax(-1, keepdim=True)
    r = torch.sqrt(diag.gather(-1, best).clamp_min(1e-12))  # = 2|component|
    s = 0.5 / r
    w_x = (m[..., 2, 1] - m[..., 1, 2])[..., None]
    w_y = (m[..., 0, 2] - m[..., 2, 0])[..., None]
    w_z = (m[..., 1, 0] - m[..., 0, 1])[..., None]
    x_y = (m[..., 0, 1] + m[..., 1, 0])[..., None]
    x_z = (m[..., 0, 2] + m[..., 2, 0])[..., None]
    y_z = (m[..., 1, 2] + m[..., 2, 1])[..., None]
    cands = torch.stack([
        torch.cat([0.5 * r, w_x * s, w_y * s, w_z * s], -1),
        torch.cat([w_x * s, 0.5 * r, x_y * s, x_z * s], -1),
        torch.cat([w_y * s, x_y * s, 0.5 * r, y_z * s], -1),
        torch.cat([w_z * s, x_z * s, y_z * s, 0.5 * r], -1),
    ], -2)
    q = cands.gather(-2, best[..., None].expand(*best.shape[:-1], 1, 4)).squeeze(-2)
    q = q * torch.where(q[..., :1] < 0, -1.0, 1.0)
    return q / q.norm(dim=-1, keepdim=True)


def quat_multiply(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Hamilton product a ⊗ b of [...,4] (w,x,y,z) quaternions (b is applied first)."""
    aw, ax, ay, az = a.unbind(-1)
    bw, bx, by, bz = b.unbind(-1)
    return torch.stack([
        aw * bw - ax * bx - ay * by - az * bz,
        aw * bx + ax * bw + ay * bz - az * by,
        aw * by - ax * bz + ay * bw + az * bx,
        aw * bz + ax * by - ay * bx + az * bw,
    ], -1)
