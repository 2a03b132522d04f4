#!/usr/bin/env python3
"""Check a dataset folder (VHAP, INSTA/metrical-tracker or IMavatar) and print a summary table.

    python3 scripts/check_dataset.py DIR [--format vhap|insta|imavatar] [--quick] [--test-frames N]
                                     [--test-subdirs CLIP[,CLIP...]]

Every image and mask is decoded and its size checked (the data part of a training run's preflight);
--quick decodes only a sample of QUICK_SAMPLE frames (the first of each split plus evenly spaced ones).
Exit code 0 when the data loads and every decoded image is fine; 1 with one line
``error: <file>: <what>`` on stderr otherwise.
"""

import argparse
import os
import sys

QUICK_SAMPLE = 16


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("dir", help="dataset folder")
    parser.add_argument("--format", default=None, help="force a format: vhap, insta or imavatar (default: detect)")
    parser.add_argument("--quick", action="store_true",
                        help=f"decode only a sample of {QUICK_SAMPLE} frames instead of every image")
    parser.add_argument("--check-images", action="store_true",
                        help="(the default; kept for old command lines) decode every image and mask")
    parser.add_argument("--test-frames", type=int, default=None,
                        help="test split of a single sequence: its last N frames (training's data.test_frames)")
    parser.add_argument("--test-subdirs", default=None,
                        help="comma-separated test clip folders of an IMavatar subject (training's data.test_subdirs)")
    args = parser.parse_args(argv)
    os.environ.setdefault("ENABLE_TAICHI_HEADER_PRINT", "False")   # keep stdout to the table
    from stavatar_ti.data.check import run_check

    return run_check(args.dir, format=args.format, check_images=True,
                     sample=QUICK_SAMPLE if args.quick and not args.check_images else None,
                     test_frames=args.test_frames,
                     test_subdirs=args.test_subdirs.split(",") if args.test_subdirs else None)


if __name__ == "__main__":
    sys.exit(main())
