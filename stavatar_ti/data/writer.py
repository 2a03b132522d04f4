"""Write a sequence in the VHAP / NeRF export layout that `stavatar_ti.data.load_vhap` reads
(used by the synthetic generator and by own-video preprocessing).

    with atomic_output(out, overwrite) as tmp:     # everything goes to <out>.tmp-<pid>, renamed at the end
        write_frame(tmp, t, image, mask, params)   # images/, fg_masks/, flame_param/
        write_canonical_params(tmp, params)        # canonical_flame_param.npz
        write_transforms(tmp, viewmat, K, width, height, train_ids, test_ids)

Layout (method.md Sec. 11, VHAP's `export_as_nerf_dataset`):

    images/{t:05d}_00.png          RGB (8 bit)
    fg_masks/{t:05d}_00.png        foreground mask (8 bit)
    flame_param/{t:05d}.npz        per-frame FLAME parameters as given (e.g. rotation [1,3], expr [1,E])
    transforms_{train,val,test}.json   intrinsics, timestep_indices, camera_indices, frames[] with
                                   file_path, transform_matrix (camera-to-world, OpenGL axes), ...

Cameras come in the project's convention (`stavatar_ti.data.records`): OpenCV world->camera
`viewmat` [4,4] and pixel `K` [3,3]; the files hold camera-to-world in OpenGL axes,
inv(viewmat) @ diag(1, -1, -1, 1), and, as VHAP writes it, ``cy`` measured from the bottom of the
image (``h - K[1,2]``; see `stavatar_ti.data.conventions.nerf_intrinsics`). The top level of each
transforms file says ``"exporter": "stavatar_ti"`` (VHAP's readers ignore unknown keys).
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import shutil
from pathlib import Path

import numpy as np

SUBDIRS = ("images", "fg_masks", "flame_param")
EXPORTER = "stavatar_ti"   # top-level marker of the transforms files this writer produces


def split_frames(frames: int, test_fraction: float) -> tuple[list, list]:
    """Train / test timesteps: the last round(test_fraction * frames) frames (at least 1 when
    frames >= 2) are the test split. Raises ValueError for a fraction outside [0, 1)."""
    if not (0.0 <= float(test_fraction) < 1.0):
        raise ValueError(f"test_fraction: expected a value in [0, 1), got {test_fraction!r}")
    n_test = 0 if frames < 2 else min(frames - 1, max(1, int(round(test_fraction * frames))))
    ids = list(range(frames))
    return ids[: frames - n_test], ids[frames - n_test:]


def camera_fields(K: np.ndarray, width: int, height: int) -> dict:
    """NeRF intrinsics keys as VHAP writes them: camera_angle_x/y in radians, focal lengths and principal
    point in pixels with ``cy`` measured from the bottom (``height - K[1,2]``, VHAP's OpenGL camera)."""
    return {"camera_angle_x": 2.0 * math.atan(width / (2.0 * float(K[0, 0]))),
            "camera_angle_y": 2.0 * math.atan(height / (2.0 * float(K[1, 1]))),
            "fl_x": float(K[0, 0]), "fl_y": float(K[1, 1]), "cx": float(K[0, 2]), "cy": float(height - K[1, 2]),
            "w": int(width), "h": int(height)}


def transform_matrix(viewmat: np.ndarray) -> np.ndarray:
    """OpenCV world->camera [4,4] -> camera-to-world in OpenGL / Blender axes (x right, y up, z back)."""
    return np.linalg.inv(np.asarray(viewmat, np.float64)) @ np.diag([1.0, -1.0, -1.0, 1.0])


def frame_entry(t: int, viewmat: np.ndarray, K: np.ndarray, width: int, height: int) -> dict:
    """One `frames[]` record of transforms_*.json for timestep `t` (camera 0)."""
    return {"timestep_index": int(t), "camera_index": 0,
            "file_path": f"images/{t:05d}_00.png", "fg_mask_path": f"fg_masks/{t:05d}_00.png",
            "flame_param_path": f"flame_param/{t:05d}.npz",
            "transform_matrix": transform_matrix(viewmat).tolist(), **camera_fields(K, width, height)}


def write_frame(root, t: int, image: np.ndarray, mask: np.ndarray, params: dict) -> None:
    """Write frame `t`: image uint8 [H,W,3], mask uint8 [H,W] (or float in [0,1]), and the FLAME
    parameter dict (numpy arrays) as a compressed npz. Raises ValueError for a wrong dtype/shape."""
    import imageio.v3 as iio
    root = Path(root)
    image = np.asarray(image)
    if image.dtype != np.uint8 or image.ndim != 3 or image.shape[2] != 3:
        raise ValueError(f"image: expected uint8 [H,W,3], got {image.dtype} {list(image.shape)}")
    mask = np.asarray(mask)
    if mask.dtype != np.uint8:
        mask = np.clip(np.rint(mask.astype(np.float64) * 255.0), 0, 255).astype(np.uint8)
    if mask.shape != image.shape[:2]:
        raise ValueError(f"mask: expected [H,W] = {list(image.shape[:2])}, got {list(mask.shape)}")
    iio.imwrite(root / "images" / f"{t:05d}_00.png", image)
    iio.imwrite(root / "fg_masks" / f"{t:05d}_00.png", mask)
    np.savez_compressed(root / "flame_param" / f"{t:05d}.npz", **params)


def write_transforms(root, viewmat: np.ndarray, K: np.ndarray, width: int, height: int,
                     train: list, test: list, val: list = ()) -> None:
    """transforms_{train,val,test}.json for one static camera (VHAP monocular export).

    `K` is [3,3], or [T,3,3] indexed by timestep when the intrinsics change per frame (a moving
    crop); the top-level intrinsics are then those of timestep 0 and every frame carries its own.
    Raises ValueError for another shape."""
    root = Path(root)
    K = np.asarray(K, np.float64)
    if K.shape[-2:] != (3, 3) or K.ndim not in (2, 3):
        raise ValueError(f"K: expected [3,3] or [T,3,3], got {list(K.shape)}")
    Kt = (lambda t: K) if K.ndim == 2 else (lambda t: K[t])
    top = camera_fields(Kt(0), width, height)
    for name, ids in (("train", list(train)), ("val", list(val)), ("test", list(test))):
        doc = dict(top, exporter=EXPORTER, timestep_indices=ids, camera_indices=[0],
                   frames=[frame_entry(t, viewmat, Kt(t), width, height) for t in ids])
        (root / f"transforms_{name}.json").write_text(json.dumps(doc, indent=1))


def _remove_stale_tmp(out: Path) -> None:
    """Delete ``<out>.tmp-<pid>`` folders of runs that were killed (their process is gone)."""
    for p in out.parent.glob(f"{out.name}.tmp-*"):
        pid = p.name.rsplit("-", 1)[-1]
        if not pid.isdigit() or int(pid) == os.getpid():
            continue
        try:
            os.kill(int(pid), 0)
        except ProcessLookupError:
            shutil.rmtree(p, ignore_errors=True)
        except OSError:
            pass


def check_output(out_dir, overwrite: bool = False) -> Path:
    """`out_dir` as a Path; raises FileExistsError if it exists and not `overwrite` (callers check
    before their slow work, `atomic_output` again when it starts writing)."""
    out = Path(out_dir)
    if out.exists() and not overwrite:
        raise FileExistsError(f"{out}: already exists (pass overwrite=True to replace it)")
    return out


def write_canonical_params(root, params: dict) -> None:
    """canonical_flame_param.npz: `params` (one frame, VHAP layout) with pose, translation and
    expression set to zero (the identity stays)."""
    canon = dict(params)
    for k in ("rotation", "neck_pose", "jaw_pose", "eyes_pose", "translation", "expr"):
        canon[k] = np.zeros_like(canon[k])
    np.savez_compressed(Path(root) / "canonical_flame_param.npz", **canon)


@contextlib.contextmanager
def atomic_output(out_dir, overwrite: bool = False):
    """Yield a fresh sibling folder ``<out>.tmp-<pid>`` (with images/, fg_masks/, flame_param/) that
    replaces `out_dir` when the block finishes; on any exception it is deleted, so an interrupted
    run never leaves a half-written dataset. Raises FileExistsError if `out_dir` exists and not
    `overwrite`."""
    out = check_output(out_dir, overwrite)
    out.parent.mkdir(parents=True, exist_ok=True)
    _remove_stale_tmp(out)
    tmp = out.with_name(f"{out.name}.tmp-{os.getpid()}")
    if tmp.exists():
        shutil.rmtree(tmp)
    try:
        for sub in SUBDIRS:
            (tmp / sub).mkdir(parents=True)
        yield tmp
        if out.exists():
            old = out.with_name(f"{out.name}.old-{os.getpid()}")
            out.rename(old)
            tmp.rename(out)
            shutil.rmtree(old, ignore_errors=True)
        else:
            tmp.rename(out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


__all__ = ["atomic_output", "camera_fields", "check_output", "frame_entry", "split_frames", "transform_matrix",
           "write_canonical_params", "write_frame", "write_transforms"]
