"""Offset activations and the final Gaussian parameters θ* (method.md §5.9, §6).

The raw offset map O of the UV network is sampled per Gaussian, activated here
(:func:`activate_offsets`) and composed with the coarse parameters θ̃ (:func:`compose_final`).
"""

from __future__ import annotations

import math
from typing import Mapping

import torch
import torch.nn as nn

from ..geometry import quat_multiply
from ..render.validation import check_float_tensor

__all__ = ["OffsetActivation", "activate_offsets", "axis_angle_to_quat", "compose_final", "unpack_offsets",
           "OFFSET_CHANNELS", "PACKED_CHANNELS"]

#: Raw offset channels predicted per texel (method.md §5.9).
OFFSET_CHANNELS = 13
#: Activated per-Gaussian offset vector length: δμ(3) δs(3) q_δ(4) δc(3) δα(1) (method.md §5.9).
PACKED_CHANNELS = 14


# --------------------------------------------------------------------------------------------------
# §5.9 offset activations
# --------------------------------------------------------------------------------------------------

_SMALL_ANGLE_SQ = 1e-6  # θ² below which the Taylor series is used (θ < 1e-3 rad)


def axis_angle_to_quat(aa: torch.Tensor) -> torch.Tensor:
    """Axis-angle [...,3] (radians, axis·angle) → unit quaternion [...,4] (w,x,y,z).

    q = (cos(θ/2), aa · sin(θ/2)/θ) with θ = |aa|. Both factors are even functions of θ and are
    computed from θ² only: for θ² < 1e-6 by their Taylor series (cos(θ/2) = 1 − θ²/8 + θ⁴/384,
    sin(θ/2)/θ = ½ − θ²/48 + θ⁴/3840; truncation error < 1e-19), otherwise exactly with a guarded
    sqrt. So the map is smooth everywhere, q ≈ (1, aa/2) for tiny angles and gradients are finite
    (no NaN) at exactly aa = 0. |q| = 1 up to rounding. No sign canonicalisation (w may be < 0 for
    θ > π), which keeps the map continuous.

    Raises:
        ValueError: if `aa` is not a floating tensor with last dimension 3.
    """
    if not isinstance(aa, torch.Tensor) or aa.ndim < 1 or aa.shape[-1] != 3 or not aa.is_floating_point():
        desc = f"{list(aa.shape)} {aa.dtype}" if isinstance(aa, torch.Tensor) else type(aa).__name__
        raise ValueError(f"aa: expected a floating tensor of shape [...,3], got {desc}")
    t2 = (aa * aa).sum(-1, keepdim=True)
    small = t2 < _SMALL_ANGLE_SQ
    t2_safe = torch.where(small, torch.ones_like(t2), t2)
    t = torch.sqrt(t2_safe)
    half = 0.5 * t
    w_big, s_big = torch.cos(half), torch.sin(half) / t
    w_small = 1.0 - t2 / 8.0 + t2 * t2 / 384.0
    s_small = 0.5 - t2 / 48.0 + t2 * t2 / 3840.0
    w = torch.where(small, w_small, w_big)
    s = torch.where(small, s_small, s_big)
    return torch.cat([w, aa * s], dim=-1)


def activate_offsets(raw: torch.Tensor) -> dict:
    """Activate raw per-Gaussian offsets (method.md §5.9).

    Args:
        raw: [...,13] raw offsets (e.g. the [B,N,13] result of ``lookup_uv`` on the map O), any
            float dtype/device.
    Returns:
        dict of tensors (same dtype/device, leading shape ``...``):
          ``delta_means``     [...,3] δμ = 0.1·tanh(raw[0:3]), world units (FLAME metres), in (−0.1, 0.1);
          ``delta_scales``    [...,3] δs = exp(raw[3:6]), multiplier, > 0 (1 = identity);
          ``delta_axis_angle``[...,3] π·tanh(raw[6:9]), radians, each component in (−π, π);
          ``delta_quats``     [...,4] unit quaternion (w,x,y,z) of that axis-angle;
          ``delta_sh_dc``     [...,3] δc = 0.7·tanh(raw[9:12]), SH-DC units, in (−0.7, 0.7);
          ``delta_opacities`` [...]   δα = 0.5·tanh(raw[12]), in (−0.5, 0.5);
          ``packed``          [...,14] cat[δμ(0:3), δs(3:6), q_δ(6:10), δc(10:13), δα(13)].
        (exp can overflow to inf for raw ≳ 88 in float32; that is the activation as specified.)
    Raises:
        ValueError: if the last dimension is not 13 or raw is not a floating tensor.
    """
    if not isinstance(raw, torch.Tensor) or raw.ndim < 1 or raw.shape[-1] != OFFSET_CHANNELS:
        shape = list(raw.shape) if isinstance(raw, torch.Tensor) else type(raw).__name__
        raise ValueError(f"raw: expected shape [...,{OFFSET_CHANNELS}], got {shape}")
    check_float_tensor(raw, "raw", tuple([None] * raw.ndim))
    d_mu = OffsetActivation.POSITION_SCALE * torch.tanh(raw[..., 0:3])
    d_s = torch.exp(raw[..., 3:6])
    aa = OffsetActivation.ROTATION_SCALE * torch.tanh(raw[..., 6:9])
    q = axis_angle_to_quat(aa)
    d_c = OffsetActivation.COLOR_SCALE * torch.tanh(raw[..., 9:12])
    d_a = OffsetActivation.OPACITY_SCALE * torch.tanh(raw[..., 12:13])
    return {
        "delta_means": d_mu,
        "delta_scales": d_s,
        "delta_axis_angle": aa,
        "delta_quats": q,
        "delta_sh_dc": d_c,
        "delta_opacities": d_a[..., 0],
        "packed": torch.cat([d_mu, d_s, q, d_c, d_a], dim=-1),
    }


def unpack_offsets(packed: torch.Tensor) -> dict:
    """Split a packed [...,14] activated offset vector (method.md §5.9 "final slot") into the dict
    keys of :func:`activate_offsets` (without ``delta_axis_angle``). Raises ValueError on a bad shape."""
    if not isinstance(packed, torch.Tensor) or packed.ndim < 1 or packed.shape[-1] != PACKED_CHANNELS:
        shape = list(packed.shape) if isinstance(packed, torch.Tensor) else type(packed).__name__
        raise ValueError(f"packed: expected shape [...,{PACKED_CHANNELS}], got {shape}")
    return {
        "delta_means": packed[..., 0:3],
        "delta_scales": packed[..., 3:6],
        "delta_quats": packed[..., 6:10],
        "delta_sh_dc": packed[..., 10:13],
        "delta_opacities": packed[..., 13],
        "packed": packed,
    }


class OffsetActivation(nn.Module):
    """Module form of :func:`activate_offsets` (method.md §5.9); parameter-free.

    Class constants: POSITION_SCALE = 0.1 (metres), ROTATION_SCALE = π (radians per axis-angle
    component), COLOR_SCALE = 0.7 (SH-DC units), OPACITY_SCALE = 0.5.
    ``forward(raw [...,13]) -> dict`` exactly as :func:`activate_offsets`.
    """

    POSITION_SCALE = 0.1
    ROTATION_SCALE = math.pi
    COLOR_SCALE = 0.7
    OPACITY_SCALE = 0.5

    def forward(self, raw: torch.Tensor) -> dict:
        return activate_offsets(raw)


# --------------------------------------------------------------------------------------------------
# §6 final parameters θ*
# --------------------------------------------------------------------------------------------------

def compose_final(coarse: Mapping[str, torch.Tensor], offsets) -> dict:
    """Compose the coarse parameters θ̃ with the activated offsets δ into θ* (method.md §6).

    Args:
        coarse: dict with
            ``means`` [N,3] μ̃ world (metres), ``scales`` [N,3] s̃ (world, post-exp),
            ``quats`` [N,4] r̃ (w,x,y,z), ``sh`` [N,K,3] SH coefficients (DC = sh[:,0]),
            ``opacities`` [N] α̃ in [0,1]. Other keys are passed through unchanged.
        offsets: the dict returned by :func:`activate_offsets` for one batch element (leading shape
            [N]), or a packed [N,14] tensor.
    Returns:
        dict with the same keys as `coarse`:
            means     = μ̃ + δμ                       (world-space addition, not rotated; §15 item 6)
            scales    = s̃ ⊙ δs
            quats     = normalize(q_δ ⊗ r̃)           (Hamilton product; r̃ applied first, then q_δ)
            sh        = sh with sh[:,0] + δc          (higher bands untouched; not in place)
            opacities = clamp(α̃ + δα, 0, 1)
        Differentiable w.r.t. both inputs (the clamp has zero gradient where it is active).
    Raises:
        ValueError: naming the key for a missing entry, a wrong shape or a mismatched N.
    """
    if isinstance(offsets, torch.Tensor):
        offsets = unpack_offsets(offsets)
    for key in ("means", "scales", "quats", "sh", "opacities"):
        if key not in coarse:
            raise ValueError(f"coarse: missing key {key!r}")
    for key in ("delta_means", "delta_scales", "delta_quats", "delta_sh_dc", "delta_opacities"):
        if key not in offsets:
            raise ValueError(f"offsets: missing key {key!r}")
    means = check_float_tensor(coarse["means"], "coarse['means']", (None, 3))
    N = means.shape[0]
    scales = check_float_tensor(coarse["scales"], "coarse['scales']", (N, 3))
    quats = check_float_tensor(coarse["quats"], "coarse['quats']", (N, 4))
    sh = check_float_tensor(coarse["sh"], "coarse['sh']", (N, None, 3))
    if sh.shape[1] < 1:
        raise ValueError("coarse['sh']: needs at least the DC band (K >= 1)")
    opac = check_float_tensor(coarse["opacities"], "coarse['opacities']", (N,))
    d_mu = check_float_tensor(offsets["delta_means"], "offsets['delta_means']", (N, 3))
    d_s = check_float_tensor(offsets["delta_scales"], "offsets['delta_scales']", (N, 3))
    d_q = check_float_tensor(offsets["delta_quats"], "offsets['delta_quats']", (N, 4))
    d_c = check_float_tensor(offsets["delta_sh_dc"], "offsets['delta_sh_dc']", (N, 3))
    d_a = check_float_tensor(offsets["delta_opacities"], "offsets['delta_opacities']", (N,))

    q = quat_multiply(d_q, quats)
    q = q / q.norm(dim=-1, keepdim=True).clamp_min(1e-12)
    out = dict(coarse)
    out.update(
        means=means + d_mu,
        scales=scales * d_s,
        quats=q,
        sh=torch.cat([sh[:, :1] + d_c[:, None], sh[:, 1:]], dim=1),
        opacities=(opac + d_a).clamp(0.0, 1.0),
    )
    return out
