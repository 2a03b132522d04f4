"""`FlameModel`: the FLAME head model as a torch module (fixed API, used by outside checks).

Math: FLAME (Li et al., "Learning a model of facial shape and expression from 4D scans",
SIGGRAPH Asia 2017): v_shaped = template + shapedirs . [shape, expr] (+ static offset), joints
regressed from v_shaped, pose correctives from the 4 non-root joints, LBS over the 5-joint chain
(global, neck, jaw, left eye, right eye), then + translation (no re-centring; method.md Sec. 2).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import scipy.sparse
import torch

from ..render.validation import check_finite
from .frames import TriangleFrames, triangle_frames
from .lbs import lbs
from .loading import FlameFileError, load_flame_masks, load_model_file, read_obj_uvs
from . import teeth as _teeth
from .teeth import FLAME_LIP_RING_LOWER, FLAME_LIP_RING_UPPER

NUM_JOINTS = 5
FLAME_SHAPE_BASIS = 300  # FLAME files: columns [0, 300) shape, [300, 400) expression
FLAME_NUM_VERTICES = 5023
POSE_ARGS = (("rotation", 3), ("neck_pose", 3), ("jaw_pose", 3), ("eyes_pose", 6), ("translation", 3))


def _dense(x) -> np.ndarray:
    return x.toarray() if scipy.sparse.issparse(x) else np.asarray(x)


def _columns(sd: np.ndarray, start: int, stop: int, want: int) -> np.ndarray:
    """Columns [start, stop) of shapedirs, truncated or zero-padded to `want`."""
    block = sd[..., start:min(stop, start + want)]
    pad = want - block.shape[-1]
    return np.concatenate([block, np.zeros(block.shape[:-1] + (pad,))], -1) if pad > 0 else block


def _validate(data: dict, src: str) -> dict:
    """Dense float64 / int64 arrays with consistent shapes, or FlameFileError naming `src`."""
    try:
        out = {k: _dense(data[k]) for k in ("v_template", "f", "shapedirs", "posedirs", "J_regressor", "weights",
                                            "kintree_table")}
    except KeyError as exc:
        raise FlameFileError(f"{src}: not a FLAME model, missing key {exc}") from None
    for k in ("v_template", "shapedirs", "posedirs", "J_regressor", "weights"):
        if not np.issubdtype(out[k].dtype, np.number):
            raise FlameFileError(f"{src}: key {k!r} is not numeric")
        out[k] = out[k].astype(np.float64)
        if not np.isfinite(out[k]).all():
            raise FlameFileError(f"{src}: key {k!r} contains NaN or inf")
    V = out["v_template"].shape[0]
    checks = [
        ("v_template", out["v_template"].shape == (V, 3)),
        ("f", out["f"].ndim == 2 and out["f"].shape[1] == 3 and out["f"].size > 0
         and 0 <= out["f"].min() and out["f"].max() < V),
        ("shapedirs", out["shapedirs"].ndim == 3 and out["shapedirs"].shape[:2] == (V, 3)),
        ("posedirs", out["posedirs"].shape == (V, 3, (NUM_JOINTS - 1) * 9)),
        ("J_regressor", out["J_regressor"].shape == (NUM_JOINTS, V)),
        ("weights", out["weights"].shape == (V, NUM_JOINTS)),
        ("kintree_table", out["kintree_table"].shape == (2, NUM_JOINTS)),
    ]
    for key, ok in checks:
        if not ok:
            raise FlameFileError(f"{src}: key {key!r} has shape {list(out[key].shape)}, inconsistent with a "
                                 f"{V}-vertex, {NUM_JOINTS}-joint FLAME model")
    out["f"] = out["f"].astype(np.int64)
    out["kintree_table"] = out["kintree_table"].astype(np.int64)
    if data.get("vt") is not None and data.get("ft") is not None:
        out["vt"], out["ft"] = np.asarray(data["vt"], np.float64), np.asarray(data["ft"], np.int64)
        if out["vt"].ndim != 2 or out["vt"].shape[1] != 2 or out["ft"].shape != out["f"].shape \
                or out["ft"].min() < 0 or out["ft"].max() >= out["vt"].shape[0]:
            raise FlameFileError(f"{src}: vt/ft do not form a UV layout of the {out['f'].shape[0]} faces")
    for k, v in data.items():
        if k.startswith("region_") or k in ("lip_ring_upper", "lip_ring_lower", "shape_basis_size"):
            out[k] = np.asarray(v)
    return out


class FlameModel(torch.nn.Module):
    """FLAME-format head model with LBS, pose correctives and optional proxy teeth.

    Attributes (buffers): v_template [V,3], shapedirs [V,3,n_shape+n_expr], posedirs [36,V*3],
    J_regressor [5,V], lbs_weights [V,5], faces [F,3] int64, uv_coords [T,2] and uv_faces [F,3]
    (None when the file has no UV layout), expr_active [n_expr] bool (expression coefficients whose
    blendshape is not all zero: the file's basis may be shorter than n_expr, and padded
    coefficients move nothing). Other attributes: regions (dict name -> int64 vertex ids, from
    the file's region_* keys or FLAME_masks.pkl), source (str), num_template_vertices.
    With teeth, V and F grow by 120 and 168 (FLAME: 5143 vertices, 10144 faces).
    """

    def __init__(self, data: dict, n_shape: int = 300, n_expr: int = 100, add_teeth: bool = True,
                 source: str = "<dict>"):
        super().__init__()
        for name, value in (("n_shape", n_shape), ("n_expr", n_expr)):
            if isinstance(value, bool) or not isinstance(value, int) or value < 0:
                raise ValueError(f"{name}: expected a non-negative int, got {value!r}")
        data = _validate(data, source)
        sd = data["shapedirs"]
        basis = int(data.get("shape_basis_size", FLAME_SHAPE_BASIS))
        data["shapedirs"] = np.concatenate([_columns(sd, 0, basis, n_shape),
                                            _columns(sd, basis, sd.shape[-1], n_expr)], -1)
        self.num_template_vertices = data["v_template"].shape[0]
        if add_teeth:
            if "lip_ring_upper" in data:
                rings = data["lip_ring_upper"], data["lip_ring_lower"]
            elif self.num_template_vertices == FLAME_NUM_VERTICES:
                rings = FLAME_LIP_RING_UPPER, FLAME_LIP_RING_LOWER
            else:
                raise FlameFileError(f"{source}: cannot add teeth: no lip_ring_upper/lower keys and not the "
                                     f"{FLAME_NUM_VERTICES}-vertex FLAME topology")
            data = _teeth.add_teeth(data, *rings, n_shape_cols=n_shape)
            data["region_teeth"] = np.arange(self.num_template_vertices, self.num_template_vertices + 120)
        self.n_shape, self.n_expr, self.has_teeth, self.source = n_shape, n_expr, add_teeth, source
        self.parents = [-1] + [int(p) for p in data["kintree_table"][0, 1:]]
        f32 = torch.float32
        V = data["v_template"].shape[0]
        self.register_buffer("v_template", torch.tensor(data["v_template"], dtype=f32))
        self.register_buffer("shapedirs", torch.tensor(data["shapedirs"], dtype=f32))
        self.register_buffer("posedirs", torch.tensor(data["posedirs"].reshape(V * 3, -1).T, dtype=f32).contiguous())
        self.register_buffer("J_regressor", torch.tensor(data["J_regressor"], dtype=f32))
        self.register_buffer("lbs_weights", torch.tensor(data["weights"], dtype=f32))
        self.register_buffer("faces", torch.tensor(data["f"], dtype=torch.int64))
        expr_dirs = np.abs(data["shapedirs"][..., n_shape:])
        self.register_buffer("expr_active", torch.tensor(expr_dirs.reshape(-1, n_expr).max(0) > 0
                                                         if expr_dirs.size else np.zeros(n_expr, bool)))
        has_uv = "vt" in data
        self.register_buffer("uv_coords", torch.tensor(data["vt"], dtype=f32) if has_uv else None)
        self.register_buffer("uv_faces", torch.tensor(data["ft"], dtype=torch.int64) if has_uv else None)
        self.regions = {k[len("region_"):]: torch.as_tensor(np.asarray(v, dtype=np.int64))
                        for k, v in data.items() if k.startswith("region_")}

    @classmethod
    def from_file(cls, path, n_shape: int = 300, n_expr: int = 100, add_teeth: bool = True,
                  uv_obj=None, masks=None) -> "FlameModel":
        """Load FLAME 2020 `generic_model.pkl`, FLAME 2023 (`flame2023.pkl`, `flame2023_Open.pkl`), or an
        `.npz` with the same keys (v_template, f, shapedirs, posedirs, J_regressor (may be scipy
        sparse), weights, kintree_table; optional vt/ft UVs, region_* vertex sets, lip rings,
        shape_basis_size).

        Args:
            path: model file. Pickles are read with a restricted unpickler (no code runs).
            n_shape, n_expr: parameter sizes; the file's bases are truncated or zero-padded.
            add_teeth: append the 120-vertex / 168-face proxy teeth (method.md Sec. 2).
            uv_obj: optional OBJ whose vt/f-uv indices give the UV layout (FLAME's
                head_template_mesh.obj), used when the model file has no vt/ft.
            masks: optional FLAME_masks.pkl (`load_flame_masks`); its vertex sets become `regions`
                (replacing region_* keys of the same name in the model file).
        Raises:
            FlameFileError (a ValueError): missing/unreadable/unsafe file, missing keys, bad shapes.
        """
        data = load_model_file(path)
        if uv_obj is not None:
            data["vt"], data["ft"] = read_obj_uvs(uv_obj)
        if masks is not None:
            num_v = np.shape(data["v_template"])[0]
            data.update({f"region_{k}": v for k, v in load_flame_masks(masks, num_v).items()})
        return cls(data, n_shape=n_shape, n_expr=n_expr, add_teeth=add_teeth, source=str(Path(path)))

    @property
    def num_vertices(self) -> int:
        return self.v_template.shape[0]

    def _check_params(self, params: dict, static_offset):
        batch = params["shape"].shape[0] if torch.is_tensor(params["shape"]) else None
        sizes = (("shape", self.n_shape), ("expr", self.n_expr)) + POSE_ARGS
        for name, size in sizes:
            x = params[name]
            if not torch.is_tensor(x) or x.ndim != 2 or x.shape != (batch, size) or not x.is_floating_point():
                got = list(x.shape) if torch.is_tensor(x) else type(x).__name__
                raise ValueError(f"{name}: expected a float tensor [B,{size}] with B={batch}, got {got}")
        if static_offset is not None:
            ok_rows = (self.num_vertices, self.num_template_vertices)
            if not torch.is_tensor(static_offset) or static_offset.ndim != 3 or static_offset.shape[0] not in (1, batch) \
                    or static_offset.shape[1] not in ok_rows or static_offset.shape[2] != 3:
                raise ValueError(f"static_offset: expected [B or 1, {ok_rows[0]} or {ok_rows[1]}, 3]")
        check_finite({**params, "static_offset": static_offset})

    def forward(self, shape, expr, rotation, neck_pose, jaw_pose, eyes_pose, translation, static_offset=None,
                return_joints: bool = False):
        """Posed vertices.

        Args:
            shape [B,n_shape], expr [B,n_expr]: blendshape coefficients.
            rotation, neck_pose, jaw_pose [B,3]; eyes_pose [B,6] (left eye, right eye): axis-angle, radians.
            translation [B,3]: metres, added after LBS.
            static_offset: optional [B or 1, V or V_template, 3] per-vertex offset added to the template
                before LBS (VHAP); rows missing for the teeth are zero-padded.
        Returns:
            vertices [B,V,3] (metres, same dtype/device as the buffers), plus joints [B,5,3] when
            `return_joints`.
        Raises:
            ValueError: a parameter with the wrong shape/dtype, or NaN/inf, naming it.
        """
        params = dict(shape=shape, expr=expr, rotation=rotation, neck_pose=neck_pose, jaw_pose=jaw_pose,
                      eyes_pose=eyes_pose, translation=translation)
        self._check_params(params, static_offset)
        betas = torch.cat([shape, expr], -1).to(self.v_template)
        v_shaped = self.v_template + torch.einsum("vck,bk->bvc", self.shapedirs, betas)
        if static_offset is not None:
            pad = self.num_vertices - static_offset.shape[1]
            v_shaped = v_shaped + torch.nn.functional.pad(static_offset.to(v_shaped), (0, 0, 0, pad))
        full_pose = torch.cat([rotation, neck_pose, jaw_pose, eyes_pose], -1).to(self.v_template)
        verts, joints = lbs(v_shaped, full_pose, self.posedirs, self.J_regressor, self.parents, self.lbs_weights)
        t = translation.to(verts)[:, None]
        return (verts + t, joints + t) if return_joints else verts + t

    def zero_params(self, batch: int = 1) -> dict:
        """Neutral parameters (all zeros) as a dict of keyword arguments for `forward`."""
        dev = self.v_template.device
        sizes = (("shape", self.n_shape), ("expr", self.n_expr)) + POSE_ARGS
        return {name: torch.zeros(batch, size, device=dev) for name, size in sizes}

    def triangle_frames(self, vertices: torch.Tensor) -> TriangleFrames:
        """Per-face frames (centroid, rotation, scale k_f, quaternion) of posed `vertices` [B,V,3]."""
        return triangle_frames(vertices, self.faces)
