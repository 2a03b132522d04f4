"""Reader of the IMavatar / PointAvatar ``flame_params.json`` format (also SplattingAvatar's data).

Layout (IMavatar and PointAvatar ``code/datasets/real_dataset.py``; IMavatar
``preprocess/DECA/optimize.py`` writes the JSON):

    <subject>/<subject>/<video>/flame_params.json    one JSON per video clip ("sub_dir")
    <subject>/<subject>/<video>/image/<n>.png        RGB frames with background (n starts at 1)
    <subject>/<subject>/<video>/mask/<n>.png         foreground mattes (soft, greyscale)

``flame_params.json``: ``frames[]`` with ``file_path`` ("./image/<n>", ".png" appended),
``world_mat`` (3x4 world->camera of the x4-scaled FLAME world, y up / z backward camera axes:
`conventions.imavatar_viewmat`), ``expression`` [50], ``pose`` [15] = axis-angle
[global, neck, jaw, eye, eye] in FLAME joint order (optimize.py passes it as ``full_pose`` to FLAME's
``lbs``), ``flame_keypoints``, ``bbox``; top-level ``shape_params`` [100] (shared by the clip) and
``intrinsics`` = [-fx/S, fy/S, cx/S, cy/S] normalised by the image size
(`conventions.imavatar_intrinsics`). The JSON does not store the image size: it is read from the
header of the clip's first image (every image is checked against it when loaded).

Converted params: ``rotation = pose[0:3]``, ``neck_pose = pose[3:6]``, ``jaw_pose = pose[6:9]``,
``eyes_pose = pose[9:15]``, ``translation = 0`` (the head translation lives in ``world_mat``),
``expr`` [50] and ``shape`` [100] kept as stored (the head model pads). World units: the x4 scale is
removed from the camera so FLAME vertices in metres project correctly. Masks: IMavatar composites
the frame over white with the soft mask; the records do the same (``composite_mask = True``).

Splits (the format's convention):
* a folder holding ``flame_params.json`` itself (one clip, SplattingAvatar's layout): the last
  ``test_frames`` (350) frames are the test split (SplattingAvatar ``num_for_train = -350``, the INSTA
  convention), the rest train, val empty;
* a subject folder with several clip folders (IMavatar/PointAvatar): whole clips are train or test,
  as the configs' ``train.sub_dir`` / ``test.sub_dir`` lists do (e.g. PointAvatar ``subject1.conf``:
  train MVI_1810, MVI_1814, test MVI_1812). Pass ``test_subdirs``; by default the last clip in natural
  order is the test clip (right for PointAvatar's marcel MVI_1802, NOT for yufeng whose test clip is
  MVI_1812). Val is empty.
Head model: FLAME 2020 (IMavatar/SplattingAvatar load ``FLAME2020/generic_model.pkl``).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from .conventions import imavatar_intrinsics, imavatar_viewmat, validate_camera
from .records import (DatasetError, FrameRecord, SequenceDataset, as_float_array, image_size, load_json,
                      natural_key)

HEAD_MODEL = "flame2020"
JSON_NAME = "flame_params.json"


def find_imavatar_clips(root, json_name: str = JSON_NAME) -> list:
    """Clip folders of an IMavatar dataset: ``[root]`` when ``root/flame_params.json`` exists, else the
    sub-folders (depth 1, then depth 2 for the ``<subject>/<subject>/<clip>`` layout) that hold one,
    in natural order. Empty list when there are none."""
    root = Path(root)
    if (root / json_name).is_file():
        return [root]
    for pattern in (f"*/{json_name}", f"*/*/{json_name}"):
        found = sorted({p.parent for p in root.glob(pattern) if p.is_file()}, key=lambda p: natural_key(str(p)))
        if found:
            return found
    return []


def load_imavatar(root, *, test_subdirs=None, test_frames: int = 350, json_name: str = JSON_NAME) -> SequenceDataset:
    """Read an IMavatar / PointAvatar dataset into `SequenceDataset` (format "imavatar").

    Args:
        root: a clip folder (holding ``flame_params.json``) or a subject folder with clip folders.
        test_subdirs: names of the clip folders forming the test split (several clips only); default
            the last clip in natural order.
        test_frames: single clip only: the last this-many frames form the test split.
        json_name: the JSON file name (IMavatar's ``dataset.json_name``).
    Returns:
        SequenceDataset; timesteps number the frames of all clips consecutively (clips in natural
        order, frames in file order). FrameRecord: ``viewmat`` [4,4] float64 metric OpenCV
        world->camera, ``K`` [3,3] float64 pixels, size from the first image header of the clip,
        ``mask_path`` (``mask/`` twin of the image, required) with ``composite_mask = True``, params
        float32: shape [100], expr [50], rotation/neck_pose/jaw_pose [3], eyes_pose [6] (axis-angle,
        radians), translation [3] = 0.
    Raises:
        DatasetError: (message starting with the offending file) for no JSON found, malformed JSON,
            a missing key, NaN/inf, a non-invertible ``world_mat`` or zero focal length, a pose that
            is not 15 values or expressions of different sizes (parameter count mismatch), a missing
            image or mask, an unknown ``test_subdirs`` entry.
    """
    root = Path(root)
    clips = find_imavatar_clips(root, json_name)
    if not clips:
        raise DatasetError(f"{root / json_name}: file not found (no IMavatar {json_name} in {root} or its "
                           f"sub-folders)")
    ts = 0
    per_clip = []
    ref = {}
    for clip in clips:
        records, ts = _load_clip(clip, clip / json_name, ts, ref)
        per_clip.append((clip, records))

    if len(clips) == 1:
        records = per_clip[0][1]
        n_test = max(0, min(int(test_frames), len(records)))
        splits = {"train": records[:len(records) - n_test], "val": [], "test": records[len(records) - n_test:]}
    else:
        names = [c.name for c in clips]
        if test_subdirs is None:
            test = {names[-1]}
        else:
            test = {str(s) for s in ([test_subdirs] if isinstance(test_subdirs, str) else test_subdirs)}
            unknown = sorted(test - set(names))
            if unknown:
                raise DatasetError(f"{root}: test_subdirs {unknown} are not clip folders (found {names})")
        splits = {"train": [r for c, rs in per_clip if c.name not in test for r in rs], "val": [],
                  "test": [r for c, rs in per_clip if c.name in test for r in rs]}
    return SequenceDataset(root=root, format="imavatar", splits=splits, head_model=HEAD_MODEL)


def _image_paths(clip: Path, rel: str) -> tuple:
    p = Path(str(rel))
    if p.suffix == "":
        p = p.with_name(p.name + ".png")   # IMavatar: '{instance_dir}/{file_path}.png'
    img = p if p.is_absolute() else clip / p
    parts = list(img.parts)
    if not img.is_file() and "image" in parts:   # SplattingAvatar's "dirty fix": image/ <-> images/
        alt = Path(*[("images" if q == "image" else q) for q in parts])
        img = alt if alt.is_file() else img
    parts = list(img.parts)
    idx = max((i for i, q in enumerate(parts) if q in ("image", "images")), default=None)
    mask = Path(*(parts[:idx] + ["mask"] + parts[idx + 1:])) if idx is not None else None
    return img, mask


def _load_clip(clip: Path, path: Path, ts: int, ref: dict) -> tuple:
    data = load_json(path)
    if not isinstance(data, dict):
        raise DatasetError(f"{path}: expected a JSON object")
    for key in ("frames", "intrinsics", "shape_params"):
        if key not in data:
            raise DatasetError(f"{path}: missing key '{key}'")
    if not isinstance(data["frames"], list):
        raise DatasetError(f"{path}: 'frames' is not a list")
    shape = as_float_array(data["shape_params"], path, "shape_params", (None,))
    records = []
    K = None
    for i, frame in enumerate(data["frames"]):
        where = f"frames[{i}]"
        if not isinstance(frame, dict):
            raise DatasetError(f"{path}: {where} is not an object")
        for key in ("file_path", "world_mat", "expression", "pose"):
            if key not in frame:
                raise DatasetError(f"{path}: {where}: missing key '{key}'")
        img, mask = _image_paths(clip, frame["file_path"])
        if not img.is_file():
            raise DatasetError(f"{img}: image not found (referenced by {path} {where}.file_path)")
        if mask is None or not mask.is_file():
            raise DatasetError(f"{mask or img}: mask not found (IMavatar needs mask/ next to image/; "
                               f"referenced by {path} {where}.file_path)")
        if K is None:
            w, h = image_size(img)
            K = imavatar_intrinsics(data["intrinsics"], w, h, path)
        expr = as_float_array(frame["expression"], path, f"{where}.expression", (None,))
        try:
            pose = np.asarray(frame["pose"], np.float64).reshape(-1)
        except (TypeError, ValueError):
            raise DatasetError(f"{path}: {where}.pose is not a numeric array") from None
        if pose.size != 15:
            raise DatasetError(f"{path}: {where}.pose has {pose.size} values, expected 15 (global, neck, jaw, "
                               f"eyes; parameter count mismatch)")
        pose = as_float_array(pose, path, f"{where}.pose", (15,))
        r = ref.setdefault("expression", (expr.shape, f"{path} {where}"))
        if r[0] != expr.shape:
            raise DatasetError(f"{path}: {where}.expression has {expr.shape[0]} values but {r[1]} has "
                               f"{r[0][0]} (parameter count mismatch)")
        viewmat, Kv = validate_camera(imavatar_viewmat(frame["world_mat"], path), K, path, f"{where} camera")
        params = {"shape": shape, "expr": expr, "rotation": pose[0:3].copy(), "neck_pose": pose[3:6].copy(),
                  "jaw_pose": pose[6:9].copy(), "eyes_pose": pose[9:15].copy(),
                  "translation": np.zeros(3, np.float32)}
        records.append(FrameRecord(image_path=img, viewmat=viewmat, K=Kv, width=w, height=h, timestep=ts,
                                   params=params, camera=0, mask_path=mask, composite_mask=True))
        ts += 1
    return records, ts
