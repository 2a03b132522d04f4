"""Fit a FLAME-format head model to 2D landmark tracks of a monocular clip (all frames jointly).

    fit_sequence(landmarks, valid, model, embedding, K, viewmat, *, options=TrackerOptions(),
                 progress=None, init=None) -> TrackResult
    neck_line(vertices, model) -> [N,3] / [B,N,3]        # the neck-cut ring of the posed mesh
    neck_ring_ids(model) -> int64 [N]                    # its vertex ids

Model: the landmarks are barycentric points on the posed mesh (`LandmarkEmbedding`, optionally with
its calibrated pose-dependent slide), posed by FLAME (Li et al., SIGGRAPH Asia 2017: blendshapes,
joint regression, pose correctives, LBS; `stavatar_ti.flame.lbs`) and projected by the fixed pinhole
camera (OpenCV ``viewmat`` + pixel ``K``).

Only what the landmarks need is evaluated.  LBS is linear in the vertices, so a landmark
``x_l = sum_k b_lk sum_j w_kj A_j [v_k; 1]`` equals ``sum_j A_j [P_lj; c_lj]`` with the per-joint
blended rest points ``P_lj = sum_k b_lk w_kj v_k`` and weights ``c_lj = sum_k b_lk w_kj`` (exact,
not an approximation).  ``P_lj`` is linear in shape / expression / pose correctives, so the model
is pre-reduced to a basis per (landmark, joint) pair with a non-zero weight (about 1.1 pairs per
landmark) and the joints to their own [5,3,K] basis; blendshape columns that move neither are
skipped (the open head has 10 identity and 16 expression columns of the 300 / 100).

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

from ..geometry import axis_angle_to_matrix
from .embedding import LandmarkEmbedding

__all__ = ["TrackerOptions", "TrackResult", "fit_sequence", "neck_line", "neck_ring_ids"]

EYE_JOINTS = (3, 4)
JAW_JOINT = 2


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


# ----------------------------------------------------------------------------------------------
# the reduced model

FLAME_PARENTS = [-1, 0, 1, 1, 1]


def _rotate(R: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    """R [T,3,3] applied to v [T,3,n] (component-major layout: contiguous rows, fast on the CPU)."""
    return R[:, :, 0, None] * v[:, 0:1] + R[:, :, 1, None] * v[:, 1:2] + R[:, :, 2, None] * v[:, 2:3]


class _LandmarkModel:
    """FLAME reduced to the embedded landmarks, with neck_pose = 0 (exact; see the module docstring).

    With the kinematic tree of FLAME (root -> neck -> jaw, eyes) and an identity neck rotation, every
    joint transform is A_j p = R0 Rloc_j (p - J_j) + R0 (J_j - J0) + J0 (Rloc = I for root / neck,
    R(jaw_pose), R(eye) otherwise), so a landmark is
        x_l = translation + J0 + R0 y_l,
        y_l = sum over pairs (l,j): P_lj - c_lj J0 (root, neck) or Rloc_j (P_lj - c_lj J_j) + c_lj (J_j - J0).
    """

    def __init__(self, model, embedding: LandmarkEmbedding, max_shape, max_expr, viewmat=None):
        f64 = torch.float64
        if list(model.parents) != FLAME_PARENTS:
            raise ValueError(f"model: expected FLAME's kinematic tree (parents {FLAME_PARENTS}), got {list(model.parents)}")
        faces = model.faces.detach().cpu()
        if len(embedding) and int(embedding.face.max()) >= faces.shape[0]:
            raise ValueError(f"embedding: face id {int(embedding.face.max())} outside the model's "
                             f"{faces.shape[0]} faces (an embedding made for another model?)")
        tri = faces[torch.as_tensor(embedding.face)]                                     # [L,3]
        bary = torch.as_tensor(embedding.bary, dtype=f64)                                # [L,3]
        W = model.lbs_weights.detach().cpu().to(f64)[tri]                                # [L,3,J]
        c = (bary[..., None] * W).sum(1)                                                 # [L,J]
        vt = model.v_template.detach().cpu().to(f64)
        sd = model.shapedirs.detach().cpu().to(f64)                                      # [V,3,K]
        V = vt.shape[0]
        pd = model.posedirs.detach().cpu().to(f64).reshape(-1, V, 3)                     # [P,V,3]
        Jr = model.J_regressor.detach().cpu().to(f64)
        # per (landmark, joint) pair with a non-zero weight: blended rest point and its bases
        pl, pj = torch.nonzero(c > 1e-8, as_tuple=True)
        bw = bary[pl] * W[pl, :, pj]                                                     # [N,3] b_k w_kj
        vid = tri[pl]                                                                    # [N,3]
        P0 = (bw[..., None] * vt[vid]).sum(1)                                            # [N,3]
        D = torch.einsum("nk,nkcq->ncq", bw, sd[vid])                                    # [N,3,K]
        Dp = torch.einsum("nk,pnkc->ncp", bw, pd[:, vid])                                # [N,3,P]
        J0 = Jr @ vt                                                                     # [J,3]
        JD = torch.einsum("jv,vcq->jcq", Jr, sd)                                         # [J,3,K]
        ns, ne = model.n_shape, model.n_expr
        moves = (D.abs().amax((0, 1)) > 0) | (JD.abs().amax((0, 1)) > 0)
        s_cols = torch.nonzero(moves[:ns]).flatten()
        e_cols = torch.nonzero(moves[ns:ns + ne]).flatten()
        if max_shape is not None:
            s_cols = s_cols[s_cols < max_shape]
        if max_expr is not None:
            e_cols = e_cols[e_cols < max_expr]
        self.n_shape, self.n_expr, self.L = ns, ne, len(embedding)
        self.s_cols, self.e_cols = s_cols, e_cols
        f32 = torch.float32
        self.pair_l, self.pair_j, self.pair_c = pl, pj, c[pl, pj].to(f32)
        N = len(pl)
        # component-major layouts ([3,N] points, [q,3N] bases) so that the batch ops run on rows
        self.J0, self.JDs, self.JDe = J0.to(f32), JD[..., s_cols].to(f32), JD[..., ns + e_cols].to(f32)
        self.P0 = P0.T.contiguous().to(f32)                                              # [3,N]
        self.Ds = D[..., s_cols].permute(1, 0, 2).contiguous().to(f32)                   # [3,N,ks]
        self.De = D[..., ns + e_cols].permute(2, 1, 0).reshape(-1, 3 * N).contiguous().to(f32)  # [ke,3N]
        self.Dp = Dp.permute(2, 1, 0).reshape(-1, 3 * N).contiguous().to(f32) if Dp.abs().max() > 0 else None
        self.csum = torch.zeros(self.L, dtype=f32).index_add_(0, pl, self.pair_c)        # [L] (1 for LBS)
        # pose-dependent slide of the detector's landmarks (LandmarkEmbedding.pose_slope), per pair
        self.slope = None
        if embedding.pose_slope is not None and viewmat is not None:
            sl = torch.as_tensor(embedding.pose_slope, dtype=f64)[pl] * c[pl, pj][:, None, None]   # [N,3,2]
            self.slope = sl.permute(2, 1, 0).reshape(2, 3 * N).contiguous().to(f32)             # [2,3N]
            vm = torch.as_tensor(np.asarray(viewmat), dtype=f32)
            self.view_R, self.view_t = vm[:3, :3], vm[:3, 3]
        self.rot_groups = [(j, torch.nonzero(pj == j).flatten()) for j in (2, 3, 4) if bool((pj == j).any())]
        # which landmarks the jaw / the eyes drive (their share of the skinning weight)
        self.jaw_share = c[:, JAW_JOINT].to(f32)
        self.eye_share = c[:, list(EYE_JOINTS)].sum(1).to(f32)

    def landmarks(self, shape, expr, rotation, jaw_pose, eyes_pose, translation):
        """World landmark positions [T,3,L] (component-major, metres) for the active-column
        coefficients shape [ks], expr [T,ke] and rotation / jaw_pose [T,3], eyes_pose [T,6]
        (radians), translation [T,3] (metres)."""
        T = rotation.shape[0]
        N = self.P0.shape[1]
        P = (self.P0 + self.Ds @ shape)[None] + (expr @ self.De).reshape(T, 3, N)         # [T,3,N]
        joints = (self.J0 + self.JDs @ shape)[None] + torch.einsum("jcq,tq->tjc", self.JDe, expr)   # [T,5,3]
        local = axis_angle_to_matrix(torch.cat([jaw_pose, eyes_pose], -1).reshape(T, 3, 3))      # jaw, eyes
        R0 = axis_angle_to_matrix(rotation)
        if self.slope is not None:         # the detector's slide with the head's yaw / pitch
            eyes = joints[:, 3:5].mean(1) - joints[:, 0]                                  # rest, from J0
            centre = _rotate(R0, eyes[:, :, None])[:, :, 0] + joints[:, 0] + translation   # posed, world
            angles = _view_angles(self.view_R @ R0, centre @ self.view_R.T + self.view_t)
            P = P + (angles @ self.slope).reshape(T, 3, N)
        if self.Dp is not None:            # pose correctives from (R - I) of neck (= 0), jaw, eyes
            eye = torch.eye(3, dtype=local.dtype)
            feat = torch.cat([torch.zeros(T, 9, dtype=local.dtype), (local - eye).reshape(T, 27)], 1)
            P = P + (feat @ self.Dp).reshape(T, 3, N)
        parts = P
        if self.rot_groups:
            parts = P.clone()
            for j, idx in self.rot_groups:
                c = self.pair_c[idx]
                cJ = joints[:, j][:, :, None] * c                                          # [T,3,n]
                parts[:, :, idx] = _rotate(local[:, j - 2], P.index_select(2, idx) - cJ) + cJ
        y = torch.zeros(T, 3, self.L, dtype=P.dtype).index_add(2, self.pair_l, parts)
        J0 = joints[:, 0][:, :, None]
        y = y - self.csum * J0
        return _rotate(R0, y) + J0 + translation[:, :, None]


def _view_angles(R_cam: torch.Tensor, centre_cam: torch.Tensor) -> torch.Tensor:
    """Torch twin of `embedding.head_view_angles`: [T,3,3], [T,3] -> (yaw, pitch) [T,2] radians."""
    d = centre_cam / centre_cam.norm(dim=-1, keepdim=True)
    a, b = torch.atan2(d[:, 0], d[:, 2]), -torch.asin(d[:, 1].clamp(-1 + 1e-6, 1 - 1e-6))
    ca, sa, cb, sb = torch.cos(a), torch.sin(a), torch.cos(b), torch.sin(b)
    o, z = torch.ones_like(a), torch.zeros_like(a)
    Ry = torch.stack([torch.stack([ca, z, sa], -1), torch.stack([z, o, z], -1), torch.stack([-sa, z, ca], -1)], -2)
    Rx = torch.stack([torch.stack([o, z, z], -1), torch.stack([z, cb, -sb], -1), torch.stack([z, sb, cb], -1)], -2)
    flip = torch.tensor([1.0, -1.0, -1.0], dtype=R_cam.dtype)[:, None]
    Rr = flip * ((Ry @ Rx).transpose(1, 2) @ R_cam)
    yaw = torch.atan2(Rr[:, 0, 2], Rr[:, 2, 2])
    pitch = torch.asin((-Rr[:, 1, 2]).clamp(-1 + 1e-6, 1 - 1e-6))
    return torch.stack([yaw, pitch], 1)


def _project(points, Rv, tv, K):
    """World points [T,3,L] -> pixels [T,2,L] (OpenCV camera, pixel centres at +0.5)."""
    p = Rv @ points + tv[:, None]
    z = p[:, 2].clamp_min(1e-6)
    x, y = p[:, 0] / z, p[:, 1] / z
    return torch.stack([K[0, 0] * x + K[0, 1] * y + K[0, 2], K[1, 1] * y + K[1, 2]], 1)


def _rigid_init(obs, w, X, j0, Rv, tv, K):
    """Per-frame rotation / translation (numpy float64) from a scaled-orthographic fit.

    obs [T,L,2] pixels, w [T,L] weights (0 = unused), X [L,3] rest landmarks, j0 [3] root joint.
    Affine camera x = M X + b by weighted least squares, rows of M / (fx, fy) give the first two
    rows of the head rotation in camera axes and the scale 1/z (Tomasi & Kanade, IJCV 1992)."""
    T = obs.shape[0]
    rot = np.zeros((T, 3))
    trans = np.zeros((T, 3))
    from scipy.spatial.transform import Rotation
    fx, fy, cx, cy = K[0, 0], K[1, 1], K[0, 2], K[1, 2]
    for t in range(T):
        wt = w[t]
        m = wt > 0
        if m.sum() < 4:
            m = np.isfinite(obs[t]).all(1)
            wt = m.astype(np.float64)
        Xm = (X * wt[:, None])[m].sum(0) / wt[m].sum()
        A = np.concatenate([X[m] - Xm, np.ones((m.sum(), 1))], 1) * np.sqrt(wt[m])[:, None]
        B = obs[t][m] * np.sqrt(wt[m])[:, None]
        sol, *_ = np.linalg.lstsq(A, B, rcond=None)                                      # [4,2]
        a1, a2, b = sol[:3, 0] / fx, sol[:3, 1] / fy, sol[3]
        s = 0.5 * (np.linalg.norm(a1) + np.linalg.norm(a2))
        r1, r2 = a1 / np.linalg.norm(a1), a2 / np.linalg.norm(a2)
        U, _, Vt = np.linalg.svd(np.stack([r1, r2, np.cross(r1, r2)]))
        Rc = U @ Vt                                                   # nearest rotation
        if np.linalg.det(Rc) < 0:
            Rc = U @ np.diag([1.0, 1.0, -1.0]) @ Vt
        z = 1.0 / max(s, 1e-9)
        centre_cam = np.array([(b[0] - cx) * z / fx, (b[1] - cy) * z / fy, z])
        Rw = Rv.T @ Rc                                                # head rotation in world axes
        centre_w = Rv.T @ (centre_cam - tv)
        rot[t] = Rotation.from_matrix(Rw).as_rotvec()
        trans[t] = centre_w - Rw @ (Xm - j0) - j0
    return rot, trans


def _pseudo_huber(r2, delta):
    return delta * delta * (torch.sqrt(1.0 + r2 / (delta * delta)) - 1.0)


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


# Per-frame parameter vector (internal units keep the problem well scaled: degrees for rotations,
# millimetres for the translation, raw coefficients otherwise): rotation 0:3, translation 3:6,
# jaw_pose 6:9, eyes_pose 9:15, expr 15:15+ke.
_DEG = 180.0 / math.pi
_COLS = dict(rotation=slice(0, 3), translation=slice(3, 6), jaw_pose=slice(6, 9), eyes_pose=slice(9, 15))
_UNIT = dict(rotation=_DEG, translation=1000.0, jaw_pose=_DEG, eyes_pose=_DEG)
FD_STEP = 0.01        # finite-difference step in those units


def _optimise(obs_np, finite, valid_full, model, embedding, Kn, Vm, opt: "TrackerOptions", progress, start=None):
    f32 = torch.float32
    red = _LandmarkModel(model, embedding, opt.max_shape, opt.max_expr,
                         viewmat=Vm if opt.use_pose_slope else None)
    Tv, L = obs_np.shape[:2]
    ks, ke = len(red.s_cols), len(red.e_cols)
    obs = torch.as_tensor(np.nan_to_num(obs_np), dtype=f32)
    w_lm = torch.as_tensor(embedding.weight, dtype=f32)[None] * torch.as_tensor(finite, dtype=f32)  # [Tv,L]
    used = w_lm > 0
    Rv, tv, Kt = (torch.as_tensor(Vm[:3, :3], dtype=f32), torch.as_tensor(Vm[:3, 3], dtype=f32),
                  torch.as_tensor(Kn, dtype=f32))
    # face size in pixels (RMS distance to the centroid) -> scale of the regularisers
    cen = (obs * used[..., None]).sum(1, keepdim=True) / used.sum(1).clamp_min(1)[:, None, None]
    face_px = float(torch.sqrt((((obs - cen) ** 2).sum(-1) * used).sum() / used.sum().clamp_min(1)))
    obs = obs.transpose(1, 2).contiguous()                                            # [Tv,2,L]
    reg = (2.0 * face_px / 100.0) ** 2          # the RMS radius is about half the face width
    # consecutive valid frames (temporal terms)
    vidx = np.flatnonzero(valid_full)
    pair = torch.as_tensor(np.flatnonzero(np.diff(vidx) == 1))
    trip = torch.as_tensor(np.flatnonzero((np.diff(vidx)[:-1] == 1) & (np.diff(vidx)[1:] == 1)))
    n_pair, n_trip = max(len(pair), 1), max(len(trip), 1)
    p_all = 15 + ke
    ecols = slice(15, 15 + ke)

    def points(theta, shape):
        return red.landmarks(shape, theta[:, ecols], theta[:, _COLS["rotation"]] / _DEG,
                             theta[:, _COLS["jaw_pose"]] / _DEG, theta[:, _COLS["eyes_pose"]] / _DEG,
                             theta[:, _COLS["translation"]] / 1000.0)

    def pixels(theta, shape):
        return _project(points(theta, shape), Rv, tv, Kt)

    rad2 = (math.pi / 180.0) ** 2
    # per-column prior (per frame, summed) and temporal weights, in internal units, times `reg`
    prior = torch.zeros(p_all)
    prior[_COLS["jaw_pose"]] = opt.w_jaw * rad2
    prior[_COLS["eyes_pose"]] = opt.w_eyes * rad2
    prior[ecols] = opt.w_expr
    smooth1, smooth2 = torch.zeros(p_all), torch.zeros(p_all)
    for key, w1, w2 in (("rotation", opt.w_smooth_rotation, opt.w_accel_rotation),
                        ("translation", opt.w_smooth_translation, opt.w_accel_translation),
                        ("jaw_pose", opt.w_smooth_rotation, opt.w_accel_rotation)):
        smooth1[_COLS[key]], smooth2[_COLS[key]] = w1, w2
    smooth1[ecols], smooth2[ecols] = opt.w_smooth_expr, opt.w_accel_expr

    def loss_fn(theta, shape, weights, active):
        r2 = ((pixels(theta, shape) - obs) ** 2).sum(1)
        loss = (_pseudo_huber(r2, opt.huber_px) * weights).sum(1).mean()
        a = torch.zeros(p_all, dtype=torch.bool)
        a[active] = True
        x = theta[:, a]
        if len(pair):
            d1 = ((x[pair + 1] - x[pair]).pow(2) * smooth1[a]).sum(-1).mean()
            loss = loss + reg * d1
        if len(trip):
            d2 = ((x[trip + 2] - 2 * x[trip + 1] + x[trip]).pow(2) * smooth2[a]).sum(-1).mean()
            loss = loss + reg * d2
        loss = loss + reg * (x.pow(2) * prior[a]).sum(-1).mean()
        if shape.numel():
            loss = loss + reg * opt.w_shape * shape.pow(2).sum()
        return loss

    def preconditioner(theta, shape, weights, active, with_shape):
        """Gauss-Newton blocks of the loss (per-frame, the shape and their coupling), factored so
        that the change of variables below makes them the identity (block LDL^T / Schur)."""
        # Jacobian columns by forward differences, one column for all frames at once (frames are
        # independent); accurate to ~1e-3 relative, plenty for a preconditioner
        with torch.no_grad():
            base = pixels(theta, shape)
            r2 = ((base - obs) ** 2).sum(1)
            omega = (weights / torch.sqrt(1.0 + r2 / opt.huber_px ** 2) / Tv)        # GN weight of pseudo-Huber
            cols = []
            for k in active:
                th = theta.clone()
                th[:, k] += FD_STEP
                cols.append((pixels(th, shape) - base) / FD_STEP)
            Jt = torch.stack(cols, -1)                                                # [Tv,2,L,a]
            Jw = Jt * omega[:, None, :, None]
            H = torch.einsum("tclp,tclq->tpq", Jw, Jt)
        diag = reg * (2.0 * prior[active] / Tv + 4.0 * smooth1[active] / n_pair + 12.0 * smooth2[active] / n_trip)
        H = H + torch.diag_embed(diag.expand(Tv, -1))
        damp = 1e-6 * H.diagonal(dim1=1, dim2=2).mean(1).clamp_min(1e-12)
        H = H + damp[:, None, None] * torch.eye(len(active))
        Lc = torch.linalg.cholesky(H.double())
        eye = torch.eye(len(active), dtype=torch.float64).expand_as(Lc)
        M = torch.linalg.solve_triangular(Lc.transpose(1, 2), eye, upper=True).float()  # L^-T
        Kc = Ms = None
        if with_shape and ks:
            with torch.no_grad():
                cols = []
                for k in range(ks):
                    sh = shape.clone()
                    sh[k] += FD_STEP
                    cols.append((pixels(theta, sh) - base) / FD_STEP)
                Js = torch.stack(cols, -1)                                            # [Tv,2,L,ks]
            Hts = torch.einsum("tclp,tclq->tpq", Jw, Js).double()
            Hss = torch.einsum("tclp,tclq->pq", Js * omega[:, None, :, None], Js).double()
            Hss = Hss + torch.eye(ks, dtype=torch.float64) * (2.0 * reg * opt.w_shape + 1e-9)
            Kd = torch.cholesky_solve(Hts, Lc)                                        # H_tt^-1 H_ts
            S = Hss - torch.einsum("tps,tpq->sq", Hts, Kd)
            S = 0.5 * (S + S.T) + 1e-9 * torch.eye(ks, dtype=torch.float64) * S.diagonal().mean().clamp_min(1e-12)
            Ls = torch.linalg.cholesky(S)
            Ms = torch.linalg.solve_triangular(Ls.T, torch.eye(ks, dtype=torch.float64), upper=True).float()
            Kc = Kd.float()
        return M, Kc, Ms

    # (a) rigid initialisation from the landmarks the jaw and the eyes do not move
    zeros = lambda *s: torch.zeros(*s, dtype=f32)  # noqa: E731
    with torch.no_grad():
        X = red.landmarks(zeros(ks), zeros(1, ke), zeros(1, 3), zeros(1, 3), zeros(1, 6), zeros(1, 3))[0].T
    w_rigid = w_lm * ((red.jaw_share < 0.5) & (red.eye_share < 0.5)).to(f32)
    rot0, trans0 = _rigid_init(obs_np, w_rigid.double().numpy(), X.double().numpy(), red.J0[0].double().numpy(),
                               Vm[:3, :3], Vm[:3, 3], Kn)
    theta = torch.zeros(Tv, p_all)
    theta[:, _COLS["rotation"]] = torch.as_tensor(rot0 * _DEG, dtype=f32)
    theta[:, _COLS["translation"]] = torch.as_tensor(trans0 * 1000.0, dtype=f32)
    shape = zeros(ks)
    if start is not None:                   # warm start (the active columns of a previous fit)
        for k in _COLS:
            theta[:, _COLS[k]] = torch.as_tensor(start[k] * _UNIT[k], dtype=f32)
        theta[:, ecols] = torch.as_tensor(start["expr"][:, red.e_cols.numpy()], dtype=f32)
        shape = torch.as_tensor(start["shape"][red.s_cols.numpy()], dtype=f32)

    rigid = list(range(6))
    nonrigid = rigid + list(range(6, 9)) + list(range(15, 15 + ke))
    everything = nonrigid + list(range(9, 15))
    w_noneye = w_lm * (red.eye_share < 0.5).to(f32)
    stages = (("rigid", opt.rigid_iters, rigid, w_rigid, False),
              ("full", opt.full_iters, nonrigid, w_noneye, True),
              ("eyes", opt.eyes_iters, everything, w_lm, True))
    total = sum(st[1] for st in stages)
    done = 0
    losses = {}
    for name, iters, active, weights, with_shape in stages:
        n_outer = 0 if iters == 0 else max(1, int(round(iters / opt.refresh_every)))
        per = [iters // n_outer + (1 if i < iters % n_outer else 0) for i in range(n_outer)] if n_outer else []
        act = torch.as_tensor(active)
        for n_it in per:
            M, Kc, Ms = preconditioner(theta, shape, weights, active, with_shape)
            theta0, shape0 = theta.clone(), shape.clone()
            z = torch.zeros(Tv, len(active), requires_grad=True)
            zs = torch.zeros(ks if Ms is not None else 0, requires_grad=True)

            def current():
                th = theta0.clone()
                step = torch.einsum("tpq,tq->tp", M, z)
                if Ms is not None:
                    ds = Ms @ zs
                    step = step - torch.einsum("tps,s->tp", Kc, ds)
                    sh = shape0 + ds
                else:
                    sh = shape0
                th[:, act] = th[:, act] + step
                return th, sh

            params = [z] + ([zs] if Ms is not None else [])
            # quasi-Newton in the whitened variables (Nocedal & Wright, Numerical Optimization, Alg. 7.5)
            lbfgs = torch.optim.LBFGS(params, lr=1.0, max_iter=n_it, max_eval=2 * n_it + 5,
                                      history_size=opt.lbfgs_history, tolerance_grad=1e-10,
                                      tolerance_change=1e-14, line_search_fn="strong_wolfe")
            count = [0]

            def closure():
                lbfgs.zero_grad(set_to_none=True)
                th, sh = current()
                loss = loss_fn(th, sh, weights, active)
                loss.backward()
                count[0] += 1
                if progress is not None:          # monotone: at most n_it per refresh block
                    progress(done + min(count[0], n_it), total)
                return loss

            lbfgs.step(closure)
            with torch.no_grad():
                theta, shape = current()
            done += n_it
        with torch.no_grad():
            losses[name] = float(loss_fn(theta, shape, weights, active))
    if progress is not None:
        progress(total, total)
    if not (torch.isfinite(theta).all() and torch.isfinite(shape).all()):
        raise RuntimeError("tracker: the fit diverged (non-finite parameters); check K / viewmat and the landmarks")
    with torch.no_grad():
        dist = (pixels(theta, shape) - obs).norm(dim=1)
        err = ((dist * used).sum(1) / used.sum(1).clamp_min(1)).numpy()
    shape_full = np.zeros(red.n_shape)
    shape_full[red.s_cols.numpy()] = shape.double().numpy()
    expr = np.zeros((Tv, red.n_expr))
    expr[:, red.e_cols.numpy()] = theta[:, ecols].double().numpy()
    per_frame = {k: theta[:, _COLS[k]].double().numpy() / _UNIT[k] for k in _COLS}
    per_frame["expr"] = expr
    return (per_frame, shape_full, err), losses


# ----------------------------------------------------------------------------------------------
# the neck line

def neck_ring_ids(model) -> np.ndarray:
    """Vertex ids of the neck-cut ring, ordered around the neck.

    The open head's neck is closed by a flat cap at its lowest height (y = -0.155 m): the ring is
    the cap's boundary (vertices within 1 mm of the lowest skin height that have a neighbour above).
    A FLAME mesh is open at the neck: the ring is the boundary loop (edges of one face) with the
    lowest mean height.  Rest pose (``v_template``); FLAME axes (+y up).

    Returns: int64 [N] vertex ids (sorted by angle around the ring's centre in the x-z plane).
    Raises: ValueError when no ring is found.
    """
    v = model.v_template.detach().cpu().double().numpy()
    f = model.faces.detach().cpu().numpy()
    n_t = int(getattr(model, "num_template_vertices", len(v)))
    f = f[(f < n_t).all(1)]                                      # no teeth
    e = np.sort(np.concatenate([f[:, [0, 1]], f[:, [1, 2]], f[:, [2, 0]]]), 1)
    uniq, count = np.unique(e, axis=0, return_counts=True)
    boundary = uniq[count == 1]
    ring = np.array([], np.int64)
    if len(boundary):
        import scipy.sparse
        import scipy.sparse.csgraph
        A = scipy.sparse.coo_matrix((np.ones(len(boundary)), (boundary[:, 0], boundary[:, 1])), shape=(n_t, n_t))
        _, lab = scipy.sparse.csgraph.connected_components(A, directed=False)
        bv = np.unique(boundary)
        best = min(np.unique(lab[bv]), key=lambda c: v[bv[lab[bv] == c], 1].mean())
        ring = bv[lab[bv] == best]
    else:
        in_f = np.unique(f)
        y_min = v[in_f, 1].min()
        low = np.zeros(len(v), bool)
        low[in_f[v[in_f, 1] < y_min + 1e-3]] = True
        up = (~low[e[:, 0]] & low[e[:, 1]]) | (low[e[:, 0]] & ~low[e[:, 1]])
        ring = np.unique(np.where(low[e[up, 0]], e[up, 0], e[up, 1]))
    if len(ring) < 3:
        raise ValueError("model: found no neck ring (no lowest boundary loop or flat neck cap)")
    c = v[ring].mean(0)
    ang = np.arctan2(v[ring, 0] - c[0], v[ring, 2] - c[2])
    return ring[np.argsort(ang)].astype(np.int64)


def neck_line(vertices, model) -> torch.Tensor:
    """The neck-cut ring of posed `vertices` (e.g. to whiten the image below it, as VHAP does).

    Args:
        vertices: [V,3] or [B,V,3] posed vertices of `model` (torch or numpy; metres).
        model: the `FlameModel` they come from.
    Returns:
        [N,3] or [B,N,3] torch tensor: the ring's posed points, ordered around the neck.
    Raises:
        ValueError: `vertices` does not have the model's vertex count, or no ring is found.
    """
    x = torch.as_tensor(vertices)
    if x.ndim not in (2, 3) or x.shape[-1] != 3 or x.shape[-2] != model.num_vertices:
        raise ValueError(f"vertices: expected [V,3] or [B,V,3] with V={model.num_vertices}, got {list(x.shape)}")
    return x[..., torch.as_tensor(neck_ring_ids(model)), :]
