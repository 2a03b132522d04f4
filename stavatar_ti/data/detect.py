"""Dataset format auto-detection and the `load_dataset` entry point.

Formats and the files that identify them (checked without parsing anything):

* ``"vhap"``: ``transforms_train.json`` plus ``flame_param/`` or ``canonical_flame_param.npz``
  (VHAP / GaussianAvatars export);
* ``"insta"``: ``checkpoint/*.frame`` (metrical-tracker output, INSTA dataset);
* ``"imavatar"``: ``flame_params.json`` in the folder, in a sub-folder or in a sub-sub-folder
  (IMavatar / PointAvatar ``<subject>/<subject>/<clip>/``).
"""

from __future__ import annotations

from pathlib import Path

from .imavatar import find_imavatar_clips, load_imavatar
from .insta import load_insta, missing_checkpoint_message
from .records import DatasetError, SequenceDataset
from .vhap import load_vhap

FORMATS = ("vhap", "insta", "imavatar")
ALIASES = {
    "vhap": "vhap", "gaussianavatars": "vhap", "gaussian_avatars": "vhap", "nerf": "vhap",
    "insta": "insta", "metrical-tracker": "insta", "metrical_tracker": "insta", "metrical": "insta",
    "imavatar": "imavatar", "pointavatar": "imavatar", "im-avatar": "imavatar",
}
READERS = {"vhap": load_vhap, "insta": load_insta, "imavatar": load_imavatar}
EXPECTED = {
    "vhap": "transforms_train.json + flame_param/ (or canonical_flame_param.npz)",
    "insta": "checkpoint/*.frame",
    "imavatar": "flame_params.json (in the folder or its clip sub-folders)",
}


def _markers(root: Path) -> dict:
    found = {}
    if (root / "transforms_train.json").is_file() and (
            (root / "flame_param").is_dir() or (root / "canonical_flame_param.npz").is_file()):
        found["vhap"] = "transforms_train.json + flame_param/"
    ckpt = root / "checkpoint"
    if ckpt.is_dir() and next(ckpt.glob("*.frame"), None) is not None:
        found["insta"] = "checkpoint/*.frame"
    clips = find_imavatar_clips(root)
    if clips:
        found["imavatar"] = str(clips[0].relative_to(root) / "flame_params.json") if clips[0] != root \
            else "flame_params.json"
    return found


def normalize_format(format: str) -> str:
    """Canonical format name ("vhap", "insta", "imavatar") of a name or alias (case-insensitive).

    Raises:
        DatasetError: unknown name.
    """
    key = str(format).strip().lower()
    if key not in ALIASES:
        raise DatasetError(f"{format}: unknown dataset format (choose one of {', '.join(FORMATS)})")
    return ALIASES[key]


def detect_format(root) -> str:
    """Which format the folder ``root`` holds, from the files present (nothing is parsed).

    Returns:
        "vhap", "insta" or "imavatar".
    Raises:
        DatasetError: "<root>: ..." when the folder does not exist, matches no format, or matches
            several (pass ``format=`` to `load_dataset` then).
    """
    root = Path(root)
    if not root.is_dir():
        raise DatasetError(f"{root}: dataset folder not found")
    found = _markers(root)
    if len(found) == 1:
        return next(iter(found))
    if not found:
        insta_output = missing_checkpoint_message(root)
        if insta_output is not None:
            raise DatasetError(insta_output)
        hint = ""
        if any((root / f"transforms_{s}.json").is_file() for s in ("train", "test")):
            hint = (" (transforms_*.json found but neither flame_param/ (VHAP) nor checkpoint/*.frame "
                    "(INSTA needs the metrical-tracker checkpoints for its FLAME parameters))")
        expected = "; ".join(f"{k}: {v}" for k, v in EXPECTED.items())
        raise DatasetError(f"{root}: no known dataset format{hint}; expected {expected}")
    listing = ", ".join(f"{k} ({v})" for k, v in found.items())
    raise DatasetError(f"{root}: ambiguous dataset format, files of several formats found: {listing}; "
                       f"pass format=")


def load_dataset(root, format: str | None = None, **kwargs) -> SequenceDataset:
    """Load a dataset folder in any supported format into the project's `SequenceDataset`.

    Args:
        root: dataset folder.
        format: None to auto-detect (`detect_format`), or "vhap" / "insta" / "imavatar" (aliases:
            "gaussianavatars", "metrical-tracker", "pointavatar", ...) to force a reader.
        **kwargs: passed to the reader (`load_insta`: test_frames; `load_imavatar`: test_subdirs,
            test_frames, json_name). Keywords the detected reader does not take are dropped when
            their value is None (so callers can pass ``data.*`` settings unconditionally); a set
            keyword the reader does not take is an error. See `reader_kwargs`.
    Returns:
        SequenceDataset (see `stavatar_ti.data.records`): OpenCV world->camera viewmats, pixel K,
        metres, FLAME parameters as float32 numpy arrays, lazily loaded images.
    Raises:
        DatasetError: (message starting with the offending file or folder) for an unknown or wrong
            forced format ("<root>: not a <format> dataset: ..."), undetectable data, or any error
            of the reader.
    """
    root = Path(root)
    if format is None:
        fmt = detect_format(root)
    else:
        fmt = normalize_format(format)
        if not root.is_dir():
            raise DatasetError(f"{root}: dataset folder not found")
        found = _markers(root)
        if fmt == "insta" and not found and missing_checkpoint_message(root) is not None:
            raise DatasetError(missing_checkpoint_message(root))
        if fmt not in found:
            others = ", ".join(found) or "none"
            raise DatasetError(f"{root}: not a '{fmt}' dataset: expected {EXPECTED[fmt]}; "
                               f"formats found in this folder: {others}")
    return READERS[fmt](root, **reader_kwargs(fmt, root, kwargs))


READER_KEYWORDS = {"vhap": (), "insta": ("test_frames",), "imavatar": ("test_subdirs", "test_frames", "json_name")}


def reader_kwargs(fmt: str, root, kwargs: dict) -> dict:
    """The keyword arguments of `load_dataset` that the reader of ``fmt`` takes.

    Returns:
        dict: kwargs without the None values the reader does not take.
    Raises:
        DatasetError: "<root>: ..." when a set value (not None) is not used by this format (e.g.
            ``data.test_subdirs`` for a VHAP export, whose split is in its transforms files).
    """
    allowed = READER_KEYWORDS[fmt]
    extra = sorted(k for k, v in kwargs.items() if k not in allowed and v is not None)
    if extra:
        flags = ", ".join(f"data.{k}" for k in extra)
        raise DatasetError(f"{root}: {flags} does not apply to a '{fmt}' dataset (its split comes from "
                           f"{'its transforms files' if fmt == 'vhap' else 'the frame order'}); unset it")
    return {k: v for k, v in kwargs.items() if k in allowed}
