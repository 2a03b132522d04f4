"""Everything a training run holds: data, head model, parameter table, avatar, UV network and UV
machinery, and the per-frame render of θ* (method.md Sec. 1, steps 1-8)."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

from ..render import rasterize
from ..model.gaussians import PARAM_NAMES, GaussianAvatar
from ..data import check_head_model, load_dataset
from ..flame import FlameModel, load_flame_masks
from ..flame.loading import FlameFileError
from ..flame.open_head import make_open_head
from ..model.flame_table import FlameTable
from ..model.offsets import activate_offsets, compose_final
from ..model.uv_network import UVNetwork, network_pose
from ..uv import (lookup_uv, rasterize_uv, sample_gaussian_uvs, uv_displacement_map, uv_position_map,
                  uv_region_masks)
from .checkpoint import CheckpointError, check_avatar_state, check_shapes

REGIONS = ("eye_region", "nose", "lips", "forehead")


@dataclass
class View:
    """A camera and its ground truth at the training resolution."""

    timestep: int
    viewmat: torch.Tensor  # [4,4]
    K: torch.Tensor        # [3,3]
    width: int
    height: int
    image: torch.Tensor    # [3,H,W] uint8 (CHW), decoded lazily into float when used


def build_head_model(cfg) -> FlameModel:
    """The head model named by cfg.model.head_model ("open_head" or a FLAME file path), with the UV
    layout of cfg.model.uv_obj and the region vertex sets of cfg.model.flame_masks when given.

    Raises:
        FlameFileError (a ValueError): a bad model, OBJ or masks file (named in the message).
    """
    m = cfg.model
    if m.head_model == "open_head":
        data = make_open_head()
        if m.flame_masks:
            data.update({f"region_{k}": v for k, v in
                         load_flame_masks(m.flame_masks, data["v_template"].shape[0]).items()})
        return FlameModel(data, n_shape=m.n_shape, n_expr=m.n_expr, add_teeth=m.add_teeth, source="open_head")
    return FlameModel.from_file(m.head_model, n_shape=m.n_shape, n_expr=m.n_expr, add_teeth=m.add_teeth,
                                uv_obj=m.uv_obj, masks=m.flame_masks or None)


def local_regions(cfg, flame: FlameModel) -> dict:
    """The vertex sets of the local decoder's regions (REGIONS order) for this run.

    Returns {} when cfg.model.local_branch is false (the local decoder is off, Φ_l skipped).
    Raises:
        FlameFileError: the local branch is on but the head model lacks some of REGIONS, naming
            model.flame_masks (FLAME files carry no regions; FLAME_masks.pkl has them) and the switch.
    """
    if not cfg.model.local_branch:
        return {}
    missing = [k for k in REGIONS if k not in flame.regions or flame.regions[k].numel() == 0]
    if missing:
        src = cfg.model.flame_masks or flame.source
        raise FlameFileError(f"{src}: no vertex regions {missing} for the local decoder; give FLAME's "
                             f"FLAME_masks.pkl with model.flame_masks=PATH, or turn the local decoder off "
                             f"with model.local_branch=false")
    return {k: flame.regions[k] for k in REGIONS}


def load_views(frames, scale: float, background) -> list[View]:
    """Decode every frame once (uint8, CHW), resized by `scale` with K scaled to match."""
    views = []
    for f in frames:
        img = torch.from_numpy(f.load_image(background)).permute(2, 0, 1)
        K = torch.as_tensor(f.K, dtype=torch.float32).clone()
        w, h = f.width, f.height
        if scale != 1.0:
            h, w = max(1, round(f.height * scale)), max(1, round(f.width * scale))
            img = F.interpolate(img[None], size=(h, w), mode="area")[0]
            K[0] *= w / f.width
            K[1] *= h / f.height
        views.append(View(f.timestep, torch.as_tensor(f.viewmat, dtype=torch.float32), K, w, h,
                          (img.clamp(0, 1) * 255).round().to(torch.uint8)))
    return views


class Scene(torch.nn.Module):
    """Data + models of one run. Parameters live in `avatar`, `table` and `network`."""

    def __init__(self, cfg, data_root, device: torch.device, generator: torch.Generator):
        super().__init__()
        self.cfg = cfg
        self.device = device
        d = cfg.data
        self.dataset = load_dataset(data_root, test_frames=d.test_frames, test_subdirs=d.test_subdirs)
        splits = self.dataset.splits
        if not splits.get("train"):
            raise ValueError(f"{data_root}: the dataset has no training frames")
        self.flame = build_head_model(cfg).to(device)
        # before decoding images: data tracked with another head model fails here, naming the file
        check_head_model(self.dataset, cfg.model.head_model, self.flame.num_vertices,
                         self.flame.num_template_vertices, cfg.model.n_shape, cfg.model.n_expr,
                         use_static_offset=not cfg.model.disable_static_offset)
        self.soft = cfg.model.binding == "soft"
        self.regions = local_regions(cfg, self.flame) if self.soft else {}  # a FLAME file needs its masks
        self.active_regions: list[str] = []  # the local decoder's non-empty UV masks (soft binding)
        bg = cfg.train.background
        self.train_views = load_views(splits["train"], cfg.train.image_scale, bg)
        test = splits.get("test", [])
        if cfg.train.max_test_frames is not None and len(test) > cfg.train.max_test_frames:
            # evenly spaced, so held-out segments spread over the sequence all stay represented
            keep = np.linspace(0, len(test) - 1, cfg.train.max_test_frames).round().astype(int)
            test = [test[i] for i in keep]
        self.test_views = load_views(test, cfg.train.image_scale, bg)
        m = cfg.model
        self.table = FlameTable(self.dataset.frames, m.n_shape, m.n_expr,
                                use_static_offset=not m.disable_static_offset).to(device)
        with torch.no_grad():  # coefficients without a blendshape carry nothing (test rows hold 0 too)
            self.table.expr[:, ~self.flame.expr_active] = 0.0
        self.avatar = GaussianAvatar(self.flame.faces.shape[0], m.sh_degree, m.init_opacity, generator).to(device)
        self.network = None
        if self.soft:
            self._setup_uv(generator)

    @classmethod
    def from_checkpoint(cls, cfg, ck: dict, device: torch.device, path="checkpoint") -> "Scene":
        """A data-less Scene holding the checkpoint's models (what Scene.gaussians/render need).

        Raises:
            CheckpointError: avatar, FLAME-table or network tensors that do not fit `cfg` (one
                line naming `path`, the checkpoint file).
        """
        scene = cls.__new__(cls)  # no dataset: only what gaussians()/render() need
        torch.nn.Module.__init__(scene)
        scene.cfg, scene.device = cfg, device
        m = cfg.model
        scene.flame = build_head_model(cfg).to(device)
        try:
            scene.table = FlameTable.from_state(ck["table"], m.n_shape, m.n_expr).to(device)
        except (RuntimeError, KeyError, AttributeError, IndexError, TypeError) as exc:
            # torch lists the mismatches on the lines after its heading
            lines = [ln.strip() for ln in str(exc).splitlines() if ln.strip()]
            raise CheckpointError(f"{path}: FLAME table does not fit this config (model.n_shape={m.n_shape}, "
                                  f"model.n_expr={m.n_expr}): {'; '.join(lines[1:3] or lines[:1])}") from None
        av = GaussianAvatar(1, m.sh_degree, m.init_opacity)
        state = ck["avatar"]
        check_avatar_state(path, state, av.state_dict(), scene.flame.faces.shape[0])
        av.set_params({k: state[k] for k in PARAM_NAMES}, state["binding"])
        av.num_faces = scene.flame.faces.shape[0]
        av.uvs = state["uvs"]
        scene.avatar = av.to(device)
        scene.soft = m.binding == "soft"
        scene.network = None
        scene.train_views, scene.test_views = [], []
        if scene.soft:
            fl = scene.flame
            if fl.uv_coords is None:
                raise ValueError("model.head_model: soft binding needs a UV layout (vt/ft in the model, or model.uv_obj)")
            if ck["network"] is None:
                raise KeyError("network state missing for soft binding")
            scene.uv_raster = rasterize_uv(fl.uv_coords, fl.uv_faces, m.uv_size)
            net = UVNetwork(uv_size=m.uv_size, n_expr=m.n_expr)
            check_shapes(path, "network", ck["network"], net.state_dict())
            net.load_state_dict(ck["network"])
            scene.network = net.to(device).eval()
        scene.eval()
        return scene

    # ---------------------------------------------------------------- UV machinery (soft binding)
    def _setup_uv(self, generator) -> None:
        m, fl = self.cfg.model, self.flame
        if fl.uv_coords is None:
            raise ValueError("model.head_model: soft binding needs a UV layout (vt/ft in the model, or model.uv_obj)")
        self.uv_raster = rasterize_uv(fl.uv_coords, fl.uv_faces, m.uv_size)
        self.uv_raster_culled = rasterize_uv(fl.uv_coords, fl.uv_faces, m.uv_size, cull_backfaces=True)
        t0 = min(v.timestep for v in self.train_views)
        with torch.no_grad():
            verts0 = self.posed_vertices(t0)
        uv_pos = uv_position_map(verts0, fl.faces, self.uv_raster)
        regions = {k: self.regions.get(k, torch.zeros(0, dtype=torch.long)) for k in REGIONS}
        masks = uv_region_masks(regions, fl.faces, self.uv_raster, fl.num_vertices)
        self.active_regions = [k for k in REGIONS if bool(masks[k].any())]
        ref = next(v for v in self.train_views if v.timestep == t0).image.float()[None] / 255.0
        self.network = UVNetwork(uv_size=m.uv_size, n_expr=m.n_expr).to(self.device)
        self.network.set_inputs(ref.to(self.device), uv_pos,
                                torch.stack([masks[k] for k in REGIONS])[None].float().to(self.device))
        self.resample_uvs(generator)

    def resample_uvs(self, generator) -> None:
        """Hybrid UV sampling for all Gaussians (method.md Sec. 4.4); no-op for hard binding."""
        if self.soft:
            self.avatar.uvs = sample_gaussian_uvs(self.avatar.binding, self.uv_raster_culled, self.flame.uv_coords,
                                                  self.flame.uv_faces, generator=generator).to(self.device)

    # ---------------------------------------------------------------- per-frame forward
    def posed_vertices(self, timestep: int, params: dict | None = None) -> torch.Tensor:
        p = self.table.row(timestep) if params is None else params
        return self.flame(**p)

    def gaussians(self, timestep: int, params: dict | None = None) -> tuple[dict, dict | None]:
        """θ* of one frame and the activated offsets (None for hard binding)."""
        p = self.table.row(timestep) if params is None else params
        verts = self.flame(**p)
        coarse = self.avatar.coarse(self.flame.triangle_frames(verts))
        if not self.soft:
            return coarse, None
        disp = uv_displacement_map(verts, self.flame.faces, self.uv_raster, self.network.uv_pos)
        pose = network_pose(p["rotation"], p["neck_pose"], p["jaw_pose"], p["eyes_pose"])
        # coefficients without a blendshape reach the network as 0: no per-frame latent (train rows
        # get no gradient there) and nothing the test frames lack
        expr = p["expr"] * self.flame.expr_active.to(p["expr"].dtype)
        omap = self.network(disp, expr, pose, p["translation"])
        q = self.cfg.quirks
        raw = lookup_uv(omap, self.avatar.uvs, flip_v=q.uv_lookup_flip_v, align_corners=q.uv_align_corners)[0]
        offsets = activate_offsets(raw)
        return compose_final(coarse, offsets), offsets

    @torch.no_grad()
    def coarse_scales(self, timestep: int, params: dict | None = None) -> torch.Tensor:
        """[N,3] coarse world scales s̃ = exp(σ) k_f (metres) of one frame, without the network's δs
        (what densification's size test and split noise use, method.md Sec. 10.7)."""
        p = self.table.row(timestep) if params is None else params
        return self.avatar.coarse(self.flame.triangle_frames(self.flame(**p)))["scales"]

    def render(self, view: View, sh_degree: int, params: dict | None = None):
        """Rasterize θ* of `view`'s timestep. Returns (RasterOutput, gaussians, offsets)."""
        g, offsets = self.gaussians(view.timestep, params)
        return self.rasterize_gaussians(view, g, sh_degree), g, offsets

    def rasterize_gaussians(self, view: View, g: dict, sh_degree: int, validate: bool = True):
        """Rasterize the Gaussians `g` (from `gaussians`) into `view`'s camera (RasterOutput);
        `validate` as in `rasterize` (the trainer checks its first step only)."""
        bg = getattr(self, "_background", None)
        if bg is None or bg.device != g["means"].device:  # a constant: built once, not every frame
            bg = self._background = torch.tensor(self.cfg.train.background, device=self.device, dtype=torch.float32)
        return rasterize(g["means"], g["quats"], g["scales"], g["opacities"], sh=g["sh"], sh_degree=sh_degree,
                         viewmat=view.viewmat.to(self.device, non_blocking=True),
                         K=view.K.to(self.device, non_blocking=True), width=view.width,
                         height=view.height, background=bg, validate=validate)

    def canonical_params(self) -> dict:
        """Neutral expression and pose, no translation, the sequence's shape (for the .ply export)."""
        p = {k: torch.zeros_like(v) for k, v in self.table.row(0).items() if torch.is_tensor(v)}
        p["shape"] = self.table.shape
        p["static_offset"] = self.table.static_offset
        return p

    def image_float(self, view: View) -> torch.Tensor:
        # non_blocking: from pageable memory CUDA stages the copy before returning, without a stream sync
        return view.image.to(self.device, non_blocking=True).float() / 255.0
