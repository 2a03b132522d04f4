"""The evaluation loop of a trained avatar: PSNR / SSIM / LPIPS on whole images and on the mouth and
eye regions (method.md §13, the official metrics.py convention)."""

from __future__ import annotations

import time

import torch

from ..training.regions import REGION_SETS, frame_metrics, mean_over_visible, region_masks

__all__ = ["evaluate_views", "REGION_SETS", "METRIC_CONVENTION"]

METRIC_CONVENTION = ("full images with the training background included, no masks; render clamped to [0,1] "
                     "and quantised to 8 bit like the PNGs of the official metrics.py; PSNR data range 1; "
                     "SSIM 11x11 Gaussian (sigma 1.5); LPIPS v0.1 AlexNet with {range} input; regions "
                     "(stavatar_ti.training.regions): mouth / eyes = padded bounding box of the visible "
                     "region mesh faces (mouth = lips + teeth, eyes = eye_region); mouth_interior (teeth, "
                     "mouth cavity, inner lips) / eyelid (lid skin moved by a blink) = PSNR on the visible "
                     "region pixels, LPIPS on their padded box with the pixels outside the region taken "
                     "from the ground truth; region LPIPS on the crop resized to 64x64; region means over "
                     "the frames where the region is visible")


@torch.no_grad()
def evaluate_views(avatar, views: list, lpips_input_range: str | None = None, progress=None) -> dict:
    """Self-reenactment metrics of `views` (tracked/fine-tuned table rows, the views' cameras).

    Returns:
        {"frames": [{"timestep", "psnr", "ssim", "lpips", "mouth_psnr", ..., "eyelid_lpips",
         "<region>_pixels", "<region>_visible"}] (training.regions.frame_metrics),
         "mean": {metric: mean over the frames where it is defined (None when never), plus
         "<region>_frames"}, "convention": str, "fps": float}
    """
    rng = lpips_input_range or avatar.config.quirks.lpips_input_range
    frames, seconds = [], 0.0
    for view in views:
        t0 = time.perf_counter()
        out = avatar.render(view.timestep, view.viewmat, view.K, view.width, view.height)
        img = (out.image.clamp(0, 1) * 255).round().permute(2, 0, 1) / 255.0
        seconds += time.perf_counter() - t0
        gt = view.image.to(avatar.device).float() / 255.0
        rec = {"timestep": view.timestep}
        rec.update(frame_metrics(img, gt, region_masks(avatar.scene, view), rng))
        frames.append(rec)
        if progress is not None:
            progress()
    return {"frames": frames, "mean": mean_over_visible(frames), "convention": METRIC_CONVENTION.format(range=rng),
            "lpips_net": "alex", "lpips_input_range": rng, "fps": len(views) / max(seconds, 1e-9)}


def forgetting(phases: list[dict]) -> list[dict]:
    """Per-cluster forgetting from a run's `results.json["cluster_phases"]` (train.cluster_phase_eval):
    rows j = 0..K (after cluster phase j, the last row after the all-frames phase), each with "psnr"
    [K] in dB. For cluster k: "own" = its PSNR at the end of its own phase (row k), "final" = the
    last row's, "forgotten" = own - final (dB, positive: lost after its phase; the continual-learning
    forgetting measure) and "peak" = the best of rows k..K.

    Raises:
        ValueError: fewer than K + 1 rows or a row whose "psnr" does not have K entries.
    """
    if not phases:
        raise ValueError("cluster_phases: empty (train with train.cluster_phase_eval=true)")
    k = len(phases[0]["psnr"])
    if len(phases) < k + 1 or any(len(p["psnr"]) != k for p in phases):
        raise ValueError(f"cluster_phases: expected {k + 1} rows of {k} values")
    final = phases[-1]["psnr"]
    return [{"cluster": c, "own": phases[c]["psnr"][c], "final": final[c],
             "forgotten": phases[c]["psnr"][c] - final[c], "peak": max(p["psnr"][c] for p in phases[c:])}
            for c in range(k)]
