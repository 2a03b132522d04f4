"""The tracker's optimiser: `_optimise` fits all valid frames jointly (the loss, its Gauss-Newton
preconditioner, the rigid / full / eyes stages of L-BFGS in whitened variables), starting from the
per-frame scaled-orthographic `_rigid_init`.  The loss and the schedule are described in
`stavatar_ti.video.tracker`.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING

import numpy as np
import torch

from .landmark_model import _LandmarkModel, _project

if TYPE_CHECKING:
    from .tracker import TrackerOptions


# Per-frame parameter vector (internal units keep the problem well scaled: degrees for rotations,
# millimetres for the translation, raw coefficients otherwise): rotation 0:3, translation 3:6,
# jaw_pose 6:9, eyes_pose 9:15, expr 15:15+ke.
_DEG = 180.0 / math.pi
_COLS = dict(rotation=slice(0, 3), translation=slice(3, 6), jaw_pose=slice(6, 9), eyes_pose=slice(9, 15))
_UNIT = dict(rotation=_DEG, translation=1000.0, jaw_pose=_DEG, eyes_pose=_DEG)
FD_STEP = 0.01        # finite-difference step in those units


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
