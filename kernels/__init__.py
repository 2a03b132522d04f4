"""Pure Taichi kernels of stavatar_ti (installed as the subpackage `stavatar_ti.kernels`).

Nothing here imports torch or the rest of the project: every kernel takes `ti.types.ndarray`
arguments (torch tensors are passed zero-copy by the callers in `stavatar_ti`), and every module
docstring states its math and shapes. One module per op family:
    projection  EWA projection (forward, backward)
    sh          spherical-harmonics colour (forward, backward)
    scan        exclusive prefix sum
    sort        stable LSD radix sort of (key, value) pairs
    binning     depth keys, tile intersection lists, tile ranges
    rasterize   tile compositing with per-Gaussian statistics (forward, backward)
    uv_raster   UV-layout rasterisation (face id + barycentrics per texel)
    error_gather  per-Gaussian fused perceptual error (integral image + window gather)
    density_stats  Temporal ADC statistics in sparse fields (pointer + bitmasked SNodes)
"""

from . import binning, common, density_stats, error_gather, projection, rasterize, scan, sh, sort, uv_raster

__all__ = ["binning", "common", "density_stats", "error_gather", "projection", "rasterize", "scan", "sh", "sort",
           "uv_raster"]
