"""Use a trained avatar: load a run, pose it, render it, drive it with another sequence, export it.

    avatar = Avatar.load("out/run")                       # checkpoint + config.yaml, no training images
    p = avatar.params(t)                                  # the fine-tuned parameter-table row of timestep t
    g = avatar.gaussians(p)                               # θ* (means, scales, quats, sh, opacities)
    out = avatar.render(p, viewmat, K, width, height)     # stavatar_ti.RasterOutput
    mesh = avatar.posed_mesh(p)                           # Mesh(vertices [V,3], faces [F,3])
    driven = avatar.drive_params(target_frames)           # cross-reenactment parameters

The models are the ones of `stavatar_ti.training.scene.Scene` (head model, parameter table,
GaussianAvatar, UVNetwork) rebuilt from the checkpoint's state dicts; θ* is computed by
`Scene.gaussians` itself, so rendering here and in training are the same code.

The helpers of the command-line tools (data-folder resolution, split views, strips, MP4 / OBJ
writing, the evaluation loop) live in `stavatar_ti.tools`.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from ..render import rasterize
from ..model.gaussians import write_ply
from ..config import Config, ConfigError, load_config, set_value, to_dict, validate
from ..model.flame_table import DYNAMIC, fit_size
from ..training.checkpoint import load_checkpoint
from ..training.scene import Scene
from ..tools.media import write_obj

__all__ = ["Avatar", "Mesh"]

CHECKPOINT = Path("checkpoints") / "last.pt"
PARAM_KEYS = ("shape", "expr", "rotation", "neck_pose", "jaw_pose", "eyes_pose", "translation")


@dataclass
class Mesh:
    """A posed head mesh: vertices [V,3] float32 (metres, world), faces [F,3] int64 (0-based)."""

    vertices: torch.Tensor
    faces: torch.Tensor


def _config_from_dict(d: dict, source: str) -> Config:
    cfg = Config()
    for section, values in d.items():
        if not isinstance(values, dict):
            raise ConfigError(f"{source}: section {section!r} must be a mapping")
        for name, value in values.items():
            set_value(cfg, f"{section}.{name}", value, source)
    validate(cfg)
    return cfg


def _as_tensor(x, device, name: str) -> torch.Tensor:
    try:
        return torch.as_tensor(np.asarray(x) if not torch.is_tensor(x) else x, dtype=torch.float32).to(device)
    except (TypeError, ValueError):
        raise ValueError(f"{name}: expected a numeric array, got {type(x).__name__}") from None


class Avatar:
    """A trained avatar, loaded with :meth:`load`; everything runs without gradients.

    Attributes:
        config: the run's Config. device: torch device. run_dir: the run folder.
        scene: the models as a data-less `Scene` (flame, table, avatar, network, uv_raster), e.g. for
            `stavatar_ti.training.regions.region_box(avatar.scene, view)`.
        sh_degree: the SH degree active at the end of training. iteration: trained iterations.
    """

    def __init__(self, scene: Scene, cfg: Config, iteration: int, run_dir: Path | None = None):
        self.scene, self.config, self.iteration, self.run_dir = scene, cfg, iteration, run_dir
        self.device = scene.device
        m = cfg.model
        self.sh_degree = min(m.sh_degree, iteration // m.sh_degree_interval)
        self.background = torch.tensor(cfg.train.background, dtype=torch.float32, device=self.device)

    # ------------------------------------------------------------------ loading
    @classmethod
    def load(cls, path, device=None) -> "Avatar":
        """Load a training run (a folder with checkpoints/last.pt and config.yaml, or a .pt file).

        The config comes from `config.yaml` next to the checkpoint when present (its model section
        must match the checkpoint's), else from the checkpoint. No training data is needed.

        Raises:
            ValueError (CheckpointError / ConfigError are subclasses): a missing folder or file, an
                unreadable or foreign checkpoint, or a config that does not match; the message names
                the file.
        """
        path = Path(path)
        if path.is_dir():
            run_dir, ck_path = path, path / CHECKPOINT
        elif path.suffix == ".pt":
            ck_path = path
            run_dir = path.parent.parent if path.parent.name == "checkpoints" else path.parent
        else:
            raise ValueError(f"{path}: not a training run folder (expected {path / CHECKPOINT})")
        if not ck_path.is_file():
            raise ValueError(f"{ck_path}: checkpoint not found (is {run_dir} a training run folder?)")
        ck = load_checkpoint(ck_path)
        missing = [k for k in ("config", "avatar", "table", "network", "iteration") if k not in ck]
        if missing or not isinstance(ck["config"], dict) or not isinstance(ck["avatar"], dict):
            raise ValueError(f"{ck_path}: not an stavatar_ti training checkpoint (missing {', '.join(missing)})")
        ck_cfg = _config_from_dict(ck["config"], str(ck_path))
        yaml_path = run_dir / "config.yaml"
        cfg = ck_cfg
        if yaml_path.is_file():
            cfg = load_config(yaml_path)
            if to_dict(cfg)["model"] != to_dict(ck_cfg)["model"]:
                raise ValueError(f"{yaml_path}: model section differs from the checkpoint {ck_path}")
        if device is None:
            device = "cuda" if torch.cuda.is_available() else "cpu"
        try:
            scene = Scene.from_checkpoint(cfg, ck, torch.device(device), path=ck_path)
        except (KeyError, RuntimeError, TypeError) as exc:
            why = " ".join(str(exc).split())  # one line: torch's state-dict errors span several
            raise ValueError(f"{ck_path}: checkpoint does not fit its config ({type(exc).__name__}: {why})") from None
        return cls(scene, cfg, int(ck["iteration"]), run_dir)

    # ------------------------------------------------------------------ properties
    @property
    def num_gaussians(self) -> int:
        return self.scene.avatar.num_gaussians

    @property
    def num_timesteps(self) -> int:
        """Rows of the parameter table (timesteps 0 .. num_timesteps-1)."""
        return self.scene.table.expr.shape[0]

    # ------------------------------------------------------------------ parameters
    def params(self, timestep: int) -> dict:
        """The fine-tuned parameter-table row of `timestep` (keyword arguments of FlameModel.forward,
        batch 1, detached copies)."""
        if isinstance(timestep, bool) or not isinstance(timestep, (int, np.integer)) \
                or not 0 <= timestep < self.num_timesteps:
            raise ValueError(f"timestep: expected an int in [0, {self.num_timesteps}), got {timestep!r}")
        row = self.scene.table.row(int(timestep))
        return {k: (v.detach().clone() if torch.is_tensor(v) else v) for k, v in row.items()}

    def canonical_params(self) -> dict:
        """Neutral expression and pose, no translation, the avatar's shape (Scene.canonical_params)."""
        with torch.no_grad():
            return {k: (v.detach().clone() if torch.is_tensor(v) else v)
                    for k, v in self.scene.canonical_params().items()}

    def _params(self, params) -> dict:
        if isinstance(params, (int, np.integer)) and not isinstance(params, bool):
            return self.params(params)
        if not isinstance(params, dict):
            raise ValueError(f"params: expected a dict of head-model parameters or a timestep, got "
                             f"{type(params).__name__}")
        missing = [k for k in PARAM_KEYS if k not in params]
        if missing:
            raise ValueError(f"params: missing {', '.join(missing)}")
        out = {k: _as_tensor(params[k], self.device, k) for k in PARAM_KEYS}
        off = params.get("static_offset", self.scene.table.static_offset)
        out["static_offset"] = None if off is None else _as_tensor(off, self.device, "static_offset")
        return out

    def drive_params(self, target_frames, reference=None) -> list:
        """Cross-reenactment parameters: the driver's per-frame expression, jaw, eyes, neck, rotation
        and translation with this avatar's shape and static offset.

        The expression is transferred relative to the driver's first frame:
        expr_t = target_expr_t + (source_expr_0 - target_expr_0), i.e. the source's neutral
        (timestep-0 table row) plus the driver's change, so the driver's identity does not leak. With
        the source as driver (this Avatar, or its own table rows) the correction is exactly zero and
        self-reenactment is reproduced bit for bit.

        Args:
            target_frames: an Avatar (all its table rows), a SequenceDataset (all frames, train + val
                + test, one per (timestep, camera), sorted), or a list of FrameRecords (their tracked
                `params`) or of parameter dicts.
            reference: the driver's neutral frame (same kinds as one item); default: the first item.
        Returns:
            list of parameter dicts (batch 1), one per target frame, for `gaussians`/`render`.
        """
        items = self._driver_items(target_frames)
        if not items:
            raise ValueError("target_frames: no frames")
        ref = self._driver_row(items[0] if reference is None else reference)
        src = self.params(0)
        correction = src["expr"] - ref["expr"]
        out = []
        for item in items:
            row = self._driver_row(item)
            p = {k: row[k] for k in DYNAMIC}
            p["expr"] = row["expr"] + correction
            p["shape"] = src["shape"]
            p["static_offset"] = src["static_offset"]
            out.append(p)
        return out

    @staticmethod
    def _driver_items(target) -> list:
        if isinstance(target, Avatar):
            return [target.params(t) for t in range(target.num_timesteps)]
        if hasattr(target, "splits") and hasattr(target, "frames"):
            seen, items = set(), []
            for f in sorted(target.frames, key=lambda f: (f.timestep, f.camera)):
                if (f.timestep, f.camera) not in seen:
                    seen.add((f.timestep, f.camera))
                    items.append(f)
            return items
        return list(target)

    def _driver_row(self, item) -> dict:
        m = self.config.model
        sizes = {"expr": m.n_expr, "rotation": 3, "neck_pose": 3, "jaw_pose": 3, "eyes_pose": 6, "translation": 3}
        if hasattr(item, "params") and hasattr(item, "timestep"):  # FrameRecord: tracked parameters
            return {k: torch.from_numpy(fit_size(item.params[k], n))[None].to(self.device) for k, n in sizes.items()}
        if isinstance(item, dict):
            row = {}
            for k, n in sizes.items():
                if k not in item:
                    raise ValueError(f"target_frames: a parameter dict lacks {k!r}")
                v = _as_tensor(item[k], self.device, k).reshape(1, -1)
                if v.shape[1] != n:
                    v = torch.from_numpy(fit_size(v.cpu().numpy(), n))[None].to(self.device)
                row[k] = v
            return row
        raise ValueError(f"target_frames: expected FrameRecords or parameter dicts, got {type(item).__name__}")

    # ------------------------------------------------------------------ posing and rendering
    @torch.no_grad()
    def posed_mesh(self, params) -> Mesh:
        """The posed head mesh of `params` (a dict or a timestep)."""
        verts = self.scene.posed_vertices(0, self._params(params))[0]
        return Mesh(verts, self.scene.flame.faces)

    @torch.no_grad()
    def head_center(self, params) -> np.ndarray:
        """[3] centre of the bounding box of the posed mesh (float64 numpy)."""
        v = self.posed_mesh(params).vertices.double().cpu().numpy()
        return (v.min(0) + v.max(0)) / 2.0

    @torch.no_grad()
    def gaussians(self, params) -> dict:
        """θ* of `params` (dict or timestep): means [N,3], scales [N,3], quats [N,4], sh [N,K,3],
        opacities [N], world space, activated (Scene.gaussians)."""
        g, _ = self.scene.gaussians(0, self._params(params))
        return g

    @torch.no_grad()
    def render(self, params, viewmat, K, width: int, height: int, background=None):
        """Rasterize θ* of `params` into a pinhole camera (OpenCV world->camera `viewmat` [4,4],
        pixel `K` [3,3], numpy or torch). `background` [3] defaults to the training background.
        Returns a stavatar_ti.RasterOutput (image [H,W,3], not clamped)."""
        return self.rasterize_gaussians(self.gaussians(params), viewmat, K, width, height, background)

    @torch.no_grad()
    def rasterize_gaussians(self, g: dict, viewmat, K, width: int, height: int, background=None):
        """Rasterize θ* `g` (the dict of :meth:`gaussians`) as :meth:`render` does, e.g. Gaussians cached
        across camera moves (stavatar_ti.tools.viewer). Returns a stavatar_ti.RasterOutput."""
        bg = self.background if background is None else _as_tensor(background, self.device, "background")
        return rasterize(g["means"], g["quats"], g["scales"], g["opacities"], sh=g["sh"], sh_degree=self.sh_degree,
                         viewmat=_as_tensor(viewmat, self.device, "viewmat"), K=_as_tensor(K, self.device, "K"),
                         width=width, height=height, background=bg)

    def render_image(self, params, viewmat, K, width: int, height: int, background=None) -> np.ndarray:
        """[H,W,3] uint8 render (clamped to [0,1], rounded)."""
        img = self.render(params, viewmat, K, width, height, background).image.clamp(0, 1)
        return (img.cpu().numpy() * 255).round().astype(np.uint8)

    # ------------------------------------------------------------------ export
    @torch.no_grad()
    def export(self, params, ply_path=None, obj_path=None) -> None:
        """Write the posed Gaussians as a 3DGS .ply and/or the posed mesh as an .obj."""
        if ply_path is not None:
            g = self.gaussians(params)
            write_ply(ply_path, g["means"], g["scales"], g["quats"], g["sh"], g["opacities"])
        if obj_path is not None:
            mesh = self.posed_mesh(params)
            write_obj(obj_path, mesh.vertices, mesh.faces)
