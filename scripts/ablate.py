#!/usr/bin/env python3
"""Train hard+vanilla, soft+vanilla and soft+Temporal ADC (paper, interleaved and staggered cluster
schedules), and on request hard+Temporal ADC with the paper's schedule (variant 5), on the same data
and held-out frames for one or more seeds; write every run to a JSON list of records ("variant",
"seed", "sequence", "test": whole-image, mouth, mouth-interior and eyelid metrics, ...;
stavatar_ti.training.ablation) and a markdown table (mean ± std over seeds).

    python scripts/ablate.py --data DIR [--config configs/demo.yaml] [--out out/ablation]
                             [--variants 1,2,3,4,6] [--seeds 0,1,2] [--sequence NAME]
                             [--json PATH] [--reuse | --overwrite] [key=value ...]
    python scripts/ablate.py --report RECORDS.json [RECORDS.json ...]

--report trains nothing: it prints the mean ± std table of the given record files and the per-seed
paired differences (variant a minus b, e.g. 4 − 2) with whether a beats b by more than either
variant's seed standard deviation.

Every run is preflighted before the first one trains (data images, head model, LPIPS weights, output
folder). A run that already finished is kept with --reuse or trained again with --overwrite (without
either the command stops before training). Ctrl-C saves the running run's checkpoint and exits with
130; the same command with --reuse then continues that run from its checkpoint.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description="STAvatar ablation: binding x densifier.")
    ap.add_argument("--data", type=Path, help="dataset folder (required unless --report)")
    ap.add_argument("--report", type=Path, nargs="+", help="record files to summarise (no training)")
    ap.add_argument("--config", type=Path, default=ROOT / "configs" / "demo.yaml")
    ap.add_argument("--out", type=Path, default=ROOT / "out" / "ablation")
    ap.add_argument("--variants", default="1,2,3,4,6", help="comma-separated variant numbers: 1 hard+vanilla, 2 soft+vanilla, "
                    "3 soft+Temporal ADC (paper schedule), 4 the same interleaved, 5 hard+Temporal ADC "
                    "(paper schedule), 6 soft+Temporal ADC staggered (default: 1,2,3,4,6)")
    ap.add_argument("--seeds", default=None, help="comma-separated train.seed values (default: the config's)")
    ap.add_argument("--sequence", default=None, help="sequence name in the records (default: the data folder name)")
    ap.add_argument("--json", type=Path, default=None, help="record list to write (default: OUT/ablation.json)")
    ap.add_argument("--reuse", action="store_true",
                    help="keep runs whose OUT/seed<s>/<n>/results.json exists (and continue an interrupted one)")
    ap.add_argument("--overwrite", action="store_true", help="train runs that already finished again")
    ap.add_argument("overrides", nargs="*", help="section.key=value applied to every variant")
    args = ap.parse_args(argv)
    if args.report:
        return _report(args.report)
    if args.data is None:
        ap.error("--data is required (or --report RECORDS.json to summarise finished runs)")
    try:
        variants = list(dict.fromkeys(int(v) for v in args.variants.split(",")))  # run in the order given
    except ValueError:
        ap.error(f"--variants: expected comma-separated numbers, got {args.variants!r}")
    try:
        seeds = [None] if args.seeds is None else [int(s) for s in args.seeds.split(",")]
    except ValueError:
        ap.error(f"--seeds: expected comma-separated integers, got {args.seeds!r}")
    if any(s is not None and s < 0 for s in seeds):
        ap.error(f"--seeds: expected non-negative integers, got {args.seeds!r}")
    from stavatar_ti.training.ablation import VARIANTS
    if not set(variants) <= set(range(1, len(VARIANTS) + 1)):
        ap.error(f"--variants: numbers must be in 1..{len(VARIANTS)}")
    if args.reuse and args.overwrite:
        ap.error("--reuse and --overwrite: choose one")
    from stavatar_ti.training import TrainingError
    from stavatar_ti.training.ablation import AblationInterrupted, run_ablation
    try:
        table = run_ablation(args.config, args.data, args.out, args.overrides, variants=variants, reuse=args.reuse,
                             seeds=seeds, sequence=args.sequence, json_path=args.json, overwrite=args.overwrite)
    except AblationInterrupted as exc:  # Ctrl-C: the run saved its checkpoint
        print(f"interrupted: {exc}", file=sys.stderr)
        return 130
    except KeyboardInterrupt:  # Ctrl-C outside a training loop (setup, evaluation)
        print("interrupted: run the same command with --reuse to continue", file=sys.stderr)
        return 130
    except (ValueError, TrainingError, OSError) as exc:  # config, dataset, model file, checkpoint, preflight
        print("error: " + " ".join(str(exc).split()), file=sys.stderr)
        return 1
    print(table)
    print(f"wrote {args.out / 'ablation.md'} and {args.json or args.out / 'ablation.json'}")
    return 0


def _report(paths) -> int:
    import json

    from stavatar_ti.training.ablation import markdown_table, paired_table
    records = []
    for p in paths:
        try:
            data = json.loads(p.read_text())
        except (OSError, ValueError) as exc:
            print(f"error: {p}: cannot read a record list ({' '.join(str(exc).split())})", file=sys.stderr)
            return 1
        if not isinstance(data, list) or not all(isinstance(r, dict) and {"variant_id", "seed", "sequence", "test"}
                                                 <= r.keys() for r in data):
            print(f"error: {p}: expected a list of ablation records (variant_id, seed, sequence, test)",
                  file=sys.stderr)
            return 1
        records += data
    print(markdown_table(records))
    print(paired_table(records))
    return 0


if __name__ == "__main__":
    sys.exit(main())
