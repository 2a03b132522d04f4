"""UV-space machinery: layout rasterisation, position / displacement maps, per-Gaussian UV
sampling and bilinear lookup (method.md Sec. 4)."""

from .lookup import lookup_uv
from .maps import normalize_minmax, uv_displacement_map, uv_position_map, uv_region_masks
from .raster import UVRaster, interpolate_attributes, rasterize_uv
from .sampling import sample_gaussian_uvs

__all__ = ["UVRaster", "interpolate_attributes", "lookup_uv", "normalize_minmax", "rasterize_uv",
           "sample_gaussian_uvs", "uv_displacement_map", "uv_position_map", "uv_region_masks"]
