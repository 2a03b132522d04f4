"""Ablation of STAvatar's two contributions on one dataset (issue: Temporal ADC):
1. hard binding + vanilla ADC (GaussianAvatars-style baseline), 2. soft binding + vanilla ADC,
3. soft binding + Temporal ADC with the paper's sequential cluster schedule, 4. the same with the
interleaved schedule (the best schedule measured, docs/performance.md); 5. hard binding + Temporal
ADC with the paper's schedule (a control, run only when asked for). Same data, same held-out
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
)
DEFAULT_VARIANTS = (1, 2, 3, 4)

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
