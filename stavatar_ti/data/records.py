"""The internal frame record every dataset reader produces (one convention for the whole project).

Cameras are OpenCV world->camera `viewmat` [4,4] (x right, y down, z forward) and pixel `K` [3,3]
with the pixel-centre convention of the rasterizer (pixel (i, j) centred at (j+0.5, i+0.5)); world
units are FLAME metres. Head-model parameters use the FLAME/VHAP names and axis-angle rotations.
Readers convert at load time, in `stavatar_ti.data.conventions`.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from pathlib import Path

import imageio.v3 as iio
import numpy as np

PARAM_SIZES = {"rotation": 3, "neck_pose": 3, "jaw_pose": 3, "eyes_pose": 6, "translation": 3}


class DatasetError(ValueError):
    """Bad dataset input; the message starts with the offending file."""


class DatasetWarning(UserWarning):
    """Data that loads but probably not as intended (a split that looks swapped, a head model other
    than the tracker's, parameters cut to the configured sizes); the message starts with the file."""


def warn(message: str) -> None:
    """Issue a one-line `DatasetWarning` (shown once per message by Python's warning filter)."""
    import warnings

    warnings.warn(" ".join(str(message).split()), DatasetWarning, stacklevel=3)


@dataclass
class FrameRecord:
    """One image of a sequence.

    image_path: RGB(A) image file (loaded lazily by `load_image`).
    mask_path: optional foreground mask file (greyscale or RGB, > 0.5 = foreground).
    viewmat: [4,4] float64 world->camera (OpenCV axes). K: [3,3] float64 pixel intrinsics.
    width, height: image size in pixels (checked against the file when loaded).
    timestep: index into the sequence's parameter table; camera: camera index.
    params: head-model parameters of this timestep: shape [S], expr [E], rotation [3],
        neck_pose [3], jaw_pose [3], eyes_pose [6] (axis-angle, radians), translation [3] (metres),
        optional static_offset [V,3] and dynamic_offset [V,3] (VHAP, metres), optional eyelids [2]
        (metrical-tracker eyelid blendshape weights); float32 numpy arrays, sizes as the tracker
        stored them (the head model pads/truncates shape/expr). Frames of one timestep share one dict.
    mask_channel: channel of the mask file holding the foreground (0 for greyscale/RGB masks, 3 when
        the mask is the alpha channel of an RGBA file, e.g. INSTA's matted images).
    params_path: the file the parameters were read from (named in head-model errors), or None.
    composite_mask: when True, `load_image` composites the image over `background` with the soft
        mask (IMavatar stores raw frames plus a separate matte; its loader does this compositing).
    """

    image_path: Path
    viewmat: np.ndarray
    K: np.ndarray
    width: int
    height: int
    timestep: int
    params: dict
    camera: int = 0
    mask_path: Path | None = None
    mask_channel: int = 0
    composite_mask: bool = False
    params_path: Path | None = None

    def load_image(self, background=(1.0, 1.0, 1.0)) -> np.ndarray:
        """[H,W,3] float32 in [0,1] (HWC); RGBA is composited over `background`, and so is an image
        whose record has `composite_mask` set (with the soft mask of `mask_path`).

        Raises:
            DatasetError: unreadable file or a size other than (height, width) (image or mask).
        """
        img = read_image(self.image_path)
        if img.shape[:2] != (self.height, self.width):
            raise DatasetError(f"{self.image_path}: image is {img.shape[1]}x{img.shape[0]}, expected "
                               f"{self.width}x{self.height}")
        bg = np.asarray(background, np.float32)
        if img.shape[2] == 4:
            a = img[..., 3:]
            img = img[..., :3] * a + bg * (1.0 - a)
        if self.composite_mask and self.mask_path is not None:
            a = self.load_soft_mask()[..., None]
            img = img[..., :3] * a + bg * (1.0 - a)
        return np.ascontiguousarray(img[..., :3])

    def load_soft_mask(self) -> np.ndarray | None:
        """[H,W] float32 foreground weight in [0,1] (channel `mask_channel`), or None without a mask.

        Raises:
            DatasetError: unreadable mask file, wrong size, or a missing channel.
        """
        if self.mask_path is None:
            return None
        m = read_image(self.mask_path)
        if m.shape[:2] != (self.height, self.width):
            raise DatasetError(f"{self.mask_path}: mask is {m.shape[1]}x{m.shape[0]}, expected "
                               f"{self.width}x{self.height}")
        if self.mask_channel >= m.shape[2]:
            raise DatasetError(f"{self.mask_path}: mask channel {self.mask_channel} missing (file has "
                               f"{m.shape[2]} channels)")
        return np.ascontiguousarray(m[..., self.mask_channel])

    def load_mask(self) -> np.ndarray | None:
        """[H,W] bool foreground mask (> 0.5), or None without a mask file.

        Raises:
            DatasetError: unreadable mask file, wrong size, or a missing channel.
        """
        m = self.load_soft_mask()
        return None if m is None else m > 0.5


def read_image(path: Path) -> np.ndarray:
    """Read an image as float32 [H,W,C] in [0,1] (C = 3 or 4; greyscale becomes 3 channels).

    Raises:
        DatasetError: missing or unreadable file, or an unsupported dtype.
    """
    try:
        img = iio.imread(path)
    except Exception as exc:  # noqa: BLE001 - imageio raises many types for bad files
        raise DatasetError(f"{path}: cannot read image ({type(exc).__name__}: {exc})") from None
    if img.ndim == 2:
        img = np.repeat(img[..., None], 3, -1)
    if img.ndim != 3 or img.shape[2] not in (1, 3, 4):
        raise DatasetError(f"{path}: expected an RGB(A) or greyscale image, got shape {img.shape}")
    if img.shape[2] == 1:
        img = np.repeat(img, 3, -1)
    if img.dtype == np.uint8:
        return img.astype(np.float32) / 255.0
    if img.dtype == np.uint16:
        return img.astype(np.float32) / 65535.0
    if np.issubdtype(img.dtype, np.floating):
        return img.astype(np.float32)
    raise DatasetError(f"{path}: unsupported image dtype {img.dtype}")


@dataclass
class SequenceDataset:
    """A monocular (or multi-camera) sequence: frames per split plus metadata.

    format: "vhap", "insta" or "imavatar". splits: "train"/"val"/"test" -> frames sorted by
    timestep. head_model: which head model the parameters belong to ("flame2023", "flame2020",
    "open_head", ...) when the format tells, else None.
    """

    root: Path
    format: str
    splits: dict = field(default_factory=dict)
    head_model: str | None = None

    @property
    def frames(self) -> list:
        """All FrameRecords, train then val then test (a frame listed in two splits appears twice)."""
        return [f for split in ("train", "val", "test") for f in self.splits.get(split, [])]


# ----------------------------------------------------------------------------------------------
# Small shared helpers of the dataset readers (every error names the offending file first)
# ----------------------------------------------------------------------------------------------

def load_json(path: Path):
    """Parse a JSON file.

    Args:
        path: file. NaN/Infinity literals are accepted by the parser; the readers reject non-finite
            values afterwards, naming the file.
    Returns:
        The decoded JSON value (dict, list, ...).
    Raises:
        DatasetError: missing file, unreadable file or malformed JSON.
    """
    path = Path(path)
    if not path.is_file():
        raise DatasetError(f"{path}: file not found")
    try:
        with open(path, "r", encoding="utf-8") as f:
            return json.load(f)
    except json.JSONDecodeError as exc:
        raise DatasetError(f"{path}: malformed JSON ({exc.msg} at line {exc.lineno} column {exc.colno})") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise DatasetError(f"{path}: cannot read ({type(exc).__name__}: {exc})") from None


def image_size(path: Path) -> tuple:
    """Image size from the file header (PIL reads only the header; imageio decodes as a fallback).

    Returns:
        (width, height) as Python ints, in pixels.
    Raises:
        DatasetError: missing or unreadable file.
    """
    path = Path(path)
    if not path.is_file():
        raise DatasetError(f"{path}: image not found")
    try:
        from PIL import Image

        with Image.open(path) as im:
            return int(im.size[0]), int(im.size[1])
    except Exception:  # noqa: BLE001 - fall back to imageio (any plugin), which decodes the file
        try:
            shape = iio.improps(path).shape
            return int(shape[1]), int(shape[0])
        except Exception as exc:  # noqa: BLE001
            raise DatasetError(f"{path}: cannot read image ({type(exc).__name__}: {exc})") from None


def image_mode(path: Path) -> str | None:
    """PIL mode string of an image file ("RGB", "RGBA", "L", ...) read from its header.

    Returns:
        str, or None when PIL cannot open the file (no error: the pixels are checked on load).
    """
    try:
        from PIL import Image

        with Image.open(path) as im:
            return im.mode
    except Exception:  # noqa: BLE001
        return None


def as_float_array(value, path, what: str, shape=None, dtype=np.float32) -> np.ndarray:
    """Convert a JSON list / numpy array / torch tensor to a finite float array.

    shape: expected shape (None entries match any size) or None for any. The array is returned with
    that exact shape (a leading batch dim of 1 is squeezed when `shape` asks for one dim fewer).

    Raises:
        DatasetError: "<path>: <what> ..." for non-numeric values, a wrong shape, NaN or inf.
    """
    try:
        if hasattr(value, "detach"):  # torch tensor
            value = value.detach().cpu().numpy()
        arr = np.asarray(value, dtype=np.float64)
    except (TypeError, ValueError):
        raise DatasetError(f"{path}: {what} is not a numeric array") from None
    if shape is not None:
        shape = tuple(shape)
        if arr.ndim == len(shape) + 1 and arr.shape[0] == 1:
            arr = arr[0]
        ok = arr.ndim == len(shape) and all(s is None or s == a for s, a in zip(shape, arr.shape))
        if not ok:
            want = "[" + ",".join("*" if s is None else str(s) for s in shape) + "]"
            raise DatasetError(f"{path}: {what} has shape {list(arr.shape)}, expected {want}")
    if not np.all(np.isfinite(arr)):
        raise DatasetError(f"{path}: {what} contains NaN or inf")
    return arr.astype(dtype)


def natural_key(name: str):
    """Natural sort key: digit runs compare as integers, so "2" sorts before "10".

    Returns:
        list of str/int tokens (usable as a `sorted` key).
    """
    import re

    return [int(tok) if tok.isdigit() else tok for tok in re.split(r"(\d+)", name)]


def finite_number(value, path, what: str) -> float:
    """``float(value)`` when finite.

    Raises:
        DatasetError: "<path>: <what> ..." when value is not a number, or is NaN/inf.
    """
    try:
        x = float(value)
    except (TypeError, ValueError):
        raise DatasetError(f"{path}: {what} is not a number ({value!r})") from None
    if not math.isfinite(x):
        raise DatasetError(f"{path}: {what} is NaN or inf")
    return x


# The producers' test split of a single sequence: its last 350 frames (INSTA ``scripts/transforms.py``
# ``-t 350``, GaussianBlendshapes, SplattingAvatar ``num_for_train = -350``).
PRODUCER_TEST_FRAMES = 350
# Share of a short sequence used as its test split when the producers' 350 frames would leave no
# training frames (the project's own exports use the same 15 %, `stavatar_ti.data.writer.split_frames`).
SHORT_TEST_FRACTION = 0.15


def check_test_frames(value, where: str = "test_frames") -> int | None:
    """Validate a ``test_frames`` setting (``data.test_frames``).

    Returns:
        None (use the default) or the value as a non-negative Python int.
    Raises:
        DatasetError: "<where>: ..." for a bool, a non-integer or a negative number.
    """
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, np.integer, float)) or value != int(value) \
            or value < 0:
        raise DatasetError(f"{where}: test_frames (data.test_frames) must be a non-negative integer, got {value!r}")
    return int(value)


def tail_split(records: list, test_frames, where) -> tuple:
    """Split one sequence into (train, test): the last frames are the test split.

    Args:
        records: frames in time order. where: the folder or file named in messages.
        test_frames: None for the producers' rule (the last `PRODUCER_TEST_FRAMES`; a sequence that
            has no more frames than that gets its last ``round(0.15 n)`` frames, at least 1, and a
            `DatasetWarning`), or an explicit count (``data.test_frames``; 0 = no test split).
    Returns:
        (train list, test list).
    Raises:
        DatasetError: "<where>: ..." for an invalid count or one that leaves no training frames.
    """
    n = len(records)
    k = check_test_frames(test_frames, str(where))
    if k is None:
        k = PRODUCER_TEST_FRAMES
        if n <= k:
            k = 0 if n < 2 else min(n - 1, max(1, int(round(SHORT_TEST_FRACTION * n))))
            warn(f"{where}: only {n} frames, so the producers' last-{PRODUCER_TEST_FRAMES}-frames test split "
                 f"would leave no training frames; using the last {k} frames as the test split "
                 f"(set data.test_frames to choose)")
    elif n > 0 and k >= n:
        raise DatasetError(f"{where}: data.test_frames={k} leaves no training frames (the sequence has {n} "
                           f"frames); choose a value from 0 to {n - 1}")
    return records[:n - k], records[n - k:]
