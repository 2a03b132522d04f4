"""Region metrics of the evaluation (stavatar_ti.training.regions): mouth interior and eyelid masks
on the open head, masked PSNR / LPIPS, visibility and the means over visible frames."""

from __future__ import annotations

import math
from types import SimpleNamespace

import numpy as np
import pytest
import torch

from stavatar_ti.flame.model import FlameModel
from stavatar_ti.flame.open_head import EXPRESSION_NAMES, make_open_head
from stavatar_ti.synthetic.generate import make_camera
from stavatar_ti.training import regions

SIZE = 96


@pytest.fixture(scope="module")
def head():
    return FlameModel(make_open_head(n_shape=4), n_shape=4, n_expr=len(EXPRESSION_NAMES))


class _Scene:
    """What region_masks needs from a training Scene: the head model and posed vertices per timestep."""

    def __init__(self, flame, frames: dict):
        self.flame, self.frames = flame, frames

    def posed_vertices(self, t):
        jaw, blink = self.frames[t]
        z3 = torch.zeros(1, 3)
        expr = torch.zeros(1, self.flame.n_expr)
        for name in ("blink_left", "blink_right"):
            expr[0, EXPRESSION_NAMES.index(name)] = blink
        verts = self.flame(shape=torch.zeros(1, 4), expr=expr, rotation=z3, neck_pose=z3,
                           jaw_pose=torch.tensor([[jaw, 0.0, 0.0]]), eyes_pose=torch.zeros(1, 6), translation=z3)
        # centre the head in front of the camera like the synthetic sequence does
        return verts - verts[0].mean(0)


def _view(t):
    cam = make_camera(SIZE)
    return SimpleNamespace(timestep=t, viewmat=torch.tensor(cam.viewmat, dtype=torch.float32),
                           K=torch.tensor(cam.K, dtype=torch.float32), width=SIZE, height=SIZE)


def test_open_head_mouth_interior_and_eyelids(head):
    scene = _Scene(head, {0: (0.0, 0.0), 1: (0.35, 0.0), 2: (0.0, 1.0)})
    closed, opened, blink = (regions.region_masks(scene, _view(t)) for t in (0, 1, 2))
    need = max(regions.MIN_VISIBLE_PIXELS, math.ceil(regions.MIN_VISIBLE_FRACTION * SIZE * SIZE))
    # the mouth interior is hidden behind the touching lips and shows when the jaw opens
    assert int(closed["mouth_interior"].sum()) < need <= 30 < int(opened["mouth_interior"].sum())
    # ... inside the mouth box (lips + teeth) and below the eyes
    r0, r1, c0, c1 = regions.mask_box(opened["mouth"], pad=0)
    rows, cols = torch.nonzero(opened["mouth_interior"], as_tuple=True)
    assert r0 <= int(rows.min()) and int(rows.max()) < r1 and c0 <= int(cols.min()) and int(cols.max()) < c1
    assert int(rows.min()) > int(torch.nonzero(opened["eyelid"], as_tuple=True)[0].max())
    # a blink spreads the lid skin over the eye: more eyelid pixels, inside the eye box
    assert int(blink["eyelid"].sum()) > 1.2 * int(closed["eyelid"].sum()) >= need
    assert not (blink["eyelid"] & ~blink["eyes"]).any()
    # a head model without the region's vertex sets gives None, not an empty region
    bare = SimpleNamespace(flame=SimpleNamespace(regions={"teeth": head.regions["teeth"]}, faces=head.faces,
                                                 num_vertices=head.num_vertices),
                           posed_vertices=scene.posed_vertices)
    masks = regions.region_masks(bare, _view(1))
    assert masks["eyelid"] is None and masks["eyes"] is None and masks["mouth_interior"].any()


def test_frame_metrics_masked_region_and_visibility():
    g = torch.Generator().manual_seed(0)
    gt = torch.rand(3, 40, 48, generator=g)
    img = (gt + 0.1 * torch.randn(3, 40, 48, generator=g)).clamp(0, 1)
    inside = torch.zeros(40, 48, dtype=torch.bool)
    inside[10:16, 20:30] = True
    img_far = img.clone()
    img_far[:, 30:, :] = 1.0 - gt[:, 30:, :]   # large error far from the region only
    tiny = torch.zeros(40, 48, dtype=torch.bool)
    tiny[0, :3] = True   # 3 px < MIN_VISIBLE_PIXELS
    box = torch.zeros(40, 48, dtype=torch.bool)
    box[5:8, 5:9] = True
    masks = {"mouth_interior": inside, "eyelid": tiny, "mouth": box}
    rec = regions.frame_metrics(img, gt, masks)
    far = regions.frame_metrics(img_far, gt, masks)
    # masked PSNR: MSE over the region's pixels only (independent numpy reference)
    d = (img.numpy() - gt.numpy())[:, inside.numpy()].astype(np.float64)
    assert rec["mouth_interior_psnr"] == pytest.approx(-10 * np.log10(np.mean(d ** 2)), rel=1e-9)
    assert far["mouth_interior_psnr"] == pytest.approx(rec["mouth_interior_psnr"], rel=1e-12)
    assert far["psnr"] < rec["psnr"] - 3
    # box region: PSNR of the bounding box padded by 4 px
    d = (img - gt)[:, 1:12, 1:13].double()
    assert rec["mouth_psnr"] == pytest.approx(float(-10 * torch.log10((d ** 2).mean())), rel=1e-9)
    assert rec["mouth_interior_pixels"] == 60 and rec["mouth_interior_visible"]
    assert rec["eyelid_visible"] is False and rec["eyelid_psnr"] is None and rec["eyelid_lpips"] is None
    if rec["lpips"] is None:
        pytest.skip("LPIPS weights not installed (scripts/fetch_lpips_weights.py)")
    # region LPIPS: outside the mask both images show the ground truth, so far errors do not count
    assert rec["mouth_interior_lpips"] > 0.001
    exact_inside = regions.frame_metrics(torch.where(inside, gt, img), gt, masks)
    assert exact_inside["mouth_interior_lpips"] == pytest.approx(0.0, abs=1e-7)
    assert far["mouth_interior_lpips"] == pytest.approx(rec["mouth_interior_lpips"], abs=1e-6)
    assert far["lpips"] > rec["lpips"]


def test_mean_over_visible_frames_only():
    frames = [{"timestep": 0, "psnr": 30.0, "eyelid_psnr": None, "eyelid_visible": False, "eyelid_pixels": 0},
              {"timestep": 1, "psnr": 20.0, "eyelid_psnr": 25.0, "eyelid_visible": True, "eyelid_pixels": 50},
              {"timestep": 2, "psnr": 40.0, "eyelid_psnr": 15.0, "eyelid_visible": True, "eyelid_pixels": 60}]
    mean = regions.mean_over_visible(frames)
    assert mean == {"psnr": 30.0, "eyelid_psnr": 20.0, "eyelid_frames": 2}
    assert regions.mean_over_visible([]) == {}
