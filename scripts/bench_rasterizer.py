#!/usr/bin/env python3
"""Benchmark the Taichi rasterizer: forward and forward+backward medians after warm-up.

CPU: compares against the float64 dense torch twin in tests/reference.py (when the repo's tests/
folder is present). CUDA: compares against gsplat (if importable) in the same run, and times the
Taichi radix sort against torch.sort on the same keys (on both devices). Each row also holds the
number of (tile, Gaussian) intersections each renderer builds for the scene (`isect`,
`baseline_isect`; the twin has no tiles): a renderer with tighter footprints does less work, so
the time ratio alone is not a like-for-like comparison. Writes JSON (`--out`).

    python scripts/bench_rasterizer.py --device cpu --out bench_out/cpu.json
    python scripts/bench_rasterizer.py --device cuda --sizes 100000@512,500000@1024 --out bench_out/cuda.json
"""

from __future__ import annotations

import argparse
import datetime
import importlib.util
import json
import math
import shlex
import statistics
import sys
import time
from pathlib import Path

import torch
from rich.console import Console
from rich.table import Table

import stavatar_ti
from stavatar_ti.render import runtime
from stavatar_ti.render.autograd import Project
from stavatar_ti.render.sorting import radix_sort_pairs

DEFAULT_SIZES = {
    "cpu": [(1_000, 128), (10_000, 128), (20_000, 256), (50_000, 256), (100_000, 512)],
    "cuda": [(n, s) for s in (512, 1024) for n in (10_000, 100_000, 500_000)],
}
SORT_SIZES = {"cpu": [100_000, 1_000_000], "cuda": [1_000_000, 10_000_000]}


def make_scene(n: int, size: int, device: str, seed: int = 0) -> dict:
    """N Gaussians filling the view of a size x size pinhole camera (fx = size) at depth 2-4.

    World scales are chosen in pixel terms (fx = size cancels), so coverage does not depend on size."""
    g = torch.Generator().manual_seed(seed)
    z = 2.0 + 2.0 * torch.rand(n, generator=g)
    xy = (torch.rand(n, 2, generator=g) - 0.5) * z[:, None]
    scene = {
        "means": torch.cat([xy, z[:, None]], 1),
        "quats": torch.randn(n, 4, generator=g),
        # sigma ~ size/sqrt(pi N) px (the splats cover the image a few times over), log-uniform x0.3..3
        "scales": 3.0 / math.sqrt(math.pi * n)
        * torch.exp(torch.empty(n, 3).uniform_(math.log(0.3), math.log(3.0), generator=g)),
        "opacities": torch.rand(n, generator=g) * 0.9 + 0.05,
        "colors": torch.rand(n, 3, generator=g),
        "viewmat": torch.eye(4),
        "K": torch.tensor([[float(size), 0.0, size / 2], [0.0, float(size), size / 2], [0.0, 0.0, 1.0]]),
    }
    return {k: v.to(device) for k, v in scene.items()}


def sync(device: str) -> None:
    if device == "cuda":
        torch.cuda.synchronize()


def median_ms(fn, device: str, warmup: int, repeats: int) -> float:
    for _ in range(warmup):
        fn()
    sync(device)
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        sync(device)
        times.append((time.perf_counter() - t0) * 1e3)
    return statistics.median(times)


def taichi_intersections(scene: dict, size: int) -> int:
    """(tile, Gaussian) pairs the Taichi rasterizer bins for the scene: the sum of the per-Gaussian
    tile counts of its projection (16x16 tiles, 3-sigma square of the larger eigenvalue)."""
    with torch.no_grad():
        tile_counts = Project.apply(scene["means"], scene["quats"], scene["scales"], scene["viewmat"], scene["K"],
                                    size, size, 0.01)[5]
    return int(tile_counts.sum(dtype=torch.int64))


def gsplat_intersections(meta: dict) -> int | None:
    """(tile, Gaussian) pairs in gsplat's `rasterization` meta (its isect / flatten ids), if present."""
    for key in ("flatten_ids", "isect_ids"):
        if torch.is_tensor(meta.get(key)):
            return int(meta[key].numel())
    if torch.is_tensor(meta.get("tiles_per_gauss")):
        return int(meta["tiles_per_gauss"].sum())
    return None


def taichi_steps(scene: dict, size: int):
    params = {k: scene[k].clone().requires_grad_() for k in ("means", "quats", "scales", "opacities", "colors")}

    def fwd():
        with torch.no_grad():
            stavatar_ti.rasterize(**{k: scene[k] for k in params}, viewmat=scene["viewmat"], K=scene["K"],
                                  width=size, height=size)

    def fwd_bwd():
        out = stavatar_ti.rasterize(**params, viewmat=scene["viewmat"], K=scene["K"], width=size, height=size)
        out.image.sum().backward()

    return fwd, fwd_bwd


def twin_steps(scene: dict, size: int):
    """The dense float64 torch twin of tests/reference.py, or None when tests/ is absent."""
    path = Path(__file__).resolve().parents[1] / "tests" / "reference.py"
    if not path.exists():
        return None
    spec = importlib.util.spec_from_file_location("_twin_reference", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    params = {k: scene[k].clone().requires_grad_() for k in ("means", "quats", "scales", "opacities", "colors")}

    def run(grad: bool):
        with torch.set_grad_enabled(grad):
            out = module.reference_rasterize(**params, viewmat=scene["viewmat"], K=scene["K"], width=size,
                                             height=size)
            if grad:
                out["image"].sum().backward()

    return (lambda: run(False)), (lambda: run(True))


def gsplat_steps(scene: dict, size: int):
    """gsplat.rasterization on the same scene (classic mode, 3-sigma box): (fwd, fwd_bwd, meta of
    one forward), or the reason it is unavailable as a string."""
    try:
        import gsplat
    except Exception as exc:  # noqa: BLE001 - any import failure means "not available"
        return f"import gsplat failed: {type(exc).__name__}: {exc}"
    params = {k: scene[k].clone().requires_grad_() for k in ("means", "quats", "scales", "opacities", "colors")}

    def run(grad: bool):
        with torch.set_grad_enabled(grad):
            img, _, meta = gsplat.rasterization(params["means"], params["quats"], params["scales"],
                                                params["opacities"], params["colors"], scene["viewmat"][None],
                                                scene["K"][None], size, size, packed=False)
            if grad:
                img.sum().backward()
        return meta

    try:
        meta = run(False)
    except Exception as exc:  # noqa: BLE001 - e.g. its CUDA extension failed to build
        return f"gsplat.rasterization failed: {type(exc).__name__}: {exc}"
    return (lambda: run(False)), (lambda: run(True)), meta


def bench_sort(n: int, device: str, warmup: int, repeats: int) -> dict:
    g = torch.Generator().manual_seed(n)
    keys = torch.randint(0, 2**31 - 1, (n,), generator=g, dtype=torch.int64).to(torch.int32).to(device)
    values = torch.arange(n, dtype=torch.int32, device=device)
    taichi_ms = median_ms(lambda: radix_sort_pairs(keys, values, 31), device, warmup, repeats)
    torch_ms = median_ms(lambda: torch.sort(keys, stable=True), device, warmup, repeats)
    return {"n": n, "taichi_ms": taichi_ms, "torch_sort_ms": torch_ms, "ratio": taichi_ms / torch_ms}


def parse_sizes(text: str) -> list[tuple[int, int]]:
    out = []
    for item in text.split(","):
        n, _, s = item.partition("@")
        if not n.strip().isdigit() or not s.strip().isdigit():
            raise argparse.ArgumentTypeError(f"--sizes: expected N@SIZE[,N@SIZE...], got {item!r}")
        out.append((int(n), int(s)))
    return out


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--device", choices=["cpu", "cuda"], default="cpu")
    ap.add_argument("--sizes", type=parse_sizes, help="e.g. 10000@256,20000@256 (N Gaussians @ image side)")
    ap.add_argument("--warmup", type=int, default=2)
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--no-compare", action="store_true", help="skip the twin / gsplat comparison")
    ap.add_argument("--twin-max-n", type=int, default=10_000,
                    help="CPU: compare against the dense float64 twin only up to this N (it is O(N*pixels))")
    ap.add_argument("--sort-sizes", type=lambda t: [int(x) for x in t.split(",") if x.strip()],
                    help="radix sort sizes, comma-separated (default: 1e5,1e6 on CPU, 1e6,1e7 on CUDA; '' skips)")
    ap.add_argument("--out", type=Path, default=Path("bench_out/bench_rasterizer.json"))
    args = ap.parse_args(argv)
    if args.device == "cuda" and not torch.cuda.is_available():
        print("error: --device cuda: no CUDA device visible to torch", file=sys.stderr)
        return 2
    stavatar_ti.init(args.device)
    device_name = torch.cuda.get_device_name() if args.device == "cuda" else f"CPU x{torch.get_num_threads()}"
    rows = []
    for n, size in args.sizes or DEFAULT_SIZES[args.device]:
        scene = make_scene(n, size, args.device)
        fwd, fwd_bwd = taichi_steps(scene, size)
        row = {"n": n, "size": size, "fwd_ms": median_ms(fwd, args.device, args.warmup, args.repeats),
               "fwd_bwd_ms": median_ms(fwd_bwd, args.device, args.warmup, args.repeats),
               "isect": taichi_intersections(scene, size)}
        skip = args.no_compare or (args.device == "cpu" and n > args.twin_max_n)
        other = None if skip else (twin_steps if args.device == "cpu" else gsplat_steps)(scene, size)
        if isinstance(other, str):
            row["baseline_error"] = other
            print(f"warning: no gsplat baseline: {other}", file=sys.stderr)
        elif other is not None:
            name = "twin_f64" if args.device == "cpu" else "gsplat"
            row["baseline"] = name
            row["baseline_fwd_ms"] = median_ms(other[0], args.device, 1, max(1, args.repeats // 2))
            row["baseline_fwd_bwd_ms"] = median_ms(other[1], args.device, 1, max(1, args.repeats // 2))
            row["baseline_isect"] = gsplat_intersections(other[2]) if len(other) > 2 else None
            row["fwd_ratio"] = row["fwd_ms"] / row["baseline_fwd_ms"]
            row["fwd_bwd_ratio"] = row["fwd_bwd_ms"] / row["baseline_fwd_bwd_ms"]
            if row["baseline_isect"]:
                row["isect_ratio"] = row["isect"] / row["baseline_isect"]
        rows.append(row)
    sort_sizes = SORT_SIZES[args.device] if args.sort_sizes is None else args.sort_sizes
    sorts = [bench_sort(n, args.device, args.warmup, args.repeats) for n in sort_sizes]

    table = Table(title=f"stavatar_ti rasterizer on {device_name} (median ms)")
    for col in ("N", "size", "fwd", "fwd+bwd", "isect", "baseline", "base fwd", "base fwd+bwd", "base isect",
                "fwd+bwd ratio"):
        table.add_column(col, justify="right")
    for r in rows:
        base = r.get("baseline_fwd_bwd_ms")
        table.add_row(str(r["n"]), str(r["size"]), f"{r['fwd_ms']:.2f}", f"{r['fwd_bwd_ms']:.2f}", f"{r['isect']:,}",
                      r.get("baseline", "-"), f"{r['baseline_fwd_ms']:.2f}" if base else "-",
                      f"{base:.2f}" if base else "-",
                      f"{r['baseline_isect']:,}" if r.get("baseline_isect") else "-",
                      f"{r['fwd_bwd_ms'] / base:.2f}" if base else "-")
    sort_table = Table(title="radix sort vs torch.sort (median ms)")
    for col in ("n", "taichi", "torch.sort", "ratio"):
        sort_table.add_column(col, justify="right")
    for s in sorts:
        sort_table.add_row(str(s["n"]), f"{s['taichi_ms']:.2f}", f"{s['torch_sort_ms']:.2f}", f"{s['ratio']:.2f}")
    console = Console()
    console.print(table)
    console.print(sort_table)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    tmp = args.out.with_suffix(".tmp")
    import taichi as ti

    given = sys.argv[1:] if argv is None else argv
    command = " ".join(shlex.quote(a) for a in ["scripts/bench_rasterizer.py", *given])
    tmp.write_text(json.dumps({"device": device_name, "torch": torch.__version__,
                               "taichi": ".".join(map(str, ti.__version__)),
                               "taichi_options": runtime.current_options(),
                               "date": datetime.datetime.now().astimezone().isoformat(timespec="seconds"),
                               "command": command, "warmup": args.warmup, "repeats": args.repeats,
                               "rasterize": rows, "sort": sorts}, indent=2, default=str))
    tmp.replace(args.out)
    console.print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
