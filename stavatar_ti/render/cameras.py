"""Novel-view cameras for a trained avatar: look-at, orbits around the head centre, and
"frozen time, moving camera" sequences.

Conventions (as everywhere in the project, `stavatar_ti.data.records`): `viewmat` is the OpenCV
world->camera matrix [4,4] (x right, y down, z forward), `K` the pixel intrinsics [3,3]; float64 numpy.

Orbit parametrisation: around `center`, with the base direction d = normalise(eye_ref - center)
taken from a reference camera (or +z), the up vector u orthogonalised against d and r = u x d,
the camera k of n sits at

    eye_k = center + radius * (cos p_k cos y_k d + cos p_k sin y_k r + sin p_k u),
    y_k = yaw * sin(2 pi k / n),  p_k = pitch * cos(2 pi k / n)     (degrees -> radians)

(an ellipse in yaw/pitch; for n a multiple of 4 the extents +-yaw and +-pitch are reached exactly)
and looks at `center` with the up vector u, so `center` projects to the principal point.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np


def static_camera(width: int, height: int, focal_px: float, distance: float) -> tuple[np.ndarray, np.ndarray]:
    """The monocular capture camera of the synthetic and own-video datasets: at (0, 0, `distance`)
    metres looking toward -z with +y up (FLAME axes), principal point at the image centre.

    Returns (viewmat [4,4] OpenCV world->camera = diag(1, -1, -1, 1) with t = (0, 0, distance),
    K [3,3] with focal length `focal_px` pixels), float64.
    """
    V = np.diag([1.0, -1.0, -1.0, 1.0])
    V[2, 3] = distance
    K = np.array([[focal_px, 0.0, width / 2.0], [0.0, focal_px, height / 2.0], [0.0, 0.0, 1.0]])
    return V, K


@dataclass
class OrbitCamera:
    """One camera of an orbit: world->camera `viewmat` [4,4], and its `yaw`/`pitch` (degrees)
    relative to the base direction."""

    viewmat: np.ndarray
    yaw: float
    pitch: float


def _unit(v) -> np.ndarray:
    v = np.asarray(v, np.float64)
    n = np.linalg.norm(v)
    if not n > 1e-12:
        raise ValueError("cameras: degenerate direction (zero length)")
    return v / n


def look_at(eye, target, up=(0.0, 1.0, 0.0)) -> np.ndarray:
    """OpenCV world->camera matrix [4,4] of a camera at `eye` looking at `target`; `up` (world)
    maps to the image's upward direction (-y of the camera).

    Raises:
        ValueError: eye == target, or `up` parallel to the viewing direction.
    """
    eye = np.asarray(eye, np.float64)
    z = _unit(np.asarray(target, np.float64) - eye)
    x = np.cross(-np.asarray(up, np.float64), z)
    if not np.linalg.norm(x) > 1e-9:
        raise ValueError("look_at: the up vector is parallel to the viewing direction")
    x = _unit(x)
    y = np.cross(z, x)
    M = np.eye(4)
    M[:3, :3] = np.stack([x, y, z])
    M[:3, 3] = -M[:3, :3] @ eye
    return M


def camera_center(viewmat) -> np.ndarray:
    """World position [3] of the camera of a world->camera matrix."""
    M = np.asarray(viewmat, np.float64)
    return -M[:3, :3].T @ M[:3, 3]


def centered_intrinsics(K, width: int, height: int) -> np.ndarray:
    """`K` with its principal point moved to the image centre (width/2, height/2)."""
    K = np.array(K, np.float64, copy=True)
    K[0, 2], K[1, 2] = width / 2.0, height / 2.0
    return K


def orbit_basis(center, reference_viewmat=None, up=None) -> tuple:
    """(d, r, u, radius): base direction, right and up unit vectors of the orbit, and the distance
    of the reference camera to `center` (None without a reference camera)."""
    center = np.asarray(center, np.float64)
    if reference_viewmat is not None:
        M = np.asarray(reference_viewmat, np.float64)
        eye = camera_center(M)
        d = _unit(eye - center)
        radius = float(np.linalg.norm(eye - center))
        up_ref = -M[1, :3] if up is None else np.asarray(up, np.float64)
    else:
        d, radius = np.array([0.0, 0.0, 1.0]), None
        up_ref = np.array([0.0, 1.0, 0.0]) if up is None else np.asarray(up, np.float64)
    u = up_ref - np.dot(up_ref, d) * d
    u = _unit(u)
    r = np.cross(u, d)
    return d, r, u, radius


def orbit_cameras(center, n: int = 60, *, reference_viewmat=None, radius: float | None = None,
                  yaw: float = 30.0, pitch: float = 10.0, up=None) -> list:
    """`n` cameras on an orbit around `center` (see the module docstring), looking at it.

    Args:
        center: [3] world point (e.g. `Avatar.head_center(params)`).
        n: number of cameras (> 0).
        reference_viewmat: camera whose direction from `center` is yaw = pitch = 0 and whose distance
            is the default radius; None: the +z axis (FLAME faces +z) and `radius` is required.
        radius: distance of the cameras to `center` (default: the reference camera's).
        yaw, pitch: extents in degrees (|yaw| < 90, |pitch| < 90).
        up: world up vector (default: the reference camera's up, or +y).
    Returns:
        list of OrbitCamera.
    Raises:
        ValueError: bad n, radius or extents.
    """
    if isinstance(n, bool) or not isinstance(n, int) or n < 1:
        raise ValueError(f"n: expected a positive int, got {n!r}")
    if not (abs(yaw) < 90 and abs(pitch) < 90):
        raise ValueError(f"yaw/pitch: extents must lie in (-90, 90) degrees, got {yaw}, {pitch}")
    d, r, u, ref_radius = orbit_basis(center, reference_viewmat, up)
    radius = ref_radius if radius is None else float(radius)
    if radius is None or not radius > 0:
        raise ValueError(f"radius: expected a positive distance, got {radius!r}")
    center = np.asarray(center, np.float64)
    cams = []
    for k in range(n):
        a = 2.0 * math.pi * k / n
        y_deg, p_deg = yaw * math.sin(a), pitch * math.cos(a)
        y, p = math.radians(y_deg), math.radians(p_deg)
        eye = center + radius * (math.cos(p) * math.cos(y) * d + math.cos(p) * math.sin(y) * r + math.sin(p) * u)
        cams.append(OrbitCamera(look_at(eye, center, u), y_deg, p_deg))
    return cams


def yaw_pitch(viewmat, center, reference_viewmat=None, up=None) -> tuple:
    """(yaw, pitch) in degrees of a camera's position around `center` in the orbit basis of
    `reference_viewmat` (the inverse of the parametrisation of `orbit_cameras`)."""
    d, r, u, _ = orbit_basis(center, reference_viewmat, up)
    v = _unit(camera_center(viewmat) - np.asarray(center, np.float64))
    pitch = math.degrees(math.asin(float(np.clip(np.dot(v, u), -1.0, 1.0))))
    yaw = math.degrees(math.atan2(float(np.dot(v, r)), float(np.dot(v, d))))
    return yaw, pitch
