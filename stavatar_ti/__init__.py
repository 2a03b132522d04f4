"""stavatar_ti: STAvatar monocular 3D Gaussian head avatars on Taichi + PyTorch.

Public rasterizer API (docs/architecture.md Sec. 3):
    stavatar_ti.rasterize(...) -> stavatar_ti.RasterOutput
    stavatar_ti.init(arch="cpu" | "cuda")   # optional; otherwise chosen from the tensors' device
    stavatar_ti.Avatar.load(OUT)            # a trained avatar (render, reenact, export)
"""

from .render.rasterization import RasterOutput, rasterize
from .render.runtime import init

__version__ = "0.1.0"
__all__ = ["Avatar", "RasterOutput", "rasterize", "init", "__version__"]


def __getattr__(name):
    # lazy: `import stavatar_ti` for the rasterizer does not pull in the training code
    if name == "Avatar":
        from .api import Avatar
        return Avatar
    raise AttributeError(f"module 'stavatar_ti' has no attribute {name!r}")
