"""Reader of the VHAP / GaussianAvatars NeRF-style export (STAvatar's own input format).

Layout (VHAP ``vhap/export_as_nerf_dataset.py``; read by GaussianAvatars ``scene/dataset_readers.py``):

    transforms_{train,val,test}.json   frames[] + shared intrinsics (all three files are required)
    images/{timestep:05d}_{camera:02d}.png     RGB, or RGBA (composited over the background)
    fg_masks/{timestep:05d}_{camera:02d}.png   optional foreground masks (``fg_mask_path``)
    flame_param/{timestep:05d}.npz     per-timestep FLAME parameters (``flame_param_path``)
    canonical_flame_param.npz          optional (marks the "dynamic NeRF" layout; not read)

Per frame: ``file_path`` (".png" appended when it has no extension, as GaussianAvatars does),
``transform_matrix`` (4x4 camera-to-world, OpenGL/Blender axes -> `conventions.opengl_c2w_to_viewmat`),
``fl_x, fl_y, cx, cy, w, h, camera_angle_x, camera_angle_y`` (per frame and at top level, pixels /
radians -> `conventions.nerf_intrinsics`), ``timestep_index``, ``camera_index``, ``flame_param_path``,
optional ``fg_mask_path``. ``cy`` is measured from the BOTTOM of the image: VHAP converts its
cameras "opencv->opengl" (``util/camera.py``: ``K[1,2] = H - K[1,2]``) before writing
``cy = intrinsic[1, 2]``, and its renderer reads it that way; the reader converts back
(``cy_opencv = h - cy``). Monocular exports (``replace_cam_params``) write ``cx = w/2, cy = h/2``,
where the two readings agree; multi-view (NeRSemble) exports carry calibrated principal points.

Parameter files (VHAP ``write_flame_param``): ``translation [1,3], rotation [1,3], neck_pose [1,3],
jaw_pose [1,3], eyes_pose [1,6]`` (axis-angle, radians; translation in metres after VHAP recentred the
head at the origin), ``shape [300]``, ``expr [1,100]``, optional ``static_offset [1,V,3]`` and
``dynamic_offset [1,V,3]`` (V = 5023 + 120 VHAP teeth vertices). Sizes are kept as stored.

Splits: exactly the frames of ``transforms_{train,val,test}.json`` (VHAP ``split_json``: 70/30 by
timestep; the val file of a monocular export has no frames). Head model: VHAP tracks with FLAME 2023
by default (``vhap/model/flame.py``: ``FLAME_MODEL_PATH = "asset/flame/flame2023.pkl"``); the export
does not record it, so ``head_model = "flame2023"`` is that default, unless the ``static_offset`` rows
say otherwise (FLAME has 5023 vertices, 5143 with VHAP's teeth) or the files were written by this
project's own writer (`stavatar_ti.data.writer`, top-level ``"exporter": "stavatar_ti"``; its
``head_model`` key when present, else unknown).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from .conventions import nerf_intrinsics, opengl_c2w_to_viewmat, validate_camera
from .records import (DatasetError, FrameRecord, SequenceDataset, as_float_array, image_size, load_json)
from .writer import EXPORTER

SPLITS = ("train", "val", "test")
REQUIRED_FRAME_KEYS = ("file_path", "transform_matrix", "timestep_index", "flame_param_path")
PARAM_SHAPES = {"translation": (3,), "rotation": (3,), "neck_pose": (3,), "jaw_pose": (3,), "eyes_pose": (6,),
                "shape": (None,), "expr": (None,)}
OPTIONAL_PARAM_SHAPES = {"static_offset": (None, 3), "dynamic_offset": (None, 3)}
HEAD_MODEL = "flame2023"
FLAME_VERTEX_ROWS = (5023, 5143)   # FLAME 2020/2023 vertices, + VHAP's 120 teeth vertices


def load_vhap(root) -> SequenceDataset:
    """Read a VHAP / GaussianAvatars export into `SequenceDataset` (format "vhap").

    Args:
        root: the export folder (holds ``transforms_{train,val,test}.json``).
    Returns:
        SequenceDataset with splits "train"/"val"/"test" (frames sorted by (timestep, camera)). Each
        FrameRecord has an OpenCV world->camera ``viewmat`` [4,4] float64 (metres), pixel ``K`` [3,3]
        float64 (pixel centres at +0.5), ``width``/``height`` from ``w``/``h`` (else the image header),
        ``timestep = timestep_index``, ``camera = camera_index`` and ``params``: float32 numpy arrays
        shape [S], expr [E], rotation/neck_pose/jaw_pose [3], eyes_pose [6] (axis-angle, radians),
        translation [3] (metres), optional static_offset / dynamic_offset [V,3] (metres). Images and
        masks are read lazily (`FrameRecord.load_image`); only their existence is checked here.
        Identical ``shape``/``static_offset`` arrays of different timesteps share one numpy object.
    Raises:
        DatasetError: (message starting with the offending file) for a missing transforms / image /
            mask / parameter file, malformed JSON, a missing key, NaN/inf in parameters or cameras,
            a non-invertible camera, a parameter file that does not hold exactly one timestep,
            a timestep mapped to two different parameter files, a frame whose timestep is not in the
            file's ``timestep_indices``, or parameter sizes that differ between timesteps.
    """
    root = Path(root)
    contents = {split: load_json(root / f"transforms_{split}.json") for split in SPLITS}
    params_cache: dict = {}    # resolved npz path -> params
    ts_to_file: dict = {}      # timestep -> npz path
    shared: dict = {}          # ("shape"|"static_offset", bytes) -> array, to share identical arrays
    ref_sizes: dict = {}       # key -> (shape, file) of the first timestep read
    splits = {}
    for split in SPLITS:
        path = root / f"transforms_{split}.json"
        data = contents[split]
        if not isinstance(data, dict) or "frames" not in data:
            raise DatasetError(f"{path}: missing key 'frames'")
        frames = data["frames"]
        if not isinstance(frames, list):
            raise DatasetError(f"{path}: 'frames' is not a list")
        listed = data.get("timestep_indices")
        if isinstance(listed, list):
            listed = {_index(t, path, "timestep_indices[]") for t in listed}
        else:
            listed = None
        records = []
        for i, frame in enumerate(frames):
            where = f"frames[{i}]."
            if not isinstance(frame, dict):
                raise DatasetError(f"{path}: frames[{i}] is not an object")
            for key in REQUIRED_FRAME_KEYS:
                if key not in frame:
                    raise DatasetError(f"{path}: {where[:-1]}: missing key '{key}'")
            timestep = _index(frame["timestep_index"], path, where + "timestep_index")
            camera = _index(frame.get("camera_index", 0), path, where + "camera_index")
            if listed is not None and timestep not in listed:
                raise DatasetError(f"{path}: {where}timestep_index {timestep} is not in this file's "
                                   f"timestep_indices (frame/parameter count mismatch)")
            image_path = _resolve(root, frame["file_path"], add_png=True)
            if not image_path.is_file():
                raise DatasetError(f"{image_path}: image not found (referenced by {path} {where}file_path)")
            mask_path = None
            if frame.get("fg_mask_path"):
                mask_path = _resolve(root, frame["fg_mask_path"], add_png=True)
                if not mask_path.is_file():
                    raise DatasetError(f"{mask_path}: mask not found (referenced by {path} {where}fg_mask_path)")
            w, h = _size(frame, data, image_path, path, where)
            viewmat = opengl_c2w_to_viewmat(frame["transform_matrix"], path)
            K = nerf_intrinsics(frame, data, w, h, path, where, cy_from_bottom=True)
            viewmat, K = validate_camera(viewmat, K, path, f"{where[:-1]} camera")

            npz = _resolve(root, frame["flame_param_path"], add_png=False)
            prev = ts_to_file.setdefault(timestep, npz)
            if prev != npz:
                raise DatasetError(f"{npz}: timestep {timestep} already has parameters in {prev} "
                                   f"(referenced by {path} {where}flame_param_path)")
            if npz not in params_cache:
                params_cache[npz] = _load_params(npz, shared, ref_sizes)
            records.append(FrameRecord(image_path=image_path, viewmat=viewmat, K=K, width=w, height=h,
                                       timestep=timestep, params=params_cache[npz], camera=camera,
                                       mask_path=mask_path, params_path=npz))
        records.sort(key=lambda r: (r.timestep, r.camera))
        splits[split] = records
    return SequenceDataset(root=root, format="vhap", splits=splits,
                           head_model=_head_model(contents["train"], params_cache))


def _head_model(top: dict, params_cache: dict):
    """Which head model the parameters belong to (see the module docstring)."""
    if isinstance(top, dict) and top.get("exporter") == EXPORTER:
        return str(top["head_model"]) if top.get("head_model") else None
    offset = next((p["static_offset"] for p in params_cache.values() if "static_offset" in p), None)
    if offset is not None and offset.shape[0] not in FLAME_VERTEX_ROWS:
        return None
    return HEAD_MODEL


def _index(value, path, what) -> int:
    if (isinstance(value, bool) or not isinstance(value, (int, float)) or not np.isfinite(value)
            or value != int(value) or value < 0):
        raise DatasetError(f"{path}: {what} must be a non-negative integer, got {value!r}")
    return int(value)


def _resolve(root: Path, rel, add_png: bool) -> Path:
    p = Path(str(rel))
    if add_png and p.suffix == "":
        p = p.with_name(p.name + ".png")   # GaussianAvatars: `if extension not in file_path: += ".png"`
    return p if p.is_absolute() else root / p


def _size(frame, top, image_path, path, where) -> tuple:
    w = frame.get("w", top.get("w"))
    h = frame.get("h", top.get("h"))
    if w is None or h is None:
        return image_size(image_path)
    try:
        wf, hf = float(w), float(h)
    except (TypeError, ValueError):
        raise DatasetError(f"{path}: {where}w/h are not numbers ({w!r}, {h!r})") from None
    if not (np.isfinite(wf) and np.isfinite(hf) and wf >= 1 and hf >= 1 and wf == round(wf) and hf == round(hf)):
        raise DatasetError(f"{path}: {where}w/h must be positive integers, got {w!r}, {h!r}")
    return int(wf), int(hf)


def _load_params(npz: Path, shared: dict, ref_sizes: dict) -> dict:
    """One VHAP per-timestep parameter file -> dict of float32 arrays (see `load_vhap`)."""
    if not npz.is_file():
        raise DatasetError(f"{npz}: parameter file not found")
    try:
        data = np.load(npz, allow_pickle=False)
        keys = set(data.files)
    except Exception as exc:  # noqa: BLE001 - zipfile/numpy raise many types for corrupt files
        raise DatasetError(f"{npz}: cannot read parameter file ({type(exc).__name__}: {exc})") from None
    out = {}
    try:
        for key, shape in {**PARAM_SHAPES, **OPTIONAL_PARAM_SHAPES}.items():
            if key not in keys:
                if key in PARAM_SHAPES:
                    raise DatasetError(f"{npz}: missing key '{key}'")
                continue
            try:
                raw = data[key]
            except Exception as exc:  # noqa: BLE001 - object arrays (pickles) are refused here
                raise DatasetError(f"{npz}: cannot read '{key}' ({type(exc).__name__}: {exc})") from None
            if key in ("expr",) and raw.ndim == 2 and raw.shape[0] != 1:
                raise DatasetError(f"{npz}: expr has {raw.shape[0]} rows, expected 1 (one timestep per file; "
                                   f"frame/parameter count mismatch)")
            arr = as_float_array(raw, npz, key, shape)
            if key in ("shape", "static_offset"):
                sig = (key, arr.shape, arr.tobytes())
                arr = shared.setdefault(sig, arr)
            out[key] = arr
    finally:
        data.close()
    for key, arr in out.items():
        ref = ref_sizes.setdefault(key, (arr.shape, npz))
        if ref[0] != arr.shape:
            raise DatasetError(f"{npz}: {key} has shape {list(arr.shape)} but {ref[1]} has {list(ref[0])} "
                               f"(parameter sizes differ between timesteps)")
    return out
