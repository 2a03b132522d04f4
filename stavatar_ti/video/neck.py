"""The neck-cut ring of a head model's mesh (e.g. to whiten the image below it, as VHAP does).

    neck_line(vertices, model) -> [N,3] / [B,N,3]        # the neck-cut ring of the posed mesh
    neck_ring_ids(model) -> int64 [N]                    # its vertex ids
"""

from __future__ import annotations

import numpy as np
import torch

__all__ = ["neck_line", "neck_ring_ids"]


def neck_ring_ids(model) -> np.ndarray:
    """Vertex ids of the neck-cut ring, ordered around the neck.

    The open head's neck is closed by a flat cap at its lowest height (y = -0.155 m): the ring is
    the cap's boundary (vertices within 1 mm of the lowest skin height that have a neighbour above).
    A FLAME mesh is open at the neck: the ring is the boundary loop (edges of one face) with the
    lowest mean height.  Rest pose (``v_template``); FLAME axes (+y up).

    Returns: int64 [N] vertex ids (sorted by angle around the ring's centre in the x-z plane).
    Raises: ValueError when no ring is found.
    """
    v = model.v_template.detach().cpu().double().numpy()
    f = model.faces.detach().cpu().numpy()
    n_t = int(getattr(model, "num_template_vertices", len(v)))
    f = f[(f < n_t).all(1)]                                      # no teeth
    e = np.sort(np.concatenate([f[:, [0, 1]], f[:, [1, 2]], f[:, [2, 0]]]), 1)
    uniq, count = np.unique(e, axis=0, return_counts=True)
    boundary = uniq[count == 1]
    ring = np.array([], np.int64)
    if len(boundary):
        import scipy.sparse
        import scipy.sparse.csgraph
        A = scipy.sparse.coo_matrix((np.ones(len(boundary)), (boundary[:, 0], boundary[:, 1])), shape=(n_t, n_t))
        _, lab = scipy.sparse.csgraph.connected_components(A, directed=False)
        bv = np.unique(boundary)
        best = min(np.unique(lab[bv]), key=lambda c: v[bv[lab[bv] == c], 1].mean())
        ring = bv[lab[bv] == best]
    else:
        in_f = np.unique(f)
        y_min = v[in_f, 1].min()
        low = np.zeros(len(v), bool)
        low[in_f[v[in_f, 1] < y_min + 1e-3]] = True
        up = (~low[e[:, 0]] & low[e[:, 1]]) | (low[e[:, 0]] & ~low[e[:, 1]])
        ring = np.unique(np.where(low[e[up, 0]], e[up, 0], e[up, 1]))
    if len(ring) < 3:
        raise ValueError("model: found no neck ring (no lowest boundary loop or flat neck cap)")
    c = v[ring].mean(0)
    ang = np.arctan2(v[ring, 0] - c[0], v[ring, 2] - c[2])
    return ring[np.argsort(ang)].astype(np.int64)


def neck_line(vertices, model) -> torch.Tensor:
    """The neck-cut ring of posed `vertices` (e.g. to whiten the image below it, as VHAP does).

    Args:
        vertices: [V,3] or [B,V,3] posed vertices of `model` (torch or numpy; metres).
        model: the `FlameModel` they come from.
    Returns:
        [N,3] or [B,N,3] torch tensor: the ring's posed points, ordered around the neck.
    Raises:
        ValueError: `vertices` does not have the model's vertex count, or no ring is found.
    """
    x = torch.as_tensor(vertices)
    if x.ndim not in (2, 3) or x.shape[-1] != 3 or x.shape[-2] != model.num_vertices:
        raise ValueError(f"vertices: expected [V,3] or [B,V,3] with V={model.num_vertices}, got {list(x.shape)}")
    return x[..., torch.as_tensor(neck_ring_ids(model)), :]
