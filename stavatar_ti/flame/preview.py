"""Preview renders of a head model: posed views with the independent mesh renderer and the UV layout."""

from __future__ import annotations

from pathlib import Path

import imageio.v3 as iio
import numpy as np
import torch

from .meshrender import render_mesh
from .model import FlameModel
from .open_head import make_open_head


def _camera(size: int):
    """OpenCV camera 0.55 m in front of the face (+z), looking at it."""
    f = 1.7 * size
    K = torch.tensor([[f, 0.0, size / 2], [0.0, f, size / 2 - 0.04 * size], [0.0, 0.0, 1.0]])
    V = torch.eye(4)
    V[:3, :3] = torch.diag(torch.tensor([1.0, -1.0, -1.0]))  # FLAME y up, z toward the camera
    V[2, 3] = 0.55
    return V, K


def uv_layout_image(uv: torch.Tensor, faces: torch.Tensor, size: int) -> np.ndarray:
    """[size,size,3] uint8: UV triangles filled by island-agnostic face colour, edges dark."""
    from ..uv import rasterize_uv

    r = rasterize_uv(uv, faces, size)
    g = torch.Generator().manual_seed(0)
    colors = 0.55 + 0.4 * torch.rand(faces.shape[0], 3, generator=g)
    img = torch.ones(size, size, 3)
    m = r.mask
    img[m] = colors[r.face_id[m]]
    edge = (r.bary.min(-1).values < 0.04) & m
    img[edge] = 0.2
    return (img.numpy() * 255).astype(np.uint8)


def render_previews(out_dir, size: int = 256, model: FlameModel | None = None) -> list[Path]:
    """Write neutral / jaw_open / smile / blink renders and uv_layout PNGs; returns their paths."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    model = model or FlameModel(make_open_head(), n_shape=20, n_expr=16, source="open_head")
    names = list(make_open_head()["expression_names"])
    V, K = _camera(size)
    poses = {"neutral": {}, "jaw_open": {"jaw_pose": (0, 0.3)}, "smile": {"expr": (names.index("smile"), 1.0)},
             "blink": {"expr": (names.index("blink_left"), 1.0)}}
    paths = []
    for name, change in poses.items():
        p = model.zero_params(1)
        p["rotation"][0, 1] = 0.35  # a three-quarter view
        for key, (index, value) in change.items():
            p[key][0, index] = value
        if name == "blink":
            p["expr"][0, names.index("blink_right")] = 1.0
        with torch.no_grad():
            verts = model(**p)[0]
        img = render_mesh(verts, model.faces, V, K, size, size, light_dir=(0.4, 0.5, 1.0), ambient=0.3).image
        path = out / f"open_head_{name}.png"
        iio.imwrite(path, (img.numpy() * 255).round().astype(np.uint8))
        paths.append(path)
    path = out / "open_head_uv_layout.png"
    iio.imwrite(path, uv_layout_image(model.uv_coords, model.uv_faces, size))
    paths.append(path)
    return paths
