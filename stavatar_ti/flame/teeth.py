"""Proxy teeth for FLAME-format models (GaussianAvatars / VHAP construction; method.md Sec. 2).

From the 15-vertex upper and lower outer lip rings of the template:
- gap = mean distance between paired ring vertices; the middle row is the ring average with a
  common y (the mean), pushed back 1.5 gap along -z;
- upper / lower edge rows are offset +-0.1 gap in y, root rows 2 gap further up / down, the lower
  rows move back a further 0.4 gap, and a back copy of every row sits 1.0 gap behind (-z):
  8 rows x 15 = 120 vertices and 3 strips x 14 quads x 2 = 84 triangles per jaw (168 in total);
- shape blendshapes = mean of the lip-ring shape directions; expression and pose correctives 0;
- upper teeth are skinned 100 % to the neck joint, lower teeth 100 % to the jaw joint;
- UVs: a 15 x 8 grid in the strip u in [0.38, 0.62], v in [0.9575, 0.9917] at the top of the UV
  image (columns run from u = 0.62 to 0.38 as in the official layout).
Deviation, on purpose: the official face list winds 112 of the 168 teeth UV triangles opposite to
the rest of the layout (so a back-face-culled UV rasterisation drops them) and its row order folds
the strip; here every teeth triangle is wound like the head (outward in 3D, counter-clockwise in
UV) and the UV rows are stacked without overlap.
"""

from __future__ import annotations

import numpy as np

# FLAME (5023-vertex topology) outer lip rings, subject's right corner to left corner, paired.
FLAME_LIP_RING_UPPER = (1713, 1715, 1716, 1735, 1696, 1694, 1657, 3543, 2774, 2811, 2813, 2850, 2833, 2832, 2830)
FLAME_LIP_RING_LOWER = (1576, 1577, 1773, 1774, 1795, 1802, 1865, 3503, 2948, 2905, 2898, 2881, 2880, 2713, 2712)
NUM_COLS = 15
NECK_JOINT, JAW_JOINT = 1, 2


def teeth_vertices(v_template: np.ndarray, ring_upper, ring_lower) -> np.ndarray:
    """[120,3] teeth vertices in row order: for each jaw (upper, lower), rows
    root_front, edge_front, edge_back, root_back (each 15 columns along the lip ring)."""
    up = v_template[np.asarray(ring_upper)]
    lo = v_template[np.asarray(ring_lower)]
    gap = np.linalg.norm(up - lo, axis=-1).mean()
    middle = 0.5 * (up + lo)
    middle[:, 1] = middle[:, 1].mean()
    middle[:, 2] -= 1.5 * gap
    dy = np.array([0.0, 1.0, 0.0])
    back = np.array([0.0, 0.0, -1.0 * gap])
    upper_edge = middle + 0.1 * gap * dy
    upper_root = upper_edge + 2.0 * gap * dy
    lower_edge = middle - 0.1 * gap * dy + np.array([0.0, 0.0, -0.4 * gap])
    lower_root = lower_edge - 2.0 * gap * dy
    rows = [upper_root, upper_edge, upper_edge + back, upper_root + back,
            lower_root, lower_edge, lower_edge + back, lower_root + back]
    return np.concatenate(rows, 0)


def _strip_faces(row_a: int, row_b: int, flip: bool) -> list:
    """Two triangles per column pair between rows a and b (vertex id = row * 15 + col)."""
    faces = []
    for c in range(NUM_COLS - 1):
        a0, a1 = row_a * NUM_COLS + c, row_a * NUM_COLS + c + 1
        b0, b1 = row_b * NUM_COLS + c, row_b * NUM_COLS + c + 1
        quad = [(a0, b0, a1), (a1, b0, b1)]
        faces += [(t[0], t[2], t[1]) for t in quad] if flip else quad
    return faces


def teeth_faces() -> np.ndarray:
    """[168,3] faces over the 120 teeth vertices (0-based within the teeth block).

    Rows (upper jaw 0-3, lower jaw 4-7) are root_front, edge_front, edge_back, root_back; strips
    front (0-1), biting edge (1-2), back (2-3). Columns run from the subject's right to left (+x),
    so the winding below makes the front strip face +z (outward) in 3D.
    """
    faces = []
    for jaw, flip in ((0, False), (4, True)):  # the lower jaw is a mirror image in y
        for a, b in ((0, 1), (1, 2), (2, 3)):
            faces += _strip_faces(jaw + a, jaw + b, flip)
    return np.asarray(faces, dtype=np.int64)


def teeth_uvs() -> np.ndarray:
    """[120,2] UVs: columns u from 0.62 to 0.38, rows on 8 distinct v levels in [0.9575, 0.9917].

    The upper jaw's rows climb from the bottom of the strip and the lower jaw's descend from its
    top (the lower jaw's faces are mirrored), so every teeth triangle is counter-clockwise in UV
    and the two jaws' islands do not overlap."""
    u = np.linspace(0.62, 0.38, NUM_COLS)
    levels = np.linspace(0.9575, 0.9917, 8)
    v = np.concatenate([levels[:4], levels[4:][::-1]])
    return np.stack([np.tile(u, 8), np.repeat(v, NUM_COLS)], -1)


def add_teeth(model: dict, ring_upper, ring_lower, n_shape_cols: int) -> dict:
    """Return a copy of a FLAME-format dict (numpy arrays) with the 120 teeth vertices appended.

    Args:
        model: dict with v_template [V,3], f [F,3], shapedirs [V,3,K], posedirs [V,3,P],
            J_regressor [J,V] (dense), weights [V,J], and optional vt [T,2] / ft [F,3].
        ring_upper, ring_lower: 15 vertex ids each (paired columns).
        n_shape_cols: the first `n_shape_cols` columns of shapedirs are identity shape (teeth
            follow their mean over the lip rings); the rest are expression (zero for teeth).
    Returns:
        new dict with V+120 vertices and F+168 faces (UVs extended when present).
    """
    out = dict(model)
    V = model["v_template"].shape[0]
    ring = np.concatenate([np.asarray(ring_upper), np.asarray(ring_lower)])
    out["v_template"] = np.concatenate([model["v_template"], teeth_vertices(model["v_template"], ring_upper,
                                                                             ring_lower)], 0)
    sd = model["shapedirs"]
    teeth_sd = np.zeros((120,) + sd.shape[1:], dtype=sd.dtype)
    teeth_sd[..., :n_shape_cols] = sd[ring][..., :n_shape_cols].mean(0)
    out["shapedirs"] = np.concatenate([sd, teeth_sd], 0)
    out["posedirs"] = np.concatenate([model["posedirs"], np.zeros((120,) + model["posedirs"].shape[1:])], 0)
    out["J_regressor"] = np.concatenate([model["J_regressor"], np.zeros((model["J_regressor"].shape[0], 120))], 1)
    w = np.zeros((120, model["weights"].shape[1]))
    w[:60, NECK_JOINT] = 1.0
    w[60:, JAW_JOINT] = 1.0
    out["weights"] = np.concatenate([model["weights"], w], 0)
    out["f"] = np.concatenate([model["f"], teeth_faces() + V], 0)
    if model.get("vt") is not None and model.get("ft") is not None:
        T = model["vt"].shape[0]
        out["vt"] = np.concatenate([model["vt"], teeth_uvs()], 0)
        out["ft"] = np.concatenate([model["ft"], teeth_faces() + T], 0)
    return out
