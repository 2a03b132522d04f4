"""The evaluation loop of a trained avatar: PSNR / SSIM / LPIPS on whole images and on the mouth and
eye regions (method.md §13, the official metrics.py convention)."""

from __future__ import annotations

import math
import time

import numpy as np
import torch
import torch.nn.functional as F

from ..losses.metrics import lpips_metric, psnr, ssim_metric
from ..training.regions import region_box

__all__ = ["evaluate_views", "REGION_SETS", "METRIC_CONVENTION"]

REGION_SETS = {"mouth": ("lips", "teeth"), "eyes": ("eye_region",)}

METRIC_CONVENTION = ("full images with the training background included, no masks; render clamped to [0,1] "
                     "and quantised to 8 bit like the PNGs of the official metrics.py; PSNR data range 1; "
                     "SSIM 11x11 Gaussian (sigma 1.5); LPIPS v0.1 AlexNet with {range} input; regions: "
                     "padded bounding box of the visible region mesh faces (mouth = lips + teeth, eyes = "
                     "eye_region), LPIPS on the crop resized to 64x64")


@torch.no_grad()
def evaluate_views(avatar, views: list, lpips_input_range: str | None = None, progress=None) -> dict:
    """Self-reenactment metrics of `views` (tracked/fine-tuned table rows, the views' cameras).

    Returns:
        {"frames": [{"timestep", "psnr", "ssim", "lpips", "mouth_psnr", ..., "eyes_lpips"}],
         "mean": {metric: mean over frames (None when unavailable)}, "convention": str, "fps": float}
    """
    rng = lpips_input_range or avatar.config.quirks.lpips_input_range
    frames, seconds = [], 0.0
    for view in views:
        t0 = time.perf_counter()
        out = avatar.render(view.timestep, view.viewmat, view.K, view.width, view.height)
        img = (out.image.clamp(0, 1) * 255).round().permute(2, 0, 1) / 255.0
        seconds += time.perf_counter() - t0
        gt = view.image.to(avatar.device).float() / 255.0
        pairs = [("", img, gt)]
        for name, regions in REGION_SETS.items():
            box = region_box(avatar.scene, view, regions)
            if box is not None:
                r0, r1, c0, c1 = box
                pairs.append((name + "_", img[:, r0:r1, c0:c1], gt[:, r0:r1, c0:c1]))
        rec = {"timestep": view.timestep}
        for prefix, a, b in pairs:
            rec[prefix + "psnr"] = float(psnr(a, b))
            rec[prefix + "ssim"] = float(ssim_metric(a, b))
            if prefix:
                a, b = (F.interpolate(x[None], size=(64, 64), mode="bilinear", align_corners=False)[0] for x in (a, b))
            lp = lpips_metric(a, b, net="alex", lpips_input_range=rng)
            rec[prefix + "lpips"] = None if lp is None else float(lp)
        frames.append(rec)
        if progress is not None:
            progress()
    keys = [p + m for p in ("", *(n + "_" for n in REGION_SETS)) for m in ("psnr", "ssim", "lpips")]
    mean = {}
    for k in keys:
        vals = [f[k] for f in frames if f.get(k) is not None and math.isfinite(f[k])]
        mean[k] = float(np.mean(vals)) if vals else None
    return {"frames": frames, "mean": mean, "convention": METRIC_CONVENTION.format(range=rng),
            "lpips_net": "alex", "lpips_input_range": rng, "fps": len(views) / max(seconds, 1e-9)}
