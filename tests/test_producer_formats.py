"""Readers against data written the way each producer writes it (issue 20).

The fixtures below follow the producers' source, not this project's writer: key names, dtypes, shapes,
folder nesting and camera conventions of

* VHAP ``vhap/export_as_nerf_dataset.py`` (``NeRFDatasetWriter.write``, ``TrackedFLAMEDatasetWriter``
  with ``replace_cam_params`` / ``relocate_flame_meshes``, ``split_json``) and ``vhap/util/camera.py``
  (``convert_camera_convention("opencv->opengl")``: c2w columns y, z negated and ``K[1,2] = H - K[1,2]``);
* metrical-tracker ``tracker.py`` ``save_checkpoint`` (a dict of numpy arrays, torch-saved) with
  PyTorch3D's ``_opencv_from_cameras_projection``, and INSTA ``scripts/transforms.py``;
* IMavatar ``preprocess`` output (``flame_params.json``, ``image/``, ``mask/``) in PointAvatar's
  ``<subject>/<subject>/<clip>/`` nesting, with the clip names of its ``code/confs/subject{1,2,3}.conf``.

Camera round trip: world points projected with the producer's OWN formula (transcribed below, from
the file as written) must land within 0.5 px of an independent pinhole projection through the
loaded ``viewmat``/``K``, and on the ground-truth OpenCV camera the fixture started from.

Assumptions (facts the producers' code leaves open; a wrong one would show as a failing round trip
against real data, not here):
* VHAP's image rows: its mask code maps NDC to pixels as ``((x + 1) / 2 * w, (1 - y) / 2 * h)`` from the
  top-left corner (``MaskFromFLAME.get_mask_tilted_line``: ``world_to_ndc(flip_y=True)`` then
  ``(xy * 0.5 + 0.5) * [w, h]``), pixel centres at +0.5 (nvdiffrast).
* metrical-tracker ``.frame`` files: torch >= 1.6 zip files (``<name>/data.pkl`` + ``<name>/version``,
  no ``byteorder`` record, which torch 2.0 added) pickled under numpy 1.x (``numpy.core.multiarray``).
* IMavatar's DECA preprocessing keeps the camera rotation fixed at identity (PointAvatar's
  ``real_dataset.py``: "Camera rotation is actually the same for all frames"); PointAvatar's
  PyTorch3D camera (``R`` used as row-vector rotation) is checked on such cameras only.
"""

from __future__ import annotations

import json
import math
import zipfile
from pathlib import Path

import imageio.v3 as iio
import numpy as np
import pytest
import torch
from scipy.spatial.transform import Rotation

from stavatar_ti.data import (DatasetError, DatasetWarning, check_head_model, detect_format, load_dataset,
                              load_frame_file, load_imavatar, load_insta, load_vhap)

RNG = np.random.default_rng(7)
# world points around a head at the origin (metres)
POINTS = np.concatenate([RNG.uniform(-0.09, 0.09, (40, 2)), RNG.uniform(-0.08, 0.1, (40, 1))], 1)
GL_FLIP = np.diag([1.0, -1.0, -1.0, 1.0])


def pinhole(viewmat, K, P):
    """Independent OpenCV pinhole projection: [N,2] pixels (top-left origin, centres at +0.5)."""
    cam = P @ np.asarray(viewmat)[:3, :3].T + np.asarray(viewmat)[:3, 3]
    assert np.all(cam[:, 2] > 0)
    return np.stack([K[0, 0] * cam[:, 0] / cam[:, 2] + K[0, 2], K[1, 1] * cam[:, 1] / cam[:, 2] + K[1, 2]], 1)


def look_at(C, target=(0.0, 0.0, 0.0), up=(0.0, 1.0, 0.0)):
    """OpenCV world->camera viewmat of a camera at C looking at `target` (y down in the image)."""
    C = np.asarray(C, np.float64)
    z = np.asarray(target, np.float64) - C
    z /= np.linalg.norm(z)
    x = np.cross(z, np.asarray(up, np.float64))   # image right for a y-up world
    x /= np.linalg.norm(x)
    y = np.cross(z, x)
    R = np.stack([x, y, z], 0)
    V = np.eye(4)
    V[:3, :3], V[:3, 3] = R, -R @ C
    return V


def blank_png(path: Path, w: int, h: int, channels: int = 3):
    path.parent.mkdir(parents=True, exist_ok=True)
    iio.imwrite(path, np.full((h, w, channels), 200, np.uint8) if channels > 1 else np.full((h, w), 255, np.uint8))


# ------------------------------------------------------------------------------------------------
# VHAP export (monocular and NeRSemble multi-view)
# ------------------------------------------------------------------------------------------------

def vhap_projection(frame: dict, P):
    """VHAP's own projection of world points with a ``transforms*.json`` frame, transcribed from
    ``NeRFDataset.__getitem__`` (K from fl_x, fl_y, cx, cy; ``extrinsic = c2w.inverse()``) and
    ``NVDiffRenderer.projection_from_intrinsics`` / ``world_to_ndc(flip_y=True)`` + ``(xy*0.5+0.5)*[w,h]``."""
    w, h = frame["w"], frame["h"]
    fx, fy, cx, cy = frame["fl_x"], frame["fl_y"], frame["cx"], frame["cy"]
    RT = np.linalg.inv(np.asarray(frame["transform_matrix"], np.float64))
    near, far = 0.1, 10.0
    proj = np.zeros((4, 4))
    proj[0, 0], proj[1, 1] = fx * 2 / w, fy * 2 / h
    proj[0, 2], proj[1, 2] = (w - 2 * cx) / w, (h - 2 * cy) / h
    proj[2, 2], proj[2, 3], proj[3, 2] = -(far + near) / (far - near), -2 * far * near / (far - near), -1
    clip = np.concatenate([P, np.ones((len(P), 1))], 1) @ (proj @ RT).T
    ndc = clip[:, :3] / clip[:, 3:]
    ndc[:, 1] *= -1                                   # flip_y=True
    return (ndc[:, :2] * 0.5 + 0.5) * np.array([w, h])


def vhap_params(t, rows=5143):
    """One ``flame_param/{t:05d}.npz`` as ``write_flame_param`` stores it (float32, VHAP's shapes)."""
    rng = np.random.default_rng(t)
    f32 = np.float32
    return {"translation": rng.normal(0, 0.01, (1, 3)).astype(f32), "rotation": rng.normal(0, 0.1, (1, 3)).astype(f32),
            "neck_pose": rng.normal(0, 0.05, (1, 3)).astype(f32), "jaw_pose": np.abs(rng.normal(0, 0.1, (1, 3))).astype(f32),
            "eyes_pose": rng.normal(0, 0.05, (1, 6)).astype(f32), "shape": rng.normal(0, 1, 300).astype(f32),
            "expr": rng.normal(0, 1, (1, 100)).astype(f32), "static_offset": np.full((1, rows, 3), 1e-3, f32)}


def write_vhap_export(root: Path, cameras: dict, timesteps: int, offset_rows: int = 5143):
    """A VHAP export. ``cameras``: camera_index -> (OpenCV w2c [4,4], OpenCV K [3,3], W, H, focal or None).

    A camera with a normalised ``focal`` is a monocular track (``replace_cam_params``: c2w = I at
    (0, 0, 1), ``fl = focal * max(h, w)``, ``cx = w/2, cy = h/2``); otherwise the calibrated camera goes
    through ``convert_camera_convention("opencv->opengl")``. Every c2w is then moved by
    ``M = [I | -T_mean]`` (``relocate_flame_meshes``). Returns the ground-truth OpenCV cameras of the
    relocated world: camera_index -> (viewmat, K)."""
    T_mean = np.array([0.012, -0.02, 0.03])
    M = np.eye(4)
    M[:3, 3] = -T_mean
    frames, truth = [], {}
    for t in range(timesteps):
        np.savez(root / "flame_param" / f"{t:05d}.npz", **vhap_params(t, offset_rows))
        for ci, (w2c, K, W, H, focal) in cameras.items():
            if focal is not None:   # TrackedFLAMEDatasetWriter.replace_cam_params
                c2w = np.eye(4)
                c2w[2, 3] = 1.0
                fl = focal * max(H, W)
                fields = {"cx": W / 2, "cy": H / 2, "fl_x": fl, "fl_y": fl}
                K_cv = np.array([[fl, 0, W / 2], [0, fl, H / 2], [0, 0, 1.0]])
            else:                   # calibrated camera: opencv -> opengl (c2w y, z columns; cy from the bottom)
                c2w = np.linalg.inv(w2c)
                c2w[:3, [1, 2]] *= -1
                K_gl = K.copy()
                K_gl[1, 2] = H - K_gl[1, 2]
                fields = {"cx": K_gl[0, 2], "cy": K_gl[1, 2], "fl_x": K_gl[0, 0], "fl_y": K_gl[1, 1]}
                K_cv = K
            c2w = M @ c2w
            truth[ci] = (np.linalg.inv(c2w @ GL_FLIP), K_cv)
            frame = {"timestep_index": t, "timestep_index_original": t, "timestep_id": f"frame_{t:05d}",
                     "camera_index": ci, "camera_id": f"2222000{ci:02d}", **fields, "h": H, "w": W,
                     "camera_angle_x": math.atan(W / (fields["fl_x"] * 2)) * 2,
                     "camera_angle_y": math.atan(H / (fields["fl_y"] * 2)) * 2,
                     "transform_matrix": c2w.tolist(), "file_path": f"images/{t:05d}_{ci:02d}.png",
                     "fg_mask_path": f"fg_masks/{t:05d}_{ci:02d}.png", "flame_param_path": f"flame_param/{t:05d}.npz"}
            blank_png(root / frame["file_path"], W, H)
            blank_png(root / frame["fg_mask_path"], W, H, channels=1)
            frames.append(frame)
    last = frames[-1]
    db = {"frames": frames, **{k: last[k] for k in ("cx", "cy", "fl_x", "fl_y", "h", "w", "camera_angle_x",
                                                      "camera_angle_y")},
          "timestep_indices": list(range(timesteps)), "camera_indices": sorted(cameras)}
    (root / "transforms.json").write_text(json.dumps(db, indent=4))
    canon = vhap_params(0, offset_rows)
    canon.update({k: np.zeros_like(canon[k]) for k in ("translation", "rotation", "neck_pose", "eyes_pose", "expr")})
    canon["jaw_pose"] = np.array([[0.3, 0, 0]])
    np.savez(root / "canonical_flame_param.npz", **canon)
    _split_json(root, db)
    return truth


def _split_json(root: Path, db: dict, train_ratio=0.7):
    """VHAP ``split_json``: 70 % of the timesteps train (ceil); several cameras: camera 8 (else the last)
    is the validation camera on the training timesteps; test = the remaining timesteps, all cameras."""
    head = {k: v for k, v in db.items() if k not in ("frames", "timestep_indices", "camera_indices")}
    ts = sorted(db["timestep_indices"])
    nt_train = int(np.ceil(len(ts) * train_ratio))
    cams = db["camera_indices"]
    if len(cams) > 1:
        val_cams = [8] if 8 in cams else [cams[-1]]
        train_cams = [c for c in cams if c not in val_cams]
    else:
        val_cams, train_cams = [], cams
    out = {"train": dict(head, frames=[], timestep_indices=ts[:nt_train], camera_indices=train_cams),
           "val": dict(head, frames=[], timestep_indices=ts[:nt_train], camera_indices=val_cams),
           "test": dict(head, frames=[], timestep_indices=ts[nt_train:], camera_indices=cams)}
    for f in db["frames"]:
        if f["timestep_index"] < nt_train:
            out["train" if f["camera_index"] in train_cams else "val"]["frames"].append(f)
        else:
            out["test"]["frames"].append(f)
    for name, doc in out.items():
        (root / f"transforms_{name}.json").write_text(json.dumps(doc, indent=4))


def _vhap_root(tmp_path, name):
    root = tmp_path / name
    for sub in ("images", "fg_masks", "flame_param"):
        (root / sub).mkdir(parents=True)
    return root


def _nersemble_cameras(W=110, H=80):
    """Three calibrated NeRSemble-like cameras (indices 0, 8 = the front validation camera, 15) whose
    principal points are off the image centre (cy 5 px above it: H - 2 cy = 10 px)."""
    cams = {}
    for ci, yaw in ((0, -0.5), (8, 0.0), (15, 0.45)):
        C = 1.0 * np.array([np.sin(yaw), 0.05, np.cos(yaw)])
        K = np.array([[150.0 + ci, 0, W / 2 + 3.0 - 0.2 * ci], [0, 151.0 + ci, H / 2 - 5.0], [0, 0, 1]])
        cams[ci] = (look_at(C), K, W, H, None)
    return cams


@pytest.mark.parametrize("layout", ["monocular", "nersemble"])
def test_vhap_cameras_match_vhaps_own_projection(tmp_path, layout):
    root = _vhap_root(tmp_path, layout)
    cams = ({0: (None, None, 96, 72, 1.55)} if layout == "monocular" else _nersemble_cameras())
    truth = write_vhap_export(root, cams, timesteps=4)
    ds = load_dataset(root)
    assert ds.format == "vhap" and ds.head_model == "flame2023"
    if layout == "monocular":   # 4 timesteps: ceil(2.8) = 3 train, 1 test; no validation frames
        assert [len(ds.splits[s]) for s in ("train", "val", "test")] == [3, 0, 1]
    else:                       # cameras 0 and 15 train, 8 validation, all three test
        assert [len(ds.splits[s]) for s in ("train", "val", "test")] == [6, 3, 3]
        assert {r.camera for r in ds.splits["val"]} == {8}
    listed = {(f["timestep_index"], f["camera_index"]): f
              for s in ("train", "val", "test") for f in json.loads((root / f"transforms_{s}.json").read_text())["frames"]}
    for r in ds.frames:
        f = listed[(r.timestep, r.camera)]
        ours = pinhole(r.viewmat, r.K, POINTS)
        theirs = vhap_projection(f, POINTS)
        assert np.abs(ours - theirs).max() < 0.5, (layout, r.camera, np.abs(ours - theirs).max())
        V, K = truth[r.camera]
        assert np.abs(ours - pinhole(V, K, POINTS)).max() < 1e-6
        if layout == "nersemble":
            # reading the stored cy from the top (the old reader) puts every point H - 2 cy = 10 px too low
            top = r.K.copy()
            top[1, 2] = f["cy"]
            np.testing.assert_allclose(pinhole(r.viewmat, top, POINTS)[:, 1] - theirs[:, 1], f["h"] - 2 * r.K[1, 2],
                                       atol=1e-6)
            assert f["h"] - 2 * r.K[1, 2] == pytest.approx(10.0)
        p = r.params
        assert p["static_offset"].shape == (5143, 3) and p["shape"].shape == (300,) and p["expr"].shape == (100,)
        np.testing.assert_allclose(p["jaw_pose"], vhap_params(r.timestep)["jaw_pose"][0])


def test_our_writer_writes_what_vhap_writes(tmp_path):
    """The project's own VHAP writer stores cy from the bottom too, so VHAP's projection of our files is
    right, and our reader reads them back exactly (an off-centre per-frame crop, as own-video data has)."""
    from stavatar_ti.data.writer import atomic_output, write_frame, write_transforms

    W = H = 64
    V = look_at([0.05, 0.02, 0.9])
    Ks = np.stack([np.array([[120.0, 0, 30.0 + t], [0, 121.0, 25.0 - t], [0, 0, 1]]) for t in range(3)])
    out = tmp_path / "own"
    with atomic_output(out) as tmp:
        for t in range(3):
            write_frame(tmp, t, np.zeros((H, W, 3), np.uint8), np.ones((H, W), np.float32), vhap_params(t, 40))
        write_transforms(tmp, V, Ks, W, H, [0, 1], [2])
    ds = load_vhap(out)
    assert ds.head_model is None   # our own export: the head model is not FLAME 2023 by default
    frames = {f["timestep_index"]: f for s in ("train", "test")
              for f in json.loads((out / f"transforms_{s}.json").read_text())["frames"]}
    for r in ds.frames:
        np.testing.assert_allclose(r.K, Ks[r.timestep], atol=1e-12)
        assert np.abs(vhap_projection(frames[r.timestep], POINTS) - pinhole(V, Ks[r.timestep], POINTS)).max() < 1e-6


# ------------------------------------------------------------------------------------------------
# metrical-tracker checkpoints + INSTA
# ------------------------------------------------------------------------------------------------

def rows_6d(R):
    """PyTorch3D ``matrix_to_rotation_6d``: the first two rows, flattened."""
    return np.concatenate([R[0], R[1]])


def p3d_rotation_6d_to_matrix(d6):
    """PyTorch3D ``rotation_6d_to_matrix`` (Gram-Schmidt, rows b1, b2, b3)."""
    a1, a2 = d6[:3], d6[3:]
    b1 = a1 / np.linalg.norm(a1)
    b2 = a2 - (b1 @ a2) * b1
    b2 /= np.linalg.norm(b2)
    return np.stack([b1, b2, np.cross(b1, b2)])


def p3d_projection(camera: dict, img_size, P):
    """metrical-tracker's own camera: PyTorch3D ``PerspectiveCameras(R=rotation_6d_to_matrix(R), T=t,
    focal_length=fl, principal_point=pp)`` in NDC (``in_ndc``): ``X_view = X R + T`` (row vectors),
    ``x_ndc = fl X/Z + pp``, NDC +x left / +y up with the shorter side spanning [-1, 1]; screen pixel
    ``u = W/2 - x_ndc s``, ``v = H/2 - y_ndc s``, ``s = min(H, W)/2``."""
    R = p3d_rotation_6d_to_matrix(np.asarray(camera["R"], np.float64)[0])
    T = np.asarray(camera["t"], np.float64)[0]
    fl = float(np.asarray(camera["fl"]).reshape(-1)[0])
    pp = np.asarray(camera["pp"], np.float64).reshape(2)
    H, W = int(img_size[0]), int(img_size[1])
    X = P @ R + T
    ndc = fl * X[:, :2] / X[:, 2:] + pp
    s = min(H, W) / 2.0
    return np.stack([W / 2.0 - ndc[:, 0] * s, H / 2.0 - ndc[:, 1] * s], 1)


def opencv_from_p3d(camera: dict, img_size):
    """PyTorch3D ``_opencv_from_cameras_projection`` (what ``save_checkpoint`` stores under 'opencv')."""
    R = p3d_rotation_6d_to_matrix(np.asarray(camera["R"], np.float64)[0])
    T = np.asarray(camera["t"], np.float64)[0].copy()
    R = R.copy()
    T[:2] *= -1
    R[:, :2] *= -1
    R_cv = R.T
    H, W = int(img_size[0]), int(img_size[1])
    s = min(H, W) / 2.0
    fl = float(np.asarray(camera["fl"]).reshape(-1)[0])
    pp = np.asarray(camera["pp"], np.float64).reshape(2)
    c = -pp * s + np.array([W / 2.0, H / 2.0])
    K = np.array([[fl * s, 0, c[0]], [0, fl * s, c[1]], [0, 0, 1.0]])
    return R_cv, T, K


def torch1_save(payload: dict, path: Path):
    """torch.save, then rewritten as torch 1.x under numpy 1.x wrote it: only ``<name>/data.pkl`` and
    ``<name>/version`` in the zip, numpy arrays reconstructed by ``numpy.core.multiarray._reconstruct``."""
    tmp = path.with_suffix(".tmp")
    torch.save(payload, tmp)
    with zipfile.ZipFile(tmp) as z:
        prefix = z.namelist()[0].split("/")[0]
        pkl = z.read(f"{prefix}/data.pkl").replace(b"numpy._core.multiarray", b"numpy.core.multiarray")
    tmp.unlink()
    assert b"numpy.core.multiarray\n_reconstruct" in pkl
    name = path.stem
    with zipfile.ZipFile(path, "w", zipfile.ZIP_STORED) as z:
        z.writestr(f"{name}/data.pkl", pkl)
        z.writestr(f"{name}/version", "3\n")


def write_tracker_output(root: Path, n: int, H=48, W=64, image_dir="input"):
    """metrical-tracker ``output/<actor>/``: ``checkpoint/{frame_id}.frame`` (``save_checkpoint``'s dict)
    and the cropped inputs (``input/``; INSTA's ``images/`` are RGBA). Returns the payloads."""
    (root / "checkpoint").mkdir(parents=True)
    payloads = []
    f32 = np.float32
    for t in range(n):
        rot = Rotation.from_rotvec([0.05 * t, 0.3 - 0.04 * t, 0.02]).as_matrix()
        camera = {"R": rows_6d(rot)[None].astype(f32), "t": np.array([[0.01 * t, -0.02, 1.1]], f32),
                  "fl": np.array([[4.2]], f32), "pp": np.array([[0.03, -0.05]], f32)}
        img_size = np.array([H, W])                    # self.image_size.cpu().numpy()[0]: (height, width)
        R_cv, t_cv, K = opencv_from_p3d(camera, img_size)
        jaw = Rotation.from_rotvec([0.1 + 0.02 * t, 0.0, 0.01]).as_matrix()
        eye = Rotation.from_rotvec([0.05, -0.02 * t, 0.0]).as_matrix()
        payload = {
            "flame": {"exp": RNG.normal(0, 0.5, (1, 100)).astype(f32), "shape": np.linspace(-1, 1, 300)[None].astype(f32),
                      "tex": np.zeros((1, 140), f32), "sh": np.zeros((1, 9, 3), f32),
                      "eyes": np.concatenate([rows_6d(eye), rows_6d(eye)])[None].astype(f32),
                      "eyelids": np.array([[0.1, 0.3]], f32), "jaw": rows_6d(jaw)[None].astype(f32)},
            "camera": camera,
            "opencv": {"R": R_cv[None].astype(f32), "t": t_cv[None].astype(f32), "K": K[None].astype(f32)},
            "img_size": img_size, "frame_id": f"{t:05d}", "global_step": 100 * t,
        }
        torch1_save(payload, root / "checkpoint" / f"{t:05d}.frame")
        blank_png(root / image_dir / f"{t:05d}.png", W, H, channels=4 if image_dir == "images" else 3)
        payloads.append(payload)
    return payloads


def write_insta_transforms(root: Path, payloads: list, test_frames: int):
    """INSTA ``scripts/transforms.py``: top-level intrinsics of the first frame (all values float),
    ``transform_matrix = inv([R | t])`` (OpenCV), train = all but the last ``-t``, test = the last
    ``-t``, val = the last 20; the expression coefficients and meshes beside them."""
    p0 = payloads[0]
    h, w = p0["img_size"][0], p0["img_size"][1]
    K = p0["opencv"]["K"][0]
    data = {"w": w, "h": h, "cx": K[0, 2], "cy": K[1, 2], "fl_x": K[0, 0], "fl_y": K[1, 1],
            "camera_angle_x": math.atan(w / (K[0, 0] * 2)) * 2, "camera_angle_y": math.atan(h / (K[1, 1] * 2)) * 2}
    data["x_fov"], data["y_fov"] = data["camera_angle_x"] * 180 / math.pi, data["camera_angle_y"] * 180 / math.pi
    data["integer_depth_scale"] = 1 / 1000
    data = {k: float(v) for k, v in data.items()}
    frames = []
    for p in payloads:
        fid = p["frame_id"]
        w2c = np.eye(4)
        w2c[:3, :3], w2c[:3, 3] = p["opencv"]["R"][0], p["opencv"]["t"][0]
        frames.append({"transform_matrix": np.linalg.inv(w2c).tolist(), "file_path": f"images/{fid}.png",
                       "mesh_path": f"meshes/{fid}.obj", "exp_path": f"flame/exp/{fid}.txt",
                       "depth_path": f"depth/{fid}.png", "seg_mask_path": f"seg_mask/{fid}.png"})
        (root / "flame/exp").mkdir(parents=True, exist_ok=True)
        np.savetxt(root / f"flame/exp/{fid}.txt", p["flame"]["exp"][0].flatten("F"), fmt="%.8f")
        (root / "meshes").mkdir(exist_ok=True)
        (root / f"meshes/{fid}.obj").write_text("v 0 0 0\n")
    for name, fr in (("", frames), ("_train", frames[:-test_frames]), ("_test", frames[-test_frames:]),
                     ("_val", frames[-20:])):
        (root / f"transforms{name}.json").write_text(json.dumps({**data, "frames": fr}, indent=4, sort_keys=True))


@pytest.mark.parametrize("layout", ["tracker", "insta"])
def test_metrical_tracker_cameras_match_pytorch3d(tmp_path, layout):
    root = tmp_path / layout
    payloads = write_tracker_output(root, 6, image_dir="input" if layout == "tracker" else "images")
    if layout == "insta":
        write_insta_transforms(root, payloads, test_frames=2)
        ds = load_dataset(root)
        assert [len(ds.splits[s]) for s in ("train", "val", "test")] == [4, 6, 2]   # val = last 20 (all 6)
        with pytest.warns(DatasetWarning, match="data.test_frames=3 is ignored"):
            assert len(load_dataset(root, test_frames=3).splits["test"]) == 2
    else:
        ds = load_dataset(root, test_frames=2)
        assert [len(ds.splits[s]) for s in ("train", "val", "test")] == [4, 0, 2]
    assert ds.format == "insta" and ds.head_model == "flame2020"
    for r in ds.frames:
        p = payloads[r.timestep]
        theirs = p3d_projection(p["camera"], p["img_size"], POINTS)
        assert np.abs(pinhole(r.viewmat, r.K, POINTS) - theirs).max() < 0.5
        assert (r.width, r.height) == (64, 48)
        jaw = Rotation.from_matrix(p3d_rotation_6d_to_matrix(p["flame"]["jaw"][0].astype(np.float64))).as_rotvec()
        np.testing.assert_allclose(r.params["jaw_pose"], jaw, atol=1e-5)
        np.testing.assert_allclose(r.params["expr"], p["flame"]["exp"][0], atol=1e-7)
        assert r.params["eyelids"].shape == (2,) and r.params_path.name == f"{r.timestep:05d}.frame"


def test_frame_files_stay_behind_the_restricted_unpickler(tmp_path):
    """A torch-1.x style .frame loads with weights_only=True; one referencing any other global is refused."""
    write_tracker_output(tmp_path / "a", 1)
    assert load_frame_file(tmp_path / "a/checkpoint/00000.frame")["frame_id"] == "00000"
    evil = tmp_path / "evil.frame"
    torch.save({"flame": {"exp": np.zeros(3)}, "x": Path("/")}, evil)   # pathlib.PosixPath is not allowed
    with pytest.raises(DatasetError, match="weights_only"):
        load_frame_file(evil)


def test_insta_output_without_checkpoints_says_what_to_copy(tmp_path):
    root = tmp_path / "insta_out"
    payloads = write_tracker_output(tmp_path / "tracker", 4, image_dir="images")
    root.mkdir()
    write_insta_transforms(root, payloads, test_frames=1)
    for t in range(4):
        blank_png(root / f"images/{t:05d}.png", 64, 48, channels=4)
    for call in (lambda: detect_format(root), lambda: load_dataset(root), lambda: load_dataset(root, format="insta"),
                 lambda: load_insta(root)):
        with pytest.raises(DatasetError) as info:
            call()
        msg = str(info.value)
        assert msg.startswith(str(root / "checkpoint")) and "\n" not in msg
        assert "copy metrical-tracker's output/<actor>/checkpoint/" in msg


def test_short_tracker_sequences_get_a_configurable_test_split(tmp_path):
    root = tmp_path / "gb"
    write_tracker_output(root, 6)
    with pytest.warns(DatasetWarning, match="only 6 frames.*data.test_frames"):
        ds = load_dataset(root)
    assert [len(ds.splits[s]) for s in ("train", "test")] == [5, 1]
    ds = load_dataset(root, test_frames=0)
    assert [len(ds.splits[s]) for s in ("train", "test")] == [6, 0]
    for bad in (6, 99):
        with pytest.raises(DatasetError, match=r"data.test_frames=\d+ leaves no training frames") as info:
            load_dataset(root, test_frames=bad)
        assert str(info.value).startswith(str(root / "checkpoint"))
    for bad in (-1, 2.5, True, "3"):
        with pytest.raises(DatasetError, match="non-negative integer"):
            load_insta(root, test_frames=bad)
    with pytest.raises(DatasetError, match="data.test_subdirs does not apply"):
        load_dataset(root, test_subdirs=["x"])


# ------------------------------------------------------------------------------------------------
# IMavatar / PointAvatar
# ------------------------------------------------------------------------------------------------

S = 64   # IMavatar images are square (img_res [512, 512] / [256, 256])


def imavatar_projection(world_mat, intr, P):
    """IMavatar's own projection (``preprocess/DECA/optimize.py``), in pixels: head scaled by 4,
    ``cam = world_mat @ [4 p, 1]``, NDC ``i = x/z * 2 s0 + 2 s2 - 1``, pixel ``(i + 1) * S / 2``."""
    cam = (4.0 * P) @ np.asarray(world_mat)[:, :3].T + np.asarray(world_mat)[:, 3]
    i = cam[:, 0] / cam[:, 2] * intr[0] * 2 + intr[2] * 2 - 1
    j = cam[:, 1] / cam[:, 2] * intr[1] * 2 + intr[3] * 2 - 1
    return np.stack([(i + 1) * S / 2, (j + 1) * S / 2], 1)


def pointavatar_projection(world_mat, intr, P):
    """PointAvatar's own camera (``code/datasets/real_dataset.py`` + ``point_avatar_model.py``): NDC
    intrinsics ``[2 s0, 2 s1, -(2 s2 - 1), -(2 s3 - 1)]``; fx < 0 -> negate K's column 0 and world_mat's
    row 0; then world_mat[:3, 2] and world_mat[2, 3] negated; ``PerspectiveCameras(R, T, K)``:
    ``X = (4p) R + T`` (row vectors), ``x_ndc = K00 X/Z + K02``; screen ``u = (1 - x_ndc) S/2``."""
    Km = np.zeros((4, 4))
    Km[0, 0], Km[1, 1] = intr[0] * 2, intr[1] * 2
    Km[0, 2], Km[1, 2] = -(intr[2] * 2 - 1.0), -(intr[3] * 2 - 1.0)
    Km[3, 2] = Km[2, 3] = 1.0
    wm = np.concatenate([np.asarray(world_mat, np.float64), [[0, 0, 0, 1]]], 0)
    if Km[0, 0] < 0:
        Km[:, 0] *= -1
        wm[0, :] *= -1
    wm[:3, 2] *= -1
    wm[2, 3] *= -1
    X = (4.0 * P) @ wm[:3, :3] + wm[:3, 3]
    x = Km[0, 0] * X[:, 0] / X[:, 2] + Km[0, 2]
    y = Km[1, 1] * X[:, 1] / X[:, 2] + Km[1, 2]
    return np.stack([(1 - x) * S / 2, (1 - y) * S / 2], 1)


def write_imavatar_clip(clip: Path, n: int, t0: int = 0):
    """One clip as IMavatar's preprocessing writes it: ``flame_params.json`` (frames[] with file_path
    "./image/<k>", world_mat 3x4 = [I | t] in the x4 world, expression [50], pose [15],
    flame_keypoints [68,2], bbox; shape_params [100]; intrinsics [-fx/S, fy/S, cx/S, cy/S]), 1-based
    ``image/<k>.png`` and ``mask/<k>.png``."""
    intr = [-4.1, 4.1, 0.51, 0.47]
    frames = []
    for k in range(1, n + 1):
        wm = [[1.0, 0, 0, 0.02 * (t0 + k)], [0, 1.0, 0, -0.03], [0, 0, 1.0, -4.2 + 0.01 * k]]
        frames.append({"file_path": f"./image/{k}", "world_mat": wm, "expression": RNG.normal(0, 1, 50).tolist(),
                       "pose": ([0.02 * k, 0.0, 0.0] + [0.0] * 3 + [0.1, 0, 0] + [0.0] * 6),
                       "flame_keypoints": np.zeros((68, 2)).tolist(), "bbox": [0.1, 0.1, 0.9, 0.9]})
        blank_png(clip / f"image/{k}.png", S, S)
        blank_png(clip / f"mask/{k}.png", S, S, channels=1)
    (clip / "flame_params.json").write_text(json.dumps({"frames": frames, "shape_params": [0.1] * 100,
                                                        "intrinsics": intr}))
    return intr


@pytest.mark.parametrize("subject,clips,test_clip", [
    ("yufeng", ["MVI_1810", "MVI_1812", "MVI_1814"], "MVI_1812"),   # PointAvatar subject1.conf
    ("marcel", ["MVI_1797", "MVI_1801", "MVI_1802"], "MVI_1802"),   # subject2.conf
    ("soubhik", ["test", "train"], "test"),                         # subject3.conf: the clip named test
])
def test_pointavatar_subjects_split_and_cameras(tmp_path, subject, clips, test_clip):
    root = tmp_path / subject
    intr = {c: write_imavatar_clip(root / subject / c, 3, 3 * i) for i, c in enumerate(clips)}
    ds = load_dataset(root)
    assert ds.format == "imavatar"
    assert {r.image_path.parts[-3] for r in ds.splits["test"]} == {test_clip}
    assert {r.image_path.parts[-3] for r in ds.splits["train"]} == set(clips) - {test_clip}
    for r in ds.frames:
        clip = r.image_path.parts[-3]
        data = json.loads((root / subject / clip / "flame_params.json").read_text())
        wm = data["frames"][int(r.image_path.stem) - 1]["world_mat"]
        ours = pinhole(r.viewmat, r.K, POINTS)
        assert np.abs(ours - imavatar_projection(wm, intr[clip], POINTS)).max() < 0.5
        assert np.abs(ours - pointavatar_projection(wm, intr[clip], POINTS)).max() < 0.5
        assert r.params["expr"].shape == (50,) and r.params["shape"].shape == (100,)


def test_pointavatar_swapped_and_unknown_splits_warn(tmp_path):
    root = tmp_path / "soubhik"
    for c in ("test", "train"):
        write_imavatar_clip(root / "soubhik" / c, 2)
    with pytest.warns(DatasetWarning, match="swapped.*clip 'train' is in the test split"):
        ds = load_imavatar(root, test_subdirs="train")
    assert {r.image_path.parts[-3] for r in ds.splits["test"]} == {"train"}
    other = tmp_path / "someone"
    for c in ("clip_a", "clip_b"):
        write_imavatar_clip(other / "someone" / c, 2)
    with pytest.warns(DatasetWarning, match="no clip named 'test'.*data.test_subdirs"):
        ds = load_imavatar(other)
    assert {r.image_path.parts[-3] for r in ds.splits["test"]} == {"clip_b"}
    with pytest.raises(DatasetError, match="names every clip"):
        load_imavatar(other, test_subdirs=["clip_a", "clip_b"])
    with pytest.raises(DatasetError, match="data.test_frames applies to a single clip"):
        load_imavatar(other, test_frames=1)


def test_single_imavatar_clip_camera_and_split(tmp_path):
    """SplattingAvatar's layout: flame_params.json in the folder itself; the last test_frames frames."""
    clip = tmp_path / "clip"
    intr = write_imavatar_clip(clip, 5)
    ds = load_dataset(clip, test_frames=2)
    assert [len(ds.splits[s]) for s in ("train", "test")] == [3, 2]
    data = json.loads((clip / "flame_params.json").read_text())
    for r in ds.frames:
        wm = data["frames"][int(r.image_path.stem) - 1]["world_mat"]
        assert np.abs(pinhole(r.viewmat, r.K, POINTS) - imavatar_projection(wm, intr, POINTS)).max() < 0.5
    with pytest.raises(DatasetError, match="needs several clip folders"):
        load_dataset(clip, test_subdirs=["x"])


# ------------------------------------------------------------------------------------------------
# Head model: FLAME-tracked data with the default open head (issue 20, item 3)
# ------------------------------------------------------------------------------------------------

def test_check_head_model_errors_and_warnings(tmp_path):
    root = _vhap_root(tmp_path, "flame")
    write_vhap_export(root, {0: (None, None, 64, 64, 1.5)}, timesteps=3)
    ds = load_vhap(root)
    with pytest.raises(DatasetError) as info:   # the open head: 5588 template vertices, 5708 with teeth
        check_head_model(ds, "open_head", 5708, 5588, 300, 100)
    msg = str(info.value)
    assert msg.startswith(str(root / "flame_param/00000.npz")) and "\n" not in msg
    assert "static_offset has 5143 vertex rows" in msg and "FLAME 2023 (+ teeth)" in msg
    assert "model.head_model=<path to flame2023.pkl>" in msg
    # static offsets switched off: no error, but the head-model and truncation warnings
    with pytest.warns(DatasetWarning) as rec:
        got = check_head_model(ds, "open_head", 5708, 5588, 20, 16, use_static_offset=False)
    assert len(got) == 3 and len(rec) == 3
    assert "tracked with FLAME 2023 (+ teeth) but model.head_model=open_head" in got[0]
    assert "expr has 100 coefficients, model.n_expr=16 keeps the first 16" in got[1]
    assert "shape has 300 coefficients, model.n_shape=20" in got[2]
    # the right FLAME file: nothing to say
    assert check_head_model(ds, "/models/flame2023.pkl", 5143, 5023, 300, 100) == []
    with pytest.warns(DatasetWarning, match="tracked with FLAME 2023.*generic_model.pkl"):
        check_head_model(ds, "/models/FLAME2020/generic_model.pkl", 5143, 5023, 300, 100)


def test_train_script_names_the_file_and_the_fix(tmp_path, capsys, monkeypatch):
    """scripts/train.py on a FLAME-tracked VHAP export with the default open head: exit 1, one line."""
    import importlib.util

    monkeypatch.setenv("ENABLE_TAICHI_HEADER_PRINT", "False")
    root = _vhap_root(tmp_path, "flame")
    write_vhap_export(root, {0: (None, None, 32, 32, 1.5)}, timesteps=3)
    spec = importlib.util.spec_from_file_location("train_script", Path(__file__).resolve().parents[1] / "scripts/train.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    out = tmp_path / "run"
    smoke = Path(__file__).resolve().parents[1] / "configs/smoke.yaml"
    assert mod.main(["--config", str(smoke), "--data", str(root), "--out", str(out)]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith(f"error: {root / 'flame_param/00000.npz'}: static_offset")
    assert "model.head_model=<path to flame2023.pkl>" in err[0]
    assert not out.exists()
    # the data.* settings reach the reader: an unknown test clip is named, nothing is written
    assert mod.main(["--config", str(smoke), "--data", str(root), "--out", str(out), "data.test_frames=1"]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "data.test_frames does not apply to a 'vhap' dataset" in err[0]


def test_checker_lists_split_warnings_and_takes_the_split_settings(tmp_path):
    import io

    from stavatar_ti.data import check_dataset, run_check

    root = tmp_path / "soubhik"
    for c in ("test", "train"):
        write_imavatar_clip(root / "soubhik" / c, 2)
    assert not any("swapped" in p for p in check_dataset(root).problems)
    rep = check_dataset(root, test_subdirs=["train"])
    assert any("looks swapped" in p for p in rep.problems) and rep.split_counts["test"] == 2
    out, err = io.StringIO(), io.StringIO()
    assert run_check(str(root), stdout=out, stderr=err, test_subdirs=["nope"]) == 1
    assert err.getvalue().count("\n") == 1 and "test_subdirs ['nope'] are not clip folders" in err.getvalue()
