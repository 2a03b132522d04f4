#!/usr/bin/env python3
"""Render a trained avatar (method.md Sec. 13).

    python scripts/render.py --model OUT [--split test|train|val|all] [--data DIR]   # self-reenactment
    python scripts/render.py --model OUT --target DATA                              # cross-reenactment
    python scripts/render.py --model OUT --orbit [--frame T] [--yaw 30 --pitch 10 --orbit-frames 60]
    ... [--video] [--out DIR]

Writes DIR/renders/NNNNN.png (and, with ground truth, DIR/gt/ and DIR/compare/ = GT | render |
error map; for cross-reenactment DIR/driver/ and compare/ = driver | render), plus renders.mp4 / compare.mp4 with
--video (needs imageio-ffmpeg). DIR defaults to OUT/render/<split | target name | orbit>.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description="Render a trained STAvatar avatar.")
    ap.add_argument("--model", type=Path, required=True, help="training run folder (OUT of train.py)")
    ap.add_argument("--split", default="test", choices=("test", "train", "val", "all"),
                    help="self-reenactment split (default: test)")
    ap.add_argument("--data", type=Path, help="the run's dataset folder (default: recorded by the run)")
    ap.add_argument("--target", type=Path, help="cross-reenactment: dataset that drives the avatar (all frames)")
    ap.add_argument("--orbit", action="store_true", help="frozen time, moving camera around the head")
    ap.add_argument("--frame", type=int, help="--orbit: timestep to freeze (default: first frame of --split)")
    ap.add_argument("--yaw", type=float, default=30.0, help="--orbit: yaw extent in degrees (default 30)")
    ap.add_argument("--pitch", type=float, default=10.0, help="--orbit: pitch extent in degrees (default 10)")
    ap.add_argument("--orbit-frames", type=int, default=60, help="--orbit: number of cameras (default 60)")
    ap.add_argument("--max-frames", type=int, help="render at most this many frames")
    ap.add_argument("--video", action="store_true", help="also write MP4s (imageio-ffmpeg)")
    ap.add_argument("--fps", type=float, default=25.0, help="video frame rate (default 25)")
    ap.add_argument("--out", type=Path, help="output folder (default: OUT/render/<name>)")
    ap.add_argument("--device", help="torch device (default: cuda if available, else cpu)")
    args = ap.parse_args(argv)

    import imageio.v3 as iio
    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    from stavatar_ti.api import Avatar
    from stavatar_ti.tools import media, runs
    from stavatar_ti.render.cameras import centered_intrinsics, orbit_cameras
    from stavatar_ti.data import DatasetError, load_dataset
    from stavatar_ti.flame import FlameFileError

    console = Console(stderr=True)
    try:
        if args.target is not None and args.orbit:
            raise ValueError("--target and --orbit: choose one")
        if args.max_frames is not None and args.max_frames < 1:
            raise ValueError(f"--max-frames: expected a positive number, got {args.max_frames}")
        if args.video:
            try:
                import imageio_ffmpeg  # noqa: F401 - availability check
            except ImportError:
                raise ValueError("--video needs the package imageio-ffmpeg (pip install imageio-ffmpeg)") from None
        avatar = Avatar.load(args.model, device=args.device)
        # jobs: (name, params, viewmat, K, width, height, gt uint8 HWC or None)
        if args.target is not None:
            target = load_dataset(args.target)
            frames = runs.split_frames(target, "all", args.max_frames)
            params = avatar.drive_params(target)[: len(frames)]
            views = runs.views_for(avatar, frames)
            name, with_error = args.target.resolve().name, False
        else:
            data = runs.load_run_dataset(avatar, args.data)
            frames = runs.split_frames(data, args.split, None if args.orbit else args.max_frames)
            views = runs.views_for(avatar, frames[:1] if args.orbit else frames)
            if args.orbit:
                t = views[0].timestep if args.frame is None else args.frame
                p = avatar.params(t)
                ref = views[0]
                cams = orbit_cameras(avatar.head_center(p), args.orbit_frames, reference_viewmat=ref.viewmat.numpy(),
                                     yaw=args.yaw, pitch=args.pitch)
                K = centered_intrinsics(ref.K.numpy(), ref.width, ref.height)
                jobs = [(f"{i:05d}", p, c.viewmat, K, ref.width, ref.height, None) for i, c in enumerate(cams)]
                name = "orbit"
            else:
                params = [avatar.params(v.timestep) for v in views]
                name, with_error = args.split, True
        if args.orbit is False:
            jobs = [(f"{v.timestep:05d}" if args.target is None else f"{i:05d}", p, v.viewmat, v.K, v.width, v.height,
                     v.image.permute(1, 2, 0).numpy()) for i, (v, p) in enumerate(zip(views, params))]
        out = args.out or args.model / "render" / name
        gt_dir = "gt" if args.target is None else "driver"
        renders, strips, seconds = [], [], 0.0
        with runs.output_folder(out):  # an error leaves no empty output folders behind
            for sub in ("renders", gt_dir, "compare"):
                (out / sub).mkdir(parents=True, exist_ok=True)
            with Progress(TextColumn(f"[bold]render {name}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                          console=console, disable=not console.is_terminal) as bar:
                task = bar.add_task("render", total=len(jobs))
                for stem, p, vm, K, w, h, gt in jobs:
                    t0 = time.perf_counter()
                    img = avatar.render_image(p, vm, K, w, h)
                    seconds += time.perf_counter() - t0
                    iio.imwrite(out / "renders" / f"{stem}.png", img)
                    renders.append(img)
                    if gt is not None:
                        iio.imwrite(out / gt_dir / f"{stem}.png", gt)
                        strip = media.comparison_strip(img, gt, with_error=with_error)
                        iio.imwrite(out / "compare" / f"{stem}.png", strip)
                        strips.append(strip)
                    bar.advance(task)
            for sub in (gt_dir, "compare"):
                if not any((out / sub).iterdir()):
                    (out / sub).rmdir()
            if args.video:
                media.write_video(out / "renders.mp4", renders, args.fps)
                if strips:
                    media.write_video(out / "compare.mp4", strips, args.fps)
    except (ValueError, DatasetError, FlameFileError, RuntimeError, OSError) as exc:
        msg = " ".join(str(exc).split())
        print(f"error: {msg}", file=sys.stderr)
        return 1
    print(f"rendered {len(jobs)} frames to {out}; rendering {len(jobs) / max(seconds, 1e-9):.1f} FPS "
          f"({avatar.num_gaussians} Gaussians, {avatar.device})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
