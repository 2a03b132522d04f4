#!/usr/bin/env python3
"""Calibrate the MediaPipe landmark embedding of the open head (writes the shipped data file).

    python scripts/calibrate_landmarks.py [--out stavatar_ti/video/open_head_mediapipe.npz]
        [--seeds 0 1 2 3 8 9 10 11] [--frames 120] [--size 512] [--raw hits.npz] [--static]

Needs MediaPipe (the ``[video]`` extra).  Method (details and the measured numbers in the docstring
of `stavatar_ti.video.embedding`): render the open head with known parameters (synthetic talking-head
motion plus a smooth extra head turn), run MediaPipe Face Mesh as the preprocessing does, cast the
camera ray through every landmark against the true posed triangles, map the hit (triangle,
barycentric) to the rest template, fit each landmark's rest point as a linear function of the head's
yaw and pitch (its slide), and weight landmarks by the remaining spread.  About 12 minutes on one
CPU core; prints the statistics that the module docstring quotes.  ``--raw`` caches the per-frame
hits so that the consensus step can be re-run with other thresholds in seconds.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
IRIS = np.arange(468, 478)
NUM_LANDMARKS = 478
MAX_TURN_DEG = (18.0, 35.0, 8.0)      # extra head turn: pitch, yaw, roll amplitudes (smooth sweeps)
SNAP_PX = 2.0                         # a missed ray takes the nearest visible vertex within this


def _axis_angle_matrix(aa: np.ndarray) -> np.ndarray:
    from scipy.spatial.transform import Rotation
    return Rotation.from_rotvec(aa).as_matrix()


def _matrix_axis_angle(R: np.ndarray) -> np.ndarray:
    from scipy.spatial.transform import Rotation
    return Rotation.from_matrix(R).as_rotvec()


def _detect(frames: np.ndarray):
    """MediaPipe landmarks [T,478,2] (pixels, x = x_norm * W) and found [T], as the preprocessing runs
    it: `stavatar_ti.video.detect.detect_landmarks` (FaceMesh in video mode, refine_landmarks)."""
    from stavatar_ti.video.detect import detect_landmarks
    lm, found = detect_landmarks(frames, upscale=1)
    return lm[..., :2].astype(np.float64), found


def _candidates(lm: np.ndarray, verts: np.ndarray, faces: np.ndarray, allowed: np.ndarray, cam) -> list:
    """Per landmark, the rows of `allowed` whose projected bounding box contains it (+0.5 px)."""
    uv = cam.project(verts)[faces[allowed]]                                    # [F,3,2]
    lo, hi = uv.min(1) - 0.5, uv.max(1) + 0.5
    out = []
    for s in range(0, len(lm), 64):
        p = lm[s:s + 64, None]
        inside = ((p >= lo[None]) & (p <= hi[None])).all(-1)                   # [r,F]
        out += [np.flatnonzero(row) for row in inside]
    return out


def _backproject(lm: np.ndarray, verts: np.ndarray, faces: np.ndarray, cam, iris_faces: np.ndarray,
                 other_faces: np.ndarray, margin_ids: np.ndarray, skin_faces: np.ndarray):
    """(face [478] int64 (-1 = none), bary [478,3]) of every landmark on the posed mesh `verts`.

    Iris landmarks are cast against `iris_faces` (the eyeballs); the others against `other_faces`
    (skin, mouth cavity and the eyeballs): a non-iris hit on an eyeball (an eye-contour landmark
    placed a little inside the lid opening) moves to the nearest eyelid-margin vertex, since the
    contour belongs to the lids, which move with blinks, not with the gaze."""
    from stavatar_ti.video.embedding import raycast_mesh
    R, t = cam.viewmat[:3, :3], cam.viewmat[:3, 3]
    centre = -R.T @ t
    pix = np.concatenate([lm, np.ones((len(lm), 1))], 1)
    dirs = (np.linalg.solve(cam.K, pix.T).T) @ R           # camera rays -> world (R^T d, row form)
    origins = np.repeat(centre[None], len(lm), 0)
    face = np.full(len(lm), -1, np.int64)
    bary = np.zeros((len(lm), 3))
    for sel, allowed in ((IRIS, iris_faces), (np.setdiff1d(np.arange(len(lm)), IRIS), other_faces)):
        cand = _candidates(lm[sel], verts, faces, allowed, cam)
        f, b, _ = raycast_mesh(origins[sel], dirs[sel], verts, faces[allowed], candidates=cand)
        hit = f >= 0
        face[sel[hit]] = allowed[f[hit]]
        bary[sel[hit]] = b[hit]
        if allowed is other_faces:
            on_eye = sel[hit][np.isin(allowed[f[hit]], iris_faces)]
            for i in on_eye:
                p = (verts[faces[face[i]]] * bary[i][:, None]).sum(0)
                v = margin_ids[np.argmin(np.linalg.norm(verts[margin_ids] - p, axis=1))]
                rows, cols = np.nonzero(faces[skin_faces] == v)
                face[i] = skin_faces[rows[0]]
                bary[i] = 0.0
                bary[i, cols[0]] = 1.0
        miss = sel[~hit]
        if len(miss):
            # silhouette / lid-margin landmarks: nearest front-facing vertex in the image, if close
            snap = allowed if allowed is iris_faces else allowed[~np.isin(allowed, iris_faces)]
            fa = faces[snap]
            n = np.cross(verts[fa[:, 1]] - verts[fa[:, 0]], verts[fa[:, 2]] - verts[fa[:, 0]])
            front = (n * (verts[fa[:, 0]] - centre)).sum(1) < 0
            vids = np.unique(fa[front])
            uv = cam.project(verts[vids])
            depth = (verts[vids] @ R.T + t)[:, 2]
            for i in miss:
                d = np.linalg.norm(uv - lm[i], axis=1)
                near = np.flatnonzero(d < SNAP_PX)
                if len(near) == 0:
                    continue
                v = vids[near[np.argmin(depth[near])]]
                rows, cols = np.nonzero(fa[front] == v)
                face[i] = snap[np.flatnonzero(front)[rows[0]]]
                bary[i] = 0.0
                bary[i, cols[0]] = 1.0
    return face, bary


def _turn(T: int, seed: int) -> np.ndarray:
    """[T,3,3] smooth extra head turn: yaw sweeps +-MAX yaw, pitch / roll oscillate (random phases)."""
    from scipy.spatial.transform import Rotation
    rng = np.random.default_rng(1000 + seed)
    u = np.arange(T) / T
    ph = rng.uniform(0, 2 * np.pi, 3)
    pitch = np.sin(2 * np.pi * 1.7 * u + ph[0]) * MAX_TURN_DEG[0]
    yaw = np.sin(2 * np.pi * u + ph[1]) * MAX_TURN_DEG[1]
    roll = np.sin(2 * np.pi * 2.3 * u + ph[2]) * MAX_TURN_DEG[2]
    return Rotation.from_euler("YXZ", np.deg2rad(np.stack([yaw, pitch, roll], 1))).as_matrix()


def collect(seeds, frames: int, size: int, log=print):
    """Render, detect and back-project. Returns faces [N,478] int64, barys [N,478,3] and the head's
    yaw, pitch [N] (radians, relative to the camera: R = Ry(yaw) Rx(pitch) Rz(roll)) of the N frames
    where MediaPipe found the face."""
    import torch

    from stavatar_ti.synthetic.generate import build_sequence
    from stavatar_ti.synthetic.head import KIND_EYEBALL, KIND_LINING, KIND_SKIN, KIND_TEETH
    from stavatar_ti.video.embedding import head_view_angles

    all_f, all_b, all_a = [], [], []
    for seed in seeds:
        t0 = time.time()
        seq = build_sequence(frames=frames, size=size, seed=int(seed))
        head = seq.head
        kind = head.face_kind
        iris_faces = np.flatnonzero(kind == KIND_EYEBALL)
        other_faces = np.flatnonzero(~np.isin(kind, (KIND_TEETH, KIND_LINING)))
        skin_faces = np.flatnonzero(kind == KIND_SKIN)
        p = seq.true_params(0, frames)
        R_turn = _turn(frames, int(seed))
        R = R_turn @ _axis_angle_matrix(p["rotation"].double().numpy())
        p["rotation"] = torch.as_tensor(_matrix_axis_angle(R), dtype=torch.float32)
        with torch.no_grad():
            verts, joints = head.model(**p, return_joints=True)
        verts, joints = verts.double().numpy(), joints.double().numpy()
        images = np.stack([seq.render(t, verts[t])[0] for t in range(frames)])
        lm, found = _detect(images)
        # head orientation as the camera sees it (relative to the ray to the eyes' mid-point)
        Rv, tv = seq.camera.viewmat[:3, :3], seq.camera.viewmat[:3, 3]
        R_head = R @ _axis_angle_matrix(p["neck_pose"].double().numpy())
        angles = head_view_angles(Rv @ R_head, joints[:, 3:5].mean(1) @ Rv.T + tv)
        for t in np.flatnonzero(found):
            f, b = _backproject(lm[t], verts[t], head.faces, seq.camera, iris_faces, other_faces, head.margin_ids,
                                skin_faces)
            all_f.append(f)
            all_b.append(b)
            all_a.append(angles[t])
        log(f"seed {seed}: {found.sum()}/{frames} frames with a face ({time.time() - t0:.0f} s)")
    if not all_f:
        raise RuntimeError("MediaPipe found no face in any calibration frame")
    angles = np.stack(all_a)
    return np.stack(all_f), np.stack(all_b), angles[:, 0], angles[:, 1]


def consensus(faces_hit: np.ndarray, barys: np.ndarray, rest: np.ndarray, faces: np.ndarray, yaw: np.ndarray,
              pitch: np.ndarray, scale_mm: float, max_spread_mm: float, min_hit_fraction: float,
              pose_slope: bool = True):
    """Per landmark, over the frames where it hit: the rest points P_k = a + B [yaw_k, pitch_k] + e_k
    (least squares, refitted without the frames whose residual exceeds 3x the median; B = 0 when
    not `pose_slope`), the consensus hit = the one whose rest point is nearest a, the spread = the
    median |e_k| (mm), the hit fraction and the weight 1 / (1 + (spread / scale)^2).

    Returns face [L], bary [L,3], slope [L,3,2] (metres per radian), spread [L], frac [L],
    weight [L], keep [L] (spread <= max and frac >= min)."""
    N, L = faces_hit.shape
    face = np.zeros(L, np.int64)
    bary = np.zeros((L, 3))
    slope = np.zeros((L, 3, 2))
    spread = np.full(L, np.inf)
    frac = (faces_hit >= 0).mean(0)
    for i in range(L):
        ok = faces_hit[:, i] >= 0
        if ok.sum() < 3:
            continue
        f, b = faces_hit[ok, i], barys[ok, i]
        pts = (rest[faces[f]] * b[..., None]).sum(1)
        A = np.stack([np.ones(ok.sum()), yaw[ok], pitch[ok]], 1) if pose_slope else np.ones((ok.sum(), 1))
        use = np.ones(len(pts), bool)
        for _ in range(2):
            coef = np.linalg.lstsq(A[use], pts[use], rcond=None)[0] if pose_slope else np.median(pts[use], 0)[None]
            res = np.linalg.norm(pts - A @ coef, axis=1)
            use = res <= 3.0 * np.median(res) + 1e-9
        k = int(np.argmin(np.linalg.norm(pts - coef[0], axis=1)))
        face[i], bary[i] = f[k], b[k]
        if pose_slope:
            slope[i] = coef[1:].T
        spread[i] = 1000.0 * np.median(res)
    keep = (spread <= max_spread_mm) & (frac >= min_hit_fraction)
    weight = 1.0 / (1.0 + (spread / scale_mm) ** 2)
    return face, bary, slope, spread, frac, weight, keep


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", type=Path, default=ROOT / "stavatar_ti" / "video" / "open_head_mediapipe.npz")
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2, 3, 8, 9, 10, 11],
                    help="synthetic identities (4-7 and 12-13 are left out: the tests use them)")
    ap.add_argument("--frames", type=int, default=120, help="consecutive frames per seed")
    ap.add_argument("--size", type=int, default=512)
    ap.add_argument("--spread-scale-mm", type=float, default=3.0)
    ap.add_argument("--max-spread-mm", type=float, default=6.0)
    ap.add_argument("--min-hit-fraction", type=float, default=0.5)
    ap.add_argument("--static", action="store_true", help="no pose-dependent slide (a plain embedding)")
    ap.add_argument("--raw", type=Path, default=None,
                    help="cache of the per-frame hits: read if it exists (then --seeds / --frames / --size "
                         "are not used), else written")
    args = ap.parse_args(argv)
    import importlib.util
    if (args.raw is None or not args.raw.is_file()) and importlib.util.find_spec("mediapipe") is None:
        print("error: MediaPipe is not installed (pip install 'stavatar_ti[video]')", file=sys.stderr)
        return 1
    import torch
    torch.set_num_threads(1)
    from stavatar_ti.synthetic.head import load_head
    from stavatar_ti.video.embedding import LandmarkEmbedding, save_embedding

    if args.raw is not None and args.raw.is_file():
        with np.load(args.raw) as z:
            fh, bh, yaw, pitch = z["faces"], z["barys"], z["yaw"], z["pitch"]
    else:
        fh, bh, yaw, pitch = collect(args.seeds, args.frames, args.size)
        if args.raw is not None:
            np.savez_compressed(args.raw, faces=fh, barys=bh, yaw=yaw, pitch=pitch)
    head = load_head()
    rest = head.model.v_template.double().numpy()           # zero shape, zero pose (teeth included)
    face, bary, slope, spread, frac, weight, keep = consensus(
        fh, bh, rest, head.faces, yaw, pitch, args.spread_scale_mm, args.max_spread_mm, args.min_hit_fraction,
        pose_slope=not args.static)
    idx = np.flatnonzero(keep)
    emb = LandmarkEmbedding(idx, face[idx], bary[idx], weight[idx], pose_slope=None if args.static else slope[idx])
    emb = emb.bind(head.faces)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    save_embedding(args.out, emb, spread_mm=spread[idx].astype(np.float32), hit_fraction=frac[idx].astype(np.float32),
                   num_frames=np.int64(len(fh)))
    iris = np.isin(idx, IRIS)
    dropped = np.setdiff1d(np.arange(NUM_LANDMARKS), idx)
    print(f"{len(fh)} frames; kept {len(idx)} of {NUM_LANDMARKS} landmarks; spread (mm) of the kept: median "
          f"{np.median(spread[idx]):.2f}, 90th percentile {np.percentile(spread[idx], 90):.2f}, max "
          f"{spread[idx].max():.2f}; irises kept {iris.sum()}/10, spread {np.round(spread[IRIS], 2).tolist()}")
    print(f"dropped: {dropped.tolist()}")
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
