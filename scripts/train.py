#!/usr/bin/env python3
"""Train an STAvatar avatar from a sequence.

    python scripts/train.py                                   # embedded demo: synthetic data + configs/demo.yaml
    python scripts/train.py --config configs/paper.yaml --data DIR --out OUT [section.key=value ...]
    python scripts/train.py --config ... --data DIR --out OUT --resume      # continue a run
    python scripts/train.py --config ... --data DIR --out OUT --overwrite   # replace a run
    python scripts/train.py --video clip.mp4 [--video-size 512] --out OUT   # own video (needs the [video] extra)

Outputs in OUT: config.yaml, checkpoints/last.pt, results.json, renders/{test,gt}/, point_cloud.ply.
A folder that holds a run (checkpoints/last.pt or results.json) is continued only with --resume and
replaced only with --overwrite. Before the first iteration a preflight checks everything the run
needs (every image of the data, head model / UV / mask files, LPIPS weights when the LPIPS loss is
on, a writable output folder with room for checkpoints, CUDA when train.device=cuda;
stavatar_ti.training.preflight). Ctrl-C saves a checkpoint and exits with 130; any error after the
first iteration saves one too and says where; --resume continues from it.
With --video the clip is first preprocessed (MediaPipe landmarks, head tracking, crop, matting;
scripts/preprocess_video.py) into out/videos/<name>-<size>/, reused while the video and settings are
unchanged; the last 15 % of its frames are the test split.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def _preprocessed(video: Path, size: int) -> Path:
    """The preprocessing of `video` in out/videos/<name>-<size> (reused while video and settings match)."""
    from rich.console import Console

    from stavatar_ti.video.preprocess import preprocess_video
    out = ROOT / "out" / "videos" / f"{video.stem}-{size}"
    preprocess_video(video, out, size=size, reuse=True, console=Console(stderr=True))
    return out


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description="Train an STAvatar head avatar.")
    ap.add_argument("--config", type=Path, help="YAML config (default: configs/demo.yaml)")
    src = ap.add_mutually_exclusive_group()
    src.add_argument("--data", type=Path, help="dataset folder (default: the synthetic demo sequence)")
    src.add_argument("--video", type=Path, help="a monocular video: preprocess it (cached), then train")
    ap.add_argument("--video-size", type=int, default=512, help="image side of the preprocessed video (default 512)")
    ap.add_argument("--out", type=Path, help="output folder (default: out/demo)")
    ap.add_argument("--resume", action="store_true", help="continue from OUT/checkpoints/last.pt")
    ap.add_argument("--overwrite", action="store_true", help="replace the run in OUT (its checkpoint and results)")
    ap.add_argument("overrides", nargs="*", help="section.key=value config overrides")
    args = ap.parse_args(argv)
    if args.resume and args.overwrite:
        ap.error("--resume and --overwrite: choose one")

    from stavatar_ti.config import ConfigError, load_config
    from stavatar_ti.data import DatasetError
    from stavatar_ti.flame import FlameFileError
    from stavatar_ti.training import CheckpointError, Trainer, TrainingError
    from stavatar_ti.training.preflight import check_device, check_lpips, check_run_folder, preflight

    config = args.config or ROOT / "configs" / "demo.yaml"
    out = args.out or ROOT / "out" / "demo"
    try:
        cfg = load_config(config, args.overrides)
        # the cheap checks before preprocessing a video or generating the demo data
        check_run_folder(out, args.resume, args.overwrite)
        check_device(cfg)
        check_lpips(cfg)
        if args.data is not None and not args.data.is_dir():
            raise ValueError(f"--data: {args.data} is not a folder")
        data = args.data
        if args.video is not None:
            data = _preprocessed(args.video, args.video_size)
        if data is None:
            from stavatar_ti.synthetic import ensure_demo_sequence
            data = ensure_demo_sequence(ROOT / "out" / "synthetic_demo")
        preflight(cfg, data, out, resume=args.resume, overwrite=args.overwrite)  # Trainer.run prints its warnings
        results = Trainer(cfg, data, out).run(resume=args.resume, overwrite=args.overwrite)
    except (ConfigError, DatasetError, FlameFileError, CheckpointError, TrainingError, ValueError, ImportError,
            OSError) as exc:
        print("error: " + " ".join(str(exc).split()), file=sys.stderr)
        return 1
    if results.get("interrupted"):
        return 130
    test = results.get("test", {})
    print(f"done: {results['iterations']} iterations, {results['num_gaussians']} Gaussians, "
          f"{results['train_seconds']:.0f} s; test PSNR {test.get('psnr')} SSIM {test.get('ssim')} "
          f"LPIPS {test.get('lpips')}; outputs in {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
