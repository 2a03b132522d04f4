"""Face-centred square crops of a video, smoothed over time, and the matching point / intrinsics maps.

    crop_boxes(landmarks, found, frame_size, ...) -> boxes float64 [T,3] (cx, cy, side), pixels
    apply_crop(frame, box, out_size, fill=255) -> uint8 [out,out,3]
    crop_mask(mask, box, out_size, fill=0.0) -> float32 [out,out]
    crop_points(points, box, out_size) -> [...,2]
    crop_intrinsics(K, box, out_size) -> K' [3,3]

Pixel convention everywhere (the rasterizer's): continuous coordinates with x right, y down, and the
centre of pixel (row i, column j) at (j + 0.5, i + 0.5). A box (cx, cy, side) covers the continuous
square [cx - side/2, cx + side/2] x [cy - side/2, cy + side/2] of the frame, which is resampled to
out_size x out_size pixels, so a point maps as u' = (u - (cx - side/2)) * out_size / side: the same
affine map for images (PIL's resampling is centre-aligned), masks, points and K.
"""

from __future__ import annotations

import math

import numpy as np
import scipy.ndimage
from PIL import Image

# Lanczos-3 support in source pixels is 3 x max(1, side/out_size); pad a little more than that.
_LANCZOS_SUPPORT = 3


def _box(box) -> tuple[float, float, float]:
    b = np.asarray(box, np.float64)
    if b.shape != (3,) or not np.all(np.isfinite(b)) or b[2] <= 0:
        raise ValueError(f"box: expected finite (cx, cy, side) with side > 0, got {box!r}")
    return float(b[0]), float(b[1]), float(b[2])


def _out_size(out_size) -> int:
    if isinstance(out_size, bool) or not isinstance(out_size, (int, np.integer)) or out_size < 1:
        raise ValueError(f"out_size: expected an integer >= 1, got {out_size!r}")
    return int(out_size)


def crop_boxes(landmarks, found, frame_size, scale: float = 1.8, smooth_sigma: float = 3.0,
               fixed_side: bool = True, shift_up: float = 0.1, side_percentile: float = 90.0) -> np.ndarray:
    """Square face crops for every frame of a clip, filled in where no face was found and smoothed.

    Per frame (with a face): the landmarks' axis-aligned bounding box gives the face extent
    e = max(box width, box height) and the centre; the centre is moved UP by ``shift_up * e`` and the
    side is ``scale * e``. MediaPipe's mesh ends at the upper forehead (landmark 10, about the hairline),
    so a box centred on the mesh would cut the top of the head and keep more neck than needed; the
    shift keeps the hair in the crop. Frames without a face take values linearly interpolated from
    the nearest frames with one (constant beyond the first / last). Then the centre is smoothed with a
    Gaussian over time (``scipy.ndimage.gaussian_filter1d``, ``mode="nearest"``) to remove landmark
    jitter.

    The side: with ``fixed_side=True`` (default) one side is used for the whole clip, the
    ``side_percentile``-th percentile of the per-frame sides. Resizing a crop of varying side to a
    fixed output size changes the focal length in output pixels from frame to frame, which a tracker
    would otherwise have to absorb as a spurious depth / scale change. With ``fixed_side=False`` the
    side is smoothed like the centre.

    Boxes may extend beyond the frame; `apply_crop` pads there.

    Args:
        landmarks: float [T,N,2] or [T,N,3] pixel coordinates (x, y[, z]); only x, y are used. Rows of
            frames without a face may be anything (NaN, as `detect_landmarks` gives).
        found: bool [T], True where the frame has a face.
        frame_size: (W, H) of the frames in pixels; used to reject landmarks that are not in pixels.
        scale: crop side / face extent (> 0).
        smooth_sigma: Gaussian standard deviation in frames (>= 0; 0 = no smoothing).
        fixed_side: one side for the whole clip (see above).
        shift_up: upward shift of the centre as a fraction of the face extent.
        side_percentile: percentile (0..100) of the per-frame sides used when ``fixed_side``.
    Returns:
        float64 [T,3]: (cx, cy, side) in pixels.
    Raises:
        ValueError: bad shapes or arguments; no frame has a face ("no face found in any frame");
            a frame marked found with non-finite x, y; landmarks that look normalised instead of pixels.
    """
    lm = np.asarray(landmarks, np.float64)
    found = np.asarray(found)
    if lm.ndim != 3 or lm.shape[2] not in (2, 3) or lm.shape[0] < 1 or lm.shape[1] < 2:
        raise ValueError(f"landmarks: expected [T,N,2] or [T,N,3] with T >= 1, N >= 2, got {lm.shape}")
    T = lm.shape[0]
    if found.shape != (T,) or found.dtype != bool:
        raise ValueError(f"found: expected bool [{T}], got {found.dtype} {found.shape}")
    try:
        W, H = (float(v) for v in frame_size)
    except (TypeError, ValueError) as e:
        raise ValueError(f"frame_size: expected (W, H), got {frame_size!r}") from e
    if not (W > 0 and H > 0):
        raise ValueError(f"frame_size: expected positive (W, H), got {frame_size!r}")
    if not scale > 0:
        raise ValueError(f"scale: expected > 0, got {scale!r}")
    if not smooth_sigma >= 0:
        raise ValueError(f"smooth_sigma: expected >= 0 frames, got {smooth_sigma!r}")
    if not 0 <= side_percentile <= 100:
        raise ValueError(f"side_percentile: expected 0..100, got {side_percentile!r}")
    if not found.any():
        raise ValueError("no face found in any frame")
    xy = lm[found, :, :2]
    bad = ~np.isfinite(xy).all(axis=(1, 2))
    if bad.any():
        t = int(np.flatnonzero(found)[np.argmax(bad)])
        raise ValueError(f"landmarks: frame {t} is marked found but has non-finite x, y")

    lo, hi = xy.min(axis=1), xy.max(axis=1)  # [F,2]
    extent = (hi - lo).max(axis=1)
    if np.median(extent) < 1e-2 * min(W, H):
        raise ValueError(f"landmarks: median face extent {np.median(extent):.3g} px is implausibly small "
                         f"for a {W:g}x{H:g} frame; pass pixel coordinates, not normalised ones")
    centre = 0.5 * (lo + hi)
    centre[:, 1] -= shift_up * extent
    side = scale * extent

    # Fill frames without a face from their neighbours (np.interp is constant beyond the ends).
    t_all, t_found = np.arange(T), np.flatnonzero(found)
    boxes = np.stack([np.interp(t_all, t_found, centre[:, 0]), np.interp(t_all, t_found, centre[:, 1]),
                      np.interp(t_all, t_found, side)], axis=1)
    if smooth_sigma > 0:
        cols = slice(0, 2) if fixed_side else slice(0, 3)
        boxes[:, cols] = scipy.ndimage.gaussian_filter1d(boxes[:, cols], smooth_sigma, axis=0, mode="nearest")
    if fixed_side:
        boxes[:, 2] = np.percentile(side, side_percentile)
    return boxes


def _padded_region(array: np.ndarray, box, out: int, fill):
    """The part of ``array`` under ``box`` plus a filter margin, padded with ``fill`` outside the frame.

    Returns (canvas, (x0, y0, x1, y1) of the box in canvas coordinates).
    """
    cx, cy, side = _box(box)
    x0, y0 = cx - 0.5 * side, cy - 0.5 * side
    margin = math.ceil(_LANCZOS_SUPPORT * max(1.0, side / out)) + 2
    ox, oy = math.floor(x0) - margin, math.floor(y0) - margin
    cw = math.ceil(x0 + side) + margin - ox
    ch = math.ceil(y0 + side) + margin - oy
    H, W = array.shape[:2]
    canvas = np.empty((ch, cw) + array.shape[2:], array.dtype)
    canvas[...] = fill
    # Overlap of the canvas [ox, ox+cw) x [oy, oy+ch) with the frame [0, W) x [0, H).
    fx0, fx1 = max(ox, 0), min(ox + cw, W)
    fy0, fy1 = max(oy, 0), min(oy + ch, H)
    if fx0 < fx1 and fy0 < fy1:
        canvas[fy0 - oy:fy1 - oy, fx0 - ox:fx1 - ox] = array[fy0:fy1, fx0:fx1]
    return canvas, (x0 - ox, y0 - oy, x0 - ox + side, y0 - oy + side)


def apply_crop(frame, box, out_size: int, fill=255) -> np.ndarray:
    """Crop a square ``box`` out of an image and resample it to ``out_size`` x ``out_size``.

    Where the box leaves the frame the image is taken as ``fill``. Resampling: PIL Lanczos (antialiased
    when shrinking) over the exact, sub-pixel box, consistent with `crop_points` / `crop_intrinsics`.

    Args:
        frame: uint8 [H,W,3] RGB.
        box: (cx, cy, side) in pixels (a row of `crop_boxes`).
        out_size: output side in pixels.
        fill: uint8 value (int or RGB triple) outside the frame; 255 = white, the background the
            avatar datasets use.
    Returns:
        uint8 [out_size,out_size,3].
    Raises:
        ValueError: bad ``frame``, ``box``, ``out_size`` or ``fill``.
    """
    frame = np.asarray(frame)
    if frame.ndim != 3 or frame.shape[2] != 3 or frame.dtype != np.uint8:
        raise ValueError(f"frame: expected uint8 [H,W,3], got {frame.dtype} {frame.shape}")
    out = _out_size(out_size)
    fill_arr = np.asarray(fill)
    if fill_arr.shape not in ((), (3,)) or np.any(fill_arr < 0) or np.any(fill_arr > 255):
        raise ValueError(f"fill: expected a value or RGB triple in 0..255, got {fill!r}")
    canvas, pil_box = _padded_region(frame, box, out, fill_arr.astype(np.uint8))
    image = Image.fromarray(canvas).resize((out, out), Image.Resampling.LANCZOS, box=pil_box)
    return np.asarray(image, np.uint8)


def crop_mask(mask, box, out_size: int, fill: float = 0.0) -> np.ndarray:
    """`apply_crop` for a soft mask: same box, same resampling, values clipped to [0, 1].

    Args:
        mask: float [H,W] in [0,1] (uint8 / bool are converted: uint8 is divided by 255).
        box: (cx, cy, side) in pixels.
        out_size: output side in pixels.
        fill: value outside the frame (0 = background).
    Returns:
        float32 [out_size,out_size] in [0,1] (Lanczos overshoot clipped).
    Raises:
        ValueError: bad ``mask``, ``box`` or ``out_size``.
    """
    mask = np.asarray(mask)
    if mask.ndim != 2:
        raise ValueError(f"mask: expected [H,W], got {mask.dtype} {mask.shape}")
    if mask.dtype == np.uint8:
        mask = mask.astype(np.float32) / 255.0
    mask = mask.astype(np.float32)
    out = _out_size(out_size)
    canvas, pil_box = _padded_region(mask, box, out, np.float32(fill))
    image = Image.fromarray(canvas).resize((out, out), Image.Resampling.LANCZOS, box=pil_box)
    return np.clip(np.asarray(image, np.float32), 0.0, 1.0)


def crop_points(points, box, out_size: int) -> np.ndarray:
    """Map pixel coordinates of the frame into the crop made by `apply_crop` with the same box.

    Args:
        points: float [...,2] (x, y) in frame pixels (pixel centres at +0.5).
        box: (cx, cy, side) in pixels.
        out_size: crop side in pixels.
    Returns:
        float64 [...,2] in crop pixels (same convention): (p - (cx - side/2, cy - side/2)) * out/side.
    Raises:
        ValueError: bad ``points``, ``box`` or ``out_size``.
    """
    p = np.asarray(points, np.float64)
    if p.ndim < 1 or p.shape[-1] != 2:
        raise ValueError(f"points: expected [...,2], got {p.shape}")
    cx, cy, side = _box(box)
    s = _out_size(out_size) / side
    return (p - np.array([cx - 0.5 * side, cy - 0.5 * side])) * s


def crop_intrinsics(K, box, out_size: int) -> np.ndarray:
    """Pixel intrinsics of the crop: K' = A @ K with A the affine map of `crop_points`.

    A point that projects to u with K projects to crop_points(u) with K' (fx, fy and skew scale by
    out/side; the principal point moves with the box).

    Args:
        K: float [3,3] pixel intrinsics of the frame (fx, fy, cx, cy; OpenCV, pixel centres at +0.5).
        box: (cx, cy, side) in pixels.
        out_size: crop side in pixels.
    Returns:
        float64 [3,3].
    Raises:
        ValueError: bad ``K``, ``box`` or ``out_size``.
    """
    K = np.asarray(K, np.float64)
    if K.shape != (3, 3) or not np.all(np.isfinite(K)):
        raise ValueError(f"K: expected a finite [3,3] matrix, got {K.shape}")
    cx, cy, side = _box(box)
    s = _out_size(out_size) / side
    A = np.array([[s, 0.0, -s * (cx - 0.5 * side)], [0.0, s, -s * (cy - 0.5 * side)], [0.0, 0.0, 1.0]])
    return A @ K
