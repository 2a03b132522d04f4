"""Tests of stavatar_ti.meshrender.render_mesh, the CPU reference mesh renderer.

The main check compares it with a deliberately different brute-force renderer written below in plain
Python floats: per pixel and per triangle it casts the pixel-centre ray and intersects it with the
triangle in camera space (Moeller-Trumbore), which gives coverage, depth and the perspective-correct
barycentrics without any screen-space interpolation formula.
"""

import math

import numpy as np
import pytest
import torch

from stavatar_ti.flame.meshrender import DEFAULT_GREY, NEAR_Z, render_mesh, vertex_normals

# ------------------------------------------------------------------------------------------------
# Small helpers (plain Python)
# ------------------------------------------------------------------------------------------------


def sub(a, b):
    return [a[0] - b[0], a[1] - b[1], a[2] - b[2]]


def dot(a, b):
    return a[0] * b[0] + a[1] * b[1] + a[2] * b[2]


def cross(a, b):
    return [a[1] * b[2] - a[2] * b[1], a[2] * b[0] - a[0] * b[2], a[0] * b[1] - a[1] * b[0]]


def normalize(a):
    n = math.sqrt(dot(a, a))
    return [c / n for c in a] if n > 0 else [0.0, 0.0, 0.0]


def rot_xyz(ax, ay, az):
    """3x3 rotation (list of rows) = Rz @ Ry @ Rx."""
    cx_, sx_, cy_, sy_, cz_, sz_ = math.cos(ax), math.sin(ax), math.cos(ay), math.sin(ay), math.cos(az), math.sin(az)
    rx = [[1, 0, 0], [0, cx_, -sx_], [0, sx_, cx_]]
    ry = [[cy_, 0, sy_], [0, 1, 0], [-sy_, 0, cy_]]
    rz = [[cz_, -sz_, 0], [sz_, cz_, 0], [0, 0, 1]]

    def mm(a, b):
        return [[sum(a[i][k] * b[k][j] for k in range(3)) for j in range(3)] for i in range(3)]

    return mm(rz, mm(ry, rx))


def viewmat_from(R, t):
    return [[R[0][0], R[0][1], R[0][2], t[0]], [R[1][0], R[1][1], R[1][2], t[1]],
            [R[2][0], R[2][1], R[2][2], t[2]], [0.0, 0.0, 0.0, 1.0]]


def to_world(p_cam, R, t):
    """Inverse of p_cam = R p + t for a rotation R: p = R^T (p_cam - t)."""
    d = sub(p_cam, t)
    return [sum(R[k][i] * d[k] for k in range(3)) for i in range(3)]


# ------------------------------------------------------------------------------------------------
# Brute-force reference renderer
# ------------------------------------------------------------------------------------------------


def ref_vertex_normals(V, F):
    acc = [[0.0, 0.0, 0.0] for _ in V]
    for a, b, c in F:
        n = cross(sub(V[b], V[a]), sub(V[c], V[a]))  # length = 2 * area -> area weighting
        for k in (a, b, c):
            acc[k] = [acc[k][i] + n[i] for i in range(3)]
    return [normalize(n) for n in acc]


def ref_bilinear(tex, u, v):
    """Upright texture (row 0 = top), OBJ uv (v up), texel centres ((c+.5)/W, 1-(r+.5)/H), clamp."""
    ht, wt = len(tex), len(tex[0])
    x = min(max(u * wt - 0.5, 0.0), wt - 1.0)  # clamping the coordinate = clamp-to-edge
    y = min(max((1.0 - v) * ht - 0.5, 0.0), ht - 1.0)
    c0, r0 = int(math.floor(x)), int(math.floor(y))
    c1, r1 = min(c0 + 1, wt - 1), min(r0 + 1, ht - 1)
    ax, ay = x - c0, y - r0
    return [(1 - ay) * ((1 - ax) * tex[r0][c0][k] + ax * tex[r0][c1][k])
            + ay * ((1 - ax) * tex[r1][c0][k] + ax * tex[r1][c1][k]) for k in range(3)]


def ref_render(V, F, view, K, W, H, colors=None, uvs=None, uv_faces=None, tex=None, light=None, ambient=0.35,
               bg=(1.0, 1.0, 1.0), cull=False):
    """Ray-cast every pixel centre against every triangle (camera space, Moeller-Trumbore)."""
    R = [row[:3] for row in view[:3]]
    t = [view[0][3], view[1][3], view[2][3]]
    cam = [[dot(R[i], p) + t[i] for i in range(3)] for p in V]
    centre = [-sum(R[k][i] * t[k] for k in range(3)) for i in range(3)]  # -R^T t
    fx, cx, fy, cy = K[0][0], K[0][2], K[1][1], K[1][2]
    normals = ref_vertex_normals(V, F)
    lnorm = normalize(light) if light is not None else None
    img = [[list(bg) for _ in range(W)] for _ in range(H)]
    fid = [[-1] * W for _ in range(H)]
    depth = [[math.inf] * W for _ in range(H)]
    bary = [[[0.0, 0.0, 0.0] for _ in range(W)] for _ in range(H)]
    for i in range(H):
        for j in range(W):
            d = [(j + 0.5 - cx) / fx, (i + 0.5 - cy) / fy, 1.0]  # ray through the pixel centre
            best = None
            for f, (a, b, c) in enumerate(F):
                p0, p1, p2 = cam[a], cam[b], cam[c]
                if min(p0[2], p1[2], p2[2]) <= 1e-6:
                    continue
                if cull and dot(cross(sub(V[b], V[a]), sub(V[c], V[a])), sub(V[a], centre)) >= 0:
                    continue
                e1, e2 = sub(p1, p0), sub(p2, p0)
                pvec = cross(d, e2)
                det = dot(e1, pvec)
                if det == 0.0:
                    continue
                tvec = [-p0[0], -p0[1], -p0[2]]  # ray origin (camera centre) - p0
                l1 = dot(tvec, pvec) / det
                qvec = cross(tvec, e1)
                l2 = dot(d, qvec) / det
                l0 = 1.0 - l1 - l2
                if l0 < 0 or l1 < 0 or l2 < 0:
                    continue
                z = dot(e2, qvec) / det  # ray parameter = camera z since d.z = 1
                if best is None or z < best[0]:  # ascending f: ties keep the lower face id
                    best = (z, f, (l0, l1, l2))
            if best is None:
                continue
            z, f, lam = best
            a, b, c = F[f]
            if tex is not None:
                ua, ub, uc = uv_faces[f]
                u = sum(lam[k] * uvs[idx][0] for k, idx in enumerate((ua, ub, uc)))
                v = sum(lam[k] * uvs[idx][1] for k, idx in enumerate((ua, ub, uc)))
                rgb = ref_bilinear(tex, u, v)
            elif colors is not None:
                rgb = [sum(lam[k] * colors[idx][ch] for k, idx in enumerate((a, b, c))) for ch in range(3)]
            else:
                rgb = list(DEFAULT_GREY)
            if light is not None:
                n = normalize([sum(lam[k] * normals[idx][ch] for k, idx in enumerate((a, b, c))) for ch in range(3)])
                s = ambient + (1 - ambient) * max(0.0, dot(n, lnorm))
                rgb = [ch * s for ch in rgb]
            img[i][j] = [min(max(ch, 0.0), 1.0) for ch in rgb]
            fid[i][j], depth[i][j], bary[i][j] = f, z, list(lam)
    return (np.array(img), np.array(fid), np.array(depth), np.array(bary))


# ------------------------------------------------------------------------------------------------
# Scenes
# ------------------------------------------------------------------------------------------------

W0, H0 = 24, 18
K0 = [[22.0, 0.0, 11.7], [0.0, 21.0, 9.2], [0.0, 0.0, 1.0]]
R0 = rot_xyz(0.3, -0.2, 0.15)
T0 = [0.4, -0.3, 1.5]


def tiny_scene():
    """6 triangles, laid out in camera space then mapped to world with a generic rigid camera."""
    tris_cam = [
        [(-3.0, -2.5, 6.0), (3.5, -2.0, 7.0), (-1.0, 3.0, 6.5)],    # 0 big, far, runs off the bottom
        [(-0.5, -1.0, 3.0), (1.5, 0.2, 4.5), (0.0, 1.2, 3.2)],      # 1 near, slanted, over 0
        [(-4.0, -0.5, 4.0), (-3.5, 1.5, 3.8), (-1.2, 0.3, 4.2)],    # 2 partly off-screen (left), reversed
        [(0.5, -0.5, 2.0), (1.0, 0.5, -1.0), (1.5, -1.0, 3.0)],     # 3 one vertex behind the camera
        [(0.0, 0.0, -2.0), (1.0, 0.0, -2.0), (0.0, 1.0, -3.0)],     # 4 entirely behind
        [(0.5, -1.5, 5.0), (1.0, 1.0, 8.0), (2.5, -1.0, 8.5)],      # 5 pierces triangle 0
    ]
    V, F = [], []
    for tri in tris_cam:
        F.append([len(V), len(V) + 1, len(V) + 2])
        V.extend(to_world(list(p), R0, T0) for p in tri)
    rng = np.random.default_rng(7)
    colors = rng.uniform(0.05, 0.95, (len(V), 3)).tolist()
    uvs = rng.uniform(-0.15, 1.15, (len(V), 2)).tolist()  # some outside [0,1]: clamp-to-edge
    tex = rng.uniform(0.0, 1.0, (5, 7, 3)).tolist()
    return V, F, viewmat_from(R0, T0), K0, colors, uvs, tex


def octahedron(scale=1.0, centre=(0.0, 0.0, 0.0)):
    """Closed convex mesh with outward counter-clockwise faces."""
    V = [[scale * x + centre[0], scale * y + centre[1], scale * z + centre[2]] for x, y, z in
         [(1, 0, 0), (-1, 0, 0), (0, 1, 0), (0, -1, 0), (0, 0, 1), (0, 0, -1)]]
    F = []
    for xi in (0, 1):
        for yi in (2, 3):
            for zi in (4, 5):
                f = [xi, yi, zi]
                n = cross(sub(V[f[1]], V[f[0]]), sub(V[f[2]], V[f[0]]))
                mid = [sum(V[k][c] for k in f) / 3 - centre[c] for c in range(3)]
                F.append(f if dot(n, mid) > 0 else [xi, zi, yi])
    return V, F


def uv_sphere(nlat, nlon, radius=1.0):
    th = np.linspace(0, np.pi, nlat + 1)
    ph = np.linspace(0, 2 * np.pi, nlon + 1)[:-1]
    T, P = np.meshgrid(th, ph, indexing="ij")
    V = radius * np.stack([np.sin(T) * np.cos(P), np.cos(T), np.sin(T) * np.sin(P)], -1).reshape(-1, 3)
    F = []
    for i in range(nlat):
        for j in range(nlon):
            a, b = i * nlon + j, i * nlon + (j + 1) % nlon
            c, d = a + nlon, b + nlon
            F += [[a, b, c], [b, d, c]]  # counter-clockwise seen from outside
    return V, np.array(F)


# Camera at world z = +5 looking down -z, world +y up (camera y = -world y).
VIEW_FRONT = [[1.0, 0, 0, 0], [0, -1.0, 0, 0], [0, 0, -1.0, 5.0], [0, 0, 0, 1.0]]


def check_against_reference(out, ref, atol=1e-5):
    img, fid, depth, bary = ref
    np.testing.assert_array_equal(out.face_id.numpy(), fid)
    np.testing.assert_array_equal(out.mask.numpy(), fid >= 0)
    np.testing.assert_allclose(out.depth.numpy(), depth, rtol=0, atol=atol)
    np.testing.assert_allclose(out.image.numpy(), img, rtol=0, atol=atol)
    np.testing.assert_allclose(out.bary.numpy(), bary, rtol=0, atol=atol)


# ------------------------------------------------------------------------------------------------
# Tests
# ------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("light", [None, [0.3, -0.5, -0.8]])
@pytest.mark.parametrize("cull", [False, True])
def test_matches_bruteforce_vertex_colors(light, cull):
    V, F, view, K, colors, _, _ = tiny_scene()
    out = render_mesh(np.array(V), np.array(F), np.array(view), np.array(K), W0, H0, vertex_colors=np.array(colors),
                      light_dir=light, ambient=0.3, background=(0.1, 0.2, 0.3), cull_backfaces=cull)
    ref = ref_render(V, F, view, K, W0, H0, colors=colors, light=light, ambient=0.3, bg=(0.1, 0.2, 0.3), cull=cull)
    check_against_reference(out, ref)
    fid = ref[1]
    # The scene exercises what it claims to: overlaps, the off-screen triangle, the dropped ones;
    # triangles 0 and 1 face away from the camera, 2 and 5 towards it.
    assert set(np.unique(fid).tolist()) == ({-1, 2, 5} if cull else {-1, 0, 1, 2, 5})
    assert (fid[:, 0] == 2).any()  # triangle 2 runs off the left border


@pytest.mark.parametrize("light", [None, [-0.2, 0.4, -1.0]])
def test_matches_bruteforce_texture(light):
    V, F, view, K, _, uvs, tex = tiny_scene()
    uv_faces = [[f[2], f[0], f[1]] for f in F]  # uv indices distinct from vertex indices
    f64 = dict(dtype=torch.float64)
    out = render_mesh(torch.tensor(V, dtype=torch.float32), torch.tensor(F), torch.tensor(view, **f64),
                      torch.tensor(K, **f64), W0, H0, uvs=torch.tensor(uvs),
                      uv_faces=torch.tensor(uv_faces, dtype=torch.int32), texture=torch.tensor(tex), light_dir=light)
    # float32 vertices: feed the reference the same rounded values
    V32 = torch.tensor(V, dtype=torch.float32).double().tolist()
    uv32 = torch.tensor(uvs, dtype=torch.float32).double().tolist()
    tex32 = torch.tensor(tex, dtype=torch.float32).double().tolist()
    ref = ref_render(V32, F, view, K, W0, H0, uvs=uv32, uv_faces=uv_faces, tex=tex32, light=light)
    check_against_reference(out, ref)


def test_default_grey_and_empty():
    V, F, view, K, _, _, _ = tiny_scene()
    out = render_mesh(V, F, view, K, W0, H0, background=(0.0, 0.0, 0.0))
    ref = ref_render(V, F, view, K, W0, H0, bg=(0.0, 0.0, 0.0))
    check_against_reference(out, ref)
    empty = render_mesh(V, np.zeros((0, 3), dtype=np.int64), view, K, W0, H0, background=(0.2, 0.4, 0.6))
    assert not empty.mask.any() and (empty.face_id == -1).all() and torch.isinf(empty.depth).all()
    assert torch.allclose(empty.image, torch.tensor([0.2, 0.4, 0.6]).expand(H0, W0, 3))
    assert (empty.bary == 0).all()
    nothing = render_mesh(np.zeros((0, 3)), np.zeros((0, 3), dtype=np.int64), view, K, W0, H0)
    assert not nothing.mask.any()


def test_output_types_and_shapes():
    V, F, view, K, colors, _, _ = tiny_scene()
    out = render_mesh(V, F, view, K, W0, H0, vertex_colors=colors)
    assert out.image.shape == (H0, W0, 3) and out.image.dtype == torch.float32
    assert out.mask.shape == (H0, W0) and out.mask.dtype == torch.bool
    assert out.depth.shape == (H0, W0) and out.depth.dtype == torch.float32
    assert out.face_id.shape == (H0, W0) and out.face_id.dtype == torch.int64
    assert out.bary.shape == (H0, W0, 3) and out.bary.dtype == torch.float32
    m = out.mask
    assert torch.allclose(out.bary[m].sum(-1), torch.ones(int(m.sum())), atol=1e-6)
    assert (out.bary[m] >= -1e-6).all()
    assert (out.image >= 0).all() and (out.image <= 1).all()


def test_perspective_correct_barycentrics():
    # Strongly slanted triangle (z from 1.2 to 9) in front of an identity camera.
    A, B, C = [-1.0, -1.0, 1.2], [1.5, -0.6, 9.0], [-0.3, 1.2, 2.0]
    lam = [0.2, 0.3, 0.5]
    P = [lam[0] * A[k] + lam[1] * B[k] + lam[2] * C[k] for k in range(3)]
    f, W, H, ic, jc = 60.0, 128, 96, 40, 70
    # Choose the principal point so that P projects exactly onto the centre of pixel (ic, jc).
    cx, cy = jc + 0.5 - f * P[0] / P[2], ic + 0.5 - f * P[1] / P[2]
    K = [[f, 0, cx], [0, f, cy], [0, 0, 1]]
    out = render_mesh([A, B, C], [[0, 1, 2]], np.eye(4), K, W, H)
    assert out.face_id[ic, jc] == 0
    np.testing.assert_allclose(out.bary[ic, jc].numpy(), lam, atol=1e-4)
    assert abs(out.depth[ic, jc].item() - P[2]) < 1e-4 * P[2]
    # Affine (screen-space) interpolation would be far off here.
    proj = [(f * p[0] / p[2] + cx, f * p[1] / p[2] + cy) for p in (A, B, C)]
    (x0, y0), (x1, y1), (x2, y2) = proj
    px, py = jc + 0.5, ic + 0.5
    den = (x1 - x0) * (y2 - y0) - (y1 - y0) * (x2 - x0)
    s1 = ((px - x0) * (y2 - y0) - (py - y0) * (x2 - x0)) / den
    s2 = ((x1 - x0) * (py - y0) - (y1 - y0) * (px - x0)) / den
    affine = [1 - s1 - s2, s1, s2]
    assert max(abs(a - b) for a, b in zip(affine, lam)) > 0.05
    # Every covered pixel: the barycentric point lies on that pixel's centre ray at the reported depth.
    ii, jj = torch.nonzero(out.mask, as_tuple=True)
    b = out.bary[ii, jj].double()
    pts = b @ torch.tensor([A, B, C], dtype=torch.float64)
    u = f * pts[:, 0] / pts[:, 2] + cx
    v = f * pts[:, 1] / pts[:, 2] + cy
    assert torch.allclose(u, jj.double() + 0.5, atol=2e-3) and torch.allclose(v, ii.double() + 0.5, atol=2e-3)
    assert torch.allclose(pts[:, 2], out.depth[ii, jj].double(), rtol=1e-5)


def quad_front(uvs=None):
    """Unit-ish square in the world plane z = 0, counter-clockwise seen from +z (the camera side)."""
    V = [[-1.0, -1.0, 0.0], [1.0, -1.0, 0.0], [1.0, 1.0, 0.0], [-1.0, 1.0, 0.0]]  # BL, BR, TR, TL
    F = [[0, 1, 2], [0, 2, 3]]
    uv = [[0.0, 0.0], [1.0, 0.0], [1.0, 1.0], [0.0, 1.0]]
    return V, F, uv


def test_texture_orientation():
    V, F, uv = quad_front()
    K = [[20.0, 0, 20.0], [0, 20.0, 20.0], [0, 0, 1]]
    red, blue, green = [1.0, 0.0, 0.0], [0.0, 0.0, 1.0], [0.0, 1.0, 0.0]
    top_bottom = np.array([[red] * 8] * 4 + [[blue] * 8] * 4)  # upright: rows 0..3 = top = red
    out = render_mesh(V, F, VIEW_FRONT, K, 40, 40, uvs=uv, texture=top_bottom, cull_backfaces=True)
    rows = torch.nonzero(out.mask.any(1)).squeeze(1)
    top, bottom = int(rows.min()), int(rows.max())
    assert bottom - top > 6
    assert torch.allclose(out.image[top + 1, 20], torch.tensor(red))
    assert torch.allclose(out.image[bottom - 1, 20], torch.tensor(blue))
    left_right = np.array([[green] * 4 + [red] * 4] * 8)  # u = 0 (left) green
    out = render_mesh(V, F, VIEW_FRONT, K, 40, 40, uvs=uv, texture=left_right)
    cols = torch.nonzero(out.mask.any(0)).squeeze(1)
    assert torch.allclose(out.image[20, int(cols.min()) + 1], torch.tensor(green))
    assert torch.allclose(out.image[20, int(cols.max()) - 1], torch.tensor(red))
    # uint8 textures are accepted and scaled by 1/255.
    out8 = render_mesh(V, F, VIEW_FRONT, K, 40, 40, uvs=uv, texture=(left_right * 255).astype(np.uint8))
    assert torch.allclose(out8.image, out.image)


def test_bilinear_texel_centres():
    # Two texels side by side; the quad's uv span is exactly the texture, sampled at texel centres.
    V, F, uv = quad_front()
    tex = np.array([[[0.0, 0.0, 0.0], [1.0, 1.0, 1.0]]])  # 1 x 2
    K = [[50.0, 0, 25.0], [0, 50.0, 25.0], [0, 0, 1]]  # quad spans u in [15, 35]: 20 pixels wide
    out = render_mesh(V, F, VIEW_FRONT, K, 50, 50, uvs=uv, texture=tex)
    row = out.image[25, :, 0].numpy()
    cols = np.nonzero(out.mask[25].numpy())[0]
    assert cols.min() == 15 and cols.max() == 34
    # pixel centre j + 0.5 -> u = (j + 0.5 - 15) / 20; texel coordinate x = 2u - 0.5, clamped to [0, 1]
    expect = np.clip(2 * (cols + 0.5 - 15) / 20 - 0.5, 0, 1)
    np.testing.assert_allclose(row[cols], expect, atol=1e-6)


def test_principal_point_shift_is_exact():
    Vs, Fs = uv_sphere(12, 18, radius=0.8)
    Rm = np.array(rot_xyz(0.4, 0.7, -0.2))
    view = np.eye(4)
    view[:3, :3] = Rm
    view[:3, 3] = [0.13, -0.07, 4.0]
    colors = (Vs + 1) / 2
    W, H, f = 40, 32, 30.0
    base = render_mesh(Vs, Fs, view, [[f, 0, 18.0], [0, f, 14.0], [0, 0, 1]], W, H, vertex_colors=colors,
                       light_dir=[0, 0, -1])
    dx, dy = 3, -2
    moved = render_mesh(Vs, Fs, view, [[f, 0, 18.0 + dx], [0, f, 14.0 + dy], [0, 0, 1]], W, H,
                        vertex_colors=colors, light_dir=[0, 0, -1])
    assert base.mask.sum() > 100 and moved.mask.sum() == base.mask.sum()  # nothing cut off
    # moved[i, j] == base[i - dy, j - dx]
    src = (slice(-dy, H), slice(0, W - dx))
    dst = (slice(0, H + dy), slice(dx, W))
    assert torch.equal(moved.face_id[dst], base.face_id[src])
    assert torch.allclose(moved.image[dst], base.image[src], atol=1e-6)
    assert torch.allclose(moved.depth[dst][moved.mask[dst]], base.depth[src][base.mask[src]], rtol=1e-6)


def test_backface_culling_single_triangle():
    K = [[30.0, 0, 20.0], [0, 30.0, 20.0], [0, 0, 1]]
    front = [[-1.0, -1.0, 0.0], [1.0, -1.0, 0.0], [0.0, 1.0, 0.0]]  # CCW seen from +z (the camera)
    for cull in (False, True):
        a = render_mesh(front, [[0, 1, 2]], VIEW_FRONT, K, 40, 40, cull_backfaces=cull)
        b = render_mesh(front, [[0, 2, 1]], VIEW_FRONT, K, 40, 40, cull_backfaces=cull)
        assert a.mask.sum() > 50
        assert torch.equal(b.mask, a.mask if not cull else torch.zeros_like(a.mask))
    # Screen-space statement: a front face has negative signed area in the y-down pixel frame.
    cam = [[x, -y, 5.0 - z] for x, y, z in front]
    uv = [(30 * p[0] / p[2] + 20, 30 * p[1] / p[2] + 20) for p in cam]
    (u0, v0), (u1, v1), (u2, v2) = uv
    assert (u1 - u0) * (v2 - v0) - (v1 - v0) * (u2 - u0) < 0


def test_backface_culling_closed_mesh_changes_nothing():
    V, F = octahedron(1.0, centre=(0.1, -0.2, 0.05))
    view = np.eye(4)
    view[:3, :3] = np.array(rot_xyz(0.5, -0.4, 0.3))
    view[:3, 3] = [0.0, 0.1, 4.0]
    K = [[40.0, 0, 24.3], [0, 40.0, 23.8], [0, 0, 1]]
    kw = dict(vertex_colors=np.random.default_rng(1).uniform(size=(6, 3)), light_dir=[1, 2, -3])
    a = render_mesh(V, F, view, K, 48, 48, **kw)
    b = render_mesh(V, F, view, K, 48, 48, cull_backfaces=True, **kw)
    assert a.mask.sum() > 150
    assert torch.equal(a.face_id, b.face_id) and torch.equal(a.image, b.image)
    # Inside out: culling leaves only the far (now "front") faces, which the unculled render hides.
    inv = [[f[0], f[2], f[1]] for f in F]
    c = render_mesh(V, inv, view, K, 48, 48, cull_backfaces=True)
    assert torch.equal(c.mask, a.mask)
    assert (c.depth[c.mask] > a.depth[a.mask]).all()


def test_vertex_normals_octahedron():
    V, F = octahedron(2.0)
    n = vertex_normals(V, F)
    np.testing.assert_allclose(n.numpy(), np.array(V) / 2.0, atol=1e-7)


def test_shading_basics():
    V, F, _ = quad_front()
    K = [[20.0, 0, 20.0], [0, 20.0, 20.0], [0, 0, 1]]
    base = [0.8, 0.6, 0.4]
    colors = [base] * 4
    c = torch.tensor(base)

    def centre(light, ambient=0.35):
        out = render_mesh(V, F, VIEW_FRONT, K, 40, 40, vertex_colors=colors, light_dir=light, ambient=ambient)
        return out.image[20, 20]

    assert torch.allclose(centre(None), c)
    assert torch.allclose(centre([0, 0, 5.0]), c, atol=1e-6)  # light from the camera side: full
    assert torch.allclose(centre([0, 0, -1.0]), 0.35 * c, atol=1e-6)  # from behind: ambient only
    assert torch.allclose(centre([1.0, 0, 0]), 0.35 * c, atol=1e-6)  # grazing
    s60 = [math.sin(math.radians(60)), 0, 0.5]  # 60 degrees off the normal: n.l = 0.5
    assert torch.allclose(centre(s60, ambient=0.2), (0.2 + 0.8 * 0.5) * c, atol=1e-6)
    # Shading follows the interpolated normal: the lit side of a sphere is brighter.
    Vs, Fs = uv_sphere(16, 24)
    out = render_mesh(Vs, Fs, VIEW_FRONT, [[60.0, 0, 32], [0, 60.0, 32], [0, 0, 1]], 64, 64,
                      light_dir=[1.0, 0, 0], ambient=0.1)  # light from world +x = image right
    g = out.image[32, :, 0]
    assert g[44] > g[32] > g[20] and abs(g[20].item() - 0.1 * DEFAULT_GREY[0]) < 1e-6


def test_depth_ties_go_to_lower_face_id():
    # Two identical coplanar triangles: the lower index wins everywhere, whatever the order.
    tri = [[-1.0, -1.0, 0.0], [1.0, -1.0, 0.0], [0.0, 1.0, 0.0]]
    V = tri + tri
    K = [[30.0, 0, 20.0], [0, 30.0, 20.0], [0, 0, 1]]
    out = render_mesh(V, [[3, 4, 5], [0, 1, 2]], VIEW_FRONT, K, 40, 40)
    assert out.mask.any() and (out.face_id[out.mask] == 0).all()


def test_near_plane_drops_whole_triangles():
    K = [[30.0, 0, 20.0], [0, 30.0, 20.0], [0, 0, 1]]
    tri = [[-1.0, -1.0, 2.0], [1.0, -1.0, 2.0], [0.0, 1.0, 2.0]]
    assert render_mesh(tri, [[0, 1, 2]], np.eye(4), K, 40, 40).mask.any()
    tri[2][2] = NEAR_Z  # one vertex exactly on the near limit
    assert not render_mesh(tri, [[0, 1, 2]], np.eye(4), K, 40, 40).mask.any()


def test_chunking_does_not_change_the_result(monkeypatch):
    import stavatar_ti.flame.meshrender as mr

    Vs, Fs = uv_sphere(10, 14)
    view = np.eye(4)
    view[:3, :3] = np.array(rot_xyz(0.2, 0.9, 0.1))
    view[2, 3] = 3.0
    K = [[50.0, 0, 30.0], [0, 50.0, 31.0], [0, 0, 1]]
    a = render_mesh(Vs, Fs, view, K, 64, 60, vertex_colors=(Vs + 1) / 2)
    monkeypatch.setattr(mr, "_FRAGMENT_BUDGET", 37)
    b = render_mesh(Vs, Fs, view, K, 64, 60, vertex_colors=(Vs + 1) / 2)
    assert torch.equal(a.face_id, b.face_id) and torch.equal(a.image, b.image) and torch.equal(a.depth, b.depth)
    # Faces whose bounding box exceeds the budget are cut into bands of rows.
    Vq, Fq, _ = quad_front()
    Kq = [[40.0, 0, 20.3], [0, 40.0, 19.6], [0, 0, 1]]
    monkeypatch.setattr(mr, "_FRAGMENT_BUDGET", 1 << 20)
    c = render_mesh(Vq, Fq, VIEW_FRONT, Kq, 40, 36, vertex_colors=np.eye(4)[:, :3])
    monkeypatch.setattr(mr, "_FRAGMENT_BUDGET", 5)  # fewer than one row of a box
    d = render_mesh(Vq, Fq, VIEW_FRONT, Kq, 40, 36, vertex_colors=np.eye(4)[:, :3])
    assert c.mask.sum() == 16 * 16
    assert torch.equal(c.face_id, d.face_id) and torch.equal(c.image, d.image) and torch.equal(c.bary, d.bary)


def test_numpy_torch_and_list_inputs_agree():
    V, F, view, K, colors, _, _ = tiny_scene()
    a = render_mesh(np.array(V), np.array(F, dtype=np.int32), np.array(view), np.array(K), W0, H0,
                    vertex_colors=np.array(colors))
    f64 = dict(dtype=torch.float64)
    b = render_mesh(torch.tensor(V, **f64), torch.tensor(F), torch.tensor(view, **f64), torch.tensor(K, **f64),
                    np.int64(W0), H0, vertex_colors=torch.tensor(colors, **f64))
    c = render_mesh(V, F, view, K, W0, H0, vertex_colors=colors)
    for out in (b, c):
        for field in ("image", "mask", "depth", "face_id", "bary"):
            assert torch.equal(getattr(a, field), getattr(out, field)), field
    # float32 inputs are accepted too (and agree up to their rounding)
    d = render_mesh(torch.tensor(V), torch.tensor(F), torch.tensor(view), torch.tensor(K), W0, H0,
                    vertex_colors=torch.tensor(colors))
    assert (d.face_id != a.face_id).sum() <= 2 and torch.allclose(d.depth[d.mask & a.mask], a.depth[d.mask & a.mask])


# ------------------------------------------------------------------------------------------------
# Bad input
# ------------------------------------------------------------------------------------------------

def _good():
    V, F, _ = quad_front()
    return dict(vertices=np.array(V), faces=np.array(F), viewmat=np.array(VIEW_FRONT),
                K=np.array([[20.0, 0, 20.0], [0, 20.0, 20.0], [0, 0, 1]]), width=40, height=40)


def _with(**changes):
    kw = _good()
    kw.update(changes)
    return kw


NAN_V = np.array(quad_front()[0])
NAN_V[1, 2] = np.nan

BAD_INPUTS = [
    ("vertices", _with(vertices=np.zeros((4, 2)))),
    ("vertices", _with(vertices=NAN_V)),
    ("vertices", _with(vertices=np.zeros((4, 3), dtype=bool))),
    ("vertex_colors", _with(vertex_colors=np.ones((4, 3), dtype=np.int64))),
    ("faces", _with(faces=np.array([[0, 1, 4]]))),
    ("faces", _with(faces=np.array([[0, -1, 2]]))),
    ("faces", _with(faces=np.array([[0.0, 1.0, 2.0]]))),
    ("faces", _with(faces=np.array([0, 1, 2]))),
    ("viewmat", _with(viewmat=np.eye(3))),
    ("viewmat", _with(viewmat=np.full((4, 4), np.nan))),
    ("viewmat", _with(viewmat=np.diag([1.0, 1.0, 1.0, 2.0]))),
    ("K", _with(K=np.array([[0.0, 0, 20.0], [0, 20.0, 20.0], [0, 0, 1]]))),
    ("K", _with(K=np.array([[20.0, 0, 20.0], [0, -20.0, 20.0], [0, 0, 1]]))),
    ("K", _with(K=np.eye(4))),
    ("K", _with(K=np.array([[20.0, 0, 20.0], [0, 20.0, 20.0], [0, 0, 2.0]]))),
    ("width", _with(width=0)),
    ("height", _with(height=2.5)),
    ("uvs", _with(texture=np.ones((4, 4, 3)))),
    ("texture", _with(uvs=np.zeros((4, 2)))),
    ("texture", _with(texture=np.ones((4, 4)), uvs=np.zeros((4, 2)))),
    ("uvs", _with(texture=np.ones((4, 4, 3)), uvs=np.zeros((4, 3)))),
    ("uv_faces", _with(texture=np.ones((4, 4, 3)), uvs=np.zeros((4, 2)), uv_faces=np.array([[0, 1, 2], [0, 2, 9]]))),
    ("uv_faces", _with(texture=np.ones((4, 4, 3)), uvs=np.zeros((2, 2)))),  # default uv_faces = faces
    ("vertex_colors", _with(vertex_colors=np.ones((3, 3)))),
    ("vertex_colors", _with(vertex_colors=np.ones((4, 3)), texture=np.ones((4, 4, 3)), uvs=np.zeros((4, 2)))),
    ("light_dir", _with(light_dir=[0.0, 0.0, 0.0])),
    ("light_dir", _with(light_dir=[0.0, 1.0])),
    ("ambient", _with(ambient=1.5)),
    ("background", _with(background=(1.0, 1.0))),
    ("background", _with(background=(1.0, 2.0, 0.0))),
]


@pytest.mark.parametrize("name,kw", BAD_INPUTS, ids=[f"{i}-{n}" for i, (n, _) in enumerate(BAD_INPUTS)])
def test_bad_input_raises_value_error_naming_argument(name, kw):
    with pytest.raises(ValueError, match=rf"^{name}:"):
        render_mesh(**kw)


def test_good_input_renders():
    out = render_mesh(**_good())
    assert out.mask.sum() > 0
