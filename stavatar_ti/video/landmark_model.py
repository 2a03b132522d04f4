"""FLAME reduced exactly to the embedded landmarks (`_LandmarkModel`: world landmark positions from
the tracker's parameters), their pinhole projection to pixels (`_project`) and the head's view angles
(`_view_angles`, for the embedding's pose-dependent slide).

Only what the landmarks need is evaluated.  LBS is linear in the vertices, so a landmark
``x_l = sum_k b_lk sum_j w_kj A_j [v_k; 1]`` equals ``sum_j A_j [P_lj; c_lj]`` with the per-joint
blended rest points ``P_lj = sum_k b_lk w_kj v_k`` and weights ``c_lj = sum_k b_lk w_kj`` (exact,
not an approximation).  ``P_lj`` is linear in shape / expression / pose correctives, so the model
is pre-reduced to a basis per (landmark, joint) pair with a non-zero weight (about 1.1 pairs per
landmark) and the joints to their own [5,3,K] basis; blendshape columns that move neither are
skipped (the open head has 10 identity and 16 expression columns of the 300 / 100).
"""

from __future__ import annotations

import numpy as np
import torch

from ..geometry import axis_angle_to_matrix
from .embedding import LandmarkEmbedding

EYE_JOINTS = (3, 4)
JAW_JOINT = 2

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
