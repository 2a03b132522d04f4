"""Ablation of STAvatar's two contributions on one dataset (issue: Temporal ADC):
1. hard binding + vanilla ADC (GaussianAvatars-style baseline), 2. soft binding + vanilla ADC,
3. soft binding + Temporal ADC with the paper's sequential cluster schedule, 4. the same with the
interleaved schedule; 5. hard binding + Temporal ADC with the paper's schedule (a control, run only
when asked for); 6. soft binding + Temporal ADC with the staggered schedule (clusters densify one
after another over vanilla ADC's window; the best schedule measured, docs/performance.md). Same data, same held-out
frames, same config otherwise; every (variant, seed) is one training run.

Records (the JSON file `run_ablation` writes, a list, one per run):
    {"variant": str, "variant_id": int, "seed": int, "sequence": str, "test": {psnr, ssim, lpips,
     mouth_*, eyes_*, mouth_interior_psnr, mouth_interior_lpips, mouth_interior_frames, eyelid_psnr,
     eyelid_lpips, eyelid_frames, ...} (training.regions), "test_frames": [per-frame records],
     "num_gaussians", "iterations", "train_seconds", "out": run folder}
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np

from ..config import load_config
from .preflight import PreflightError, preflight
from .trainer import Trainer


class AblationInterrupted(Exception):
    """Ctrl-C during an ablation: the interrupted run saved a checkpoint in `run_dir` at `iteration`;
    running the same ablation again continues it."""

    def __init__(self, run_dir: Path, iteration: int):
        super().__init__(f"{run_dir}: interrupted at iteration {iteration}; checkpoint saved to "
                         f"{run_dir / 'checkpoints' / 'last.pt'}; run the same command with --reuse to continue")
        self.run_dir, self.iteration = run_dir, iteration

VARIANTS = (
    ("hard + vanilla ADC", ["model.binding=hard", "densify.densifier=vanilla"]),
    ("soft + vanilla ADC", ["model.binding=soft", "densify.densifier=vanilla"]),
    ("soft + Temporal ADC (paper schedule)", ["model.binding=soft", "densify.densifier=temporal",
                                              "densify.cluster_schedule=sequential"]),
    ("soft + Temporal ADC (interleaved)", ["model.binding=soft", "densify.densifier=temporal",
                                           "densify.cluster_schedule=interleaved"]),
    # control for item 2 of issue 21: the paper's schedule without the UV network (is the forgetting
    # in the network or in the Gaussians?); not in the default set
    ("hard + Temporal ADC (paper schedule)", ["model.binding=hard", "densify.densifier=temporal",
                                              "densify.cluster_schedule=sequential"]),
    ("soft + Temporal ADC (staggered)", ["model.binding=soft", "densify.densifier=temporal",
                                         "densify.cluster_schedule=staggered"]),
)
DEFAULT_VARIANTS = (1, 2, 3, 4, 6)

TABLE_METRICS = (("psnr", 2), ("ssim", 4), ("lpips", 4), ("mouth_psnr", 2), ("mouth_interior_psnr", 2),
                 ("mouth_interior_lpips", 4), ("eyelid_psnr", 2), ("eyelid_lpips", 4))


def _fmt(values: list, digits: int) -> str:
    vals = [v for v in values if isinstance(v, (int, float)) and math.isfinite(v)]
    if not vals:
        return "-"
    if len(vals) == 1:
        return f"{vals[0]:.{digits}f}"
    return f"{np.mean(vals):.{digits}f} ± {np.std(vals, ddof=1):.{digits}f}"


def markdown_table(records: list[dict]) -> str:
    """Mean ± sample std over seeds per (sequence, variant): whole image, mouth box, mouth interior
    and eyelid metrics, #Gaussians, training seconds, number of seeds."""
    cols = " | ".join(k.replace("_", " ") for k, _ in TABLE_METRICS)
    head = (f"| sequence | variant | seeds | {cols} | #Gaussians | train s |\n"
            "|---|---|---|" + "---|" * len(TABLE_METRICS) + "---|---|\n")
    groups: dict = {}
    for r in records:
        groups.setdefault((r["sequence"], r["variant_id"], r["variant"]), []).append(r)
    lines = []
    for (seq, _, name), rs in sorted(groups.items()):
        cells = [_fmt([r["test"].get(k) for r in rs], d) for k, d in TABLE_METRICS]
        lines.append(f"| {seq} | {name} | {len(rs)} | " + " | ".join(cells) + " | "
                     f"{_fmt([r.get('num_gaussians') for r in rs], 0)} | {_fmt([r.get('train_seconds') for r in rs], 0)} |")
    return head + "\n".join(lines) + "\n"


PAIRED_METRICS = ("psnr", "mouth_interior_psnr", "eyelid_psnr", "mouth_interior_lpips", "eyelid_lpips")
DEFAULT_PAIRS = ((4, 2), (6, 2), (3, 2), (6, 4), (4, 3), (2, 1), (5, 1))


def paired_differences(records: list[dict], a: int, b: int, metrics=PAIRED_METRICS) -> list[dict]:
    """Variant `a` minus variant `b`, paired by seed, per sequence and metric (issue 21's criterion).

    Returns one dict per (sequence, metric) where both variants have a finite value for at least one
    common seed: {"sequence", "metric", "a", "b", "seeds": [int], "diffs": [float], "mean",
    "std" (sample std of the paired differences, nan for one seed), "std_a", "std_b" (each variant's
    seed std over those seeds), "beats": mean > max(std_a, std_b) for higher-is-better metrics,
    -mean > max(...) for LPIPS (False with fewer than 2 seeds)}.
    """
    by = {}
    for r in records:
        by[(r["sequence"], r["variant_id"], r["seed"])] = r["test"]
    out = []
    for seq in sorted({r["sequence"] for r in records}):
        seeds = sorted(s for (q, v, s) in by if q == seq and v == a and (q, b, s) in by)
        for m in metrics:
            pairs = [(s, by[(seq, a, s)].get(m), by[(seq, b, s)].get(m)) for s in seeds]
            pairs = [(s, x, y) for s, x, y in pairs
                     if isinstance(x, (int, float)) and isinstance(y, (int, float)) and math.isfinite(x + y)]
            if not pairs:
                continue
            xa, xb = np.array([p[1] for p in pairs]), np.array([p[2] for p in pairs])
            d = xa - xb
            two = len(d) > 1
            std_a, std_b = (float(np.std(xa, ddof=1)), float(np.std(xb, ddof=1))) if two else (math.nan, math.nan)
            sign = -1.0 if "lpips" in m else 1.0
            out.append({"sequence": seq, "metric": m, "a": a, "b": b, "seeds": [p[0] for p in pairs],
                        "diffs": d.tolist(), "mean": float(d.mean()),
                        "std": float(np.std(d, ddof=1)) if two else math.nan, "std_a": std_a, "std_b": std_b,
                        "beats": bool(two and sign * d.mean() > max(std_a, std_b))})
    return out


def paired_table(records: list[dict], pairs=DEFAULT_PAIRS) -> str:
    """Markdown rows of `paired_differences` for every pair in `pairs` present in the records:
    mean ± std of the per-seed differences, the per-seed values, and whether `a` beats `b` by more
    than either variant's seed std."""
    lines = ["| sequence | a − b | metric | seeds | mean ± std | per seed | seed std a / b | beats |",
             "|---|---|---|---|---|---|---|---|"]
    for a, b in pairs:
        for row in paired_differences(records, a, b):
            digits = 4 if "lpips" in row["metric"] else 2
            f = f"{{:+.{digits}f}}"
            spread = f" ± {row['std']:.{digits}f}" if math.isfinite(row["std"]) else ""
            stds = (f"{row['std_a']:.{digits}f} / {row['std_b']:.{digits}f}" if math.isfinite(row["std_a"])
                    else "-")
            lines.append(f"| {row['sequence']} | {a} − {b} | {row['metric'].replace('_', ' ')} | "
                         f"{len(row['seeds'])} | {f.format(row['mean'])}{spread} | "
                         f"{', '.join(f.format(x) for x in row['diffs'])} | {stds} | "
                         f"{'yes' if row['beats'] else 'no'} |")
    return "\n".join(lines) + "\n"


def _record(name: str, vid: int, seed: int, sequence: str, results: dict, run_dir: Path) -> dict:
    return {"variant": name, "variant_id": vid, "seed": seed, "sequence": sequence, "test": results.get("test", {}),
            "test_frames": results.get("test_frames", []), "num_gaussians": results.get("num_gaussians"),
            "iterations": results.get("iterations"), "train_seconds": results.get("train_seconds"),
            "out": str(run_dir)}


def write_records(path: Path, records: list[dict]) -> None:
    """Write the record list atomically (a temporary file renamed over `path`)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_text(json.dumps(records, indent=1))
    tmp.replace(path)


def run_ablation(config, data, out, overrides=(), console=None, variants=None, reuse: bool = False,
                 seeds=(None,), sequence: str | None = None, json_path=None, overwrite: bool = False) -> str:
    """Train the variants (1-based numbers in `variants`, in that order; default all) for every seed in `seeds`
    (None: the config's train.seed) into out/seed<s>/<n>/, rewriting the record list (module
    docstring) to `json_path` (default out/ablation.json) after every run, and out/ablation.md
    (returned). With `reuse`, a run whose results.json exists is not trained again; with
    `overwrite` it is trained again; without either such a run is an error (before any training).
    A run folder with a checkpoint but no results.json (an interrupted run) is continued from its
    checkpoint (unless `overwrite`). Every run is preflighted (training.preflight) before the first
    one trains.

    Raises:
        AblationInterrupted: Ctrl-C; the interrupted run saved its checkpoint, nothing is recorded
            for it (the records and table hold the finished runs).
        ValueError: config, dataset, model-file, checkpoint or preflight errors (PreflightError names
            the run folder and --reuse / --overwrite).
    """
    out = Path(out)
    json_path = Path(json_path) if json_path is not None else out / "ablation.json"
    sequence = sequence or Path(data).resolve().name
    records = []
    plan = []
    for seed in seeds:  # configs and preflight of every run before the first one trains
        seed_over = [] if seed is None else [f"train.seed={seed}"]
        for i in (list(variants) if variants is not None else DEFAULT_VARIANTS):
            name, extra = VARIANTS[i - 1]
            cfg = load_config(config, list(overrides) + extra + seed_over)
            run_dir = out / f"seed{cfg.train.seed}" / str(i)
            done = run_dir / "results.json"
            if done.exists() and not (reuse or overwrite):
                raise PreflightError(f"{run_dir}: holds a finished run (results.json); pass --reuse to keep it "
                                     f"or --overwrite to train it again")
            if not (reuse and done.exists()):
                preflight(cfg, data, run_dir, resume=True, overwrite=True, images=not plan)
            plan.append((name, i, cfg, run_dir, done))
    for name, i, cfg, run_dir, done in plan:
        if reuse and done.exists():
            results = json.loads(done.read_text())
        else:
            resume = not overwrite and not done.exists() and (run_dir / "checkpoints" / "last.pt").is_file()
            trainer = Trainer(cfg, data, run_dir, console=console)
            trainer.resume_hint = "run the same ablation command with --reuse to continue"
            results = trainer.run(resume=resume, overwrite=not resume)
            if results.get("interrupted"):
                raise AblationInterrupted(run_dir, results["iteration"])
        records.append(_record(name, i, int(cfg.train.seed), sequence, results, run_dir))
        write_records(json_path, records)
    table = markdown_table(records)
    out.mkdir(parents=True, exist_ok=True)
    (out / "ablation.md").write_text(table)
    return table
