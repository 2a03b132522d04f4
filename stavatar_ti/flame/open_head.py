"""The open head model: a procedural, deterministic human head in the FLAME model format.

The real FLAME files are licence-restricted and never shipped.  This module builds, from code alone
(no data files), a plausible adult head with neck that has everything the rest of the project
takes from a FLAME model: template, identity shape and expression blendshapes, pose correctives,
joint regressor, kinematic tree, skinning weights, a UV layout, the 15 + 15 outer-lip-ring vertices
the proxy teeth are built from, and the four region vertex sets of the local decoder.  It is the
default head for demos, synthetic data and tests.

    make_open_head(n_shape=10, seed=0) -> dict[str, np.ndarray]

Conventions (FLAME's)
---------------------
* Metres; +y up, +z out of the face (the face looks toward +z), +x toward the subject's left.
  Chin to crown 0.23 m, 0.15 m wide; the head centre is near the origin and the neck is cut
  flat at y = -0.155 (the cut is closed by a flat cap, so the skin is watertight).
* Faces are counter-clockwise seen from outside (outward normals by the right-hand rule).  The skin
  (head, neck, cap, mouth cavity, the hidden eyelid linings) is one closed, edge-manifold,
  consistently oriented surface; each eyeball is a separate closed sphere.
* Joints (FLAME order): 0 global (base of the neck), 1 neck (top of the neck), 2 jaw (hinge in front
  of the ears), 3 left eye, 4 right eye ("left" = the subject's left = +x).
  ``kintree_table`` = [[-1, 0, 1, 1, 1], [0, 1, 2, 3, 4]].
* ``shapedirs`` [V,3,n_shape+n_expr]: the first ``shape_basis_size`` (= n_shape) columns are
  identity shape, the rest expression blendshapes (names in ``shape_names`` /
  ``expression_names``).  Each is a full effect at coefficient 1 (about 1 cm for shape).
* ``posedirs`` [V,3,36] is all zeros: no pose correctives (FLAME's layout, so the LBS code path is
  the same; plain LBS on these weights already opens the jaw and turns the head cleanly).
* UVs (``vt`` [T,2], ``ft`` [F,3]) are in OBJ convention (v up) inside [0,1] x [0,0.95): the strip
  v >= 0.95 is left free for the proxy teeth (``stavatar_ti.flame.teeth``).  Islands: the skin as a
  cylindrical unwrap with the seam at the back of the head (the face in the middle, seen as in a
  photograph), and discs for each eyeball, the mouth cavity, the eyelid linings and the neck cap.
  No two UV triangles overlap and all are counter-clockwise.
* ``lip_ring_upper`` / ``lip_ring_lower`` [15]: the rows of the outer lip surface next to the lip
  line, paired column by column from the subject's right corner to the left.  The lips themselves
  touch at rest (separate upper / lower vertex rows at the same place); the rings sit 2-3 mm above
  and below that line, so the mean ring gap (about 5.5 mm) gives teeth of a realistic size with the
  GaussianAvatars / VHAP construction (``stavatar_ti.flame.teeth``): their biting edges lie in the
  mouth cavity, front and back; parts of the root rows sit in the gums (inside the head).
* Regions: ``region_eye_region`` includes the eyeballs and the lid linings, ``region_lips`` the
  first two rings of the mouth cavity (the inner lip surfaces).

How it is made
--------------
The skin is a signed-distance sculpture (smooth unions of ellipsoids and capsules: cranium, face,
jaw, chin, neck, nose, brow ridge, cheekbones, eye sockets with lid spheres over the eyeballs, lips
as a displacement with a crease at the lip line, simple ears).  A structured grid of rays is cast
onto it, taking the outermost hit: columns are half-planes through a vertical axis (dense on the
face, coarser behind, thinned out near the crown), rows sweep each column from the neck cut to the
crown (rays from behind the mouth for the neck, chin and lips, parallel rays rising over the
nose, eyes and brows, then rays fanning over the cranium).  The eyelid openings are cut along one
grid row whose neighbours are re-warped so that the upper and lower lid margins follow an almond
contour on the lid sphere; the lips are cut along the row of the lip line.  Behind the lip cut
hangs a closed mouth-cavity pocket (room for the proxy teeth), behind each lid cut a short lining
that ends inside the eyeball.  Expression blendshapes are analytic, compactly supported
displacement fields (mouth, cheeks, brows) or differences of re-warped lid rows (blinks, squint,
eye_wide); identity components are analytic fields.  The eyeballs (12 mm radius) only ever move
rigidly.  Everything is vectorised numpy; a build takes well under a second and is cached (every
call returns fresh copies).

The ``seed`` only drives the extra identity components beyond the 16 designed ones (random smooth
symmetric bumps along the normals, used when ``n_shape > 16``); everything else ignores it.
"""

from __future__ import annotations

import numpy as np

__all__ = ["make_open_head", "EXPRESSION_NAMES", "SHAPE_NAMES", "NUM_DESIGNED_SHAPES"]

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
MAX_SHAPE = 300

# ----------------------------------------------------------------------------------------------
# Landmarks (metres).  Left-side features are given for x > 0; the sculpture is mirror symmetric.
Y_MOUTH = -0.055                  # lip line height
Y_NECK_CUT = -0.155
EYE_CENTER = np.array([0.032, 0.012, 0.060])   # left eyeball centre (+x)
EYE_RADIUS = 0.012
LID_RADIUS = 0.0135
JAW_HINGE = np.array([0.0, -0.021, 0.002])
NECK_TOP = np.array([0.0, -0.048, -0.022])
R_START = 0.24                    # rays start this far from their origin (outside the head)

DEG = np.pi / 180.0


def _smoothstep(a, b, x):
    t = np.clip((x - a) / (b - a), 0.0, 1.0)
    return t * t * (3.0 - 2.0 * t)


def _smin(a, b, k):
    """Polynomial smooth minimum (smooth union of two distance fields, blend radius k)."""
    h = np.clip(0.5 + 0.5 * (b - a) / k, 0.0, 1.0)
    return b + (a - b) * h - k * h * (1.0 - h)


def _smax(a, b, k):
    return -_smin(-a, -b, k)


def _ell(x, y, z, c, r):
    """Approximate signed distance to an axis-aligned ellipsoid (centre c, radii r)."""
    qx, qy, qz = (x - c[0]) / r[0], (y - c[1]) / r[1], (z - c[2]) / r[2]
    k0 = np.sqrt(qx * qx + qy * qy + qz * qz)
    k1 = np.sqrt((qx / r[0]) ** 2 + (qy / r[1]) ** 2 + (qz / r[2]) ** 2)
    return k0 * (k0 - 1.0) / (k1 + 1e-12)


def _cone(x, y, z, a, b, ra, rb):
    """Capsule from a to b whose radius goes linearly from ra to rb."""
    a = np.asarray(a, float)
    ba = np.asarray(b, float) - a
    px, py, pz = x - a[0], y - a[1], z - a[2]
    h = np.clip((px * ba[0] + py * ba[1] + pz * ba[2]) / float(ba @ ba), 0.0, 1.0)
    dx, dy, dz = px - ba[0] * h, py - ba[1] * h, pz - ba[2] * h
    return np.sqrt(dx * dx + dy * dy + dz * dz) - (ra + (rb - ra) * h)


def _bump1(t):
    """Compactly supported smooth bump: (1 - t^2)^3 on |t| < 1, 0 outside (t may be an array)."""
    s = np.clip(1.0 - t * t, 0.0, 1.0)
    return s * s * s


def _lip_profile(t, c, p_out):
    """Lip cross-section over t in [0, 1] (0 = lip line, 1 = vermilion border): an elliptic arc on
    the lip-line side (the lips meet at an angle), a softer fall of power p_out toward the border."""
    inner = np.sqrt(np.clip(1.0 - ((t - c) / (1.0 - c)) ** 2, 0.0, 1.0))
    outer = np.clip(1.0 - ((t - c) / (1.0 - c)) ** 2, 0.0, 1.0) ** p_out
    return np.where(t < c, inner, outer)


def _lip_bump(x, y, z):
    """Forward thickness of the lips (m) at a point (x is |x|): zero on the lip line y = Y_MOUTH
    (a sharp crease where the lips meet) and at the vermilion borders, fullest in the middle."""
    s = y - Y_MOUTH
    q = np.sqrt(np.clip(1.0 - (x / 0.0268) ** 2, 0.0, 1.0))
    # upper lip: Cupid's bow (a dip at the philtrum, peaks beside it)
    bow = 1.0 - 0.10 * np.exp(-(x / 0.0035) ** 2) + 0.08 * np.exp(-((x - 0.0065) / 0.004) ** 2)
    h_up = (0.0088 * q ** 0.6 + 0.0008) * bow
    h_lo = 0.0105 * q ** 0.6 + 0.0008
    t_up = np.clip(s / h_up, 0.0, 1.0)
    t_lo = np.clip(-s / h_lo, 0.0, 1.0)
    up = 0.0052 * q ** 1.2 * _lip_profile(t_up, 0.40, 0.9)
    lo = 0.0056 * q ** 1.2 * _lip_profile(t_lo, 0.42, 1.6)
    front = _smoothstep(0.045, 0.06, z)
    return np.where(s > 0, up, lo) * front


def _nose_sdf(x, y, z):
    """Distance to the nose (x is |x|)."""
    d = _cone(x * 1.55, y, z, (0.0, 0.017, 0.071), (0.0, -0.018, 0.094), 0.0075, 0.0095)
    d = _smin(d, _ell(x, y, z, (0.0, -0.0235, 0.0955), (0.0105, 0.0095, 0.0105)), 0.006)
    d = _smin(d, _ell(x, y, z, (0.0135, -0.0285, 0.0815), (0.0072, 0.0068, 0.0088)), 0.007)
    d = _smin(d, _cone(x, y, z, (0.0, -0.029, 0.097), (0.0, -0.0345, 0.087), 0.0035, 0.0035), 0.004)
    return d


def _ear_sdf(x, y, z, scale=1.0):
    """Distance to the left ear (x is |x|): a tilted plate with a bowl and a lobe."""
    c = np.array([0.0785, 0.004, -0.019])
    a = 30.0 * DEG
    n = np.array([np.cos(a), 0.0, np.sin(a)])
    w = np.array([-np.sin(a), 0.0, np.cos(a)])
    px, py, pz = x - c[0], y - c[1], z - c[2]
    ln = px * n[0] + pz * n[2]
    lw = px * w[0] + pz * w[2]
    t = 14.0 * DEG  # the top leans back
    ly = py * np.cos(t) + lw * np.sin(t)
    lw2 = -py * np.sin(t) + lw * np.cos(t)
    ln, ly, lw2 = ln / scale, ly / scale, lw2 / scale
    d = _ell(ln, ly, lw2, (0.0, 0.0, 0.0), (0.0085, 0.031, 0.0175))
    bowl = _ell(ln, ly, lw2, (0.009, 0.003, 0.001), (0.0062, 0.0235, 0.0118))
    d = _smax(d, -bowl, 0.0025)
    concha = _ell(ln, ly, lw2, (0.0085, -0.006, 0.0045), (0.0055, 0.0085, 0.0075))
    d = _smax(d, -concha, 0.002)
    d = _smin(d, _ell(ln, ly, lw2, (0.0005, -0.026, 0.0015), (0.0055, 0.0085, 0.0085)), 0.004)
    return d * scale


def _sdf(p):
    """Signed distance (approximate, negative inside) of the skin sculpture at points p [N,3]."""
    x, y, z = np.abs(p[:, 0]), p[:, 1], p[:, 2]
    # cranium: a superellipse across (broad vault), narrowing toward the forehead
    taper = 1.0 - 0.11 * _smoothstep(-0.03, 0.09, z)
    qx, qy, qz = x / (0.0765 * taper), (y - 0.020) / 0.105, (z + 0.010) / 0.096
    d = (np.sqrt((np.abs(qx) ** 2.5 + np.abs(qy) ** 2.5) ** 0.8 + qz * qz) - 1.0) * 0.075
    # face block (cheeks, maxilla) and the muzzle around the dental arch
    d = _smin(d, _ell(x, y, z, (0.0, -0.030, 0.022), (0.055, 0.056, 0.058)), 0.03)
    d = _smin(d, _ell(x, y, z, (0.0, -0.050, 0.052), (0.034, 0.030, 0.032)), 0.014)
    # mandible body, ramus, chin
    d = _smin(d, _ell(x, y, z, (0.0, -0.073, 0.020), (0.052, 0.026, 0.048)), 0.02)
    d = _smin(d, _cone(x, y, z, (0.049, -0.068, -0.008), (0.053, -0.020, -0.004), 0.010, 0.010), 0.02)
    d = _smin(d, _ell(x, y, z, (0.0, -0.088, 0.062), (0.025, 0.018, 0.018)), 0.016)
    # neck (vertical elliptic cylinder, top hidden inside the head)
    dn = (np.sqrt((x / 0.056) ** 2 + ((z + 0.024) / 0.058) ** 2) - 1.0) * 0.057
    d = _smin(d, _smax(dn, y + 0.02, 0.02), 0.03)
    # brow ridge and cheekbones
    d = _smin(d, _ell(x, y, z, (0.0, 0.031, 0.061), (0.052, 0.0115, 0.021)), 0.014)
    d = _smin(d, _ell(x, y, z, (0.046, -0.003, 0.042), (0.019, 0.012, 0.021)), 0.02)
    d = _smin(d, _ell(x, y, z, (0.038, -0.036, 0.038), (0.022, 0.026, 0.030)), 0.02)
    # zygomatic arch and masseter (the side of the face in front of the ear)
    d = _smin(d, _cone(x, y, z, (0.052, -0.004, 0.036), (0.064, -0.002, -0.004), 0.010, 0.009), 0.02)
    d = _smin(d, _ell(x, y, z, (0.047, -0.042, 0.006), (0.015, 0.03, 0.024)), 0.025)
    # eye sockets, then the lid spheres over the eyeballs
    d = _smax(d, -_ell(x, y, z, (0.033, 0.011, 0.079), (0.0195, 0.0115, 0.0125)), 0.01)
    de = np.sqrt((x - EYE_CENTER[0]) ** 2 + (y - EYE_CENTER[1]) ** 2 + (z - EYE_CENTER[2]) ** 2) - LID_RADIUS
    d = _smin(d, de, 0.008)
    # nose
    d = _smin(d, _nose_sdf(x, y, z), 0.010)
    # ears
    d = _smin(d, _ear_sdf(x, y, z), 0.008)
    # lips (a displacement with its crease exactly at y = Y_MOUTH)
    return d - _lip_bump(x, y, z)


def _bound_capsule(p):
    """Distance to a capsule (vertical axis x = 0, z = -0.015, y in [-0.23, 0.02], radius 0.128)
    that contains the whole sculpture (checked by the builder): a cheap lower bound of _sdf."""
    h = p[:, 1] - np.clip(p[:, 1], -0.23, 0.02)
    return np.sqrt(p[:, 0] ** 2 + (p[:, 2] + 0.015) ** 2 + h * h) - 0.128


def _raycast(org, dirs):
    """Distance along unit rays (origins org [N,3], directions dirs [N,3]) to the outermost hit.

    Sphere tracing inward from R_START with half steps (the sculpture's distance is only roughly
    Lipschitz-1), a bracket, then 24 bisection steps (sub-micrometre)."""
    n = dirs.shape[0]
    t = np.full(n, R_START)
    t_out = t.copy()
    act = np.arange(n)
    for _ in range(100):
        if act.size == 0:
            break
        p = org[act] + dirs[act] * t[act, None]
        # cheap lower bound of the distance while far away: the head lies inside a capsule
        far = _bound_capsule(p)
        jump = far > 0.002
        if jump.any():
            t[act[jump]] -= far[jump]
            t_out[act[jump]] = t[act[jump]]
            act = act[~jump]
            p = p[~jump]
            if act.size == 0:
                continue
        d = _sdf(p)
        pos = d > 0
        t_out[act[pos]] = t[act[pos]]
        keep = d > 2e-5
        act, d = act[keep], d[keep]
        t[act] -= np.maximum(0.5 * d, 2e-5)
    lo = t_out.copy()
    act = np.arange(n)
    for _ in range(200):
        if act.size == 0:
            break
        d = _sdf(org[act] + dirs[act] * lo[act, None])
        out = d >= 0
        act, d = act[out], d[out]
        t_out[act] = lo[act]
        lo[act] -= np.maximum(d, 2e-4)
    hi = t_out
    for _ in range(24):
        mid = 0.5 * (lo + hi)
        inside = _sdf(org + dirs * mid[:, None]) < 0
        lo = np.where(inside, mid, lo)
        hi = np.where(inside, hi, mid)
    return 0.5 * (lo + hi)


def _dirs(e, phi):
    """Unit ray directions for elevation e and azimuth phi (radians; phi = 0 toward +z, +x at +90 deg)."""
    ce = np.cos(e)
    return np.stack([ce * np.sin(phi), np.sin(e), ce * np.cos(phi)], -1)


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


class _Builder:
    """Builds the template mesh, its UVs and the bookkeeping the blendshapes need."""

    def __init__(self):
        self.phis = _column_angles()
        self.levels = _row_levels()
        self.i_m = int(np.flatnonzero(self.levels == 0.0)[0])
        self.row_cols = _row_columns(self.levels, self.phis)
        self.mirror_col = (NC - np.arange(NC)) % NC
        self._neck_ring()
        self._eye_setup()
        self._skin_vertices()
        self._skin_faces()
        self._mouth_pocket()
        self._eye_linings()
        self._eyeballs()
        self._assemble()

    # -- rows and columns --------------------------------------------------------------------
    def _neck_ring(self):
        """e_ring[j]: elevation of the ray (mouth-height origin) that meets the neck cut plane."""
        half = np.arange(JF, NC + 1) % NC          # front .. back (then mirrored)
        es = np.arange(-88.0, -24.0, 1.5) * DEG
        P = _cast(0.0 * es[None, :] - 1.0, self.phis[half][:, None], es[None, :])  # q=-1: e = e_ring
        e_ring = np.empty(NC)
        for k, j in enumerate(half):
            y = np.maximum.accumulate(P[k, :, 1])
            e_ring[j] = np.interp(Y_NECK_CUT, y, es)
        for j in range(NC):
            if not (JF <= j or j == 0):
                e_ring[j] = e_ring[self.mirror_col[j]]
        self.e_ring = e_ring

    def _eye_setup(self):
        """Dense skin table along the left eye's columns, the slit row and the lid solve."""
        # find the slit row: the level nearest the eye centre's height in the middle lid column
        jc = (EYE_A + EYE_B) // 2
        ss = np.arange(0.04, 0.10, 0.0005)
        P = _cast(ss, self.phis[jc], self.e_ring[jc])
        s_mid = np.interp(EYE_CENTER[1], np.maximum.accumulate(P[:, 1]), ss)
        self.i_e = int(np.argmin(np.abs(self.levels - s_mid)))
        lo_fix, hi_fix = self.levels[self.i_e - K_LO - 1], self.levels[self.i_e + K_UP + 1]
        self.tab_cols = np.arange(EYE_A - 3, EYE_B + 4)
        self.tab_s = np.linspace(lo_fix, hi_fix, 111)
        self.tab_P = _cast(self.tab_s[None, :], self.phis[self.tab_cols][:, None],
                           self.e_ring[self.tab_cols][:, None])          # [ncol, ns, 3]
        rel = self.tab_P - EYE_CENTER
        beta = np.arcsin(np.clip(rel[..., 1] / np.linalg.norm(rel, axis=-1), -1.0, 1.0))
        self.tab_beta = np.maximum.accumulate(beta, axis=1)
        self.band_q = self._eye_band(0.0, 0.0)

    def _eye_band(self, down_up, up_lo):
        """Row parameters of the warped eye band of the left eye.

        Returns qa, qb [ncol, K_LO + K_UP + 1]: rows i_e-K_LO .. i_e+K_UP, for faces above / below
        (they differ only on the slit row of the lid columns: upper / lower margin)."""
        phA, phB = self.phis[EYE_A], self.phis[EYE_B]
        lo_fix, hi_fix = self.tab_s[0], self.tab_s[-1]
        nrow = K_LO + K_UP + 1
        qa = np.empty((len(self.tab_cols), nrow))
        qb = np.empty_like(qa)
        s_row = self.levels[self.i_e]
        for c, j in enumerate(self.tab_cols):
            u = (self.phis[j] - phA) / (phB - phA)
            b_up, b_lo = _lid_betas(np.array([u]), down_up, up_lo)
            if EYE_A <= j <= EYE_B:
                s_up = np.interp(b_up[0], self.tab_beta[c], self.tab_s)
                s_lo = np.interp(b_lo[0], self.tab_beta[c], self.tab_s)
                if j in (EYE_A, EYE_B):
                    s_up = s_lo = 0.5 * (s_up + s_lo)
            else:
                corner = EYE_A if j < EYE_A else EYE_B
                cc = corner - self.tab_cols[0]
                b_c = _lid_betas(np.array([0.0 if corner == EYE_A else 1.0]))[0][0]
                s_c = np.interp(b_c, self.tab_beta[cc], self.tab_s)
                ramp = abs(j - corner) / 3.0
                s_up = s_lo = s_c + (s_row - s_c) * ramp
            for k in range(K_LO):
                qa[c, k] = qb[c, k] = lo_fix + (s_lo - lo_fix) * (k + 1) / (K_LO + 1)
            qa[c, K_LO], qb[c, K_LO] = s_up, s_lo
            for k in range(K_UP):
                qa[c, K_LO + 1 + k] = qb[c, K_LO + 1 + k] = s_up + (hi_fix - s_up) * (k + 1) / (K_UP + 1)
        return qa, qb

    def _tab_points(self, c, q):
        """Skin points from the dense eye table (column slots c, parameters q)."""
        ds = self.tab_s[1] - self.tab_s[0]
        f = np.clip((q - self.tab_s[0]) / ds, 0.0, len(self.tab_s) - 1.000001)
        i0 = np.floor(f).astype(int)
        w = (f - i0)[..., None]
        return self.tab_P[c, i0] * (1.0 - w) + self.tab_P[c, i0 + 1] * w

    # -- skin ---------------------------------------------------------------------------------
    def _skin_vertices(self):
        """One vertex per kept (row, column); a second one on the slit rows (mouth and eyes).

        ida[i, j] is the vertex used by faces above row i, idb[i, j] the one used below."""
        NR = len(self.levels)
        ida = -np.ones((NR, NC), np.int64)
        q_v, j_v, i_v, kind = [], [], [], []      # kind: 0 plain, 1 upper copy, 2 lower copy
        mouth_int = set(range(JF - MOUTH_HALF + 1, JF + MOUTH_HALF))
        eye_int = set(range(EYE_A + 1, EYE_B)) | {self.mirror_col[j] for j in range(EYE_A + 1, EYE_B)}
        idb = ida.copy()
        qa, qb = self.band_q
        band_rows = range(self.i_e - K_LO, self.i_e + K_UP + 1)
        tab_slot = {}
        for c, j in enumerate(self.tab_cols):
            tab_slot[j] = c
            tab_slot[self.mirror_col[j]] = c
        for i in range(NR):
            for j in self.row_cols[i]:
                q_up = q_lo = self.levels[i]
                if i in band_rows and j in tab_slot:
                    c = tab_slot[j]
                    q_up, q_lo = qa[c, i - self.i_e + K_LO], qb[c, i - self.i_e + K_LO]
                split = (i == self.i_m and j in mouth_int) or (i == self.i_e and j in eye_int)
                ida[i, j] = len(q_v)
                q_v.append(q_up), j_v.append(j), i_v.append(i), kind.append(1 if split else 0)
                if split:
                    idb[i, j] = len(q_v)
                    q_v.append(q_lo), j_v.append(j), i_v.append(i), kind.append(2)
                else:
                    idb[i, j] = ida[i, j]
        self.ida, self.idb = ida, idb
        self.sk_q, self.sk_j, self.sk_i, self.sk_kind = map(np.array, (q_v, j_v, i_v, kind))
        self.tab_slot = tab_slot
        n = len(q_v)
        # mirror map of skin vertices
        key = {(i, j, k): v for v, (i, j, k) in enumerate(zip(i_v, j_v, kind))}
        self.sk_mirror = np.array([key[(i, self.mirror_col[j], k)] for i, j, k in zip(i_v, j_v, kind)])
        # positions: cast the right half (phi >= 0 and the seam) and mirror the rest
        right = (self.sk_j >= JF) | (self.sk_j == 0)
        P = np.zeros((n, 3))
        idx = np.flatnonzero(right)
        P[idx] = _cast(self.sk_q[idx], self.phis[self.sk_j[idx]], self.e_ring[self.sk_j[idx]])
        # eye band vertices come from the dense table (exactly consistent with the lid variants)
        self.band_idx = np.array([v for v in range(n) if self.sk_i[v] in band_rows and self.sk_j[v] in tab_slot
                                  and right[v]])
        slots = np.array([tab_slot[j] for j in self.sk_j[self.band_idx]])
        P[self.band_idx] = self._tab_points(slots, self.sk_q[self.band_idx])
        self.band_slots = slots
        idx = np.flatnonzero(~right)
        P[idx] = P[self.sk_mirror[idx]] * np.array([-1.0, 1.0, 1.0])
        P[self.sk_i == 0, 1] = Y_NECK_CUT
        if _bound_capsule(P).max() > -0.002:
            raise AssertionError("open head: the sculpture leaves the ray-marching bound")
        self.n_skin = n
        self.P_skin = P
        # pole and neck-cap centre
        self.pole = _cast(np.array([S3]), np.array([0.0]), np.array([0.0]))[0]
        self.pole[0] = 0.0
        ring = P[ida[0, self.row_cols[0]]]
        self.cap_centre = np.array([0.0, Y_NECK_CUT, ring[:, 2].mean()])

    def _skin_faces(self):
        """Faces (and UV corner keys) of the skin grid, the crown fan and the neck cap."""
        NR = len(self.levels)
        faces, wraps = [], []     # wraps: per corner, 1 if it uses the u = 1 copy of the seam column
        phis = self.phis
        for i in range(NR - 1):
            lo, up = self.row_cols[i], self.row_cols[i + 1]
            if len(lo) == len(up) and np.all(lo == up):
                for k in range(len(lo)):
                    j0, j1 = lo[k], lo[(k + 1) % len(lo)]
                    w1 = 1 if j1 == 0 else 0
                    a, b = self.ida[i, j0], self.ida[i, j1]
                    c, d = self.idb[i + 1, j1], self.idb[i + 1, j0]
                    # one diagonal direction everywhere: a mirrored split along the midline
                    # would leave a shading seam where the quads are long and thin
                    faces += [(a, b, c), (a, c, d)]
                    wraps += [(0, w1, w1), (0, w1, 0)]
            else:
                L = list(lo) + [lo[0]]
                U = list(up) + [up[0]]
                aL = [phis[j] for j in lo] + [np.pi]
                aU = [phis[j] for j in up] + [np.pi]
                wl = [0] * len(lo) + [1]
                wu = [0] * len(up) + [1]
                a = b = 0
                while a < len(L) - 1 or b < len(U) - 1:
                    if b == len(U) - 1 or (a < len(L) - 1 and aL[a + 1] <= aU[b + 1] + 1e-12):
                        faces.append((self.ida[i, L[a]], self.ida[i, L[a + 1]], self.idb[i + 1, U[b]]))
                        wraps.append((wl[a], wl[a + 1], wu[b]))
                        a += 1
                    else:
                        faces.append((self.ida[i, L[a]], self.idb[i + 1, U[b + 1]], self.idb[i + 1, U[b]]))
                        wraps.append((wl[a], wu[b + 1], wu[b]))
                        b += 1
        self.skin_faces = np.array(faces, np.int64)
        self.skin_wraps = np.array(wraps, np.int64)
        # crown fan (pole vertex id = n_skin) and neck cap (centre id = n_skin + 1)
        top = self.row_cols[NR - 1]
        fan = [(self.ida[NR - 1, top[k]], self.ida[NR - 1, top[(k + 1) % len(top)]], self.n_skin)
               for k in range(len(top))]
        bot = self.row_cols[0]
        cap = [(self.idb[0, bot[(k + 1) % len(bot)]], self.idb[0, bot[k]], self.n_skin + 1) for k in range(len(bot))]
        self.fan_faces = np.array(fan, np.int64)
        self.cap_faces = np.array(cap, np.int64)

    def _slit_loop(self, row, j_lo, j_hi):
        """Vertex ids around a slit: corner j_lo, upper copies, corner j_hi, lower copies back."""
        ups = [self.ida[row, j] for j in range(j_lo + 1, j_hi)]
        los = [self.idb[row, j] for j in range(j_hi - 1, j_lo, -1)]
        return np.array([self.ida[row, j_lo]] + ups + [self.ida[row, j_hi]] + los, np.int64)

    # -- mouth cavity --------------------------------------------------------------------------
    _POCKET_RINGS = (  # (half-width offset from the corners, H_up, H_lo, D_up, D_lo) in metres
        (-0.0005, 0.0006, 0.0006, 0.0035, 0.0040),     # inner edge of the lips
        (0.0020, 0.0060, 0.0060, 0.0050, 0.0065),      # inner faces of the lips
        (0.0070, 0.0125, 0.0100, 0.0060, 0.0085),      # lip / gum folds
        (0.0100, 0.0140, 0.0120, 0.0120, 0.0150),
        (0.0090, 0.0140, 0.0125, 0.0240, 0.0240),      # palate / floor
        (0.0020, 0.0100, 0.0080, 0.0350, 0.0350),
        (-0.0080, 0.0050, 0.0045, 0.0410, 0.0410),     # throat
    )

    def pocket_rings(self, loop_P, sigma):
        """Mouth-cavity ring positions from the lip-line loop positions [32,3] and sides sigma."""
        xc = 0.5 * (abs(loop_P[0, 0]) + abs(loop_P[MOUTH_HALF * 2, 0]))
        xi = np.clip(loop_P[:, 0] / xc, -1.0, 1.0)
        # dental arch: parabola through the lip line
        A = np.stack([np.ones(len(loop_P)), loop_P[:, 0] ** 2], 1)
        z0, a2 = np.linalg.lstsq(A, loop_P[:, 2], rcond=None)[0]
        ycen = loop_P[:, 1].mean()
        rings = []
        for r, (dx, hu, hl, du, dl) in enumerate(self._POCKET_RINGS):
            ell = np.clip(1.0 - np.abs(xi) ** (2 if r < 2 else 4), 0.0, 1.0) ** (0.5 if r < 2 else 0.25)
            X = xc + dx
            x = xi * X
            h = np.where(sigma > 0, hu, np.where(sigma < 0, hl, 0.0)) * ell
            D = 0.5 * (du + dl) + 0.5 * sigma * (du - dl) * ell
            y = ycen + np.sign(sigma) * h
            z = z0 + a2 * x ** 2 - D
            rings.append(np.stack([x, y, z], 1))
        back = np.array([0.0, ycen, z0 - 0.044])
        return np.stack(rings), back

    def _mouth_pocket(self):
        loop = self._slit_loop(self.i_m, JF - MOUTH_HALF, JF + MOUTH_HALF)
        n = len(loop)
        sigma = np.zeros(n)
        sigma[1:2 * MOUTH_HALF] = 1.0
        sigma[2 * MOUTH_HALF + 1:] = -1.0
        self.mouth_loop, self.mouth_sigma = loop, sigma
        rings, back = self.pocket_rings(self.P_skin[loop], sigma)
        self.mouth_rings_P, self.mouth_back_P = rings, back

    # -- eyelid linings and eyeballs ----------------------------------------------------------
    @staticmethod
    def lining_rings(loop_P, centre):
        u = loop_P - centre
        u /= np.linalg.norm(u, axis=1, keepdims=True)
        c = u.mean(0)
        c /= np.linalg.norm(c)
        r1 = centre + (EYE_RADIUS - 0.0004) * u
        u2 = u + 0.8 * c
        u2 /= np.linalg.norm(u2, axis=1, keepdims=True)
        r2 = centre + (EYE_RADIUS - 0.0025) * u2
        return np.stack([r1, r2]), centre + (EYE_RADIUS - 0.004) * c

    def _eye_linings(self):
        self.eye_loops = []
        for side, (ja, jb) in enumerate(((EYE_A, EYE_B), (self.mirror_col[EYE_B], self.mirror_col[EYE_A]))):
            loop = self._slit_loop(self.i_e, ja, jb)
            centre = EYE_CENTER * np.array([1.0 if side == 0 else -1.0, 1.0, 1.0])
            rings, mid = self.lining_rings(self.P_skin[loop], centre)
            self.eye_loops.append((loop, rings, mid, centre))

    def _eyeballs(self):
        th = np.array([7, 14, 21, 28, 36, 46, 60, 78, 98, 120, 145]) * DEG
        ps = np.arange(20) * (2 * np.pi / 20)
        T, Ps = np.meshgrid(th, ps, indexing="ij")
        ring = np.stack([np.sin(T) * np.cos(Ps), np.sin(T) * np.sin(Ps), np.cos(T)], -1).reshape(-1, 3)
        unit = np.concatenate([[[0.0, 0.0, 1.0]], ring, [[0.0, 0.0, -1.0]]])
        nr, nl = len(th), len(ps)
        F = []
        for k in range(nl):
            k1 = (k + 1) % nl
            F.append((0, 1 + k, 1 + k1))
            for r in range(nr - 1):
                a, b = 1 + r * nl + k, 1 + r * nl + k1
                c, d = 1 + (r + 1) * nl + k1, 1 + (r + 1) * nl + k
                F += [(a, d, c), (a, c, b)]
            F.append((1 + (nr - 1) * nl + k, 1 + nr * nl, 1 + (nr - 1) * nl + k1))
        self.eye_unit = unit
        self.eye_faces = np.array(F, np.int64)
        self.eye_theta = np.concatenate([[0.0], T.ravel(), [np.pi]])
        self.eye_psi = np.concatenate([[0.0], Ps.ravel(), [0.0]])
        self.eye_nr, self.eye_nl = nr, nl

    # -- assembly -----------------------------------------------------------------------------
    def _assemble(self):
        parts = [self.P_skin, self.pole[None], self.cap_centre[None]]
        n = self.n_skin + 2
        self.pole_id, self.cap_id = self.n_skin, self.n_skin + 1
        faces = [self.skin_faces, self.fan_faces, self.cap_faces]
        # mouth pocket
        nl = len(self.mouth_loop)
        self.mouth_ring_ids = [self.mouth_loop]
        for _ in range(len(self.mouth_rings_P)):
            self.mouth_ring_ids.append(np.arange(n, n + nl))
            n += nl
        parts += list(self.mouth_rings_P) + [self.mouth_back_P[None]]
        self.mouth_back_id = n
        n += 1
        faces.append(_tube_faces(self.mouth_ring_ids, self.mouth_back_id))
        self.pocket_ids = np.arange(self.mouth_ring_ids[1][0], n)
        # eyelid linings
        self.lining_ids = []
        for loop, rings, mid, _ in self.eye_loops:
            ids = [loop]
            for r in rings:
                ids.append(np.arange(n, n + len(loop)))
                n += len(loop)
            parts += list(rings) + [mid[None]]
            faces.append(_tube_faces(ids, n))
            self.lining_ids.append((ids, n))
            n += 1
        # eyeballs
        self.eyeball_ids = []
        for side in (0, 1):
            centre = EYE_CENTER * np.array([1.0 if side == 0 else -1.0, 1.0, 1.0])
            parts.append(centre + EYE_RADIUS * self.eye_unit)
            faces.append(self.eye_faces + n)
            self.eyeball_ids.append(np.arange(n, n + len(self.eye_unit)))
            n += len(self.eye_unit)
        self.V = np.concatenate(parts, 0)
        self.F = np.concatenate(faces, 0)
        self.n_vert = n
        self._mirror_map()

    def _mirror_map(self):
        m = np.arange(self.n_vert)
        m[:self.n_skin] = self.sk_mirror
        # mouth pocket ring k, loop slot l  <->  mirrored slot
        nl = len(self.mouth_loop)
        slot_m = np.array([self.mirror_loop_slot(l, nl) for l in range(nl)])
        for ids in self.mouth_ring_ids[1:]:
            m[ids] = ids[slot_m]
        (ids_l, mid_l), (ids_r, mid_r) = self.lining_ids
        ne = len(ids_l[0])
        slot_e = np.array([self.mirror_loop_slot(l, ne) for l in range(ne)])
        for a, b in zip(ids_l[1:], ids_r[1:]):
            m[a] = b[slot_e]
            m[b] = a[slot_e]
        m[mid_l], m[mid_r] = mid_r, mid_l
        el, er = self.eyeball_ids
        ue = self.eye_unit
        # eyeball vertex mirrored: (x, y, z) -> (-x, y, z): psi -> pi - psi
        key = {tuple(np.round(u * np.array([-1, 1, 1]), 9)): k for k, u in enumerate(ue)}
        perm = np.array([key[tuple(np.round(u, 9))] for u in ue])
        m[el] = er[perm]
        m[er] = el[perm]
        self.mirror = m

    @staticmethod
    def mirror_loop_slot(l, n):
        """Slit loops run corner(-phi end), upper copies, corner, lower copies back; under x -> -x a
        loop of the mirrored slit (same construction) maps slot l to this slot."""
        h = n // 2
        if l == 0:
            return h
        if l == h:
            return 0
        if l < h:
            return h - l
        return n - (l - h)


def _tube_faces(ring_ids, centre_id):
    """Quads between consecutive loops (ring 0 = a hole's boundary) and a fan closing the last."""
    F = []
    for A, B in zip(ring_ids[:-1], ring_ids[1:]):
        n = len(A)
        for k in range(n):
            k1 = (k + 1) % n
            F += [(A[k1], A[k], B[k]), (A[k1], B[k], B[k1])]
    last = ring_ids[-1]
    n = len(last)
    F += [(last[(k + 1) % n], last[k], centre_id) for k in range(n)]
    return np.array(F, np.int64)


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


# ----------------------------------------------------------------------------------------------
# Per-vertex helpers
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


def _template():
    """Everything that does not depend on n_shape / seed (cached)."""
    global _CACHE
    if _CACHE is None:
        B = _Builder()
        V = B.V
        vt, ft, _ = _build_uvs(B)
        s_up, xc = _mouth_side(B, V)
        cols = np.arange(JF - MOUTH_HALF + 1, JF + MOUTH_HALF)
        _CACHE = dict(
            builder=B,
            v_template=V,
            f=B.F,
            vt=vt,
            ft=ft,
            weights=_skinning_weights(B, V, s_up, xc),
            J_regressor=_joint_regressor(B, V),
            expr=_expressions(B, V, s_up),
            lip_ring_upper=B.ida[B.i_m + RING_ROW, cols],
            lip_ring_lower=B.idb[B.i_m - RING_ROW, cols],
            regions=_regions(B, V),
        )
    return _CACHE


_CACHE = None


def make_open_head(n_shape: int = 10, seed: int = 0) -> dict:
    """Build the open head model (FLAME format, see the module docstring).

    Args:
        n_shape: number of identity shape components, 0 .. 300.  The first 16 are designed
            (``SHAPE_NAMES``); further ones are seeded random smooth symmetric bumps.
        seed: seeds only those extra random components.
    Returns:
        dict of numpy arrays: v_template [V,3] float64 (metres), f [F,3] int64, shapedirs
        [V,3,n_shape+16] float64, shape_basis_size int64 scalar (= n_shape), shape_names /
        expression_names (unicode), posedirs [V,3,36] float64 (zeros), J_regressor [5,V] float64,
        kintree_table [2,5] int64, weights [V,5] float64, vt [T,2] float64, ft [F,3] int64,
        lip_ring_upper / lip_ring_lower [15] int64, region_eye_region / region_nose / region_lips /
        region_forehead int64 vertex ids.
    Raises:
        ValueError: n_shape not an integer in 0 .. 300, or seed not a non-negative integer.
    """
    if isinstance(n_shape, bool) or not isinstance(n_shape, (int, np.integer)):
        raise ValueError(f"n_shape: expected an integer, got {n_shape!r}")
    if not 0 <= int(n_shape) <= MAX_SHAPE:
        raise ValueError(f"n_shape: expected 0 .. {MAX_SHAPE}, got {n_shape}")
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or int(seed) < 0:
        raise ValueError(f"seed: expected a non-negative integer, got {seed!r}")
    n_shape = int(n_shape)
    T = _template()
    B, V = T["builder"], T["v_template"]
    shape = _shapes(B, V, n_shape, int(seed))
    names = list(SHAPE_NAMES[:n_shape]) + [f"random_{k}" for k in range(n_shape - len(SHAPE_NAMES))]
    out = {
        "v_template": V.copy(),
        "f": T["f"].copy(),
        "shapedirs": np.concatenate([shape, T["expr"]], axis=2),
        "shape_basis_size": np.array(n_shape, dtype=np.int64),
        "shape_names": np.array(names, dtype=np.str_) if names else np.zeros(0, dtype="<U1"),
        "expression_names": np.array(EXPRESSION_NAMES, dtype=np.str_),
        "posedirs": np.zeros((len(V), 3, 36)),
        "J_regressor": T["J_regressor"].copy(),
        "kintree_table": np.array([[-1, 0, 1, 1, 1], [0, 1, 2, 3, 4]], dtype=np.int64),
        "weights": T["weights"].copy(),
        "vt": T["vt"].copy(),
        "ft": T["ft"].copy(),
        "lip_ring_upper": np.asarray(T["lip_ring_upper"], np.int64).copy(),
        "lip_ring_lower": np.asarray(T["lip_ring_lower"], np.int64).copy(),
    }
    for k, v in T["regions"].items():
        out["region_" + k] = v.copy()
    return out
