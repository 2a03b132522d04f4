"""Front-to-back alpha compositing of depth-sorted Gaussians per 16x16 tile, with per-Gaussian
statistics, and its hand-written backward.

Math: 3DGS (Kerbl et al. 2023, Eq. 2-3 and the `renderCUDA` forward/backward of
diff-gaussian-rasterization), with the pixel centre at (j+0.5, i+0.5) as in gsplat. Per pixel,
over the tile's list in ascending depth:
    power = -1/2 (a dx^2 + c dy^2) - b dx dy,  d = pixel centre - means2d   (skip if power > 0)
    alpha = min(0.99, o exp(power))                                          (skip if < 1/255)
    stop before the Gaussian if T (1 - alpha) < 1e-4, else
    C += T alpha c;  pixel_count += 1;  blend_weight += T alpha;  T *= 1 - alpha
    image = C + T background, alpha_out = 1 - T.
The backward walks each pixel's composited list back to front, recovering T by division by
(1 - alpha) (safe since alpha <= 0.99) and keeping the colour "behind" incrementally (INRIA's
`accum_rec`). The loops exit early, which Taichi autodiff cannot differentiate, so the backward is
written by hand. The min(0.99, .) clamp passes no gradient where it is active.

One thread per pixel, pixels of a tile contiguous in the loop index (so a GPU warp shares a tile's
list through the cache). The same kernels run on the CPU (x64) and CUDA backends.
Shapes: tile_start/tile_end [num_tiles] i32, isect_ids [M] i32, means2d [N,2], conics [N,3],
opacities [N], colors [N,3], background [3]; image [H,W,3], T_final [H,W], last [H,W] i32
(exclusive end of the composited part of the tile list), pixel_count [N] i32, blend_weight [N] f32.
"""

import taichi as ti

from .common import ALPHA_MAX, ALPHA_MIN, BLOCK, T_EPS, TILE_SIZE

vec2 = ti.math.vec2
vec3 = ti.math.vec3


@ti.func
def pixel_of(idx, tiles_x):
    tile = idx // BLOCK
    local = idx % BLOCK
    py = (tile // tiles_x) * TILE_SIZE + local // TILE_SIZE
    px = (tile % tiles_x) * TILE_SIZE + local % TILE_SIZE
    return tile, py, px


@ti.func
def gaussian_alpha(px, py, mean2d, conic, opacity):
    """(alpha before the clamp test, power, dx, dy) of one Gaussian at pixel (px, py)."""
    dx = px + 0.5 - mean2d[0]
    dy = py + 0.5 - mean2d[1]
    power = -0.5 * (conic[0] * dx * dx + conic[2] * dy * dy) - conic[1] * dx * dy
    return opacity * ti.exp(power), power, dx, dy


@ti.kernel
def rasterize_fwd(
    tile_start: ti.types.ndarray(dtype=ti.i32, ndim=1),
    tile_end: ti.types.ndarray(dtype=ti.i32, ndim=1),
    isect_ids: ti.types.ndarray(dtype=ti.i32, ndim=1),
    means2d: ti.types.ndarray(dtype=vec2, ndim=1),
    conics: ti.types.ndarray(dtype=vec3, ndim=1),
    opacities: ti.types.ndarray(dtype=ti.f32, ndim=1),
    colors: ti.types.ndarray(dtype=vec3, ndim=1),
    background: ti.types.ndarray(dtype=ti.f32, ndim=1),
    tiles_x: ti.i32,
    image: ti.types.ndarray(dtype=vec3, ndim=2),
    T_final: ti.types.ndarray(dtype=ti.f32, ndim=2),
    last: ti.types.ndarray(dtype=ti.i32, ndim=2),
    pixel_count: ti.types.ndarray(dtype=ti.i32, ndim=1),
    blend_weight: ti.types.ndarray(dtype=ti.f32, ndim=1),
):
    height, width = image.shape[0], image.shape[1]
    for idx in range(tile_start.shape[0] * BLOCK):
        tile, py, px = pixel_of(idx, tiles_x)
        if py < height and px < width:
            T = 1.0
            C = vec3(0.0)
            end = tile_start[tile]
            for k in range(tile_start[tile], tile_end[tile]):
                g = isect_ids[k]
                raw, power, dx, dy = gaussian_alpha(px, py, means2d[g], conics[g], opacities[g])
                alpha = ti.min(ALPHA_MAX, raw)
                if power > 0.0 or alpha < ALPHA_MIN:
                    continue
                next_T = T * (1.0 - alpha)
                if next_T < T_EPS:
                    break
                w = T * alpha
                C += w * colors[g]
                pixel_count[g] += 1
                blend_weight[g] += w
                T = next_T
                end = k + 1
            image[py, px] = C + T * vec3(background[0], background[1], background[2])
            T_final[py, px] = T
            last[py, px] = end


@ti.kernel
def rasterize_bwd(
    tile_start: ti.types.ndarray(dtype=ti.i32, ndim=1),
    isect_ids: ti.types.ndarray(dtype=ti.i32, ndim=1),
    means2d: ti.types.ndarray(dtype=vec2, ndim=1),
    conics: ti.types.ndarray(dtype=vec3, ndim=1),
    opacities: ti.types.ndarray(dtype=ti.f32, ndim=1),
    colors: ti.types.ndarray(dtype=vec3, ndim=1),
    background: ti.types.ndarray(dtype=ti.f32, ndim=1),
    tiles_x: ti.i32,
    T_final: ti.types.ndarray(dtype=ti.f32, ndim=2),
    last: ti.types.ndarray(dtype=ti.i32, ndim=2),
    v_image: ti.types.ndarray(dtype=vec3, ndim=2),
    v_alpha: ti.types.ndarray(dtype=ti.f32, ndim=2),
    v_means2d: ti.types.ndarray(dtype=vec2, ndim=1),
    v_conics: ti.types.ndarray(dtype=vec3, ndim=1),
    v_opacities: ti.types.ndarray(dtype=ti.f32, ndim=1),
    v_colors: ti.types.ndarray(dtype=vec3, ndim=1),
):
    """Accumulates (+=) into the v_* Gaussian gradients, which the caller zeroes."""
    height, width = T_final.shape[0], T_final.shape[1]
    for idx in range(tile_start.shape[0] * BLOCK):
        tile, py, px = pixel_of(idx, tiles_x)
        if py < height and px < width:
            T_end = T_final[py, px]
            v_pix = v_image[py, px]
            bg = vec3(background[0], background[1], background[2])
            # dL/dalpha_j through T_final: d(T_end)/d(alpha_j) = -T_end / (1 - alpha_j)
            v_T_end = bg.dot(v_pix) - v_alpha[py, px]
            T = T_end
            behind = vec3(0.0)
            prev_alpha = 0.0
            prev_color = vec3(0.0)
            start = tile_start[tile]
            end = last[py, px]
            for kk in range(end - start):
                k = end - 1 - kk
                g = isect_ids[k]
                o = opacities[g]
                raw, power, dx, dy = gaussian_alpha(px, py, means2d[g], conics[g], o)
                alpha = ti.min(ALPHA_MAX, raw)
                if power > 0.0 or alpha < ALPHA_MIN:
                    continue
                T = T / (1.0 - alpha)
                c = colors[g]
                v_colors[g] += T * alpha * v_pix
                behind = prev_alpha * prev_color + (1.0 - prev_alpha) * behind
                v_a = T * (c - behind).dot(v_pix) - T_end / (1.0 - alpha) * v_T_end
                prev_alpha = alpha
                prev_color = c
                if raw < ALPHA_MAX:
                    v_opacities[g] += ti.exp(power) * v_a
                    v_power = alpha * v_a
                    cn = conics[g]
                    v_means2d[g] += v_power * vec2(cn[0] * dx + cn[1] * dy, cn[1] * dx + cn[2] * dy)
                    v_conics[g] += v_power * vec3(-0.5 * dx * dx, -dx * dy, -0.5 * dy * dy)
