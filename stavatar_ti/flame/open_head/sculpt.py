"""The open head's skin as a signed-distance sculpture, and ray casting onto it.

The head's landmarks (metres, FLAME axes), the SDF primitives (smooth union / intersection,
ellipsoids, tapered capsules, compact bumps), the sculpture `_sdf` (cranium, face, jaw, neck, nose,
ears, eye sockets and lid spheres, lips as a displacement) and `_raycast`, which finds the outermost
hit of a ray on it.
"""

from __future__ import annotations

import numpy as np


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
