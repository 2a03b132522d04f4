#!/usr/bin/env python3
"""Per-cluster metrics of trained avatars on their training frames (issue 21: which FTC clusters a
run reconstructs worse, e.g. the ones the paper's sequential Temporal ADC schedule trained early).

    python scripts/cluster_metrics.py --model OUT [--model OUT2 ...] [--data DIR] [--json PATH]
    python scripts/cluster_metrics.py --phases OUT [--phases OUT2 ...]

--phases renders nothing: it prints the forgetting matrix a run recorded with
train.cluster_phase_eval=true (rows: after each cluster phase and at the end; columns: clusters)
and each cluster's PSNR at the end of its own phase, at the end, and the difference (forgetting).

The clusters are FTC's (method.md Sec. 10.1) on the training frames, planned exactly as Temporal ADC
plans them for the first run's config (a Trainer with densify.densifier=temporal is built, nothing is
trained). For each model and cluster (in the order the sequential schedule visits them): the mean
whole-image PSNR, mouth-interior PSNR and eyelid PSNR over the cluster's frames (regions as in
stavatar_ti.training.regions; region means over the frames where the region is visible).
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path

KEYS = ("psnr", "mouth_interior_psnr", "eyelid_psnr")


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description="Per-FTC-cluster metrics on the training frames.")
    ap.add_argument("--model", type=Path, action="append", help="training run folder (repeatable)")
    ap.add_argument("--phases", type=Path, action="append",
                    help="run folder trained with train.cluster_phase_eval=true (repeatable; no rendering)")
    ap.add_argument("--data", type=Path, help="dataset folder (default: recorded by the first run)")
    ap.add_argument("--json", type=Path, help="write the table as JSON here")
    args = ap.parse_args(argv)
    if args.phases:
        return _phases(args.phases)
    if not args.model:
        ap.error("--model is required (or --phases RUN)")

    import numpy as np

    from stavatar_ti.api import Avatar
    from stavatar_ti.config import load_config
    from stavatar_ti.data import DatasetError, load_dataset
    from stavatar_ti.tools import evaluation, runs
    from stavatar_ti.training.regions import mean_over_visible
    from stavatar_ti.training.trainer import Trainer

    try:
        first = Avatar.load(args.model[0], device="cpu")
        data_root = runs.resolve_data_root(first, args.data)
        cfg = load_config(args.model[0] / "config.yaml", ["densify.densifier=temporal"])
        with tempfile.TemporaryDirectory() as tmp:
            clusters = Trainer(cfg, data_root, Path(tmp) / "plan").densifier.clusters
        frames = runs.split_frames(load_dataset(data_root), "train")
        table = {"data": str(data_root), "clusters": [[int(t) for t in c] for c in clusters], "models": {}}
        for model in args.model:
            avatar = Avatar.load(model, device="cpu")
            per_frame = evaluation.evaluate_views(avatar, runs.views_for(avatar, frames))["frames"]
            by_t = {f["timestep"]: f for f in per_frame}
            table["models"][str(model)] = [
                {k: mean_over_visible([by_t[int(t)] for t in c if int(t) in by_t]).get(k) for k in KEYS}
                for c in clusters]
    except (ValueError, DatasetError, OSError) as exc:
        print(f"error: {' '.join(str(exc).split())}", file=sys.stderr)
        return 1
    print("cluster | frames | " + " | ".join(f"{m.parent.name}/{m.name} " + "/".join(KEYS) for m in args.model))
    for k, c in enumerate(clusters):
        cells = []
        for m in args.model:
            r = table["models"][str(m)][k]
            cells.append(" / ".join("-" if r[x] is None else f"{r[x]:.2f}" for x in KEYS))
        print(f"{k} | {len(c)} | " + " | ".join(cells))
    means = {m: np.mean([r["psnr"] for r in table["models"][str(m)]]) for m in args.model}
    print("mean over clusters (PSNR): " + ", ".join(f"{m}: {v:.2f}" for m, v in means.items()))
    if args.json:
        args.json.write_text(json.dumps(table, indent=1))
    return 0


def _phases(runs_: list) -> int:
    import numpy as np

    from stavatar_ti.tools.evaluation import forgetting
    for run in runs_:
        try:
            phases = json.loads((run / "results.json").read_text()).get("cluster_phases") or []
            rows = forgetting(phases)
        except (OSError, ValueError) as exc:
            print(f"error: {run / 'results.json'}: {' '.join(str(exc).split())}", file=sys.stderr)
            return 1
        print(f"{run}: PSNR (dB) of cluster k (columns) after phase j (rows; last: the end)")
        for j, p in enumerate(phases):
            print(f"{j:>3} it {p['iteration']:>5} | " + " ".join(f"{v:6.2f}" for v in p["psnr"]))
        print("cluster | own phase | end | forgotten | peak")
        for r in rows:
            print(f"{r['cluster']} | {r['own']:.2f} | {r['final']:.2f} | {r['forgotten']:+.2f} | {r['peak']:.2f}")
        print(f"mean forgotten: {np.mean([r['forgotten'] for r in rows]):+.2f} dB")
    return 0


if __name__ == "__main__":
    sys.exit(main())
