"""Background matting onto white and VHAP-style whitening of everything below the neck line.

    matte_to_white(image, mask) -> uint8 [H,W,3]
    whiten_below(image, mask, boundary_y) -> (image uint8 [H,W,3], mask float32 [H,W])
    boundary_from_points(points2d, width) -> float64 [W]

VHAP (and the avatar datasets exported from it) composite the subject onto white and whiten the torso
below a cut through the neck, so that the avatar is not asked to explain shoulders it has no geometry
for. The neck line comes from the tracker (the projected neck cut of the head model).
"""

from __future__ import annotations

import numpy as np


def _check_image_mask(image, mask) -> tuple[np.ndarray, np.ndarray]:
    image = np.asarray(image)
    mask = np.asarray(mask)
    if image.ndim != 3 or image.shape[2] != 3 or image.dtype != np.uint8:
        raise ValueError(f"image: expected uint8 [H,W,3], got {image.dtype} {image.shape}")
    if mask.shape != image.shape[:2] or not np.issubdtype(mask.dtype, np.floating):
        raise ValueError(f"mask: expected float [{image.shape[0]},{image.shape[1]}], got {mask.dtype} {mask.shape}")
    if not np.all(np.isfinite(mask)) or mask.min() < 0 or mask.max() > 1:
        raise ValueError("mask: values must be finite and in [0, 1]")
    return image, mask


def matte_to_white(image, mask) -> np.ndarray:
    """Alpha-composite an image onto a white background: out = mask * image + (1 - mask) * 255.

    Args:
        image: uint8 [H,W,3] RGB.
        mask: float [H,W] in [0,1], the foreground alpha.
    Returns:
        uint8 [H,W,3], rounded to nearest.
    Raises:
        ValueError: wrong dtypes / shapes, or mask values outside [0, 1] or non-finite.
    """
    image, mask = _check_image_mask(image, mask)
    a = mask.astype(np.float64)[..., None]
    out = a * image.astype(np.float64) + (1.0 - a) * 255.0
    return np.clip(np.rint(out), 0, 255).astype(np.uint8)


def whiten_below(image, mask, boundary_y) -> tuple[np.ndarray, np.ndarray]:
    """Set every pixel whose centre lies below a per-column boundary to white and zero the mask there.

    Pixel (row i, column j) is whitened when its centre y = i + 0.5 is strictly greater than
    ``boundary_y[j]`` (y grows downwards). +inf whitens nothing in that column, -inf everything.

    Args:
        image: uint8 [H,W,3] RGB.
        mask: float [H,W] in [0,1].
        boundary_y: float [W], the boundary's y in pixels for each column (e.g. `boundary_from_points`).
    Returns:
        (image uint8 [H,W,3], mask float32 [H,W]): new arrays; the inputs are not modified.
    Raises:
        ValueError: wrong shapes / dtypes, mask outside [0, 1], or NaN in ``boundary_y``.
    """
    image, mask = _check_image_mask(image, mask)
    H, W = mask.shape
    b = np.asarray(boundary_y, np.float64)
    if b.shape != (W,):
        raise ValueError(f"boundary_y: expected [{W}] (one y per column), got {b.shape}")
    if np.isnan(b).any():
        raise ValueError("boundary_y: contains NaN")
    below = (np.arange(H, dtype=np.float64)[:, None] + 0.5) > b[None, :]  # [H,W]
    image = image.copy()
    image[below] = 255
    mask = mask.astype(np.float32, copy=True)
    mask[below] = 0.0
    return image, mask


def boundary_from_points(points2d, width: int) -> np.ndarray:
    """Per-column y of a polyline through projected neck-line points, for `whiten_below`.

    The points are sorted by x and linearly interpolated at the column centres x = j + 0.5; beyond the
    leftmost / rightmost point the boundary stays flat at that point's y (np.interp). Non-finite points
    (e.g. behind the camera) are dropped.

    Args:
        points2d: float [N,2] (x, y) pixel coordinates.
        width: image width W in pixels.
    Returns:
        float64 [W], y of the boundary at each column centre.
    Raises:
        ValueError: bad shapes, ``width`` < 1, or no finite point.
    """
    p = np.asarray(points2d, np.float64)
    if p.ndim != 2 or p.shape[1] != 2:
        raise ValueError(f"points2d: expected [N,2], got {p.shape}")
    if isinstance(width, bool) or not isinstance(width, (int, np.integer)) or width < 1:
        raise ValueError(f"width: expected an integer >= 1, got {width!r}")
    p = p[np.isfinite(p).all(axis=1)]
    if len(p) == 0:
        raise ValueError("points2d: no finite point")
    p = p[np.argsort(p[:, 0], kind="stable")]
    return np.interp(np.arange(width) + 0.5, p[:, 0], p[:, 1])
