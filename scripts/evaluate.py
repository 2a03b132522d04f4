#!/usr/bin/env python3
"""Evaluate trained avatars on their test frames (self-reenactment; method.md Sec. 13 metrics.py).

    python scripts/evaluate.py --model OUT [--model OUT2 ...] [--data DIR] [--split test]
                               [--max-frames N] [--lpips-range "[0,1]"|"[-1,1]"] [--out DIR]

PSNR / SSIM / LPIPS on the whole image and on the mouth (lips + teeth) and eye regions (bounding
boxes of the visible region faces); PSNR / LPIPS on the mouth interior and the eyelids (visible
region pixels, averaged over the frames where the region is visible; stavatar_ti.training.regions). Writes per model <DIR or OUT/eval>/per_frame.json and
metrics.json, and prints a table comparing the models with the metric convention.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description="Evaluate trained STAvatar avatars.")
    ap.add_argument("--model", type=Path, action="append", required=True, help="training run folder (repeatable)")
    ap.add_argument("--data", type=Path, help="dataset folder (default: recorded by each run)")
    ap.add_argument("--split", default="test", choices=("test", "val", "train", "all"), help="default: test")
    ap.add_argument("--max-frames", type=int, help="evaluate at most this many frames")
    ap.add_argument("--lpips-range", choices=("[-1,1]", "[0,1]"),
                    help="LPIPS input convention (default: the run's quirks.lpips_input_range)")
    ap.add_argument("--out", type=Path, help="output folder (one model only; default: OUT/eval)")
    ap.add_argument("--device", help="torch device (default: cuda if available, else cpu)")
    args = ap.parse_args(argv)

    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
    from rich.table import Table

    from stavatar_ti.api import Avatar
    from stavatar_ti.tools import evaluation, runs
    from stavatar_ti.data import DatasetError
    from stavatar_ti.flame import FlameFileError

    console = Console(stderr=True)
    results = {}
    try:
        if args.out is not None and len(args.model) > 1:
            raise ValueError("--out: only with a single --model (each model writes to its OUT/eval)")
        if args.max_frames is not None and args.max_frames < 1:
            raise ValueError(f"--max-frames: expected a positive number, got {args.max_frames}")
        for model in args.model:
            avatar = Avatar.load(model, device=args.device)
            data = runs.load_run_dataset(avatar, args.data)
            views = runs.views_for(avatar, runs.split_frames(data, args.split, args.max_frames))
            with Progress(TextColumn(f"[bold]eval {model}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                          console=console, disable=not console.is_terminal) as bar:
                task = bar.add_task("eval", total=len(views))
                res = evaluation.evaluate_views(avatar, views, args.lpips_range, progress=lambda: bar.advance(task))
            out = args.out or model / "eval"
            out.mkdir(parents=True, exist_ok=True)
            meta = {"model": str(model), "split": args.split, "frames": len(views), "convention": res["convention"],
                    "lpips_net": res["lpips_net"], "lpips_input_range": res["lpips_input_range"]}
            (out / "per_frame.json").write_text(json.dumps({**meta, "per_frame": res["frames"]}, indent=2))
            (out / "metrics.json").write_text(json.dumps({**meta, **res["mean"], "fps": res["fps"]}, indent=2))
            results[str(model)] = res
    except (ValueError, DatasetError, FlameFileError, RuntimeError, OSError) as exc:
        print(f"error: {' '.join(str(exc).split())}", file=sys.stderr)
        return 1

    table = Table(title=f"{args.split} split: whole image | mouth (lips+teeth) | eyes | mouth interior | eyelid "
                        "(region means over the frames where it is visible; n = frames)")
    table.add_column("model")
    cols = [(p + m, (p[:-1] or "full") + " " + m.upper()) for p in ("", "mouth_", "eyes_")
            for m in ("psnr", "ssim", "lpips")]
    cols += [(p + m, p[:-1] + " " + ("n" if m == "frames" else m.upper())) for p in ("mouth_interior_", "eyelid_")
             for m in ("psnr", "lpips", "frames")]
    for _, title in cols:
        table.add_column(title, justify="right")
    for model, res in results.items():
        table.add_row(model, *("-" if res["mean"].get(k) is None else str(res["mean"][k]) if k.endswith("_frames") else f"{res['mean'][k]:.4f}" for k, _ in cols))
    out_console = Console()
    out_console.print(table)
    conventions = sorted({res["convention"] for res in results.values()})
    for c in conventions:
        out_console.print(f"convention: {c}", soft_wrap=True)
    if any(res["mean"]["lpips"] is None for res in results.values()):
        out_console.print("LPIPS: backbone weights not available (see scripts/fetch_lpips_weights.py); shown as -")
    return 0


if __name__ == "__main__":
    sys.exit(main())
