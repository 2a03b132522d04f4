"""Image-space head-model regions and the per-frame region metrics of the evaluation.

The posed mesh of a view is drawn once with the independent z-buffer renderer
(stavatar_ti.flame.meshrender); each pixel gets the region of its visible face.  Two kinds of region:

* **box** regions (``mouth`` = lips + teeth, ``eyes`` = eye_region): a face belongs when it touches
  a region vertex; metrics on the padded bounding box of those pixels, so SSIM and LPIPS see image
  structure (the convention of the earlier "mouth" numbers).
* **mask** regions, the frequently occluded parts Temporal ADC targets (STAvatar Sec. 3.3):
  ``mouth_interior`` = teeth + the mouth-cavity pocket with the inner lip surfaces (seen only when
  the mouth opens) and ``eyelid`` = the lid skin that a blink moves (it covers the eye when closed).
  A face belongs when all its vertices do (so outer-lip faces that merely touch the lip line are
  out).  PSNR on the mask pixels only; LPIPS on the padded box of the mask with every pixel outside
  the mask taken from the ground truth in both images (so only the region differs), resized to
  64x64.  A frame counts for a mask region only when at least `min_visible_fraction` of its pixels
  (and 4 px) show the region; means are over those frames only.

Heads without a region's vertex sets (e.g. a FLAME file: only ``teeth``) give ``None`` for it.
"""

from __future__ import annotations

import math

import numpy as np
import torch
import torch.nn.functional as F

from ..flame.meshrender import render_mesh
from ..losses.metrics import lpips_metric, psnr, ssim_metric

# name -> (vertex region sets of the head model, kind)
REGION_SETS = {
    "mouth": (("lips", "teeth"), "box"),
    "eyes": (("eye_region",), "box"),
    "mouth_interior": (("mouth_interior", "teeth"), "mask"),
    "eyelid": (("eyelids",), "mask"),
}
MIN_VISIBLE_FRACTION = 1e-3
MIN_VISIBLE_PIXELS = 4
CROP_SIZE = 64


def _face_membership(flame, names, rule: str) -> torch.Tensor | None:
    """[F] bool: faces of the head model in the union of vertex sets `names` ("any" / "all" vertices)."""
    present = [n for n in names if n in flame.regions]
    if not present:
        return None
    member = torch.zeros(flame.num_vertices, dtype=torch.bool)
    for name in present:
        member[flame.regions[name].cpu()] = True
    inside = member[flame.faces.cpu()]
    return inside.any(1) if rule == "any" else inside.all(1)


@torch.no_grad()
def region_masks(scene, view, names=tuple(REGION_SETS)) -> dict:
    """Per-pixel masks of the visible regions of one view.

    Args:
        scene: training Scene (its `flame` and `posed_vertices(timestep)`, the tracked parameters).
        view: a view with timestep, viewmat [4,4], K [3,3], width, height.
        names: keys of REGION_SETS.
    Returns:
        {name: [H,W] bool CPU tensor, or None when the head model has none of the region's sets}.
    Raises:
        KeyError: a name not in REGION_SETS.
    """
    fl = scene.flame
    verts = scene.posed_vertices(view.timestep)[0].cpu()
    r = render_mesh(verts, fl.faces.cpu(), view.viewmat.cpu(), view.K.cpu(), view.width, view.height)
    hit = r.face_id >= 0
    fid = r.face_id.clamp_min(0)
    out = {}
    for name in names:
        sets, kind = REGION_SETS[name]
        faces_in = _face_membership(fl, sets, "any" if kind == "box" else "all")
        out[name] = None if faces_in is None else hit & faces_in[fid]
    return out


def mask_box(mask: torch.Tensor, pad: int = 4):
    """(row0, row1, col0, col1) half-open bounding box of a [H,W] bool mask padded by `pad` px and
    clipped to the image, or None for an empty mask."""
    if mask is None or not mask.any():
        return None
    rows = torch.nonzero(mask.any(1)).squeeze(1)
    cols = torch.nonzero(mask.any(0)).squeeze(1)
    H, W = mask.shape
    return (max(0, int(rows[0]) - pad), min(H, int(rows[-1]) + 1 + pad),
            max(0, int(cols[0]) - pad), min(W, int(cols[-1]) + 1 + pad))


@torch.no_grad()
def region_box(scene, view, regions=("lips", "teeth"), pad: int = 4):
    """(row0, row1, col0, col1) half-open bounding box of the visible pixels of the faces touching
    the vertex sets `regions`, padded by `pad` px, or None (uses the view's tracked parameters)."""
    fl = scene.flame
    faces_in = _face_membership(fl, regions, "any")
    if faces_in is None:
        return None
    verts = scene.posed_vertices(view.timestep)[0].cpu()
    r = render_mesh(verts, fl.faces.cpu(), view.viewmat.cpu(), view.K.cpu(), view.width, view.height)
    return mask_box((r.face_id >= 0) & faces_in[r.face_id.clamp_min(0)], pad)


def _crop64(x: torch.Tensor) -> torch.Tensor:
    return F.interpolate(x[None], size=(CROP_SIZE, CROP_SIZE), mode="bilinear", align_corners=False)[0]


def masked_psnr(img: torch.Tensor, gt: torch.Tensor, mask: torch.Tensor) -> float:
    """PSNR (data range 1) over the pixels of `mask` [H,W] bool only; img, gt [3,H,W] in [0,1]."""
    m = mask.to(img.device)
    mse = ((img.double() - gt.double()) ** 2)[:, m].mean()
    return float(20.0 * torch.log10(1.0 / torch.sqrt(mse)))


@torch.no_grad()
def frame_metrics(img: torch.Tensor, gt: torch.Tensor, masks: dict, lpips_input_range: str = "[-1,1]",
                  net: str = "alex") -> dict:
    """Whole-image and region metrics of one frame.

    Args:
        img, gt: [3,H,W] float in [0,1] (render already clamped / quantised as the caller wants).
        masks: region_masks(...) of the frame's view.
        lpips_input_range, net: see losses.metrics.lpips_metric.
    Returns:
        {"psnr", "ssim", "lpips", then per region "<name>_psnr", "<name>_ssim" (box regions only),
        "<name>_lpips", "<name>_pixels" (int, region pixels), "<name>_visible" (bool)}; a region's
        metrics are None when it is not visible in the frame; "lpips" entries are None without LPIPS
        weights.
    """
    def lp(a, b):
        v = lpips_metric(a, b, net=net, lpips_input_range=lpips_input_range)
        return None if v is None else float(v)

    H, W = gt.shape[-2:]
    rec = {"psnr": float(psnr(img, gt)), "ssim": float(ssim_metric(img, gt)), "lpips": lp(img, gt)}
    need = max(MIN_VISIBLE_PIXELS, math.ceil(MIN_VISIBLE_FRACTION * H * W))
    for name, mask in masks.items():
        kind = REGION_SETS[name][1]
        pixels = 0 if mask is None else int(mask.sum())
        visible = pixels >= (1 if kind == "box" else need)
        rec[name + "_pixels"], rec[name + "_visible"] = pixels, visible
        keys = ("psnr", "ssim", "lpips") if kind == "box" else ("psnr", "lpips")
        for k in keys:
            rec[f"{name}_{k}"] = None
        if not visible:
            continue
        r0, r1, c0, c1 = mask_box(mask)
        if kind == "box":
            a, b = img[:, r0:r1, c0:c1], gt[:, r0:r1, c0:c1]
            rec[name + "_psnr"], rec[name + "_ssim"] = float(psnr(a, b)), float(ssim_metric(a, b))
        else:
            m = mask.to(img.device)
            rec[name + "_psnr"] = masked_psnr(img, gt, m)
            a = torch.where(m, img, gt)[:, r0:r1, c0:c1]
            b = gt[:, r0:r1, c0:c1]
        rec[name + "_lpips"] = lp(_crop64(a), _crop64(b))
    return rec


def mean_over_visible(frames: list[dict]) -> dict:
    """Means of every numeric metric over the frames where it is defined (finite, not None); for each
    region also "<name>_frames", the number of frames it was visible in.  Empty input -> {}."""
    out = {}
    keys = [k for k in (frames[0] if frames else {}) if k != "timestep" and not k.endswith(("_pixels", "_visible"))]
    for k in keys:
        vals = [f[k] for f in frames if isinstance(f.get(k), (int, float)) and math.isfinite(f[k])]
        out[k] = float(np.mean(vals)) if vals else None
    for k in (frames[0] if frames else {}):
        if k.endswith("_visible"):
            out[k[:-len("_visible")] + "_frames"] = int(sum(bool(f[k]) for f in frames))
    return out
