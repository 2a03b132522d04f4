#!/usr/bin/env python3
"""Train hard+vanilla, soft+vanilla and soft+Temporal ADC on the same data and held-out frames,
and write a markdown table (whole image and mouth region metrics, Gaussian count, wall time).

    python scripts/ablate.py --data DIR [--config configs/demo.yaml] [--out out/ablation] [key=value ...]
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
    ap.add_argument("overrides", nargs="*", help="section.key=value applied to every variant")
    args = ap.parse_args(argv)
    from stavatar_ti.training.ablation import run_ablation
    try:
        table = run_ablation(args.config, args.data, args.out, args.overrides)
    except ValueError as exc:  # config, dataset, model file and checkpoint errors are ValueErrors
        print(f"error: {exc}", file=sys.stderr)
        return 1
    print(table)
    print(f"wrote {args.out / 'ablation.md'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
