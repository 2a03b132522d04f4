"""Constants shared by the rasterizer kernels (3DGS values; docs/architecture.md Sec. 3)."""

TILE_SIZE = 16  # pixels per tile side
BLOCK = TILE_SIZE * TILE_SIZE  # pixels per tile
ALPHA_MAX = 0.99  # alpha clamp
ALPHA_MIN = 1.0 / 255.0  # a (pixel, Gaussian) pair below this is skipped
T_EPS = 1e-4  # a pixel stops before the Gaussian that would bring T below this
RADIX_BITS = 8  # digit width of the LSD radix sort
RADIX_BINS = 1 << RADIX_BITS
