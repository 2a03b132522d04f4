"""A FLAME-format fixture set made from the open head (not FLAME data), for tests of the paper path.

FLAME files are licence-restricted, so the tests write files with FLAME 2023's layout instead:

* ``flame2023.pkl``: a protocol-2 pickle with the keys and types of FLAME 2023's model file
  (``f`` uint32, ``v_template``, ``shapedirs`` [V,3,400] with shape in columns 0-299 and expression in
  300-399, ``posedirs`` [V,3,36], ``J_regressor`` as a scipy.sparse csc_matrix, ``J``, ``weights``,
  ``kintree_table`` uint32 with 2**32-1 as the root's parent, ``bs_style``, ``bs_type``); no UVs, no
  region keys, no lip rings. Plain numpy arrays stand in for FLAME's chumpy arrays (the loader turns
  chumpy into numpy; tests/test_flame.py covers that part). The open head has 10 shape and 16
  expression components; the rest of FLAME's 300 + 100 columns are zero.
* ``head_template_mesh.obj``: the UV layout as FLAME ships it, a separate OBJ with ``v``, ``vt`` and
  ``f v/vt`` lines.
* ``FLAME_masks.pkl``: a dict of FLAME's region names -> vertex ids: ``eye_region``, ``nose``,
  ``lips``, ``forehead`` (the open head's own sets), and ``left_eye_region``, ``right_eye_region``,
  ``face``, ``neck``, ``scalp`` derived from them and from the geometry.
"""

from __future__ import annotations

import pickle
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import scipy.sparse

from stavatar_ti.flame.open_head import make_open_head

FLAME_SHAPE, FLAME_EXPR = 300, 100
FLAME_KEYS = ("f", "J_regressor", "kintree_table", "J", "weights", "posedirs", "v_template", "shapedirs",
              "bs_style", "bs_type")
LOCAL_REGIONS = ("eye_region", "nose", "lips", "forehead")


def flame_format_model(head: dict) -> dict:
    """The open head `head` (make_open_head()) rearranged into FLAME 2023's keys and types."""
    n_shape = int(head["shape_basis_size"])
    sd = head["shapedirs"]
    V = sd.shape[0]
    shapedirs = np.zeros((V, 3, FLAME_SHAPE + FLAME_EXPR))
    shapedirs[..., :n_shape] = sd[..., :n_shape]
    n_expr = sd.shape[-1] - n_shape
    shapedirs[..., FLAME_SHAPE:FLAME_SHAPE + n_expr] = sd[..., n_shape:]
    kintree = head["kintree_table"].astype(np.int64)
    kintree[0, 0] = 2 ** 32 - 1  # FLAME stores the root's parent as uint32 -1
    return {
        "f": head["f"].astype(np.uint32),
        "J_regressor": scipy.sparse.csc_matrix(head["J_regressor"]),
        "kintree_table": kintree.astype(np.uint32),
        "J": head["J_regressor"] @ head["v_template"],
        "weights": head["weights"].copy(),
        "posedirs": head["posedirs"].copy(),
        "v_template": head["v_template"].copy(),
        "shapedirs": shapedirs,
        "bs_style": "lbs",
        "bs_type": "lrotmin",
    }


def flame_format_masks(head: dict) -> dict:
    """FLAME_masks.pkl-style region dict of the open head (vertex ids, int64)."""
    V = head["v_template"]
    masks = {name: np.asarray(head[f"region_{name}"], np.int64) for name in LOCAL_REGIONS}
    eye = masks["eye_region"]
    masks["left_eye_region"] = eye[V[eye, 0] > 0]  # FLAME's left = the subject's left = +x
    masks["right_eye_region"] = eye[V[eye, 0] < 0]
    masks["face"] = np.unique(np.concatenate([masks[k] for k in LOCAL_REGIONS]))
    masks["neck"] = np.nonzero(V[:, 1] < -0.09)[0]
    masks["scalp"] = np.nonzero((V[:, 1] > 0.06) & (V[:, 2] < 0.02))[0]
    return masks


def write_obj(path: Path, vertices: np.ndarray, faces: np.ndarray, vt: np.ndarray, ft: np.ndarray) -> None:
    lines = [f"v {x:.8f} {y:.8f} {z:.8f}" for x, y, z in vertices]
    lines += [f"vt {u:.8f} {v:.8f}" for u, v in vt]
    lines += ["f " + " ".join(f"{a + 1}/{b + 1}" for a, b in zip(fv, fu)) for fv, fu in zip(faces, ft)]
    path.write_text("\n".join(lines) + "\n")


def write_flame_fixture(out_dir) -> SimpleNamespace:
    """Write flame2023.pkl, head_template_mesh.obj and FLAME_masks.pkl into `out_dir`.

    Returns a namespace with the three paths (model, uv_obj, masks) and the open head dict (head).
    """
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    head = make_open_head()
    model = out / "flame2023.pkl"
    model.write_bytes(pickle.dumps(flame_format_model(head), protocol=2))
    obj = out / "head_template_mesh.obj"
    write_obj(obj, head["v_template"], head["f"], head["vt"], head["ft"])
    masks = out / "FLAME_masks.pkl"
    masks.write_bytes(pickle.dumps(flame_format_masks(head), protocol=2))
    return SimpleNamespace(model=model, uv_obj=obj, masks=masks, head=head)
