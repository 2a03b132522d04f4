"""Procedural appearance of the synthetic head: an albedo texture in the head's UV space plus
expression-driven wrinkle maps (numpy, deterministic from the seed).

    bake_appearance(head, shape, seed, size) -> Appearance      # UV maps (or per-vertex colours)
    Appearance.frame_texture(weights) -> torch [H,W,3] float64  # albedo x wrinkle shading
    wrinkle_weights(named) -> [T, K]                             # expression -> wrinkle strengths

How it is placed
----------------
Every texel of the UV layout is rasterised (with the independent mesh renderer, UV used as screen
positions) to the face it lies on and its barycentrics, which give the texel's 3D position and
normal on the subject's *neutral* mesh.  Every feature is then a function of that 3D position
measured relative to landmarks of the mesh (`SyntheticHead.landmarks`): eye centres and radius,
lip line and corners (from the proxy teeth), nose tip, crown, ears.  So the texture sticks to the
geometry, whatever the UV layout and even for a real FLAME file.  Texels outside every UV island
take the value of the nearest covered texel (no dark seams under bilinear lookup).  The maps are
computed at twice the output resolution and box-filtered down (anti-aliased procedural detail;
at 1x for maps above 512^2).

Features: skin tone (one of five albedos) with low-frequency mottling, redness of cheeks / nose /
ears / chin, pores (texel-scale grain), freckles and a few moles, optional beard shadow, a
curvature-based cavity darkening (creases, ear bowls, mouth corners); eyebrows with hair strands;
eyeliner and lashes along the lid margins; lips with vertical lip lines, a darker lip line and a
sheen on the lower lip; a dark mouth cavity (tongue, palate, throat); iris (one of six colours,
radial fibres, limbal ring, collarette) and pupil on the eyeballs, sclera with veins and the
upper-lid shadow; white teeth with gaps and scalloped pink gums; hair with strands radiating from
the crown whorl and an irregular hairline with temples, sideburns and nape.

Wrinkle maps (signed shading, multiplied into the albedo per frame; they are what a blendshape
model cannot explain): forehead lines (brow raise), glabella lines (frown / brow lowering),
nasolabial folds (smile / sneer), crow's feet and lower-lid creases (smile / squint), chin
dimpling (lip press / pucker) and lip lines (pucker).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import scipy.ndimage
import torch
from scipy.spatial import cKDTree

from ..flame.meshrender import render_mesh
from .head import (KIND_EYEBALL, KIND_LINING, KIND_MOUTH, KIND_OTHER, KIND_SKIN, KIND_TEETH,
                   SyntheticHead)

__all__ = ["Appearance", "bake_appearance", "wrinkle_weights", "WRINKLES", "SKIN_TONES", "HAIR_COLOURS",
           "IRIS_COLOURS", "ValueNoise"]

SKIN_TONES = np.array([(0.89, 0.71, 0.61), (0.83, 0.63, 0.51), (0.74, 0.54, 0.41), (0.60, 0.42, 0.31),
                       (0.44, 0.30, 0.22)])
HAIR_COLOURS = np.array([(0.055, 0.045, 0.04), (0.16, 0.10, 0.07), (0.29, 0.18, 0.11), (0.40, 0.19, 0.10),
                         (0.55, 0.42, 0.27)])
IRIS_COLOURS = np.array([(0.33, 0.19, 0.09), (0.17, 0.10, 0.05), (0.42, 0.32, 0.15), (0.30, 0.40, 0.24),
                         (0.30, 0.44, 0.60), (0.42, 0.47, 0.52)])

# wrinkle map name -> {expression name: weight}
WRINKLES = {
    "forehead": {"brow_raise": 1.0, "eye_wide": 0.5},
    "glabella": {"frown": 1.0, "brow_lower": 1.0, "squint": 0.3},
    "nasolabial": {"smile": 1.0, "sneer": 0.6, "mouth_stretch": 0.3},
    "crows_feet": {"smile": 0.8, "squint": 1.0},
    "lower_lid": {"smile": 0.6, "squint": 0.8},
    "chin": {"lip_press": 1.0, "pucker": 0.6, "frown": 0.3},
    "lip_lines": {"pucker": 1.0, "lip_press": 0.4},
}


def wrinkle_weights(named: dict, frames: int) -> np.ndarray:
    """[T, len(WRINKLES)] wrinkle strengths in [0, 1.2] from named expression signals [T]."""
    out = np.zeros((frames, len(WRINKLES)))
    for k, mix in enumerate(WRINKLES.values()):
        for name, w in mix.items():
            if name in named:
                out[:, k] += w * np.asarray(named[name], np.float64)
    return np.clip(out, 0.0, 1.2)


# ----------------------------------------------------------------------------------------------
# noise

class ValueNoise:
    """Seeded 3D value noise with quintic interpolation (values in [-1, 1]) and fBm sums."""

    def __init__(self, seed):
        rng = np.random.default_rng(seed)
        perm = rng.permutation(256).astype(np.int64)
        self.perm = np.concatenate([perm, perm, perm])
        self.vals = rng.uniform(-1.0, 1.0, 256)
        self.offsets = rng.uniform(0.0, 256.0, (16, 3))

    def __call__(self, p: np.ndarray, freq, octave: int = 0) -> np.ndarray:
        q = np.asarray(p, np.float64) * freq + self.offsets[octave % 16]
        i = np.floor(q)
        f = q - i
        w = f * f * f * (f * (f * 6.0 - 15.0) + 10.0)
        i = i.astype(np.int64) & 255
        P, G = self.perm, self.vals
        ix, iy, iz = i[:, 0], i[:, 1], i[:, 2]
        out = 0.0
        for dx in (0, 1):
            a = P[ix + dx]
            wx = w[:, 0] if dx else 1.0 - w[:, 0]
            for dy in (0, 1):
                b = P[a + iy + dy]
                wy = w[:, 1] if dy else 1.0 - w[:, 1]
                for dz in (0, 1):
                    wz = w[:, 2] if dz else 1.0 - w[:, 2]
                    out = out + wx * wy * wz * G[P[b + iz + dz]]
        return out

    def fbm(self, p, freq, octaves=4, gain=0.5) -> np.ndarray:
        total, amp, norm = 0.0, 1.0, 0.0
        for o in range(octaves):
            total = total + amp * self(p, freq * 2.0 ** o, o)
            norm += amp
            amp *= gain
        return total / norm


def _smoothstep(a, b, x):
    t = np.clip((np.asarray(x, np.float64) - a) / (b - a), 0.0, 1.0)
    return t * t * (3.0 - 2.0 * t)


def _mix(a, b, w):
    w = np.asarray(w, np.float64)[..., None]
    return a * (1.0 - w) + b * w


# ----------------------------------------------------------------------------------------------
# surface samples (texels or vertices)

@dataclass
class _Samples:
    pos: np.ndarray        # [N,3] neutral-mesh positions
    nrm: np.ndarray        # [N,3] unit normals
    kind: np.ndarray       # [N] surface kind
    face: np.ndarray       # [N] face id
    bary: np.ndarray       # [N,3]
    cav: np.ndarray        # [N] concavity (1/m)
    grain: np.ndarray      # [N] texel-scale white-ish noise in [-1,1] (pores)


def _uv_raster(head: SyntheticHead, res: int):
    """face id [res,res] (-1 outside the layout) and barycentrics [res,res,3] of every texel centre."""
    uv = head.uvs
    pts = np.stack([uv[:, 0] * res, (1.0 - uv[:, 1]) * res, np.ones(len(uv))], 1)
    r = render_mesh(pts, head.uv_faces, np.eye(4), np.eye(3), res, res)
    return r.face_id.numpy(), r.bary.numpy().astype(np.float64)


def _interp(attr: np.ndarray, faces: np.ndarray, face: np.ndarray, bary: np.ndarray) -> np.ndarray:
    a = attr[faces[face]]                         # [N,3,C] or [N,3]
    if a.ndim == 2:
        return (a * bary).sum(1)
    return (a * bary[..., None]).sum(1)


# ----------------------------------------------------------------------------------------------
# the appearance

@dataclass
class Appearance:
    """Baked appearance. With a UV layout: ``albedo`` [H,W,3] float64 torch (upright, OBJ uv),
    ``wrinkles`` [K,H,W] float32 torch signed shading, ``hair`` [H,W] float32 numpy hair coverage,
    ``strands`` [H,W] float32 numpy in [0,1] (hair-strand pattern, used for the fuzzy border).
    Without one (``per_vertex``): the same quantities per vertex ([V,3], [K,V], [V], [V])."""

    albedo: torch.Tensor
    wrinkles: torch.Tensor
    hair: np.ndarray
    strands: np.ndarray
    per_vertex: bool
    info: dict

    def frame_texture(self, weights) -> torch.Tensor:
        """Albedo with the wrinkle shading of one frame (`weights` [K]); float64 torch, in [0,1]."""
        w = torch.as_tensor(np.asarray(weights, np.float32))
        shade = 1.0 + torch.tensordot(w, self.wrinkles, dims=1)
        return (self.albedo * shade.to(self.albedo.dtype)[..., None]).clamp(0.0, 1.0)


def bake_appearance(head: SyntheticHead, shape, seed: int = 0, size: int = 1024, verts=None) -> Appearance:
    """Bake the procedural appearance of `head` with identity `shape` (numpy [n_shape]).

    Args:
        head: the SyntheticHead.
        shape: identity coefficients (the texture is placed on this neutral mesh).
        seed: selects skin tone, hair / iris colour, freckles, beard shadow and every noise.
        size: output texture resolution (square); features are computed at 2x and box-filtered
            (at 1x above 512, to bound time and memory: a 2048^2 bake needs ~3 GB).
        verts: optional neutral vertices (default: ``head.neutral(shape)``).
    Returns:
        Appearance (UV maps, or per-vertex values when the head has no UV layout).
    """
    verts = head.neutral(shape) if verts is None else np.asarray(verts, np.float64)
    normals = head.vertex_normals(verts)
    cav_v = head.cavity(verts)
    faces = head.faces
    rng = np.random.default_rng([int(seed), 7])
    factor = 2 if int(size) <= 512 else 1
    if head.uvs is not None:
        res = factor * int(size)
        fid, bary = _uv_raster(head, res)
        covered = fid >= 0
        face = fid[covered]
        b = bary[covered]
        grain_img = rng.standard_normal((res, res))
        grain_img = scipy.ndimage.gaussian_filter(grain_img, 0.8) * 2.2
        grain = np.clip(grain_img[covered], -2.5, 2.5)
    else:
        res = None
        covered = None
        # one sample per vertex: the first face holding it, with a one-hot barycentric
        V = len(verts)
        face = np.full(V, -1, np.int64)
        corner = np.zeros(V, np.int64)
        for k in (2, 1, 0):
            face[faces[::-1, k]] = np.arange(len(faces))[::-1]
            corner[faces[::-1, k]] = k
        face = np.maximum(face, 0)
        b = np.eye(3)[corner]
        grain = np.clip(rng.standard_normal(V) * 0.5, -2.5, 2.5)
    pos = _interp(verts, faces, face, b)
    nrm = _interp(normals, faces, face, b)
    nrm /= np.maximum(np.linalg.norm(nrm, axis=1, keepdims=True), 1e-12)
    S = _Samples(pos=pos, nrm=nrm, kind=head.face_kind[face], face=face, bary=b,
                 cav=_interp(cav_v, faces, face, b), grain=grain)
    L = head.landmarks(verts)
    albedo, wr, hair, strands, info = _paint(head, S, L, verts, seed)

    if head.uvs is None:
        return Appearance(albedo=torch.as_tensor(albedo), wrinkles=torch.as_tensor(wr.astype(np.float32)),
                          hair=hair.astype(np.float32), strands=strands.astype(np.float32), per_vertex=True,
                          info=info)
    # scatter into the UV image, fill the gutters with the nearest covered texel, box-filter by 2
    _, (iy, ix) = scipy.ndimage.distance_transform_edt(~covered, return_indices=True)
    flat = np.full(res * res, -1, np.int64)
    flat[np.flatnonzero(covered.ravel())] = np.arange(covered.sum())
    nearest = flat[(iy * res + ix).ravel()].reshape(res, res)

    def image(values):
        img = values[nearest]
        return img.reshape(size, factor, size, factor, *img.shape[2:]).mean((1, 3))

    albedo_img = image(albedo)
    wr_img = np.stack([image(w) for w in wr]) if len(wr) else np.zeros((0, size, size))
    return Appearance(albedo=torch.as_tensor(albedo_img, dtype=torch.float64),
                      wrinkles=torch.as_tensor(wr_img.astype(np.float32)),
                      hair=image(hair).astype(np.float32), strands=image(strands).astype(np.float32),
                      per_vertex=False, info=info)


# ----------------------------------------------------------------------------------------------
# painting

def _curve_distance(points_xy: np.ndarray, curve_xy: np.ndarray):
    """Nearest curve sample (index) and distance for 2D points."""
    tree = cKDTree(curve_xy)
    d, i = tree.query(points_xy)
    return d, i


def _paint(head, S: _Samples, L: dict, verts: np.ndarray, seed: int):
    rng = np.random.default_rng([int(seed), 1])
    noise = ValueNoise([int(seed), 2])
    sc = L["scale"]
    N = len(S.pos)
    X, Y, Z = S.pos[:, 0], S.pos[:, 1], S.pos[:, 2]
    AX = np.abs(X)
    eyes = L["eye_centres"]
    xe, ye, ze = abs(eyes[0, 0]), eyes[0, 1], eyes[0, 2]
    r_eye = L["eye_radius"]
    ym, zm, wm = L["mouth_y"], L["mouth_z"], L["mouth_half_width"] * 1.05
    tip = L["nose_tip"]
    kind = S.kind
    skin = np.isin(kind, (KIND_SKIN, KIND_OTHER))

    def nz(freq, where, octave=0, octaves=1, gain=0.5):
        """Noise evaluated only where `where` holds (0 elsewhere): most features are local."""
        out = np.zeros(N)
        idx = np.flatnonzero(where)
        if len(idx):
            out[idx] = noise.fbm(S.pos[idx], freq, octaves, gain) if octaves > 1 else noise(S.pos[idx], freq, octave)
        return out

    tone_i = int(rng.choice(len(SKIN_TONES), p=[0.2, 0.3, 0.25, 0.15, 0.1]))
    if seed == 0:
        tone_i = 1
    tone = SKIN_TONES[tone_i] * rng.uniform(0.97, 1.03, 3)
    hair_i = 1 if seed == 0 else int(rng.choice(len(HAIR_COLOURS), p=[0.3, 0.3, 0.2, 0.1, 0.1]))
    hair_col = HAIR_COLOURS[hair_i]
    iris_i = 0 if seed == 0 else int(rng.integers(len(IRIS_COLOURS)))
    iris_col = IRIS_COLOURS[iris_i]
    freckle_amount = 0.6 if seed == 0 else float(rng.choice([0.0, 0.3, 0.6, 1.0]))
    beard = (seed != 0) and bool(rng.random() < 0.35)
    info = dict(skin_tone=tone_i, hair_colour=hair_i, iris_colour=iris_i, freckles=freckle_amount, beard=beard)

    # ---------------------------------------------------------------- skin
    front = np.clip(S.nrm[:, 2], 0.0, 1.0)
    A = np.tile(tone, (N, 1))
    mott = nz(35.0, skin, octaves=3)
    A *= (1.0 + 0.07 * mott)[:, None]
    A *= (1.0 + 0.03 * nz(9.0, skin, octave=7))[:, None] * np.array([1.0, 0.985, 0.98])

    def bump(c, r):
        return np.exp(-np.sum(((S.pos - c) / r) ** 2, axis=1))

    red = np.zeros(N)
    for sx in (1, -1):
        red += 0.55 * bump(np.array([sx * (xe + 0.010 * sc), ye - 0.035 * sc, ze + 0.012 * sc]), 0.018 * sc)
        red += 0.55 * bump(L["ears"][0 if sx > 0 else 1], 0.02 * sc)
    red += 0.6 * bump(tip + np.array([0, -0.004, -0.004]) * sc, 0.012 * sc)
    red += 0.25 * bump(np.array([0.0, L["chin_y"] + 0.012 * sc, zm - 0.015 * sc]), 0.015 * sc)
    red += 0.15 * (1 + nz(60.0, skin, octaves=2))
    red = np.clip(red, 0, 1.2)
    A = _mix(A, A * np.array([1.05, 0.84, 0.84]), 0.55 * red)
    # darker, slightly violet under-eye circles and eye sockets
    socket = np.zeros(N)
    for sx in (1, -1):
        socket += bump(np.array([sx * xe, ye - 0.011 * sc, ze + 0.004 * sc]), np.array([0.012, 0.006, 0.02]) * sc)
        socket += 0.6 * bump(np.array([sx * (xe - 0.012 * sc), ye + 0.004 * sc, ze]), 0.008 * sc)
    A *= (1.0 - 0.12 * np.clip(socket, 0, 1))[:, None] * np.ones(3)
    # pores and grain
    A *= (1.0 + 0.035 * S.grain)[:, None]
    pore = np.clip(-S.grain - 1.3, 0.0, 1.0)
    A *= (1.0 - 0.12 * pore * _smoothstep(0.0, 0.5, front))[:, None]
    # freckles and moles
    face_zone = skin & (Z > ze - 0.03 * sc) & (Y > ym - 0.02 * sc) & (Y < ye + 0.05 * sc)
    if freckle_amount > 0:
        n_fr = int(500 * freckle_amount)
        cand = np.flatnonzero(face_zone & (AX < xe + 0.035 * sc))
        # more on the nose bridge and upper cheeks
        p = np.exp(-((S.pos[cand, 1] - (ye - 0.02 * sc)) / (0.02 * sc)) ** 2) + 0.1
        pick = rng.choice(cand, size=min(n_fr, len(cand)), replace=False, p=p / p.sum())
        cen = S.pos[pick] + rng.normal(0, 0.001, (len(pick), 3))
        rad = rng.uniform(0.0006, 0.0014, len(pick)) * sc
        amp = rng.uniform(0.08, 0.28, len(pick))
        tree = cKDTree(cen)
        sel = np.flatnonzero(face_zone)
        d, j = tree.query(S.pos[sel], distance_upper_bound=0.004 * sc)
        ok = np.isfinite(d)
        spot = np.zeros(N)
        spot[sel[ok]] = amp[j[ok]] * np.exp(-(d[ok] / rad[j[ok]]) ** 2)
        A = _mix(A, A * np.array([0.78, 0.62, 0.52]), np.clip(spot * 3.0, 0, 1))
    n_moles = int(rng.integers(2, 5))
    mole_cand = np.flatnonzero(skin & (Y < ye + 0.05 * sc) & (Y > L["neck_y"] + 0.03) & (S.nrm[:, 2] > -0.3))
    for m in rng.choice(mole_cand, size=n_moles, replace=False):
        c = S.pos[m]
        r = rng.uniform(0.0008, 0.0016) * sc
        d = np.linalg.norm(S.pos - c, axis=1)
        w = _smoothstep(r * 1.3, r * 0.7, d)
        A = _mix(A, A * np.array([0.45, 0.33, 0.28]), w)
    # beard shadow
    if beard:
        y_top = ym + 0.013 * sc + 0.55 * np.maximum(AX - wm, 0.0)       # rises from the mouth to the sideburns
        zone = (skin * _smoothstep(y_top + 0.004 * sc, y_top - 0.004 * sc, Y)
                * _smoothstep(L["chin_y"] - 0.04 * sc, L["chin_y"] - 0.02 * sc, Y)
                * _smoothstep(L["ears"][0, 2] + 0.01 * sc, L["ears"][0, 2] + 0.025 * sc, Z))
        dots = np.clip(S.grain - 0.3, 0, 1) * 0.6 + 0.4
        A = _mix(A, A * np.array([0.58, 0.57, 0.60]), zone * dots * 0.65)
    # cavity darkening (creases, ear bowls, nostrils) and occlusion under the jaw
    cav = _smoothstep(15.0, 140.0, S.cav)
    A *= (1.0 - 0.30 * cav)[:, None]
    A *= (1.0 + 0.04 * _smoothstep(-10.0, -45.0, S.cav))[:, None]
    under = _smoothstep(-0.3, -0.8, S.nrm[:, 1]) * _smoothstep(ym, ym - 0.04 * sc, Y)
    A *= (1.0 - 0.22 * under)[:, None]
    # nostrils: downward-facing skin under the nose tip, beside the columella
    for sx in (1, -1):
        c = np.array([sx * 0.0068 * sc, tip[1] - 0.0085 * sc, tip[2] - 0.0105 * sc])
        q = (S.pos - c) / (np.array([0.0032, 0.004, 0.0055]) * sc)
        w = np.exp(-np.sum(q * q, 1) ** 1.5) * _smoothstep(-0.1, -0.5, S.nrm[:, 1])
        A = _mix(A, np.array([0.16, 0.07, 0.06]), np.clip(1.3 * w, 0, 0.92))

    # ---------------------------------------------------------------- eyebrows
    t_c = np.linspace(0.0, 1.0, 240)
    wb = np.zeros(N)
    strand = np.zeros(N)
    for sx in (1, -1):
        bx = sx * (xe - 0.017 * sc + t_c * 0.041 * sc)
        by = ye + sc * (0.0165 + 0.0075 * (1.0 - ((t_c - 0.6) / 0.6) ** 2) - 0.002 * t_c ** 3)
        near = skin & (sx * X > 0.0) & (np.abs(Y - ye - 0.02 * sc) < 0.015 * sc) & (S.nrm[:, 2] > -0.2)
        idx = np.flatnonzero(near)
        d, i = _curve_distance(np.stack([X[idx], Y[idx]], 1), np.stack([bx, by], 1))
        t = t_c[i]
        half = sc * (0.0037 - 0.0021 * t)
        off = Y[idx] - by[i] + 0.0008 * sc * noise(S.pos[idx], 900.0)
        inside = (d < half * 1.8)
        w = _smoothstep(half + 0.0009 * sc, half - 0.0009 * sc, np.abs(off) * np.where(inside, 1, 10))
        w *= _smoothstep(0.0, 0.07, t) * _smoothstep(1.02, 0.85, t)
        beta = np.deg2rad(65.0 - 50.0 * _smoothstep(0.0, 0.45, t))
        dx = sx * (X[idx] - bx[0])
        dy = Y[idx] - ye
        along = np.cos(beta) * dx + np.sin(beta) * dy
        across = -np.sin(beta) * dx + np.cos(beta) * dy
        q = np.stack([along * 260.0 / sc, across * 2600.0 / sc, np.full(len(idx), sx * 7.0)], 1)
        st = 0.5 + 0.5 * noise.fbm(q, 1.0, 2, 0.6) / 0.6
        dens = np.clip(w * (0.55 + 0.9 * st) - 0.15 * (1 - w), 0, 1)
        wb[idx] = np.maximum(wb[idx], dens)
        strand[idx] = np.maximum(strand[idx], st * w)
    brow_col = hair_col * 0.9 + 0.01
    A = _mix(A, brow_col * (0.75 + 0.5 * strand[:, None]), np.clip(wb * 0.95, 0, 1))

    # ---------------------------------------------------------------- eyelid margins
    if len(head.margin_ids):
        mp = verts[head.margin_ids]
        e = head.faces[head.face_kind == KIND_SKIN]
        ism = np.zeros(len(verts), bool)
        ism[head.margin_ids] = True
        edges = np.concatenate([e[:, [0, 1]], e[:, [1, 2]], e[:, [2, 0]]])
        edges = edges[ism[edges].all(1)]
        s = np.linspace(0, 1, 12)[None, :, None]
        mp = (verts[edges[:, 0]][:, None] * (1 - s) + verts[edges[:, 1]][:, None] * s).reshape(-1, 3)
    else:  # a FLAME-like head: points on the eyeball rim where the lids meet it
        mp = []
        for c in eyes:
            a = np.linspace(0, 2 * np.pi, 120)
            mp.append(c + r_eye * np.stack([0.85 * np.cos(a), 0.38 * np.sin(a), np.full_like(a, 0.6)], 1))
        mp = np.concatenate(mp)
    near_eye = np.zeros(N, bool)
    for c in eyes:
        near_eye |= np.linalg.norm(S.pos - c, axis=1) < 2.4 * r_eye
    idx = np.flatnonzero(near_eye & np.isin(kind, (KIND_SKIN, KIND_LINING)))
    d, j = cKDTree(mp).query(S.pos[idx])
    which = (X[idx] > 0).astype(int)
    c_eye = eyes[1 - which]
    upper = S.pos[idx, 1] > (c_eye[:, 1] - 0.0015 * sc)
    # outer corners get thicker liner (wing)
    outward = (np.abs(S.pos[idx, 0]) - xe) / (0.012 * sc)
    liner = np.where(upper, 0.75 * np.exp(-(d / (0.0007 * sc * (1 + 0.6 * np.clip(outward, 0, 1)))) ** 2),
                     0.35 * np.exp(-(d / (0.0005 * sc)) ** 2))
    ang = np.arctan2(S.pos[idx, 1] - c_eye[:, 1], np.abs(S.pos[idx, 0]) - xe)
    lash_len = np.where(upper, 0.0032, 0.0015) * sc
    lash_pat = np.clip(np.sin(ang * 140.0 + 3.0 * noise(S.pos[idx], 300.0)) * 1.6 + 0.3, 0, 1)
    lash = lash_pat * _smoothstep(lash_len, 0.15 * lash_len, d) * np.where(upper, 0.95, 0.5)
    lid = np.clip(np.maximum(liner, lash), 0, 0.95)
    is_lin = kind[idx] == KIND_LINING
    lid[is_lin] = 0.0
    A[idx] = _mix(A[idx], np.array([0.05, 0.035, 0.03]), lid)
    # lid linings: a pink waterline at the margin, then shadowed conjunctiva
    conj = np.array([0.80, 0.66, 0.62]) * 0.8
    water = tone * np.array([0.85, 0.58, 0.55])
    A[idx[is_lin]] = _mix(conj, water, np.exp(-(d[is_lin] / (0.0012 * sc)) ** 2))

    # ---------------------------------------------------------------- lips and mouth
    depth = zm - Z                                   # behind the front of the lips
    xq = np.clip(AX / wm, 0.0, 1.0)
    q = np.sqrt(np.clip(1.0 - xq ** 2, 0.0, 1.0))
    bow = 1.0 - 0.10 * np.exp(-(AX / (0.0035 * sc)) ** 2) + 0.08 * np.exp(-((AX - 0.0065 * sc) / (0.004 * sc)) ** 2)
    h_up = (0.0086 * q ** 0.6 + 0.0004) * bow * sc
    h_lo = (0.0100 * q ** 0.6 + 0.0004) * sc
    s = Y - ym
    t_lip = np.where(s > 0, s / h_up, -s / h_lo)
    lipzone = (AX < wm * 1.3) & (np.abs(Y - ym) < 0.03 * sc)
    lip_w = _smoothstep(1.08, 0.92, t_lip + 0.04 * nz(700.0, lipzone)) * (AX < wm * 1.05)
    lip_w *= _smoothstep(0.016 * sc, 0.010 * sc, depth)
    lip_region = skin | (kind == KIND_MOUTH)
    lip_w *= lip_region
    lip_base = 0.5 * tone * np.array([0.88, 0.62, 0.64]) + 0.5 * np.array([0.66, 0.32, 0.35])
    lines = 0.5 + 0.5 * np.sin(X / (0.00085 * sc) * 2 * np.pi + 2.0 * nz(250.0, lipzone))
    Lc = np.tile(lip_base, (N, 1))
    Lc *= (1.0 - 0.10 * lines * _smoothstep(0.15, 0.6, t_lip))[:, None]
    Lc *= (1.0 - 0.28 * _smoothstep(0.3, 0.0, t_lip) * (depth > 0.0))[:, None]   # darker toward the lip line
    sheen = np.exp(-((t_lip - 0.45) / 0.2) ** 2) * (s < 0) * q
    Lc *= (1.0 + 0.16 * sheen)[:, None]
    A = _mix(A, Lc, lip_w)
    # white roll just outside the vermilion border
    roll = np.exp(-((t_lip - 1.08) / 0.06) ** 2) * (AX < wm) * skin * (depth < 0.01)
    A *= (1.0 + 0.05 * roll)[:, None]
    # mouth cavity: inner lips -> gums -> tongue / palate -> throat
    box = (AX < wm + 0.012 * sc) & (np.abs(Y - ym) < 0.022 * sc)
    has_pocket = bool((kind == KIND_MOUTH).any())
    inner = skin & box & (t_lip < 1.0) & (AX < wm) & (not has_pocket)   # heads whose mouth is skin
    cav_w = np.where(kind == KIND_MOUTH, 1.0, 0.0) + np.where(inner, _smoothstep(0.006, 0.010, depth / sc), 0.0)
    cav_w = np.clip(cav_w, 0, 1) * (1.0 - lip_w * (depth < 0.008 * sc))
    moist = 0.5 * tone * np.array([0.75, 0.42, 0.42]) + 0.5 * np.array([0.55, 0.22, 0.24])
    tongue = np.array([0.66, 0.33, 0.34]) * (1 + 0.12 * nz(1800.0, lipzone | (kind == KIND_MOUTH)))[:, None]
    C = np.tile(moist, (N, 1))
    is_tongue = _smoothstep(ym - 0.002 * sc, ym - 0.007 * sc, Y) * _smoothstep(0.010, 0.018, depth / sc)
    C = _mix(C, tongue, is_tongue)
    throat = np.exp(-np.clip(depth / sc - 0.012, 0, None) / 0.014)
    C *= (0.25 + 0.75 * throat)[:, None] * (0.75 + 0.25 * is_tongue)[:, None]
    C = _mix(np.array([0.10, 0.03, 0.035]), C, np.clip(throat + 0.5 * is_tongue, 0, 1))
    A = _mix(A, C, cav_w)

    # ---------------------------------------------------------------- hair
    c_h = L["head_centre"]
    axis = np.array([0.0, 1.0, -0.35])
    axis /= np.linalg.norm(axis)
    v = S.pos - c_h
    phi = np.degrees(np.arctan2(AX, Z - c_h[2]))     # 0 at the front, 180 at the back
    knots = np.array([0, 30, 50, 60, 68, 76, 82, 86, 92, 104, 116, 134, 155, 180.0])
    rel = np.array([0.069, 0.067, 0.060, 0.053, 0.030, 0.000, -0.018, 0.012, 0.026, 0.028, 0.012,
                    -0.045, -0.075, -0.082])
    hl = ye + sc * np.interp(phi, knots, rel)
    band = np.abs(Y - hl) < 0.012 * sc
    jitter = 0.0025 * sc * nz(220.0, band, octaves=3) + 0.0012 * sc * nz(900.0, band, octave=5)
    ear_d = np.minimum(*[np.linalg.norm((S.pos - e) / np.array([0.014, 0.032, 0.02]) / sc, axis=1) for e in L["ears"]])
    hair_w = _smoothstep(hl - 0.0025 * sc, hl + 0.0035 * sc, Y + jitter) * _smoothstep(1.0, 1.25, ear_d) * skin
    # strands radiating from the whorl: stripes of constant n*psi + k*theta (periodic in psi)
    vn = v / np.maximum(np.linalg.norm(v, axis=1, keepdims=True), 1e-9)
    theta = np.arccos(np.clip(vn @ axis, -1, 1))
    e1 = np.cross(axis, [1.0, 0.0, 0.0])
    e1 /= np.linalg.norm(e1)
    e2 = np.cross(axis, e1)
    psi = np.arctan2(vn @ e2, vn @ e1)
    hidx = np.flatnonzero(hair_w > 0.0)
    J = 36
    n_j = rng.integers(150, 700, J)
    k_j = rng.uniform(-8, 8, J)
    ph_j = rng.uniform(0, 2 * np.pi, J)
    a_j = rng.uniform(0.5, 1.0, J)
    acc = np.zeros(len(hidx))
    wav = 0.6 * noise(S.pos[hidx], 40.0, 3)
    for j in range(J):
        acc += a_j[j] * np.cos(n_j[j] * psi[hidx] + k_j[j] * theta[hidx] + ph_j[j] + wav * 3.0)
    acc /= np.sqrt((a_j ** 2).sum() / 2)
    st = 0.5 + 0.5 * np.tanh(1.4 * acc)
    clump = 0.5 + 0.5 * noise.fbm(S.pos[hidx], 70.0, 3)
    H = hair_col * (0.55 + 0.8 * st[:, None]) * (0.85 + 0.3 * clump[:, None])
    # a sparser, wispy hairline: coverage limited by the strands near the edge
    hw = hair_w[hidx]
    cover = np.clip(hw * (0.7 + 0.6 * st) - 0.25 * (1 - hw), 0, 1)
    A[hidx] = _mix(A[hidx], H, cover)
    hair = np.zeros(N)
    hair[hidx] = cover
    strands = np.zeros(N)
    strands[hidx] = st

    # ---------------------------------------------------------------- eyeballs
    for side, c in enumerate(eyes):
        sel = np.flatnonzero((kind == KIND_EYEBALL) & (np.sign(X) == (1 if side == 0 else -1)))
        if not len(sel):
            continue
        d = S.pos[sel] - c
        d /= np.maximum(np.linalg.norm(d, axis=1, keepdims=True), 1e-12)
        th = np.degrees(np.arccos(np.clip(d[:, 2], -1, 1)))
        az = np.arctan2(d[:, 1], d[:, 0])
        th_i, th_p = 27.0, 9.0
        sclera = np.array([0.93, 0.90, 0.86]) * (1 + 0.02 * noise(S.pos[sel], 400.0))[:, None]
        veins = np.clip(noise.fbm(S.pos[sel] * np.array([1, 4, 1]), 1500.0, 2) * 3 - 1.2, 0, 1)
        sclera = _mix(sclera, np.array([0.80, 0.45, 0.42]), 0.5 * veins * _smoothstep(35, 70, th))
        inner = -np.sign(c[0]) * d[:, 0]              # toward the nose
        sclera = _mix(sclera, np.array([0.85, 0.55, 0.52]), 0.7 * _smoothstep(0.72, 0.9, inner))
        r = th / th_i
        fib = 0.5 + 0.5 * np.sin(az * 70 + 4 * noise(S.pos[sel], 600.0)) * np.sin(az * 23 + 1.3)
        irc = iris_col * (0.75 + 0.5 * fib[:, None]) * (1 + 0.25 * noise(S.pos[sel], 1200.0))[:, None]
        irc = _mix(irc, iris_col * 1.5 + 0.05, 0.5 * np.exp(-((r - 0.45) / 0.1) ** 2))    # collarette
        irc *= (1.0 - 0.6 * _smoothstep(0.8, 1.0, r))[:, None]                             # limbal ring
        col = _mix(sclera, irc, _smoothstep(th_i + 0.8, th_i - 0.8, th))
        col = _mix(col, np.array([0.025, 0.02, 0.02]), _smoothstep(th_p + 0.7, th_p - 0.7, th))
        col *= (1.0 - 0.35 * _smoothstep(0.25, 0.6, d[:, 1]))[:, None]                     # upper-lid shadow
        col *= (1.0 - 0.6 * _smoothstep(80, 110, th))[:, None]
        A[sel] = col

    # ---------------------------------------------------------------- teeth
    teeth = np.flatnonzero(kind == KIND_TEETH)
    if len(teeth):
        first = int(head.teeth_ids.min())
        loc = head.faces[S.face[teeth]] - first      # [n,3] teeth-local vertex ids
        row = (loc // 15).astype(np.float64)
        rmin = row.min(1)
        rowf = (row * S.bary[teeth]).sum(1)
        par = rowf - rmin                            # 0 at the lower-numbered row of the strip
        strip = (rmin % 4).astype(int)               # 0 front (root->edge), 1 biting edge, 2 back
        lower = rmin >= 4
        x = np.abs(S.pos[teeth, 0]) / (L["mouth_half_width"] / 0.0255)
        bounds = np.array([0.0, 0.0042, 0.0074, 0.0107, 0.0138, 0.0168, 0.0205, 0.026, 0.04])
        k = np.clip(np.searchsorted(bounds, x) - 1, 0, len(bounds) - 2)
        f = (x - bounds[k]) / (bounds[k + 1] - bounds[k])
        gapd = np.minimum(x - bounds[k], bounds[k + 1] - x)
        tooth = np.array([0.93, 0.90, 0.81]) * (0.86 + 0.14 * np.sin(np.pi * f))[:, None]
        tooth *= (1.0 - 0.55 * np.exp(-(gapd / 0.00035) ** 2))[:, None]
        gum_edge = 0.32 + 0.12 * (1.0 - np.sin(np.pi * f))
        gum = np.array([0.80, 0.44, 0.44])
        col = _mix(tooth, gum, _smoothstep(gum_edge + 0.04, gum_edge - 0.04, par) * (strip == 0))
        col *= np.where(strip == 1, 0.85, np.where(strip == 2, 0.35, 1.0))[:, None]
        col *= np.where(lower, 0.86, 1.0)[:, None]
        A[teeth] = col

    # ---------------------------------------------------------------- neck cap / other islands
    cap = (kind == KIND_OTHER) & (Y < L["neck_y"] + 0.01)
    A[cap] = A[cap] * 0.8

    # ---------------------------------------------------------------- wrinkle maps
    wr = np.zeros((len(WRINKLES), N))
    names = list(WRINKLES)
    fz = skin & (S.nrm[:, 2] > 0.1)
    # forehead: 4-5 horizontal lines, slightly arched, irregular
    y0, y1 = ye + 0.030 * sc, hl - 0.006 * sc
    fzone = fz & (Y > y0 - 0.006) & (Y < y1 + 0.006) & (AX < 0.055 * sc)
    ell = (Y - ye - 0.030 * sc + 0.005 * sc * (X / (0.04 * sc)) ** 2) / (0.0058 * sc) + 0.35 * nz(45.0, fzone)
    fr = ell - np.floor(ell)
    line = np.exp(-((fr - 0.5) / 0.09) ** 2)
    hi = np.exp(-((fr - 0.72) / 0.12) ** 2)
    strength = np.zeros(N)
    fi = np.flatnonzero(fzone)
    strength[fi] = 0.6 + 0.4 * noise(np.stack([np.floor(ell[fi]), X[fi] * 30, np.zeros(len(fi))], 1), 1.0)
    env = (_smoothstep(y0 - 0.002, y0 + 0.004, Y) * _smoothstep(y1, y1 - 0.008 * sc, Y)
           * _smoothstep(0.05 * sc, 0.03 * sc, AX))
    wr[names.index("forehead")] = fz * env * strength * (-0.28 * line + 0.07 * hi)
    # glabella: two short vertical lines between the brows
    g = np.zeros(N)
    gzone = fz & (AX < 0.016 * sc) & (Y > ye) & (Y < ye + 0.036 * sc)
    gn4, gn5 = nz(90.0, gzone, octave=4), nz(70.0, gzone, octave=5)
    for sx in (1, -1):
        dxg = X - sx * 0.0045 * sc
        dxg = dxg + 0.0012 * sc * gn4 + sx * 0.08 * (Y - ye - 0.015 * sc)
        g += np.exp(-(dxg / (0.0011 * sc)) ** 2) * _smoothstep(ye + 0.008 * sc, ye + 0.014 * sc, Y) \
            * _smoothstep(ye + 0.03 * sc, ye + 0.021 * sc, Y)
    g += 0.5 * np.exp(-((Y - ye - 0.027 * sc + 0.001 * sc * gn5) / (0.0014 * sc)) ** 2) \
        * _smoothstep(0.012 * sc, 0.004 * sc, AX)
    wr[names.index("glabella")] = -0.20 * fz * g
    # nasolabial folds: from beside the nose wing to outside the mouth corner
    tt = np.linspace(0, 1, 80)[:, None]
    nl = np.zeros(N)
    for sx in (1, -1):
        p0 = np.array([sx * 0.0175 * sc, tip[1] - 0.006 * sc])
        p1 = np.array([sx * (wm + 0.007 * sc), ym + 0.004 * sc])
        p2 = np.array([sx * (wm + 0.004 * sc), ym - 0.014 * sc])
        curve = (1 - tt) ** 2 * p0 + 2 * tt * (1 - tt) * p1 + tt ** 2 * p2
        idx = np.flatnonzero(fz & (sx * X > 0) & (Y < tip[1] + 0.01) & (Y > ym - 0.025 * sc))
        d, i = _curve_distance(np.stack([X[idx], Y[idx]], 1), curve)
        side = np.sign(sx * X[idx] - sx * curve[i, 0])     # + on the cheek side
        t = tt[i, 0]
        env = _smoothstep(0.0, 0.15, t) * _smoothstep(1.0, 0.8, t)
        nl[idx] = env * (-0.34 * np.exp(-(d / (0.0011 * sc)) ** 2)
                         + 0.10 * (side > 0) * np.exp(-((d - 0.003 * sc) / (0.002 * sc)) ** 2))
    wr[names.index("nasolabial")] = nl
    # crow's feet: rays fanning from the outer eye corners; lower-lid crease arcs
    cf = np.zeros(N)
    ll = np.zeros(N)
    cfn = 4 * nz(150.0, skin & (AX > xe) & (AX < xe + 0.035 * sc) & (np.abs(Y - ye) < 0.02 * sc))
    for sx in (1, -1):
        c = np.array([sx * (xe + 0.014 * sc), ye])
        dx, dy = sx * (X - c[0]), Y - c[1]
        rr = np.hypot(dx, dy)
        a = np.degrees(np.arctan2(dy, dx))
        rays = np.zeros(N)
        for a0 in (-32.0, -14.0, 3.0, 20.0):
            rays += np.exp(-((a - a0 - cfn) / 3.0) ** 2)
        cf += (sx * X > 0) * rays * _smoothstep(0.003 * sc, 0.007 * sc, rr) * _smoothstep(0.017 * sc, 0.010 * sc, rr)
        ex, ey = sx * (X - sx * xe), Y - (ye - 0.0105 * sc)
        arc = ey - 0.12 * (ex / (0.01 * sc)) ** 2 * 0.01 * sc
        ll += (sx * X > 0) * np.exp(-(arc / (0.0008 * sc)) ** 2) * _smoothstep(0.014 * sc, 0.006 * sc, np.abs(ex))
    wr[names.index("crows_feet")] = -0.28 * cf * (S.nrm[:, 0] * np.sign(X) > -0.2) * skin
    wr[names.index("lower_lid")] = -0.22 * ll * fz
    # chin dimpling and lip lines
    chin = np.exp(-((Y - (L["chin_y"] + 0.02 * sc)) / (0.012 * sc)) ** 2 - (X / (0.016 * sc)) ** 2)
    chin_zone = fz & (AX < 0.035 * sc) & (np.abs(Y - L["chin_y"] - 0.02 * sc) < 0.03 * sc)
    dimp = np.clip(nz(450.0, chin_zone, octaves=2), -1, 1)
    wr[names.index("chin")] = fz * chin * (-0.22 * np.clip(dimp, 0, 1) + 0.08 * np.clip(-dimp, 0, 1))
    ring = (np.abs(Y - ym) < 0.02 * sc) & (AX < wm) & ((t_lip > 1.05) & (t_lip < 1.9))
    vl = np.clip(np.sin(X / (0.0021 * sc) * 2 * np.pi + 3 * nz(120.0, lipzone)) * 2 - 1.2, 0, 1)
    wr[names.index("lip_lines")] = -0.25 * fz * ring * vl * _smoothstep(1.9, 1.3, t_lip)
    wr[:, ~skin] = 0.0
    A = np.clip(A, 0.0, 1.0)
    return A, wr, hair, strands, info
