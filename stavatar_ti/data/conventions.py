"""Every camera-axis, intrinsics, rotation and unit conversion of the dataset readers, in one place.

Target convention (the whole project; see `stavatar_ti.data.records`)
---------------------------------------------------------------------
* ``viewmat`` [4,4] float64: world -> camera, ``p_cam = R @ p_world + t`` with OpenCV camera axes
  (x right, y down, z forward: the camera looks along +z). Last row (0, 0, 0, 1).
* ``K`` [3,3] float64 pixel intrinsics ``[[fx, 0, cx], [0, fy, cy], [0, 0, 1]]``; a camera point
  projects to ``u = fx x/z + cx``, ``v = fy y/z + cy``. Pixel (row i, column j) covers
  ``[j, j+1) x [i, i+1)`` and has its centre at ``(j + 0.5, i + 0.5)``; the image spans
  ``[0, W] x [0, H]``, so ``cx = W/2`` is the exact image centre ("edge" convention, the one of
  PyTorch3D's NDC, nvdiffrast and the 3DGS rasterizers). Conventions that put pixel centres on
  integers (strict OpenCV) would need ``+0.5``; none of the sources below does (see each function).
* World units: metres (FLAME's native unit).
* Head-model parameters: FLAME names ``shape, expr, rotation, neck_pose, jaw_pose, eyes_pose (6),
  translation``; all rotations are axis-angle vectors in radians (direction = axis, norm = angle),
  for column vectors (``x' = R x``).

Sources of each input convention
--------------------------------
* OpenGL/Blender camera-to-world (NeRF ``transforms.json``; VHAP export): GaussianAvatars
  ``scene/dataset_readers.py`` (``readCamerasFromTransforms``: ``c2w[:3, 1:3] *= -1`` then invert).
* Field of view -> focal: GaussianAvatars ``utils/graphics_utils.fov2focal`` as used by the reader
  above and VHAP ``export_as_nerf_dataset.py`` (``angle_x = 2 atan(w / (2 fl_x))``).
* VHAP's principal point: ``cy`` measured from the image bottom (``util/camera.py``
  ``convert_camera_convention("opencv->opengl")``: ``K[1,2] = H - K[1,2]``; see `nerf_intrinsics`).
* INSTA ``transforms_*.json`` (instant-ngp layout but OpenCV axes): INSTA ``scripts/transforms.py``
  writes ``transform_matrix = inv([R | t])`` with ``R, t`` the metrical-tracker ``opencv`` entries.
* metrical-tracker ``.frame``: ``tracker.py`` ``save_checkpoint`` stores
  ``opencv = pytorch3d.utils.opencv_from_cameras_projection(cameras, image_size)``, i.e. ``R, t``
  world -> camera with OpenCV axes and ``K`` whose principal point is ``c0 = (W/2, H/2) - p0 * s``
  (PyTorch3D screen convention, image spanning [0, W]); ``img_size`` is (H, W) (config.py:
  ``image_size = [512, 512]  # height, width``). 6D rotations are PyTorch3D's
  ``matrix_to_rotation_6d`` = the first two ROWS of R (``rotation_6d_to_matrix`` stacks
  ``b1, b2, b3`` along dim -2), used by ``flame/lbs.py`` as ``R @ x``.
* IMavatar ``flame_params.json``: IMavatar ``preprocess/DECA/optimize.py`` (``projection`` and the
  saved ``world_mat``/``intrinsics``), ``code/datasets/real_dataset.py`` (normalised intrinsics x
  image size), PointAvatar ``code/datasets/real_dataset.py`` and SplattingAvatar
  ``dataset/imavatar_data.py`` (the same conversion to OpenCV axes).
"""

from __future__ import annotations

import math

import numpy as np

from .records import DatasetError

# Axis flip between OpenGL/Blender camera axes (x right, y up, z backward) and OpenCV camera axes
# (x right, y down, z forward). It is its own inverse.
GL_TO_CV = np.diag([1.0, -1.0, -1.0])

# IMavatar scales the FLAME head by 4 ("The FLAME head is centered at the origin, scaled by 4 times",
# IMavatar code/datasets/real_dataset.py; `verts_p *= 4` in preprocess/DECA/optimize.py).
IMAVATAR_WORLD_SCALE = 4.0

# Names of the metrical-tracker pose parameters in the project convention.
FLAME_POSE_NAMES = ("rotation", "neck_pose", "jaw_pose", "eyes_pose", "translation")


# ----------------------------------------------------------------------------------------------
# Extrinsics
# ----------------------------------------------------------------------------------------------

def rt_to_viewmat(R, t) -> np.ndarray:
    """Build a world->camera 4x4 from ``R`` [3,3] and ``t`` [3] (``p_cam = R p + t``).

    Returns [4,4] float64. No validation (see `validate_camera`).
    """
    V = np.eye(4)
    V[:3, :3] = np.asarray(R, np.float64).reshape(3, 3)
    V[:3, 3] = np.asarray(t, np.float64).reshape(3)
    return V


def invert_rigid(M, path="<matrix>", what="camera matrix") -> np.ndarray:
    """Inverse of a 4x4 affine transform (world<->camera).

    Args:
        M: [4,4] float, last row (0, 0, 0, 1), invertible 3x3 block.
    Returns:
        [4,4] float64 inverse (general inverse of the 3x3 block, so scaled/sheared input is inverted
        exactly too).
    Raises:
        DatasetError: "<path>: <what> ..." if the last row is wrong, or the 3x3 block is singular.
    """
    M = np.asarray(M, np.float64)
    if M.shape != (4, 4):
        raise DatasetError(f"{path}: {what} has shape {list(M.shape)}, expected [4,4]")
    if not np.all(np.isfinite(M)):
        raise DatasetError(f"{path}: {what} contains NaN or inf")
    if not np.allclose(M[3], [0.0, 0.0, 0.0, 1.0], atol=1e-6):
        raise DatasetError(f"{path}: {what} last row is {M[3].tolist()}, expected [0, 0, 0, 1]")
    A = M[:3, :3]
    scale = float(np.abs(A).max())
    det = float(np.linalg.det(A / scale)) if scale > 0.0 else 0.0   # scale-free singularity test
    if not math.isfinite(det) or abs(det) <= 1e-9:
        raise DatasetError(f"{path}: {what} is not invertible (3x3 block is singular)")
    Ai = np.linalg.inv(A)
    out = np.eye(4)
    out[:3, :3] = Ai
    out[:3, 3] = -Ai @ M[:3, 3]
    return out


def opengl_c2w_to_viewmat(c2w, path="<matrix>") -> np.ndarray:
    """OpenGL/Blender camera-to-world -> OpenCV world-to-camera ``viewmat``.

    Source convention (NeRF/Blender ``transform_matrix``, VHAP/GaussianAvatars export): the columns
    of ``c2w[:3, :3]`` are the camera's x (right), y (UP) and z (BACKWARD, the camera looks along
    -z) axes in world coordinates; ``c2w[:3, 3]`` is the camera centre.

    Math: OpenCV axes are (x, -y, -z) of the OpenGL ones, so ``c2w_cv = c2w_gl @ diag(1, -1, -1, 1)``
    (negate columns 1 and 2, exactly GaussianAvatars' ``c2w[:3, 1:3] *= -1``), and
    ``viewmat = inverse(c2w_cv)``, i.e. ``R = diag(1,-1,-1) R_gl^T``, ``t = -R C``.

    Args:
        c2w: [4,4] (or [3,4]) float.
        path: file named in errors.
    Returns:
        [4,4] float64 viewmat.
    Raises:
        DatasetError: wrong shape, NaN/inf, non-invertible rotation block.
    """
    M = _as_4x4(c2w, path, "transform_matrix")
    M = M.copy()
    M[:3, 1:3] *= -1.0
    return invert_rigid(M, path, "transform_matrix")


def opencv_c2w_to_viewmat(c2w, path="<matrix>") -> np.ndarray:
    """OpenCV camera-to-world (INSTA ``transforms_*.json``) -> OpenCV world-to-camera ``viewmat``.

    Source convention: INSTA ``scripts/transforms.py`` builds ``w2c = [[R, t], [0, 1]]`` from the
    metrical-tracker ``opencv`` R, t (already OpenCV axes, world->camera) and stores
    ``transform_matrix = inv(w2c)``; there is NO axis flip. (Plain NeRF / instant-ngp
    ``transforms.json`` files use OpenGL axes and go through `opengl_c2w_to_viewmat`; instant-ngp's
    own scale/offset are applied by its loader and are not part of the file.)
    Math: ``viewmat = inverse(transform_matrix)``.

    Args:
        c2w: [4,4] (or [3,4]) float.
    Returns:
        [4,4] float64 viewmat.
    Raises:
        DatasetError: wrong shape, NaN/inf, non-invertible rotation block.
    """
    return invert_rigid(_as_4x4(c2w, path, "transform_matrix"), path, "transform_matrix")


def _as_4x4(M, path, what) -> np.ndarray:
    try:
        M = np.asarray(M, np.float64)
    except (TypeError, ValueError):
        raise DatasetError(f"{path}: {what} is not a numeric matrix") from None
    if M.shape == (3, 4):
        M = np.concatenate([M, [[0.0, 0.0, 0.0, 1.0]]], 0)
    if M.shape != (4, 4):
        raise DatasetError(f"{path}: {what} has shape {list(M.shape)}, expected [4,4] or [3,4]")
    if not np.all(np.isfinite(M)):
        raise DatasetError(f"{path}: {what} contains NaN or inf")
    return M


def metrical_tracker_camera(R, t, K) -> tuple:
    """metrical-tracker ``.frame`` ``opencv{R, t, K}`` -> ``(viewmat, K)`` of the target convention.

    Source convention (``tracker.py`` ``save_checkpoint``: ``opencv_from_cameras_projection(cameras,
    image_size)``; PyTorch3D ``_opencv_from_cameras_projection``): ``R = (R_p3d with its x, y columns
    negated)^T`` and ``t = t_p3d`` with x, y negated, i.e. an OpenCV world->camera transform
    ``p_cam = R p + t`` of the FLAME world (metres); GaussianBlendshapes ``FLAME/dataset.py`` and
    FlashAvatar ``scene/__init__.py`` use it as w2c too. ``K`` has ``c = (W/2, H/2) - p0 * min(W,H)/2``
    and ``f = f_ndc * min(W,H)/2``: PyTorch3D's screen space spans [0, W] x [0, H], so ``cx = W/2`` is
    the image centre - exactly the target's pixel-centre convention, no half-pixel shift.

    Math: identity (``viewmat = [[R, t], [0, 1]]``, K unchanged).

    Args:
        R: [3,3] float. t: [3] float (metres). K: [3,3] float (pixels).
    Returns:
        (viewmat [4,4] float64, K [3,3] float64), unvalidated (see `validate_camera`).
    """
    return rt_to_viewmat(R, t), np.array(K, np.float64).reshape(3, 3)


def camera_center(viewmat) -> np.ndarray:
    """Camera centre of a world->camera ``viewmat``.

    Args:
        viewmat: [4,4] float, invertible 3x3 block.
    Returns:
        [3] float64 world position ``C = -R^-1 t`` (world units, metres after conversion).
    """
    V = np.asarray(viewmat, np.float64)
    return -np.linalg.solve(V[:3, :3], V[:3, 3])


# ----------------------------------------------------------------------------------------------
# Intrinsics
# ----------------------------------------------------------------------------------------------

def intrinsics_matrix(fx, fy, cx, cy) -> np.ndarray:
    """Pixel intrinsics matrix of the target convention.

    Args:
        fx, fy: focal lengths in pixels. cx, cy: principal point in pixels, measured from the image
            corner with pixel (i, j) centred at (j + 0.5, i + 0.5) (so cx = W/2 is the centre).
    Returns:
        K [3,3] float64 ``[[fx, 0, cx], [0, fy, cy], [0, 0, 1]]`` (zero skew). No validation.
    """
    return np.array([[float(fx), 0.0, float(cx)], [0.0, float(fy), float(cy)], [0.0, 0.0, 1.0]])


def fov_to_focal(fov: float, size: float) -> float:
    """Focal length in pixels from a full field of view (radians) across ``size`` pixels.

    Math (pinhole, GaussianAvatars ``fov2focal``): ``f = size / (2 tan(fov / 2))``; inverse of VHAP's
    ``camera_angle_x = 2 atan(w / (2 fl_x))``.
    """
    return float(size) / (2.0 * math.tan(float(fov) / 2.0))


def focal_to_fov(focal: float, size: float) -> float:
    """Full field of view (radians) across ``size`` pixels from a focal length in pixels.

    Math: ``fov = 2 atan(size / (2 f))`` (VHAP ``export_as_nerf_dataset.py``: ``angle_x``). Returns a
    float; ``f`` must be non-zero (ZeroDivisionError otherwise).
    """
    return 2.0 * math.atan(float(size) / (2.0 * float(focal)))


def imavatar_intrinsics(intrinsics, width: int, height: int, path="<json>") -> np.ndarray:
    """IMavatar normalised ``intrinsics`` [fx, fy, cx, cy] -> pixel ``K`` [3,3] (float64).

    Source convention (IMavatar ``preprocess/DECA/optimize.py``): with pixel intrinsics
    (fx, fy, cx, cy) of an S x S image the file stores ``[-fx/S, fy/S, cx/S, cy/S]`` - the x focal is
    NEGATIVE - and the projection of a camera point (x, y, z) (z < 0: OpenGL-like camera, see
    `imavatar_viewmat`) is ``u = (x/z) * s0 * W + s2 * W``, ``v = (y/z) * s1 * H + s3 * H``
    (``code/datasets/real_dataset.py`` multiplies the normalised values by the image size). "Old
    format" files (``cy > 1``, real_dataset.py) store pixels of a 512 x 512 image instead.

    Math: in OpenCV axes (x, -y, -z) the same projection reads ``u = |s0| W x_cv/z_cv + s2 W``,
    ``v = s1 H y_cv/z_cv + s3 H``, so ``K = [[|s0| W, 0, s2 W], [0, s1 H, s3 H], [0, 0, 1]]``
    (PointAvatar and SplattingAvatar take ``abs``). The principal point is used as stored, without
    a half-pixel shift (PointAvatar converts it to PyTorch3D NDC, i.e. the edge convention).

    Args:
        intrinsics: 4 floats from the JSON. width, height: image size in pixels.
    Returns:
        K [3,3] float64.
    Raises:
        DatasetError: "<path>: intrinsics ..." for a wrong length, NaN/inf, zero focal lengths, or a
            sign pattern other than IMavatar's (fx < 0, fy > 0).
    """
    vals = np.asarray(intrinsics, np.float64).reshape(-1) if _is_numeric(intrinsics) else None
    if vals is None or vals.shape != (4,):
        raise DatasetError(f"{path}: intrinsics must be 4 numbers [fx, fy, cx, cy], got {intrinsics!r}")
    if not np.all(np.isfinite(vals)):
        raise DatasetError(f"{path}: intrinsics contain NaN or inf")
    s0, s1, s2, s3 = vals
    if s3 > 1.0:  # "An old format of my datasets" (IMavatar real_dataset.py): pixels at 512 x 512
        sx, sy = width / 512.0, height / 512.0
    else:
        sx, sy = float(width), float(height)
    if s0 == 0.0 or s1 == 0.0:
        raise DatasetError(f"{path}: intrinsics have a zero focal length (not an invertible camera)")
    if not (s0 < 0.0 < s1):
        raise DatasetError(f"{path}: intrinsics sign pattern fx={s0:g}, fy={s1:g} is not IMavatar's "
                           f"(fx < 0, fy > 0); cannot tell the camera axes")
    return intrinsics_matrix(abs(s0) * sx, s1 * sy, s2 * sx, s3 * sy)


def imavatar_viewmat(world_mat, path="<json>", world_scale: float = IMAVATAR_WORLD_SCALE) -> np.ndarray:
    """IMavatar ``world_mat`` (3x4 or 4x4, world->camera in the x4-scaled FLAME world) -> metric
    OpenCV ``viewmat``.

    Source convention (IMavatar ``preprocess/DECA/optimize.py``): ``world_mat = [R | t]`` maps the
    IMavatar world, in which the FLAME head is scaled by 4 (``verts_p *= 4``), to camera coordinates
    with x right, y UP and the head at NEGATIVE z (the default is ``[I | (0, 0, -4)]``); see
    `imavatar_intrinsics` for the projection. SplattingAvatar ``imavatar_data.py`` converts with
    ``R[1:] = -R[1:]; T[1:] = -T[1:]``, which is the same flip.

    Math: a metric point p (metres) sits at ``4 p`` in the IMavatar world, so
    ``p_cam_im = R (4 p) + t = 4 (R p + t/4)``; projection is invariant to the common factor 4, and
    OpenCV axes are ``diag(1, -1, -1)`` of the IMavatar camera axes. Hence
    ``viewmat = [[diag(1,-1,-1) R, diag(1,-1,-1) t / 4], [0, 1]]`` - a metric camera whose centre is
    the IMavatar camera centre divided by 4.

    Args:
        world_mat: [3,4] or [4,4] float.
        world_scale: the IMavatar world scale (4).
    Returns:
        [4,4] float64 viewmat (metres).
    Raises:
        DatasetError: wrong shape, NaN/inf, non-invertible rotation block.
    """
    M = _as_4x4(world_mat, path, "world_mat")
    invert_rigid(M, path, "world_mat")  # validates invertibility
    V = np.eye(4)
    V[:3, :3] = GL_TO_CV @ M[:3, :3]
    V[:3, 3] = GL_TO_CV @ M[:3, 3] / float(world_scale)
    return V


def _is_numeric(x) -> bool:
    try:
        np.asarray(x, np.float64)
        return True
    except (TypeError, ValueError):
        return False


# ----------------------------------------------------------------------------------------------
# Rotations
# ----------------------------------------------------------------------------------------------

def rotation_6d_to_matrix(d6) -> np.ndarray:
    """Zhou et al. (CVPR 2019) 6D rotation -> rotation matrix, with PyTorch3D's ROW layout.

    Source convention (metrical-tracker uses ``pytorch3d.transforms``): ``matrix_to_rotation_6d(R)``
    is ``R[..., :2, :]`` flattened - the first two ROWS of R - and ``rotation_6d_to_matrix`` does
    Gram-Schmidt on them: ``b1 = a1/|a1|``, ``b2 = normalise(a2 - (b1.a2) b1)``, ``b3 = b1 x b2``,
    ``R = stack(b1, b2, b3)`` as rows. metrical-tracker's ``flame/lbs.py`` applies this R to column
    vectors (``R @ x``), the same convention as FLAME's axis-angle.

    Args:
        d6: [..., 6] float.
    Returns:
        [..., 3, 3] float64 rotation matrices (rows b1, b2, b3). A degenerate input (zero or
        parallel rows) gives NaN, which the callers reject.
    """
    d6 = np.asarray(d6, np.float64)
    a1, a2 = d6[..., :3], d6[..., 3:6]
    with np.errstate(invalid="ignore", divide="ignore"):
        b1 = a1 / np.linalg.norm(a1, axis=-1, keepdims=True)
        b2 = a2 - np.sum(b1 * a2, -1, keepdims=True) * b1
        b2 = b2 / np.linalg.norm(b2, axis=-1, keepdims=True)
    b3 = np.cross(b1, b2)
    return np.stack([b1, b2, b3], axis=-2)


def matrix_to_axis_angle(R) -> np.ndarray:
    """Rotation matrices -> axis-angle vectors (FLAME's pose layout).

    Args:
        R: [..., 3, 3] float rotation matrices acting on column vectors (``x' = R x``; FLAME/SMPL
            ``batch_rodrigues`` convention, also metrical-tracker's ``lbs``).
    Returns:
        [..., 3] float64 axis-angle: unit axis times angle in radians (angle in [0, pi]). SciPy's
        quaternion-based conversion is used, which is accurate near 0 and near pi. Inputs that are
        not exactly orthonormal are projected to the nearest rotation by SciPy.
    """
    from scipy.spatial.transform import Rotation

    R = np.asarray(R, np.float64)
    flat = R.reshape(-1, 3, 3)
    aa = Rotation.from_matrix(flat).as_rotvec()
    return aa.reshape(R.shape[:-2] + (3,))


def rotation_6d_to_axis_angle(d6, path="<file>", what="rotation") -> np.ndarray:
    """metrical-tracker 6D rotation(s) -> axis-angle (radians), float64.

    Args:
        d6: [..., 6k] float: k consecutive 6D rotations (e.g. ``eyes`` [1,12] = two eyes).
    Returns:
        [..., 3k] float64: the k axis-angle vectors, in the stored order.
    Raises:
        DatasetError: a size that is not a multiple of 6, NaN/inf, or a degenerate 6D vector.
    """
    d6 = np.asarray(d6, np.float64)
    if d6.shape[-1] % 6 != 0 or d6.shape[-1] == 0:
        raise DatasetError(f"{path}: {what} has {d6.shape[-1]} values, expected a multiple of 6 (6D rotations)")
    if not np.all(np.isfinite(d6)):
        raise DatasetError(f"{path}: {what} contains NaN or inf")
    k = d6.shape[-1] // 6
    R = rotation_6d_to_matrix(d6.reshape(d6.shape[:-1] + (k, 6)))
    if not np.all(np.isfinite(R)):
        raise DatasetError(f"{path}: {what} is a degenerate 6D rotation (zero or parallel rows)")
    return matrix_to_axis_angle(R).reshape(d6.shape[:-1] + (3 * k,))


def rotation_to_axis_angle(value, path="<file>", what="rotation", count: int = 1) -> np.ndarray:
    """Any stored rotation layout -> ``count`` concatenated axis-angle vectors [3*count] float64.

    Accepted layouts (after dropping a leading batch dimension of 1): axis-angle [3*count],
    6D [6*count] (metrical-tracker, `rotation_6d_to_axis_angle`), or matrices [count,3,3] / [3,3] /
    [9*count] (column-vector convention).

    Raises:
        DatasetError: an unrecognised size, NaN/inf, degenerate 6D or non-rotation matrices.
    """
    try:
        a = np.asarray(value.detach().cpu().numpy() if hasattr(value, "detach") else value, np.float64)
    except (TypeError, ValueError):
        raise DatasetError(f"{path}: {what} is not a numeric array") from None
    while a.ndim > 1 and a.shape[0] == 1:
        a = a[0]
    if not np.all(np.isfinite(a)):
        raise DatasetError(f"{path}: {what} contains NaN or inf")
    n = a.size
    if n == 3 * count:
        return a.reshape(3 * count)
    if n == 6 * count:
        return rotation_6d_to_axis_angle(a.reshape(6 * count), path, what)
    if n == 9 * count:
        R = a.reshape(count, 3, 3)
        err = np.abs(R @ np.swapaxes(R, -1, -2) - np.eye(3)).max()
        if err > 1e-3 or np.any(np.linalg.det(R) < 0):
            raise DatasetError(f"{path}: {what} is not a rotation matrix (|R R^T - I| = {err:.3g})")
        return matrix_to_axis_angle(R).reshape(3 * count)
    raise DatasetError(f"{path}: {what} has {n} values; expected {3 * count} (axis-angle), {6 * count} (6D) "
                       f"or {9 * count} (matrix)")


# ----------------------------------------------------------------------------------------------
# Validation of the target convention
# ----------------------------------------------------------------------------------------------

def validate_camera(viewmat, K, path, what="camera") -> tuple:
    """Check a converted camera and return it as float64 copies ``(viewmat [4,4], K [3,3])``.

    Raises:
        DatasetError: "<path>: <what> ..." for NaN/inf, a wrong last row, a singular rotation block
            (non-invertible camera), non-positive focal lengths, or a K whose last row is not (0,0,1).
    """
    V = np.array(viewmat, np.float64)
    Km = np.array(K, np.float64)
    if V.shape != (4, 4) or Km.shape != (3, 3):
        raise DatasetError(f"{path}: {what}: viewmat {list(V.shape)} / K {list(Km.shape)}, expected [4,4] / [3,3]")
    if not (np.all(np.isfinite(V)) and np.all(np.isfinite(Km))):
        raise DatasetError(f"{path}: {what} contains NaN or inf")
    invert_rigid(V, path, what)
    if not np.allclose(Km[2], [0.0, 0.0, 1.0]) or Km[1, 0] != 0.0:
        raise DatasetError(f"{path}: {what} intrinsics are not of the form [[fx,s,cx],[0,fy,cy],[0,0,1]]")
    if not (Km[0, 0] > 0.0 and Km[1, 1] > 0.0):
        raise DatasetError(f"{path}: {what} focal lengths must be positive (fx={Km[0, 0]:g}, fy={Km[1, 1]:g}); "
                           f"the camera is not invertible")
    return V, Km


def rotation_error(viewmat) -> float:
    """How far the 3x3 block of a viewmat is from a rotation.

    Args:
        viewmat: [4,4] float.
    Returns:
        float ``max |R R^T - I|`` (0 for a rigid camera; > 0 for scaled or sheared blocks).
    """
    R = np.asarray(viewmat, np.float64)[:3, :3]
    return float(np.abs(R @ R.T - np.eye(3)).max())


def project(viewmat, K, points) -> np.ndarray:
    """Project world points with the target convention (OpenCV viewmat, pixel K, centres at +0.5).

    Args:
        viewmat: [4,4] float world->camera. K: [3,3] float pixel intrinsics. points: [N,3] or [3]
            world points (metres).
    Returns:
        [N,3] float64 ``(u, v, z_cam)``: pixel coordinates (pixel (i, j) has centre (j+.5, i+.5)) and
        camera depth. Points behind the camera (z <= 0) are returned as computed (no clipping).
    """
    P = np.asarray(points, np.float64).reshape(-1, 3)
    V = np.asarray(viewmat, np.float64)
    cam = P @ V[:3, :3].T + V[:3, 3]
    uvw = cam @ np.asarray(K, np.float64).T
    return np.stack([uvw[:, 0] / uvw[:, 2], uvw[:, 1] / uvw[:, 2], cam[:, 2]], -1)


# ----------------------------------------------------------------------------------------------
# NeRF-style (VHAP / INSTA / instant-ngp) intrinsics fields
# ----------------------------------------------------------------------------------------------

def nerf_intrinsics(frame: dict, top: dict, width: int, height: int, path, where: str = "",
                    cy_from_bottom: bool = False) -> np.ndarray:
    """Pixel ``K`` [3,3] from the intrinsics fields of a NeRF-style ``transforms*.json`` frame.

    Fields (VHAP ``export_as_nerf_dataset.py`` writes all of them per frame and at top level; INSTA
    ``scripts/transforms.py`` writes them at top level): ``fl_x, fl_y, cx, cy`` in pixels,
    ``camera_angle_x`` / ``camera_angle_y`` full fields of view in radians. Each value is taken from
    the frame first, then from the top level. Focal: ``fl_x``, else ``fov_to_focal(camera_angle_x,
    w)``; ``fl_y``, else from ``camera_angle_y`` and ``h``, else ``fl_x`` (square pixels, as
    GaussianAvatars derives FoVy from FoVx). Principal point: ``cx``/``cy``, else the image centre
    ``(w/2, h/2)`` (edge convention: VHAP writes exactly ``cx = w/2`` for a centred camera). Note that
    GaussianAvatars ignores ``cx, cy``; we honour them.

    ``cy_from_bottom`` (VHAP): the stored ``cy`` is measured from the BOTTOM of the image, so the
    target's ``cy = h - cy_stored``. Source: VHAP ``util/camera.py`` ``convert_camera_convention``
    ("opencv->opengl": ``K[..., 1, 2] = H - K[..., 1, 2]``), applied by its datasets before
    ``export_as_nerf_dataset.py`` writes ``cy = intrinsic[1, 2]``; VHAP's own renderer
    (``render_nvdiffrast.projection_from_intrinsics``: clip-space offset ``(h - 2 cy) / h`` for a
    y-UP camera) reads it that way. INSTA stores OpenCV's ``cy`` (from the top).

    Raises:
        DatasetError: "<path>: <where>..." when no focal length can be found, or a value is not a
            finite number.
    """
    from .records import finite_number

    def get(key):
        for src in (frame, top):
            if isinstance(src, dict) and key in src and src[key] is not None:
                return finite_number(src[key], path, f"{where}{key}")
        return None

    fx = get("fl_x")
    if fx is None:
        ax = get("camera_angle_x")
        if ax is None:
            raise DatasetError(f"{path}: {where}missing key 'fl_x' or 'camera_angle_x' (no focal length)")
        fx = fov_to_focal(ax, width)
    fy = get("fl_y")
    if fy is None:
        ay = get("camera_angle_y")
        fy = fov_to_focal(ay, height) if ay is not None else fx
    cx = get("cx")
    cy = get("cy")
    if cy is not None and cy_from_bottom:
        cy = height - cy
    return intrinsics_matrix(fx, fy, width / 2.0 if cx is None else cx, height / 2.0 if cy is None else cy)
