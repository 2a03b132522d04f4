"""Motion of a synthetic talking head: the true driving signal, the non-rigid deformation outside
the blendshape basis, and the simulated tracker that turns both into the written FLAME parameters.

    make_motion(frames, seed=0, expression_names=EXPRESSION_NAMES, n_expr=100, n_shape=10) -> Motion
    mouth_open(motion) -> bool [T]                      # jaw opened past MOUTH_OPEN_JAW
    make_nonrigid_fields(head, verts, landmarks, seed) -> [K, V0, 3] metres per unit coefficient
    simulate_tracker(motion, fields, basis, seed, noise=TrackerNoise()) -> TrackedParams

Signals (25 fps; every one is smooth: sums of low-frequency sinusoids, smoothed impulse trains and
plateau episodes with smoothstep ramps):

* head: yaw within +-25 deg, pitch +-12 deg, roll +-6 deg (sum-of-sinusoid amplitudes are bounded,
  so the limits hold for every frame) plus small nods while talking, split 40 / 60 between the
  global ``rotation`` and the ``neck_pose``; translation drifts by a few mm.
* talking: speech segments (2-6 s) and pauses; syllables every 0.15-0.3 s open the jaw by up to
  ~0.13 rad and drive lips_part / pucker / mouth_stretch / lip_press visemes.
* "wide open" events (an "ah", a laugh): jaw 0.26-0.36 rad on plateaus whose total length is
  ``open_fraction`` (15 %) of the sequence - the only frames with jaw > MOUTH_OPEN_JAW (0.2 rad), so
  the wide-open mouth is a transient, rarely seen state.
* blinks every 2.6-4.2 s (both eyes, 7 frames: 2 closing, 1 closed, 4 opening), gaze saccades.
* smiles, brow raises, frowns, squints, cheek puffs, sneers, mouth shifts: plateau episodes.

The tracker simulation: the true per-vertex offset of frame t is B e_t + D_t (B the expression
blendshapes, D_t = sum_k c_tk F_k the non-rigid fields); a tracker fitting the model can only
return its least-squares projection e_t + pinv(B) D_t, to which we add white tracking noise
(pose 0.5 deg, jaw 0.5 deg, eyes 1 deg, translation 0.5 mm, expression 0.02, identity 0.03).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from ..flame.open_head import EXPRESSION_NAMES

__all__ = ["Motion", "TrackedParams", "TrackerNoise", "make_motion", "mouth_open", "make_nonrigid_fields",
           "simulate_tracker", "FPS", "MOUTH_OPEN_JAW", "POSE_KEYS", "NONRIGID_FIELDS"]

FPS = 25.0
MOUTH_OPEN_JAW = 0.20        # rad: jaw_pose[0] above this is a "wide open" mouth
POSE_KEYS = ("rotation", "neck_pose", "jaw_pose", "eyes_pose", "translation")
NONRIGID_FIELDS = 8
DEG = np.pi / 180.0


@dataclass
class Motion:
    """The true driving signal of a sequence (numpy float64).

    expr [T,n_expr] (the model's expression columns), rotation / neck_pose / jaw_pose [T,3],
    eyes_pose [T,6] (left eye, right eye), translation [T,3] (metres, before the head-centring
    offset), shape [n_shape] identity, named: dict name -> [T] (the semantic channels: every
    expression name plus "jaw", "open" (wide-open envelope), "yaw", "pitch", "roll", "talk", "blink"),
    nonrigid [T,K] coefficients
    of the non-rigid fields, fps.
    """

    expr: np.ndarray
    rotation: np.ndarray
    neck_pose: np.ndarray
    jaw_pose: np.ndarray
    eyes_pose: np.ndarray
    translation: np.ndarray
    shape: np.ndarray
    named: dict
    nonrigid: np.ndarray
    fps: float = FPS

    @property
    def frames(self) -> int:
        return int(self.expr.shape[0])

    def params(self) -> dict:
        """Per-frame parameter arrays (rotation, neck_pose, jaw_pose, eyes_pose, translation, expr)."""
        return {k: getattr(self, k) for k in POSE_KEYS + ("expr",)}


@dataclass
class TrackerNoise:
    """Standard deviations of the simulated tracking noise (white, per frame)."""

    pose_deg: float = 0.5          # rotation and neck_pose, per axis
    jaw_deg: float = 0.5
    eyes_deg: float = 1.0
    translation: float = 0.0005    # metres
    expr: float = 0.02             # expression coefficients (used columns only)
    shape: float = 0.03            # identity coefficients (one draw for the whole sequence)


@dataclass
class TrackedParams:
    """What the simulated tracker writes: ``params`` dict of [T,...] arrays (rotation, neck_pose,
    jaw_pose, eyes_pose, translation, expr) + ``shape`` [n_shape]; ``projection`` [T,n_expr] is the
    least-squares expression share of the non-rigid offsets (pinv(B) D_t); ``noise`` the same keys
    as ``params`` (+ "shape"): the noise that was added."""

    params: dict
    shape: np.ndarray
    projection: np.ndarray
    noise: dict = field(default_factory=dict)


# ----------------------------------------------------------------------------------------------
# signal building blocks

def _smoothstep(a, b, x):
    t = np.clip((np.asarray(x, np.float64) - a) / (b - a), 0.0, 1.0)
    return t * t * (3.0 - 2.0 * t)


def _sines(t, rng, n, f_lo, f_hi):
    """Sum of n sinusoids with random frequencies in [f_lo, f_hi] Hz; |value| <= 1 for every t."""
    f = rng.uniform(f_lo, f_hi, n)
    ph = rng.uniform(0, 2 * np.pi, n)
    a = rng.uniform(0.5, 1.0, n) / np.sqrt(f / f_lo)
    return (a[:, None] * np.sin(2 * np.pi * f[:, None] * t[None] + ph[:, None])).sum(0) / a.sum()


def _plateau(T, start, length, ramp):
    """1 on [start, start+length), smoothstep ramps of `ramp` frames outside it (frames as floats)."""
    i = np.arange(T, dtype=np.float64)
    up = _smoothstep(start - ramp, start, i)
    down = _smoothstep(start + length + ramp, start + length, i)
    return np.minimum(up, down)


def _episodes(T, rng, fps, every_s, dur_s, amp, ramp_s=0.3):
    """Plateau episodes: gaps ~ exponential(mean every_s), durations uniform in dur_s, amplitudes
    uniform in amp; overlapping episodes take the max."""
    out = np.zeros(T)
    t = rng.exponential(every_s) * 0.5 * fps
    while t < T:
        d = rng.uniform(*dur_s) * fps
        out = np.maximum(out, rng.uniform(*amp) * _plateau(T, t, d, ramp_s * fps))
        t += d + rng.exponential(every_s) * fps
    return out


def _open_events(T, rng, fps, fraction, ramp):
    """Start / length of the wide-open plateaus: their lengths (+ one ramp) sum to fraction * T,
    durations near 0.6-1.6 s, spread over the sequence by random gaps."""
    total = fraction * T
    if total < 3:
        return []
    n = max(1, int(round(total / (1.1 * fps))))
    lens = rng.uniform(0.6, 1.6, n)
    lens = lens / lens.sum() * total
    free = T - lens.sum() - 2 * ramp * n - 2
    if free <= 0:
        return [(1.0 + ramp, total - ramp)]
    gaps = rng.dirichlet(np.ones(n + 1)) * free
    out, t = [], 1.0 + gaps[0]
    for k in range(n):
        out.append((t + ramp, lens[k] - ramp))
        t += lens[k] + 2 * ramp + gaps[k + 1]
    return out


def _axis_angle_euler(pitch, yaw, roll):
    """[T,3] axis-angle of R = Ry(yaw) Rx(pitch) Rz(roll) (column vectors)."""
    T = len(pitch)
    out = np.zeros((T, 3))
    for i in range(T):
        cx, sx = np.cos(pitch[i]), np.sin(pitch[i])
        cy, sy = np.cos(yaw[i]), np.sin(yaw[i])
        cz, sz = np.cos(roll[i]), np.sin(roll[i])
        Rx = np.array([[1, 0, 0], [0, cx, -sx], [0, sx, cx]])
        Ry = np.array([[cy, 0, sy], [0, 1, 0], [-sy, 0, cy]])
        Rz = np.array([[cz, -sz, 0], [sz, cz, 0], [0, 0, 1]])
        out[i] = _rotvec(Ry @ Rx @ Rz)
    return out


def _rotvec(R):
    c = np.clip((np.trace(R) - 1) / 2, -1.0, 1.0)
    a = np.arccos(c)
    if a < 1e-9:
        return np.zeros(3)
    v = np.array([R[2, 1] - R[1, 2], R[0, 2] - R[2, 0], R[1, 0] - R[0, 1]])
    return v / (2 * np.sin(a)) * a


# ----------------------------------------------------------------------------------------------

def make_motion(frames: int, seed: int = 0, expression_names=EXPRESSION_NAMES, n_expr: int = 100,
                n_shape: int = 10, fps: float = FPS, open_fraction: float = 0.15, max_yaw_deg: float = 25.0,
                n_nonrigid: int = NONRIGID_FIELDS) -> Motion:
    """The true driving signal of a `frames`-long sequence (deterministic from `seed`).

    Args:
        frames: number of frames T >= 1.
        seed: random seed.
        expression_names: names of the model's first expression columns; channels with these names
            drive them.  Empty (a FLAME PCA basis): the first 10 columns get smooth generic signals.
        n_expr: expression columns; n_shape: identity coefficients drawn (the rest stay 0).
        fps: frame rate; open_fraction: share of frames with the mouth wide open.
        max_yaw_deg: head yaw bound (pitch is bounded by half of it, roll by a quarter).
    Returns:
        Motion.
    """
    if isinstance(frames, bool) or not isinstance(frames, (int, np.integer)) or frames < 1:
        raise ValueError(f"frames: expected a positive int, got {frames!r}")
    T = int(frames)
    rng = np.random.default_rng([int(seed), 101])
    t = np.arange(T) / fps
    ch: dict = {}

    # ---------------------------------------------------------------- talking
    talk = np.zeros(T)
    pos = rng.uniform(0.0, 1.0) * fps
    while pos < T:
        d = rng.uniform(2.0, 6.0) * fps
        talk = np.maximum(talk, _plateau(T, pos, d, 0.15 * fps))
        pos += d + rng.uniform(0.5, 2.0) * fps
    jaw_talk = np.zeros(T)
    viseme = {k: np.zeros(T) for k in ("lips_part", "pucker", "mouth_stretch", "lip_press")}
    pos = rng.uniform(0, 0.2) * fps
    kernel_cache = {}
    while pos < T:
        i = int(pos)
        w = rng.uniform(0.12, 0.22) * fps
        key = round(w, 1)
        if key not in kernel_cache:
            h = int(np.ceil(w))
            k = np.arange(-h, h + 1)
            kernel_cache[key] = (k, 0.5 + 0.5 * np.cos(np.pi * np.clip(k / w, -1, 1)))
        k, ker = kernel_cache[key]
        idx = i + k
        ok = (idx >= 0) & (idx < T)
        amp = rng.uniform(0.03, 0.13) * talk[min(i, T - 1)]
        jaw_talk[idx[ok]] = np.maximum(jaw_talk[idx[ok]], amp * ker[ok])
        v = rng.choice(4, p=[0.45, 0.2, 0.2, 0.15])
        name = ("lips_part", "pucker", "mouth_stretch", "lip_press")[v]
        va = rng.uniform(0.3, 0.8) * talk[min(i, T - 1)]
        viseme[name][idx[ok]] = np.maximum(viseme[name][idx[ok]], va * ker[ok])
        pos += rng.uniform(0.15, 0.30) * fps
    ch["talk"] = talk

    # ---------------------------------------------------------------- wide-open events
    ramp = 0.24 * fps
    open_env = np.zeros(T)
    open_peak = np.zeros(T)
    kinds = np.zeros(T)
    for start, length in _open_events(T, rng, fps, open_fraction, ramp):
        e = _plateau(T, start, length, ramp)
        peak = rng.uniform(0.26, 0.36)
        take = e > open_env
        open_env = np.maximum(open_env, e)
        open_peak[take] = peak
        kinds[take] = rng.integers(2)          # 0: "ah" (stretch + brows), 1: laugh (smile)
    jaw = jaw_talk * (1 - open_env) + open_peak * open_env
    # talking alone stays below MOUTH_OPEN_JAW (syllables <= 0.13 rad, + <= 0.02 rad idle motion)
    jaw = np.maximum(jaw, 0.0) + 0.01 * (1 + _sines(t, rng, 3, 0.1, 0.4))
    ch["jaw"] = jaw
    ch["open"] = open_env

    # ---------------------------------------------------------------- expressions
    smile = _episodes(T, rng, fps, 9.0, (1.5, 4.0), (0.35, 0.9)) + 0.06 * (1 + _sines(t, rng, 3, 0.05, 0.2))
    smile = np.maximum(smile, open_env * (kinds == 1) * 0.9)
    brow_raise = _episodes(T, rng, fps, 5.0, (0.4, 1.5), (0.35, 0.95), 0.15) * (0.3 + 0.7 * talk)
    brow_raise = np.maximum(brow_raise, open_env * (kinds == 0) * 0.7)
    frown = _episodes(T, rng, fps, 14.0, (0.8, 2.5), (0.2, 0.6))
    brow_lower = _episodes(T, rng, fps, 12.0, (0.6, 2.0), (0.2, 0.6))
    squint = 0.35 * smile + _episodes(T, rng, fps, 15.0, (0.5, 1.5), (0.2, 0.5))
    cheek_puff = _episodes(T, rng, fps, 25.0, (0.6, 1.2), (0.3, 0.7)) * (1 - talk)
    sneer = _episodes(T, rng, fps, 20.0, (0.4, 1.0), (0.2, 0.5))
    eye_wide = 0.4 * brow_raise + _episodes(T, rng, fps, 20.0, (0.4, 1.0), (0.2, 0.5))
    shift = _sines(t, rng, 3, 0.05, 0.3) * 0.25
    mouth_stretch = viseme["mouth_stretch"] + open_env * (kinds == 0) * 0.6
    lips_part = np.clip(viseme["lips_part"] + 2.5 * jaw_talk, 0, 1) * (1 - 0.5 * open_env) + 0.5 * open_env
    # blinks
    blink = np.zeros(T)
    prof = np.array([0.45, 0.9, 1.0, 0.8, 0.5, 0.22, 0.06])
    pos = rng.uniform(0.5, 3.0) * fps
    while pos < T:
        i = int(pos)
        a = 1.0 if rng.random() < 0.85 else rng.uniform(0.5, 0.8)
        for k, p in enumerate(prof):
            if 0 <= i + k < T:
                blink[i + k] = max(blink[i + k], a * p)
        pos += rng.uniform(2.6, 4.2) * fps
    ch["blink"] = blink
    named = dict(smile=smile, frown=frown, pucker=viseme["pucker"], blink_left=blink, blink_right=blink.copy(),
                 brow_raise=brow_raise, brow_lower=brow_lower, cheek_puff=cheek_puff, lip_press=viseme["lip_press"],
                 mouth_stretch=mouth_stretch, squint=squint, sneer=sneer, eye_wide=eye_wide, lips_part=lips_part,
                 mouth_left=np.clip(shift, 0, None), mouth_right=np.clip(-shift, 0, None))
    for k in named:
        named[k] = np.clip(named[k], 0.0, 1.0)
    ch.update(named)

    expr = np.zeros((T, n_expr))
    names = list(expression_names)
    if names:
        for j, name in enumerate(names[:n_expr]):
            if name in named:
                expr[:, j] = named[name]
    else:  # an unnamed PCA basis (FLAME): smooth generic signals on the first components
        for j in range(min(10, n_expr)):
            expr[:, j] = (1.2 / (1 + 0.3 * j)) * _sines(t, rng, 4, 0.05, 0.5)
        expr[:, 0] += 3.0 * jaw_talk

    # ---------------------------------------------------------------- head, eyes, translation
    yaw = max_yaw_deg * DEG * _sines(t, rng, 4, 0.03, 0.16)
    pitch = 0.5 * max_yaw_deg * DEG * (0.8 * _sines(t, rng, 3, 0.04, 0.2) + 0.2 * _sines(t, rng, 3, 0.4, 1.2) * talk)
    roll = 0.25 * max_yaw_deg * DEG * _sines(t, rng, 3, 0.03, 0.15)
    ch.update(yaw=yaw, pitch=pitch, roll=roll)
    head = _axis_angle_euler(pitch, yaw, roll)
    rotation = 0.4 * head
    neck_pose = 0.6 * head
    jaw_pose = np.stack([jaw, 0.012 * _sines(t, rng, 2, 0.2, 0.8), np.zeros(T)], 1)
    # gaze: saccades between fixations, partly compensating the head yaw (people look at the camera)
    gy, gp = np.zeros(T), np.zeros(T)
    pos, cur = 0.0, np.zeros(2)
    while pos < T:
        nxt = np.array([rng.uniform(-0.14, 0.14), rng.uniform(-0.07, 0.07)])
        i = int(pos)
        s = _smoothstep(i, i + 2, np.arange(T))
        gy = np.where(np.arange(T) >= i, cur[0] + (nxt[0] - cur[0]) * s, gy)
        gp = np.where(np.arange(T) >= i, cur[1] + (nxt[1] - cur[1]) * s, gp)
        cur = nxt
        pos += rng.uniform(0.5, 2.5) * fps
    gy = gy - 0.5 * yaw
    gp = gp - 0.3 * pitch
    eye = np.stack([gp, gy, np.zeros(T)], 1)
    eyes_pose = np.concatenate([eye, eye], 1)
    translation = np.stack([0.006 * _sines(t, rng, 3, 0.03, 0.15), 0.004 * _sines(t, rng, 3, 0.03, 0.2),
                            0.008 * _sines(t, rng, 3, 0.02, 0.1)], 1)
    shape = np.zeros(n_shape)
    shape[: min(n_shape, 10)] = np.clip(rng.normal(0, 0.35, min(n_shape, 10)), -0.9, 0.9)

    # ---------------------------------------------------------------- non-rigid coefficients
    K = int(n_nonrigid)
    c = np.zeros((T, K))
    base = [smile ** 2, brow_raise, jaw / 0.35, 0.6 * lips_part + 0.6 * mouth_stretch]
    for k in range(min(K, 4)):
        c[:, k] = base[k]
    mix_names = sorted(named)
    for k in range(4, K):
        wts = rng.normal(0, 0.5, len(mix_names))
        c[:, k] = sum(w * named[n] for w, n in zip(wts, mix_names)) + 0.3 * _sines(t, rng, 3, 0.05, 0.4)
    return Motion(expr=expr, rotation=rotation, neck_pose=neck_pose, jaw_pose=jaw_pose, eyes_pose=eyes_pose,
                  translation=translation, shape=shape, named=ch, nonrigid=c, fps=fps)


def mouth_open(motion: Motion) -> np.ndarray:
    """bool [T]: frames whose jaw opening exceeds MOUTH_OPEN_JAW (the wide-open transient)."""
    return motion.jaw_pose[:, 0] > MOUTH_OPEN_JAW


# ----------------------------------------------------------------------------------------------

def make_nonrigid_fields(head, verts: np.ndarray, landmarks: dict, seed: int = 0,
                         n_fields: int = NONRIGID_FIELDS) -> np.ndarray:
    """[K, V0, 3] smooth displacement fields (metres per unit coefficient) on the template vertices.

    Field 0: cheeks bulge forward and up (driven by smile^2, 2.5 mm); 1: forehead skin bunches up
    (brow raise, 1.5 mm); 2: soft tissue under the chin and jaw (jaw opening, 2 mm); 3: lips thin and
    flatten (lips part / mouth stretch, 1.2 mm); 4..K-1: sums of three random Gaussian bumps
    (radius 15-35 mm, 1-2 mm) on the face.  Eyeballs and the lids near them are left alone (a field
    there would push the lids through the eyeballs).
    """
    rng = np.random.default_rng([int(seed), 303])
    V0 = head.n_template
    P = verts[:V0]
    nrm = head.vertex_normals(verts)[:V0]
    sc = landmarks["scale"]
    eyes = landmarks["eye_centres"]
    r_eye = landmarks["eye_radius"]
    keep = np.ones(V0)
    for c in eyes:
        d = np.linalg.norm(P - c, axis=1)
        keep *= _smoothstep(1.2 * r_eye, 2.0 * r_eye, d)
    for ids in head.eye_ids:
        keep[ids[ids < V0]] = 0.0
    ym, zm, xe, ye = landmarks["mouth_y"], landmarks["mouth_z"], abs(eyes[0, 0]), eyes[0, 1]

    def bump(c, r):
        return np.exp(-0.5 * np.sum((P - c) ** 2, 1) / r ** 2)[:, None]

    up = np.array([0.0, 1.0, 0.0])
    F = np.zeros((n_fields, V0, 3))
    cheeks = sum(bump(np.array([s * (xe + 0.006 * sc), ym + 0.022 * sc, zm - 0.02 * sc]), 0.014 * sc) for s in (1, -1))
    F[0] = cheeks * (0.8 * nrm + 0.6 * up)
    F[1] = bump(np.array([0.0, ye + 0.045 * sc, zm - 0.01 * sc]), 0.022 * sc) * (0.3 * nrm + 1.0 * up)
    chin = bump(np.array([0.0, landmarks["chin_y"] - 0.005 * sc, zm - 0.04 * sc]), 0.02 * sc)
    F[2] = chin * (0.7 * nrm - 0.5 * up)
    F[3] = -bump(np.array([0.0, ym, zm]), 0.009 * sc) * nrm
    amps = [0.0025, 0.0015, 0.002, 0.0012]
    face = np.flatnonzero((P[:, 2] > eyes[0, 2] - 0.03 * sc) & (P[:, 1] > landmarks["chin_y"])
                          & (P[:, 1] < ye + 0.05 * sc) & (keep > 0.5))
    for k in range(4, n_fields):
        f = np.zeros((V0, 3))
        for _ in range(3):
            c = P[rng.choice(face)]
            r = rng.uniform(0.015, 0.035) * sc
            dvec = rng.normal(0, 1, 3) * 0.5
            j = np.argmin(np.linalg.norm(P - c, axis=1))
            dvec += nrm[j] * rng.choice([-1.0, 1.0])
            f += bump(c, r) * dvec / np.linalg.norm(dvec)
        F[k] = f
        amps.append(rng.uniform(0.001, 0.002))
    for k in range(n_fields):
        F[k] *= keep[:, None]
        m = np.linalg.norm(F[k], axis=1).max()
        if m > 0:
            F[k] *= amps[k] / m
    return F


def _fit_mask(head) -> np.ndarray:
    """Template vertices the simulated tracker fits (everything but the eyeballs)."""
    m = np.ones(head.n_template, bool)
    for ids in head.eye_ids:
        m[ids[ids < head.n_template]] = False
    return m


def projection_operator(head, fields: np.ndarray) -> np.ndarray:
    """[K, n_expr]: least-squares expression coefficients of each non-rigid field (pinv(B) F_k),
    over the used expression columns and the non-eyeball template vertices."""
    B = head.expression_basis()                     # [V0,3,E]
    mask = _fit_mask(head)
    Bm = B[mask].reshape(-1, B.shape[-1])
    used = np.abs(Bm).max(0) > 0
    out = np.zeros((fields.shape[0], B.shape[-1]))
    if used.any():
        Fm = fields[:, mask].reshape(fields.shape[0], -1)
        sol, *_ = np.linalg.lstsq(Bm[:, used], Fm.T, rcond=None)
        out[:, used] = sol.T
    return out


def simulate_tracker(motion: Motion, head, fields: np.ndarray, seed: int = 0,
                     noise: TrackerNoise | None = None) -> TrackedParams:
    """Parameters a tracker would report for `motion`: expression = truth + least-squares projection
    of the non-rigid offsets + noise; poses, translation and identity = truth + noise.  Expression
    columns without any blendshape (zero columns of the basis) stay exactly 0."""
    noise = noise or TrackerNoise()
    rng = np.random.default_rng([int(seed), 404])
    T = motion.frames
    Pk = projection_operator(head, fields)           # [K,E]
    proj = motion.nonrigid @ Pk                     # [T,E]
    used = np.abs(head.expression_basis()).max((0, 1)) > 0
    n = {
        "rotation": rng.normal(0, noise.pose_deg * DEG, (T, 3)),
        "neck_pose": rng.normal(0, noise.pose_deg * DEG, (T, 3)),
        "jaw_pose": rng.normal(0, noise.jaw_deg * DEG, (T, 3)),
        "eyes_pose": np.repeat(rng.normal(0, noise.eyes_deg * DEG, (T, 3)), 2, axis=0).reshape(T, 6),
        "translation": rng.normal(0, noise.translation, (T, 3)),
        "expr": rng.normal(0, noise.expr, (T, motion.expr.shape[1])) * used[None],
        "shape": rng.normal(0, noise.shape, motion.shape.shape),
    }
    params = {k: getattr(motion, k) + n[k] for k in POSE_KEYS}
    params["expr"] = (motion.expr + proj) * used[None] + n["expr"]
    return TrackedParams(params=params, shape=motion.shape + n["shape"], projection=proj, noise=n)
