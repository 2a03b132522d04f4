#!/usr/bin/env python3
"""Benchmark a full STAvatar training iteration (UV network + FLAME + render + losses + backward +
optimizer) and project the wall time of the paper's schedule.

    python scripts/bench_train.py                                  # configs/paper.yaml, 512², CUDA if present
    python scripts/bench_train.py --device cpu --size 256 --iters 3 --json bench_out/train_cpu_256.json
    python scripts/bench_train.py --data DIR --config configs/demo.yaml model.uv_size=64

Without --data a small synthetic sequence (--frames, --size) is generated into a temporary folder.
A `Trainer` is built from the config and `Trainer.step` is timed by part (`Trainer.enable_timing`:
explicit timers, with torch.cuda.synchronize() between parts on CUDA only); medians after warm-up.
When the config has an LPIPS term, which the paper switches on halfway through training, both halves
are measured ("early": LPIPS off, from the first iteration; "late": LPIPS on). Iterations that
densify are reported apart and left out of the medians. Peak memory: CUDA,
torch.cuda.max_memory_allocated per iteration (after reset_peak_memory_stats); CPU, the process's
peak resident set size (resource.getrusage ru_maxrss), which includes data loading and setup.

The projection for the paper schedule on a 2,000-frame sequence (method.md Sec. 10.2): N_train =
2000 minus the 15 % held out = 1700, iterations = epochs x N_train (10,200 with 6 epochs), minutes =
iterations / measured it/s (per LPIPS half). It holds the Gaussian count of the benchmark (training
grows it by densification) and leaves out densification events, evaluation and checkpoints.
`--json PATH` writes every number plus device, versions, date and the command line.
`--profile PATH` then runs one more (non-densifying) step under torch.profiler (CPU and, on CUDA,
device activities) and writes its key_averages() table, sorted by device time on CUDA.
"""

from __future__ import annotations

import argparse
import datetime
import json
import math
import os
import platform
import resource
import shlex
import statistics
import sys
import tempfile
import time
import warnings
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PART_LABELS = {
    "network": "UV network forward",
    "gaussians": "FLAME/LBS + Gaussian composition",
    "render": "render forward (rasterize)",
    "losses": "losses",
    "backward": "backward",
    "densify_stats": "densification statistics",
    "optimizer": "optimizer step + bookkeeping",
}
SEQUENCE_FRAMES = 2000
HELD_OUT = 0.15


def parse_args(argv=None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description="Time STAvatar training iterations by part.")
    ap.add_argument("--config", type=Path, default=ROOT / "configs" / "paper.yaml", help="YAML config (default: paper)")
    ap.add_argument("--data", type=Path, help="dataset folder (default: generate a synthetic sequence)")
    ap.add_argument("--size", type=int, default=512, help="image side of the generated sequence (default 512; "
                                                          "CPU users: 128 or 256)")
    ap.add_argument("--frames", type=int, default=24, help="frames of the generated sequence (default 24)")
    ap.add_argument("--device", choices=("cpu", "cuda"), help="default: cuda when available, else cpu")
    ap.add_argument("--warmup", type=int, default=2, help="untimed iterations per phase (default 2)")
    ap.add_argument("--iters", type=int, default=5, help="timed iterations per phase (default 5)")
    ap.add_argument("--phases", choices=("auto", "early", "late"), default="auto",
                    help="auto: both LPIPS halves when the config has LPIPS (default)")
    ap.add_argument("--json", type=Path, help="write all numbers here")
    ap.add_argument("--profile", type=Path, help="write a torch profiler table of one more training step here")
    ap.add_argument("overrides", nargs="*", help="section.key=value config overrides")
    args = ap.parse_args(argv)
    if args.warmup < 0 or args.iters < 1 or args.size < 16 or args.frames < 3:
        ap.error("expected --warmup >= 0, --iters >= 1, --size >= 16, --frames >= 3")
    return args


def _median(values):
    return statistics.median(values) if values else 0.0


class PhaseError(RuntimeError):
    """The plan has too few iterations for the requested warm-up and timed iterations."""


def time_phase(trainer, start: int, stop: int, warmup: int, iters: int, device) -> dict:
    """Run `warmup` then `iters` non-densifying iterations from plan position `start` (all before
    `stop`); per-part medians."""
    import torch

    def check():
        if trainer.iteration >= stop:
            raise PhaseError(f"plan positions {start}..{stop} hold too few iterations for {warmup} warm-up + "
                             f"{iters} timed ones (plus densifying ones); use more --frames or fewer --iters/--warmup")

    trainer.iteration = start
    trainer.window = None  # re-enter the plan's window at `start`
    for _ in range(warmup):
        check()
        trainer.step()
    timer = trainer.enable_timing(sync=True)
    cuda = device.type == "cuda"
    peaks, n0 = [], trainer.scene.avatar.num_gaussians
    timed = 0
    try:
        while timed < iters:
            check()
            if cuda:
                torch.cuda.reset_peak_memory_stats(device)
            trainer.step()
            if cuda:
                peaks.append(torch.cuda.max_memory_allocated(device))
            if not timer.records[-1]["densify"]:
                timed += 1
    finally:
        trainer.disable_timing()
    steady = [r for r in timer.records if not r["densify"]]
    dens = [r for r in timer.records if r["densify"]]
    parts = {p: _median([r[p] for r in steady]) * 1e3 for p in timer.PARTS}
    total_parts = sum(parts.values())
    total = _median([r["total"] for r in steady]) * 1e3
    out = {
        "start_iteration": start, "iterations": len(steady), "num_gaussians_start": n0,
        "num_gaussians_end": trainer.scene.avatar.num_gaussians,
        "parts_ms": parts,
        "shares_pct": {p: 100.0 * v / total_parts if total_parts > 0 else 0.0 for p, v in parts.items()},
        "total_ms": total, "it_per_s": 1e3 / total if total > 0 else float("nan"),
        "totals_ms": [r["total"] * 1e3 for r in steady],
        "densify_iterations_ms": [r["total"] * 1e3 for r in dens],
    }
    if cuda:
        sel = [p for p, r in zip(peaks, timer.records) if not r["densify"]]
        out["peak_memory"] = {"kind": "torch.cuda.max_memory_allocated per iteration",
                              "median_mib": _median(sel) / 2**20, "max_mib": max(sel) / 2**20}
    else:
        out["peak_memory"] = {"kind": "process peak RSS (ru_maxrss), whole process so far",
                              "max_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}
    return out


def profile_step(trainer, device, path: Path) -> str:
    """One Trainer.step (the next non-densifying one of the plan) under torch.profiler; writes and
    returns key_averages() as a table (40 rows, by device time on CUDA, CPU time otherwise)."""
    import torch
    from torch.profiler import ProfilerActivity, profile

    while trainer.iteration < trainer.total and trainer.plan[trainer.iteration].densify:
        trainer.step()
    if trainer.iteration >= trainer.total:
        raise PhaseError("no iteration left in the plan to profile; use more --frames")
    cuda = device.type == "cuda"
    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if cuda else [])
    start = trainer.iteration
    with profile(activities=activities) as prof:
        trainer.step()
        if cuda:
            torch.cuda.synchronize(device)
    sort = "cuda_time_total" if cuda else "cpu_time_total"
    table = prof.key_averages().table(sort_by=sort, row_limit=40)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(f"torch.profiler: Trainer.step at plan position {start}, {trainer.scene.avatar.num_gaussians} "
                    f"Gaussians, {device}, sorted by {sort}\n{table}\n")
    return table


def projection(cfg, phases: dict, densify_ms: list) -> dict:
    """Paper schedule on a 2,000-frame sequence (method.md Sec. 10.2) from the measured it/s."""
    n_train = SEQUENCE_FRAMES - round(HELD_OUT * SEQUENCE_FRAMES)
    iterations = cfg.train.epochs * n_train
    if "early" in phases and "late" in phases:
        split = round(cfg.loss.lpips_start_fraction * iterations)
        seconds = split / phases["early"]["it_per_s"] + (iterations - split) / phases["late"]["it_per_s"]
        basis = f"{split} iterations at the early it/s (no LPIPS) + {iterations - split} at the late it/s (LPIPS)"
    else:
        name, ph = next(iter(phases.items()))
        seconds = iterations / ph["it_per_s"]
        basis = f"{iterations} iterations at the {name} it/s"
    if cfg.densify.densifier == "temporal":
        events = (cfg.densify.k_min, cfg.densify.k_max)  # once per FTC cluster (Sec. 10.3)
    else:
        d = cfg.densify
        n = len(range(max(d.densify_from, d.densify_interval), min(d.densify_until, iterations) + 1,
                      d.densify_interval)) if d.densify_interval > 0 else 0
        events = (n, n)
    out = {"sequence_frames": SEQUENCE_FRAMES, "n_train": n_train, "epochs": cfg.train.epochs,
           "iterations": iterations, "minutes": seconds / 60.0, "basis": basis,
           "densification_events": list(events),
           "note": "projection from the measured it/s at the benchmark's Gaussian count; densification "
                   "events, evaluation and checkpoints excluded"}
    if densify_ms:
        med = statistics.median(densify_ms) / 1e3
        out["densify_seconds_measured"] = med
        out["densify_minutes_extra"] = [events[0] * med / 60.0, events[1] * med / 60.0]
    return out


def _print(console, result: dict) -> None:
    from rich.table import Table

    for name, ph in result["phases"].items():
        title = (f"{name}: {ph['iterations']} iterations from {ph['start_iteration']}, "
                 f"{ph['num_gaussians_start']:,} Gaussians, {result['device']}, {result['size']}")
        table = Table(title=title)
        table.add_column("part")
        table.add_column("median ms", justify="right")
        table.add_column("share %", justify="right")
        for p, label in PART_LABELS.items():
            table.add_row(label, f"{ph['parts_ms'][p]:.1f}", f"{ph['shares_pct'][p]:.1f}")
        table.add_row("[bold]iteration (median total)", f"[bold]{ph['total_ms']:.1f}", "100.0")
        console.print(table)
        pm = ph["peak_memory"]
        mem = (f"{pm['median_mib']:.0f} MiB median, {pm['max_mib']:.0f} MiB max ({pm['kind']})" if "median_mib" in pm
               else f"{pm['max_mib']:.0f} MiB ({pm['kind']})")
        console.print(f"  [bold]{ph['it_per_s']:.3f} it/s[/bold]   peak memory: {mem}")
        if ph["densify_iterations_ms"]:
            console.print("  densifying iterations (not in the medians): "
                          + ", ".join(f"{t:.0f} ms" for t in ph["densify_iterations_ms"]))
    pr = result["projection"]
    console.print(f"[bold]Projected[/bold] paper schedule on a {pr['sequence_frames']}-frame sequence "
                  f"(N_train = {pr['n_train']}, {pr['epochs']} epochs = {pr['iterations']:,} iterations): "
                  f"[bold]{pr['minutes']:.1f} min[/bold] ({pr['minutes'] / 60:.2f} h) — a projection from the "
                  f"measured it/s ({pr['basis']}), not a measured run; densification "
                  f"({pr['densification_events'][0]}–{pr['densification_events'][1]} events), evaluation "
                  "and checkpoints excluded.")
    if "densify_minutes_extra" in pr:
        lo, hi = pr["densify_minutes_extra"]
        console.print(f"  densification measured at {pr['densify_seconds_measured']:.2f} s/event: "
                      f"+{lo:.1f}–{hi:.1f} min")


def main(argv=None) -> int:
    args = parse_args(argv)
    import taichi as ti
    import torch
    from rich.console import Console

    from stavatar_ti.config import load_config
    from stavatar_ti.training import Trainer

    console = Console()
    started = datetime.datetime.now().astimezone().isoformat(timespec="seconds")
    device = args.device or ("cuda" if torch.cuda.is_available() else "cpu")
    cfg = load_config(args.config, [*args.overrides, f"train.device={device}"])
    with tempfile.TemporaryDirectory(prefix="bench_train_") as tmp:
        data, gen_s = args.data, None
        if data is None:
            from stavatar_ti.synthetic import generate_sequence
            t0 = time.perf_counter()
            data = generate_sequence(Path(tmp) / "seq", frames=args.frames, size=args.size, seed=0)
            gen_s = time.perf_counter() - t0
            console.print(f"synthetic sequence: {args.frames} frames at {args.size}² in {gen_s:.1f} s")
        t0 = time.perf_counter()
        trainer = Trainer(cfg, data, Path(tmp) / "run", console=Console(stderr=True))
        setup_s = time.perf_counter() - t0
        dev = trainer.device
        total = trainer.total
        lpips_on = cfg.loss.lambda_lpips > 0
        lpips_start = math.floor(cfg.loss.lpips_start_fraction * total) if lpips_on else total
        wanted = {"auto": ["early", "late"] if lpips_on else ["early"], "early": ["early"],
                  "late": ["late"] if lpips_on else ["early"]}[args.phases]
        ranges = {"early": (0, lpips_start), "late": (lpips_start, total)}
        view = trainer.scene.train_views[0]
        phases, densify_ms = {}, []
        for name in wanted:
            console.print(f"timing phase {name} ({args.warmup} warm-up + {args.iters} timed iterations) ...")
            try:
                ph = time_phase(trainer, *ranges[name], args.warmup, args.iters, dev)
            except FileNotFoundError as exc:  # LPIPS weights not cached
                warnings.warn(f"phase {name} skipped: {exc}", stacklevel=1)
                continue
            except PhaseError as exc:
                console.print(f"[red]phase {name}: {exc}")
                return 2
            phases[name] = ph
            densify_ms += ph["densify_iterations_ms"]
        if not phases:
            console.print("[red]no phase could be timed")
            return 1
        result = {
            "command": " ".join(shlex.quote(a) for a in [sys.executable, *sys.argv]) if argv is None
            else " ".join(shlex.quote(a) for a in ["scripts/bench_train.py", *argv]),
            "date": started,
            "device": str(dev), "device_name": (torch.cuda.get_device_name(dev) if dev.type == "cuda"
                                                else platform.processor() or platform.machine()),
            "torch": torch.__version__, "taichi": ".".join(map(str, ti.__version__)),
            "python": platform.python_version(), "torch_threads": torch.get_num_threads(),
            "env": {k: os.environ.get(k) for k in ("OMP_NUM_THREADS", "STAVATAR_CPU_THREADS")},
            "config": str(args.config), "overrides": args.overrides,
            "data": str(args.data) if args.data else f"synthetic, {args.frames} frames",
            "size": f"{view.width}x{view.height}", "uv_size": cfg.model.uv_size, "binding": cfg.model.binding,
            "densifier": cfg.densify.densifier, "plan_iterations": total,
            "generate_seconds": gen_s, "setup_seconds": setup_s,
            "parts": list(PART_LABELS), "part_labels": PART_LABELS,
            "phases": phases,
        }
        result["projection"] = projection(cfg, phases, densify_ms)
        if args.profile is not None:
            try:
                profile_step(trainer, dev, args.profile)
            except PhaseError as exc:
                console.print(f"[red]profile: {exc}")
                return 2
            result["profile"] = str(args.profile)
    _print(console, result)
    if args.json is not None:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(result, indent=2))
        console.print(f"wrote {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
