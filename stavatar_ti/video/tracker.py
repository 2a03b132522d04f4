"""Fit a FLAME-format head model to 2D landmark tracks of a monocular clip (all frames jointly).

    fit_sequence(landmarks, valid, model, embedding, K, viewmat, *, options=TrackerOptions(),
                 progress=None, init=None) -> TrackResult

Parts: `stavatar_ti.video.landmark_model` (the head model reduced exactly to the embedded landmarks,
the camera projection), `stavatar_ti.video.tracker_optim` (the loss, the rigid initialisation and the
whitened L-BFGS stages), `stavatar_ti.video.neck` (the neck-cut ring: ``neck_line``,
``neck_ring_ids``, also importable from here).

Model: the landmarks are barycentric points on the posed mesh (`LandmarkEmbedding`, optionally with
its calibrated pose-dependent slide), posed by FLAME (Li et al., SIGGRAPH Asia 2017: blendshapes,
joint regression, pose correctives, LBS; `stavatar_ti.flame.lbs`) and projected by the fixed pinhole
camera (OpenCV ``viewmat`` + pixel ``K``).

Only what the landmarks need is evaluated: the model is reduced exactly (LBS is linear in the
vertices) to the embedded landmarks and the joints (`stavatar_ti.video.landmark_model`).

Loss (all valid frames jointly, float32 on the CPU; internal units: degrees, millimetres):
    mean over frames of [ sum_l w_l rho(|proj(x_l) - u_l|^2) + priors + temporal terms ] + shape prior,
with rho the pseudo-Huber (Charbonnier) loss delta^2 (sqrt(1 + r^2/delta^2) - 1) in pixels, w_l the
embedding weights, L2 priors on expr / jaw / eyes (per frame) and shape (once), and first- and
second-difference penalties on rotation, translation, jaw and expression over consecutive valid
frames.  The weights of the priors and temporal terms are scaled by (face size / 100 px)^2, so they
mean the same at any resolution (`TrackerOptions`).

Optimisation, three stages (the usual landmark-tracker schedule: rigid first, then the non-rigid
parameters, then the gaze):
  (a) rigid: ``rotation`` + ``translation`` per frame, initialised per frame by a scaled-orthographic
      fit (affine camera -> orthonormal rows; Tomasi & Kanade, IJCV 1992) with depth z = f / scale;
      landmarks driven by the jaw or the eyes are left out;
  (b) + shared ``shape``, per-frame ``expr`` and ``jaw_pose`` (all landmarks but the irises);
  (c) + ``eyes_pose`` (all landmarks, the irises included).
Each stage runs L-BFGS (strong-Wolfe line search; Nocedal & Wright, Numerical Optimization,
Alg. 7.5) in whitened variables: every ``refresh_every`` iterations the Gauss-Newton blocks of the
loss are formed (per-frame blocks from forward-difference Jacobians, the shape block and their
coupling), and the variables are changed to z with theta_t = theta0_t + L_t^-T z_t - H_tt^-1 H_ts ds,
shape = shape0 + ds, ds = L_S^-T z_s (block LDL^T with the Schur complement of the shape block), which
makes the Gauss-Newton Hessian the identity; the ill-conditioning between depth, identity and
pose (a near-flat valley for landmark fits) then costs L-BFGS few iterations.
``neck_pose`` stays 0: the rigid head pose goes into ``rotation`` (a landmark fit cannot tell the
global from the neck rotation).  Frames with ``valid=False`` (or fewer than 4 finite landmarks) are
not fitted: their parameters are interpolated from the nearest valid frames (slerp for the
rotations, linear otherwise; held constant beyond the first / last valid frame).

Accuracy (tests/test_tracker.py, 256 x 256, open head): exact landmarks + 0.5 px noise, 40 frames
with yaw / pitch up to 25 deg: pose error max 0.86 deg, mean 0.44, reprojection 0.63 px, head
position off by about 2 cm, almost all in depth (the identity-scale / depth ambiguity of a monocular
landmark fit, settled by the priors).  MediaPipe on renders of identities the embedding was not
calibrated on: pose error mean 1.5 deg, 75 % of the frames under 2 deg, worst 3.7 deg, reprojection
0.8-0.9 px (details in `stavatar_ti.video.embedding`).
Speed: 765 frames x 392 landmarks in about 23 s on one shared CPU core (30 ms per frame); with
300 identity columns and 105 landmarks (FLAME-sized) about 34 s.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field

import numpy as np
import torch

from .embedding import LandmarkEmbedding
from .neck import neck_line, neck_ring_ids
from .tracker_optim import _optimise

__all__ = ["TrackerOptions", "TrackResult", "fit_sequence", "neck_line", "neck_ring_ids"]


@dataclass
class TrackerOptions:
    """Settings of `fit_sequence` (defaults in brackets).

    Iterations (L-BFGS iterations per stage; see the module docstring):
        rigid_iters [30], full_iters [90], eyes_iters [30]; refresh_every [30]: re-form the
        Gauss-Newton preconditioner after this many iterations; lbfgs_history [20].
    Data term:
        huber_px [2.0]: delta of the pseudo-Huber loss on the reprojection distance (pixels):
            quadratic below, linear above (robust to detector outliers).
    Priors (px^2 of the data term, which sums over the landmarks, per unit^2; for a face 100 px
    across, scaled by (face size / 100 px)^2):
        w_shape [1.0] on sum(shape^2) (once for the clip); w_expr [1.0] on sum(expr^2) per frame;
        w_jaw [10] and w_eyes [10] per rad^2 of jaw_pose / eyes_pose per frame.
    Temporal smoothness (same units; mean over pairs / triples of consecutive valid frames):
        w_smooth_rotation [2.0], w_accel_rotation [20] per deg^2 of the first / second difference
        of rotation (and jaw_pose); w_smooth_translation [2.0], w_accel_translation [20] per mm^2;
        w_smooth_expr [5.0], w_accel_expr [20] per unit^2.
    Model:
        use_pose_slope [True]: apply the embedding's calibrated pose-dependent slide (if it has one).
        max_shape / max_expr [None]: fit at most this many leading shape / expression columns
            (the others stay 0); None = every column that moves a landmark.
    Device:
        threads [None]: torch intra-op threads during the fit (None = leave as is).
    Raises (on construction): ValueError naming the field for a negative / non-finite value.
    """

    rigid_iters: int = 30
    full_iters: int = 90
    eyes_iters: int = 30
    refresh_every: int = 30
    lbfgs_history: int = 20
    huber_px: float = 2.0
    w_shape: float = 1.0
    w_expr: float = 1.0
    w_jaw: float = 10.0
    w_eyes: float = 10.0
    w_smooth_rotation: float = 2.0
    w_accel_rotation: float = 20.0
    w_smooth_translation: float = 2.0
    w_accel_translation: float = 20.0
    w_smooth_expr: float = 5.0
    w_accel_expr: float = 20.0
    use_pose_slope: bool = True
    max_shape: int | None = None
    max_expr: int | None = None
    threads: int | None = None

    def __post_init__(self):
        for name in ("rigid_iters", "full_iters", "eyes_iters"):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, int) or v < 0:
                raise ValueError(f"TrackerOptions.{name}: expected a non-negative int, got {v!r}")
        for name, v in self.__dict__.items():
            if (name.startswith("w_") or name == "huber_px") and \
                    not (isinstance(v, (int, float)) and math.isfinite(v) and v >= 0):
                raise ValueError(f"TrackerOptions.{name}: expected a finite number >= 0, got {v!r}")
        if isinstance(self.refresh_every, bool) or not isinstance(self.refresh_every, int) or self.refresh_every < 1:
            raise ValueError(f"TrackerOptions.refresh_every: expected a positive int, got {self.refresh_every!r}")
        if isinstance(self.lbfgs_history, bool) or not isinstance(self.lbfgs_history, int) or self.lbfgs_history < 1:
            raise ValueError(f"TrackerOptions.lbfgs_history: expected a positive int, got {self.lbfgs_history!r}")
        if self.huber_px <= 0:
            raise ValueError(f"TrackerOptions.huber_px: expected > 0, got {self.huber_px!r}")


@dataclass
class TrackResult:
    """Per-frame head-model parameters of a clip (numpy float32, radians / metres, FLAME layout).

    Attributes:
        shape [n_shape] (shared by the clip); expr [T,n_expr]; rotation, neck_pose (zeros), jaw_pose
        [T,3]; eyes_pose [T,6] (left eye, right eye); translation [T,3];
        valid bool [T]: frames that were fitted (the others are interpolated);
        reprojection_error float32 [T]: mean landmark reprojection distance (pixels) over the used
            landmarks (embedding weight > 0 and a finite detection), NaN for invalid frames;
        mean_reprojection_error: its mean over the valid frames (pixels);
        seconds: wall time of the fit; stage_losses: final loss of each stage.
    """

    shape: np.ndarray
    expr: np.ndarray
    rotation: np.ndarray
    neck_pose: np.ndarray
    jaw_pose: np.ndarray
    eyes_pose: np.ndarray
    translation: np.ndarray
    valid: np.ndarray
    reprojection_error: np.ndarray
    mean_reprojection_error: float
    seconds: float
    stage_losses: dict = field(default_factory=dict)

    @property
    def frames(self) -> int:
        return int(self.rotation.shape[0])

    def flame_params(self, t: int) -> dict:
        """Frame t in the VHAP ``flame_param/*.npz`` layout: rotation / neck_pose / jaw_pose /
        translation [1,3], eyes_pose [1,6], expr [1,n_expr], shape [n_shape] (numpy float32)."""
        if not 0 <= t < self.frames:
            raise IndexError(f"t: frame {t} outside 0..{self.frames - 1}")
        out = {k: getattr(self, k)[t:t + 1].copy() for k in
               ("rotation", "neck_pose", "jaw_pose", "eyes_pose", "translation", "expr")}
        out["shape"] = self.shape.copy()
        return out

    def torch_params(self, t0: int = 0, t1: int | None = None) -> dict:
        """Keyword arguments of `FlameModel.forward` for frames [t0, t1) (torch float32, CPU)."""
        t1 = self.frames if t1 is None else t1
        out = {k: torch.as_tensor(getattr(self, k)[t0:t1]) for k in
               ("rotation", "neck_pose", "jaw_pose", "eyes_pose", "translation", "expr")}
        out["shape"] = torch.as_tensor(np.repeat(self.shape[None], t1 - t0, 0))
        return out


def _check_inputs(landmarks, valid, model, embedding, K, viewmat):
    from ..flame.model import FlameModel
    if not isinstance(model, FlameModel):
        raise ValueError(f"model: expected a FlameModel, got {type(model).__name__}")
    if not isinstance(embedding, LandmarkEmbedding):
        raise ValueError(f"embedding: expected a LandmarkEmbedding, got {type(embedding).__name__}")
    if len(embedding) == 0:
        raise ValueError("embedding: no landmarks")
    lm = np.asarray(landmarks.detach().cpu() if torch.is_tensor(landmarks) else landmarks, np.float64)
    if lm.ndim != 3 or lm.shape[2] not in (2, 3):
        raise ValueError(f"landmarks: expected [T,L,2] pixels (or [T,L,3], z ignored), got {list(lm.shape)}")
    lm = lm[..., :2]
    T = lm.shape[0]
    if T == 0:
        raise ValueError("landmarks: no frames")
    need = int(embedding.mp_index.max()) + 1
    if lm.shape[1] < need:
        raise ValueError(f"landmarks: {lm.shape[1]} landmarks per frame, the embedding uses index {need - 1} "
                         f"(MediaPipe with refine_landmarks=True gives 478)")
    va = np.asarray(valid.detach().cpu() if torch.is_tensor(valid) else valid)
    if va.shape != (T,) or va.dtype != np.bool_:
        raise ValueError(f"valid: expected bool [T] = [{T}], got {va.dtype} {list(va.shape)}")
    Kn = np.asarray(K.detach().cpu() if torch.is_tensor(K) else K, np.float64)
    if Kn.shape != (3, 3) or not np.isfinite(Kn).all() or Kn[0, 0] <= 0 or Kn[1, 1] <= 0:
        raise ValueError(f"K: expected finite pixel intrinsics [3,3] with fx, fy > 0, got {list(Kn.shape)}")
    Vm = np.asarray(viewmat.detach().cpu() if torch.is_tensor(viewmat) else viewmat, np.float64)
    if Vm.shape != (4, 4) or not np.isfinite(Vm).all() or not np.allclose(Vm[3], [0, 0, 0, 1]):
        raise ValueError(f"viewmat: expected a finite [4,4] world->camera matrix with last row (0,0,0,1), "
                         f"got {list(Vm.shape)}")
    return lm, va.copy(), Kn, Vm


def _interp_invalid(values: np.ndarray, valid: np.ndarray, rotation: bool = False) -> np.ndarray:
    """Fill rows of `values` [T,D] where not `valid` from the valid neighbours (slerp on each
    3-vector axis-angle block when `rotation`, linear otherwise; constant beyond the ends)."""
    T = len(valid)
    idx = np.flatnonzero(valid)
    out = values.copy()
    miss = np.flatnonzero(~valid)
    if len(miss) == 0 or len(idx) == 0:
        return out
    if not rotation or len(idx) == 1:
        for d in range(values.shape[1]):
            out[miss, d] = np.interp(miss, idx, values[idx, d])
        return out
    from scipy.spatial.transform import Rotation, Slerp
    tq = np.clip(miss, idx[0], idx[-1]).astype(np.float64)
    for b in range(0, values.shape[1], 3):
        slerp = Slerp(idx.astype(np.float64), Rotation.from_rotvec(values[idx, b:b + 3]))
        out[miss, b:b + 3] = slerp(tq).as_rotvec()
    return out[:T]


def fit_sequence(landmarks, valid, model, embedding: LandmarkEmbedding, K, viewmat, *,
                 options: TrackerOptions | None = None, progress=None, init: TrackResult | None = None) -> TrackResult:
    """Fit shape (shared), expression, jaw, eyes and rigid head pose of every frame to 2D landmarks.

    Args:
        landmarks: [T,L_mp,2] (or [T,L_mp,3]; z ignored) float pixel positions of the MediaPipe
            landmarks (x right, y down, pixel centres at +0.5: x = x_norm * W); NaN entries are
            treated as missing. L_mp must cover ``embedding.mp_index`` (478 with irises).
        valid: bool [T]: frames with a detected face. Invalid frames are not fitted but interpolated.
        model: `FlameModel` (FLAME or the open head); `embedding`: its `LandmarkEmbedding`.
        K: [3,3] pixel intrinsics; viewmat: [4,4] OpenCV world->camera (fixed camera), numpy or torch.
        options: `TrackerOptions` (weights, iterations); progress: optional callable(done, total),
            called after every evaluation of the loss (non-decreasing; ends with done == total).
        init: optional `TrackResult` of the same clip to start from (a warm start, e.g. to refine
            with other options) instead of the scaled-orthographic initialisation.
    Returns:
        TrackResult (numpy float32 parameters, per-frame reprojection error in pixels).
    Raises:
        ValueError("no face found in any frame") when `valid` has no True entry (or every valid
        frame lacks finite landmarks); ValueError naming the argument for a wrong shape / type;
        RuntimeError if the optimisation diverges (non-finite parameters).
    Math: see the module docstring (FLAME LBS reduced exactly to the landmarks; pseudo-Huber data
    term, Charbonnier et al. 1994 / Hartley & Zisserman 2nd ed. Sec. A6.8; Gauss-Newton-whitened
    L-BFGS, Nocedal & Wright Ch. 7 and 10).
    """
    t_start = time.time()
    opt = options if options is not None else TrackerOptions()
    if not isinstance(opt, TrackerOptions):
        raise ValueError(f"options: expected TrackerOptions, got {type(opt).__name__}")
    lm, valid, Kn, Vm = _check_inputs(landmarks, valid, model, embedding, K, viewmat)
    T = lm.shape[0]
    obs_all = lm[:, embedding.mp_index]                                                  # [T,L,2]
    finite = np.isfinite(obs_all).all(-1)
    valid = valid & (finite.sum(1) >= 4)
    if not valid.any():
        raise ValueError("no face found in any frame")
    start = None
    if init is not None:
        if not isinstance(init, TrackResult) or init.frames != T or init.shape.shape != (model.n_shape,) \
                or init.expr.shape != (T, model.n_expr):
            raise ValueError(f"init: expected a TrackResult of {T} frames for this model")
        start = {k: getattr(init, k)[valid] for k in ("rotation", "translation", "jaw_pose", "eyes_pose", "expr")}
        start["shape"] = init.shape
    old_threads = torch.get_num_threads()
    if opt.threads:
        torch.set_num_threads(int(opt.threads))
    try:
        with torch.enable_grad():
            fitted, losses = _optimise(obs_all[valid], finite[valid], valid, model, embedding, Kn, Vm, opt, progress,
                                       start)
    finally:
        if opt.threads:
            torch.set_num_threads(old_threads)
    rm, shape, err_valid = fitted
    err = np.full(T, np.nan, np.float32)
    err[valid] = err_valid
    out = {}
    for k, v in rm.items():
        full = np.zeros((T, v.shape[1]))
        full[valid] = v
        out[k] = _interp_invalid(full, valid, rotation=k in ("rotation", "jaw_pose", "eyes_pose")).astype(np.float32)
    return TrackResult(shape=shape.astype(np.float32), expr=out["expr"], rotation=out["rotation"],
                       neck_pose=np.zeros((T, 3), np.float32), jaw_pose=out["jaw_pose"], eyes_pose=out["eyes_pose"],
                       translation=out["translation"], valid=valid, reprojection_error=err,
                       mean_reprojection_error=float(np.mean(err_valid)), seconds=time.time() - t_start,
                       stage_losses=losses)
