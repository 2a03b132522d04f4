"""The paper's method with a FLAME-format model (issue 16): a FLAME 2023-layout .pkl without UVs or
regions, FLAME's separate UV OBJ and FLAME_masks.pkl (tests/flame_fixture.py, made from the open
head), region masks for the local decoder (method.md Sec. 2), the padded expression coefficients,
the head-sized scene extent, the densification rules of Sec. 10.7, and configs/paper.yaml trained
end to end with Temporal ADC and the LPIPS phase."""

import json
import pickle
from pathlib import Path

import numpy as np
import pytest
import torch

from flame_fixture import LOCAL_REGIONS, write_flame_fixture
from stavatar_ti.config import load_config
from stavatar_ti.densify import apply_densify, scene_extent_from_vertices
from stavatar_ti.flame import FlameFileError, FlameModel, load_flame_masks, safe_load_pickle
from stavatar_ti.losses import lpips as lo
from stavatar_ti.model.gaussians import GaussianAvatar
from stavatar_ti.synthetic import generate_sequence
from stavatar_ti.training import Trainer
from stavatar_ti.training.scene import REGIONS, local_regions
from stavatar_ti.uv import rasterize_uv, uv_region_masks

ROOT = Path(__file__).resolve().parents[1]
PAPER = ROOT / "configs" / "paper.yaml"


@pytest.fixture(scope="module")
def fixture_set(tmp_path_factory):
    return write_flame_fixture(tmp_path_factory.mktemp("flame"))


@pytest.fixture(scope="module")
def flame_model(fixture_set):
    return FlameModel.from_file(fixture_set.model, add_teeth=False, uv_obj=fixture_set.uv_obj,
                                masks=fixture_set.masks)


def test_fixture_has_flame_2023_layout(fixture_set):
    data = safe_load_pickle(fixture_set.model)
    assert set(data) == {"f", "J_regressor", "kintree_table", "J", "weights", "posedirs", "v_template",
                         "shapedirs", "bs_style", "bs_type"}
    assert data["shapedirs"].shape[1:] == (3, 400) and data["f"].dtype == np.uint32
    assert type(data["J_regressor"]).__name__ == "csc_matrix"
    assert not any(k.startswith("region_") or k in ("vt", "ft") for k in data)
    bare = FlameModel.from_file(fixture_set.model, add_teeth=False)
    assert bare.uv_coords is None and bare.regions == {}


def test_flame_file_reproduces_the_open_head(fixture_set, flame_model):
    """Same mesh, UVs, posed vertices and region sets as the open head it was written from."""
    head = fixture_set.head
    ref = FlameModel(head, n_shape=300, n_expr=100, add_teeth=False)
    g = torch.Generator().manual_seed(0)
    params = {k: torch.randn(v.shape, generator=g) * 0.2 for k, v in ref.zero_params(2).items()}
    assert torch.allclose(flame_model(**params), ref(**params), atol=1e-6)
    assert torch.allclose(flame_model.uv_coords, ref.uv_coords, atol=1e-7)  # the OBJ's 8 decimals
    assert torch.equal(flame_model.uv_faces, ref.uv_faces)
    for name in LOCAL_REGIONS:
        assert torch.equal(flame_model.regions[name], ref.regions[name])
    # 16 expression blendshapes in the file's 100 expression columns: the other 84 are padding
    assert flame_model.expr_active.tolist() == [True] * 16 + [False] * 84
    assert flame_model.source == str(fixture_set.model)


def test_uv_region_masks_from_flame_masks(flame_model):
    """Method.md Sec. 2: paint the vertex sets, rasterise to UV, threshold > 0. Reference: a texel is
    in the mask when its face has a region vertex with a positive barycentric weight."""
    fl = flame_model
    raster = rasterize_uv(fl.uv_coords, fl.uv_faces, 64)
    masks = uv_region_masks({k: fl.regions[k] for k in REGIONS}, fl.faces, raster, fl.num_vertices)
    fid, bary = raster.face_id, raster.bary
    for name in REGIONS:
        member = torch.zeros(fl.num_vertices, dtype=torch.bool)
        member[fl.regions[name]] = True
        tri = member[fl.faces[fid.clamp_min(0)]]  # [H,W,3]
        want = (fid >= 0) & (tri & (bary > 0)).any(-1)
        assert masks[name].sum() > 10 and torch.equal(masks[name], want), name
    # the four masks are different regions (eyes and lips barely touch)
    assert (masks["eye_region"] & masks["lips"]).sum() == 0


def test_local_regions_need_masks_or_the_switch(fixture_set, flame_model):
    bare = FlameModel.from_file(fixture_set.model, add_teeth=False, uv_obj=fixture_set.uv_obj)
    cfg = load_config(PAPER, [f"model.head_model={fixture_set.model}"])
    with pytest.raises(FlameFileError, match="model.flame_masks") as err:
        local_regions(cfg, bare)
    assert "model.local_branch=false" in str(err.value) and str(fixture_set.model) in str(err.value)
    assert local_regions(load_config(PAPER, ["model.local_branch=false"]), bare) == {}
    assert list(local_regions(cfg, flame_model)) == list(REGIONS)


def test_flame_masks_file_errors(tmp_path, fixture_set):
    assert set(load_flame_masks(fixture_set.masks, 5588)) >= set(LOCAL_REGIONS)
    (tmp_path / "range.pkl").write_bytes(pickle.dumps({"nose": np.array([1, 99999])}, protocol=2))
    with pytest.raises(FlameFileError, match=r"range.pkl.*'nose'"):
        load_flame_masks(tmp_path / "range.pkl", 5588)
    (tmp_path / "float.pkl").write_bytes(pickle.dumps({"lips": np.array([0.5, 1.0])}, protocol=2))
    with pytest.raises(FlameFileError, match=r"float.pkl.*'lips'"):
        load_flame_masks(tmp_path / "float.pkl")

    class Payload:
        def __reduce__(self):
            return (eval, ("1",))
    (tmp_path / "evil.pkl").write_bytes(pickle.dumps({"nose": Payload()}, protocol=2))
    with pytest.raises(FlameFileError, match="evil.pkl"):
        load_flame_masks(tmp_path / "evil.pkl")
    with pytest.raises(FlameFileError, match="nothere.pkl"):
        load_flame_masks(tmp_path / "nothere.pkl")


def test_head_extent_is_the_bounding_sphere():
    pts = torch.tensor([[[-0.1, 0.0, 0.0], [0.1, 0.0, 0.0]], [[0.0, 0.3, 0.0], [0.0, 0.1, 0.02]]])
    # joint box [-0.1,0.1] x [0,0.3] x [0,0.02], centre (0, 0.15, 0.01): farthest points (+-0.1, 0, 0)
    assert scene_extent_from_vertices(pts) == pytest.approx(1.1 * float(np.sqrt(0.1 ** 2 + 0.15 ** 2 + 0.01 ** 2)))
    with pytest.raises(ValueError, match="^vertices"):
        scene_extent_from_vertices(torch.tensor([[float("nan"), 0.0, 0.0]]))


def test_new_gaussians_follow_the_prune_rule():
    """Sec. 10.7 step 3 prunes every Gaussian under the opacity threshold, the new ones included."""
    av = GaussianAvatar(3)
    with torch.no_grad():
        av.opacity.copy_(torch.logit(torch.tensor([0.5, 0.015, 0.5])))
    cloned = {k: v.detach()[[1]].clone() for k, v in av.params().items()}
    cloned["opacity"] = torch.logit(torch.tensor([0.005]))  # a clone below min_opacity
    empty = {k: v.detach()[:0] for k, v in av.params().items()}
    counts = apply_densify(av, None, torch.tensor([1]), cloned, torch.tensor([], dtype=torch.long), empty, 0.01)
    assert counts == {"cloned": 1, "split": 0, "pruned": 1} and av.num_gaussians == 3
    assert torch.allclose(torch.sigmoid(av.opacity), torch.tensor([0.5, 0.015, 0.5]))


def random_lpips_weights(cache: Path) -> None:
    """Backbone files of the right layout with random weights (the CI machine has no ImageNet ones)."""
    cache.mkdir(parents=True)
    g = torch.Generator().manual_seed(0)
    for net in ("vgg", "alex"):
        sd = {}
        for k, shape in lo.expected_backbone_shapes(net).items():
            fan_in = int(np.prod(shape[1:])) if len(shape) > 1 else 1
            w = torch.randn(shape, generator=g) * (2.0 / fan_in) ** 0.5
            sd[k] = w.abs() if k.startswith("lin") else (w if k.endswith("weight") else torch.zeros(shape))
        torch.save(sd, cache / f"{net}.pt")


def test_paper_config_trains_on_flame_files(fixture_set, tmp_path, monkeypatch):
    """configs/paper.yaml (Temporal ADC, LPIPS in the second half) on the FLAME-format files, a few
    iterations at 32x32 with a 32x32 UV map (the paper's 256x256 costs seconds per CPU iteration): all four local regions active, results.json says what ran."""
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    monkeypatch.setattr(lo, "_MODULES", {})  # no module built from other weights, none left behind
    random_lpips_weights(lo.default_cache_dir())
    data = generate_sequence(tmp_path / "seq", frames=16, size=64, seed=5)
    fx = fixture_set
    cfg = load_config(PAPER, [f"model.head_model={fx.model}", f"model.uv_obj={fx.uv_obj}",
                              f"model.flame_masks={fx.masks}", "model.add_teeth=false", "model.uv_size=32",
                              "train.image_scale=0.5", "train.iterations=16", "train.max_test_frames=1",
                              "train.eval_fractions=[1.0]"])
    without_masks = load_config(PAPER, [f"model.head_model={fx.model}", f"model.uv_obj={fx.uv_obj}",
                                        "model.add_teeth=false"])
    with pytest.raises(FlameFileError, match="model.flame_masks"):  # before any image is decoded
        Trainer(without_masks, data, tmp_path / "refused")
    trainer = Trainer(cfg, data, tmp_path / "run")
    lpips_steps = []
    terms_of = trainer.loss_terms

    def recording(*args, **kwargs):
        terms = terms_of(*args, **kwargs)
        if "lpips" in terms:
            assert torch.isfinite(terms["lpips"]) and terms["lpips"].requires_grad
            lpips_steps.append(trainer.iteration)
        return terms

    trainer.loss_terms = recording
    seen_scales = []
    densify_of = trainer.densifier.densify

    def checking(window, avatar, optimizer, world_scales, generator=None):
        # Sec. 10.7 uses s~ = exp(sigma) k_f, k_f = (|e0| + triangle height over e0) / 2, no network δs
        v = trainer.scene.posed_vertices(trainer.scene.train_views[trainer.plan[trainer.iteration - 1].view].timestep)[0]
        tri = v[trainer.scene.flame.faces[avatar.binding]]
        e0, e1 = tri[:, 1] - tri[:, 0], tri[:, 2] - tri[:, 0]
        length = e0.norm(dim=-1)
        k = 0.5 * (length + torch.linalg.cross(e0, e1).norm(dim=-1) / length)
        seen_scales.append(torch.allclose(world_scales, torch.exp(avatar.scaling.detach()) * k[:, None], rtol=1e-4))
        return densify_of(window, avatar, optimizer, world_scales, generator)

    trainer.densifier.densify = checking
    trainer.run()
    assert seen_scales and all(seen_scales)
    res = json.loads((tmp_path / "run" / "results.json").read_text())
    m = res["model"]
    assert m["regions"] == ["eye_region", "nose", "lips", "forehead"]
    assert m["source"] == str(fx.model) and m["num_vertices"] == 5588 and m["num_faces"] == 11164
    assert (m["num_expressions"], m["active_expressions"]) == (100, 16)
    assert m["scene_extent_source"] == "head" and 0.1 < m["scene_extent"] < 0.3
    assert m["lpips"]["loss"] == "vgg" and m["lpips"]["metric"] == "alex"
    events = m["densification"]
    assert events and all({"cloned", "split", "pruned", "iteration"} <= set(e) for e in events)
    assert lpips_steps == list(range(9, 17))  # iterations > 0.5 x 16
    assert res["test"]["lpips"] is not None and res["densifier"] == "temporal"
    # the evaluation regions come from the same FLAME_masks.pkl sets (lips, eye_region)
    assert res["test"]["mouth_psnr"] is not None and res["test"]["eyes_psnr"] is not None
    ck = torch.load(tmp_path / "run" / "checkpoints" / "last.pt", weights_only=True)
    masks = ck["network"]["region_masks"][0]
    assert all(masks[r].sum() > 0 for r in range(4))
    # the 84 padded expression coefficients stayed 0 in every row (train rows too): no latents
    assert torch.count_nonzero(ck["table"]["expr"][:, 16:]) == 0
    assert torch.count_nonzero(ck["table"]["expr"][:, :16]) > 0
