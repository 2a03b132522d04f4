"""Gaussians bound to mesh triangles: stored local parameters and the coarse world parameters θ̃.

Math: GaussianAvatars binding as used by STAvatar (method.md Sec. 3.2-3.4):
    μ̃ = R_f p k_f + c_f,  s̃ = exp(σ) k_f,  r̃ = q_f ⊗ normalise(ρ),  α̃ = sigmoid(o),
with (c_f, R_f, k_f, q_f) the frame of the bound triangle f (stavatar_ti.flame.frames).
Initialisation: one Gaussian per face at its centroid, σ = 0, ρ = identity, opacity 0.1,
DC SH uniform in [0, 1/255), higher bands 0.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import torch

from ..flame.frames import TriangleFrames
from ..geometry import quat_multiply

PARAM_NAMES = ("xyz", "scaling", "rotation", "features_dc", "features_rest", "opacity")


class GaussianAvatar(torch.nn.Module):
    """Per-Gaussian parameters (N Gaussians, each bound to one face).

    Parameters: xyz [N,3] local position (units of k_f), scaling [N,3] log local scale,
    rotation [N,4] local quaternion (w,x,y,z, unnormalised), features_dc [N,1,3] and
    features_rest [N,(d+1)^2-1,3] SH coefficients, opacity [N] logit.
    Buffers: binding [N] int64 face ids, uvs [N,2] UV coordinates (soft binding).
    """

    def __init__(self, num_faces: int, sh_degree: int = 3, init_opacity: float = 0.1,
                 generator: torch.Generator | None = None):
        super().__init__()
        n = num_faces
        self.sh_degree = sh_degree
        self.xyz = torch.nn.Parameter(torch.zeros(n, 3))
        self.scaling = torch.nn.Parameter(torch.zeros(n, 3))
        self.rotation = torch.nn.Parameter(torch.tensor([1.0, 0.0, 0.0, 0.0]).repeat(n, 1))
        self.features_dc = torch.nn.Parameter(torch.rand(n, 1, 3, generator=generator) / 255.0)
        self.features_rest = torch.nn.Parameter(torch.zeros(n, (sh_degree + 1) ** 2 - 1, 3))
        self.opacity = torch.nn.Parameter(torch.full((n,), math.log(init_opacity / (1.0 - init_opacity))))
        self.register_buffer("binding", torch.arange(n))
        self.register_buffer("uvs", torch.zeros(n, 2))
        self.num_faces = num_faces

    @property
    def num_gaussians(self) -> int:
        return self.xyz.shape[0]

    def params(self) -> dict:
        return {name: getattr(self, name) for name in PARAM_NAMES}

    def set_params(self, values: dict, binding: torch.Tensor) -> None:
        """Replace all per-Gaussian parameters (after densification); uvs are reset to zeros."""
        for name in PARAM_NAMES:
            setattr(self, name, torch.nn.Parameter(values[name].detach().contiguous()))
        self.binding = binding.to(self.xyz.device)
        self.uvs = torch.zeros(self.num_gaussians, 2, device=self.xyz.device)

    def face_counts(self) -> torch.Tensor:
        """[F] number of Gaussians bound to each face."""
        return torch.bincount(self.binding, minlength=self.num_faces)

    def sh(self) -> torch.Tensor:
        """[N,(d+1)^2,3] SH coefficients (DC first)."""
        return torch.cat([self.features_dc, self.features_rest], 1)

    def coarse(self, frames: TriangleFrames) -> dict:
        """θ̃ in world space for one posed mesh (frames with batch size 1).

        Returns:
            dict means [N,3] (metres), scales [N,3] (metres), quats [N,4] (unit, w,x,y,z),
            sh [N,K,3], opacities [N] in (0,1).
        """
        b = self.binding
        R = frames.rotations[0, b]
        k = frames.scales[0, b][:, None]
        means = (R @ self.xyz[..., None])[..., 0] * k + frames.centroids[0, b]
        rot = self.rotation / self.rotation.norm(dim=-1, keepdim=True)
        quats = quat_multiply(frames.quats[0, b], rot)
        return {"means": means, "scales": torch.exp(self.scaling) * k, "quats": quats, "sh": self.sh(),
                "opacities": torch.sigmoid(self.opacity)}


def write_ply(path, means, scales, quats, sh, opacities) -> None:
    """Write Gaussians in the standard 3DGS PLY layout (binary little endian), atomically.

    Properties: x y z nx ny nz f_dc_0..2 f_rest_0..(3(K-1)-1) (channel-major, as 3DGS) opacity
    (logit) scale_0..2 (log) rot_0..3 (w,x,y,z). Inputs are world-space, activated values:
    means/scales [N,3] metres, quats [N,4], sh [N,K,3], opacities [N] in (0,1).
    """
    n = sh.shape[0]
    to_np = lambda t: t.detach().cpu().double().numpy()  # noqa: E731
    op = np.clip(to_np(opacities), 1e-6, 1 - 1e-6)
    cols = {"x": to_np(means)[:, 0], "y": to_np(means)[:, 1], "z": to_np(means)[:, 2],
            "nx": np.zeros(n), "ny": np.zeros(n), "nz": np.zeros(n)}
    shn = to_np(sh)
    for c in range(3):
        cols[f"f_dc_{c}"] = shn[:, 0, c]
    rest = shn[:, 1:, :].transpose(0, 2, 1).reshape(n, -1)  # [N, 3*(K-1)] channel-major
    for j in range(rest.shape[1]):
        cols[f"f_rest_{j}"] = rest[:, j]
    cols["opacity"] = np.log(op / (1 - op))
    for c in range(3):
        cols[f"scale_{c}"] = np.log(np.maximum(to_np(scales)[:, c], 1e-12))
    q = to_np(quats)
    for c in range(4):
        cols[f"rot_{c}"] = q[:, c]
    data = np.empty(n, dtype=[(name, "<f4") for name in cols])
    for name, values in cols.items():
        data[name] = values
    header = "ply\nformat binary_little_endian 1.0\nelement vertex %d\n" % n
    header += "".join(f"property float {name}\n" for name in cols) + "end_header\n"
    path = Path(path)
    tmp = path.with_suffix(".tmp")
    with open(tmp, "wb") as fh:
        fh.write(header.encode("ascii"))
        fh.write(data.tobytes())
    tmp.replace(path)
