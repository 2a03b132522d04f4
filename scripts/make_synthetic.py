#!/usr/bin/env python3
"""Generate a synthetic monocular talking-head sequence (VHAP / NeRF export layout).

    python scripts/make_synthetic.py --out DIR [--frames 300] [--size 256] [--seed 0]
                                     [--flame PATH [--uv-obj OBJ]] [--supersample 1] [--test-fraction 0.15]
                                     [--force]

Defaults give the CPU demo (300 frames at 256 x 256, about a minute on two cores); paper-like
settings are --size 512 and thousands of frames.  With --flame the head is read from a FLAME file
(FlameModel.from_file) instead of the procedural open head.  Errors: one line on stderr, exit 1.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))


class _Parser(argparse.ArgumentParser):
    def error(self, message):  # one line, exit 1 (argparse's default is usage + exit 2)
        raise SystemExit(_fail(message))


def _fail(message: str) -> int:
    print(f"error: {message}", file=sys.stderr)
    return 1


def _int_at_least(lo: int, hi: int | None = None):
    def parse(text: str) -> int:
        try:
            v = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected an integer, got {text!r}") from None
        if v < lo or (hi is not None and v > hi):
            rng = f">= {lo}" if hi is None else f"in [{lo}, {hi}]"
            raise argparse.ArgumentTypeError(f"expected an integer {rng}, got {v}")
        return v
    return parse


def main(argv=None) -> int:
    ap = _Parser(description="Generate a synthetic talking-head sequence.")
    ap.add_argument("--out", type=Path, required=True, help="output folder (must not exist unless --force)")
    ap.add_argument("--frames", type=_int_at_least(1, 100000), default=300, help="number of frames (default 300)")
    ap.add_argument("--size", type=_int_at_least(8, 4096), default=256,
                    help="square image size in pixels (default 256)")
    ap.add_argument("--seed", type=_int_at_least(0), default=0, help="random seed (default 0)")
    ap.add_argument("--flame", type=Path, help="FLAME model file (.pkl / .npz) instead of the open head")
    ap.add_argument("--uv-obj", type=Path, help="OBJ with the UV layout of a FLAME file without one")
    ap.add_argument("--supersample", type=_int_at_least(1, 4), default=1,
                    help="render at this factor and box-filter down (default 1)")
    ap.add_argument("--test-fraction", type=float, default=0.15,
                    help="share of frames held out, in segments reaching into open mouths and blinks (default 0.15)")
    ap.add_argument("--force", action="store_true", help="replace an existing --out folder")
    args = ap.parse_args(argv)
    if not 0.0 <= args.test_fraction < 1.0:
        ap.error(f"--test-fraction: expected a value in [0, 1), got {args.test_fraction}")

    if args.flame is not None and not args.flame.is_file():
        return _fail(f"{args.flame}: FLAME model file not found")
    if args.uv_obj is not None and not args.uv_obj.is_file():
        return _fail(f"{args.uv_obj}: UV OBJ file not found")
    if args.out.exists() and not args.force:
        return _fail(f"{args.out}: already exists (use --force to replace it)")

    from stavatar_ti.flame import FlameFileError
    from stavatar_ti.synthetic import generate_sequence

    t0 = time.time()
    tty = sys.stderr.isatty()
    state = {"next": 0.0, "open": False}

    def progress(done: int, total: int) -> None:
        if done / total >= state["next"] or done == total:
            line = f"  {done}/{total} frames ({time.time() - t0:.0f} s)"
            if tty:
                print("\r" + line, end="", file=sys.stderr, flush=True)
                state["open"] = True
            else:
                print(line, file=sys.stderr, flush=True)
            state["next"] = done / total + (0.05 if tty else 0.1)

    def end_line() -> None:
        if state["open"]:
            print(file=sys.stderr)
            state["open"] = False

    try:
        out = generate_sequence(args.out, frames=args.frames, size=args.size, seed=args.seed,
                                head_model=args.flame, supersample=args.supersample, overwrite=args.force,
                                progress=progress, uv_obj=args.uv_obj, test_fraction=args.test_fraction)
    except (FlameFileError, ValueError, OSError) as exc:
        end_line()
        return _fail(str(exc))
    except KeyboardInterrupt:
        end_line()
        return _fail("interrupted (nothing was written)")
    end_line()
    print(f"wrote {out}: {args.frames} frames at {args.size}x{args.size} in {time.time() - t0:.1f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
