"""The STAvatar training loop (method.md Sec. 8-9, 12): losses, optimiser groups, densification,
checkpoints, evaluation and the run outputs of architecture.md Sec. 5."""

from __future__ import annotations

import json
import math
import random
import signal
import time
import warnings
from pathlib import Path

import imageio.v3 as iio
import numpy as np
import torch
import torch.nn.functional as F
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from ..model.gaussians import PARAM_NAMES, write_ply
from ..config import save_config, to_dict
from ..densify import VanillaADC, scene_extent_from_cameras
from ..losses.photometric import lpips_loss, photometric_loss
from ..losses.metrics import lpips_metric, psnr, ssim_metric
from .checkpoint import CHECKPOINT_VERSION, load_checkpoint, save_checkpoint
from .regions import region_box
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
        self.iteration = 0
        self.window = None
        self.nan_steps = 0
        self.train_seconds = 0.0
        self.history: list[dict] = []
        self.timer: StepTimer | None = None  # set by enable_timing(); None costs nothing
        self._timer_hooks: list = []

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
        o = self.cfg.optim
        if o.scene_extent is not None:
            return float(o.scene_extent)
        vm = torch.stack([v.viewmat for v in self.scene.train_views])
        computed = scene_extent_from_cameras(vm)
        # a single static camera (monocular exports) gives 0, which freezes local positions and
        # opens the split size gate (method.md Sec. 9, quirk 3); use a head-sized nominal extent
        # instead unless optim.scene_extent = 0 asks for the official behaviour
        return computed if computed > 1e-6 else 1.0

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
        out = self.scene.rasterize_gaussians(view, g, sh_degree)
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
            densified = self.densifier.densify(plan.window, self.scene.avatar, self.optimizer, g["scales"], self.gen)
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
    def evaluate(self, write_dir: Path | None = None, mouth: bool = True) -> dict:
        """PSNR / SSIM (11x11 Gaussian) / LPIPS-Alex on the test views (tracked parameters), and the
        same on the mouth region (bounding box of the visible lips + teeth; LPIPS on the crop
        resized to 64x64) when `mouth`."""
        views = self.scene.test_views
        if not views:
            return {}
        sh_degree = min(self.cfg.model.sh_degree, self.iteration // self.cfg.model.sh_degree_interval)
        rng = self.cfg.quirks.lpips_input_range
        scores = {k: [] for k in ("psnr", "ssim", "lpips", "mouth_psnr", "mouth_ssim", "mouth_lpips")}
        for view in views:
            out, _, _ = self.scene.render(view, sh_degree)
            img = out.image.permute(2, 0, 1).clamp(0, 1)
            gt = self.scene.image_float(view)
            pairs = [("", img, gt)]
            box = region_box(self.scene, view) if mouth else None
            if box is not None:
                r0, r1, c0, c1 = box
                pairs.append(("mouth_", img[:, r0:r1, c0:c1], gt[:, r0:r1, c0:c1]))
            for prefix, a, b in pairs:
                scores[prefix + "psnr"].append(float(psnr(a, b)))
                scores[prefix + "ssim"].append(float(ssim_metric(a, b)))
                if prefix:
                    a, b = (F.interpolate(x[None], size=(64, 64), mode="bilinear", align_corners=False)[0]
                            for x in (a, b))
                lp = lpips_metric(a, b, lpips_input_range=rng)
                if lp is not None:
                    scores[prefix + "lpips"].append(float(lp))
            if write_dir is not None:
                for sub, im in (("test", img), ("gt", gt)):
                    d = write_dir / sub
                    d.mkdir(parents=True, exist_ok=True)
                    iio.imwrite(d / f"{view.timestep:05d}.png",
                                (im.permute(1, 2, 0).cpu().numpy() * 255).round().astype(np.uint8))
        return {k: (float(np.mean(v)) if v else None) for k, v in scores.items()}

    def export_ply(self, path: Path) -> None:
        with torch.no_grad():
            g, _ = self.scene.gaussians(0, self.scene.canonical_params())
            write_ply(path, g["means"], g["scales"], g["quats"], g["sh"], g["opacities"])

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
            "history": self.history,
        }

    def restore(self, path: Path) -> None:
        ck = load_checkpoint(path, self.cfg)
        avatar = self.scene.avatar
        n = ck["avatar"]["xyz"].shape[0]
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

    def checkpoint(self) -> Path:
        path = self.out / "checkpoints" / "last.pt"
        save_checkpoint(self.state(), path)
        return path

    # ------------------------------------------------------------------ the run
    def run(self, resume: bool = False) -> dict:
        """Train to the end (or resume), evaluate, and write the outputs. Returns results.json."""
        self.out.mkdir(parents=True, exist_ok=True)
        save_config(self.cfg, self.out / "config.yaml")
        last = self.out / "checkpoints" / "last.pt"
        if resume and last.exists():
            self.restore(last)
            self.console.print(f"resumed from {last} at iteration {self.iteration}")
        evals = {round(f * self.total) for f in self.cfg.train.eval_fractions if 0 < f < 1}
        interrupted = {"flag": False}
        previous = signal.getsignal(signal.SIGINT)

        def on_sigint(signum, frame):  # finish the current iteration, then save and stop
            interrupted["flag"] = True

        try:
            signal.signal(signal.SIGINT, on_sigint)
        except ValueError:  # not the main thread
            previous = None
        results = {}
        try:
            with Progress(TextColumn("[bold]train"), BarColumn(), MofNCompleteColumn(),
                          TextColumn("{task.fields[info]}"), TimeElapsedColumn(), console=self.console,
                          transient=False, disable=not self.console.is_terminal) as bar:
                task = bar.add_task("train", total=self.total, completed=self.iteration, info="")
                recent = []
                while self.iteration < self.total:
                    t0 = time.perf_counter()
                    info = self.step()
                    self.train_seconds += time.perf_counter() - t0
                    recent = (recent + [info.get("psnr", float("nan"))])[-50:]
                    rate = self.iteration / max(self.train_seconds, 1e-9)
                    bar.update(task, completed=self.iteration,
                               info=f"{rate:.1f} it/s  loss {info['loss']:.4f}  psnr {np.nanmean(recent):.2f}  "
                                    f"#G {self.scene.avatar.num_gaussians}")
                    if self.iteration % 25 == 0 or self.iteration == 1:
                        self.history.append({"iteration": self.iteration, "loss": info["loss"],
                                             "psnr": info.get("psnr")})
                    if self.iteration in evals:
                        results[f"test_at_{self.iteration}"] = self.evaluate()
                    if self.iteration % self.cfg.train.checkpoint_every == 0:
                        self.checkpoint()
                    if interrupted["flag"]:
                        path = self.checkpoint()
                        self.console.print(f"interrupted: checkpoint saved to {path}; resume with --resume")
                        return {"interrupted": True, "iteration": self.iteration}
        finally:
            if previous is not None:
                signal.signal(signal.SIGINT, previous)
        self.checkpoint()
        results["test"] = self.evaluate(self.out / "renders")
        results.update({"num_gaussians": self.scene.avatar.num_gaussians, "iterations": self.iteration,
                        "train_seconds": self.train_seconds, "binding": self.cfg.model.binding,
                        "data": str(self.data_root.resolve()),
                        "densifier": self.cfg.densify.densifier, "device": str(self.device),
                        "history": self.history})
        self.export_ply(self.out / "point_cloud.ply")
        tmp = self.out / "results.tmp"
        tmp.write_text(json.dumps(results, indent=2))
        tmp.replace(self.out / "results.json")
        return results
