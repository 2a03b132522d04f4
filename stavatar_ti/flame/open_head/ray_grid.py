"""The structured ray grid the open head's skin vertices are cast from: rows, columns, eyelid contour.

A skin vertex is a column (azimuth) and a row parameter; `_cast` turns both into skin points on the
sculpture (`sculpt`).  The column angles, row levels, crown thinning and the eyelid margin curve
are laid out here; `builder` turns the grid into the mesh.
"""

from __future__ import annotations

import numpy as np

from .sculpt import DEG, Y_MOUTH, _dirs, _raycast


# ----------------------------------------------------------------------------------------------
# Ray family.  A skin vertex is a column (azimuth phi) and a row parameter q.
#   q in [-1, 0): lower part (neck, jaw, chin): rays from the mouth-height origin with elevation
#       e = -q * e_ring(phi), where e_ring(phi) is the elevation whose ray meets the neck cut;
#   q = s >= 0: upper part, s is roughly metres of surface:
#       s < S1:       origin at mouth height, elevation s / RHO1 (lips, nose base; lip line at s = 0),
#       S1 <= s < S2: elevation E2, the origin rises (nose, eyes, brows are swept by parallel rays),
#       s >= S2:      origin fixed at Y_O2, elevation rising to 90 deg at s = S3 (forehead, cranium).
# Origins rise and elevations grow monotonically with q, so rays of one column never cross.
Z_O = -0.005
E2 = 14.0 * DEG
RHO1 = 0.09
Y_O2 = 0.02
RHO3 = 0.10
S1 = RHO1 * E2
S2 = S1 + (Y_O2 - Y_MOUTH)
S3 = S2 + RHO3 * (0.5 * np.pi - E2)

NC = 80                      # columns around the head (mirror symmetric, seam at the back)
JF = NC // 2                 # the front (midline) column
MOUTH_HALF = 8               # mouth corners at columns JF -+ 8; 15 lip columns between them
EYE_A, EYE_B = JF + 7, JF + 18   # left eye corner columns (inner, outer); 10 lid columns between
K_LO, K_UP = 3, 4            # rows re-warped below / above the eye slit row
# lower rows (neck, jaw, chin): |elevation| in degrees at the front, dense at the lips
_LOWER_ABS = np.array([0.76, 1.66, 2.74, 4.0, 5.6, 7.4, 9.4, 11.6, 14.0, 16.6, 19.5, 22.7, 26.4, 30.8, 36.0,
                       42.5, 50.0, 58.5, 68.0])
# upper rows near the lips (s in metres); the outer lip rings are the rows at +-RING_ROW
_UPPER_LIP = (0.0, 0.0012, 0.0026, 0.0043, 0.0063, 0.0086, 0.0112)
RING_ROW = 2
# eyelid contour on the lid sphere: elevation angles (deg) about the eye centre
B_IN, B_OUT, B_UP, B_LO = -5.0, 4.0, 21.0, -24.0


def _rays(q, phi, e_ring):
    q = np.asarray(q, float)
    s = np.maximum(q, 0.0)
    e_up = np.where(s < S1, s / RHO1, np.where(s < S2, E2, np.minimum(E2 + (s - S2) / RHO3, 0.5 * np.pi)))
    y_up = np.where(s < S1, Y_MOUTH, np.where(s < S2, Y_MOUTH + (s - S1), Y_O2))
    e = np.where(q < 0, -q * e_ring, e_up)
    org = np.zeros(q.shape + (3,))
    org[..., 1] = np.where(q < 0, Y_MOUTH, y_up)
    org[..., 2] = Z_O
    return org, _dirs(e, phi)


def _cast(q, phi, e_ring):
    """Skin points for row parameters q and azimuths phi (broadcast together)."""
    q, phi, e_ring = np.broadcast_arrays(np.asarray(q, float), np.asarray(phi, float), np.asarray(e_ring, float))
    org, d = _rays(q, phi, e_ring)
    shp = org.shape
    org, d = org.reshape(-1, 3), d.reshape(-1, 3)
    return (org + d * _raycast(org, d)[:, None]).reshape(shp)


def _column_angles():
    """NC azimuths (radians), index 0 = the seam at the back (-pi), JF = the front midline."""
    p1 = 2.4 * np.arange(1, 9)                      # the mouth: corners at +-19.2 deg
    p2 = 19.2 + 1.75 * np.arange(1, 13)             # the eyes
    p3 = np.array([44.0, 48.5, 54.0, 60.0, 66.0, 72.0, 76.5, 80.5, 84.5, 88.5, 92.5, 96.5, 100.5, 105.0,
                   111.0, 119.0, 130.0, 145.0, 162.0, 180.0])  # denser over the ears
    pos = np.concatenate([p1, p2, p3])
    return np.concatenate([[-180.0], -pos[:-1][::-1], [0.0], pos[:-1]]) * DEG


def _row_levels():
    lower = -(_LOWER_ABS[::-1] / _LOWER_ABS[-1])
    up = list(_UPPER_LIP)
    s, step = up[-1], 0.0034
    while True:
        if s > 0.086:
            step = min(step * 1.16, 0.016)       # widening smoothly over the cranium
        s += step
        if s >= S3 - 0.5 * step:
            break
        up.append(s)
    return np.concatenate([lower, np.array(up)])


def _row_columns(levels, phis):
    """Kept columns per row: every column, except near the crown where they thin out."""
    pos_idx = np.arange(JF, NC)            # 0 .. <180 deg
    ang = phis[pos_idx] / DEG
    out = []
    for q in levels:
        e = (E2 + (q - S2) / RHO3) / DEG if q > S2 else 0.0
        gap = 0.0 if e < 50 else 3.0 if e < 60 else 5.0 if e < 70 else 8.5 if e < 78 else 15.0
        keep = [JF]
        last = 0.0
        for j, a in zip(pos_idx[1:], ang[1:]):
            if a - last >= gap - 1e-9 and 180.0 - a >= 0.6 * gap:
                keep.append(j)
                last = a
        keep = np.array(keep)
        mirror = (NC - keep[1:]) % NC
        cols = np.unique(np.concatenate([[0], keep, mirror]))
        out.append(cols)
    return out


def _lid_betas(u, down_up=0.0, up_lo=0.0):
    """Upper and lower lid margin elevations (radians, about the eye centre) at lid positions u in
    [0, 1] (inner corner 0, outer corner 1).  down_up / up_lo move the upper margin down and the
    lower margin up by that fraction of the opening (blink: 0.85 / 0.15 makes them meet)."""
    u = np.clip(u, 0.0, 1.0)
    bc = B_IN + (B_OUT - B_IN) * u
    s_up = np.sin(np.pi * u ** 0.868) ** 0.6
    s_lo = np.sin(np.pi * u ** 1.159) ** 0.8
    b_up = bc + (B_UP - (B_IN + (B_OUT - B_IN) * 0.45)) * s_up
    b_lo = bc - ((B_IN + (B_OUT - B_IN) * 0.55) - B_LO) * s_lo
    gap = b_up - b_lo
    return (b_up - down_up * gap) * DEG, (b_lo + up_lo * gap) * DEG
