"""Densification primitives on a GaussianAvatar with Adam state surgery (3DGS `densification_postfix`
/ `prune_points`, GaussianAvatars binding bookkeeping).

The Gaussian optimizer holds one parameter group per attribute, named as in
`stavatar_ti.model.gaussians.PARAM_NAMES`. Every operation replaces the avatar's parameters and moves the
Adam moments with them: kept rows keep their moments, new rows start at zero.
"""

from __future__ import annotations

import math

import torch

from ..model.gaussians import PARAM_NAMES, GaussianAvatar
from ..geometry import quat_to_matrix


def _rebuild(avatar: GaussianAvatar, optimizer: torch.optim.Optimizer, index: torch.Tensor,
             new: dict | None, new_binding: torch.Tensor | None) -> None:
    """Keep rows `index` (in order) of every parameter, then append `new` rows."""
    values, states = {}, {}
    for name in PARAM_NAMES:
        old = getattr(avatar, name)
        kept = old.detach()[index]
        values[name] = torch.cat([kept, new[name].detach().to(kept)], 0) if new is not None else kept
        state = optimizer.state.pop(old, None) if optimizer is not None else None
        if state is not None:
            extra = values[name].shape[0] - kept.shape[0]
            moved = {}
            for key, v in state.items():
                if torch.is_tensor(v) and v.shape[:1] == old.shape[:1] and v.ndim == old.ndim:
                    v = v[index]
                    if extra:
                        v = torch.cat([v, torch.zeros((extra,) + v.shape[1:], dtype=v.dtype, device=v.device)], 0)
                moved[key] = v
            states[name] = moved
    binding = avatar.binding[index]
    if new_binding is not None:
        binding = torch.cat([binding, new_binding.to(binding)])
    avatar.set_params(values, binding)
    if optimizer is not None:
        for group in optimizer.param_groups:
            name = group.get("name")
            if name in values:
                group["params"] = [getattr(avatar, name)]
                if name in states:
                    optimizer.state[group["params"][0]] = states[name]


def prune(avatar: GaussianAvatar, optimizer, remove: torch.Tensor) -> torch.Tensor:
    """Remove Gaussians where `remove` [N] bool is set, except the last one on each face.

    Returns the bool mask [N] of the rows actually removed.
    """
    remove = remove.clone()
    counts = avatar.face_counts()
    removed_per_face = torch.bincount(avatar.binding[remove], minlength=avatar.num_faces)
    # faces that would lose every Gaussian keep their first one
    emptied = removed_per_face >= counts
    if emptied.any():
        order = torch.arange(avatar.num_gaussians, device=remove.device)
        candidates = emptied[avatar.binding] & remove
        first = torch.full((avatar.num_faces,), avatar.num_gaussians, device=remove.device, dtype=torch.long)
        first.scatter_reduce_(0, avatar.binding[candidates], order[candidates], reduce="amin")
        keep_ids = first[emptied]
        remove[keep_ids] = False
    keep = torch.nonzero(~remove).squeeze(1)
    _rebuild(avatar, optimizer, keep, None, None)
    return remove


def append(avatar: GaussianAvatar, optimizer, new: dict, new_binding: torch.Tensor) -> None:
    """Append Gaussians (stored-parameter tensors per PARAM_NAMES) with zero Adam moments."""
    _rebuild(avatar, optimizer, torch.arange(avatar.num_gaussians, device=avatar.binding.device), new, new_binding)


def clone_params(avatar: GaussianAvatar, select: torch.Tensor) -> dict:
    """Exact copies of the selected Gaussians' stored parameters (3DGS clone)."""
    return {name: getattr(avatar, name).detach()[select] for name in PARAM_NAMES}


def split_params(avatar: GaussianAvatar, select: torch.Tensor, world_scales: torch.Tensor, n_children: int = 2,
                 generator: torch.Generator | None = None) -> dict:
    """Children of the selected Gaussians (method.md Sec. 10.7 step 2, 3DGS split).

    Each child: p + R(ρ) ε with ε ~ N(0, diag(s̃²)) (world-unit std applied in local units, a quirk
    inherited from GaussianAvatars; STAvatar adds the parent's p), log scale σ - ln(0.8 n), same ρ,
    SH and opacity copied.

    Args:
        select: [K] int64 ids of the parents. world_scales: [N,3] the coarse world scales
            s̃ = exp(σ) k_f (metres) of all Gaussians, without the network's δs (Sec. 10.7).
    Returns:
        dict of stored-parameter tensors (PARAM_NAMES) with n_children x K rows, child j of parent
        k at row j K + k.
    """
    p = avatar.params()
    idx = select.repeat(n_children)
    std = world_scales.detach()[idx]
    eps = torch.randn(std.shape, generator=generator).to(std) * std
    R = quat_to_matrix(p["rotation"].detach()[idx])
    out = {name: p[name].detach()[idx].clone() for name in PARAM_NAMES}
    out["xyz"] = out["xyz"] + (R @ eps[..., None])[..., 0]
    out["scaling"] = out["scaling"] - math.log(0.8 * n_children)
    return out


def scene_extent_from_cameras(viewmats: torch.Tensor) -> float:
    """3DGS's NeRF++ normalisation radius: 1.1 x the largest distance of a camera centre from their
    mean (viewmats [M,4,4] world->camera). 0 for a single static camera."""
    R, t = viewmats[:, :3, :3], viewmats[:, :3, 3]
    centres = -(R.transpose(1, 2) @ t[..., None])[..., 0]
    return 1.1 * float((centres - centres.mean(0)).norm(dim=-1).max())


def scene_extent_from_vertices(vertices: torch.Tensor) -> float:
    """Head-sized scene extent for monocular data: 1.1 x the radius of the bounding sphere of the
    tracked head (3DGS's camera radius rule applied to the posed meshes instead of the cameras).

    Args:
        vertices: [M,V,3] or [V,3] posed mesh vertices (metres), e.g. a sample of the training
            frames; the sphere is centred on the centre of their joint axis-aligned bounding box.
    Returns:
        E in metres (about 0.17 for a FLAME head with neck).
    Raises:
        ValueError: `vertices` is not a non-empty float tensor [...,3] of finite values.
    """
    if not torch.is_tensor(vertices) or vertices.ndim not in (2, 3) or vertices.shape[-1] != 3 \
            or vertices.numel() == 0 or not vertices.is_floating_point() or not torch.isfinite(vertices).all():
        raise ValueError("vertices: expected a non-empty finite float tensor [M,V,3] or [V,3]")
    pts = vertices.detach().reshape(-1, 3)
    centre = 0.5 * (pts.amin(0) + pts.amax(0))
    return 1.1 * float((pts - centre).norm(dim=-1).max())


def apply_densify(avatar: GaussianAvatar, optimizer, clone_ids: torch.Tensor, cloned: dict, split_ids: torch.Tensor,
                  children: dict, min_opacity: float, keep_out: list | None = None) -> dict:
    """Append clones and split children, then remove the split parents and every Gaussian whose base
    opacity sigmoid(o) is below `min_opacity`, the new ones included (method.md Sec. 10.7 steps
    1-3, 3DGS `densify_and_prune`); every face keeps at least one Gaussian.

    Returns counts {"cloned", "split", "pruned"} (pruned excludes the removed split parents).
    If `keep_out` is a list, the bool mask [N_before + N_added] of the kept rows is appended to it
    (callers that hold per-Gaussian state re-index it with this).
    """
    n_children = children["xyz"].shape[0] // max(1, split_ids.numel())
    new = {k: torch.cat([cloned[k], children[k]], 0) for k in cloned}
    new_binding = torch.cat([avatar.binding[clone_ids], avatar.binding[split_ids].repeat(n_children)])
    append(avatar, optimizer, new, new_binding)
    remove = torch.zeros(avatar.num_gaussians, dtype=torch.bool, device=avatar.xyz.device)
    remove[split_ids] = True
    remove |= torch.sigmoid(avatar.opacity.detach()) < min_opacity
    removed_mask = prune(avatar, optimizer, remove)
    removed = int(removed_mask.sum())
    if keep_out is not None:
        keep_out.append(~removed_mask)
    return {"cloned": int(clone_ids.numel()), "split": int(split_ids.numel()),
            "pruned": max(0, removed - int(split_ids.numel()))}
