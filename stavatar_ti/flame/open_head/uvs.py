"""The open head's UV layout: the skin as a cylindrical unwrap (seam at the back), and discs for the
eyeballs, the mouth cavity, the eyelid linings and the neck cap (OBJ convention, v >= 0.95 free).
"""

from __future__ import annotations

import numpy as np

from .ray_grid import JF, K_LO, NC, _cast


# ----------------------------------------------------------------------------------------------
# UV layout
V_TOP = 0.945            # the skin island's top (v >= 0.95 is reserved for the teeth)
U_MARGIN = 0.006


def _disc_uv(radius_frac, angle, centre, radius):
    return np.stack([centre[0] + radius * radius_frac * np.cos(angle),
                     centre[1] + radius * radius_frac * np.sin(angle)], -1)


def _signed_uv_area(uv, ft):
    a, b, c = uv[ft[:, 0]], uv[ft[:, 1]], uv[ft[:, 2]]
    return 0.5 * ((b[:, 0] - a[:, 0]) * (c[:, 1] - a[:, 1]) - (b[:, 1] - a[:, 1]) * (c[:, 0] - a[:, 0]))


class _UV:
    """Accumulates vt rows and ft triples island by island."""

    def __init__(self):
        self.vt, self.ft = [], []
        self.n = 0

    def island(self, uv, ft_local, centre=None):
        """Add an island (uv [k,2], ft_local indexes uv); mirrored in u if it came out clockwise."""
        uv = np.asarray(uv, float)
        if centre is not None and _signed_uv_area(uv, ft_local).sum() < 0:
            uv = uv.copy()
            uv[:, 0] = 2.0 * centre[0] - uv[:, 0]
        self.vt.append(uv)
        self.ft.append(np.asarray(ft_local, np.int64) + self.n)
        self.n += len(uv)


def _build_uvs(B):
    """UV coordinates: vt [T,2], ft [F,3] aligned with B.F (see the module docstring)."""
    P = B.P_skin
    # u: mean chord between neighbouring columns over the face rows, cumulated from the seam
    rows = range(B.i_m - 8, B.i_e + 8)
    seg = np.zeros(NC)
    cols = np.arange(NC)
    for i in rows:
        seg += np.linalg.norm(P[B.ida[i, (cols + 1) % NC]] - P[B.ida[i, cols]], axis=1)
    cum = np.concatenate([[0.0], np.cumsum(seg / len(rows))])
    L_u = cum[-1]
    # v: arc length along each column (rows, and across the lid openings), blended 60/40 with the
    # mean over a few reference columns, measured from a row just below the eyes (v there is flat)
    refs = np.array([JF, JF - 2, JF + 2, JF - 22, JF + 22])
    R = _cast(B.levels[None, :], B.phis[refs][:, None], B.e_ring[refs][:, None])
    cv = np.concatenate([[0.0], np.cumsum(np.linalg.norm(np.diff(R, axis=1), axis=2).mean(0))])
    i_anchor = B.i_e - K_LO - 1
    arc = np.zeros(B.n_skin)
    for j in range(NC):
        chain = []
        for i in range(len(B.levels)):
            if B.ida[i, j] >= 0:
                if B.idb[i, j] != B.ida[i, j]:
                    chain.append(B.idb[i, j])
                chain.append(B.ida[i, j])
        chain = np.array(chain)
        a_ = np.concatenate([[0.0], np.cumsum(np.linalg.norm(np.diff(P[chain], axis=0), axis=1))])
        arc[chain] = a_ - a_[list(chain).index(B.ida[i_anchor, j])]
    ref = np.interp(B.sk_q, B.levels, cv) - cv[i_anchor]
    raw_v = 0.6 * arc + 0.4 * ref
    top = B.row_cols[-1]
    raw_top = raw_v[B.ida[len(B.levels) - 1, top]].max() + 0.6 * np.linalg.norm(B.pole - P[B.ida[-1, JF]])
    k = min((1.0 - 2 * U_MARGIN) / L_u, (V_TOP - 0.24) / (raw_top - raw_v.min()))   # UV units per metre
    v_bot = V_TOP - k * (raw_top - raw_v.min())
    u_col = U_MARGIN + k * cum + 0.5 * (1.0 - 2 * U_MARGIN - k * L_u)
    uv = _UV()
    # skin: one vt per skin vertex, plus u = 1 copies of the seam column, plus crown-fan apexes
    skin_uv = np.stack([u_col[B.sk_j], v_bot + k * (raw_v - raw_v.min())], -1)
    seam = np.flatnonzero(B.sk_j == 0)
    seam_vt = np.full(B.n_skin, -1)
    seam_vt[seam] = B.n_skin + np.arange(len(seam))
    seam_uv = np.stack([np.full(len(seam), u_col[NC]), skin_uv[seam, 1]], -1)
    ft_skin = np.where(B.skin_wraps == 1, seam_vt[np.clip(B.skin_faces, 0, B.n_skin - 1)], B.skin_faces)
    top = B.row_cols[-1]
    n_top = len(top)
    a_u = u_col[top]
    b_u = np.concatenate([u_col[top[1:]], [u_col[NC]]])
    apex = np.stack([0.5 * (a_u + b_u), np.full(n_top, V_TOP)], -1)
    base = B.n_skin + len(seam)
    ft_fan = B.fan_faces.copy()
    ft_fan[:, 2] = base + np.arange(n_top)
    ft_fan[-1, 1] = seam_vt[B.fan_faces[-1, 1]]            # last fan triangle ends on the seam
    uv.island(np.concatenate([skin_uv, seam_uv, apex]), np.concatenate([ft_skin, ft_fan]))
    ft_parts = [uv.ft[-1]]
    # small islands along the bottom
    gap = 0.012
    h = min(v_bot - 2 * gap, 0.22)                        # available height
    cy = gap + 0.5 * h
    x = U_MARGIN + 0.004
    centres = {}
    for name, r in (("eye_l", 0.4 * h), ("eye_r", 0.4 * h), ("mouth", 0.45 * h), ("cap", 0.3 * h),
                    ("lid_l", 0.17 * h), ("lid_r", 0.17 * h)):
        centres[name] = (x + r, cy, r)
        x += 2 * r + gap
    if x > 1.0:
        raise AssertionError("open head UV islands do not fit")
    # neck cap
    ring = B.idb[0, B.row_cols[0]]
    cu, cvv, r = centres["cap"]
    rel = P[ring][:, [0, 2]] - B.cap_centre[[0, 2]]
    rel = rel / np.abs(rel).max()
    cap_uv = np.concatenate([np.stack([cu + r * rel[:, 0], cvv + r * rel[:, 1]], -1), [[cu, cvv]]])
    loc = {v: k for k, v in enumerate(ring)}
    loc[B.cap_id] = len(ring)
    ft_cap = np.vectorize(loc.get)(B.cap_faces)
    uv.island(cap_uv, ft_cap, (cu, cvv))
    ft_parts.append(uv.ft[-1])
    # tubes (mouth cavity, eyelid linings): loop slot -> angle, ring -> radius; the faces follow
    # _tube_faces' order (quads ring r -> r+1, then the closing fan)
    def tube(n_rings, n_l, c, radii):
        ang = np.pi - 2 * np.pi * np.arange(n_l) / n_l
        tuv = np.concatenate([_disc_uv(rr, ang, c[:2], c[2]) for rr in radii] + [np.array([c[:2]])])
        out = []
        for r_i in range(n_rings - 1):
            for k_ in range(n_l):
                k1 = (k_ + 1) % n_l
                a0, a1, b0, b1 = r_i * n_l + k_, r_i * n_l + k1, (r_i + 1) * n_l + k_, (r_i + 1) * n_l + k1
                out += [(a1, a0, b0), (a1, b0, b1)]
        last = (n_rings - 1) * n_l
        out += [(last + (k_ + 1) % n_l, last + k_, len(tuv) - 1) for k_ in range(n_l)]
        uv.island(tuv, np.array(out), c)
        return uv.ft[-1]
    ft_parts.append(tube(len(B.mouth_ring_ids), len(B.mouth_loop), centres["mouth"],
                         [1.0, 0.9, 0.79, 0.66, 0.52, 0.38, 0.25, 0.13]))
    for (ids, _), name in zip(B.lining_ids, ("lid_l", "lid_r")):
        ft_parts.append(tube(len(ids), len(ids[0]), centres[name], [1.0, 0.62, 0.3]))
    # eyeballs: azimuthal equidistant about the front pole; back-pole apexes per triangle
    for name in ("eye_l", "eye_r"):
        cu, cvv, r = centres[name]
        th, ps = B.eye_theta, B.eye_psi
        e_uv = _disc_uv(th / np.pi, ps, (cu, cvv), r)
        ef = B.eye_faces.copy()
        back = len(th) - 1
        fan = np.flatnonzero(ef[:, 1] == back)
        apex = []
        for t, f in enumerate(fan):
            a_, b_ = ef[f, 0], ef[f, 2]
            ang = 0.5 * (ps[a_] + ps[b_] + (2 * np.pi if ps[b_] < ps[a_] else 0.0))
            apex.append(_disc_uv(1.0, ang, (cu, cvv), r))
            ef[f, 1] = len(th) + t
        e_uv = np.concatenate([e_uv, np.array(apex)])
        uv.island(e_uv, ef, (cu, cvv))
        ft_parts.append(uv.ft[-1])
    vt = np.concatenate(uv.vt)
    ft = np.concatenate(ft_parts)
    return vt, ft, k
