"""EWA projection of 3D Gaussians to the image plane, forward and hand-written backward.

Math: Zwicker et al., "EWA Splatting" (2002), as used by 3DGS (Kerbl et al. 2023, Sec. 4) with the
pinhole Jacobian clamp and the 0.3 px low-pass of gsplat/INRIA; the rules are those of the
rasterizer contract (docs/architecture.md Sec. 3, rules 1-4).

Shapes (N Gaussians; all float32 unless stated):
    means [N,3] world, quats [N,4] (w,x,y,z, any norm > 0), scales [N,3] linear,
    viewmat [4,4] world->camera (OpenCV), K [3,3] pixel intrinsics.
Outputs:
    means2d [N,2] px, conics [N,3] (a,b,c of the inverse 2D covariance [[a,b],[b,c]]),
    depths [N] camera z, radii [N] i32 (0 = culled), tile_rect [N,4] i32 (x0,y0,x1,y1 inclusive
    tile indices), tile_counts [N] i32 (tiles touched, 0 when culled).
The backward maps dL/dmeans2d [N,2] and dL/dconics [N,3] to dL/dmeans, dL/dquats, dL/dscales.
"""

import taichi as ti

from .common import TILE_SIZE

vec2 = ti.math.vec2
vec3 = ti.math.vec3
vec4 = ti.math.vec4
mat2 = ti.math.mat2
mat3 = ti.math.mat3
mat23 = ti.types.matrix(2, 3, ti.f32)

LOW_PASS = 0.3  # px^2 added to the 2D covariance diagonal (3DGS anti-aliasing dilation)
CLAMP_MARGIN = 0.3  # fraction of the half-FOV tangent allowed outside the image in J


@ti.func
def quat_to_rotmat(q):
    """Rotation matrix of a unit quaternion q = (w, x, y, z)."""
    w, x, y, z = q[0], q[1], q[2], q[3]
    return mat3(
        [1.0 - 2.0 * (y * y + z * z), 2.0 * (x * y - w * z), 2.0 * (x * z + w * y)],
        [2.0 * (x * y + w * z), 1.0 - 2.0 * (x * x + z * z), 2.0 * (y * z - w * x)],
        [2.0 * (x * z - w * y), 2.0 * (y * z + w * x), 1.0 - 2.0 * (x * x + y * y)],
    )


@ti.func
def quat_to_rotmat_vjp(q, G):
    """dL/dq (q unit, w,x,y,z) given G = dL/dR for R = quat_to_rotmat(q)."""
    w, x, y, z = q[0], q[1], q[2], q[3]
    dw = 2.0 * (-z * G[0, 1] + y * G[0, 2] + z * G[1, 0] - x * G[1, 2] - y * G[2, 0] + x * G[2, 1])
    dx = 2.0 * (y * G[0, 1] + z * G[0, 2] + y * G[1, 0] - 2.0 * x * G[1, 1] - w * G[1, 2]
                + z * G[2, 0] + w * G[2, 1] - 2.0 * x * G[2, 2])
    dy = 2.0 * (-2.0 * y * G[0, 0] + x * G[0, 1] + w * G[0, 2] + x * G[1, 0] + z * G[1, 2]
                - w * G[2, 0] + z * G[2, 1] - 2.0 * y * G[2, 2])
    dz = 2.0 * (-2.0 * z * G[0, 0] - w * G[0, 1] + x * G[0, 2] + w * G[1, 0] - 2.0 * z * G[1, 1]
                + y * G[1, 2] + x * G[2, 0] + y * G[2, 1])
    return vec4(dw, dx, dy, dz)


@ti.func
def load_camera(viewmat: ti.template(), K: ti.template()):
    W = mat3(0.0)
    t = vec3(0.0)
    for r in ti.static(range(3)):
        t[r] = viewmat[r, 3]
        for c in ti.static(range(3)):
            W[r, c] = viewmat[r, c]
    return W, t, K[0, 0], K[1, 1], K[0, 2], K[1, 2]


@ti.func
def jacobian_limits(f, c, size):
    """Clamp range of x/z (or y/z) inside J: the image plus 0.3 of the half-FOV tangent."""
    margin = CLAMP_MARGIN * 0.5 * size / f
    return -(c / f + margin), (size - c) / f + margin


@ti.func
def covariance_3d(q, s):
    """Sigma = R S S^T R^T and the factor M = R S, with q normalised inside."""
    qn = q / q.norm()
    R = quat_to_rotmat(qn)
    M = R @ ti.Matrix([[s[0], 0.0, 0.0], [0.0, s[1], 0.0], [0.0, 0.0, s[2]]])
    return qn, R, M, M @ M.transpose()


@ti.func
def ewa_jacobian(p, fx, fy, cx, cy, width, height):
    """J of the pinhole projection at p with x/z, y/z clamped; also returns the clamp flags."""
    lo_x, hi_x = jacobian_limits(fx, cx, width)
    lo_y, hi_y = jacobian_limits(fy, cy, height)
    rz = 1.0 / p[2]
    ux = p[0] * rz
    uy = p[1] * rz
    cux = ti.min(hi_x, ti.max(lo_x, ux))
    cuy = ti.min(hi_y, ti.max(lo_y, uy))
    J = mat23([fx * rz, 0.0, -fx * cux * rz], [0.0, fy * rz, -fy * cuy * rz])
    return J, cux, cuy, (ux == cux), (uy == cuy)


@ti.kernel
def project_fwd(
    means: ti.types.ndarray(dtype=vec3, ndim=1),
    quats: ti.types.ndarray(dtype=vec4, ndim=1),
    scales: ti.types.ndarray(dtype=vec3, ndim=1),
    viewmat: ti.types.ndarray(dtype=ti.f32, ndim=2),
    K: ti.types.ndarray(dtype=ti.f32, ndim=2),
    width: ti.i32,
    height: ti.i32,
    near_plane: ti.f32,
    means2d: ti.types.ndarray(dtype=vec2, ndim=1),
    conics: ti.types.ndarray(dtype=vec3, ndim=1),
    depths: ti.types.ndarray(dtype=ti.f32, ndim=1),
    radii: ti.types.ndarray(dtype=ti.i32, ndim=1),
    tile_rect: ti.types.ndarray(dtype=ti.math.ivec4, ndim=1),
    tile_counts: ti.types.ndarray(dtype=ti.i32, ndim=1),
):
    tiles_x = (width + TILE_SIZE - 1) // TILE_SIZE
    tiles_y = (height + TILE_SIZE - 1) // TILE_SIZE
    for i in means:
        W, t, fx, fy, cx, cy = load_camera(viewmat, K)
        p = W @ means[i] + t
        depths[i] = p[2]
        radii[i] = 0
        tile_counts[i] = 0
        means2d[i] = vec2(0.0)
        conics[i] = vec3(0.0)
        tile_rect[i] = ti.math.ivec4(0)
        if p[2] >= near_plane:
            sigma = covariance_3d(quats[i], scales[i])[3]
            J = ewa_jacobian(p, fx, fy, cx, cy, width, height)[0]
            T = J @ W
            cov = T @ sigma @ T.transpose()
            a = cov[0, 0] + LOW_PASS
            b = cov[0, 1]
            c = cov[1, 1] + LOW_PASS
            det = a * c - b * b
            if det > 0.0:
                u = fx * p[0] / p[2] + cx
                v = fy * p[1] / p[2] + cy
                mid = 0.5 * (a + c)
                lam = mid + ti.sqrt(ti.max(0.1, mid * mid - det))
                r = ti.ceil(3.0 * ti.sqrt(lam))
                if u + r > 0.0 and u - r < width and v + r > 0.0 and v - r < height:
                    x0 = ti.min(ti.max(ti.floor((u - r) / TILE_SIZE, ti.i32), 0), tiles_x - 1)
                    x1 = ti.min(ti.max(ti.floor((u + r) / TILE_SIZE, ti.i32), 0), tiles_x - 1)
                    y0 = ti.min(ti.max(ti.floor((v - r) / TILE_SIZE, ti.i32), 0), tiles_y - 1)
                    y1 = ti.min(ti.max(ti.floor((v + r) / TILE_SIZE, ti.i32), 0), tiles_y - 1)
                    radii[i] = ti.cast(r, ti.i32)
                    means2d[i] = vec2(u, v)
                    conics[i] = vec3(c / det, -b / det, a / det)
                    tile_rect[i] = ti.math.ivec4(x0, y0, x1, y1)
                    tile_counts[i] = (x1 - x0 + 1) * (y1 - y0 + 1)


@ti.kernel
def project_bwd(
    means: ti.types.ndarray(dtype=vec3, ndim=1),
    quats: ti.types.ndarray(dtype=vec4, ndim=1),
    scales: ti.types.ndarray(dtype=vec3, ndim=1),
    viewmat: ti.types.ndarray(dtype=ti.f32, ndim=2),
    K: ti.types.ndarray(dtype=ti.f32, ndim=2),
    width: ti.i32,
    height: ti.i32,
    radii: ti.types.ndarray(dtype=ti.i32, ndim=1),
    conics: ti.types.ndarray(dtype=vec3, ndim=1),
    v_means2d: ti.types.ndarray(dtype=vec2, ndim=1),
    v_conics: ti.types.ndarray(dtype=vec3, ndim=1),
    v_means: ti.types.ndarray(dtype=vec3, ndim=1),
    v_quats: ti.types.ndarray(dtype=vec4, ndim=1),
    v_scales: ti.types.ndarray(dtype=vec3, ndim=1),
):
    """Writes (not accumulates) the gradients; culled Gaussians get zeros."""
    for i in means:
        v_means[i] = vec3(0.0)
        v_quats[i] = vec4(0.0)
        v_scales[i] = vec3(0.0)
        if radii[i] > 0:
            W, t, fx, fy, cx, cy = load_camera(viewmat, K)
            p = W @ means[i] + t
            s = scales[i]
            qn, R, M, sigma = covariance_3d(quats[i], s)
            J, cux, cuy, free_x, free_y = ewa_jacobian(p, fx, fy, cx, cy, width, height)
            sigma_c = W @ sigma @ W.transpose()
            rz = 1.0 / p[2]

            # conic = inv(cov2d): dL/dcov2d = -X G X, G symmetric with the b-gradient split in half.
            cn = conics[i]
            X = mat2([cn[0], cn[1]], [cn[1], cn[2]])
            g = v_conics[i]
            G = mat2([g[0], 0.5 * g[1]], [0.5 * g[1], g[2]])
            v_cov2d = -(X @ G @ X)

            # cov2d = J sigma_c J^T + 0.3 I
            v_sigma_c = J.transpose() @ v_cov2d @ J
            v_J = 2.0 * (v_cov2d @ J @ sigma_c)

            # p enters through the centre and through J
            v2 = v_means2d[i]
            v_p = vec3(fx * rz * v2[0], fy * rz * v2[1], -(fx * p[0] * v2[0] + fy * p[1] * v2[1]) * rz * rz)
            v_p[2] += -fx * rz * rz * v_J[0, 0] - fy * rz * rz * v_J[1, 1]
            if free_x:
                v_p[0] += -fx * rz * rz * v_J[0, 2]
                v_p[2] += 2.0 * fx * p[0] * rz * rz * rz * v_J[0, 2]
            else:
                v_p[2] += fx * cux * rz * rz * v_J[0, 2]
            if free_y:
                v_p[1] += -fy * rz * rz * v_J[1, 2]
                v_p[2] += 2.0 * fy * p[1] * rz * rz * rz * v_J[1, 2]
            else:
                v_p[2] += fy * cuy * rz * rz * v_J[1, 2]
            v_means[i] = W.transpose() @ v_p

            # sigma_c = W sigma W^T; sigma = M M^T; M = R S
            v_sigma = W.transpose() @ v_sigma_c @ W
            v_M = 2.0 * (v_sigma @ M)
            v_R = mat3(0.0)
            for r in ti.static(range(3)):
                for c in ti.static(range(3)):
                    v_R[r, c] = v_M[r, c] * s[c]
            v_scales[i] = vec3(
                v_M[0, 0] * R[0, 0] + v_M[1, 0] * R[1, 0] + v_M[2, 0] * R[2, 0],
                v_M[0, 1] * R[0, 1] + v_M[1, 1] * R[1, 1] + v_M[2, 1] * R[2, 1],
                v_M[0, 2] * R[0, 2] + v_M[1, 2] * R[1, 2] + v_M[2, 2] * R[2, 2],
            )
            v_qn = quat_to_rotmat_vjp(qn, v_R)
            # q -> q/|q|
            v_quats[i] = (v_qn - qn * qn.dot(v_qn)) / quats[i].norm()
