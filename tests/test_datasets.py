"""Dataset readers (stavatar_ti.data): VHAP, INSTA/metrical-tracker and IMavatar fixtures.

Each fixture is written by a small writer in this file that does the INVERSE conversion by hand,
starting from a ground-truth OpenCV camera (world->camera viewmat + pixel K, pixel centres at +0.5,
metres). Two small coloured triangles (red, blue) facing the camera are rendered with the
independent reference renderer `stavatar_ti.meshrender.render_mesh` into the images, so the only
thing tying reader and fixture together is "the marker's 3D centroid must project, through the
reader's viewmat/K, onto the centroid of the marker pixels the renderer drew". Fronto-parallel
triangles make the projected 3D centroid equal to the 2D centroid of the drawn triangle.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import imageio.v3 as iio
import numpy as np
import pytest
import torch
from scipy.spatial.transform import Rotation

from stavatar_ti.data import (DatasetError, DatasetWarning, check_dataset, detect_format, load_dataset, load_imavatar,
                              load_insta, load_vhap, run_check)
from stavatar_ti.flame.meshrender import render_mesh

ROOT = Path(__file__).resolve().parents[1]
W, H = 80, 60
GL_FLIP = np.diag([1.0, -1.0, -1.0, 1.0])
RED, BLUE = (1.0, 0.0, 0.0), (0.0, 0.0, 1.0)
# marker centres (world, metres) and the triangle circumradius
P_RED = np.array([0.045, 0.030, 0.010])
P_BLUE = np.array([-0.040, -0.025, 0.030])
MARKER_R = 0.018


# ------------------------------------------------------------------------------------------------
# Ground truth cameras, marker rendering
# ------------------------------------------------------------------------------------------------

def gt_camera(i: int, centred: bool = False):
    """A non-trivial OpenCV camera looking at the origin from ~0.7 m (differs per frame i)."""
    rng = np.random.default_rng(100 + i)
    C = np.array([0.15 * np.sin(i), 0.08 + 0.02 * i, 0.7]) + rng.normal(0, 0.02, 3)   # camera centre
    fwd = -C / np.linalg.norm(C)                                   # +z looks at the origin
    up = np.array([0.1 * np.cos(i), 1.0, 0.0])
    x = np.cross(-up, fwd)                                         # OpenCV: x = y x z with y ~ -up
    x /= np.linalg.norm(x)
    y = np.cross(fwd, x)
    R_c2w = np.stack([x, y, fwd], 1)                               # columns: camera axes in world
    roll = Rotation.from_rotvec(fwd * (0.2 + 0.05 * i)).as_matrix()
    R_c2w = roll @ R_c2w
    assert np.linalg.det(R_c2w) > 0
    V = np.eye(4)
    V[:3, :3] = R_c2w.T
    V[:3, 3] = -R_c2w.T @ C
    if centred:
        K = np.array([[180.0, 0, W / 2], [0, 180.0, H / 2], [0, 0, 1]])
    else:
        K = np.array([[170.0 + i, 0, 0.43 * W + 3.3], [0, 176.0 + i, 0.58 * H - 1.7], [0, 0, 1]])
    return V, K


def marker_mesh(V):
    """Two fronto-parallel equilateral triangles with centroids P_RED, P_BLUE (world)."""
    R_c2w = V[:3, :3].T
    xa, ya = R_c2w[:, 0], R_c2w[:, 1]
    verts = []
    for P in (P_RED, P_BLUE):
        for th in (np.pi / 2, np.pi / 2 + 2 * np.pi / 3, np.pi / 2 + 4 * np.pi / 3):
            verts.append(P + MARKER_R * (np.cos(th) * xa + np.sin(th) * ya))
    return np.array(verts), np.array([[0, 1, 2], [3, 4, 5]]), np.array([RED] * 3 + [BLUE] * 3)


def render_markers(V, K, background=(1.0, 1.0, 1.0)):
    verts, faces, colors = marker_mesh(V)
    out = render_mesh(verts, faces, V, K, W, H, vertex_colors=colors, background=background)
    return out.image.numpy(), out.mask.numpy()


def to_u8(img):
    return np.clip(np.round(img * 255.0), 0, 255).astype(np.uint8)


def marker_centroid(img, color):
    """Centroid (u, v) of the pixels of one marker colour, pixel centres at +0.5."""
    c = np.asarray(color)
    sel = np.all(np.abs(img - c) < 0.2, axis=-1)
    assert sel.sum() >= 8, f"marker {color} covers only {sel.sum()} pixels"
    i, j = np.nonzero(sel)
    return np.array([j.mean() + 0.5, i.mean() + 0.5])


def project_with(viewmat, K, P):
    """Independent pinhole projection (OpenCV, pixel units)."""
    cam = viewmat[:3, :3] @ P + viewmat[:3, 3]
    assert cam[2] > 0
    return np.array([K[0, 0] * cam[0] / cam[2] + K[0, 1] * cam[1] / cam[2] + K[0, 2],
                     K[1, 1] * cam[1] / cam[2] + K[1, 2]])


def assert_markers_land(record):
    img = record.load_image()
    assert img.shape == (record.height, record.width, 3)
    for P, col in ((P_RED, RED), (P_BLUE, BLUE)):
        drawn = marker_centroid(img, col)
        proj = project_with(record.viewmat, record.K, P)
        assert np.linalg.norm(drawn - proj) < 1.0, (record.image_path, col, drawn, proj)


def aa_to_6d_rows(aa):
    """metrical-tracker / PyTorch3D 6D: the first two ROWS of the rotation matrix (written by hand)."""
    R = Rotation.from_rotvec(aa).as_matrix()
    return np.concatenate([R[0], R[1]])


# ------------------------------------------------------------------------------------------------
# Writers (inverse conversions, independent of the readers)
# ------------------------------------------------------------------------------------------------

N_FRAMES = 6


def vhap_params(t):
    rng = np.random.default_rng(t)
    return {
        "translation": rng.normal(0, 0.01, (1, 3)), "rotation": rng.normal(0, 0.1, (1, 3)),
        "neck_pose": rng.normal(0, 0.1, (1, 3)), "jaw_pose": np.abs(rng.normal(0, 0.1, (1, 3))),
        "eyes_pose": rng.normal(0, 0.1, (1, 6)), "shape": np.linspace(-1, 1, 300),
        "expr": rng.normal(0, 1, (1, 100)), "static_offset": np.full((1, 5143, 3), 0.001, np.float32),
    }


def write_vhap(root: Path, centred_fov_only: bool = False):
    """VHAP export: OpenGL c2w = inverse(viewmat) with the y and z columns negated, and cy measured
    from the bottom of the image (VHAP's "opencv->opengl" conversion: K[1,2] = H - K[1,2])."""
    root.mkdir(parents=True, exist_ok=True)
    (root / "images").mkdir()
    (root / "fg_masks").mkdir()
    (root / "flame_param").mkdir()
    frames = []
    for t in range(N_FRAMES):
        V, K = gt_camera(t, centred=centred_fov_only)
        img, mask = render_markers(V, K)
        iio.imwrite(root / f"images/{t:05d}_00.png", to_u8(img))
        iio.imwrite(root / f"fg_masks/{t:05d}_00.png", (mask.astype(np.uint8) * 255))
        np.savez(root / f"flame_param/{t:05d}.npz", **vhap_params(t))
        c2w_cv = np.linalg.inv(V)
        c2w_gl = c2w_cv.copy()
        c2w_gl[:3, 1] *= -1.0   # camera y: down -> up
        c2w_gl[:3, 2] *= -1.0   # camera z: forward -> backward
        f = {"timestep_index": t, "timestep_index_original": t, "camera_index": 0,
             "transform_matrix": c2w_gl.tolist(), "file_path": f"images/{t:05d}_00.png",
             "fg_mask_path": f"fg_masks/{t:05d}_00.png", "flame_param_path": f"flame_param/{t:05d}.npz"}
        if not centred_fov_only:
            f.update({"fl_x": K[0, 0], "fl_y": K[1, 1], "cx": K[0, 2], "cy": H - K[1, 2], "w": W, "h": H,
                      "camera_angle_x": 2 * np.arctan(W / (2 * K[0, 0]))})
        frames.append(f)
    top = {"camera_angle_x": 2 * np.arctan(W / (2 * 180.0))}
    np.savez(root / "canonical_flame_param.npz", **vhap_params(0))
    split = {"train": [0, 1, 2, 3], "val": [], "test": [4, 5]}
    for name, ts in split.items():
        fr = [] if name == "val" else [frames[t] for t in ts]
        listed = [0, 1, 2, 3] if name == "val" else ts
        (root / f"transforms_{name}.json").write_text(json.dumps({**top, "frames": fr, "timestep_indices": listed,
                                                                   "camera_indices": [0]}))
    return root


def write_insta(root: Path, transforms: bool = False, image_dir: str = "images"):
    """metrical-tracker checkpoint/*.frame (+ INSTA RGBA images, optionally transforms_*.json)."""
    (root / "checkpoint").mkdir(parents=True)
    (root / image_dir).mkdir()
    frames = []
    for t in range(N_FRAMES):
        V, K = gt_camera(t)
        img, _ = render_markers(V, K)
        rgba = np.concatenate([to_u8(img), np.full((H, W, 1), 255, np.uint8)], -1)
        rgba[:6, :6, 3] = 0          # a transparent corner (matte)
        rgba[:6, :6, :3] = 0
        iio.imwrite(root / f"{image_dir}/{t:05d}.png", rgba)
        jaw = np.array([0.05 * t + 0.1, 0.02, -0.01])
        eyes = np.array([0.1, -0.05 * t, 0.02]), np.array([0.12, -0.05 * t, 0.0])
        payload = {
            "flame": {"exp": np.full((1, 100), 0.01 * t, np.float32),
                      "shape": np.linspace(0, 1, 300)[None].astype(np.float32),
                      "tex": np.zeros((1, 140), np.float32), "sh": np.zeros((1, 9, 3), np.float32),
                      "eyes": np.concatenate([aa_to_6d_rows(eyes[0]), aa_to_6d_rows(eyes[1])])[None].astype(np.float32),
                      "eyelids": np.array([[0.1, 0.2]], np.float32),
                      "jaw": aa_to_6d_rows(jaw)[None].astype(np.float32)},
            "camera": {"R": np.zeros((1, 6), np.float32), "t": np.zeros((1, 3), np.float32),
                       "fl": np.ones((1, 1), np.float32), "pp": np.zeros((1, 2), np.float32)},
            "opencv": {"R": V[None, :3, :3].astype(np.float32), "t": V[None, :3, 3].astype(np.float32),
                       "K": K[None].astype(np.float32)},
            "img_size": np.array([H, W]), "frame_id": f"{t:05d}", "global_step": 10 * t,
        }
        torch.save(payload, root / f"checkpoint/{t:05d}.frame")
        frames.append({"transform_matrix": np.linalg.inv(V).tolist(), "file_path": f"images/{t:05d}.png",
                       "mesh_path": f"meshes/{t:05d}.obj", "exp_path": f"flame/exp/{t:05d}.txt"})
    if transforms:
        V0, K0 = gt_camera(0)
        top = {"w": float(W), "h": float(H), "fl_x": K0[0, 0], "fl_y": K0[1, 1], "cx": K0[0, 2], "cy": K0[1, 2]}
        # per-frame intrinsics too (our fixture cameras differ per frame; INSTA's are constant)
        for t, f in enumerate(frames):
            _, K = gt_camera(t)
            f.update({"fl_x": K[0, 0], "fl_y": K[1, 1], "cx": K[0, 2], "cy": K[1, 2]})
        for name, fr in (("train", frames[:-2]), ("test", frames[-2:]), ("val", frames[-1:])):
            (root / f"transforms_{name}.json").write_text(json.dumps({**top, "frames": fr}))
    return root


IM_F = np.diag([1.0, -1.0, -1.0])


def imavatar_clip(clip: Path, n: int, offset: int = 0):
    """One IMavatar clip: world_mat = [F R | 4 F t] (x4 world, y-up/z-back camera), intrinsics
    [-fx/W, fy/H, cx/W, cy/H]; raw frames on grey + mask/."""
    (clip / "image").mkdir(parents=True)
    (clip / "mask").mkdir()
    frames = []
    intr = None
    for k in range(n):
        V, K = gt_camera(offset + k)
        if intr is None:
            intr = [-K[0, 0] / W, K[1, 1] / H, K[0, 2] / W, K[1, 2] / H]
        else:   # IMavatar has one intrinsics per clip: reuse the first camera's K
            K = np.array([[-intr[0] * W, 0, intr[2] * W], [0, intr[1] * H, intr[3] * H], [0, 0, 1]])
        img, mask = render_markers(V, K, background=(0.5, 0.5, 0.5))
        m = np.full((H, W), 255, np.uint8)
        m[:5, :5] = 0
        iio.imwrite(clip / f"image/{k + 1}.png", to_u8(img))
        iio.imwrite(clip / f"mask/{k + 1}.png", m)
        wm = np.concatenate([IM_F @ V[:3, :3], (4.0 * (IM_F @ V[:3, 3]))[:, None]], 1)
        pose = [0.0] * 15
        pose[0:3] = [0.01 * k, 0.02, 0.0]
        pose[6:9] = [0.2, 0.0, 0.0]
        frames.append({"file_path": f"./image/{k + 1}", "world_mat": wm.tolist(),
                       "expression": [0.1 * k] * 50, "pose": pose, "bbox": [0, 0, 1, 1],
                       "flame_keypoints": [[0.0, 0.0]]})
    (clip / "flame_params.json").write_text(json.dumps({"frames": frames, "intrinsics": intr,
                                                        "shape_params": [0.5] * 100}))
    return clip


def write_imavatar(root: Path):
    return imavatar_clip(root, N_FRAMES)


def imavatar_reference_projection(world_mat, intr, P_metres):
    """IMavatar's own projection (preprocess/DECA/optimize.py `projection`, landmarks in [-1, 1])."""
    p = 4.0 * P_metres                                   # FLAME head scaled by 4
    cam = np.asarray(world_mat)[:, :3] @ p + np.asarray(world_mat)[:, 3]
    ndc_k = [intr[0] * 2, intr[1] * 2, intr[2] * 2 - 1, intr[3] * 2 - 1]
    i = cam[0] / cam[2] * ndc_k[0] + ndc_k[2]
    j = cam[1] / cam[2] * ndc_k[1] + ndc_k[3]
    return np.array([(i + 1) * W / 2, (j + 1) * H / 2])   # landmark = (ndc + 1) * size / 2


@pytest.fixture(scope="session")
def templates(tmp_path_factory):
    """Each fixture is written once per session; tests get a private copy (they may damage it)."""
    base = tmp_path_factory.mktemp("templates")
    return {"vhap": write_vhap(base / "vhap"), "insta": write_insta(base / "insta"),
            "imavatar": write_imavatar(base / "imavatar")}


def _copy(templates, name, tmp_path):
    return Path(shutil.copytree(templates[name], tmp_path / name))


@pytest.fixture
def vhap_root(templates, tmp_path):
    return _copy(templates, "vhap", tmp_path)


@pytest.fixture
def insta_root(templates, tmp_path):
    return _copy(templates, "insta", tmp_path)


@pytest.fixture
def imavatar_root(templates, tmp_path):
    return _copy(templates, "imavatar", tmp_path)


def raises_naming(path, fn, *args, **kwargs):
    with pytest.raises(DatasetError) as info:
        fn(*args, **kwargs)
    msg = str(info.value)
    assert msg.startswith(str(path)), f"message does not start with {path}: {msg}"
    assert isinstance(info.value, ValueError)
    return msg


# ------------------------------------------------------------------------------------------------
# Conventions: the canonical cameras of each tracker
# ------------------------------------------------------------------------------------------------

def test_conventions_canonical_cameras():
    from stavatar_ti.data import conventions as cv

    # VHAP's monocular camera: OpenGL c2w = identity rotation at (0, 0, 1), looking at the origin
    c2w = np.eye(4)
    c2w[2, 3] = 1.0
    V = cv.opengl_c2w_to_viewmat(c2w)
    np.testing.assert_allclose(V, [[1, 0, 0, 0], [0, -1, 0, 0], [0, 0, -1, 1], [0, 0, 0, 1]], atol=1e-15)
    K = cv.intrinsics_matrix(100, 100, 40, 30)
    u, v, z = cv.project(V, K, [[0.0, 0.0, 0.0], [0.01, 0.02, 0.0]]).T
    assert (u[0], v[0], z[0]) == (40, 30, 1)
    assert u[1] > 40 and v[1] < 30                      # world x right, world y up (image up)
    # IMavatar's default world_mat [I | (0, 0, -4)] in the x4 world: the camera is 1 m from the head
    Vi = cv.imavatar_viewmat([[1, 0, 0, 0], [0, 1, 0, 0], [0, 0, 1, -4]])
    np.testing.assert_allclose(cv.camera_center(Vi), [0, 0, 1])
    Ki = cv.imavatar_intrinsics([-1500 / 512, 1500 / 512, 0.5, 0.5], 512, 512)
    np.testing.assert_allclose(Ki, [[1500, 0, 256], [0, 1500, 256], [0, 0, 1]])
    u, v, z = cv.project(Vi, Ki, [[0.01, 0.02, 0.0]])[0]
    assert u > 256 and v < 256 and z == pytest.approx(1.0)
    # IMavatar's "old format": pixels of a 512 x 512 image
    np.testing.assert_allclose(cv.imavatar_intrinsics([-1500, 1500, 256, 256], 256, 256),
                               [[750, 0, 128], [0, 750, 128], [0, 0, 1]])
    with pytest.raises(DatasetError, match="sign pattern"):
        cv.imavatar_intrinsics([1.0, 1.0, 0.5, 0.5], 64, 64, "x.json")
    # FoV <-> focal, rotation layouts
    assert cv.fov_to_focal(cv.focal_to_fov(123.0, 80), 80) == pytest.approx(123.0)
    aa = np.array([0.3, -0.2, 0.1])
    R = Rotation.from_rotvec(aa).as_matrix()
    for stored in (aa, aa[None], R, R[None], np.concatenate([R[0], R[1]])[None]):
        np.testing.assert_allclose(cv.rotation_to_axis_angle(stored), aa, atol=1e-12)
    np.testing.assert_allclose(cv.rotation_6d_to_axis_angle(np.concatenate([R.T[0], R.T[1]])), -aa, atol=1e-12)


# ------------------------------------------------------------------------------------------------
# Round trips: markers land where the renderer drew them
# ------------------------------------------------------------------------------------------------

def test_fixture_writers_match_the_source_projection():
    """The IMavatar writer is checked against IMavatar's own projection formula."""
    V, K = gt_camera(3)
    intr = [-K[0, 0] / W, K[1, 1] / H, K[0, 2] / W, K[1, 2] / H]
    wm = np.concatenate([IM_F @ V[:3, :3], (4.0 * (IM_F @ V[:3, 3]))[:, None]], 1)
    for P in (P_RED, P_BLUE):
        np.testing.assert_allclose(imavatar_reference_projection(wm, intr, P), project_with(V, K, P), atol=1e-9)


def test_vhap_roundtrip(vhap_root):
    ds = load_vhap(vhap_root)
    assert ds.format == "vhap" and ds.head_model == "flame2023"
    assert [len(ds.splits[s]) for s in ("train", "val", "test")] == [4, 0, 2]
    assert [r.timestep for r in ds.splits["test"]] == [4, 5]
    for r in ds.frames:
        assert r.viewmat.shape == (4, 4) and r.viewmat.dtype == np.float64 and r.K.dtype == np.float64
        assert (r.width, r.height) == (W, H)
        V, K = gt_camera(r.timestep)
        np.testing.assert_allclose(r.viewmat, V, atol=1e-9)
        np.testing.assert_allclose(r.K, K, atol=1e-9)
        assert_markers_land(r)
        assert r.load_mask().shape == (H, W) and r.load_mask().any()
        p = r.params
        ref = vhap_params(r.timestep)
        assert p["expr"].shape == (100,) and p["shape"].shape == (300,) and p["eyes_pose"].shape == (6,)
        assert p["static_offset"].shape == (5143, 3)
        assert all(v.dtype == np.float32 for v in p.values())
        np.testing.assert_allclose(p["jaw_pose"], ref["jaw_pose"][0], rtol=1e-6)
        np.testing.assert_allclose(p["translation"], ref["translation"][0], rtol=1e-6)
    # identical shape / static offsets are shared, not copied per timestep
    assert ds.frames[0].params["static_offset"] is ds.frames[-1].params["static_offset"]


def test_vhap_fov_only_fallback(tmp_path):
    """Only the shared camera_angle_x: focal from the FoV, principal point at the image centre."""
    ds = load_vhap(write_vhap(tmp_path / "v", centred_fov_only=True))
    for r in ds.frames:
        np.testing.assert_allclose(r.K, gt_camera(r.timestep, centred=True)[1], atol=1e-9)
        assert_markers_land(r)


@pytest.mark.parametrize("with_transforms", [False, True])
def test_insta_roundtrip(tmp_path, with_transforms):
    root = write_insta(tmp_path / "insta", transforms=with_transforms)
    ds = load_insta(root, test_frames=2)
    assert ds.format == "insta" and ds.head_model == "flame2020"
    n = [len(ds.splits[s]) for s in ("train", "val", "test")]
    assert n == ([4, 1, 2] if with_transforms else [4, 0, 2])
    for r in ds.frames:
        V, K = gt_camera(r.timestep)
        np.testing.assert_allclose(r.viewmat, V, atol=1e-6)
        np.testing.assert_allclose(r.K, K, atol=1e-4)
        assert_markers_land(r)
        # 6D (rows) -> axis-angle
        t = r.timestep
        np.testing.assert_allclose(r.params["jaw_pose"], [0.05 * t + 0.1, 0.02, -0.01], atol=1e-6)
        np.testing.assert_allclose(r.params["eyes_pose"], [0.1, -0.05 * t, 0.02, 0.12, -0.05 * t, 0.0], atol=1e-6)
        np.testing.assert_array_equal(r.params["rotation"], 0)
        np.testing.assert_array_equal(r.params["translation"], 0)
        assert r.params["expr"].shape == (100,) and r.params["shape"].shape == (300,)
        assert r.params["eyelids"].shape == (2,)
        # RGBA matte -> mask from alpha, composited over white
        m = r.load_mask()
        assert not m[:6, :6].any() and m[10:, 10:].all()
        np.testing.assert_allclose(r.load_image()[:6, :6], 1.0)


def test_insta_raw_tracker_output_and_default_split(tmp_path):
    root = write_insta(tmp_path / "tracker", image_dir="input")
    with pytest.warns(DatasetWarning, match="only 6 frames"):
        ds = load_dataset(root)
    assert ds.format == "insta"
    # a sequence shorter than the producers' 350 test frames keeps training frames (15 % test)
    assert len(ds.splits["test"]) == 1 and len(ds.splits["train"]) == N_FRAMES - 1
    assert_markers_land(ds.frames[0])


def test_imavatar_roundtrip_and_scale(imavatar_root):
    ds = load_imavatar(imavatar_root, test_frames=2)
    assert ds.format == "imavatar" and ds.head_model == "flame2020"
    assert [len(ds.splits[s]) for s in ("train", "val", "test")] == [4, 0, 2]
    for r in ds.frames:
        V, _ = gt_camera(r.timestep)
        np.testing.assert_allclose(r.viewmat, V, atol=1e-9)
        assert_markers_land(r)
        # x4 world scale removed: the metric depth of a marker equals the ground-truth depth
        depth = (r.viewmat[:3, :3] @ P_RED + r.viewmat[:3, 3])[2]
        assert depth == pytest.approx((V[:3, :3] @ P_RED + V[:3, 3])[2], abs=1e-9)
        assert 0.5 < depth < 1.0
        C = -r.viewmat[:3, :3].T @ r.viewmat[:3, 3]
        np.testing.assert_allclose(C, -V[:3, :3].T @ V[:3, 3], atol=1e-9)
        p = r.params
        assert p["expr"].shape == (50,) and p["shape"].shape == (100,) and p["eyes_pose"].shape == (6,)
        np.testing.assert_allclose(p["jaw_pose"], [0.2, 0, 0], atol=1e-7)
        np.testing.assert_allclose(p["rotation"], [0.01 * r.timestep, 0.02, 0], atol=1e-7)
        # the raw frame (grey background) is composited over white with the mask
        np.testing.assert_allclose(r.load_image()[:5, :5], 1.0)
        assert abs(r.load_image()[-1, -1, 0] - 0.5) < 0.01


def test_imavatar_multi_clip_split(tmp_path):
    subject = tmp_path / "subj" / "subj"
    for k, name in enumerate(["MVI_1810", "MVI_1812", "MVI_1814"]):
        imavatar_clip(subject / name, 2, offset=2 * k)
    root = tmp_path / "subj"
    assert detect_format(root) == "imavatar"
    ds = load_imavatar(root)   # yufeng's clips: the subject config's test clip, MVI_1812
    assert [len(ds.splits[s]) for s in ("train", "val", "test")] == [4, 0, 2]
    assert {r.image_path.parts[-3] for r in ds.splits["test"]} == {"MVI_1812"}
    with pytest.warns(DatasetWarning, match="swapped"):
        ds = load_dataset(root, test_subdirs=["MVI_1814"])
    assert {r.image_path.parts[-3] for r in ds.splits["test"]} == {"MVI_1814"}
    assert sorted(r.timestep for r in ds.frames) == list(range(6))
    for r in ds.frames:
        assert_markers_land(r)
    raises_naming(root, load_imavatar, root, test_subdirs=["MVI_9999"])


# ------------------------------------------------------------------------------------------------
# Detection and forced formats
# ------------------------------------------------------------------------------------------------

def test_detect_each_format(vhap_root, insta_root, imavatar_root, tmp_path):
    assert detect_format(vhap_root) == "vhap"
    assert detect_format(insta_root) == "insta"
    assert detect_format(imavatar_root) == "imavatar"
    assert load_dataset(vhap_root).format == "vhap"
    assert load_dataset(insta_root, test_frames=2).format == "insta"
    assert load_dataset(imavatar_root, format="PointAvatar").format == "imavatar"
    empty = tmp_path / "empty"
    empty.mkdir()
    raises_naming(empty, detect_format, empty)
    raises_naming(tmp_path / "nope", load_dataset, tmp_path / "nope")


def test_forced_wrong_format(vhap_root, insta_root):
    msg = raises_naming(vhap_root, load_dataset, vhap_root, format="insta")
    assert "not a 'insta' dataset" in msg and "vhap" in msg
    msg = raises_naming(insta_root, load_dataset, insta_root, format="imavatar")
    assert "flame_params.json" in msg
    with pytest.raises(DatasetError, match="unknown dataset format"):
        load_dataset(vhap_root, format="colmap")


# ------------------------------------------------------------------------------------------------
# Bad inputs: DatasetError whose message starts with the offending file
# ------------------------------------------------------------------------------------------------

def _edit_json(path, fn):
    data = json.loads(path.read_text())
    fn(data)
    path.write_text(json.dumps(data))


def _set_npz(path, **kv):
    d = dict(np.load(path))
    d.update(kv)
    np.savez(path, **d)


VHAP_BAD = {
    "missing_image": lambda r: ((r / "images/00002_00.png").unlink(), r / "images/00002_00.png")[1],
    "missing_mask": lambda r: ((r / "fg_masks/00005_00.png").unlink(), r / "fg_masks/00005_00.png")[1],
    "missing_params": lambda r: ((r / "flame_param/00001.npz").unlink(), r / "flame_param/00001.npz")[1],
    "missing_transforms": lambda r: ((r / "transforms_test.json").unlink(), r / "transforms_test.json")[1],
    "malformed_json": lambda r: ((r / "transforms_train.json").write_text('{"frames": [1, 2'),
                                 r / "transforms_train.json")[1],
    "missing_key": lambda r: (_edit_json(r / "transforms_train.json", lambda d: d["frames"][1].pop("transform_matrix")),
                              r / "transforms_train.json")[1],
    "missing_param_key": lambda r: (np.savez(r / "flame_param/00003.npz", **{k: v for k, v in vhap_params(3).items()
                                                                                if k != "jaw_pose"}),
                                    r / "flame_param/00003.npz")[1],
    "nan_params": lambda r: (_set_npz(r / "flame_param/00004.npz", expr=np.full((1, 100), np.nan)),
                             r / "flame_param/00004.npz")[1],
    "inf_camera": lambda r: (_edit_json(r / "transforms_test.json",
                                        lambda d: d["frames"][0]["transform_matrix"][0].__setitem__(3, float("inf"))),
                             r / "transforms_test.json")[1],
    "nan_focal": lambda r: (_edit_json(r / "transforms_test.json",
                                       lambda d: d["frames"][1].__setitem__("fl_x", float("nan"))),
                            r / "transforms_test.json")[1],
    "singular_camera": lambda r: (_edit_json(r / "transforms_train.json",
                                             lambda d: d["frames"][0].__setitem__("transform_matrix",
                                                                                  [[1, 0, 0, 0], [1, 0, 0, 0],
                                                                                   [0, 0, 1, 1], [0, 0, 0, 1]])),
                                  r / "transforms_train.json")[1],
    "two_timesteps_in_one_file": lambda r: (_set_npz(r / "flame_param/00002.npz", expr=np.zeros((2, 100))),
                                            r / "flame_param/00002.npz")[1],
    "timestep_without_params": lambda r: (_edit_json(r / "transforms_test.json",
                                                     lambda d: d["frames"][1].__setitem__("timestep_index", 9)),
                                          r / "transforms_test.json")[1],
    "param_size_mismatch": lambda r: (_set_npz(r / "flame_param/00005.npz", expr=np.zeros((1, 50))),
                                      r / "flame_param/00005.npz")[1],
    "corrupt_npz": lambda r: ((r / "flame_param/00000.npz").write_bytes(b"not a zip"), r / "flame_param/00000.npz")[1],
}


@pytest.mark.parametrize("case", sorted(VHAP_BAD))
def test_vhap_bad_inputs(vhap_root, case):
    bad = VHAP_BAD[case](vhap_root)
    raises_naming(bad, load_vhap, vhap_root)
    raises_naming(bad, load_dataset, vhap_root, format="vhap")


def _torch_save(path, payload):
    torch.save(payload, path)


def _edit_frame(path, fn):
    from stavatar_ti.data import load_frame_file

    payload = load_frame_file(path)
    fn(payload)
    torch.save(payload, path)


class Evil:
    """A class a checkpoint must never be allowed to reference."""


INSTA_BAD = {
    "missing_image": lambda r: ((r / "images/00003.png").unlink(), r / "images/00003.png")[1],
    "corrupt_frame": lambda r: ((r / "checkpoint/00002.frame").write_bytes(b"garbage"),
                                r / "checkpoint/00002.frame")[1],
    "missing_key": lambda r: (_edit_frame(r / "checkpoint/00001.frame", lambda p: p.pop("opencv")),
                              r / "checkpoint/00001.frame")[1],
    "missing_flame_key": lambda r: (_edit_frame(r / "checkpoint/00001.frame", lambda p: p["flame"].pop("jaw")),
                                    r / "checkpoint/00001.frame")[1],
    "nan_params": lambda r: (_edit_frame(r / "checkpoint/00004.frame",
                                         lambda p: p["flame"]["exp"].__setitem__((0, 3), np.nan)),
                             r / "checkpoint/00004.frame")[1],
    "inf_camera": lambda r: (_edit_frame(r / "checkpoint/00000.frame",
                                         lambda p: p["opencv"]["t"].__setitem__((0, 2), np.inf)),
                             r / "checkpoint/00000.frame")[1],
    "singular_camera": lambda r: (_edit_frame(r / "checkpoint/00005.frame",
                                              lambda p: p["opencv"].__setitem__("R", np.zeros((1, 3, 3), np.float32))),
                                  r / "checkpoint/00005.frame")[1],
    "zero_focal": lambda r: (_edit_frame(r / "checkpoint/00005.frame",
                                         lambda p: p["opencv"]["K"].__setitem__((0, 0, 0), 0.0)),
                             r / "checkpoint/00005.frame")[1],
    "degenerate_6d": lambda r: (_edit_frame(r / "checkpoint/00003.frame",
                                            lambda p: p["flame"].__setitem__("jaw", np.zeros((1, 6), np.float32))),
                                r / "checkpoint/00003.frame")[1],
    "param_size_mismatch": lambda r: (_edit_frame(r / "checkpoint/00003.frame",
                                                  lambda p: p["flame"].__setitem__("exp",
                                                                                   np.zeros((1, 50), np.float32))),
                                      r / "checkpoint/00003.frame")[1],
    "unsafe_pickle": lambda r: (_torch_save(r / "checkpoint/00002.frame", {"flame": Evil()}),
                                r / "checkpoint/00002.frame")[1],
}


@pytest.mark.parametrize("case", sorted(INSTA_BAD))
def test_insta_bad_inputs(insta_root, case):
    bad = INSTA_BAD[case](insta_root)
    msg = raises_naming(bad, load_insta, insta_root)
    if case == "unsafe_pickle":
        assert "weights_only" in msg and "Evil" in msg


def test_insta_transforms_bad_inputs(tmp_path):
    root = write_insta(tmp_path / "a", transforms=True)
    # a transforms frame whose .frame (parameters) does not exist
    (root / "checkpoint/00004.frame").unlink()
    raises_naming(root / "checkpoint/00004.frame", load_insta, root)
    # an OpenGL-flipped transform_matrix disagrees with the .frame camera
    root = write_insta(tmp_path / "b", transforms=True)
    _edit_json(root / "transforms_train.json",
               lambda d: d["frames"][0].__setitem__("transform_matrix",
                                                    (np.array(d["frames"][0]["transform_matrix"]) @ GL_FLIP).tolist()))
    msg = raises_naming(root / "transforms_train.json", load_insta, root)
    assert "disagrees" in msg
    root = write_insta(tmp_path / "c", transforms=True)
    (root / "transforms_val.json").write_text("[not json")
    raises_naming(root / "transforms_val.json", load_insta, root)


def test_insta_numpy1_pickles_load(insta_root):
    """Public metrical-tracker files were written under numpy 1.x (numpy.core.multiarray names)."""
    src = insta_root / "checkpoint/00000.frame"
    zin = zipfile.ZipFile(src)
    data = {n: zin.read(n) for n in zin.namelist()}
    infos = {n: zin.getinfo(n) for n in zin.namelist()}
    zin.close()
    with zipfile.ZipFile(src, "w") as zout:
        for n, b in data.items():
            if n.endswith("data.pkl"):
                assert b"numpy._core.multiarray" in b or b"numpy.core.multiarray" in b
                b = b.replace(b"numpy._core.multiarray", b"numpy.core.multiarray")
            zout.writestr(infos[n], b)
    ds = load_insta(insta_root, test_frames=2)
    assert_markers_land(ds.frames[0])


IM_BAD = {
    "missing_image": lambda r: ((r / "image/3.png").unlink(), r / "image/3.png")[1],
    "missing_mask": lambda r: ((r / "mask/2.png").unlink(), r / "mask/2.png")[1],
    "malformed_json": lambda r: ((r / "flame_params.json").write_text("{"), r / "flame_params.json")[1],
    "missing_key": lambda r: (_edit_json(r / "flame_params.json", lambda d: d.pop("intrinsics")),
                              r / "flame_params.json")[1],
    "missing_frame_key": lambda r: (_edit_json(r / "flame_params.json", lambda d: d["frames"][2].pop("world_mat")),
                                    r / "flame_params.json")[1],
    "nan_expression": lambda r: (_edit_json(r / "flame_params.json",
                                            lambda d: d["frames"][1]["expression"].__setitem__(0, float("nan"))),
                                 r / "flame_params.json")[1],
    "inf_world_mat": lambda r: (_edit_json(r / "flame_params.json",
                                           lambda d: d["frames"][0]["world_mat"][2].__setitem__(3, float("-inf"))),
                                r / "flame_params.json")[1],
    "singular_world_mat": lambda r: (_edit_json(r / "flame_params.json",
                                                lambda d: d["frames"][4].__setitem__("world_mat", [[0, 0, 0, 0]] * 3)),
                                     r / "flame_params.json")[1],
    "zero_focal": lambda r: (_edit_json(r / "flame_params.json", lambda d: d["intrinsics"].__setitem__(1, 0.0)),
                             r / "flame_params.json")[1],
    "short_pose": lambda r: (_edit_json(r / "flame_params.json",
                                        lambda d: d["frames"][3].__setitem__("pose", [0.0] * 12)),
                             r / "flame_params.json")[1],
    "expression_count_mismatch": lambda r: (_edit_json(r / "flame_params.json",
                                                       lambda d: d["frames"][5].__setitem__("expression", [0.0] * 100)),
                                            r / "flame_params.json")[1],
}


@pytest.mark.parametrize("case", sorted(IM_BAD))
def test_imavatar_bad_inputs(imavatar_root, case):
    bad = IM_BAD[case](imavatar_root)
    raises_naming(bad, load_imavatar, imavatar_root)


@pytest.mark.parametrize("fmt", ["vhap", "insta", "imavatar"])
def test_bad_images_fail_at_load_image_and_check(templates, tmp_path, fmt):
    root = _copy(templates, fmt, tmp_path)
    kwargs = {} if fmt == "vhap" else {"test_frames": 2}
    ds = load_dataset(root, **kwargs)
    unreadable, wrong = ds.frames[1].image_path, ds.frames[2].image_path
    unreadable.write_bytes(b"\x89PNG\r\n\x1a\n garbage")
    iio.imwrite(wrong, np.zeros((H + 2, W, 3), np.uint8))
    ds = load_dataset(root, **kwargs)   # still loads: images are lazy
    raises_naming(unreadable, ds.frames[1].load_image)
    msg = raises_naming(wrong, ds.frames[2].load_image)
    assert f"expected {W}x{H}" in msg
    raises_naming(unreadable, check_dataset, root, check_images=True, **kwargs)


# ------------------------------------------------------------------------------------------------
# The checker
# ------------------------------------------------------------------------------------------------

def test_check_dataset_report(vhap_root, imavatar_root):
    rep = check_dataset(vhap_root, check_images=True)
    assert rep.format == "vhap" and rep.split_counts == {"train": 4, "val": 0, "test": 2}
    assert rep.resolutions == [(W, H)] and rep.images_checked == N_FRAMES
    assert rep.param_sizes["expr"] == (100,) and rep.problems == []
    rep = check_dataset(imavatar_root, test_frames=2)
    assert any("50 expression" in p for p in rep.problems)


def _script_main():
    import importlib.util

    spec = importlib.util.spec_from_file_location("check_dataset_script", ROOT / "scripts/check_dataset.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod.main


def test_check_dataset_script(vhap_root, capsys, monkeypatch):
    # good data, in-process through the script's own main() (argument parsing + the library call)
    monkeypatch.setenv("ENABLE_TAICHI_HEADER_PRINT", "False")
    assert _script_main()([str(vhap_root), "--check-images"]) == 0
    out, err = capsys.readouterr()
    assert "vhap" in out and "train: 4" in out and f"{W}x{H}" in out and err == ""
    # bad data, as a real process: exit code 1, one line on stderr, no traceback
    script = ROOT / "scripts/check_dataset.py"
    bad_file = vhap_root / "flame_param/00003.npz"
    _set_npz(bad_file, rotation=np.array([[np.nan, 0, 0]]))
    bad = subprocess.run([sys.executable, str(script), str(vhap_root), "--format", "vhap"], capture_output=True,
                         text=True, cwd=ROOT, timeout=120)
    assert bad.returncode == 1
    lines = bad.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"error: {bad_file}: "), bad.stderr
    assert "Traceback" not in bad.stderr and "NaN" in lines[0]


def test_run_check_in_process(insta_root, tmp_path):
    import io

    out, err = io.StringIO(), io.StringIO()
    assert run_check(str(insta_root), stdout=out, stderr=err) == 0
    assert "insta" in out.getvalue() and err.getvalue() == ""
    out, err = io.StringIO(), io.StringIO()
    assert run_check(str(insta_root), format="vhap", stdout=out, stderr=err) == 1
    assert err.getvalue().count("\n") == 1 and err.getvalue().startswith(f"error: {insta_root}: ")
