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
import sys
from dataclasses import asdict
from pathlib import Path


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
    if args.max_frames is not None and args.max_frames < 1:
        ap.error("--max-frames: expected a positive number")
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
