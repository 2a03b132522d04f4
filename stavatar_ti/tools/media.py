"""Image strips (GT | render | error map), MP4 writing and OBJ writing."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

__all__ = ["error_map", "comparison_strip", "write_video", "write_obj"]


def error_map(render: np.ndarray, gt: np.ndarray, scale: float = 4.0) -> np.ndarray:
    """[H,W,3] uint8 'hot' colour map of the per-pixel mean absolute error (x `scale`, clipped)."""
    e = np.abs(render.astype(np.float32) - gt.astype(np.float32)).mean(-1) / 255.0
    e = np.clip(e * scale, 0.0, 1.0)
    rgb = np.stack([np.clip(3 * e, 0, 1), np.clip(3 * e - 1, 0, 1), np.clip(3 * e - 2, 0, 1)], -1)
    return (rgb * 255).round().astype(np.uint8)


def comparison_strip(render: np.ndarray, gt: np.ndarray | None, with_error: bool = True) -> np.ndarray:
    """GT | render | error map side by side (render alone without GT; no error map if not `with_error`)."""
    if gt is None:
        return render
    parts = [gt, render] + ([error_map(render, gt)] if with_error else [])
    return np.concatenate(parts, 1)


def write_video(path, frames, fps: float = 25.0) -> int:
    """Write uint8 [H,W,3] frames as an H.264 MP4 (imageio + imageio-ffmpeg). Odd sizes are padded
    to even ones with edge pixels. Returns the number of frames written.

    Raises:
        RuntimeError: imageio-ffmpeg is not installed (`pip install imageio-ffmpeg`).
        ValueError: no frames.
    """
    try:
        import imageio_ffmpeg  # noqa: F401 - availability check
        import imageio.v2 as iio2
    except ImportError:
        raise RuntimeError("MP4 output needs the package imageio-ffmpeg (pip install imageio-ffmpeg)") from None
    n = 0
    writer = None
    try:
        for frame in frames:
            f = np.asarray(frame, np.uint8)
            h, w = f.shape[:2]
            if h % 2 or w % 2:
                f = np.pad(f, ((0, h % 2), (0, w % 2), (0, 0)), mode="edge")
            if writer is None:
                writer = iio2.get_writer(str(path), fps=fps, codec="libx264", macro_block_size=1,
                                         pixelformat="yuv420p", ffmpeg_log_level="error")
            writer.append_data(f)
            n += 1
    finally:
        if writer is not None:
            writer.close()
    if n == 0:
        raise ValueError("write_video: no frames")
    return n


def write_obj(path, vertices, faces) -> None:
    """Write a triangle mesh as a Wavefront .obj (1-based faces), atomically."""
    v = (vertices.detach().cpu().double().numpy() if torch.is_tensor(vertices) else np.asarray(vertices, np.float64))
    f = (faces.detach().cpu().numpy() if torch.is_tensor(faces) else np.asarray(faces)).astype(np.int64) + 1
    lines = ["# stavatar_ti posed head mesh"] + [f"v {a:.8g} {b:.8g} {c:.8g}" for a, b, c in v]
    lines += [f"f {a} {b} {c}" for a, b, c in f]
    path = Path(path)
    tmp = path.with_suffix(".tmp")
    tmp.write_text("\n".join(lines) + "\n")
    tmp.replace(path)
