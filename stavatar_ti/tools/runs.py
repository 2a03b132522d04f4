"""Run folders and their data: the dataset folder a run trained on, the frames of a split, views at
the run's resolution (for scripts/render.py, evaluate.py, export.py)."""

from __future__ import annotations

import contextlib
from pathlib import Path

from ..training.scene import load_views

__all__ = ["output_folder", "resolve_data_root", "split_frames", "views_for"]


@contextlib.contextmanager
def output_folder(out):
    """Yield `out` (a Path); when the block raises, the folders it created under `out` (and `out`
    itself and its parents, when the block created them) are removed again if they are empty, so an
    error leaves no empty output folders behind. Files the block wrote stay."""
    out = Path(out)
    missing = []
    p = out.absolute()
    while not p.exists():
        missing.append(p)
        p = p.parent
    before = {d for d in out.rglob("*") if d.is_dir()} if out.is_dir() else set()
    try:
        yield out
    except BaseException:
        created = [d for d in out.rglob("*") if d.is_dir() and d not in before] if out.is_dir() else []
        for d in sorted(created, key=lambda d: len(d.parts), reverse=True) + missing:
            with contextlib.suppress(OSError):  # not empty (or gone): keep
                d.rmdir()
        raise


def resolve_data_root(avatar, data=None) -> Path:
    """The dataset folder of a run: `data` when given, else the one the run recorded (a `data` /
    `data_root` entry of results.json or the config's train section).

    Raises:
        ValueError: no folder given or recorded, or a folder that does not exist.
    """
    if data is None:
        data = getattr(avatar.config.train, "data", None)
    if data is None and avatar.run_dir is not None and (avatar.run_dir / "results.json").is_file():
        import json
        try:
            res = json.loads((avatar.run_dir / "results.json").read_text())
            data = res.get("data") or res.get("data_root")
        except (OSError, ValueError):
            data = None
    if data is None:
        raise ValueError(f"{avatar.run_dir}: the run does not record its dataset folder; pass --data DIR")
    data = Path(data)
    if not data.is_dir():
        raise ValueError(f"{data}: dataset folder not found")
    return data


def load_run_dataset(avatar, data=None):
    """The run's dataset with the split it was trained with (its config's ``data.test_frames`` /
    ``data.test_subdirs``), from `resolve_data_root`.

    Returns:
        SequenceDataset.
    Raises:
        ValueError: as `resolve_data_root`; DatasetError (a ValueError) from the reader.
    """
    from ..data import load_dataset

    d = getattr(avatar.config, "data", None)
    return load_dataset(resolve_data_root(avatar, data), test_frames=getattr(d, "test_frames", None),
                        test_subdirs=getattr(d, "test_subdirs", None))


def split_frames(dataset, split: str, max_frames: int | None = None) -> list:
    """Frames of a split ("train", "val", "test" or "all": every split, one per (timestep, camera)).

    Raises:
        ValueError: unknown or empty split.
    """
    if split == "all":
        seen, frames = set(), []
        for f in sorted(dataset.frames, key=lambda f: (f.timestep, f.camera)):
            if (f.timestep, f.camera) not in seen:
                seen.add((f.timestep, f.camera))
                frames.append(f)
    elif split in ("train", "val", "test"):
        frames = list(dataset.splits.get(split, []))
    else:
        raise ValueError(f"split: expected train, val, test or all, got {split!r}")
    if not frames:
        raise ValueError(f"{dataset.root}: the dataset has no {split} frames")
    return frames[:max_frames] if max_frames is not None else frames


def views_for(avatar, frames) -> list:
    """Views (camera + uint8 GT) at the run's training resolution and background."""
    return load_views(frames, avatar.config.train.image_scale, avatar.config.train.background)
