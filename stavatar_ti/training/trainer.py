"""The STAvatar training loop (method.md Sec. 8-9, 12): losses, optimiser groups, densification,
checkpoints, evaluation and the run outputs of architecture.md Sec. 5."""

from __future__ import annotations

import json
import math
import os
import random
import signal
import tempfile
import time
import warnings
from pathlib import Path

import imageio.v3 as iio
import numpy as np
import torch
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from ..model.gaussians import PARAM_NAMES, write_ply
from ..config import save_config, to_dict
from ..densify import VanillaADC, scene_extent_from_cameras, scene_extent_from_vertices
from ..losses.photometric import lpips_loss, photometric_loss
from ..losses.metrics import psnr
from .checkpoint import (CHECKPOINT_VERSION, CheckpointError, check_avatar_state, check_same_dataset, check_shapes,
                         dataset_fingerprint, load_checkpoint, save_checkpoint)
from .regions import frame_metrics, mean_over_visible, region_masks
from ..render.rasterization import warm_up
from ..render.runtime import init
from .scene import Scene

FLAME_LR = {"expr": "flame_expr_lr", "rotation": "flame_pose_lr", "neck_pose": "flame_pose_lr",
            "jaw_pose": "flame_pose_lr", "eyes_pose": "flame_pose_lr", "translation": "flame_trans_lr"}


class TrainingError(RuntimeError):
    """Training cannot continue (e.g. repeated non-finite losses)."""


def pick_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name == "cuda" and not torch.cuda.is_available():
        raise ValueError("train.device: cuda requested but torch sees no CUDA device")
    return torch.device(name)


def seed_everything(seed: int) -> torch.Generator:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)
    return torch.Generator().manual_seed(seed)


class StepTimer:
    """Wall-clock split of `Trainer.step` into parts (scripts/bench_train.py; `Trainer.enable_timing`).

    Parts (seconds per iteration, in `records`, one dict per step, plus "total" and "densify"):
        network        UV network forward (soft binding; 0 for hard binding)
        gaussians      FLAME/LBS, triangle frames, UV displacement map, UV lookup, offset activation and
                       composition: everything that builds θ* except the network
        render         rasterizer forward
        losses         loss terms (LPIPS included when active)
        backward       loss.backward()
        densify_stats  the densifier's per-iteration statistics (Temporal ADC: fused error map and gather)
        optimizer      optimizer steps, zero_grad, densification and UV resampling when planned,
                       learning-rate update and the PSNR log value
    With `sync` on a CUDA device, torch.cuda.synchronize() runs at every boundary so that the parts
    hold the device time; that slows the step a little, which is why the timer exists only when
    asked for (the normal path has no timer and no added synchronisation).
    """

    PARTS = ("network", "gaussians", "render", "losses", "backward", "densify_stats", "optimizer")

    def __init__(self, device: torch.device, sync: bool = True):
        self.cuda = sync and torch.device(device).type == "cuda"
        self.records: list[dict] = []
        self.current: dict | None = None
        self._t = 0.0
        self._t0 = 0.0

    def _now(self) -> float:
        if self.cuda:
            torch.cuda.synchronize()
        return time.perf_counter()

    def start(self) -> None:
        self.current = dict.fromkeys(self.PARTS, 0.0)
        self._t0 = self._t = self._now()

    def mark(self, part: str) -> None:
        """Charge the time since the previous mark to `part`."""
        if self.current is None:
            return
        t = self._now()
        self.current[part] += t - self._t
        self._t = t

    def stop(self, densified: bool) -> None:
        if self.current is None:
            return
        self.current["total"] = self._now() - self._t0
        self.current["densify"] = bool(densified)
        self.records.append(self.current)
        self.current = None


class _NoTimer:
    """Stands in for StepTimer when timing is off (no checks in the step)."""

    def start(self) -> None:
        pass

    def mark(self, part: str) -> None:
        pass

    def stop(self, densified: bool) -> None:
        pass


_NO_TIMER = _NoTimer()


class Trainer:
    """One training run: `Trainer(cfg, data, out).run()`.

    Outputs in `out` (architecture.md Sec. 5): config.yaml, checkpoints/ (atomic, resumable),
    results.json, renders/{test,gt}/, point_cloud.ply (canonical frame, 3DGS layout).
    """

    def __init__(self, cfg, data_root, out_dir, console: Console | None = None):
        self.cfg = cfg
        self.out = Path(out_dir)
        self.console = console or Console(stderr=True)
        self.device = pick_device(cfg.train.device)
        self.gen = seed_everything(cfg.train.seed)
        self.data_root = Path(data_root)
        if self.device.type == "cuda":  # before any launch: Taichi's pool sized from the Gaussian cap
            from ..temporal.stats import pool_gb
            init("cuda", device_memory_GB=pool_gb(max(cfg.densify.k_max, 1) + 1,
                                                  cfg.densify.max_gaussians))
        self.scene = Scene(cfg, data_root, self.device, self.gen)
        n_train = len(self.scene.train_views)
        self.total = cfg.train.iterations or cfg.train.epochs * n_train
        self.extent = self._extent()
        self.optimizer = self._gaussian_optimizer()
        self.net_optimizer = (torch.optim.Adam(self.scene.network.parameters(), lr=cfg.optim.network_lr)
                              if self.scene.network is not None else None)
        self.densifier = self._make_densifier()
        self.plan = self.densifier.plan(self.scene.train_views, self.total, self.gen)
        self.total = len(self.plan)
        # compile the SH degrees the run reaches (evaluation's included) now, not at each degree step
        warm_up(self.device, range(min(cfg.model.sh_degree, self.total // cfg.model.sh_degree_interval) + 1))
        self._inputs_checked = False  # the first step's rasterize validates its inputs, later ones skip it
        self.iteration = 0
        self.window = None
        self.nan_steps = 0
        self.train_seconds = 0.0
        self.history: list[dict] = []
        self.mid_results: dict = {}  # test_at_N evaluations during the run, kept in checkpoints
        self.data_fingerprint = dataset_fingerprint(self.scene.dataset.frames)
        self.saved_iteration: int | None = None  # iteration of the last checkpoint written
        self.densify_events: list[dict] = []  # one record per densification (results.json "model")
        self.timer: StepTimer | None = None  # set by enable_timing(); None costs nothing
        self._timer_hooks: list = []
        self.resume_hint = "resume with --resume"  # how the caller continues a run (scripts/ablate.py: re-run)

    # ------------------------------------------------------------------ timing (benchmarks)
    def enable_timing(self, sync: bool = True) -> StepTimer:
        """Time every following `step` by part (see StepTimer); returns the timer."""
        self.disable_timing()
        self.timer = StepTimer(self.device, sync)
        net = self.scene.network
        if net is not None:  # the network runs inside Scene.gaussians: time it with module hooks
            self._timer_hooks = [net.register_forward_pre_hook(lambda *_: self.timer and self.timer.mark("gaussians")),
                                 net.register_forward_hook(lambda *_: self.timer and self.timer.mark("network"))]
        return self.timer

    def disable_timing(self) -> None:
        for h in self._timer_hooks:
            h.remove()
        self._timer_hooks = []
        self.timer = None

    # ------------------------------------------------------------------ setup
    def _extent(self) -> float:
        """Scene extent E (metres) and where it came from (`self.extent_source`).

        optim.scene_extent set: that value ("config"; 0 is the official monocular behaviour).
        Unset: 3DGS's camera radius ("cameras"); a static camera gives 0, which would freeze local
        positions and open the split size gate (method.md Sec. 9, quirk 3), so monocular data get
        the tracked head's bounding-sphere radius ("head", scene_extent_from_vertices).
        """
        o = self.cfg.optim
        if o.scene_extent is not None:
            self.extent_source = "config"
            return float(o.scene_extent)
        vm = torch.stack([v.viewmat for v in self.scene.train_views])
        computed = scene_extent_from_cameras(vm)
        if computed > 1e-6:
            self.extent_source = "cameras"
            return computed
        self.extent_source = "head"
        views = self.scene.train_views
        sample = views[:: max(1, len(views) // 32)]  # the head's reach over the sequence, cheaply
        with torch.no_grad():
            verts = torch.cat([self.scene.posed_vertices(v.timestep) for v in sample])
        return scene_extent_from_vertices(verts)

    def _make_densifier(self):
        if self.cfg.densify.densifier == "temporal":
            from ..temporal import TemporalADC
            return TemporalADC(self.cfg.densify, self.cfg.quirks, self.extent, self.scene.table, self.device)
        return VanillaADC(self.cfg.densify, self.extent)

    def _gaussian_optimizer(self) -> torch.optim.Adam:
        o, a, t = self.cfg.optim, self.scene.avatar, self.scene.table
        lrs = {"xyz": o.position_lr_init * self.extent, "features_dc": o.feature_lr,
               "features_rest": o.feature_lr / 20.0, "opacity": o.opacity_lr, "scaling": o.scaling_lr,
               "rotation": o.rotation_lr}
        groups = [{"params": [getattr(a, n)], "lr": lrs[n], "name": n} for n in PARAM_NAMES]
        groups += [{"params": [getattr(t, n)], "lr": getattr(o, key), "name": f"flame_{n}"}
                   for n, key in FLAME_LR.items()]
        return torch.optim.Adam(groups, lr=0.0, eps=o.adam_eps)

    def _update_lr(self) -> None:
        o = self.cfg.optim
        frac = min(1.0, self.iteration / max(1, o.position_lr_max_steps))
        lr = 0.0
        if self.extent > 0:
            lr = math.exp((1 - frac) * math.log(o.position_lr_init * self.extent)
                          + frac * math.log(o.position_lr_final * self.extent))
        for g in self.optimizer.param_groups:
            if g["name"] == "xyz":
                g["lr"] = lr

    # ------------------------------------------------------------------ one iteration
    def loss_terms(self, view, out, g, offsets, gt=None) -> dict:
        c = self.cfg.loss
        img = out.image.permute(2, 0, 1)
        gt = self.scene.image_float(view) if gt is None else gt
        terms = {"photo": photometric_loss(img, gt, lambda_dssim=c.lambda_dssim)}
        if c.lambda_lpips > 0 and self.iteration > c.lpips_start_fraction * self.total:
            terms["lpips"] = c.lambda_lpips * lpips_loss(img[None], gt[None], net=c.lpips_net,
                                                         lpips_input_range=self.cfg.quirks.lpips_input_range).mean()
        if offsets is not None:
            terms["offset_scale"] = c.lambda_offset_scale * (offsets["delta_scales"] - 1).abs().mean()
            terms["offset_color"] = c.lambda_offset_color * offsets["delta_sh_dc"].abs().mean()
        vis = out.radii > 0
        if c.lambda_scale > 0 and vis.any():
            local = torch.exp(self.scene.avatar.scaling[vis])
            terms["scale"] = c.lambda_scale * torch.relu(local - c.scale_threshold).norm(dim=-1).mean()
        return terms

    def step(self) -> dict:
        """One training iteration (method.md Sec. 9 order: backward, densify, step, zero grads)."""
        tm = self.timer or _NO_TIMER
        tm.start()
        plan = self.plan[self.iteration]
        self.iteration += 1
        self._update_lr()
        if plan.window != self.window:
            self.window = plan.window
            self.densifier.start_window(plan.window)
        view = self.scene.train_views[plan.view]
        sh_degree = min(self.cfg.model.sh_degree, (self.iteration - 1) // self.cfg.model.sh_degree_interval)
        tm.mark("optimizer")
        g, offsets = self.scene.gaussians(view.timestep)
        tm.mark("gaussians")
        out = self.scene.rasterize_gaussians(view, g, sh_degree, validate=not self._inputs_checked)
        self._inputs_checked = True
        out.means2d.retain_grad()
        tm.mark("render")
        gt = self.scene.image_float(view)  # once per step (a host-to-device copy on CUDA)
        terms = self.loss_terms(view, out, g, offsets, gt)
        loss = sum(terms.values())
        if not torch.isfinite(loss):
            self.nan_steps += 1
            self._zero_grad()
            warnings.warn(f"iteration {self.iteration}: non-finite loss, step skipped", stacklevel=2)
            if self.nan_steps >= self.cfg.train.max_nan_steps:
                raise TrainingError(f"{self.nan_steps} non-finite losses in a row at iteration {self.iteration}")
            tm.mark("losses")
            tm.stop(False)
            return {"loss": float("nan")}
        self.nan_steps = 0
        tm.mark("losses")
        loss.backward()
        tm.mark("backward")
        image = out.image.detach().permute(2, 0, 1)
        if plan.accumulate:
            self.densifier.accumulate(plan.window, self.scene.avatar, out, out.means2d.grad, image, gt,
                                      view.width, view.height)
            tm.mark("densify_stats")
        densified = None
        if plan.densify:
            # the split test and noise use the coarse world scales s~ (method.md Sec. 10.7), not θ*
            densified = self.densifier.densify(plan.window, self.scene.avatar, self.optimizer,
                                               self.scene.coarse_scales(view.timestep), self.gen)
            self.densify_events.append({"iteration": self.iteration, "window": plan.window, **densified,
                                        "num_gaussians": self.scene.avatar.num_gaussians})
            self.scene.resample_uvs(self.gen)
        else:
            self.optimizer.step()
        self._flame_step_if_densified(densified)
        if self.net_optimizer is not None:
            self.net_optimizer.step()
        self._zero_grad()
        with torch.no_grad():
            p = float(psnr(image.clamp(0, 1), gt))
        tm.mark("optimizer")
        tm.stop(plan.densify)
        return {"loss": float(loss.detach()), "psnr": p, **({"densified": densified} if densified else {})}

    def _flame_step_if_densified(self, densified) -> None:
        """After densification the Gaussian step is skipped but FLAME rows still step (Sec. 9)."""
        if densified is None:
            return
        saved = []
        for gr in self.optimizer.param_groups:
            if not gr["name"].startswith("flame_"):
                saved.append((gr, gr["params"]))
                gr["params"] = []
        self.optimizer.step()
        for gr, params in saved:
            gr["params"] = params

    def _zero_grad(self) -> None:
        self.optimizer.zero_grad(set_to_none=True)
        if self.net_optimizer is not None:
            self.net_optimizer.zero_grad(set_to_none=True)

    # ------------------------------------------------------------------ evaluation & outputs
    @torch.no_grad()
    def evaluate(self, write_dir: Path | None = None, mouth: bool = True, frames_out: list | None = None) -> dict:
        """PSNR / SSIM (11x11 Gaussian) / LPIPS-Alex on the test views (tracked parameters) and, when
        `mouth`, on the regions of `training.regions` (mouth and eyes boxes; mouth interior and
        eyelid masks, averaged over the frames where each is visible). Per-frame records
        (regions.frame_metrics plus "timestep") are appended to `frames_out` when given."""
        views = self.scene.test_views
        if not views:
            return {}
        sh_degree = min(self.cfg.model.sh_degree, self.iteration // self.cfg.model.sh_degree_interval)
        rng = self.cfg.quirks.lpips_input_range
        frames = []
        for view in views:
            out, _, _ = self.scene.render(view, sh_degree)
            img = out.image.permute(2, 0, 1).clamp(0, 1)
            gt = self.scene.image_float(view)
            masks = region_masks(self.scene, view) if mouth else {}
            frames.append({"timestep": view.timestep, **frame_metrics(img, gt, masks, rng)})
            if write_dir is not None:
                for sub, im in (("test", img), ("gt", gt)):
                    d = write_dir / sub
                    d.mkdir(parents=True, exist_ok=True)
                    iio.imwrite(d / f"{view.timestep:05d}.png",
                                (im.permute(1, 2, 0).cpu().numpy() * 255).round().astype(np.uint8))
        if frames_out is not None:
            frames_out.extend(frames)
        return mean_over_visible(frames)

    def cluster_psnr(self, per_cluster: int = 3) -> list[float]:
        """Mean PSNR (dB, full image, render clamped to [0, 1]) of every FTC cluster (Temporal ADC's
        `clusters`, in schedule order) on up to `per_cluster` of its training frames, evenly spaced
        in the cluster: the rows of the forgetting matrix (`train.cluster_phase_eval`, issue 21)."""
        position = {v.timestep: i for i, v in enumerate(self.scene.train_views)}
        sh_degree = min(self.cfg.model.sh_degree, self.iteration // self.cfg.model.sh_degree_interval)
        means = []
        with torch.no_grad():
            for cluster in self.densifier.clusters:
                pick = np.linspace(0, len(cluster) - 1, min(per_cluster, len(cluster))).round().astype(int)
                vals = []
                for t in np.asarray(cluster)[pick]:
                    view = self.scene.train_views[position[int(t)]]
                    out, _, _ = self.scene.render(view, sh_degree)
                    vals.append(float(psnr(out.image.permute(2, 0, 1).clamp(0, 1), self.scene.image_float(view))))
                means.append(float(np.mean(vals)))
        return means

    def export_ply(self, path: Path) -> None:
        with torch.no_grad():
            g, _ = self.scene.gaussians(0, self.scene.canonical_params())
            write_ply(path, g["means"], g["scales"], g["quats"], g["sh"], g["opacities"])

    def run_info(self) -> dict:
        """What ran (results.json "model", architecture.md Sec. 7): the head model's source and
        vertex / face / expression counts, the regions the local decoder used, the scene extent and
        where it came from, one record per densification event, the LPIPS backbones and the metric
        convention."""
        fl, c = self.scene.flame, self.cfg
        lpips_loss_on = c.loss.lambda_lpips > 0 and c.loss.lpips_start_fraction < 1
        return {
            "source": fl.source, "num_vertices": fl.num_vertices, "num_faces": int(fl.faces.shape[0]),
            "num_expressions": fl.n_expr, "active_expressions": int(fl.expr_active.sum()),
            "teeth": fl.has_teeth, "uv_layout": c.model.uv_obj or ("model file" if fl.uv_coords is not None else None),
            "flame_masks": c.model.flame_masks,
            "regions": list(self.scene.active_regions),
            "scene_extent": self.extent, "scene_extent_source": self.extent_source,
            "densification": self.densify_events,
            "lpips": {"loss": c.loss.lpips_net if lpips_loss_on else None, "metric": "alex",
                      "input_range": c.quirks.lpips_input_range},
            "metric_convention": "full images with the training background, no masks; render clamped to [0,1]; "
                                 "PSNR data range 1; SSIM 11x11 Gaussian (sigma 1.5); LPIPS v0.1 AlexNet "
                                 f"with {c.quirks.lpips_input_range} input; regions as in training/regions.py",
        }

    # ------------------------------------------------------------------ checkpoints
    def state(self) -> dict:
        return {
            "version": CHECKPOINT_VERSION, "iteration": self.iteration, "config": to_dict(self.cfg),
            "avatar": self.scene.avatar.state_dict(), "table": self.scene.table.state_dict(),
            "network": self.scene.network.state_dict() if self.scene.network is not None else None,
            "optimizer": self.optimizer.state_dict(),
            "net_optimizer": self.net_optimizer.state_dict() if self.net_optimizer is not None else None,
            "generator": self.gen.get_state(), "window": self.window, "train_seconds": self.train_seconds,
            "densifier": self.densifier.state(),
            "history": self.history, "densify_events": self.densify_events,
            "results": self.mid_results, "data": str(self.data_root.resolve()),
            "data_fingerprint": self.data_fingerprint,
        }

    def restore(self, path: Path) -> None:
        """Continue from the checkpoint `path`.

        Raises:
            CheckpointError: one line naming the file: unreadable, another version or binding,
                trained on another dataset, or tensors (avatar, FLAME table, network) whose shapes
                do not fit this run.
        """
        ck = load_checkpoint(path, self.cfg)
        missing = [k for k in ("avatar", "table", "network", "optimizer", "generator", "iteration", "window",
                               "train_seconds", "densifier", "history") if k not in ck]
        if missing:
            raise CheckpointError(f"{path}: not a stavatar_ti training checkpoint (missing {missing})")
        note = check_same_dataset(path, ck, self.data_root, self.data_fingerprint)
        if note:
            self.console.print(f"warning: {note}")
        avatar = self.scene.avatar
        n = check_avatar_state(path, ck["avatar"], avatar.state_dict(), self.scene.flame.faces.shape[0])
        check_shapes(path, "table", ck["table"], self.scene.table.state_dict())
        if self.scene.network is not None:
            check_shapes(path, "network", ck["network"], self.scene.network.state_dict())
        avatar.set_params({k: ck["avatar"][k] for k in PARAM_NAMES}, ck["avatar"]["binding"])
        avatar.uvs = ck["avatar"]["uvs"].to(self.device)
        assert avatar.num_gaussians == n
        self.scene.table.load_state_dict(ck["table"])
        if self.scene.network is not None:
            self.scene.network.load_state_dict(ck["network"])
            self.net_optimizer.load_state_dict(ck["net_optimizer"])
        self.optimizer = self._gaussian_optimizer()
        self.optimizer.load_state_dict(ck["optimizer"])
        self.gen.set_state(ck["generator"])
        self.iteration, self.window = ck["iteration"], ck["window"]
        self.train_seconds = ck["train_seconds"]
        self.densifier.load_state(ck["densifier"])
        self.history = ck["history"]
        self.densify_events = ck.get("densify_events", [])
        self.mid_results = dict(ck.get("results") or {})
        self.saved_iteration = self.iteration

    def state_is_finite(self) -> bool:
        """Whether every parameter of the avatar, the FLAME table and the network is finite."""
        modules = [self.scene.avatar, self.scene.table] + ([self.scene.network] if self.scene.network is not None else [])
        return all(bool(torch.isfinite(p).all()) for m in modules for p in m.parameters() if p.is_floating_point())

    def checkpoint(self) -> Path:
        """Write checkpoints/last.pt (atomically) and return its path. A state holding NaN or inf is
        not written: last.pt then stays the last finite state (a warning says so)."""
        path = self.out / "checkpoints" / "last.pt"
        if not self.state_is_finite():
            warnings.warn(f"iteration {self.iteration}: parameters hold NaN or inf; {path} keeps the last "
                          f"finite state (iteration {self.saved_iteration})", stacklevel=2)
            return path
        save_checkpoint(self.state(), path)
        self.saved_iteration = self.iteration
        return path

    def save_on_failure(self) -> str:
        """After a failure: save the current state if it is finite (checkpoints/last.pt, else
        OUT/failure.pt, else the system's temporary folder, for a read-only or full disk), otherwise
        point to the last finite checkpoint. Returns a sentence saying where."""
        last = self.out / "checkpoints" / "last.pt"
        if not self.state_is_finite():
            if last.is_file() and self.saved_iteration is not None:
                return (f"the state at iteration {self.iteration} holds NaN or inf; the last finite checkpoint is "
                        f"{last} (iteration {self.saved_iteration}); {self.resume_hint}")
            return f"the state at iteration {self.iteration} holds NaN or inf and no finite checkpoint was written"
        fallback = Path(tempfile.gettempdir()) / f"stavatar_ti-{self.out.resolve().name}-{os.getpid()}.pt"
        failed = []
        for path in (last, self.out / "failure.pt", fallback):
            try:
                save_checkpoint(self.state(), path)
            except Exception as exc:  # noqa: BLE001 - any reason the file cannot be written
                failed.append(f"{path}: {exc}")
                continue
            if path == last:
                self.saved_iteration = self.iteration
                return f"checkpoint of iteration {self.iteration} saved to {path}; {self.resume_hint}"
            return (f"checkpoint of iteration {self.iteration} saved to {path} ({failed[0]}); copy it to "
                    f"{last}, then {self.resume_hint}")
        return "no checkpoint could be saved (" + "; ".join(failed) + ")"

    # ------------------------------------------------------------------ the run
    def run(self, resume: bool = False, overwrite: bool = False) -> dict:
        """Train to the end (or resume), evaluate, and write the outputs. Returns results.json.

        `resume` continues from OUT/checkpoints/last.pt; `overwrite` replaces the outputs of an
        earlier run in OUT. Before the first iteration the LPIPS weights, the output folder and its
        free space are checked (training.preflight; scripts/train.py checks the data too).

        Raises:
            PreflightError: OUT holds a run and neither `resume` nor `overwrite` is set, or a
                preflight check fails (nothing is written then).
            CheckpointError: `resume` with a checkpoint that does not fit this run.
            TrainingError: any failure after the first iteration; the state was saved first
                (checkpoints/last.pt when finite, else the last finite one stays) and the one-line
                message says where.
        """
        self._loop_start = None
        try:
            return self._run(resume, overwrite)
        except BaseException as exc:
            if self._loop_start is None or self.iteration <= self._loop_start:
                raise  # nothing trained in this call: the folder holds what it held
            where = self.save_on_failure()
            if not isinstance(exc, Exception):  # KeyboardInterrupt, SystemExit: say where, keep the exit
                self.console.print(f"stopped at iteration {self.iteration}: {where}")
                raise
            lines = [ln.strip() for ln in str(exc).splitlines() if ln.strip()]
            what = str(exc).strip() if isinstance(exc, TrainingError) else \
                f"{type(exc).__name__}: {lines[0] if lines else ''}".rstrip(": ")
            raise TrainingError(f"{what} (iteration {self.iteration}); {where}") from exc

    def _run(self, resume: bool, overwrite: bool) -> dict:
        from .preflight import (MARGIN_BYTES, check_lpips, check_output_folder, check_run_folder,
                                clear_run_outputs, estimate_checkpoint_bytes)
        check_run_folder(self.out, resume, overwrite)
        for note in check_lpips(self.cfg):
            self.console.print(f"warning: {note}")
        fl = self.scene.flame
        check_output_folder(self.out, 2 * estimate_checkpoint_bytes(self.cfg, int(fl.faces.shape[0]),
                                                                    self.scene.table.expr.shape[0],
                                                                    fl.num_vertices) + MARGIN_BYTES)
        last = self.out / "checkpoints" / "last.pt"
        if resume and last.exists():
            self.restore(last)  # before anything is written: a bad checkpoint leaves OUT as it was
            self.console.print(f"resumed from {last} at iteration {self.iteration}")
        elif resume:
            self.console.print(f"--resume: no checkpoint in {last.parent}; starting at iteration 0")
        if not resume and overwrite:
            clear_run_outputs(self.out)
        self.out.mkdir(parents=True, exist_ok=True)
        save_config(self.cfg, self.out / "config.yaml")
        evals = {round(f * self.total) for f in self.cfg.train.eval_fractions if 0 < f < 1}
        phase_ends = ([i for i in self.densifier.phase_ends() if i < self.total] + [self.total]
                      if self.cfg.train.cluster_phase_eval else [])
        interrupted = {"flag": False}
        previous = signal.getsignal(signal.SIGINT)

        def on_sigint(signum, frame):  # finish the current iteration, then save and stop
            interrupted["flag"] = True

        try:
            signal.signal(signal.SIGINT, on_sigint)
        except ValueError:  # not the main thread
            previous = None
        results = self.mid_results  # test_at_N evaluations, carried across resumes by the checkpoint
        self._loop_start = self.iteration
        try:
            with Progress(TextColumn("[bold]train"), BarColumn(), MofNCompleteColumn(),
                          TextColumn("{task.fields[info]}"), TimeElapsedColumn(), console=self.console,
                          transient=False, disable=not self.console.is_terminal) as bar:
                task = bar.add_task("train", total=self.total, completed=self.iteration, info="")
                recent = []
                # without a terminal (a log file) the bar is off: plain lines every 5 % and at least every minute
                every, last_line = max(1, self.total // 20), time.monotonic()
                while self.iteration < self.total:
                    t0 = time.perf_counter()
                    info = self.step()
                    self.train_seconds += time.perf_counter() - t0
                    recent = (recent + [info.get("psnr", float("nan"))])[-50:]
                    rate = self.iteration / max(self.train_seconds, 1e-9)
                    bar.update(task, completed=self.iteration,
                               info=f"{rate:.1f} it/s  loss {info['loss']:.4f}  psnr {np.nanmean(recent):.2f}  "
                                    f"#G {self.scene.avatar.num_gaussians}")
                    if not self.console.is_terminal and (self.iteration % every == 0 or self.iteration == self.total
                                                         or time.monotonic() - last_line >= 60):
                        last_line = time.monotonic()
                        self.console.print(f"iteration {self.iteration}/{self.total}  loss {info['loss']:.4f}  "
                                           f"psnr {np.nanmean(recent):.2f}  {rate:.2f} it/s  "
                                           f"#G {self.scene.avatar.num_gaussians}  elapsed {self.train_seconds:.0f} s",
                                           highlight=False, soft_wrap=True)
                    if self.iteration % 25 == 0 or self.iteration == 1:
                        self.history.append({"iteration": self.iteration, "loss": info["loss"],
                                             "psnr": info.get("psnr")})
                    if self.iteration in evals:
                        self.mid_results[f"test_at_{self.iteration}"] = self.evaluate()
                    if self.iteration in phase_ends:
                        self.mid_results.setdefault("cluster_phases", []).append(
                            {"iteration": self.iteration, "after_cluster": phase_ends.index(self.iteration),
                             "psnr": self.cluster_psnr()})
                    if self.iteration % self.cfg.train.checkpoint_every == 0:
                        self.checkpoint()
                    if interrupted["flag"]:
                        path = self.checkpoint()
                        self.console.print(f"interrupted: checkpoint saved to {path}; {self.resume_hint}")
                        return {"interrupted": True, "iteration": self.iteration}
        finally:
            if previous is not None:
                signal.signal(signal.SIGINT, previous)
        self.checkpoint()
        frames = []
        results["test"] = self.evaluate(self.out / "renders", frames_out=frames)
        results["test_frames"] = frames
        results.update({"num_gaussians": self.scene.avatar.num_gaussians, "iterations": self.iteration,
                        "train_seconds": self.train_seconds, "binding": self.cfg.model.binding,
                        "data": str(self.data_root.resolve()),
                        "densifier": self.cfg.densify.densifier, "device": str(self.device),
                        "peak_gpu_memory_mib": (torch.cuda.max_memory_allocated(self.device) / 2**20
                                                if self.device.type == "cuda" else None),
                        "model": self.run_info(),
                        "history": self.history})
        self.export_ply(self.out / "point_cloud.ply")
        tmp = self.out / "results.tmp"
        tmp.write_text(json.dumps(results, indent=2))
        tmp.replace(self.out / "results.json")
        return results
