"""Image-space masks of head-model regions (e.g. the mouth: lips + teeth) for region metrics.

The posed mesh of a view is drawn with the independent z-buffer renderer (stavatar_ti.flame.meshrender);
a pixel belongs to a region when its visible face touches a vertex of the region. Metrics on the
region use the bounding box of those pixels (padded), so SSIM and LPIPS see image structure.
"""

from __future__ import annotations

import torch

from ..flame.meshrender import render_mesh


@torch.no_grad()
def region_box(scene, view, regions=("lips", "teeth"), pad: int = 4):
    """(row0, row1, col0, col1) half-open bounding box of the visible region pixels, or None.

    Uses the view's tracked parameters (the parameter table) and its camera.
    """
    fl = scene.flame
    verts = scene.posed_vertices(view.timestep)[0].cpu()
    member = torch.zeros(fl.num_vertices, dtype=torch.bool)
    for name in regions:
        if name in fl.regions:
            member[fl.regions[name].cpu()] = True
    faces = fl.faces.cpu()
    face_in = member[faces].any(1)
    r = render_mesh(verts, faces, view.viewmat.cpu(), view.K.cpu(), view.width, view.height)
    mask = (r.face_id >= 0) & face_in[r.face_id.clamp_min(0)]
    if not mask.any():
        return None
    rows = torch.nonzero(mask.any(1)).squeeze(1)
    cols = torch.nonzero(mask.any(0)).squeeze(1)
    return (max(0, int(rows[0]) - pad), min(view.height, int(rows[-1]) + 1 + pad),
            max(0, int(cols[0]) - pad), min(view.width, int(cols[-1]) + 1 + pad))
