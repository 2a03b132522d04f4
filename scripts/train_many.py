#!/usr/bin/env python3
"""Reconstruct every subject of a manifest, one Ray task (one process, one GPU) per subject.

    python scripts/train_many.py manifest.yaml --out runs/                    # local Ray instance
    python scripts/train_many.py manifest.yaml --out runs/ --address auto     # an existing Ray cluster
    python scripts/train_many.py manifest.yaml --out runs/ --gpus-per-subject 1 --cpus-per-subject 4

Manifest (YAML, paths relative to it):
    config: configs/paper.yaml
    overrides: {train.iterations: 3000}          # optional, every subject
    subjects:
      - {name: alice, data: exports/alice}
      - {name: bob, video: videos/bob.mp4, video_size: 512, overrides: {model.binding: hard}}

Each subject trains with scripts/train.py into OUT/<name>/ (log: OUT/<name>/train.log, state:
OUT/<name>/status.json); OUT/summary.csv and OUT/summary.md collect the results. Re-running skips the
subjects that finished with the same config and input, resumes interrupted ones and retries failed
ones. Ctrl-C makes every running subject save its checkpoint, then exits with 130.
Needs the `cluster` extra: pip install -e ".[cluster]".
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description="Train an avatar for every subject of a manifest (Ray).")
    ap.add_argument("manifest", type=Path, help="YAML manifest: config, overrides, subjects")
    ap.add_argument("--out", type=Path, required=True, help="output folder: one run folder per subject + summary")
    ap.add_argument("--address", help="Ray cluster address ('auto', 'ray://HOST:10001'); default: a local instance")
    ap.add_argument("--gpus-per-subject", type=float, default=None,
                    help="GPUs per subject (default: 1 when the cluster has GPUs, else 0)")
    ap.add_argument("--cpus-per-subject", type=float, default=1,
                    help="CPUs per subject (default 1; also the trainer's CPU threads)")
    args = ap.parse_args(argv)

    from stavatar_ti.tools.many_subjects import INSTALL_HINT, ManifestError, load_manifest, run_many

    try:
        manifest = load_manifest(args.manifest)
    except ManifestError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    try:
        import ray  # noqa: F401
    except ImportError:
        print(f"error: {INSTALL_HINT}", file=sys.stderr)
        return 1
    try:
        out = run_many(manifest, args.out, address=args.address, gpus_per_subject=args.gpus_per_subject,
                       cpus_per_subject=args.cpus_per_subject, train_script=ROOT / "scripts" / "train.py")
    except (ValueError, OSError, ConnectionError) as exc:
        print(f"error: {' '.join(str(exc).split())}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:  # before the subjects started (the runner handles it once they run)
        print("interrupted", file=sys.stderr)
        return 130
    counts = {}
    for row in out["rows"]:
        counts[row["status"]] = counts.get(row["status"], 0) + 1
    print(f"{', '.join(f'{n} {s}' for s, n in sorted(counts.items()))}; summary: {out['summary'][0]} and "
          f"{out['summary'][1].name}")
    if out["interrupted"]:
        return 130
    return 1 if out["failed"] else 0


if __name__ == "__main__":
    sys.exit(main())
