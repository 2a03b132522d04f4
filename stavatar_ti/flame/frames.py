"""Per-triangle local frames of a posed mesh (GaussianAvatars convention; method.md Sec. 3.1).

For triangle (v0, v1, v2): centroid c = (v0+v1+v2)/3; t = normalise(v1 - v0) (first edge);
n = normalise(t x (v2 - v0)) (face normal); b = normalise(t x n) (in-plane, perpendicular to
the edge); R = [t | n | b] as columns (right-handed; the local y axis is the normal);
k = (|v1 - v0| + |b . (v2 - v0)|) / 2 (mean of the edge length and the height over that edge).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

from ..geometry import matrix_to_quat


@dataclass
class TriangleFrames:
    """centroids [B,F,3] (metres), rotations [B,F,3,3] (columns t, n, b), scales [B,F] (k_f,
    metres), quats [B,F,4] (w,x,y,z) of the rotations."""

    centroids: torch.Tensor
    rotations: torch.Tensor
    scales: torch.Tensor
    quats: torch.Tensor


def triangle_frames(vertices: torch.Tensor, faces: torch.Tensor) -> TriangleFrames:
    """Frames of every face of a batch of posed meshes (differentiable).

    Args:
        vertices: [B,V,3] float, posed vertices (metres).
        faces: [F,3] int64 vertex ids.
    Returns:
        TriangleFrames. Degenerate (zero-area) triangles give undefined (normalised-epsilon) frames.
    Raises:
        ValueError: wrong shapes.
    """
    if vertices.ndim != 3 or vertices.shape[-1] != 3:
        raise ValueError(f"vertices: expected [B,V,3], got {list(vertices.shape)}")
    if faces.ndim != 2 or faces.shape[-1] != 3:
        raise ValueError(f"faces: expected [F,3], got {list(faces.shape)}")
    v0, v1, v2 = (vertices[:, faces[:, k]] for k in range(3))
    e1, e2 = v1 - v0, v2 - v0
    t = F.normalize(e1, dim=-1, eps=1e-12)
    n = F.normalize(torch.cross(t, e2, dim=-1), dim=-1, eps=1e-12)
    b = F.normalize(torch.cross(t, n, dim=-1), dim=-1, eps=1e-12)
    R = torch.stack([t, n, b], -1)
    k = 0.5 * (e1.norm(dim=-1) + (b * e2).sum(-1).abs())
    return TriangleFrames(centroids=(v0 + v1 + v2) / 3.0, rotations=R, scales=k, quats=matrix_to_quat(R))
