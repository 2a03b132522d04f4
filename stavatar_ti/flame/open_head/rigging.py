"""The open head's rig: LBS skinning weights, the joint regressor and the four region vertex sets
of the local decoder.
"""

from __future__ import annotations

import numpy as np

from .sculpt import EYE_CENTER, JAW_HINGE, NECK_TOP, Y_NECK_CUT, _lip_bump, _nose_sdf, _smoothstep


def _skinning_weights(B, V, s_up, xc):
    """[V,5] LBS weights (global, neck, jaw, left eye, right eye); rows sum to 1."""
    x, y, z = np.abs(V[:, 0]), V[:, 1], V[:, 2]
    # jaw: sharp split along the lip cut, a plane through the hinge and the mouth corners on the
    # cheeks, nothing behind the hinge, above it, or on the neck below the mandible
    n_pl = np.array([0.0, 0.894, 0.447])
    h = (V - JAW_HINGE) @ n_pl
    w_plane = 1.0 - _smoothstep(-0.012, 0.012, h)
    lam = _smoothstep(xc - 0.003, xc + 0.015, x)
    w = (1.0 - lam) * (1.0 - s_up) + lam * w_plane
    w *= _smoothstep(JAW_HINGE[2] - 0.03, JAW_HINGE[2] + 0.01, z)
    w *= 1.0 - _smoothstep(JAW_HINGE[1] - 0.004, JAW_HINGE[1] + 0.016, y)
    g = np.array([0.0, -0.074, -0.012])
    n_nk = np.array([0.0, 0.048, 0.044]) / np.hypot(0.048, 0.044)     # gonion -> throat line
    w *= _smoothstep(-0.012, 0.012, (V - g) @ n_nk)
    # mouth cavity: lower half with the jaw, blending toward the back of the pocket
    sig = B.mouth_sigma
    for r, ids in enumerate(B.mouth_ring_ids[1:]):
        c = (1.0, 1.0, 1.0, 1.0, 0.8, 0.6, 0.4)[r]
        w[ids] = 0.5 - 0.5 * sig * c
    w[B.mouth_back_id] = 0.5
    w[B.cap_id] = 0.0
    for ids, mid in B.lining_ids:
        w[np.concatenate(ids[1:] + [np.array([mid])])] = 0.0
    W = np.zeros((len(V), 5))
    W[:, 2] = w
    root = (1.0 - w) * (1.0 - _smoothstep(Y_NECK_CUT + 0.012, -0.088, y))
    W[:, 0] = root
    W[:, 1] = 1.0 - w - root
    for k, ids in enumerate(B.eyeball_ids):
        W[ids] = 0.0
        W[ids, 3 + k] = 1.0
    return W


def _convex_weights(P, target, w0):
    """Positive weights summing to 1 with sum_i w_i P_i = target (target inside the convex hull
    of P): the maximum-entropy tilt w_i ~ w0_i exp(lambda . P_i), lambda found by Newton's method.
    Mirror-symmetric candidates and prior weights give mirror-symmetric weights."""
    X = P - np.asarray(target)
    lam = np.zeros(3)
    for _ in range(100):
        a = X @ lam
        w = w0 * np.exp(a - a.max())
        w /= w.sum()
        g = w @ X
        if np.abs(g).max() < 1e-10:
            break
        C = (X * w[:, None]).T @ X - np.outer(g, g) + 1e-12 * np.eye(3)
        lam -= np.linalg.solve(C, g)
    return w


def _joint_regressor(B, V):
    J = np.zeros((5, len(V)))
    ring = B.idb[0, B.row_cols[0]]
    P = V[ring]
    seg = np.linalg.norm(np.roll(P, -1, 0) - P, axis=1)
    w = 0.5 * (seg + np.roll(seg, 1))
    J[0, ring] = w / w.sum()
    skin = np.arange(B.n_skin)
    Vs = V[:B.n_skin]
    for row, target, cand in (
            (1, NECK_TOP, (np.abs(Vs[:, 1] - NECK_TOP[1]) < 0.010) & (Vs[:, 2] < 0.0)),
            (2, JAW_HINGE, (np.abs(Vs[:, 1] - JAW_HINGE[1]) < 0.010) & (np.abs(Vs[:, 2] - JAW_HINGE[2]) < 0.016)
             & (np.abs(Vs[:, 0]) > 0.04))):
        ids = skin[cand]
        J[row, ids] = _convex_weights(V[ids], target, np.ones(len(ids)))
    for k, ids in enumerate(B.eyeball_ids):
        J[3 + k, ids[0]] = J[3 + k, ids[-1]] = 0.5         # front and back poles: the centre
    return J


def _regions(B, V):
    skin = np.arange(B.n_skin)
    Vs = V[:B.n_skin]
    x, y, z = np.abs(Vs[:, 0]), Vs[:, 1], Vs[:, 2]
    d_eye = np.linalg.norm(np.stack([x, y, z], 1) - EYE_CENTER, axis=1)
    eye = skin[(d_eye < 0.026) & (y > EYE_CENTER[1] - 0.017) & (y < EYE_CENTER[1] + 0.024)]
    lin = np.concatenate([np.concatenate(ids[1:] + [np.array([mid])]) for ids, mid in B.lining_ids])
    eye = np.concatenate([eye, lin] + list(B.eyeball_ids))
    nose = skin[(_nose_sdf(x, y, z) < 0.0035) & (y > -0.0385)]
    lips = skin[_lip_bump(x, y, z) > 0.0006]
    lips = np.concatenate([lips, B.mouth_loop, B.mouth_ring_ids[1], B.mouth_ring_ids[2]])
    fore = skin[(y > 0.037) & (y < 0.092) & (z > 0.035) & (x < 0.056)]
    fore = np.setdiff1d(fore, eye)
    return {k: np.unique(v).astype(np.int64) for k, v in
            (("eye_region", eye), ("nose", nose), ("lips", lips), ("forehead", fore))}
