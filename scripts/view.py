#!/usr/bin/env python3
"""Interactive web viewer of a trained avatar (needs the `viewer` extra: pip install -e ".[viewer]").

    python scripts/view.py --model OUT [--data DIR] [--host 127.0.0.1] [--port 8080]

Open the printed URL. Orbit / pan / zoom with the mouse; scrub or play the training and test frames
(or a driving sequence given with --data: cross-reenactment); drive jaw, neck, eyes and the first
expression coefficients by hand; save the view as PNG, record the camera path and timeline as MP4
(written to --out, default OUT/viewer/, and offered as a download). Every frame is rendered here by
the rasterizer and streamed to the page. Listens on 127.0.0.1 unless --host says otherwise (on a
remote machine: ssh -L 8080:127.0.0.1:8080 HOST); never opens a public share link.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description="Interactive web viewer of a trained STAvatar avatar.")
    ap.add_argument("--model", type=Path, required=True, help="training run folder (OUT of train.py)")
    ap.add_argument("--data", type=Path, help="a dataset folder that drives the avatar (cross-reenactment timeline)")
    ap.add_argument("--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1: this machine only)")
    ap.add_argument("--port", type=int, default=8080, help="port (default 8080)")
    ap.add_argument("--resolution", type=int, default=None,
                    help="longer side of full-resolution frames in pixels (default 512 on CUDA, 256 on the CPU)")
    ap.add_argument("--out", type=Path, help="folder for saved PNGs and MP4s (default: OUT/viewer)")
    ap.add_argument("--device", help="torch device (default: cuda if available, else cpu)")
    ap.add_argument("--bench", type=int, metavar="N",
                    help="no server: time N camera-only and N frame-change renders at --resolution, print, exit")
    args = ap.parse_args(argv)

    from stavatar_ti.api import Avatar
    from stavatar_ti.data import DatasetError, load_dataset
    from stavatar_ti.flame import FlameFileError
    from stavatar_ti.tools import runs

    try:
        if not 0 < args.port < 65536:
            raise ValueError(f"--port: expected 1..65535, got {args.port}")
        if args.resolution is not None and not 64 <= args.resolution <= 2048:
            raise ValueError(f"--resolution: expected 64..2048 pixels, got {args.resolution}")
        if args.bench is not None and args.bench < 1:
            raise ValueError(f"--bench: expected a positive number of renders, got {args.bench}")
        try:
            import viser  # noqa: F401 - availability check
        except ImportError:
            raise ValueError('the viewer needs the package viser (pip install -e ".[viewer]")') from None
        from stavatar_ti.tools.viewer import ViewerApp, benchmark, timelines_for

        avatar = Avatar.load(args.model, device=args.device)
        try:
            dataset = runs.load_run_dataset(avatar)
        except (ValueError, DatasetError) as exc:
            if args.data is None:
                raise
            print(f"warning: no training frames ({exc}); showing the driving sequence only", file=sys.stderr)
            dataset = None
        driver = load_dataset(args.data) if args.data is not None else None
        timelines = timelines_for(avatar, dataset, driver)
        resolution = args.resolution or (512 if avatar.device.type == "cuda" else 256)
        if args.bench is not None:
            r = benchmark(avatar, next(iter(timelines.values())), resolution, args.bench)
            print(f"{r['gaussians']} Gaussians, {resolution}x{resolution}, {avatar.device}: camera move "
                  f"{r['camera_ms']:.0f} ms ({r['camera_fps']:.1f} FPS), new frame {r['frame_ms']:.0f} ms "
                  f"({r['frame_fps']:.1f} FPS) (medians of {args.bench})")
            return 0
        app = ViewerApp(avatar, timelines, host=args.host, port=args.port, out_dir=args.out or args.model / "viewer",
                        resolution=resolution).start()
    except (ValueError, DatasetError, FlameFileError, RuntimeError, OSError) as exc:
        msg = " ".join(str(exc).split())
        print(f"error: {msg}", file=sys.stderr)
        return 1
    print(f"viewer of {args.model} ({avatar.num_gaussians} Gaussians, {avatar.device}): open {app.url}", flush=True)
    try:
        while True:
            time.sleep(1.0)
    except KeyboardInterrupt:
        pass
    finally:
        app.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
