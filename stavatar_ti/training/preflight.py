"""Preflight: everything a training run will need, checked before its first iteration
(architecture.md Sec. 7), so that nothing fails at half-time for a reason knowable at the start.

    preflight(cfg, data_root, out, resume=False, overwrite=False) -> PreflightReport

Checks, in order (the first failure raises a one-line error naming the file, key or flag):
1. the run folder: one holding a run (checkpoints/last.pt or results.json) is continued only with
   --resume and replaced only with --overwrite (`check_run_folder`);
2. the device: train.device=cuda needs a CUDA device visible to torch;
3. the data: the dataset loads and every image and mask decodes at its recorded size
   (`stavatar_ti.data.check`, the same checks as scripts/check_dataset.py);
4. the head model: the FLAME / UV / masks files named by the config load, and soft binding has a UV
   layout;
5. LPIPS: the backbone weights of an LPIPS loss term that will switch on (loss.lambda_lpips > 0 and
   loss.lpips_start_fraction < 1) must be cached and valid; the metric's (AlexNet) missing weights
   only warn (the evaluation reports LPIPS as null), a corrupt file is an error;
6. the output folder: writable (a probe file is created and removed) with free space for two
   checkpoints (the atomic write holds the old and the new) and the .ply, estimated from
   densify.max_gaussians (`estimate_checkpoint_bytes`, `shutil.disk_usage`).
Nothing is created or written by the checks.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

import torch

from ..data.check import check_dataset
from ..losses.lpips import backbone_path, fetch_command, load_backbone_state
from ..model.gaussians import GaussianAvatar
from ..model.uv_network import UVNetwork
from . import scene as scene_module
from .scene import build_head_model

__all__ = ["PreflightError", "PreflightReport", "RUN_OUTPUTS", "check_run_folder", "clear_run_outputs",
           "check_device", "check_lpips", "check_output_folder", "estimate_checkpoint_bytes", "preflight"]

# What a training run writes into its folder (Trainer.run; architecture.md Sec. 5).
RUN_OUTPUTS = ("checkpoints", "results.json", "results.tmp", "config.yaml", "renders", "point_cloud.ply",
               "failure.pt")
METRIC_LPIPS_NET = "alex"  # the evaluation's LPIPS backbone (losses.metrics.lpips_metric default)
MARGIN_BYTES = 16 << 20    # config, results.json, renders of the test frames


class PreflightError(ValueError):
    """A run that would fail later; the message names the file, key or flag and what to do."""


@dataclass
class PreflightReport:
    """What preflight checked (`checked`, one short line each) and what it warns about (`warnings`)."""

    checked: list = field(default_factory=list)
    warnings: list = field(default_factory=list)
    checkpoint_bytes: int = 0


def holds_run(out) -> bool:
    """Whether `out` holds a training run (a checkpoint or results.json)."""
    out = Path(out)
    return (out / "checkpoints" / "last.pt").is_file() or (out / "results.json").is_file()


def check_run_folder(out, resume: bool = False, overwrite: bool = False) -> None:
    """Refuse to write a run into a folder that already holds one unless asked to.

    Raises:
        PreflightError: `out` is a file, or holds a run (checkpoints/last.pt or results.json) and
            neither `resume` (--resume) nor `overwrite` (--overwrite) is set.
    """
    out = Path(out)
    if out.exists() and not out.is_dir():
        raise PreflightError(f"{out}: --out is a file, expected a folder")
    if holds_run(out) and not (resume or overwrite):
        what = "checkpoints/last.pt" if (out / "checkpoints" / "last.pt").is_file() else "results.json"
        raise PreflightError(f"{out}: already holds a training run ({what}); pass --resume to continue it "
                             f"or --overwrite to replace it")


def clear_run_outputs(out) -> None:
    """Delete the outputs of an earlier run in `out` (RUN_OUTPUTS only; other files stay)."""
    out = Path(out)
    for name in RUN_OUTPUTS:
        p = out / name
        if p.is_dir() and not p.is_symlink():
            shutil.rmtree(p)
        elif p.exists() or p.is_symlink():
            p.unlink()


def check_device(cfg) -> None:
    """Raises PreflightError when train.device=cuda but torch sees no CUDA device."""
    if cfg.train.device == "cuda" and not torch.cuda.is_available():
        build = f"CUDA {torch.version.cuda}" if torch.version.cuda else "a CPU-only build"
        raise PreflightError(f"train.device: cuda requested but torch {torch.__version__} ({build}) sees no "
                             f"CUDA device; use train.device=cpu or install the torch build for your CUDA")


def lpips_loss_net(cfg) -> str | None:
    """The LPIPS backbone of the loss term when it will switch on during the run, else None."""
    c = cfg.loss
    return c.lpips_net if c.lambda_lpips > 0 and c.lpips_start_fraction < 1 else None


def check_lpips(cfg, cache_dir=None) -> list[str]:
    """Check the cached LPIPS weights the run will use (see the module docstring, item 5).

    Returns:
        warnings (missing metric weights: LPIPS will be reported as null).
    Raises:
        PreflightError: the loss term's weights are missing (naming loss.lambda_lpips, the file and
            the fetch command). ValueError: a cached weight file is corrupt (naming it and the fetch
            command).
    """
    warnings = []
    net = lpips_loss_net(cfg)
    if net is not None:
        path = backbone_path(net, cache_dir)
        if not path.is_file():
            raise PreflightError(
                f"loss.lambda_lpips={cfg.loss.lambda_lpips}: the LPIPS loss switches on at "
                f"{cfg.loss.lpips_start_fraction:g} of the run but its {net!r} weights {path} are missing; fetch "
                f"them once with: python scripts/fetch_lpips_weights.py (or set loss.lambda_lpips=0)")
        load_backbone_state(net, cache_dir)
    if net != METRIC_LPIPS_NET:
        path = backbone_path(METRIC_LPIPS_NET, cache_dir)
        if path.is_file():
            load_backbone_state(METRIC_LPIPS_NET, cache_dir)
        else:
            warnings.append(f"LPIPS will be reported as null: {path} not found; fetch the weights once with: "
                            f"{fetch_command()}")
    return warnings


def estimate_checkpoint_bytes(cfg, num_faces: int, num_timesteps: int, num_vertices: int = 0) -> int:
    """Upper estimate of checkpoints/last.pt in bytes: densify.max_gaussians (at least one per face)
    Gaussians with their parameters and two Adam moments (float32), binding (int64) and UVs, the UV
    network with its Adam moments (soft binding), and the per-frame FLAME table with its moments."""
    m = cfg.model
    n = max(cfg.densify.max_gaussians, num_faces)
    per_gaussian = sum(p[0].numel() for p in GaussianAvatar(1, m.sh_degree).parameters())
    total = n * (per_gaussian * 4 * 3 + 8 + 2 * 4)
    if m.binding == "soft":
        net = UVNetwork(uv_size=m.uv_size, n_expr=m.n_expr)
        total += sum(p.numel() for p in net.parameters()) * 4 * 3 + sum(b.numel() for b in net.buffers()) * 4
    per_frame = m.n_expr + 3 + 3 + 3 + 6 + 3
    total += (num_timesteps * per_frame * 3 + m.n_shape + num_vertices * 3) * 4
    return int(total)


def _nearest_existing(path: Path) -> Path:
    p = path.absolute()
    while not p.exists():
        p = p.parent
    return p


def check_output_folder(out, needed_bytes: int) -> None:
    """`out` (or, when it does not exist yet, the folder it would be created in) is writable and its
    file system has `needed_bytes` free. A probe file is created and removed; nothing else is written.

    Raises:
        PreflightError: naming the folder (not writable, not a folder, or too little space).
    """
    out = Path(out)
    base = _nearest_existing(out)
    if not base.is_dir():
        raise PreflightError(f"{base}: --out must be a folder (or inside one), this is a file")
    probes = [base] + ([out / "checkpoints"] if (out / "checkpoints").is_dir() else [])
    for folder in probes:
        try:
            fd, probe = tempfile.mkstemp(prefix=".stavatar_probe_", dir=folder)
            os.close(fd)
            os.unlink(probe)
        except OSError as exc:
            raise PreflightError(f"{folder}: output folder is not writable ({exc.strerror or exc}); "
                                 f"choose another --out") from None
    free = shutil.disk_usage(base).free
    if free < needed_bytes:
        raise PreflightError(f"{base}: {free / 2**20:.0f} MiB free, the run needs about {needed_bytes / 2**20:.0f} MiB "
                             f"for checkpoints and outputs (estimated from densify.max_gaussians); free space "
                             f"or choose another --out")


def preflight(cfg, data_root, out, resume: bool = False, overwrite: bool = False, images: bool = True,
              lpips_cache_dir=None) -> PreflightReport:
    """Run every check of the module docstring for a run of `cfg` on `data_root` into `out`.

    Args:
        cfg: the loaded Config. data_root: dataset folder. out: the run folder.
        resume / overwrite: the --resume / --overwrite flags. images: decode every image (False:
            only the first of each split; for callers that decode them all anyway).
        lpips_cache_dir: where the LPIPS weights are cached (default: the user cache).
    Returns:
        PreflightReport.
    Raises:
        PreflightError, DatasetError, FlameFileError (all ValueErrors): one line naming the file,
            key or flag.
    """
    rep = PreflightReport()
    check_run_folder(out, resume, overwrite)
    check_device(cfg)
    data = check_dataset(data_root, check_images=images, test_frames=cfg.data.test_frames,
                         test_subdirs=cfg.data.test_subdirs)   # the split the run will use
    if data.split_counts.get("train", 0) == 0:
        raise PreflightError(f"{data_root}: the dataset has no training frames")
    rep.checked.append(f"data: {data.images_checked} images decoded ({data.format})")
    flame = build_head_model(cfg)
    if cfg.model.binding == "soft" and flame.uv_coords is None:
        raise PreflightError(f"model.head_model: {cfg.model.head_model} has no UV layout, which soft binding "
                             f"needs; give model.uv_obj=head_template_mesh.obj or use model.binding=hard")
    if cfg.model.binding == "soft" and hasattr(scene_module, "local_regions"):
        scene_module.local_regions(cfg, flame)  # the local decoder's region vertex sets (masks file)
    rep.checked.append(f"head model: {cfg.model.head_model} ({flame.num_vertices} vertices)")
    rep.warnings += check_lpips(cfg, lpips_cache_dir)
    rep.checked.append("LPIPS weights")
    rep.checkpoint_bytes = estimate_checkpoint_bytes(cfg, int(flame.faces.shape[0]), data.timesteps,
                                                     flame.num_vertices)
    check_output_folder(out, 2 * rep.checkpoint_bytes + MARGIN_BYTES)
    rep.checked.append(f"output folder {out} (checkpoint about {rep.checkpoint_bytes / 2**20:.0f} MiB)")
    return rep
