#!/usr/bin/env python3
"""Render the open head model (neutral, jaw open, smile, blink) and its UV layout to PNGs.

    python scripts/render_open_head.py [--out docs/images] [--size 256]
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", type=Path, default=ROOT / "docs" / "images")
    ap.add_argument("--size", type=int, default=256)
    args = ap.parse_args(argv)
    if args.size < 16:
        print("error: --size: expected at least 16", file=sys.stderr)
        return 1
    from stavatar_ti.flame.preview import render_previews
    for path in render_previews(args.out, args.size):
        print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
