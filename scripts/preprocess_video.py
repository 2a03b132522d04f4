#!/usr/bin/env python3
"""Own video -> VHAP-layout dataset for scripts/train.py: MediaPipe landmarks and segmentation, head
tracking (open head or FLAME), a smoothed face crop, matting. Needs `pip install 'stavatar_ti[video]'`.

    python scripts/preprocess_video.py VIDEO --out DIR [--size 512] [--max-frames N]
        [--head-model FLAME.pkl --landmark-embedding mediapipe_landmark_embedding.npz]
        [--fov 55 | --focal PX] [--test-fraction 0.15] [--overwrite]
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from dataclasses import asdict
from pathlib import Path


def check_args(args) -> None:
    """The flags, before the slow steps (decoding, MediaPipe, tracking). Raises ValueError naming the flag."""
    import math

    if args.max_frames is not None and args.max_frames < 1:
        raise ValueError(f"--max-frames: expected a positive number, got {args.max_frames}")
    if args.size < 16:
        raise ValueError(f"--size: expected an output side of at least 16 pixels, got {args.size}")
    if args.focal is not None:
        if not (math.isfinite(args.focal) and args.focal > 0):
            raise ValueError(f"--focal: expected a focal length > 0 in pixels, got {args.focal}")
    elif not (math.isfinite(args.fov) and 1.0 < args.fov < 179.0):
        raise ValueError(f"--fov: expected a horizontal field of view in (1, 179) degrees, got {args.fov}")
    if not (math.isfinite(args.test_fraction) and 0.0 <= args.test_fraction < 1.0):
        raise ValueError(f"--test-fraction: expected a share in [0, 1), got {args.test_fraction}")
    if not args.video.is_file():
        raise ValueError(f"{args.video}: video not found")
    out = args.out
    if out.exists() and not out.is_dir():
        raise ValueError(f"--out: {out} is a file, expected a dataset folder")
    if out.exists() and not args.overwrite:
        raise ValueError(f"--out: {out} already exists; pass --overwrite to replace it")
    parent = out.absolute().parent
    while not parent.exists():
        parent = parent.parent
    if not parent.is_dir() or not os.access(parent, os.W_OK):
        raise ValueError(f"--out: cannot create {out} ({parent} is not a writable folder)")


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description="Preprocess a monocular video for STAvatar training.")
    ap.add_argument("video", type=Path)
    ap.add_argument("--out", type=Path, required=True, help="output dataset folder")
    ap.add_argument("--size", type=int, default=512, help="output image side in pixels (default 512)")
    ap.add_argument("--max-frames", type=int, help="use at most this many frames from the start")
    ap.add_argument("--head-model", help="FLAME .pkl/.npz (default: the open head)")
    ap.add_argument("--landmark-embedding", type=Path, help="MediaPipe<->FLAME embedding .npz (with --head-model)")
    ap.add_argument("--fov", type=float, default=55.0, help="horizontal field of view of the video, degrees")
    ap.add_argument("--focal", type=float, help="focal length of the video in pixels (overrides --fov)")
    ap.add_argument("--test-fraction", type=float, default=0.15, help="last share of frames held out")
    ap.add_argument("--overwrite", action="store_true", help="replace OUT if it exists")
    args = ap.parse_args(argv)
    try:
        check_args(args)
    except ValueError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    from rich.console import Console

    from stavatar_ti.video.preprocess import preprocess_video
    try:
        report = preprocess_video(args.video, args.out, size=args.size, max_frames=args.max_frames,
                                  head_model=args.head_model, embedding=args.landmark_embedding,
                                  fov_deg=args.fov, focal_px=args.focal, test_fraction=args.test_fraction,
                                  overwrite=args.overwrite, console=Console(stderr=True))
    except (ValueError, OSError, ImportError) as exc:  # FileNotFound/FileExists are OSErrors
        print(f"error: {exc}", file=sys.stderr)
        return 1
    print(json.dumps({k: v for k, v in asdict(report).items() if k != "settings"}, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
