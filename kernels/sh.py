"""View-dependent colour from real spherical harmonics up to degree 3, forward and backward.

Math: the real SH basis with the constants and sign pattern of 3DGS (Kerbl et al. 2023,
`sh_utils.py` / `computeColorFromSH`; Sloan, "Stupid Spherical Harmonics Tricks", 2008).
colour = max(sum_k sh[k] * Y_k(dir) + 0.5, 0), dir = normalise(mean - camera centre),
camera centre = -R^T t for viewmat = [R t; 0 1].

Shapes: sh [N,K,3] float32 with K >= (degree+1)^2; means [N,3]; viewmat [4,4]; colours [N,3].
The backward gives dL/dsh [N,K,3] (coefficients above the degree get 0) and dL/dmeans [N,3].
"""

import taichi as ti

vec3 = ti.math.vec3

C0 = 0.28209479177387814
C1 = 0.4886025119029199
C2 = (1.0925484305920792, -1.0925484305920792, 0.31539156525252005, -1.0925484305920792,
      0.5462742152960396)
C3 = (-0.5900435899266435, 2.890611442640554, -0.4570457994644658, 0.3731763325901154,
      -0.4570457994644658, 1.445305721320277, -0.5900435899266435)


@ti.func
def sh_basis(k: ti.template(), n):
    """Y_k(n) and its gradient w.r.t. the (unnormalised-treated) components of n."""
    x, y, z = n[0], n[1], n[2]
    b = 0.0
    d = vec3(0.0)
    if ti.static(k == 0):
        b = C0
    elif ti.static(k == 1):
        b, d = -C1 * y, vec3(0.0, -C1, 0.0)
    elif ti.static(k == 2):
        b, d = C1 * z, vec3(0.0, 0.0, C1)
    elif ti.static(k == 3):
        b, d = -C1 * x, vec3(-C1, 0.0, 0.0)
    elif ti.static(k == 4):
        b, d = C2[0] * x * y, vec3(C2[0] * y, C2[0] * x, 0.0)
    elif ti.static(k == 5):
        b, d = C2[1] * y * z, vec3(0.0, C2[1] * z, C2[1] * y)
    elif ti.static(k == 6):
        b = C2[2] * (2.0 * z * z - x * x - y * y)
        d = vec3(-2.0 * C2[2] * x, -2.0 * C2[2] * y, 4.0 * C2[2] * z)
    elif ti.static(k == 7):
        b, d = C2[3] * x * z, vec3(C2[3] * z, 0.0, C2[3] * x)
    elif ti.static(k == 8):
        b, d = C2[4] * (x * x - y * y), vec3(2.0 * C2[4] * x, -2.0 * C2[4] * y, 0.0)
    elif ti.static(k == 9):
        b = C3[0] * y * (3.0 * x * x - y * y)
        d = vec3(6.0 * C3[0] * x * y, 3.0 * C3[0] * (x * x - y * y), 0.0)
    elif ti.static(k == 10):
        b, d = C3[1] * x * y * z, vec3(C3[1] * y * z, C3[1] * x * z, C3[1] * x * y)
    elif ti.static(k == 11):
        b = C3[2] * y * (4.0 * z * z - x * x - y * y)
        d = vec3(-2.0 * C3[2] * x * y, C3[2] * (4.0 * z * z - x * x - 3.0 * y * y), 8.0 * C3[2] * y * z)
    elif ti.static(k == 12):
        b = C3[3] * z * (2.0 * z * z - 3.0 * x * x - 3.0 * y * y)
        d = vec3(-6.0 * C3[3] * x * z, -6.0 * C3[3] * y * z, C3[3] * (6.0 * z * z - 3.0 * x * x - 3.0 * y * y))
    elif ti.static(k == 13):
        b = C3[4] * x * (4.0 * z * z - x * x - y * y)
        d = vec3(C3[4] * (4.0 * z * z - 3.0 * x * x - y * y), -2.0 * C3[4] * x * y, 8.0 * C3[4] * x * z)
    elif ti.static(k == 14):
        b = C3[5] * z * (x * x - y * y)
        d = vec3(2.0 * C3[5] * x * z, -2.0 * C3[5] * y * z, C3[5] * (x * x - y * y))
    else:
        b = C3[6] * x * (x * x - 3.0 * y * y)
        d = vec3(3.0 * C3[6] * (x * x - y * y), -6.0 * C3[6] * x * y, 0.0)
    return b, d


@ti.func
def view_dir(mean, viewmat: ti.template()):
    """Unnormalised direction mean - camera centre, camera centre = -R^T t."""
    campos = vec3(0.0)
    for c in ti.static(range(3)):
        for r in ti.static(range(3)):
            campos[c] -= viewmat[r, c] * viewmat[r, 3]
    return mean - campos


@ti.func
def sh_rgb(sh: ti.template(), i, n, degree: ti.template()):
    """sum_k sh[i,k] Y_k(n) + 0.5, before the clamp at 0."""
    rgb = vec3(0.5)
    for k in ti.static(range((degree + 1) ** 2)):
        rgb += sh_basis(k, n)[0] * sh[i, k]
    return rgb


@ti.kernel
def sh_fwd(
    sh: ti.types.ndarray(dtype=vec3, ndim=2),
    means: ti.types.ndarray(dtype=vec3, ndim=1),
    viewmat: ti.types.ndarray(dtype=ti.f32, ndim=2),
    degree: ti.template(),
    colors: ti.types.ndarray(dtype=vec3, ndim=1),
):
    for i in means:
        v = view_dir(means[i], viewmat)
        colors[i] = ti.max(sh_rgb(sh, i, v / v.norm(), degree), 0.0)


@ti.kernel
def sh_bwd(
    sh: ti.types.ndarray(dtype=vec3, ndim=2),
    means: ti.types.ndarray(dtype=vec3, ndim=1),
    viewmat: ti.types.ndarray(dtype=ti.f32, ndim=2),
    degree: ti.template(),
    v_colors: ti.types.ndarray(dtype=vec3, ndim=1),
    v_sh: ti.types.ndarray(dtype=vec3, ndim=2),
    v_means: ti.types.ndarray(dtype=vec3, ndim=1),
):
    """Writes dL/dsh (zero for unused coefficients) and dL/dmeans (direction path only)."""
    num_k = sh.shape[1]
    for i in means:
        v = view_dir(means[i], viewmat)
        inv_norm = 1.0 / v.norm()
        n = v * inv_norm
        rgb = sh_rgb(sh, i, n, degree)
        # the max(., 0) clamp passes no gradient where it is active
        g = v_colors[i]
        for ch in ti.static(range(3)):
            if rgb[ch] < 0.0:
                g[ch] = 0.0
        v_n = vec3(0.0)
        for k in ti.static(range((degree + 1) ** 2)):
            b, d = sh_basis(k, n)
            v_sh[i, k] = b * g
            v_n += sh[i, k].dot(g) * d
        for k in range((degree + 1) ** 2, num_k):
            v_sh[i, k] = vec3(0.0)
        # n = v/|v|: dn/dv = (I - n n^T)/|v|
        v_means[i] = (v_n - n * n.dot(v_n)) * inv_norm
