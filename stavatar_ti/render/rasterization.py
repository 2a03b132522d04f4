"""`stavatar_ti.rasterize`: the differentiable Taichi Gaussian rasterizer (contract in
docs/architecture.md Sec. 3, fixed)."""

from __future__ import annotations

import os
from dataclasses import dataclass

import torch

from .autograd import Composite, Project, SHColors, bin_gaussians
from .runtime import ensure_device
from .sorting import _SERIAL_SCAN, exclusive_scan
from .validation import check_positive_int, check_tensor


@dataclass
class RasterOutput:
    """Result of `rasterize` (N Gaussians, H x W image, all on the input device).

    image        [H,W,3] float32, colour + T_final * background (HWC, linear [0,1] if inputs are)
    alpha        [H,W] float32, 1 - final transmittance
    depths       [N] float32, camera-space z (no gradient)
    radii        [N] int32, screen radius in pixels, 0 = culled
    means2d      [N,2] float32, projected centres in pixels (0 for culled); a non-leaf tensor:
                 call `means2d.retain_grad()` before backward to read dL/dmeans2d (pixel units;
                 multiply by (W/2, H/2) to compare with 3DGS's NDC-unit threshold 2e-4)
    pixel_count  [N] int32, C_i: composited (pixel, Gaussian) pairs per Gaussian (no gradient)
    blend_weight [N] float32, A_i: sum of T*alpha over those pairs (no gradient)
    """

    image: torch.Tensor
    alpha: torch.Tensor
    depths: torch.Tensor
    radii: torch.Tensor
    means2d: torch.Tensor
    pixel_count: torch.Tensor
    blend_weight: torch.Tensor


_VALUE_MESSAGES = ("scales: all entries must be > 0 (pass activated, linear scales)",
                   "opacities: all entries must be in [0, 1] (pass activated opacities)",
                   "quats: a row has zero norm", "K: focal lengths fx, fy must be > 0")


def _check_inputs(means, quats, scales, opacities, colors, sh, sh_degree, viewmat, K, width, height,
                  background, near_plane):
    """Check types, shapes, dtypes, devices and scalars (no host sync): what the kernels' memory
    safety depends on. Return (width, height, sh_degree, background)."""
    check_tensor(means, "means", (None, 3))
    dev, n = means.device, means.shape[0]
    check_tensor(quats, "quats", (n, 4), device=dev)
    check_tensor(scales, "scales", (n, 3), device=dev)
    check_tensor(opacities, "opacities", (n,), device=dev)
    check_tensor(viewmat, "viewmat", (4, 4), device=dev)
    check_tensor(K, "K", (3, 3), device=dev)
    width = check_positive_int(width, "width")
    height = check_positive_int(height, "height")
    if (colors is None) == (sh is None):
        raise ValueError("colors: pass exactly one of colors [N,3] or sh [N,K,3]")
    if colors is not None:
        check_tensor(colors, "colors", (n, 3), device=dev)
        if sh_degree is not None:
            raise ValueError("sh_degree: only meaningful together with sh")
    else:
        check_tensor(sh, "sh", (n, None, 3), device=dev)
        num_k = sh.shape[1]
        if sh_degree is None:
            sh_degree = round(num_k ** 0.5) - 1
            if (sh_degree + 1) ** 2 != num_k or not 0 <= sh_degree <= 3:
                raise ValueError(f"sh: {num_k} coefficients is not (d+1)^2 for a degree d in 0..3")
        if isinstance(sh_degree, bool) or not isinstance(sh_degree, int) or not 0 <= sh_degree <= 3:
            raise ValueError(f"sh_degree: expected an int in 0..3, got {sh_degree!r}")
        if num_k < (sh_degree + 1) ** 2:
            raise ValueError(f"sh: degree {sh_degree} needs {(sh_degree + 1) ** 2} coefficients, got {num_k}")
    if background is None:
        background = torch.zeros(3, device=dev)
    check_tensor(background, "background", (3,), device=dev)
    try:
        near_plane = float(near_plane)
    except (TypeError, ValueError):
        raise ValueError(f"near_plane: expected a positive float, got {near_plane!r}") from None
    if not near_plane > 0.0 or near_plane == float("inf"):
        raise ValueError(f"near_plane: expected a positive finite float, got {near_plane}")
    ensure_device(dev, "means")
    return width, height, sh_degree, background


def _value_checks(named: dict, scales, opacities, quats, K) -> tuple[list[str], torch.Tensor]:
    """The value checks as one bool tensor on the inputs' device (no host sync) and their messages,
    in the order they are reported: NaN/inf per tensor, then `_VALUE_MESSAGES`."""
    present = [(name, t) for name, t in named.items() if t is not None and t.numel() > 0]
    flags = [torch.isfinite(t.detach()).all() for _, t in present]
    scales, opacities, quats, K = (t.detach() for t in (scales, opacities, quats, K))
    flags += [  # .all() of an empty tensor is True, so N = 0 passes
        (scales > 0).all(),
        ((opacities >= 0) & (opacities <= 1)).all(),
        (quats.norm(dim=-1) > 0).all(),
        (K[0, 0] > 0) & (K[1, 1] > 0),
    ]
    messages = [f"{name}: contains NaN or inf" for name, _ in present] + list(_VALUE_MESSAGES)
    return messages, torch.stack(flags)


def validation_enabled(validate: bool) -> bool:
    """`validate`, forced on by the debug mode (environment STAVATAR_DEBUG=1)."""
    return bool(validate) or os.environ.get("STAVATAR_DEBUG") == "1"


def rasterize(means, quats, scales, opacities, colors=None, *, sh=None, sh_degree=None, viewmat, K, width,
              height, background=None, near_plane=0.01, validate=True) -> RasterOutput:
    """Render N 3D Gaussians into one pinhole camera with the Taichi tile rasterizer.

    Args:
        means: [N,3] float32, world coordinates (FLAME metres in this project).
        quats: [N,4] float32, rotations (w,x,y,z); normalised inside, norm must be > 0.
        scales: [N,3] float32, linear standard deviations (post-activation), > 0.
        opacities: [N] float32 in [0,1] (post-activation).
        colors: [N,3] float32 post-activation RGB, or None when `sh` is given.
        sh: [N,K,3] float32 SH coefficients (3DGS basis); uses the first (sh_degree+1)^2.
        sh_degree: 0..3; default sqrt(K)-1. colour = max(SH(dir)+0.5, 0), dir = normalise(mean - campos).
        viewmat: [4,4] float32 world->camera, OpenCV axes (x right, y down, z forward).
        K: [3,3] float32 pixel intrinsics [[fx,0,cx],[0,fy,cy],[0,0,1]]; principal point honoured.
        width, height: image size in pixels (positive ints, any value, 1x1 included).
        background: [3] float32 colour added with the final transmittance, None = black.
        near_plane: Gaussians with camera z < near_plane are culled (scene units).
        validate: check the values (NaN/inf, scales > 0, opacities in [0,1], quats != 0, fx, fy > 0).
            The checks are device reductions read back together with the intersection count in the
            forward's one host sync, so they add no sync; False skips the reductions (the trainer
            checks its first step only). Without them bad values are memory-safe (culled, or NaN
            pixels) but not reported. STAVATAR_DEBUG=1 forces validation on everywhere.
            Types, shapes, dtypes and devices are always checked.
    Returns:
        RasterOutput (see its docstring). Gradients flow to means, quats, scales, opacities,
        colors or sh, and background, through torch autograd (also from autograd worker threads);
        none to viewmat or K.
    Raises:
        ValueError: wrong type/shape/dtype/device, NaN or inf, non-positive scales or focal
            lengths, opacities outside [0,1], a zero quaternion (these five with `validate`), both
            or neither of colors/sh, a bad sh_degree, tensors on a device other than the one Taichi
            was initialised for, on cuda:N with N != 0, or a non-default current CUDA stream.
        BackendError: Taichi cannot start the backend of the tensors' device (runtime.init).
    Host syncs: exactly one (the intersection count, which sizes the binning buffers).
    Math: 3DGS (Kerbl et al. 2023) EWA splatting and tile compositing with the rules of the
    contract; see kernels/projection.py, kernels/sh.py, kernels/binning.py, kernels/rasterize.py.
    """
    width, height, sh_degree, background = _check_inputs(
        means, quats, scales, opacities, colors, sh, sh_degree, viewmat, K, width, height, background, near_plane)
    means, quats, scales, opacities, viewmat, K, background = (
        t.contiguous() for t in (means, quats, scales, opacities, viewmat, K, background))
    viewmat_d, K_d = viewmat.detach(), K.detach()  # no gradient to the camera (documented)
    means2d, conics, depths, radii, tile_rect, tile_counts = Project.apply(
        means, quats, scales, viewmat_d, K_d, width, height, near_plane)
    rgb = colors if sh is None else SHColors.apply(sh.contiguous(), means, viewmat_d, sh_degree)
    # the forward's one host sync: the intersection count, with the value checks riding along
    total = tile_counts.sum(dtype=torch.int64).reshape(1)
    if validation_enabled(validate):
        messages, flags = _value_checks({"means": means, "quats": quats, "scales": scales, "opacities": opacities,
                                         "colors": colors, "sh": sh, "viewmat": viewmat, "K": K,
                                         "background": background}, scales, opacities, quats, K)
        host = torch.cat([total, flags.to(torch.int64)]).tolist()
        for ok, message in zip(host[1:], messages):
            if not ok:
                raise ValueError(message)
    else:
        host = total.tolist()
    tile_start, tile_end, isect_ids = bin_gaussians(depths, radii, tile_rect, tile_counts, width, height,
                                                    num_intersections=host[0])
    image, alpha, pixel_count, blend_weight = Composite.apply(
        means2d, conics, opacities, rgb.contiguous(), background, tile_start, tile_end, isect_ids, width, height)
    return RasterOutput(image=image, alpha=alpha, depths=depths, radii=radii, means2d=means2d,
                        pixel_count=pixel_count, blend_weight=blend_weight)


def warm_up(device, sh_degrees=range(4)) -> list[int]:
    """Compile every kernel instance a training run launches, before it starts.

    Renders a 4-Gaussian 16x16 scene forward and backward once per SH degree: the SH kernels are
    templates over the degree (kernels/sh.py), so without this each degree step of the schedule
    compiles two new instances mid-training (seconds on CUDA). The projection, sort, scan, binning
    and compositing kernels compile on the first degree.

    Args:
        device: torch device (or name) the run renders on; initialises Taichi for it if needed.
        sh_degrees: the degrees to compile (each in 0..3).
    Returns:
        the degrees rendered, in order.
    Raises:
        ValueError: a degree outside 0..3, or a device `rasterize` rejects.
    """
    device = torch.device(device)
    degrees = [int(d) for d in sh_degrees]
    if any(not 0 <= d <= 3 for d in degrees):
        raise ValueError(f"sh_degrees: expected degrees in 0..3, got {degrees}")
    g = torch.Generator().manual_seed(0)
    means = torch.tensor([[0.0, 0.0, 2.0], [0.1, -0.1, 2.5], [-0.1, 0.05, 3.0], [0.05, 0.1, 2.2]])
    scene = {"quats": torch.randn(4, 4, generator=g), "scales": torch.full((4, 3), 0.05),
             "opacities": torch.full((4,), 0.5), "viewmat": torch.eye(4),
             "K": torch.tensor([[16.0, 0.0, 8.0], [0.0, 16.0, 8.0], [0.0, 0.0, 1.0]])}
    scene = {k: v.to(device) for k, v in scene.items()}
    for degree in degrees:
        leaves = {"means": means.to(device).requires_grad_(),
                  "sh": (0.1 * torch.randn(4, (degree + 1) ** 2, 3, generator=g)).to(device).requires_grad_()}
        out = rasterize(**leaves, **scene, sh_degree=degree, width=16, height=16, validate=False)
        out.image.sum().backward()
    # scans longer than the serial threshold take the chunked path (one more kernel)
    exclusive_scan(torch.ones(_SERIAL_SCAN[device.type] + 1, dtype=torch.int32, device=device))
    return degrees
