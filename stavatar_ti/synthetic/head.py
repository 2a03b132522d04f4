"""The head model of a synthetic sequence and the landmarks the texture and the motion are placed by.

    load_head(head_model=None, n_shape=300, n_expr=100) -> SyntheticHead

``head_model`` is None (the procedural open head, `stavatar_ti.flame.open_head`, exactly as the
trainer builds it: ``make_open_head()`` with its default 10 identity components), a `FlameModel`,
a FLAME-format dict, or a path to a FLAME file (``FlameModel.from_file``).  The model always
carries the proxy teeth (the texture paints them and the landmarks of the mouth come from them).

Every landmark is measured on the mesh itself (eyeballs = vertices skinned 100 % to an eye joint,
mouth = the proxy teeth, which are built from the lip rings, nose tip = the most forward skin
vertex near the midline, ...) so the texture follows the geometry if the head is re-sculpted, and a
real FLAME file gets plausible feature placement too.  Conventions are FLAME's (metres, +y up, the
face looks toward +z, +x = the subject's left).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import scipy.sparse
import torch

from ..flame import FlameModel
from ..flame.open_head import make_open_head
from ..flame.meshrender import vertex_normals

__all__ = ["SyntheticHead", "load_head", "KIND_SKIN", "KIND_EYEBALL", "KIND_TEETH", "KIND_MOUTH",
           "KIND_LINING", "KIND_OTHER"]

# Surface kinds (per face; UV islands of the open head)
KIND_SKIN, KIND_EYEBALL, KIND_TEETH, KIND_MOUTH, KIND_LINING, KIND_OTHER = range(6)


@dataclass
class SyntheticHead:
    """A FLAME-format head model plus what the generator needs to know about it.

    Attributes:
        model: FlameModel (with teeth), ``n_shape`` / ``n_expr`` parameter sizes.
        source: "open_head" or the model file path / "<FlameModel>" / "<dict>".
        expression_names: names of the first expression columns ("" where unnamed; empty tuple for
            a FLAME file, whose expression basis is an unnamed PCA).
        n_template: vertices without the teeth (the ``static_offset`` rows of VHAP).
        faces: [F,3] int64 numpy; uvs / uv_faces: numpy or None (no UV layout).
        face_kind: [F] int64 surface kind (KIND_*).
        eye_ids: two int64 arrays, eyeball vertices of the left (+x) and right eye (may be empty).
        teeth_ids: int64 vertex ids of the proxy teeth (120).
        margin_ids: skin vertices on the eyelid margins (shared with the lid linings; may be empty).
    """

    model: FlameModel
    source: str
    expression_names: tuple
    n_template: int
    faces: np.ndarray
    uvs: np.ndarray | None
    uv_faces: np.ndarray | None
    face_kind: np.ndarray
    eye_ids: list
    teeth_ids: np.ndarray
    margin_ids: np.ndarray
    weights: np.ndarray = field(repr=False)

    @property
    def n_shape(self) -> int:
        return self.model.n_shape

    @property
    def n_expr(self) -> int:
        return self.model.n_expr

    @property
    def num_vertices(self) -> int:
        return int(self.model.num_vertices)

    def expression_basis(self) -> np.ndarray:
        """[n_template, 3, n_expr] float64 expression blendshapes (template vertices only)."""
        sd = self.model.shapedirs.detach().cpu().numpy().astype(np.float64)
        return sd[: self.n_template, :, self.n_shape:]

    def neutral(self, shape: np.ndarray) -> np.ndarray:
        """[V,3] float64 vertices of the identity `shape` at zero expression and pose."""
        p = self.model.zero_params()
        p["shape"] = torch.as_tensor(np.asarray(shape, np.float32)[None])
        with torch.no_grad():
            return self.model(**p)[0].double().numpy()

    def landmarks(self, verts: np.ndarray) -> dict:
        """Landmarks measured on `verts` [V,3] (normally the neutral mesh).

        Returns a dict of floats / arrays: eye_centres [2,3] (left = +x first), eye_radius,
        mouth_y (lip line), mouth_z (front of the lips on the midline), mouth_half_width (lip corners),
        nose_tip [3] and nose_tip_id, crown_y, chin_y, neck_y (lowest skin point), head_centre [3],
        ears [2,3], scale (eye half-distance / 32 mm: 1 for the open head).
        """
        skin = np.ones(len(verts), bool)
        for ids in self.eye_ids:
            skin[ids] = False
        skin[self.teeth_ids] = False
        if len(self.eye_ids[0]) and len(self.eye_ids[1]):
            eyes = [0.5 * (verts[ids].min(0) + verts[ids].max(0)) for ids in self.eye_ids]
            radius = float(np.mean([np.linalg.norm(verts[ids] - c, axis=1).max()
                                    for ids, c in zip(self.eye_ids, eyes)]))
            eyes = np.stack(eyes)
            if eyes[0, 0] < eyes[1, 0]:
                eyes = eyes[::-1].copy()
        else:  # no rigid eyeballs: a guess from the bounding box
            lo, hi = verts[skin].min(0), verts[skin].max(0)
            c = 0.5 * (lo + hi)
            eyes = np.array([[0.032, c[1] + 0.01, hi[2] - 0.04], [-0.032, c[1] + 0.01, hi[2] - 0.04]])
            radius = 0.012
        scale = float(abs(eyes[0, 0] - eyes[1, 0]) / 0.064)
        t = verts[self.teeth_ids]
        row1, row5 = t[15:30], t[75:90]                    # upper / lower biting edges (front)
        gap = float(np.mean(t[0:15, 1] - t[15:30, 1]) / 2.0)
        mouth_y = float(0.5 * (row1[:, 1].mean() + row5[:, 1].mean()))
        half_w = float(np.abs(row1[:, 0]).max())
        x, y, z = verts[:, 0], verts[:, 1], verts[:, 2]
        mid = skin & (np.abs(x) < 0.006 * scale) & (np.abs(y - mouth_y) < 0.01 * scale)
        mouth_z = float(z[mid].max()) if mid.any() else float(row1[:, 2].max() + 1.6 * gap)
        cand = skin & (np.abs(x) < 0.012 * scale) & (y > mouth_y + 0.008 * scale) & (y < eyes[0, 1])
        nose_id = int(np.flatnonzero(cand)[np.argmax(z[cand])]) if cand.any() else int(np.argmax(np.where(skin, z, -1)))
        crown_y = float(y[skin].max())
        front = skin & (np.abs(x) < 0.01 * scale) & (z > mouth_z - 0.035 * scale) & (y < mouth_y)
        chin_y = float(y[front].min()) if front.any() else mouth_y - 0.05 * scale
        neck_y = float(y[skin].min())
        upper = skin & (y > chin_y)
        lo, hi = verts[upper].min(0), verts[upper].max(0)
        centre = np.array([0.0, 0.5 * (crown_y + chin_y), 0.5 * (lo[2] + hi[2])])
        ears = []
        for sgn in (1.0, -1.0):
            band = skin & (sgn * x > 0) & (y > mouth_y) & (y < eyes[0, 1] + 0.04 * scale)
            xm = np.abs(x[band]).max()
            sel = band & (np.abs(x) > xm - 0.01 * scale)
            ears.append(verts[sel].mean(0))
        return dict(eye_centres=eyes, eye_radius=radius, mouth_y=mouth_y, mouth_z=mouth_z,
                    mouth_half_width=half_w, nose_tip=verts[nose_id].copy(), nose_tip_id=nose_id,
                    crown_y=crown_y, chin_y=chin_y, neck_y=neck_y, head_centre=centre, ears=np.stack(ears),
                    scale=scale)

    def vertex_normals(self, verts: np.ndarray) -> np.ndarray:
        return vertex_normals(torch.as_tensor(verts), torch.as_tensor(self.faces)).double().numpy()

    def cavity(self, verts: np.ndarray, smooth: int = 2) -> np.ndarray:
        """Per-vertex concavity (1/m): the umbrella Laplacian along the normal over the squared
        mean edge length, > 0 in creases (a cheap stand-in for ambient occlusion), smoothed."""
        V = len(verts)
        e = np.concatenate([self.faces[:, [0, 1]], self.faces[:, [1, 2]], self.faces[:, [2, 0]]])
        e = np.concatenate([e, e[:, ::-1]])
        A = scipy.sparse.coo_matrix((np.ones(len(e)), (e[:, 0], e[:, 1])), shape=(V, V)).tocsr()
        A.data[:] = 1.0
        deg = np.maximum(np.asarray(A.sum(1)).ravel(), 1.0)
        lap = (A @ verts) / deg[:, None] - verts
        ln = np.linalg.norm(verts[e[:, 0]] - verts[e[:, 1]], axis=1)
        h = np.bincount(e[:, 0], ln, minlength=V) / np.maximum(np.bincount(e[:, 0], minlength=V), 1)
        k = (lap * self.vertex_normals(verts)).sum(1) / np.maximum(h, 1e-4) ** 2
        for _ in range(smooth):
            k = 0.5 * k + 0.5 * (A @ k) / deg
        return k


def _uv_islands(uv_faces: np.ndarray, n_uv: int) -> np.ndarray:
    """Connected component id per face (faces sharing a uv vertex are connected)."""
    F = len(uv_faces)
    rows = np.repeat(np.arange(F), 3)
    inc = scipy.sparse.coo_matrix((np.ones(3 * F), (rows, uv_faces.ravel())), shape=(F, n_uv)).tocsr()
    adj = inc @ inc.T
    _, lab = scipy.sparse.csgraph.connected_components(adj, directed=False)
    return lab


def _classify(head_faces, uv_faces, n_uv, weights, teeth_ids, verts) -> tuple[np.ndarray, list]:
    F = len(head_faces)
    V = len(verts)
    eye_ids = [np.flatnonzero(weights[:, j] > 0.999) for j in (3, 4)]
    is_eye = np.zeros(V, bool)
    for ids in eye_ids:
        is_eye[ids] = True
    is_teeth = np.zeros(V, bool)
    is_teeth[teeth_ids] = True
    kind = np.full(F, KIND_SKIN, np.int64)
    kind[is_eye[head_faces].all(1)] = KIND_EYEBALL
    kind[is_teeth[head_faces].all(1)] = KIND_TEETH
    if uv_faces is None:
        return kind, eye_ids
    lab = _uv_islands(uv_faces, n_uv)
    rest = kind == KIND_SKIN
    if not rest.any():
        return kind, eye_ids
    counts = np.bincount(lab[rest], minlength=lab.max() + 1)
    main = int(np.argmax(counts))
    eyes = [verts[ids].mean(0) for ids in eye_ids if len(ids)]
    r_eye = max([np.linalg.norm(verts[ids] - verts[ids].mean(0), axis=1).max() for ids in eye_ids if len(ids)],
                default=0.012)
    t = verts[teeth_ids]
    mouth = np.array([0.0, t[15:30, 1].mean() * 0.5 + t[75:90, 1].mean() * 0.5, t[15:30, 2].max()])
    for c in np.unique(lab[rest]):
        if c == main:
            continue
        sel = rest & (lab == c)
        cen = verts[head_faces[sel]].reshape(-1, 3).mean(0)
        if eyes and min(np.linalg.norm(cen - e) for e in eyes) < 1.6 * r_eye:
            kind[sel] = KIND_LINING
        elif np.linalg.norm(cen - mouth) < 0.05:
            kind[sel] = KIND_MOUTH
        else:
            kind[sel] = KIND_OTHER
    return kind, eye_ids


def load_head(head_model=None, n_shape: int = 300, n_expr: int = 100, uv_obj=None) -> SyntheticHead:
    """Build the `SyntheticHead` of `head_model` (None = the open head; a FlameModel; a FLAME-format
    dict; or a FLAME file path, read with ``FlameModel.from_file(path, n_shape, n_expr, uv_obj=uv_obj)``).

    Raises:
        FlameFileError / ValueError: unreadable model, or a model without the proxy teeth.
    """
    names: tuple = ()
    if head_model is None:
        data = make_open_head()
        names = tuple(str(s) for s in data["expression_names"])
        model = FlameModel(data, n_shape=n_shape, n_expr=n_expr, add_teeth=True, source="open_head")
        source = "open_head"
    elif isinstance(head_model, FlameModel):
        model, source = head_model, "<FlameModel>"
        names = tuple(getattr(head_model, "expression_names", ()))
    elif isinstance(head_model, dict):
        names = tuple(str(s) for s in head_model.get("expression_names", ()))
        model = FlameModel(head_model, n_shape=n_shape, n_expr=n_expr, add_teeth=True, source="<dict>")
        source = "<dict>"
    elif isinstance(head_model, (str, Path)):
        model = FlameModel.from_file(head_model, n_shape=n_shape, n_expr=n_expr, add_teeth=True, uv_obj=uv_obj)
        source = str(head_model)
        try:  # an .npz in the open-head format carries its expression names
            with np.load(head_model, allow_pickle=False) as z:
                if "expression_names" in z.files:
                    names = tuple(str(s) for s in z["expression_names"])
        except Exception:  # noqa: BLE001 - pickles and unreadable files simply have no names
            pass
    else:
        raise ValueError(f"head_model: expected None, a FlameModel, a dict or a path, got {type(head_model).__name__}")
    if not getattr(model, "has_teeth", False) or "teeth" not in model.regions:
        raise ValueError("head_model: the synthetic generator needs a FlameModel built with add_teeth=True")
    model = model.cpu().float().eval()
    faces = model.faces.numpy().astype(np.int64)
    uvs = model.uv_coords.numpy().astype(np.float64) if model.uv_coords is not None else None
    uv_faces = model.uv_faces.numpy().astype(np.int64) if model.uv_faces is not None else None
    weights = model.lbs_weights.numpy().astype(np.float64)
    teeth = model.regions["teeth"].numpy().astype(np.int64)
    verts = model.v_template.numpy().astype(np.float64)
    kind, eye_ids = _classify(faces, uv_faces, 0 if uvs is None else len(uvs), weights, teeth, verts)
    # eyelid margins: skin vertices shared with the lid-lining islands
    in_skin = np.zeros(len(verts), bool)
    in_skin[faces[kind == KIND_SKIN].ravel()] = True
    in_lining = np.zeros(len(verts), bool)
    in_lining[faces[kind == KIND_LINING].ravel()] = True
    margin = np.flatnonzero(in_skin & in_lining)
    return SyntheticHead(model=model, source=source, expression_names=names,
                         n_template=int(model.num_template_vertices), faces=faces, uvs=uvs, uv_faces=uv_faces,
                         face_kind=kind, eye_ids=eye_ids, teeth_ids=teeth, margin_ids=margin, weights=weights)
