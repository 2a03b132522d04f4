#!/usr/bin/env python3
"""Train hard+vanilla, soft+vanilla and soft+Temporal ADC (paper and interleaved cluster schedules)
on the same data and held-out frames, and write a markdown table (whole image and mouth region
metrics, Gaussian count, wall time).

    python scripts/ablate.py --data DIR [--config configs/demo.yaml] [--out out/ablation]
                             [--variants 1,2,3,4] [--reuse] [key=value ...]
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description="STAvatar ablation: binding x densifier.")
    ap.add_argument("--data", type=Path, required=True, help="dataset folder")
    ap.add_argument("--config", type=Path, default=ROOT / "configs" / "demo.yaml")
    ap.add_argument("--out", type=Path, default=ROOT / "out" / "ablation")
    ap.add_argument("--variants", default="1,2,3,4", help="comma-separated variant numbers (default: all)")
    ap.add_argument("--reuse", action="store_true", help="keep variants whose OUT/<n>/results.json exists")
    ap.add_argument("overrides", nargs="*", help="section.key=value applied to every variant")
    args = ap.parse_args(argv)
    try:
        variants = {int(v) for v in args.variants.split(",")}
    except ValueError:
        ap.error(f"--variants: expected comma-separated numbers, got {args.variants!r}")
    from stavatar_ti.training.ablation import VARIANTS
    if not variants <= set(range(1, len(VARIANTS) + 1)):
        ap.error(f"--variants: numbers must be in 1..{len(VARIANTS)}")
    from stavatar_ti.training.ablation import run_ablation
    try:
        table = run_ablation(args.config, args.data, args.out, args.overrides, variants=variants, reuse=args.reuse)
    except ValueError as exc:  # config, dataset, model file and checkpoint errors are ValueErrors
        print(f"error: {exc}", file=sys.stderr)
        return 1
    print(table)
    print(f"wrote {args.out / 'ablation.md'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
