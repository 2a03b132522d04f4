"""Reader of metrical-tracker output and the INSTA dataset layout built from it.

Layout (metrical-tracker ``tracker.py``; INSTA ``scripts/transforms.py``, ``scripts/postprocess.py``;
read the same way by GaussianBlendshapes ``FLAME/dataset.py`` and FlashAvatar ``scene/__init__.py``):

    checkpoint/{frame_id}.frame     required: one torch-saved dict per frame (the parameter source)
    images/{frame_id}.png           INSTA: RGBA, alpha = matte with the torso removed
    input/{frame_id}.png            raw metrical-tracker output folder: the cropped RGB input frames
    transforms_{train,val,test}.json  optional (INSTA): cameras + the split

``.frame`` contents (``save_checkpoint``): ``flame{exp [1,100], shape [1,300], tex, sh,
eyes [1,12] (two 6D rotations), eyelids [1,2], jaw [1,6] (6D)}``, ``camera{R (6D), t, fl, pp}``
(PyTorch3D), ``opencv{R [1,3,3], t [1,3], K [1,3,3]}`` (`conventions.rotation_6d_to_axis_angle`;
OpenCV world->camera from ``opencv_from_cameras_projection``), ``img_size`` (H, W), ``frame_id``
(zero-padded string), ``global_step``. metrical-tracker's FLAME has no global pose: the head stays
at the origin in FLAME's canonical orientation and the camera carries the head motion, so
``rotation = translation = neck_pose = 0`` unless the ``flame`` dict has its own ``R``/``rotation``
and ``t``/``translation`` entries (some tracker forks), which are read in any rotation layout.
Files are numpy arrays inside a torch pickle: they are loaded with ``torch.load(weights_only=True)``
and an allow-list of numpy's array reconstruction only (`load_frame_file`), never with plain pickle.

INSTA ``transforms_*.json``: ``transform_matrix`` = inverse of the OpenCV world->camera ``[R|t]``
(`conventions.opencv_c2w_to_viewmat`, NO OpenGL flip), top-level ``fl_x, fl_y, cx, cy, w, h``;
``file_path = images/{frame_id}.png``. When present they define the cameras (checked against the
``.frame`` camera) and the split (INSTA: train = all but the last 350 frames, test = last 350,
val = last 20, so val is a subset of test). Without them (metrical-tracker / GaussianBlendshapes /
FlashAvatar layouts): `records.tail_split` - the last ``test_frames`` frames (``data.test_frames``;
default the producers' 350, or 15 % of a sequence too short for that, with a warning), the rest
train, val empty.

INSTA's own output (``scripts/transforms.py`` + ``generate.sh``) holds only the expression
coefficients (``flame/exp/*.txt``) and meshes; jaw, eyes and eyelids exist only in the tracker's
``checkpoint/*.frame``, so a folder without ``checkpoint/`` is refused with a message saying to copy
metrical-tracker's ``output/<actor>/checkpoint/`` into it (`missing_checkpoint_message`).

Parameters kept as stored: expr [100], shape [300], eyelids [2] (metrical-tracker's eyelid blendshape
weights, an extra key). Head model: FLAME 2020 (metrical-tracker ``configs/config.py``:
``flame_geom_path = 'data/FLAME2020/generic_model.pkl'``).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from .conventions import (metrical_tracker_camera, nerf_intrinsics, opencv_c2w_to_viewmat, rotation_to_axis_angle,
                          validate_camera)
from .records import (DatasetError, FrameRecord, SequenceDataset, as_float_array, check_test_frames, image_mode,
                      load_json, natural_key, tail_split, warn)

HEAD_MODEL = "flame2020"
SPLITS = ("train", "val", "test")
IMAGE_DIRS = ("images", "input")
IMAGE_EXTS = (".png", ".jpg", ".jpeg")


def _numpy_safe_globals() -> list:
    """The numpy callables/classes a torch pickle of plain numeric numpy arrays references.

    Both module spellings are listed: numpy >= 2 pickles ``numpy._core.multiarray._reconstruct``,
    files written under numpy 1.x (all public metrical-tracker output) say ``numpy.core.multiarray``.
    Object arrays are not allowed: their elements would need further (refused) globals.
    """
    try:
        from numpy._core import multiarray as ma
    except ImportError:  # numpy 1.x
        from numpy.core import multiarray as ma
    out = [ma._reconstruct, (ma._reconstruct, "numpy.core.multiarray._reconstruct"),
           (ma._reconstruct, "numpy._core.multiarray._reconstruct"),
           ma.scalar, (ma.scalar, "numpy.core.multiarray.scalar"), (ma.scalar, "numpy._core.multiarray.scalar"),
           np.ndarray, np.dtype]
    dtypes = getattr(np, "dtypes", None)
    if dtypes is not None:
        for name in ("BoolDType", "Int8DType", "Int16DType", "Int32DType", "Int64DType", "UInt8DType",
                     "UInt16DType", "UInt32DType", "UInt64DType", "Float16DType", "Float32DType",
                     "Float64DType", "LongDType", "ULongDType", "LongLongDType", "ULongLongDType",
                     "ByteDType", "UByteDType", "ShortDType", "UShortDType", "IntDType", "UIntDType",
                     "StrDType", "BytesDType"):
            if hasattr(dtypes, name):
                out.append(getattr(dtypes, name))
    return out


def load_frame_file(path) -> dict:
    """Load one metrical-tracker ``.frame`` file safely.

    Uses ``torch.load(path, map_location="cpu", weights_only=True)`` inside
    ``torch.serialization.safe_globals`` allowing only numpy's ndarray/scalar reconstruction and dtype
    classes (`_numpy_safe_globals`). Anything else in the pickle (arbitrary classes or functions) is
    refused by torch's restricted unpickler.

    Returns:
        The saved dict (numpy arrays, torch tensors, str/int values as stored).
    Raises:
        DatasetError: "<path>: ..." for a missing file, a file that is not a torch pickle, one that
            needs globals outside the allow-list, or one that is not a dict.
    """
    import pickle

    import torch

    path = Path(path)
    if not path.is_file():
        raise DatasetError(f"{path}: file not found")
    if not hasattr(torch.serialization, "safe_globals"):
        raise DatasetError(f"{path}: reading metrical-tracker .frame files safely needs torch >= 2.5 "
                           f"(torch.serialization.safe_globals); this is torch {torch.__version__}")
    try:
        with torch.serialization.safe_globals(_numpy_safe_globals()):
            payload = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        lines = [ln.strip() for ln in str(exc).splitlines() if ln.strip()]
        detail = next((ln for ln in lines if "Unsupported" in ln or "global" in ln.lower()), lines[-1] if lines else "")
        raise DatasetError(f"{path}: refused by torch.load(weights_only=True): {detail[:300]}") from None
    except Exception as exc:  # noqa: BLE001 - torch raises RuntimeError/EOFError/... for corrupt files
        msg = " ".join(str(exc).split())[:300]
        raise DatasetError(f"{path}: not a readable torch file ({type(exc).__name__}: {msg})") from None
    if not isinstance(payload, dict):
        raise DatasetError(f"{path}: expected a dict, got {type(payload).__name__}")
    return payload


def _get(d: dict, keys, path, where, required=True):
    for k in keys:
        if isinstance(d, dict) and k in d and d[k] is not None:
            return d[k]
    if required:
        raise DatasetError(f"{path}: missing key '{where}{keys[0]}'")
    return None


def parse_frame(payload: dict, path) -> tuple:
    """metrical-tracker ``.frame`` dict -> ``(params, viewmat, K, (width, height))``.

    Returns:
        params: dict of float32 arrays shape [S], expr [E], rotation [3], neck_pose [3] (zeros),
            jaw_pose [3], eyes_pose [6] (axis-angle radians from the 6D rows layout), translation [3]
            (metres), eyelids [2] when stored.
        viewmat [4,4] float64 = ``[opencv.R | opencv.t]`` (already OpenCV world->camera), K [3,3]
        float64 = ``opencv.K`` (PyTorch3D screen convention = pixel centres at +0.5, no shift),
        image size from ``img_size`` = (H, W).
    Raises:
        DatasetError: "<path>: ..." for missing keys, wrong shapes, NaN/inf, degenerate rotations,
            a non-invertible camera.
    """
    flame = _get(payload, ("flame",), path, "")
    opencv = _get(payload, ("opencv",), path, "")
    if not isinstance(flame, dict) or not isinstance(opencv, dict):
        raise DatasetError(f"{path}: 'flame' and 'opencv' must be dicts")
    params = {
        "shape": as_float_array(_get(flame, ("shape",), path, "flame."), path, "flame.shape", (None,)),
        "expr": as_float_array(_get(flame, ("exp", "expr"), path, "flame."), path, "flame.exp", (None,)),
    }
    rot = _get(flame, ("R", "rotation"), path, "flame.", required=False)
    rot = np.zeros(3) if rot is None else rotation_to_axis_angle(rot, path, "flame.R")
    params["rotation"] = rot.astype(np.float32)
    params["neck_pose"] = np.zeros(3, np.float32)
    params["jaw_pose"] = rotation_to_axis_angle(_get(flame, ("jaw", "jaw_pose"), path, "flame."), path,
                                                "flame.jaw").astype(np.float32)
    params["eyes_pose"] = rotation_to_axis_angle(_get(flame, ("eyes", "eyes_pose"), path, "flame."), path,
                                                 "flame.eyes", count=2).astype(np.float32)
    trans = _get(flame, ("t", "translation"), path, "flame.", required=False)
    params["translation"] = (np.zeros(3, np.float32) if trans is None
                             else as_float_array(trans, path, "flame.t", (3,)))
    eyelids = _get(flame, ("eyelids",), path, "flame.", required=False)
    if eyelids is not None:
        params["eyelids"] = as_float_array(eyelids, path, "flame.eyelids", (None,))

    R = as_float_array(_get(opencv, ("R",), path, "opencv."), path, "opencv.R", (3, 3), np.float64)
    t = as_float_array(_get(opencv, ("t",), path, "opencv."), path, "opencv.t", (3,), np.float64)
    K = as_float_array(_get(opencv, ("K",), path, "opencv."), path, "opencv.K", (3, 3), np.float64)
    size = as_float_array(_get(payload, ("img_size",), path, ""), path, "img_size", (2,), np.float64)
    if np.any(size < 1) or np.any(size != np.round(size)):
        raise DatasetError(f"{path}: img_size must be two positive integers (H, W), got {size.tolist()}")
    viewmat, K = validate_camera(*metrical_tracker_camera(R, t, K), path, "opencv camera")
    return params, viewmat, K, (int(size[1]), int(size[0]))


def _find_image(stem: str, image_dir: Path) -> Path:
    for ext in IMAGE_EXTS:
        p = image_dir / f"{stem}{ext}"
        if p.is_file():
            return p
    raise DatasetError(f"{image_dir / (stem + '.png')}: image not found (frame {stem})")


def missing_checkpoint_message(root) -> str | None:
    """The one-line error for INSTA's own output without metrical-tracker's ``checkpoint/``.

    Returns:
        "<root>/checkpoint: ..." (what to copy in) when ``root`` has INSTA output files (``flame/exp/``,
        ``meshes/``, ``transforms*.json``) but no ``checkpoint/*.frame``; else None.
    """
    root = Path(root)
    ckpt = root / "checkpoint"
    if ckpt.is_dir() and next(ckpt.glob("*.frame"), None) is not None:
        return None
    if not ((root / "flame" / "exp").is_dir() or (root / "meshes").is_dir()):
        return None
    return (f"{ckpt}: INSTA output without metrical-tracker checkpoints: INSTA's transforms.py keeps only "
            f"the expression coefficients (flame/exp/) and meshes, while jaw, eyes and eyelids are in the "
            f"tracker's .frame files; copy metrical-tracker's output/<actor>/checkpoint/ folder (*.frame) "
            f"into {root}")


def load_insta(root, *, test_frames: int | None = None) -> SequenceDataset:
    """Read INSTA data or a metrical-tracker output folder into `SequenceDataset` (format "insta").

    Args:
        root: folder with ``checkpoint/*.frame`` plus ``images/`` (INSTA) or ``input/``
            (metrical-tracker output), optionally INSTA's ``transforms_{train,val,test}.json``.
        test_frames: without transforms files, the last this-many frames form the test split
            (``data.test_frames``); None = the producers' 350, or 15 % of a sequence of at most 350
            frames (`records.tail_split`, with a `DatasetWarning`); the rest is train, val is empty.
            Ignored, with a `DatasetWarning`, when INSTA's transforms files define the split.
    Returns:
        SequenceDataset: frames sorted by timestep = position of the ``.frame`` file in natural
        order (0..N-1); ``viewmat`` [4,4] float64 OpenCV world->camera (metres, FLAME space),
        ``K`` [3,3] float64 pixels (centres at +0.5), size from ``img_size``; params as in
        `parse_frame` (float32); ``mask_path`` = the image itself with ``mask_channel = 3`` when the
        images are RGBA (INSTA's matte), else None.
    Raises:
        DatasetError: (message starting with the offending file) for a missing checkpoint folder
            (INSTA output without it: `missing_checkpoint_message`) or image, a ``test_frames`` that
            is negative / not an integer / leaves no training frames, a ``.frame`` file that is unreadable / unsafe / lacks keys / has NaN or inf or a
            non-invertible camera, a transforms frame whose ``.frame`` (parameters) is missing,
            malformed transforms JSON or missing keys, a transforms camera that disagrees with the
            ``.frame`` camera, or parameter sizes that differ between frames.
    """
    root = Path(root)
    ckpt = root / "checkpoint"
    check_test_frames(test_frames, str(root))
    hint = missing_checkpoint_message(root)
    if hint is not None:
        raise DatasetError(hint)
    if not ckpt.is_dir():
        raise DatasetError(f"{ckpt}: metrical-tracker checkpoint folder not found (needs checkpoint/*.frame)")
    files = sorted(ckpt.glob("*.frame"), key=lambda p: natural_key(p.stem))
    if not files:
        raise DatasetError(f"{ckpt}: no .frame files")
    entries = {}
    ref_sizes: dict = {}
    shared: dict = {}
    for ts, f in enumerate(files):
        params, viewmat, K, (w, h) = parse_frame(load_frame_file(f), f)
        for key, arr in params.items():
            ref = ref_sizes.setdefault(key, (arr.shape, f))
            if ref[0] != arr.shape:
                raise DatasetError(f"{f}: {key} has shape {list(arr.shape)} but {ref[1]} has {list(ref[0])} "
                                   f"(parameter sizes differ between frames)")
        params["shape"] = shared.setdefault(params["shape"].tobytes(), params["shape"])
        entries[f.stem] = dict(file=f, ts=ts, params=params, viewmat=viewmat, K=K, w=w, h=h)

    tpaths = {s: root / f"transforms_{s}.json" for s in SPLITS}
    if any(p.exists() for p in tpaths.values()):
        if test_frames is not None:
            warn(f"{tpaths['test']}: data.test_frames={test_frames} is ignored: INSTA's transforms files define "
                 f"the split")
        splits = _splits_from_transforms(root, tpaths, entries, ckpt)
    else:
        image_dir = next((root / d for d in IMAGE_DIRS if (root / d).is_dir()), None)
        if image_dir is None:
            raise DatasetError(f"{root / 'images'}: image folder not found (expected images/ or input/)")
        records = []
        for stem, e in entries.items():
            records.append(_record(e, _find_image(stem, image_dir)))
        train, test = tail_split(records, test_frames, ckpt)
        splits = {"train": train, "val": [], "test": test}

    _attach_alpha_masks(splits)
    for split in splits.values():
        split.sort(key=lambda r: (r.timestep, r.camera))
    return SequenceDataset(root=root, format="insta", splits=splits, head_model=HEAD_MODEL)


def _record(e: dict, image_path: Path, viewmat=None, K=None) -> FrameRecord:
    return FrameRecord(image_path=image_path, viewmat=e["viewmat"] if viewmat is None else viewmat,
                       K=e["K"] if K is None else K, width=e["w"], height=e["h"], timestep=e["ts"],
                       params=e["params"], camera=0, params_path=e["file"])


def _splits_from_transforms(root: Path, tpaths: dict, entries: dict, ckpt: Path) -> dict:
    splits = {}
    for split, path in tpaths.items():
        data = load_json(path)
        if not isinstance(data, dict) or not isinstance(data.get("frames"), list):
            raise DatasetError(f"{path}: missing key 'frames'")
        records = []
        for i, frame in enumerate(data["frames"]):
            where = f"frames[{i}]."
            if not isinstance(frame, dict):
                raise DatasetError(f"{path}: frames[{i}] is not an object")
            for key in ("file_path", "transform_matrix"):
                if key not in frame:
                    raise DatasetError(f"{path}: frames[{i}]: missing key '{key}'")
            rel = Path(str(frame["file_path"]))
            if rel.suffix == "":
                rel = rel.with_name(rel.name + ".png")
            stem = rel.stem
            if stem not in entries:
                raise DatasetError(f"{ckpt / (stem + '.frame')}: no parameters for frame '{stem}' referenced by "
                                   f"{path} {where}file_path (frame/parameter count mismatch)")
            e = entries[stem]
            image_path = rel if rel.is_absolute() else root / rel
            if not image_path.is_file():
                raise DatasetError(f"{image_path}: image not found (referenced by {path} {where}file_path)")
            w, h = e["w"], e["h"]
            for key, val in (("w", w), ("h", h)):
                got = frame.get(key, data.get(key))
                if got is not None and (not isinstance(got, (int, float)) or float(got) != val):
                    raise DatasetError(f"{path}: {where}{key} = {got!r} disagrees with img_size of {e['file']} "
                                       f"({w}x{h})")
            viewmat = opencv_c2w_to_viewmat(frame["transform_matrix"], path)
            K = nerf_intrinsics(frame, data, w, h, path, where)
            viewmat, K = validate_camera(viewmat, K, path, f"{where[:-1]} camera")
            scale = 1.0 + float(np.abs(e["viewmat"][:3, 3]).max())
            if not (np.allclose(viewmat[:3, :3], e["viewmat"][:3, :3], atol=1e-3)
                    and np.allclose(viewmat[:3, 3], e["viewmat"][:3, 3], atol=1e-3 * scale)
                    and np.allclose(K, e["K"], atol=0.5)):
                raise DatasetError(f"{path}: {where}camera disagrees with the camera of {e['file']} "
                                   f"(transform_matrix must be the inverse of the OpenCV [R|t])")
            records.append(_record(e, image_path, viewmat, K))
        splits[split] = records
    return splits


def _attach_alpha_masks(splits: dict) -> None:
    """INSTA's images are RGBA with the matte in alpha: use it as the foreground mask."""
    first = next((r for s in splits.values() for r in s), None)
    if first is None or image_mode(first.image_path) != "RGBA":
        return
    for s in splits.values():
        for r in s:
            r.mask_path, r.mask_channel = r.image_path, 3
