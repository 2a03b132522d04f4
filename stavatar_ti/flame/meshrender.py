"""A small, exact, CPU reference renderer for triangle meshes (vertex colours or a texture).

This is *not* the product's Gaussian rasterizer.  It produces ground truth for synthetic data and
lets you look at meshes (e.g. a FLAME head) with the same camera model the Gaussian rasterizer uses.
Correctness and readability come first; it is vectorised with torch on the CPU so that a mesh of
~10k triangles renders at 512x512 in well under a few seconds.

Public API
----------
    render_mesh(vertices, faces, viewmat, K, width, height, *, vertex_colors=None, uvs=None,
                uv_faces=None, texture=None, light_dir=None, ambient=0.35,
                background=(1.0, 1.0, 1.0), cull_backfaces=False) -> MeshRender
    vertex_normals(vertices, faces) -> [V,3] float32 torch tensor

Conventions (all of them, in one place)
---------------------------------------
World / camera
    * ``viewmat`` [4,4] maps homogeneous world points to camera points, ``p_cam = R @ p_world + t``
      with ``R = viewmat[:3, :3]``, ``t = viewmat[:3, 3]``; last row must be ``(0, 0, 0, 1)``.
    * Camera axes are OpenCV's: x right, y down, z forward (the camera looks along +z).
      ``R`` is normally a rotation; any invertible 3x3 block is accepted.
    * The camera centre in world coordinates is ``C = -R^{-1} t``.

Projection / pixels
    * ``K = [[fx, s, cx], [0, fy, cy], [0, 0, 1]]`` in pixel units (``s`` = skew, usually 0).
      A camera point (x, y, z) projects to ``u = (fx*x + s*y)/z + cx``, ``v = fy*y/z + cy``.
    * Pixel (row i, column j) covers ``[j, j+1) x [i, i+1)`` in (u, v) and has its centre at
      ``(j + 0.5, i + 0.5)``.  The principal point (cx, cy) is honoured exactly, so shifting it by
      an integer number of pixels shifts the image by exactly that many pixels.
    * Coverage is sampled once, at the pixel centre (no anti-aliasing).  A pixel centre is covered
      by a triangle when all three screen-space barycentrics are ``>= 0`` (edges are inclusive; no
      top-left rule): a centre lying exactly on an edge shared by two triangles is claimed by both
      and the depth test (below) picks one deterministically.

Near clipping
    * There is no geometric clipping.  A triangle with ANY vertex at camera ``z <= 1e-6``
      (``NEAR_Z``) is dropped entirely, so a triangle crossing the camera plane disappears rather
      than being cut.  Keep ground-truth meshes in front of the camera.  There is no far plane.
    * Triangles whose projection has zero signed area (edge-on) cover no pixel.

Depth test
    * Nearest camera z wins.  Depth is interpolated perspective-correctly (1/z is affine in screen
      space).  Exact ties are broken in favour of the lower face index, so results do not depend on
      chunking or thread scheduling.

Back-face culling (``cull_backfaces=True``)
    * A face with vertices (a, b, c) has the (unnormalised) world normal
      ``n = (b - a) x (c - a)``: it points OUTWARD when the face is counter-clockwise seen from
      outside (right-handed world coordinates).
    * The face is culled when the normal points away from the camera:
      ``dot(n, a - C) >= 0`` (``C`` = camera centre).  Degenerate faces (n = 0) are therefore culled.
    * Equivalent screen-space statement, for a rigid ``viewmat`` (det R = +1) and zero skew: in the
      y-down pixel frame the signed area ``(u1-u0)*(v2-v0) - (v1-v0)*(u2-u0)`` of a front face is
      NEGATIVE (it looks clockwise when the (u, v) axes are drawn the usual maths way, and
      counter-clockwise on the displayed image, whose rows go down).  Culled faces have signed
      area >= 0.

Colour
    * ``vertex_colors`` [V,3]: interpolated perspective-correctly with the barycentrics.
    * ``texture`` [Ht,Wt,3] + ``uvs`` [T,2] (+ ``uv_faces`` [F,3]): OBJ convention - u to the right,
      v UP, (0, 0) is the bottom-left corner of the image.  The texture array is stored upright
      (row 0 is the top of the picture, i.e. v close to 1).  The uv at a pixel is interpolated
      perspective-correctly and sampled bilinearly with texel (row r, column c) centred at
      ``(u, v) = ((c + 0.5)/Wt, 1 - (r + 0.5)/Ht)``; lookups outside the texel centres are clamped to
      the border texels (clamp-to-edge, no wrapping, no mip-mapping).  ``uv_faces`` defaults to
      ``faces`` (one uv per vertex).  A ``uint8`` texture or vertex-colour array is divided by 255.
    * Neither given: uniform light grey ``DEFAULT_GREY`` (0.8, 0.8, 0.8).

Shading (only when ``light_dir`` is given)
    * ``light_dir`` is a WORLD-space vector pointing FROM the surface TOWARDS the light (the
      direction the light comes from; e.g. a light placed at the camera has
      ``light_dir = C - p``).  It is normalised internally; only its direction matters.
    * Vertex normals are area-weighted sums of the face normals ``(b - a) x (c - a)`` of all faces
      (culled, clipped or not), normalised; outward for counter-clockwise faces.  At a pixel the
      vertex normals are interpolated with the perspective-correct barycentrics and renormalised.
      The normal is NOT flipped for back faces (one-sided lighting).
    * ``colour *= ambient + (1 - ambient) * max(0, dot(n, l))`` (Lambert + constant ambient);
      the image is finally clamped to [0, 1].  Without ``light_dir`` the colour is used unshaded and
      ``ambient`` is ignored.

Maths
-----
Screen-space barycentrics come from edge functions (Pineda, "A Parallel Algorithm for Polygon
Rasterization", SIGGRAPH 1988).  Perspective-correct interpolation is the standard one (Heckbert &
Moreton, "Interpolation for Polygon Texture Mapping and Shading", 1991; OpenGL 4.6 core spec,
Sec. 14.6.1, eq. 14.9): with screen barycentrics ``b_i`` and vertex camera depths ``z_i``,

    1/z      = sum_i b_i / z_i                        (1/z is affine in screen space)
    lambda_i = (b_i / z_i) / sum_j (b_j / z_j)        (barycentrics of the 3D surface point)

and any vertex attribute a is interpolated as ``sum_i lambda_i * a_i``.

Implementation
--------------
All arithmetic is float64 on the CPU; outputs are float32/int64/bool CPU torch tensors.  Faces are
processed in chunks (in increasing face order) of at most ``_FRAGMENT_BUDGET`` candidate pixels
(bounding boxes larger than that are cut into bands of rows): for each face every pixel centre
inside its clamped pixel bounding box is enumerated, the edge functions
are evaluated, and the covered fragments are merged into a z-buffer with ``scatter_reduce``
(``amin`` on depth, then ``amin`` on face id among the fragments that equal the minimum).  A second
pass recomputes barycentrics only for the winning face at every covered pixel and shades it.
"""

from __future__ import annotations

import math
import numbers
from dataclasses import dataclass

import numpy as np
import torch

__all__ = ["MeshRender", "render_mesh", "vertex_normals", "NEAR_Z", "DEFAULT_GREY"]

NEAR_Z = 1e-6
"""Triangles with any vertex at camera z <= NEAR_Z are dropped (no clipping)."""

DEFAULT_GREY = (0.8, 0.8, 0.8)
"""Surface colour used when neither vertex_colors nor a texture is given."""

_FRAGMENT_BUDGET = 1 << 20
"""Maximum number of candidate (pixel, face) pairs evaluated at once (bounding boxes larger than
this are split into bands of rows; a single row wider than it is still taken whole)."""

_F64 = torch.float64


@dataclass
class MeshRender:
    """Result of `render_mesh` for an H x W image (all CPU torch tensors).

    image   [H,W,3] float32 in [0, 1]: shaded surface colour, ``background`` where ``mask`` is False.
    mask    [H,W]   bool: True where some triangle covers the pixel centre.
    depth   [H,W]   float32: camera-space z (same units as the vertices) of the visible surface at
            the pixel centre; ``inf`` where empty.
    face_id [H,W]   int64: index into ``faces`` of the visible triangle; -1 where empty.
    bary    [H,W,3] float32: perspective-correct barycentrics (lambda_0, lambda_1, lambda_2) of the
            visible surface point w.r.t. that face's vertices in ``faces`` order (they sum to 1, and
            ``sum_k bary[..., k] * vertices[faces[face_id, k]]`` is the 3D point seen through the
            pixel centre); 0 where empty.
    """

    image: torch.Tensor
    mask: torch.Tensor
    depth: torch.Tensor
    face_id: torch.Tensor
    bary: torch.Tensor


# ----------------------------------------------------------------------------------------------
# Input conversion and validation
# ----------------------------------------------------------------------------------------------

def _to_tensor(x, name: str) -> torch.Tensor:
    """numpy array / torch tensor / nested sequence -> CPU torch tensor (detached, dtype kept)."""
    if isinstance(x, torch.Tensor):
        return x.detach().cpu()
    try:
        arr = np.asarray(x)
    except Exception as exc:  # ragged lists and the like
        raise ValueError(f"{name}: cannot convert to an array ({exc})") from None
    if arr.dtype == object or arr.dtype.kind not in "biuf":
        raise ValueError(f"{name}: expected a numeric array, got dtype {arr.dtype}")
    return torch.from_numpy(np.ascontiguousarray(arr))


def _shape_str(shape) -> str:
    return "[" + ",".join("*" if s is None else str(s) for s in shape) + "]"


def _check_shape(t: torch.Tensor, name: str, shape) -> None:
    if t.ndim != len(shape) or any(s is not None and s != d for s, d in zip(shape, t.shape)):
        raise ValueError(f"{name}: expected shape {_shape_str(shape)}, got {list(t.shape)}")


def _float_input(x, name: str, shape, *, colour: bool = False) -> torch.Tensor:
    """Validate a real-valued array of the given shape (None = any size); return float64, finite.

    Geometric inputs (``colour=False``) may be any float or integer dtype.  Colour inputs
    (``colour=True``) must be floating point (used as is) or uint8 (divided by 255); other integer
    dtypes are refused because their scale is ambiguous.
    """
    if x is None:
        raise ValueError(f"{name}: required, got None")
    t = _to_tensor(x, name)
    if t.dtype == torch.bool or t.is_complex():
        raise ValueError(f"{name}: expected a real-valued array, got dtype {t.dtype}")
    _check_shape(t, name, shape)
    if t.is_floating_point():
        t = t.to(_F64)
    elif colour and t.dtype == torch.uint8:
        t = t.to(_F64) / 255.0
    elif colour:
        raise ValueError(f"{name}: expected a floating-point (values in [0, 1]) or uint8 array, got dtype {t.dtype}")
    else:
        t = t.to(_F64)
    if t.numel() and not bool(torch.isfinite(t).all()):
        raise ValueError(f"{name}: contains NaN or inf")
    return t


def _index_input(x, name: str, rows: int | None, upper: int, upper_name: str) -> torch.Tensor:
    """Validate an integer [rows,3] index array with entries in [0, upper); return int64."""
    if x is None:
        raise ValueError(f"{name}: required, got None")
    t = _to_tensor(x, name)
    if t.dtype == torch.bool or t.is_floating_point() or t.is_complex():
        raise ValueError(f"{name}: expected an integer array, got dtype {t.dtype}")
    _check_shape(t, name, (rows, 3))
    t = t.to(torch.int64)
    if t.numel() and (int(t.min()) < 0 or int(t.max()) >= upper):
        raise ValueError(f"{name}: indices must lie in [0, {upper}) ({upper_name} has {upper} rows), "
                         f"got range [{int(t.min())}, {int(t.max())}]")
    return t


def _positive_int(value, name: str) -> int:
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise ValueError(f"{name}: expected a positive int, got {value!r}")
    if int(value) <= 0:
        raise ValueError(f"{name}: expected a positive int, got {int(value)}")
    return int(value)


def _unit_float(value, name: str) -> float:
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise ValueError(f"{name}: expected a float in [0, 1], got {value!r}")
    value = float(value)
    if not 0.0 <= value <= 1.0:  # also rejects NaN
        raise ValueError(f"{name}: expected a float in [0, 1], got {value}")
    return value


def _check_camera(viewmat, K):
    viewmat = _float_input(viewmat, "viewmat", (4, 4))
    if not torch.equal(viewmat[3], torch.tensor([0.0, 0.0, 0.0, 1.0], dtype=_F64)):
        raise ValueError(f"viewmat: last row must be (0, 0, 0, 1), got {viewmat[3].tolist()}")
    R, t = viewmat[:3, :3], viewmat[:3, 3]
    det = float(torch.linalg.det(R))
    if not abs(det) > 1e-12:
        raise ValueError(f"viewmat: the 3x3 block is singular (det = {det})")
    K = _float_input(K, "K", (3, 3))
    if float(K[1, 0]) != 0.0 or float(K[2, 0]) != 0.0 or float(K[2, 1]) != 0.0 or float(K[2, 2]) != 1.0:
        raise ValueError("K: expected a pinhole matrix [[fx, s, cx], [0, fy, cy], [0, 0, 1]], "
                         f"got {K.tolist()}")
    if not (float(K[0, 0]) > 0.0 and float(K[1, 1]) > 0.0):
        raise ValueError(f"K: focal lengths must be positive, got fx={float(K[0, 0])}, fy={float(K[1, 1])}")
    return R, t, K


# ----------------------------------------------------------------------------------------------
# Geometry helpers
# ----------------------------------------------------------------------------------------------

def _face_normals(verts: torch.Tensor, faces: torch.Tensor) -> torch.Tensor:
    """[F,3] unnormalised normals (b - a) x (c - a); length = twice the triangle area."""
    a, b, c = verts[faces[:, 0]], verts[faces[:, 1]], verts[faces[:, 2]]
    return torch.linalg.cross(b - a, c - a)


def _vertex_normals64(verts: torch.Tensor, faces: torch.Tensor) -> torch.Tensor:
    """Area-weighted, normalised vertex normals (float64).  Unreferenced vertices get 0."""
    fn = _face_normals(verts, faces)  # already weighted by (twice) the area
    vn = torch.zeros_like(verts)
    for k in range(3):
        vn.index_add_(0, faces[:, k], fn)
    length = vn.norm(dim=1, keepdim=True)
    return torch.where(length > 0, vn / length.clamp_min(1e-300), torch.zeros_like(vn))


def vertex_normals(vertices, faces) -> torch.Tensor:
    """Area-weighted vertex normals of a triangle mesh.

    Args:
        vertices: [V,3] float (numpy or torch), world coordinates.
        faces: [F,3] int, vertex indices; counter-clockwise seen from outside gives outward normals.

    Returns:
        [V,3] float32 CPU tensor of unit normals: the sum over the faces touching each vertex of
        ``(b - a) x (c - a)`` (whose length is twice the face area, hence area weighting),
        normalised.  Vertices used by no (non-degenerate) face get the zero vector.

    Raises:
        ValueError: naming the bad argument.
    """
    verts = _float_input(vertices, "vertices", (None, 3))
    faces = _index_input(faces, "faces", None, verts.shape[0], "vertices")
    return _vertex_normals64(verts, faces).to(torch.float32)


def _screen_barycentrics(x0, y0, x1, y1, x2, y2, area, px, py):
    """Screen-space barycentrics of points (px, py) from edge functions (Pineda 1988).

    w_k is the signed, doubled area of the sub-triangle opposite vertex k; ``area`` is
    ``(x1-x0)*(y2-y0) - (y1-y0)*(x2-x0)`` (= w0 + w1 + w2, non-zero).  Dividing by it makes the
    result independent of the winding: the point is inside iff all three are >= 0.
    """
    w0 = (x2 - x1) * (py - y1) - (y2 - y1) * (px - x1)
    w1 = (x0 - x2) * (py - y2) - (y0 - y2) * (px - x2)
    w2 = (x1 - x0) * (py - y0) - (y1 - y0) * (px - x0)
    return w0 / area, w1 / area, w2 / area


def _perspective(b0, b1, b2, z0, z1, z2):
    """Perspective-correct barycentrics and depth (Heckbert & Moreton 1991; OpenGL eq. 14.9).

    1/z = sum b_i/z_i is affine in screen space; lambda_i = (b_i/z_i) / sum_j (b_j/z_j).
    Returns (lambda [N,3], depth [N]).
    """
    q = torch.stack([b0 / z0, b1 / z1, b2 / z2], dim=-1)
    inv_z = q.sum(-1)
    return q / inv_z.unsqueeze(-1), 1.0 / inv_z


def _sample_bilinear(texture: torch.Tensor, uv: torch.Tensor) -> torch.Tensor:
    """Bilinear, clamp-to-edge lookup of an upright [Ht,Wt,C] texture at OBJ uvs [N,2] (v up).

    Texel (r, c) is centred at ((c + 0.5)/Wt, 1 - (r + 0.5)/Ht), i.e. continuous texel coordinates
    are x = u*Wt - 0.5 (columns) and y = (1 - v)*Ht - 0.5 (rows).
    """
    ht, wt = texture.shape[0], texture.shape[1]
    # Clamping to [-1, size] first changes nothing (those lookups hit the border texels anyway) but
    # keeps floor() of enormous uvs inside the int64 range.
    x = (uv[:, 0] * wt - 0.5).clamp(-1.0, float(wt))
    y = ((1.0 - uv[:, 1]) * ht - 0.5).clamp(-1.0, float(ht))
    x0, y0 = torch.floor(x), torch.floor(y)
    ax, ay = (x - x0).unsqueeze(-1), (y - y0).unsqueeze(-1)
    c0 = x0.to(torch.int64).clamp(0, wt - 1)
    c1 = (x0.to(torch.int64) + 1).clamp(0, wt - 1)
    r0 = y0.to(torch.int64).clamp(0, ht - 1)
    r1 = (y0.to(torch.int64) + 1).clamp(0, ht - 1)
    top = (1.0 - ax) * texture[r0, c0] + ax * texture[r0, c1]
    bottom = (1.0 - ax) * texture[r1, c0] + ax * texture[r1, c1]
    return (1.0 - ay) * top + ay * bottom


# ----------------------------------------------------------------------------------------------
# The renderer
# ----------------------------------------------------------------------------------------------

def render_mesh(vertices, faces, viewmat, K, width, height, *, vertex_colors=None, uvs=None, uv_faces=None,
                texture=None, light_dir=None, ambient=0.35, background=(1.0, 1.0, 1.0),
                cull_backfaces=False) -> MeshRender:
    """Render a triangle mesh with a pinhole camera (exact z-buffer, one sample per pixel centre).

    See the module docstring for every convention (axes, pixel centres, clipping, culling, uv
    orientation, light direction) and for the interpolation maths.

    Args:
        vertices: [V,3] float32/float64 (numpy or torch), world coordinates.
        faces: [F,3] integer vertex indices in [0, V).  Counter-clockwise seen from outside
            = outward normal.  F = 0 renders the background.
        viewmat: [4,4] float, world -> camera (OpenCV axes: x right, y down, z forward); last row
            (0, 0, 0, 1); 3x3 block invertible (normally a rotation).
        K: [3,3] float pinhole intrinsics in pixels, [[fx, s, cx], [0, fy, cy], [0, 0, 1]],
            fx > 0, fy > 0.  u = (fx*x + s*y)/z + cx, v = fy*y/z + cy; pixel (i, j) has centre
            (j + 0.5, i + 0.5).
        width, height: image size in pixels (positive ints).
        vertex_colors: optional [V,3] float RGB (or uint8, divided by 255), interpolated
            perspective-correctly.  Mutually exclusive with ``texture``.
        uvs: [T,2] float texture coordinates, OBJ convention (u right, v up, (0, 0) bottom-left).
            Required with ``texture``.
        uv_faces: [F,3] integer indices into ``uvs``; default ``faces`` (one uv per vertex, T = V).
        texture: [Ht,Wt,3] float RGB in [0, 1] (or uint8), stored upright (row 0 = top = v near 1);
            sampled bilinearly, clamp-to-edge, perspective-correct.
        light_dir: optional [3] float, WORLD-space direction from the surface TOWARDS the light
            (where the light comes from); any non-zero length.  Enables Lambert shading.
        ambient: float in [0, 1]; shading factor is ambient + (1 - ambient) * max(0, n.l).
        background: 3 floats in [0, 1], colour of empty pixels.
        cull_backfaces: drop faces whose normal (b-a)x(c-a) points away from the camera,
            i.e. dot(n, a - camera_centre) >= 0.

    Returns:
        MeshRender with image [H,W,3] float32, mask [H,W] bool, depth [H,W] float32 (camera z, inf
        where empty), face_id [H,W] int64 (-1 where empty), bary [H,W,3] float32.  CPU tensors.

    Raises:
        ValueError: naming the argument, for wrong shapes or dtypes, NaN/inf, indices out of range,
            non-positive focal lengths or sizes, a texture without uvs (or uvs without a texture),
            both vertex colours and a texture, a zero light direction, ambient or background out of
            [0, 1].

    Notes:
        Triangles with any vertex at camera z <= NEAR_Z (1e-6) are DROPPED, not clipped.
        Coverage uses inclusive edges; depth ties go to the lower face index.
    """
    # ---- validation -------------------------------------------------------------------------
    verts = _float_input(vertices, "vertices", (None, 3))
    nv = verts.shape[0]
    faces = _index_input(faces, "faces", None, nv, "vertices")
    nf = faces.shape[0]
    R, t, K = _check_camera(viewmat, K)
    width = _positive_int(width, "width")
    height = _positive_int(height, "height")
    ambient = _unit_float(ambient, "ambient")
    bg = _float_input(background, "background", (3,))
    if bool(((bg < 0) | (bg > 1)).any()):
        raise ValueError(f"background: expected 3 values in [0, 1], got {bg.tolist()}")
    if not isinstance(cull_backfaces, (bool, np.bool_)):
        raise ValueError(f"cull_backfaces: expected a bool, got {cull_backfaces!r}")

    if texture is not None:
        if vertex_colors is not None:
            raise ValueError("vertex_colors: pass either vertex_colors or texture (+ uvs), not both")
        if uvs is None:
            raise ValueError("uvs: required when texture is given ([T,2] OBJ texture coordinates)")
        tex = _float_input(texture, "texture", (None, None, 3), colour=True)
        if tex.shape[0] == 0 or tex.shape[1] == 0:
            raise ValueError(f"texture: must have at least one texel, got shape {list(tex.shape)}")
        uv = _float_input(uvs, "uvs", (None, 2))
        if uv_faces is None:
            uvf = _index_input(faces, "uv_faces", nf, uv.shape[0], "uvs")  # default: faces
        else:
            uvf = _index_input(uv_faces, "uv_faces", nf, uv.shape[0], "uvs")
    else:
        if uvs is not None:
            raise ValueError("texture: uvs were given but texture is None")
        if uv_faces is not None:
            raise ValueError("texture: uv_faces were given but texture is None")
        tex = uv = uvf = None
    colors = None
    if vertex_colors is not None:
        colors = _float_input(vertex_colors, "vertex_colors", (nv, 3), colour=True)
    light = None
    if light_dir is not None:
        light = _float_input(light_dir, "light_dir", (3,))
        norm = float(light.norm())
        if not norm > 0.0:
            raise ValueError("light_dir: must be a non-zero vector")
        light = light / norm

    H, W = height, width
    npix = H * W

    # ---- transform & project -----------------------------------------------------------------
    cam = verts @ R.T + t  # [V,3] camera coordinates
    x, y, z = cam.unbind(-1)
    fx, s, cx, fy, cy = (float(K[0, 0]), float(K[0, 1]), float(K[0, 2]), float(K[1, 1]), float(K[1, 2]))
    z_safe = torch.where(z > NEAR_Z, z, torch.ones_like(z))  # vertices at z <= NEAR_Z: faces dropped
    u = (fx * x + s * y) / z_safe + cx
    v = fy * y / z_safe + cy

    fu, fv, fz = u[faces], v[faces], z[faces]  # [F,3] each
    area = (fu[:, 1] - fu[:, 0]) * (fv[:, 2] - fv[:, 0]) - (fv[:, 1] - fv[:, 0]) * (fu[:, 2] - fu[:, 0])
    keep = (fz > NEAR_Z).all(dim=1) & (area != 0) & torch.isfinite(area)
    if cull_backfaces:
        centre = torch.linalg.solve(R, -t)  # camera centre in world coordinates
        n_world = _face_normals(verts, faces)
        keep &= (n_world * (verts[faces[:, 0]] - centre)).sum(-1) < 0

    # Pixel-centre bounding box: columns j with umin <= j + 0.5 <= umax, clamped to the image.
    j0 = torch.ceil(fu.min(1).values - 0.5).clamp(0, W)
    j1 = torch.floor(fu.max(1).values - 0.5).clamp(-1, W - 1)
    i0 = torch.ceil(fv.min(1).values - 0.5).clamp(0, H)
    i1 = torch.floor(fv.max(1).values - 0.5).clamp(-1, H - 1)
    j0, j1, i0, i1 = (a.to(torch.int64) for a in (j0, j1, i0, i1))
    nx = (j1 - j0 + 1).clamp_min(0)
    ny = (i1 - i0 + 1).clamp_min(0)
    count = torch.where(keep, nx * ny, torch.zeros_like(nx))

    # ---- rasterise into a z-buffer -----------------------------------------------------------
    none_id = nf  # "no face" sentinel, larger than every face id so that amin works
    zbuf = torch.full((npix,), math.inf, dtype=_F64)
    fbuf = torch.full((npix,), none_id, dtype=torch.int64)

    # Work items = (face, first row, number of rows) of a face's bounding box.  A box with more
    # than _FRAGMENT_BUDGET pixels is cut into bands of rows so that memory stays bounded.
    active = torch.nonzero((count > 0) & keep).squeeze(1)  # increasing face id
    rows_per_band = (_FRAGMENT_BUDGET // nx[active].clamp_min(1)).clamp_min(1)
    bands = (ny[active] + rows_per_band - 1) // rows_per_band
    item_face = torch.repeat_interleave(active, bands)
    band = torch.arange(item_face.numel()) - torch.repeat_interleave(torch.cumsum(bands, 0) - bands, bands)
    item_rpb = torch.repeat_interleave(rows_per_band, bands)
    item_i0 = i0[item_face] + band * item_rpb
    item_ny = torch.minimum(item_rpb, i1[item_face] - item_i0 + 1)
    item_count = nx[item_face] * item_ny
    cum = torch.cumsum(item_count, 0)
    start = 0
    while start < item_face.numel():  # chunks of consecutive items with <= _FRAGMENT_BUDGET pixels
        base = int(cum[start] - item_count[start])
        stop = max(int(torch.searchsorted(cum, base + _FRAGMENT_BUDGET, right=True)), start + 1)
        sl = slice(start, stop)
        _raster_chunk(item_face[sl], item_i0[sl], item_ny[sl], nx, j0, fu, fv, fz, area, W, zbuf, fbuf, none_id)
        start = stop

    # ---- resolve & shade the visible surface ---------------------------------------------------
    pix = torch.nonzero(fbuf < none_id).squeeze(1)
    f = fbuf[pix]
    px = (pix % W).to(_F64) + 0.5
    py = (pix // W).to(_F64) + 0.5
    b0, b1, b2 = _screen_barycentrics(fu[f, 0], fv[f, 0], fu[f, 1], fv[f, 1], fu[f, 2], fv[f, 2],
                                      area[f], px, py)
    lam, _ = _perspective(b0, b1, b2, fz[f, 0], fz[f, 1], fz[f, 2])  # [N,3]

    def interp(attr: torch.Tensor, idx: torch.Tensor) -> torch.Tensor:
        """sum_k lambda_k * attr[idx[f, k]] -> [N, C]."""
        return sum(lam[:, k:k + 1] * attr[idx[f, k]] for k in range(3))

    if tex is not None:
        rgb = _sample_bilinear(tex, interp(uv, uvf))
    elif colors is not None:
        rgb = interp(colors, faces)
    else:
        rgb = torch.tensor(DEFAULT_GREY, dtype=_F64).expand(pix.numel(), 3)
    if light is not None:
        normals = interp(_vertex_normals64(verts, faces), faces)
        length = normals.norm(dim=1, keepdim=True)
        normals = torch.where(length > 0, normals / length.clamp_min(1e-300), torch.zeros_like(normals))
        lambert = (normals @ light).clamp_min(0.0)
        rgb = rgb * (ambient + (1.0 - ambient) * lambert).unsqueeze(-1)

    image = bg.expand(npix, 3).clone()
    image[pix] = rgb
    bary = torch.zeros(npix, 3, dtype=_F64)
    bary[pix] = lam
    face_id = torch.where(fbuf < none_id, fbuf, torch.full_like(fbuf, -1))
    return MeshRender(
        image=image.clamp(0.0, 1.0).to(torch.float32).reshape(H, W, 3),
        mask=(face_id >= 0).reshape(H, W),
        depth=zbuf.to(torch.float32).reshape(H, W),
        face_id=face_id.reshape(H, W),
        bary=bary.to(torch.float32).reshape(H, W, 3),
    )


def _raster_chunk(item_face, item_i0, item_ny, nx, j0, fu, fv, fz, area, W, zbuf, fbuf, none_id) -> None:
    """Test every pixel centre of the given bounding-box bands for coverage; merge into the z-buffer.

    Item k covers columns j0[f] .. j0[f] + nx[f] - 1 and rows item_i0[k] .. item_i0[k] +
    item_ny[k] - 1 of face f = item_face[k].  zbuf [H*W] float64 holds the nearest depth so far,
    fbuf [H*W] int64 the face achieving it (lowest id among exact ties; ``none_id`` = no face yet).
    Both are updated in place.
    """
    width_k = nx[item_face]
    cnt = width_k * item_ny
    owner = torch.repeat_interleave(torch.arange(item_face.numel()), cnt)  # fragment -> item
    first = torch.cumsum(cnt, 0) - cnt
    local = torch.arange(int(cnt.sum())) - first[owner]  # row-major index inside the item's band
    f = item_face[owner]
    width_f = width_k[owner]
    col = j0[f] + local % width_f
    row = item_i0[owner] + local // width_f
    b0, b1, b2 = _screen_barycentrics(fu[f, 0], fv[f, 0], fu[f, 1], fv[f, 1], fu[f, 2], fv[f, 2],
                                      area[f], col.to(_F64) + 0.5, row.to(_F64) + 0.5)
    inside = (b0 >= 0) & (b1 >= 0) & (b2 >= 0)
    if not bool(inside.any()):
        return
    f, col, row = f[inside], col[inside], row[inside]
    _, depth = _perspective(b0[inside], b1[inside], b2[inside], fz[f, 0], fz[f, 1], fz[f, 2])
    ok = torch.isfinite(depth) & (depth > 0)
    f, depth, p = f[ok], depth[ok], (row * W + col)[ok]
    if p.numel() == 0:
        return

    before = zbuf[p]
    zbuf.scatter_reduce_(0, p, depth, reduce="amin")  # include_self: merges with earlier chunks
    after = zbuf[p]
    fbuf[p[after < before]] = none_id  # a closer fragment arrived: forget the previous winner
    win = depth == after  # fragments achieving the new minimum; the lowest face id among them wins
    fbuf.scatter_reduce_(0, p[win], f[win], reduce="amin")
