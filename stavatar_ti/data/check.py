"""Dataset checker behind ``scripts/check_dataset.py``: load, validate, summarise in a rich table.

Fatal problems (anything the readers reject, plus unreadable or wrongly sized images) raise
`DatasetError`; `run_check` turns them into one ``error: <file>: <what>`` line on stderr and exit
code 1. Non-fatal observations (empty splits, expression sizes the head model will pad, non-rigid
cameras, ...) are listed as "problems" in the report and do not change the exit code.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from .conventions import rotation_error
from .detect import load_dataset
from .records import DatasetError, DatasetWarning, SequenceDataset

# Sizes of the project's default head model (method.md Sec. 2 / VHAP: 300 shape, 100 expression).
DEFAULT_N_SHAPE = 300
DEFAULT_N_EXPR = 100


@dataclass
class DatasetReport:
    """Summary of a checked dataset.

    split_counts: split -> number of frames. resolutions: sorted distinct (width, height).
    fx, fy: (min, max) focal lengths in pixels. param_sizes: key -> shape (tuple) of the first frame.
    problems: non-fatal observations. images_checked: how many image (+ mask) files were decoded.
    """

    root: Path
    format: str
    head_model: str | None
    split_counts: dict
    resolutions: list
    fx: tuple
    fy: tuple
    param_sizes: dict
    timesteps: int
    problems: list = field(default_factory=list)
    images_checked: int = 0


def check_dataset(root, format: str | None = None, check_images: bool = True, sample: int | None = None,
                  **kwargs) -> DatasetReport:
    """Load and check a dataset; return its `DatasetReport`.

    Args:
        root: dataset folder. format: None (auto-detect) or a format name (see `load_dataset`).
        check_images: decode every image and mask (size and readability; the default); False
            decodes only the first frame of each split.
        sample: with `check_images`, decode only about this many frames (the first of each split
            plus evenly spaced ones: ``check_dataset.py --quick``); None decodes all.
        **kwargs: passed to the reader (test_frames, test_subdirs, ...).
    Returns:
        DatasetReport; the reader's `DatasetWarning`s (a split that looks swapped, a short sequence's
        test split) are listed in its ``problems`` instead of being printed.
    Raises:
        DatasetError: the first fatal problem, message "<file>: <what>".
    """
    import warnings

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", DatasetWarning)
        ds = load_dataset(root, format=format, **kwargs)
    report = summarize(ds, check_images=check_images, sample=sample)
    report.problems[:0] = [str(w.message) for w in caught if issubclass(w.category, DatasetWarning)]
    return report


def _frames_to_decode(ds: SequenceDataset, check_images: bool, sample: int | None) -> list:
    """Every frame, the first of each split, or (with `sample`) those plus evenly spaced frames."""
    firsts = [ds.splits[s][0] for s in ("train", "val", "test") if ds.splits.get(s)]
    if not check_images:
        return firsts
    if sample is None or sample >= len(ds.frames):
        return list(ds.frames)
    idx = np.unique(np.linspace(0, len(ds.frames) - 1, max(1, int(sample))).round().astype(int))
    return firsts + [ds.frames[i] for i in idx]


def summarize(ds: SequenceDataset, check_images: bool = True, sample: int | None = None) -> DatasetReport:
    """Build the report of a loaded dataset (decoding images as in `check_dataset`).

    Raises:
        DatasetError: an unreadable or wrongly sized image or mask, or an image with NaN/inf.
    """
    frames = ds.frames
    problems = []
    counts = {s: len(ds.splits.get(s, [])) for s in ("train", "val", "test")}
    for s in ("train", "test"):
        if counts[s] == 0:
            problems.append(f"{s} split is empty")
    checked = 0
    to_check = _frames_to_decode(ds, check_images, sample)
    seen = set()
    for r in to_check:
        if r.image_path in seen:
            continue
        seen.add(r.image_path)
        img = r.load_image()
        if not np.all(np.isfinite(img)):
            raise DatasetError(f"{r.image_path}: image contains NaN or inf")
        r.load_mask()
        checked += 1
    distinct = len({r.image_path for r in frames})
    if checked < distinct:
        problems.append(f"only {checked} of {distinct} images decoded (sampled); run without --quick to check all")

    if not frames:
        return DatasetReport(ds.root, ds.format, ds.head_model, counts, [], (0.0, 0.0), (0.0, 0.0), {}, 0,
                             problems + ["no frames"], checked)
    res = sorted({(r.width, r.height) for r in frames})
    if len(res) > 1:
        problems.append(f"{len(res)} different image sizes")
    fx = np.array([r.K[0, 0] for r in frames])
    fy = np.array([r.K[1, 1] for r in frames])
    cx = np.array([r.K[0, 2] for r in frames])
    cy = np.array([r.K[1, 2] for r in frames])
    w = np.array([r.width for r in frames])
    h = np.array([r.height for r in frames])
    outside = int(np.sum((cx < 0) | (cx > w) | (cy < 0) | (cy > h)))
    if outside:
        problems.append(f"{outside} frames have the principal point outside the image")
    nonrigid = sum(rotation_error(r.viewmat) > 1e-4 for r in frames)
    if nonrigid:
        problems.append(f"{nonrigid} cameras are not rigid (scaled or sheared rotation)")
    sizes = {k: tuple(np.shape(v)) for k, v in frames[0].params.items()}
    e = sizes["expr"][0] if sizes.get("expr") else 0
    if e != DEFAULT_N_EXPR:
        problems.append(f"{e} expression coefficients (the head model pads/truncates to its n_expr, "
                        f"default {DEFAULT_N_EXPR})")
    s = sizes["shape"][0] if sizes.get("shape") else 0
    if s != DEFAULT_N_SHAPE:
        problems.append(f"{s} shape coefficients (the head model pads/truncates to its n_shape, "
                        f"default {DEFAULT_N_SHAPE})")
    keys = {}
    for split in ("train", "val", "test"):
        for r in ds.splits.get(split, []):
            keys.setdefault((r.timestep, r.camera), set()).add(split)
    dup = {k: v for k, v in keys.items() if len(v) > 1}
    if dup:
        problems.append(f"{len(dup)} frames are in more than one split ("
                        f"{', '.join(sorted({'/'.join(sorted(v)) for v in dup.values()}))})")
    timesteps = len({r.timestep for r in frames})
    return DatasetReport(ds.root, ds.format, ds.head_model, counts, res, (float(fx.min()), float(fx.max())),
                         (float(fy.min()), float(fy.max())), sizes, timesteps, problems, checked)


def report_table(report: DatasetReport):
    """Render a `DatasetReport` as a two-column `rich.table.Table`.

    Rows: format, frames per split (+ distinct timesteps), resolution(s) in pixels, focal length
    ranges fx / fy in pixels, parameter sizes, head model, images decoded, problems found.
    """
    from rich.table import Table

    def rng(a):
        return f"{a[0]:.2f}" if abs(a[1] - a[0]) < 5e-3 else f"{a[0]:.2f} – {a[1]:.2f}"

    t = Table(title=f"Dataset {report.root}", show_header=True)
    t.add_column("property", style="bold")
    t.add_column("value")
    t.add_row("format", report.format)
    t.add_row("frames", "  ".join(f"{k}: {v}" for k, v in report.split_counts.items())
              + f"  (timesteps: {report.timesteps})")
    t.add_row("resolution", ", ".join(f"{w}x{h}" for w, h in report.resolutions) or "-")
    t.add_row("focal fx / fy (px)", f"{rng(report.fx)} / {rng(report.fy)}")
    t.add_row("parameters", "  ".join(f"{k}{list(v)}" for k, v in report.param_sizes.items()) or "-")
    t.add_row("head model", report.head_model or "unknown")
    t.add_row("images decoded", str(report.images_checked))
    t.add_row("problems", "\n".join(report.problems) if report.problems else "none")
    return t


def run_check(root, format: str | None = None, check_images: bool = True, stdout=None, stderr=None,
              sample: int | None = None, **kwargs) -> int:
    """CLI body: check ``root`` (every image, or `sample` of them), print the table (stdout) or
    ``error: <file>: <what>`` (stderr). ``kwargs`` go to the reader (test_frames, test_subdirs).

    Returns:
        0 when the dataset loads and every decoded image is fine, 1 for bad data.
    """
    from rich.console import Console

    stdout = sys.stdout if stdout is None else stdout
    stderr = sys.stderr if stderr is None else stderr
    try:
        report = check_dataset(root, format=format, check_images=check_images, sample=sample, **kwargs)
    except DatasetError as exc:
        print("error: " + str(exc).replace("\r", " ").replace("\n", " "), file=stderr)
        return 1
    except OSError as exc:
        where = getattr(exc, "filename", None) or root
        print(f"error: {where}: " + str(exc.strerror or exc).replace("\n", " "), file=stderr)
        return 1
    Console(file=stdout, width=120).print(report_table(report))
    return 0
