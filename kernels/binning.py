"""Tile binning: depth keys, (tile, Gaussian) intersection lists and per-tile ranges.

Pipeline (3DGS `duplicateWithKeys` / `identifyTileRanges`, reorganised so that the expensive
64-bit key sort becomes two cheaper stable sorts):
1. `depth_keys`: key = float bits of the camera depth (positive floats order like their bits),
   culled Gaussians get the largest key; the caller radix-sorts Gaussians by it.
2. `gather_counts`: tiles touched, in depth order; the caller exclusive-scans them.
3. `emit_intersections`: each Gaussian writes its tile ids (row-major) at its offset, so the list
   is in depth order; the caller stably radix-sorts it by tile id, which keeps depth order inside
   each tile.
4. `tile_ranges`: [start, end) of every tile in the sorted list (tiles with no Gaussian keep 0, 0).
Shapes: depths [N] f32, radii [N] i32, tile_rect [N,4] i32, order [N] i32, offsets [N] i32,
isect_tiles / isect_ids [M] i32, tile_start / tile_end [num_tiles] i32.
"""

import taichi as ti

CULLED_KEY = 0x7FFFFFFF  # above every finite positive float's bit pattern


@ti.kernel
def depth_keys(depths: ti.types.ndarray(dtype=ti.f32, ndim=1), radii: ti.types.ndarray(dtype=ti.i32, ndim=1),
               keys: ti.types.ndarray(dtype=ti.i32, ndim=1), values: ti.types.ndarray(dtype=ti.i32, ndim=1)):
    for i in depths:
        keys[i] = CULLED_KEY
        if radii[i] > 0:
            keys[i] = ti.bit_cast(depths[i], ti.i32)
        values[i] = i


@ti.kernel
def gather_counts(order: ti.types.ndarray(dtype=ti.i32, ndim=1), tile_counts: ti.types.ndarray(dtype=ti.i32, ndim=1),
                  counts_sorted: ti.types.ndarray(dtype=ti.i32, ndim=1)):
    for k in order:
        counts_sorted[k] = tile_counts[order[k]]


@ti.kernel
def emit_intersections(order: ti.types.ndarray(dtype=ti.i32, ndim=1), offsets: ti.types.ndarray(dtype=ti.i32, ndim=1),
                       counts_sorted: ti.types.ndarray(dtype=ti.i32, ndim=1),
                       tile_rect: ti.types.ndarray(dtype=ti.math.ivec4, ndim=1), tiles_x: ti.i32,
                       isect_tiles: ti.types.ndarray(dtype=ti.i32, ndim=1),
                       isect_ids: ti.types.ndarray(dtype=ti.i32, ndim=1)):
    for k in order:
        if counts_sorted[k] > 0:
            g = order[k]
            rect = tile_rect[g]
            pos = offsets[k]
            for ty in range(rect[1], rect[3] + 1):
                for tx in range(rect[0], rect[2] + 1):
                    isect_tiles[pos] = ty * tiles_x + tx
                    isect_ids[pos] = g
                    pos += 1


@ti.kernel
def tile_ranges(isect_tiles: ti.types.ndarray(dtype=ti.i32, ndim=1),
                tile_start: ti.types.ndarray(dtype=ti.i32, ndim=1), tile_end: ti.types.ndarray(dtype=ti.i32, ndim=1)):
    m = isect_tiles.shape[0]
    for k in isect_tiles:
        t = isect_tiles[k]
        if k == 0 or isect_tiles[k - 1] != t:
            tile_start[t] = k
        if k == m - 1 or isect_tiles[k + 1] != t:
            tile_end[t] = k + 1
