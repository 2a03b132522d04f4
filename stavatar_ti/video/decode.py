"""Decode a video file into RGB frames with imageio's ffmpeg plugin (imageio-ffmpeg binary).

    read_video(path, max_frames=None, stride=1) -> (frames uint8 [T,H,W,3], fps float)
    probe_video(path) -> {"fps", "size", "n_frames", "duration"}

imageio-ffmpeg is the `video` extra (`pip install 'stavatar_ti[video]'`); it bundles an ffmpeg binary.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np

_PLUGIN = "FFMPEG"  # imageio's ffmpeg plugin (pipes through the imageio-ffmpeg binary)


def _iio():
    try:
        import imageio.v3 as iio
        import imageio_ffmpeg  # noqa: F401  (the plugin needs it; fail here with a clear message)
    except ImportError as e:
        raise ImportError("reading a video needs imageio-ffmpeg: pip install 'stavatar_ti[video]'") from e
    return iio


def _check_file(path) -> Path:
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"{path}: video file not found")
    if not path.is_file():
        raise ValueError(f"{path}: not a file")
    return path


def _one_line(e: BaseException) -> str:
    # ffmpeg errors carry its whole stderr; keep the first line only.
    text = str(e).strip().splitlines()
    return text[0] if text else type(e).__name__


def probe_video(path) -> dict:
    """Container metadata of a video, without decoding frames.

    Args:
        path: video file (any format ffmpeg reads).
    Returns:
        dict with ``fps`` (float, frames per second), ``size`` ((W, H) int pixels), ``duration``
        (float seconds, nan when unknown) and ``n_frames`` (int, an ESTIMATE: round(duration x fps);
        ffmpeg does not count frames without decoding; -1 when unknown).
    Raises:
        FileNotFoundError: ``path`` does not exist.
        ValueError: the file is not a readable video (one line naming the file).
    """
    path = _check_file(path)
    iio = _iio()
    try:
        meta = iio.immeta(path, plugin=_PLUGIN)
    except (OSError, RuntimeError, ValueError) as e:
        raise ValueError(f"{path}: not a readable video ({_one_line(e)})") from e
    fps = float(meta.get("fps", math.nan))
    size = tuple(int(v) for v in meta.get("size", (0, 0)))
    duration = float(meta.get("duration", math.nan))
    n = meta.get("nframes", math.inf)
    if not math.isfinite(n):
        n = round(duration * fps) if math.isfinite(duration) and math.isfinite(fps) else -1
    return {"fps": fps, "size": size, "n_frames": int(n), "duration": duration}


def read_video(path, max_frames: int | None = None, stride: int = 1) -> tuple[np.ndarray, float]:
    """Decode a video into RGB frames.

    Args:
        path: video file (mp4, webm, avi, ...: anything ffmpeg decodes).
        max_frames: keep at most this many frames (counted after ``stride``); None keeps all.
        stride: keep every ``stride``-th frame, starting with the first (temporal subsampling).
    Returns:
        frames: uint8 [T,H,W,3] RGB (row 0 at the top), T >= 1.
        fps: float frames per second of the RETURNED frames (container fps / stride).
    Raises:
        FileNotFoundError: ``path`` does not exist.
        ValueError: bad ``max_frames`` / ``stride``; the file cannot be decoded or has no frames
            (one line naming the file).
    """
    if isinstance(stride, bool) or not isinstance(stride, (int, np.integer)) or stride < 1:
        raise ValueError(f"stride: expected an integer >= 1, got {stride!r}")
    if max_frames is not None and (isinstance(max_frames, bool) or not isinstance(max_frames, (int, np.integer))
                                   or max_frames < 1):
        raise ValueError(f"max_frames: expected None or an integer >= 1, got {max_frames!r}")
    path = _check_file(path)
    iio = _iio()
    frames = []
    try:
        fps = float(iio.immeta(path, plugin=_PLUGIN).get("fps", math.nan))
        # Stream, so that max_frames does not decode (or hold) the whole clip.
        for i, frame in enumerate(iio.imiter(path, plugin=_PLUGIN)):
            if i % stride:
                continue
            frames.append(np.asarray(frame))
            if max_frames is not None and len(frames) >= max_frames:
                break
    except (OSError, RuntimeError, ValueError) as e:
        raise ValueError(f"{path}: cannot decode video ({_one_line(e)})") from e
    if not frames:
        raise ValueError(f"{path}: video has no frames")
    out = np.stack(frames)
    if out.dtype != np.uint8 or out.ndim != 4 or out.shape[-1] != 3:
        raise ValueError(f"{path}: decoded frames are {out.dtype} {out.shape}, expected uint8 [T,H,W,3]")
    return out, fps / stride
