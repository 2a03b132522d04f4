"""stavatar_ti: STAvatar monocular 3D Gaussian head avatars on Taichi + PyTorch.

Public rasterizer API (docs/architecture.md Sec. 3):
    stavatar_ti.rasterize(...) -> stavatar_ti.RasterOutput
    stavatar_ti.init(arch="cpu" | "cuda")   # optional; otherwise chosen from the tensors' device
"""

from .rasterization import RasterOutput, rasterize
from .runtime import init

__version__ = "0.1.0"
__all__ = ["RasterOutput", "rasterize", "init", "__version__"]
