"""Rasterise a mesh's UV layout: face id and pixel-centre barycentrics per texel (method.md Sec. 4.1).

Orientation (texture convention, stored upright): texel (row i, column j) has its centre at
u = (j + 0.5) / W, v = 1 - (i + 0.5) / H, i.e. column ~ u W and row ~ (1 - v) H.
A texel belongs to a UV triangle when all three barycentrics of its centre are >= -1e-5; where
triangles share a texel (edges, overlaps) the lowest face id wins, so the result is deterministic.
With `cull` set, triangles that are not counter-clockwise in (u, v) (v up) are skipped.
Shapes: uv [T,2] f32, uv_faces [F,3] i32; face_id [H,W] i32 (-1 = empty), bary [H,W,3] f32.
"""

import taichi as ti

vec2 = ti.math.vec2
vec3 = ti.math.vec3
INSIDE_EPS = 1e-5  # barycentric slack so that texel centres on a shared edge are never dropped by both faces


@ti.func
def _texel_uv(i, j, H, W):
    return vec2((j + 0.5) / W, 1.0 - (i + 0.5) / H)


@ti.func
def _barycentric(p, a, b, c):
    """Barycentrics of p in triangle (a, b, c) and the triangle's signed area x2 (CCW > 0)."""
    area = (b - a).cross(c - a)
    w0 = (b - p).cross(c - p) / area
    w1 = (c - p).cross(a - p) / area
    return vec3(w0, w1, 1.0 - w0 - w1), area


@ti.kernel
def uv_coverage(uv: ti.types.ndarray(dtype=vec2, ndim=1), uv_faces: ti.types.ndarray(dtype=ti.math.ivec3, ndim=1),
                cull: ti.i32, face_id: ti.types.ndarray(dtype=ti.i32, ndim=2)):
    """face_id must be filled with a value > every face id (the caller uses F) before the call."""
    H, W = face_id.shape[0], face_id.shape[1]
    for f in uv_faces:
        ids = uv_faces[f]
        a, b, c = uv[ids[0]], uv[ids[1]], uv[ids[2]]
        area = (b - a).cross(c - a)
        if area != 0.0 and (cull == 0 or area > 0.0):
            lo = ti.min(a, b, c)
            hi = ti.max(a, b, c)
            # texel columns whose centre u lies in [lo.u, hi.u]; rows from v (flipped)
            j0 = ti.max(0, ti.cast(ti.ceil(lo[0] * W - 0.5), ti.i32))
            j1 = ti.min(W - 1, ti.cast(ti.floor(hi[0] * W - 0.5), ti.i32))
            i0 = ti.max(0, ti.cast(ti.ceil((1.0 - hi[1]) * H - 0.5), ti.i32))
            i1 = ti.min(H - 1, ti.cast(ti.floor((1.0 - lo[1]) * H - 0.5), ti.i32))
            for i, j in ti.ndrange((i0, i1 + 1), (j0, j1 + 1)):
                w, _ = _barycentric(_texel_uv(i, j, H, W), a, b, c)
                if w.min() >= -INSIDE_EPS:
                    ti.atomic_min(face_id[i, j], f)


@ti.kernel
def uv_barycentrics(uv: ti.types.ndarray(dtype=vec2, ndim=1), uv_faces: ti.types.ndarray(dtype=ti.math.ivec3, ndim=1),
                    face_id: ti.types.ndarray(dtype=ti.i32, ndim=2), bary: ti.types.ndarray(dtype=vec3, ndim=2)):
    """Barycentrics of each texel centre in its winning face; marks empty texels with -1."""
    H, W = face_id.shape[0], face_id.shape[1]
    num_faces = uv_faces.shape[0]
    for i, j in face_id:
        f = face_id[i, j]
        bary[i, j] = vec3(0.0)
        if f >= num_faces:
            face_id[i, j] = -1
        else:
            ids = uv_faces[f]
            w, _ = _barycentric(_texel_uv(i, j, H, W), uv[ids[0]], uv[ids[1]], uv[ids[2]])
            bary[i, j] = w
