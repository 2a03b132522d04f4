#!/usr/bin/env python3
"""Export a trained avatar posed at a timestep: Gaussians as a 3DGS .ply, head mesh as an .obj.

    python scripts/export.py --model OUT --frame T [--out DIR]
    python scripts/export.py --model OUT --all-frames [--out DIR]

Writes DIR/frame_TTTTT.ply and DIR/frame_TTTTT.obj (DIR defaults to OUT/export); the pose is the
run's fine-tuned parameter-table row of timestep T.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description="Export posed Gaussians (.ply) and the posed mesh (.obj).")
    ap.add_argument("--model", type=Path, required=True, help="training run folder (OUT of train.py)")
    ap.add_argument("--frame", type=int, help="timestep to export")
    ap.add_argument("--all-frames", action="store_true", help="export every timestep of the parameter table")
    ap.add_argument("--out", type=Path, help="output folder (default: OUT/export)")
    ap.add_argument("--device", help="torch device (default: cuda if available, else cpu)")
    args = ap.parse_args(argv)

    from stavatar_ti.api import Avatar
    from stavatar_ti.flame import FlameFileError
    from stavatar_ti.tools import runs

    try:
        if (args.frame is None) == (not args.all_frames):
            raise ValueError("pass exactly one of --frame T or --all-frames")
        avatar = Avatar.load(args.model, device=args.device)
        frames = range(avatar.num_timesteps) if args.all_frames else [args.frame]
        if not args.all_frames:
            avatar.params(args.frame)  # validates the timestep
        out = args.out or args.model / "export"
        with runs.output_folder(out):  # an error leaves no empty output folders behind
            out.mkdir(parents=True, exist_ok=True)
            for t in frames:
                avatar.export(t, out / f"frame_{t:05d}.ply", out / f"frame_{t:05d}.obj")
    except (ValueError, FlameFileError, RuntimeError, OSError) as exc:
        print(f"error: {' '.join(str(exc).split())}", file=sys.stderr)
        return 1
    print(f"exported {len(frames)} frame(s) ({avatar.num_gaussians} Gaussians) to {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
