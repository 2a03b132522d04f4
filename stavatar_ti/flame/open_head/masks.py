"""Soft per-vertex masks of the open head shared by the rigging and the blendshapes: above / below
the lip line (`_mouth_side`) and near the eyes (`_eye_weight`).
"""

from __future__ import annotations

import numpy as np

from .ray_grid import JF, MOUTH_HALF
from .sculpt import EYE_CENTER, _smoothstep


def _mouth_side(B, V):
    """s_up in [0,1]: 1 above the lip line, 0 below; sharp across the lip cut, soft on the cheeks."""
    n = len(V)
    s_up = np.ones(n)
    xc = 0.5 * (abs(V[B.ida[B.i_m, JF - MOUTH_HALF], 0]) + abs(V[B.ida[B.i_m, JF + MOUTH_HALF], 0]))
    r = (B.sk_i - B.i_m).astype(float)
    row_m = B.sk_i == B.i_m
    r[row_m & (B.sk_kind == 1)] = 0.5
    r[row_m & (B.sk_kind == 2)] = -0.5
    w = 0.5 + 160.0 * np.maximum(np.abs(V[:B.n_skin, 0]) - xc, 0.0)
    s_up[:B.n_skin] = _smoothstep(-w, w, r)
    s_up[B.cap_id] = 0.0
    sig = B.mouth_sigma
    for ids in B.mouth_ring_ids[1:]:
        s_up[ids] = 0.5 * (1.0 + sig)
    s_up[B.mouth_back_id] = 0.5
    return s_up, xc


def _eye_weight(V):
    """1 within the lid spheres (eyelid margins, linings, eyeballs), falling to 0 at 24 mm."""
    w = np.zeros(len(V))
    for sx in (1.0, -1.0):
        d = np.linalg.norm(V - EYE_CENTER * np.array([sx, 1.0, 1.0]), axis=1)
        w = np.maximum(w, 1.0 - _smoothstep(0.0145, 0.024, d))
    return w
