"""Image losses of STAvatar (method.md §8) and the fused perceptual error map (§10.4).

Conventions: images are float tensors in [0, 1], ``[C,H,W]`` or ``[B,C,H,W]`` (predicted first,
ground truth second); both arguments must have the same shape, dtype and device. Full images are
used (white background included), no masks.

Three SSIM variants exist on purpose (method.md §17 item 9):
    * :func:`ssim` / :func:`ssim_map`: 11x11 Gaussian window, sigma 1.5, C1 = 0.01^2, C2 = 0.03^2,
      zero ("same") padding, mean over pixels and channels. Same values as fused-ssim / 3DGS's
      ``ssim``; differentiable (used by the D-SSIM loss term and by the SSIM metric).
    * :func:`box_ssim_map`: 11x11 uniform window, zero padding, 1e-8 added to the denominator
      (the fused perceptual error of Temporal ADC, no gradient needed).

The LPIPS term is :func:`lpips_loss` (pure-torch LPIPS of :mod:`stavatar_ti.losses.lpips`), with
the [0, 1] / [-1, 1] input convention chosen explicitly.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from .lpips import get_lpips, unit_images_to_lpips_input

__all__ = ["C1", "C2", "gaussian_window", "ssim_map", "ssim", "box_ssim_map", "fused_error_map",
           "l1_loss", "photometric_loss", "lpips_loss"]

C1 = 0.01 ** 2
C2 = 0.03 ** 2


def _pair(img: torch.Tensor, ref: torch.Tensor, name: str = "img") -> tuple[torch.Tensor, torch.Tensor, bool]:
    """Check the pair and return it as BCHW plus whether the input was CHW."""
    if not isinstance(img, torch.Tensor) or not isinstance(ref, torch.Tensor):
        raise ValueError(f"{name}: expected torch.Tensors, got {type(img).__name__} and {type(ref).__name__}")
    if img.shape != ref.shape:
        raise ValueError(f"{name}: shape {list(img.shape)} differs from ref {list(ref.shape)}")
    if img.ndim not in (3, 4):
        raise ValueError(f"{name}: expected [C,H,W] or [B,C,H,W], got {list(img.shape)}")
    if not img.is_floating_point() or img.dtype != ref.dtype:
        raise ValueError(f"{name}: expected floating tensors of one dtype, got {img.dtype} and {ref.dtype}")
    if img.device != ref.device:
        raise ValueError(f"{name}: on {img.device}, but ref is on {ref.device}")
    chw = img.ndim == 3
    return (img[None], ref[None], True) if chw else (img, ref, False)


def gaussian_window(size: int = 11, sigma: float = 1.5, dtype=torch.float32, device=None) -> torch.Tensor:
    """Normalised 1-D Gaussian ``g[i] ∝ exp(-(i - size//2)^2 / (2 sigma^2))``, i = 0..size-1."""
    x = torch.arange(size, dtype=torch.float64) - (size // 2)
    g = torch.exp(-(x * x) / (2.0 * sigma * sigma))
    return (g / g.sum()).to(dtype=dtype, device=device)


def _filter(x: torch.Tensor, kernel_1d: torch.Tensor) -> torch.Tensor:
    """Depthwise separable 2-D correlation of BCHW `x` with ``outer(k, k)``, zero padding k//2.

    Equal to a k x k depthwise conv with zero padding ("same" size): the row pass only sees zeros
    outside the image, so the column pass of those rows adds zeros as well.
    """
    c = x.shape[1]
    k = kernel_1d.shape[0]
    w = kernel_1d.to(dtype=x.dtype, device=x.device)
    x = F.conv2d(x, w.view(1, 1, k, 1).expand(c, 1, k, 1), padding=(k // 2, 0), groups=c)
    return F.conv2d(x, w.view(1, 1, 1, k).expand(c, 1, 1, k), padding=(0, k // 2), groups=c)


def _ssim_terms(x: torch.Tensor, y: torch.Tensor, kernel_1d: torch.Tensor, eps: float) -> torch.Tensor:
    c = x.shape[1]
    stats = _filter(torch.cat([x, y, x * x, y * y, x * y], dim=1), kernel_1d)
    mu_x, mu_y, e_xx, e_yy, e_xy = stats.split(c, dim=1)
    mu_xx, mu_yy, mu_xy = mu_x * mu_x, mu_y * mu_y, mu_x * mu_y
    s_xx, s_yy, s_xy = e_xx - mu_xx, e_yy - mu_yy, e_xy - mu_xy
    num = (2.0 * mu_xy + C1) * (2.0 * s_xy + C2)
    den = (mu_xx + mu_yy + C1) * (s_xx + s_yy + C2)
    return num / (den + eps) if eps else num / den


def ssim_map(img: torch.Tensor, ref: torch.Tensor, window: int = 11, sigma: float = 1.5) -> torch.Tensor:
    """Per-pixel, per-channel Gaussian-window SSIM, same shape as the input (differentiable).

    Window: ``window`` x ``window`` separable Gaussian with std ``sigma`` (normalised), zero padding
    ``window//2``, C1 = 0.01^2, C2 = 0.03^2 (data range 1), as fused-ssim and 3DGS.
    """
    x, y, chw = _pair(img, ref)
    if window < 1 or window % 2 == 0:
        raise ValueError(f"window: expected a positive odd size, got {window}")
    g = gaussian_window(window, sigma, dtype=torch.float64)
    out = _ssim_terms(x, y, g, eps=0.0)
    return out[0] if chw else out


def ssim(img: torch.Tensor, ref: torch.Tensor, window: int = 11, sigma: float = 1.5) -> torch.Tensor:
    """Gaussian-window SSIM averaged over all pixels, channels and images: a 0-dim tensor.

    The value the D-SSIM loss term uses (fused-ssim conventions, see :func:`ssim_map`).
    """
    return ssim_map(img, ref, window, sigma).mean()


def box_ssim_map(img: torch.Tensor, ref: torch.Tensor, window: int = 11) -> torch.Tensor:
    """Per-pixel, per-channel SSIM with a uniform ``window`` x ``window`` window (method.md §10.4).

    Local means/variances are box averages over the window with zero padding (the divisor is always
    window^2, also at the borders); C1 = 0.01^2, C2 = 0.03^2; the denominator gets +1e-8.
    Same shape as the input.
    """
    x, y, chw = _pair(img, ref)
    if window < 1 or window % 2 == 0:
        raise ValueError(f"window: expected a positive odd size, got {window}")
    box = torch.full((window,), 1.0 / window, dtype=torch.float64)
    out = _ssim_terms(x, y, box, eps=1e-8)
    return out[0] if chw else out


@torch.no_grad()
def fused_error_map(img: torch.Tensor, ref: torch.Tensor, lambda_fpe: float = 0.2) -> torch.Tensor:
    """Fused perceptual error map E(p) of method.md §10.4 (no gradient).

    E(p) = (1 - lambda_fpe) * mean_c |I - G| + lambda_fpe * mean_c |(1 - SSIM_box(p)) / 2|,
    with SSIM_box from :func:`box_ssim_map`. Returns ``[H,W]`` for CHW input, ``[B,H,W]`` for BCHW.
    """
    if not (0.0 <= lambda_fpe <= 1.0):
        raise ValueError(f"lambda_fpe: expected a value in [0, 1], got {lambda_fpe}")
    x, y, chw = _pair(img, ref)
    l1 = (x - y).abs().mean(dim=1)
    dssim = ((1.0 - box_ssim_map(x, y)) / 2.0).abs().mean(dim=1)
    out = (1.0 - lambda_fpe) * l1 + lambda_fpe * dssim
    return out[0] if chw else out


def l1_loss(img: torch.Tensor, ref: torch.Tensor) -> torch.Tensor:
    """mean |I - G| over all pixels, channels and images (0-dim)."""
    x, y, _ = _pair(img, ref)
    return (x - y).abs().mean()


def photometric_loss(img: torch.Tensor, ref: torch.Tensor, lambda_dssim: float = 0.2) -> torch.Tensor:
    """(1 - lambda_dssim) * L1 + lambda_dssim * (1 - SSIM): the L1 and D-SSIM terms of method.md §8.

    With the default lambda_dssim = 0.2 this is 0.8 * mean|I - G| + 0.2 * (1 - SSIM_gauss(I, G)).
    Differentiable; 0-dim.
    """
    if not (0.0 <= lambda_dssim <= 1.0):
        raise ValueError(f"lambda_dssim: expected a value in [0, 1], got {lambda_dssim}")
    return (1.0 - lambda_dssim) * l1_loss(img, ref) + lambda_dssim * (1.0 - ssim(img, ref))


def lpips_loss(img: torch.Tensor, ref: torch.Tensor, net: str = "vgg", lpips_input_range: str = "[-1,1]",
               cache_dir=None) -> torch.Tensor:
    """LPIPS v0.1 term of method.md §8 for images in [0, 1], averaged over the batch (0-dim, differentiable).

    ``lpips_input_range`` (config ``quirks.lpips_input_range``): "[-1,1]" rescales to ``2*x - 1``
    before LPIPS (standard); "[0,1]" feeds the images unchanged (official STAvatar / kiui). The paper
    weights it with lambda_lpips = 0.05 and uses the VGG backbone. The frozen module is shared
    (:func:`stavatar_ti.losses.lpips.get_lpips`); missing weights raise FileNotFoundError.
    """
    x, y, _ = _pair(img, ref)
    mod = get_lpips(net, x.device, lpips_input_range, cache_dir)
    return mod(unit_images_to_lpips_input(x, lpips_input_range),
               unit_images_to_lpips_input(y, lpips_input_range)).mean()
