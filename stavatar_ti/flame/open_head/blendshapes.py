"""The open head's blendshapes: expressions (analytic displacement fields and re-warped eyelid rows)
and identity shape components (the designed fields, then seeded random smooth bumps).
"""

from __future__ import annotations

import numpy as np

from .masks import _eye_weight
from .ray_grid import JF, K_LO, MOUTH_HALF
from .sculpt import EYE_CENTER, Y_MOUTH, _bump1, _smoothstep

EXPRESSION_NAMES = (
    "smile", "frown", "pucker", "blink_left", "blink_right", "brow_raise", "brow_lower", "cheek_puff",
    "lip_press", "mouth_stretch", "squint", "sneer", "eye_wide", "lips_part", "mouth_left", "mouth_right",
)
SHAPE_NAMES = (
    "head_width", "face_length", "nose_size", "jaw_width", "head_height", "head_depth", "chin_projection",
    "cheekbones", "eye_spacing", "brow_ridge", "lip_fullness", "nose_width", "forehead_slope",
    "neck_thickness", "mouth_width", "ear_size",
)
NUM_DESIGNED_SHAPES = len(SHAPE_NAMES)


def _bump(V, c, r):
    """Compact smooth bump about centre c with radii r (scalar or per axis)."""
    d = (V - np.asarray(c)) / np.asarray(r)
    return _bump1(np.sqrt((d * d).sum(1)))


def _mirror_field(B, D):
    """The mirror image (x -> -x) of a displacement field given on the vertices."""
    return D[B.mirror] * np.array([-1.0, 1.0, 1.0])


def _lid_displacement(B, V, down_up, up_lo):
    """Left-eye lid motion: re-warp the eye band to a new contour, rebuild the lining."""
    D = np.zeros_like(V)
    qa, qb = B._eye_band(down_up, up_lo)
    idx = B.band_idx
    rows = B.sk_i[idx] - B.i_e + K_LO
    q = np.where(B.sk_kind[idx] == 2, qb[B.band_slots, rows], qa[B.band_slots, rows])
    D[idx] = B._tab_points(B.band_slots, q) - V[idx]
    loop, _, _, centre = B.eye_loops[0]
    rings, mid = B.lining_rings(V[loop] + D[loop], centre)
    ids, mid_id = B.lining_ids[0]
    for r, ids_r in enumerate(ids[1:]):
        D[ids_r] = rings[r] - V[ids_r]
    D[mid_id] = mid - V[mid_id]
    return D


def _expressions(B, V, s_up):
    """Expression blendshapes [V,3,len(EXPRESSION_NAMES)] (coefficient 1 = the full expression)."""
    x, y, z = V[:, 0], V[:, 1], V[:, 2]
    cL = V[B.ida[B.i_m, JF + MOUTH_HALF]]
    m = V[B.ida[B.i_m, JF]]
    X = np.array([-1.0, 1.0, 1.0])

    def pair(c, r, d):
        c, d = np.asarray(c, float), np.asarray(d, float)
        return _bump(V, c, r)[:, None] * d + _bump(V, c * X, r)[:, None] * (d * X)

    lip_l = _bump(V, m, (0.032, 0.016, 0.025))
    lip_w = _bump(V, m - np.array([0.0, 0.0, 0.004]), (0.06, 0.03, 0.04))
    ax, ay = np.abs(x), y
    brow = (_smoothstep(0.017, 0.033, ay) * (1.0 - _smoothstep(0.045, 0.105, ay))
            * (1.0 - _smoothstep(0.03, 0.075, ax)) * _smoothstep(-0.01, 0.05, z))
    below_lid = 1.0 - _smoothstep(-0.006, 0.0, y)
    zero = np.zeros(len(V))
    F = {}
    F["smile"] = pair(cL, 0.034, (0.006, 0.009, -0.004)) + pair((0.042, -0.022, 0.060), 0.028, (0.001, 0.004, 0.003))
    F["frown"] = (pair(cL, 0.030, (0.002, -0.007, -0.001))
                  + _bump(V, (0.0, -0.080, 0.078), 0.025)[:, None] * np.array([0.0, 0.003, 0.002]))
    F["pucker"] = np.stack([-0.5 * x * lip_w, -0.3 * (y - m[1]) * lip_w, 0.009 * lip_w], 1)
    F["brow_raise"] = brow[:, None] * np.array([0.0, 0.008, -0.0015])
    F["brow_lower"] = np.stack([-0.0045 * np.tanh(x / 0.01) * (1.0 - _smoothstep(0.012, 0.05, ax)) * brow,
                                -0.005 * brow, 0.0015 * brow], 1)
    n_ch = np.array([1.0, -0.1, 0.55]) / np.linalg.norm([1.0, -0.1, 0.55])
    F["cheek_puff"] = (pair((0.046, -0.046, 0.046), 0.036, 0.009 * n_ch)
                       + lip_l[:, None] * np.array([0.0, 0.0, -0.0015]))
    F["lip_press"] = np.stack([zero, -0.5 * (y - m[1]) * lip_l, -0.0035 * lip_l], 1)
    F["mouth_stretch"] = (pair(cL, 0.036, (0.008, -0.0025, -0.002))
                          + np.stack([zero, -0.25 * (y - m[1]) * lip_l, zero], 1))
    F["squint"] = pair((0.035, -0.012, 0.062), 0.022, (0.0, 0.003, 0.0015)) * below_lid[:, None]
    F["sneer"] = (pair((0.012, m[1] + 0.006, m[2]), (0.016, 0.018, 0.025), (0.0, 0.0045, 0.001)) * s_up[:, None]
                  + pair((0.0135, -0.029, 0.082), 0.014, (0.0, 0.003, 0.0))
                  + _bump(V, (0.0, 0.010, 0.080), 0.016)[:, None] * np.array([0.0, -0.002, 0.0]))
    F["eye_wide"] = brow[:, None] * np.array([0.0, 0.003, 0.0])
    lip_p = _bump(V, m, (0.04, 0.025, 0.03))
    F["lips_part"] = np.stack([zero, (0.0025 * s_up - 0.0045 * (1.0 - s_up)) * lip_p, 0.0005 * lip_p], 1)
    sh = _bump(V, m, (0.055, 0.035, 0.04))
    F["mouth_left"] = np.stack([0.007 * sh, zero, zero], 1)
    F["mouth_right"] = np.stack([-0.007 * sh, zero, zero], 1)
    keep = (1.0 - _eye_weight(V))[:, None]
    lid_blink = _lid_displacement(B, V, 0.85, 0.15)
    lid_squint = _lid_displacement(B, V, 0.25, 0.30)
    lid_wide = _lid_displacement(B, V, -0.30, -0.08)
    out = np.zeros((len(V), 3, len(EXPRESSION_NAMES)))
    for k, name in enumerate(EXPRESSION_NAMES):
        D = F[name] * keep if name in F else np.zeros_like(V)
        if name == "blink_left":
            D = D + lid_blink
        elif name == "blink_right":
            D = D + _mirror_field(B, lid_blink)
        elif name == "squint":
            D = D + lid_squint + _mirror_field(B, lid_squint)
        elif name == "eye_wide":
            D = D + lid_wide + _mirror_field(B, lid_wide)
        for ids in B.eyeball_ids:
            D[ids] = 0.0
        out[:, :, k] = D
    return out


def _shape_fields(P):
    """Designed identity components: displacement [N,3] per name for points P [N,3] (metres)."""
    x, y, z = P[:, 0], P[:, 1], P[:, 2]
    zero = np.zeros(len(P))
    X = np.array([-1.0, 1.0, 1.0])

    def pair(c, r, d):
        c, d = np.asarray(c, float), np.asarray(d, float)
        return _bump(P, c, r)[:, None] * d + _bump(P, c * X, r)[:, None] * (d * X)

    def ear(c_root, scale):
        c_root = np.asarray(c_root)
        out = np.zeros_like(P)
        for sx in (1.0, -1.0):
            mask = _bump(P, np.array([0.079 * sx, 0.004, -0.020]), (0.022, 0.042, 0.032))
            out += scale * (P - c_root * np.array([sx, 1.0, 1.0])) * mask[:, None]
        return out

    lips = _bump(P, (0.0, Y_MOUTH, 0.085), (0.032, 0.016, 0.025))
    nose = _bump(P, (0.0, -0.012, 0.088), (0.026, 0.036, 0.032)) * _smoothstep(0.062, 0.078, z)
    neck_dir = np.stack([x, zero, z + 0.024], 1)
    neck_dir /= np.maximum(np.linalg.norm(neck_dir, axis=1, keepdims=True), 1e-9)
    S = {
        "head_width": np.stack([0.01 * x / 0.075 * _smoothstep(-0.11, 0.0, y), zero, zero], 1),
        "face_length": np.stack([zero, -0.01 * np.clip((0.012 - y) / 0.118, 0.0, 1.0), zero], 1),
        "nose_size": 0.3 * (P - np.array([0.0, 0.0, 0.07])) * nose[:, None],
        "jaw_width": pair((0.050, -0.070, 0.0), (0.04, 0.045, 0.06), (0.01, 0.0, 0.0)),
        "head_height": np.stack([zero, 0.01 * np.clip(y - 0.012, 0.0, None) / 0.113, zero], 1),
        "head_depth": np.stack([zero, zero, -0.01 * _smoothstep(0.0, -0.105, z) * _smoothstep(-0.08, -0.02, y)], 1),
        "chin_projection": _bump(P, (0.0, -0.092, 0.07), (0.035, 0.03, 0.04))[:, None] * np.array([0.0, -0.002, 0.01]),
        "cheekbones": pair((0.060, -0.004, 0.056), 0.04, (0.006, 0.0, 0.004)),
        "eye_spacing": pair(EYE_CENTER, 0.03, (0.005, 0.0, 0.0)),
        "brow_ridge": _bump(P, (0.0, 0.030, 0.080), (0.06, 0.016, 0.03))[:, None] * np.array([0.0, 0.0, 0.007]),
        "lip_fullness": np.stack([zero, 0.15 * (y - Y_MOUTH) * lips, 0.004 * lips], 1),
        "nose_width": pair((0.014, -0.028, 0.080), (0.012, 0.012, 0.014), (0.004, 0.0, 0.0)),
        "forehead_slope": np.stack([zero, zero, -0.01 * _smoothstep(0.035, 0.11, y) * _smoothstep(0.0, 0.06, z)], 1),
        "neck_thickness": 0.008 * neck_dir * (1.0 - _smoothstep(-0.10, -0.07, y))[:, None],
        "mouth_width": pair((0.025, Y_MOUTH, 0.072), 0.03, (0.005, 0.0, -0.001)),
        "ear_size": ear((0.072, 0.004, -0.019), 0.25),
    }
    return [S[name] for name in SHAPE_NAMES]


def _shapes(B, V, n_shape, seed):
    """Identity blendshapes [V,3,n_shape]: the designed ones, then seeded random smooth ones."""
    eyes = np.stack([EYE_CENTER, EYE_CENTER * np.array([-1.0, 1.0, 1.0])])
    P = np.concatenate([V, eyes])
    comps = _shape_fields(P)[:n_shape]
    if n_shape > len(comps):
        rng = np.random.default_rng(seed)
        skin = np.arange(B.n_skin)
        Fs = B.skin_faces
        fn = np.cross(V[Fs[:, 1]] - V[Fs[:, 0]], V[Fs[:, 2]] - V[Fs[:, 0]])
        vn = np.zeros((B.n_skin, 3))
        for c in range(3):
            np.add.at(vn, Fs[:, c], fn)
        vn /= np.maximum(np.linalg.norm(vn, axis=1, keepdims=True), 1e-12)
        cand = skin[(V[skin, 0] >= 0.0) & (V[skin, 1] > -0.13)]
        X = np.array([-1.0, 1.0, 1.0])
        for _ in range(n_shape - len(comps)):
            D = np.zeros_like(P)
            for _ in range(4):
                v = rng.choice(cand)
                r = rng.uniform(0.03, 0.06)
                a = rng.uniform(0.004, 0.008) * rng.choice([-1.0, 1.0])
                D += _bump(P, V[v], r)[:, None] * (a * vn[v])
                D += _bump(P, V[v] * X, r)[:, None] * (a * vn[v] * X)
            comps.append(D)
    out = np.zeros((len(V), 3, n_shape))
    w_eye = np.zeros(len(V))
    side = V[:, 0] < 0
    for sx, e in ((1.0, 0), (-1.0, 1)):
        d = np.linalg.norm(V - eyes[e], axis=1)
        w_eye = np.where((side == (sx < 0)), 1.0 - _smoothstep(0.0145, 0.024, d), w_eye)
    for k, D in enumerate(comps):
        Dv, De = D[:len(V)], D[len(V):]
        rigid = np.where(side[:, None], De[1], De[0])
        Dv = Dv + w_eye[:, None] * (rigid - Dv)
        for e, ids in enumerate(B.eyeball_ids):
            Dv[ids] = De[e]
        out[:, :, k] = Dv
    return out
