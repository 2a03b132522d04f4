#!/usr/bin/env python3
"""Check a dataset folder (VHAP, INSTA/metrical-tracker or IMavatar) and print a summary table.

    python3 scripts/check_dataset.py DIR [--format vhap|insta|imavatar] [--check-images]

Exit code 0 when the data loads (and, with --check-images, every image decodes at the right size);
1 with one line ``error: <file>: <what>`` on stderr otherwise.
"""

import argparse
import os
import sys


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("dir", help="dataset folder")
    parser.add_argument("--format", default=None, help="force a format: vhap, insta or imavatar (default: detect)")
    parser.add_argument("--check-images", action="store_true", help="decode every image and mask")
    args = parser.parse_args(argv)
    os.environ.setdefault("ENABLE_TAICHI_HEADER_PRINT", "False")   # keep stdout to the table
    from stavatar_ti.data.check import run_check

    return run_check(args.dir, format=args.format, check_images=args.check_images)


if __name__ == "__main__":
    sys.exit(main())
