"""The torch side of the Taichi Gaussian rasterizer: with `stavatar_ti.kernels` it is the
differentiable rendering framework, and it imports nothing of the avatar code.

    runtime.py        Taichi arch selection, the launch lock
    sorting.py        torch drivers of the scan and radix-sort kernels
    autograd.py       torch.autograd.Functions (Project, SHColors, Composite) and tile binning
    rasterization.py  the public rasterize() and RasterOutput (contract: docs/architecture.md Sec. 3)
    validation.py     shared argument checks
    cameras.py        pinhole cameras: static, look-at, orbits
"""

from .rasterization import RasterOutput, rasterize
from .runtime import init

__all__ = ["RasterOutput", "rasterize", "init"]
