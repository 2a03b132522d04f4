"""FLAME layer: safe loading, LBS against smplx, teeth, triangle frames, bad input."""

import os
import pickle
import sys
import types

import numpy as np
import pytest
import scipy.sparse
import torch

from stavatar_ti.flame import FlameFileError, FlameModel, safe_load_pickle, triangle_frames
from stavatar_ti.flame.teeth import FLAME_LIP_RING_LOWER, FLAME_LIP_RING_UPPER, teeth_faces, teeth_uvs
from stavatar_ti.geometry import quat_to_matrix

V_FLAME, F_FLAME = 5023, 9976


def random_flame(seed=0, V=V_FLAME, F=F_FLAME, with_uv=True):
    """A random model in FLAME's file layout (FLAME-sized, so FLAME's lip-ring ids are valid)."""
    rng = np.random.default_rng(seed)
    v = rng.normal(0, 0.05, (V, 3))
    # make the lip rings a plausible mouth: upper ring above the lower one, 1 cm apart
    x = np.linspace(-0.025, 0.025, 15)
    if V < V_FLAME:
        return _finish(rng, v, V, F, with_uv)
    v[list(FLAME_LIP_RING_UPPER)] = np.stack([x, np.full(15, -0.045), np.full(15, 0.08)], -1)
    v[list(FLAME_LIP_RING_LOWER)] = np.stack([x, np.full(15, -0.055), np.full(15, 0.08)], -1)
    return _finish(rng, v, V, F, with_uv)


def _finish(rng, v, V, F, with_uv):
    J = rng.random((5, V)) * (rng.random((5, V)) < max(0.01, 20 / V))
    J /= J.sum(1, keepdims=True)
    w = rng.dirichlet(np.ones(5) * 0.3, size=V)
    model = {
        "v_template": v, "f": rng.integers(0, V, (F, 3)).astype(np.uint32),
        "shapedirs": rng.normal(0, 1e-3, (V, 3, 400)), "posedirs": rng.normal(0, 1e-3, (V, 3, 36)),
        "J_regressor": scipy.sparse.csc_matrix(J), "weights": w,
        "kintree_table": np.array([[4294967295, 0, 1, 1, 1], [0, 1, 2, 3, 4]], dtype=np.int64),
    }
    if with_uv:
        model["vt"] = rng.random((V + 95, 2)) * 0.9
        model["ft"] = rng.integers(0, V + 95, (F, 3))
    return model


def random_params(model, batch=3, seed=1, scale=0.3):
    g = torch.Generator().manual_seed(seed)
    p = model.zero_params(batch)
    return {k: torch.randn(v.shape, generator=g) * scale for k, v in p.items()}


def test_lbs_matches_smplx():
    smplx_lbs = pytest.importorskip("smplx.lbs").lbs
    data = random_flame()
    model = FlameModel(data, add_teeth=False)
    p = random_params(model)
    p["translation"] = torch.zeros(3, 3)
    ours = model(**p)
    betas = torch.cat([p["shape"], p["expr"]], -1)
    pose = torch.cat([p["rotation"], p["neck_pose"], p["jaw_pose"], p["eyes_pose"]], -1)
    ref, _ = smplx_lbs(betas, pose, model.v_template, model.shapedirs, model.posedirs, model.J_regressor,
                       torch.tensor(model.parents), model.lbs_weights)
    assert torch.allclose(ours, ref, atol=2e-6), (ours - ref).abs().max()
    # translation is added after LBS, joints move with it
    p["translation"] = torch.tensor([[0.1, -0.2, 0.3]]).expand(3, 3).contiguous()
    moved, joints = model(**p, return_joints=True)
    assert torch.allclose(moved, ref + p["translation"][:, None], atol=2e-6)
    assert joints.shape == (3, 5, 3)


def test_lbs_identity_pose_is_shaped_template():
    data = random_flame(with_uv=False)
    model = FlameModel(data, n_shape=300, n_expr=100, add_teeth=False)
    p = model.zero_params(2)
    p["shape"][0, 0] = 2.0
    p["expr"][1, 5] = -1.5
    v = model(**p)
    sd = torch.tensor(data["shapedirs"], dtype=torch.float32)
    assert torch.allclose(v[0], model.v_template + 2.0 * sd[..., 0], atol=1e-6)
    assert torch.allclose(v[1], model.v_template - 1.5 * sd[..., 305], atol=1e-6)


def test_basis_truncation_and_padding():
    data = random_flame(with_uv=False)
    small = FlameModel(data, n_shape=20, n_expr=10, add_teeth=False)
    big = FlameModel(data, n_shape=320, n_expr=120, add_teeth=False)
    assert small.shapedirs.shape[-1] == 30 and big.shapedirs.shape[-1] == 440
    assert torch.equal(small.shapedirs[..., 20:], big.shapedirs[..., 320:330])  # expr starts at column 300
    assert (big.shapedirs[..., 300:320] == 0).all() and (big.shapedirs[..., 420:] == 0).all()


def test_teeth_counts_and_construction():
    data = random_flame()
    model = FlameModel(data, add_teeth=True)
    assert model.num_vertices == 5143 and model.faces.shape == (10144, 3)
    assert model.uv_coords.shape == (V_FLAME + 95 + 120, 2) and model.uv_faces.shape == (10144, 3)
    teeth = slice(V_FLAME, V_FLAME + 120)
    assert torch.equal(model.regions["teeth"], torch.arange(V_FLAME, V_FLAME + 120))
    # skinning: upper teeth to the neck joint, lower teeth to the jaw joint
    assert (model.lbs_weights[V_FLAME:V_FLAME + 60, 1] == 1).all() and (model.lbs_weights[V_FLAME + 60:, 2] == 1).all()
    # shape directions = mean of the lip rings' shape directions, expressions 0, no correctives
    ring = list(FLAME_LIP_RING_UPPER) + list(FLAME_LIP_RING_LOWER)
    mean_sd = torch.tensor(data["shapedirs"][ring][..., :300].mean(0), dtype=torch.float32)
    assert torch.allclose(model.shapedirs[teeth, :, :300], mean_sd.expand(120, 3, 300), atol=1e-7)
    assert (model.shapedirs[teeth, :, 300:] == 0).all()
    assert (model.posedirs.reshape(36, -1, 3)[:, teeth] == 0).all()
    # geometry: 1 cm lip gap -> the middle row sits 1.5 cm behind the lips, root rows 2 gaps up/down
    tv = model.v_template[teeth].reshape(8, 15, 3)
    assert torch.allclose(tv[1, :, 2], torch.full((15,), 0.08 - 0.015), atol=1e-6)  # upper edge front
    assert torch.allclose(tv[0, :, 1] - tv[1, :, 1], torch.full((15,), 0.02), atol=1e-6)
    assert torch.allclose(tv[2, :, 2], tv[1, :, 2] - 0.01, atol=1e-6)  # back copy 1 gap behind
    assert torch.allclose(tv[5, :, 2], tv[1, :, 2] - 0.004, atol=1e-6)  # lower teeth 0.4 gap further back


def test_teeth_faces_outward_and_uvs_consistent():
    data = random_flame()
    model = FlameModel(data, add_teeth=True)
    tf = torch.tensor(teeth_faces())
    v = model.v_template[V_FLAME:]
    n = torch.cross(v[tf[:, 1]] - v[tf[:, 0]], v[tf[:, 2]] - v[tf[:, 0]], dim=-1)
    assert (n[:28, 2] > 0).all() and (n[56:84, 2] < 0).all()      # upper front faces +z, back -z
    assert (n[28:56, 1] < 0).all() and (n[112:140, 1] > 0).all()  # upper edge faces down, lower up
    uv = torch.tensor(teeth_uvs())
    e1, e2 = uv[tf[:, 1]] - uv[tf[:, 0]], uv[tf[:, 2]] - uv[tf[:, 0]]
    assert ((e1[:, 0] * e2[:, 1] - e1[:, 1] * e2[:, 0]) > 0).all()  # all counter-clockwise in UV
    assert (uv[:, 1] >= 0.9575 - 1e-9).all() and (uv[:, 1] <= 0.9917 + 1e-9).all()


def test_static_offset_is_padded_for_teeth():
    model = FlameModel(random_flame(with_uv=False), add_teeth=True)
    p = model.zero_params(1)
    off = torch.zeros(1, V_FLAME, 3)
    off[0, 7] = torch.tensor([0.01, 0.0, 0.0])
    v0, v1 = model(**p), model(**p, static_offset=off)
    diff = (v1 - v0).abs().sum(-1)[0]
    assert diff[7] > 0 and diff.sum() - diff[7] < 1e-4 * diff[7] + 1e-6  # rest moves only via joints


def _fake_chumpy_modules():
    """Modules named like chumpy, so pickles reference `chumpy.ch.Ch` as real FLAME files do."""
    chumpy = types.ModuleType("chumpy")
    ch = types.ModuleType("chumpy.ch")

    class Ch:
        def __init__(self, x):
            self.x = x
            self._dirty_vars = {"x"}

        def __getstate__(self):
            return dict(self.__dict__)

    Ch.__module__ = "chumpy.ch"
    Ch.__qualname__ = "Ch"
    ch.Ch = Ch
    chumpy.ch = ch
    return {"chumpy": chumpy, "chumpy.ch": ch}, Ch


@pytest.mark.parametrize("protocol", [2, 5])
def test_pickle_with_chumpy_and_sparse_loads_without_chumpy(tmp_path, protocol):
    data = random_flame(with_uv=False)
    mods, Ch = _fake_chumpy_modules()
    sys.modules.update(mods)
    try:
        as_file = dict(data, shapedirs=Ch(data["shapedirs"]), posedirs=Ch(data["posedirs"]),
                       v_template=Ch(data["v_template"]), weights=Ch(data["weights"]), bs_style="lbs",
                       bs_type="lrotmin", J=Ch(np.zeros((5, 3))))
        path = tmp_path / "generic_model.pkl"
        path.write_bytes(pickle.dumps(as_file, protocol=protocol))
    finally:
        for name in mods:
            sys.modules.pop(name)
    loaded = safe_load_pickle(path)
    assert np.array_equal(loaded["shapedirs"], data["shapedirs"])
    assert np.array_equal(loaded["J_regressor"].toarray(), data["J_regressor"].toarray())
    model = FlameModel.from_file(path, add_teeth=False)
    ref = FlameModel(data, add_teeth=False)
    p = random_params(ref)
    assert torch.equal(model(**p), ref(**p))


def test_malicious_pickle_is_refused_and_nothing_runs(tmp_path):
    marker = tmp_path / "pwned"

    class Payload:
        def __reduce__(self):
            return (os.system, (f"touch {marker}",))

    path = tmp_path / "flame2023.pkl"
    path.write_bytes(pickle.dumps({"v_template": Payload()}, protocol=2))
    with pytest.raises(FlameFileError, match="refusing to load .*system"):
        FlameModel.from_file(path)
    assert not marker.exists()
    path.write_bytes(pickle.dumps({"f": eval}, protocol=4))  # a builtin that is not data
    with pytest.raises(FlameFileError, match="refusing"):
        safe_load_pickle(path)


def test_npz_round_trip_and_bad_files(tmp_path):
    data = random_flame()
    data["J_regressor"] = data["J_regressor"].toarray()
    np.savez(tmp_path / "m.npz", **data)
    model = FlameModel.from_file(tmp_path / "m.npz")
    assert model.num_vertices == 5143
    with pytest.raises(FlameFileError, match="no such file"):
        FlameModel.from_file(tmp_path / "missing.pkl")
    (tmp_path / "m.txt").write_text("x")
    with pytest.raises(FlameFileError, match="expected a .pkl or .npz"):
        FlameModel.from_file(tmp_path / "m.txt")
    np.savez(tmp_path / "bad.npz", v_template=np.zeros((3, 3)))
    with pytest.raises(FlameFileError, match="bad.npz: not a FLAME model, missing keys"):
        FlameModel.from_file(tmp_path / "bad.npz")
    np.savez(tmp_path / "obj.npz", **dict(data, weights=np.array([object()] * 3, dtype=object)))
    with pytest.raises(FlameFileError, match="obj.npz"):
        FlameModel.from_file(tmp_path / "obj.npz")
    np.savez(tmp_path / "shape.npz", **dict(data, weights=data["weights"][:, :4]))
    with pytest.raises(FlameFileError, match="'weights' has shape"):
        FlameModel.from_file(tmp_path / "shape.npz")
    np.savez(tmp_path / "nan.npz", **dict(data, posedirs=data["posedirs"] * np.nan))
    with pytest.raises(FlameFileError, match="'posedirs' contains NaN"):
        FlameModel.from_file(tmp_path / "nan.npz")
    (tmp_path / "junk.pkl").write_bytes(b"not a pickle at all")
    with pytest.raises(FlameFileError, match="junk.pkl"):
        FlameModel.from_file(tmp_path / "junk.pkl")
    with pytest.raises(FlameFileError, match="cannot add teeth"):
        FlameModel(random_flame(V=100, F=50, with_uv=False))


def test_bad_parameters_are_named():
    model = FlameModel(random_flame(with_uv=False), n_shape=10, n_expr=5, add_teeth=False)
    p = model.zero_params(2)
    with pytest.raises(ValueError, match="^expr: expected a float tensor \\[B,5\\]"):
        model(**dict(p, expr=torch.zeros(2, 6)))
    with pytest.raises(ValueError, match="^eyes_pose"):
        model(**dict(p, eyes_pose=torch.zeros(2, 3)))
    with pytest.raises(ValueError, match="^jaw_pose"):
        model(**dict(p, jaw_pose=torch.zeros(1, 3)))
    bad = torch.zeros(2, 3)
    bad[1, 2] = float("nan")
    with pytest.raises(ValueError, match="^translation: contains NaN"):
        model(**dict(p, translation=bad))
    with pytest.raises(ValueError, match="^static_offset"):
        model(**p, static_offset=torch.zeros(2, 7, 3))
    with pytest.raises(ValueError, match="n_shape"):
        FlameModel(random_flame(with_uv=False), n_shape=-1)


def test_triangle_frames():
    g = torch.Generator().manual_seed(0)
    verts = torch.randn(2, 50, 3, generator=g, dtype=torch.float64)
    faces = torch.randint(0, 50, (40, 3), generator=g)
    faces = faces[(faces[:, 0] != faces[:, 1]) & (faces[:, 1] != faces[:, 2]) & (faces[:, 0] != faces[:, 2])]
    fr = triangle_frames(verts, faces)
    R = fr.rotations
    eye = torch.eye(3, dtype=torch.float64)
    assert torch.allclose(R.transpose(-1, -2) @ R, eye.expand_as(R), atol=1e-10)
    assert torch.allclose(torch.linalg.det(R), torch.ones(R.shape[:2], dtype=torch.float64), atol=1e-10)
    v0, v1, v2 = (verts[:, faces[:, k]] for k in range(3))
    normal = torch.cross(v1 - v0, v2 - v0, dim=-1)
    assert torch.allclose(R[..., :, 1], normal / normal.norm(dim=-1, keepdim=True), atol=1e-10)  # y = normal
    assert torch.allclose(R[..., :, 0], (v1 - v0) / (v1 - v0).norm(dim=-1, keepdim=True), atol=1e-10)
    height = 2 * (0.5 * normal.norm(dim=-1)) / (v1 - v0).norm(dim=-1)  # triangle height over edge v0v1
    assert torch.allclose(fr.scales, 0.5 * ((v1 - v0).norm(dim=-1) + height), atol=1e-10)
    assert torch.allclose(fr.centroids, (v0 + v1 + v2) / 3)
    assert torch.allclose(quat_to_matrix(fr.quats), R, atol=1e-8)
