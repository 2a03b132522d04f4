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
  ``test_frames`` frames are the test split (`records.tail_split`: default 350, SplattingAvatar
  ``num_for_train = -350``, the INSTA convention), the rest train, val empty;
* a subject folder with several clip folders (IMavatar/PointAvatar ``<subject>/<subject>/<clip>/``):
  whole clips are train or test, as the configs' ``train.sub_dir`` / ``test.sub_dir`` lists do.
  ``test_subdirs`` (``data.test_subdirs``) names the test clips; without it the producers'
  conventions decide (`default_test_clips`): a clip named ``test`` (PointAvatar ``subject3.conf``,
  soubhik: train ``[train]``, test ``[test]``), else the subject configs' test clip
  (`SUBJECT_SPLITS`: yufeng MVI_1812, marcel MVI_1802), else the last clip in natural order with a
  `DatasetWarning`. A split that looks swapped (a clip named ``train`` or a configured training clip
  in the test split, or ``test`` / a configured test clip in training) is warned about. Val is empty.
Head model: FLAME 2020 (IMavatar/SplattingAvatar load ``FLAME2020/generic_model.pkl``).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from .conventions import imavatar_intrinsics, imavatar_viewmat, validate_camera
from .records import (DatasetError, FrameRecord, SequenceDataset, as_float_array, check_test_frames, image_size,
                      load_json, natural_key, tail_split, warn)

HEAD_MODEL = "flame2020"
JSON_NAME = "flame_params.json"
# The released subjects' clip splits (IMavatar ``code/confs/IMavatar_supervised.conf``; PointAvatar
# ``code/confs/subject{1,2,3}.conf``): test clip -> the training clips configured with it.
SUBJECT_SPLITS = {
    "MVI_1812": ("MVI_1810", "MVI_1811", "MVI_1814"),   # yufeng (IMavatar subject1, PointAvatar subject1)
    "MVI_1802": ("MVI_1797", "MVI_1801"),               # marcel (PointAvatar subject2)
    "test": ("train",),                                 # soubhik (PointAvatar subject3)
}


def _named(name: str, word: str) -> bool:
    """True for a clip named like ``word``: "test", "Test", "test_2", "test-1", "test2"."""
    low = name.lower()
    return low == word or low.startswith((word + "_", word + "-")) or (low.startswith(word) and low[len(word):].isdigit())


def default_test_clips(names: list) -> tuple:
    """The producers' test clips of a subject with several clips (no ``test_subdirs`` given).

    Args:
        names: clip folder names (natural order).
    Returns:
        (set of test clip names, reason str, warn bool): clips named ``test``; else the subject
        configs' test clip (`SUBJECT_SPLITS`) when it and one of its training clips are present;
        else the last clip, with ``warn = True``.
    """
    tests = {n for n in names if _named(n, "test")}
    if tests and len(tests) < len(names):
        return tests, "clips named 'test'", False
    for test, trains in SUBJECT_SPLITS.items():
        if test in names and any(t in names for t in trains):
            return {test}, f"the subject config's test clip {test}", False
    return {names[-1]}, "the last clip in natural order", True


def _swapped(test: set, names: list) -> list:
    """Reasons why a clip split looks swapped (empty when it looks right)."""
    out = []
    for n in names:
        if n in test and _named(n, "train"):
            out.append(f"clip '{n}' is in the test split")
        if n not in test and _named(n, "test"):
            out.append(f"clip '{n}' is in the training split")
    for t, trains in SUBJECT_SPLITS.items():
        if t in names and t not in test and any(x in test for x in trains):
            used = sorted(x for x in trains if x in test)
            out.append(f"{', '.join(used)} tested and {t} trained, the reverse of the subject config")
    return out


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


def load_imavatar(root, *, test_subdirs=None, test_frames: int | None = None,
                  json_name: str = JSON_NAME) -> SequenceDataset:
    """Read an IMavatar / PointAvatar dataset into `SequenceDataset` (format "imavatar").

    Args:
        root: a clip folder (holding ``flame_params.json``) or a subject folder with clip folders.
        test_subdirs: names (str or list of str) of the clip folders forming the test split
            (several clips only; ``data.test_subdirs``); None = `default_test_clips`.
        test_frames: single clip only: the last this-many frames form the test split
            (``data.test_frames``; None = `records.tail_split`'s default).
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
            image or mask, an unknown ``test_subdirs`` entry or one naming every clip, ``test_subdirs``
            on a single clip, an invalid ``test_frames`` or one leaving no training frames.
    Warns:
        DatasetWarning: the default split is the last clip (no producer convention matched), or the
            split looks swapped (see the module docstring).
    """
    root = Path(root)
    check_test_frames(test_frames, str(root))
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
        if test_subdirs is not None:
            raise DatasetError(f"{clips[0] / json_name}: data.test_subdirs needs several clip folders, this dataset "
                               f"is one clip (use data.test_frames)")
        train, test = tail_split(per_clip[0][1], test_frames, clips[0] / json_name)
        splits = {"train": train, "val": [], "test": test}
    else:
        names = [c.name for c in clips]
        if test_frames is not None:
            raise DatasetError(f"{root}: data.test_frames applies to a single clip; this subject has clips {names} "
                               f"(use data.test_subdirs)")
        if test_subdirs is None:
            test, reason, uncertain = default_test_clips(names)
            if uncertain:
                warn(f"{root}: no clip named 'test' and no known subject split; the test split is {reason} "
                     f"({sorted(test)}); set data.test_subdirs to choose")
        else:
            if isinstance(test_subdirs, str):
                test_subdirs = [test_subdirs]
            try:
                test = {str(s) for s in test_subdirs}
            except TypeError:
                raise DatasetError(f"{root}: data.test_subdirs must be a clip name or a list of clip names, got "
                                   f"{test_subdirs!r}") from None
            unknown = sorted(test - set(names))
            if unknown:
                raise DatasetError(f"{root}: test_subdirs {unknown} are not clip folders (found {names})")
            if test >= set(names):
                raise DatasetError(f"{root}: data.test_subdirs {sorted(test)} names every clip; no training clips left")
        swapped = _swapped(test, names)
        if swapped:
            warn(f"{root}: the train/test split looks swapped ({'; '.join(swapped)}); set data.test_subdirs "
                 f"if that is not intended")
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
                                   params=params, camera=0, mask_path=mask, composite_mask=True, params_path=path))
        ts += 1
    return records, ts
