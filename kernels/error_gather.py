"""Per-Gaussian fused perceptual error gathered from an error map (STAvatar Temporal ADC,
method.md Sec. 10.5).

Both formulas share the integral image S (S[i, j] = sum of E over rows < i, columns < j, shape
[H+1, W+1]) and the recorded centre (x, y) = (trunc(means2d), clamped to the image):
- paper:  R = sqrt(C)/2; the pixels with integer coordinates inside [x-R, x+R] x [y-R, y+R]
          (clamped to the image); value = (A / C) * sum over them.
- code:   R = floor(sqrt(C))/2; real bounds x1 = clamp(x-R, 0, W-1), x2 = clamp(x+R, 0, W-1) (y
          likewise); the window of pixels trunc(x1)..trunc(x2); value = A / (C + 1) * window sum /
          ((x2 - x1 + 1) (y2 - y1 + 1)) with the real bounds in the area term (official code).
Gaussians with C = 0 get 0. Shapes: error [H,W] f32, integral [H+1,W+1] f64 (float64: window sums are differences of large
prefix sums), means2d [N,2] f32
(pixels), pixel_count [N] i32, blend_weight [N] f32, out [N] f32. formula: 0 = code, 1 = paper.
"""

import taichi as ti


@ti.kernel
def integral_rows(error: ti.types.ndarray(dtype=ti.f32, ndim=2), integral: ti.types.ndarray(dtype=ti.f64, ndim=2)):
    """integral[i+1, j+1] = sum_{j' <= j} error[i, j'] (row prefix sums); first row/column 0."""
    H, W = error.shape[0], error.shape[1]
    for j in range(W + 1):
        integral[0, j] = 0.0
    for i in range(H):
        acc = ti.f64(0.0)
        integral[i + 1, 0] = 0.0
        for j in range(W):
            acc += error[i, j]
            integral[i + 1, j + 1] = acc


@ti.kernel
def integral_cols(integral: ti.types.ndarray(dtype=ti.f64, ndim=2)):
    """Column prefix sums in place, completing the 2D integral image."""
    H1, W1 = integral.shape[0], integral.shape[1]
    for j in range(W1):
        acc = ti.f64(0.0)
        for i in range(H1):
            acc += integral[i, j]
            integral[i, j] = acc


@ti.func
def _window_sum(integral: ti.template(), r0, r1, c0, c1):
    """Sum of error over rows r0..r1 and columns c0..c1 (inclusive), 0 if empty."""
    s = ti.f64(0.0)
    if r1 >= r0 and c1 >= c0:
        s = integral[r1 + 1, c1 + 1] - integral[r0, c1 + 1] - integral[r1 + 1, c0] + integral[r0, c0]
    return s


@ti.kernel
def gather_error(integral: ti.types.ndarray(dtype=ti.f64, ndim=2), means2d: ti.types.ndarray(dtype=ti.math.vec2, ndim=1),
                 pixel_count: ti.types.ndarray(dtype=ti.i32, ndim=1),
                 blend_weight: ti.types.ndarray(dtype=ti.f32, ndim=1), formula: ti.i32,
                 out: ti.types.ndarray(dtype=ti.f32, ndim=1)):
    H, W = integral.shape[0] - 1, integral.shape[1] - 1
    for g in means2d:
        C = pixel_count[g]
        value = 0.0
        if C > 0:
            x = ti.min(ti.max(ti.cast(means2d[g][0], ti.i32), 0), W - 1)
            y = ti.min(ti.max(ti.cast(means2d[g][1], ti.i32), 0), H - 1)
            A = blend_weight[g]
            if formula == 1:
                R = ti.sqrt(ti.cast(C, ti.f32)) / 2.0
                c0 = ti.max(ti.cast(ti.ceil(x - R), ti.i32), 0)
                c1 = ti.min(ti.cast(ti.floor(x + R), ti.i32), W - 1)
                r0 = ti.max(ti.cast(ti.ceil(y - R), ti.i32), 0)
                r1 = ti.min(ti.cast(ti.floor(y + R), ti.i32), H - 1)
                value = A / C * ti.cast(_window_sum(integral, r0, r1, c0, c1), ti.f32)
            else:
                R = ti.floor(ti.sqrt(ti.cast(C, ti.f32))) / 2.0
                x1 = ti.min(ti.max(x - R, 0.0), W - 1.0)
                x2 = ti.min(ti.max(x + R, 0.0), W - 1.0)
                y1 = ti.min(ti.max(y - R, 0.0), H - 1.0)
                y2 = ti.min(ti.max(y + R, 0.0), H - 1.0)
                s = _window_sum(integral, ti.cast(y1, ti.i32), ti.cast(y2, ti.i32), ti.cast(x1, ti.i32),
                                ti.cast(x2, ti.i32))
                value = A / (C + 1.0) * ti.cast(s, ti.f32) / ((x2 - x1 + 1.0) * (y2 - y1 + 1.0))
        out[g] = value
