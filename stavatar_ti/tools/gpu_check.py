"""The CUDA check (docs/performance.md, "CUDA check"): everything a first GPU contact should
measure, as one prepared run that writes a summary, the raw JSON and one log into one folder.

    bash scripts/gpu_check.sh --part 1 --out DIR    # ~7 min on an H100/H200: env, CUDA tests, gsplat bench
    bash scripts/gpu_check.sh --part 2 --out DIR    # ~4 min: training benchmark, profiler table
    bash scripts/gpu_check.sh --device cpu --quick --part all --out DIR   # the CPU dry run (tests)

Part 1: environment (versions, nvidia-smi, Taichi started on CUDA without fallback), gsplat's JIT
build in the background, the CUDA test subset (STAVATAR_TEST_DEVICE=cuda, fast_math off as the
suite's conftest sets it), the twin tests again with fast_math on (to classify any difference),
scripts/bench_rasterizer.py against gsplat at 512²/100k and 1024²/500k Gaussians.
Part 2: scripts/bench_train.py at 512² (it/s per part, peak memory, projected paper schedule) and
its torch profiler table of one more training step (--profile).
Every step runs in its own process with a time limit cut from the part's budget (--budget; part 1
450 s, part 2 240 s; the fast-math rerun is the first to go when the tests ran long), so a device
call of 560 s (`bash scripts/gpu_check.sh --part 1 --out $OUT`, carrying .whl) leaves room for the
wheel install; `summary.json` is rewritten after each step, so a run cut short still leaves what
it measured. At most 8 files are written (the device
tool brings back 8): summary.json, log.txt, pytest_cuda.xml, pytest_fast_math.xml,
bench_rasterizer_cuda.json, bench_train_cuda.json, profile_step.txt (names keep "cuda" on the CPU
dry run too, so the file set is the same).

Also `strip-wheel SRC DST` (scripts/make_gpu_wheels.sh): a copy of the taichi wheel without the
parts an `import taichi` never loads.
The steps run the project in subprocesses (a CUDA error that poisons one process's context does
not stop the others); scripts/gpu_check.sh installs the carried wheels before this module runs.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shlex
import subprocess
import sys
import time
import xml.etree.ElementTree as ET
import zipfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
STRIP_PREFIXES = ("taichi/_lib/c_api/", "taichi/assets/", "taichi/examples/")
CUDA_TESTS = ["tests/test_runtime.py", "tests/test_rasterize_twin.py", "tests/test_rasterize_inputs.py",
              "tests/test_rasterize_fd.py", "tests/test_sort.py", "tests/test_temporal.py", "tests/test_uv.py"]
TWIN_TESTS = ["tests/test_rasterize_twin.py"]
BENCH_SIZES = "100000@512,500000@1024"
BUDGETS = {"1": 450.0, "2": 240.0, "all": 720.0}  # seconds; a device call allows 600 with the wheel install
GSPLAT_WARM = """
import time, torch, gsplat
t0 = time.perf_counter()
n = 64
means = torch.randn(n, 3, device="cuda") * 0.1 + torch.tensor([0.0, 0.0, 2.0], device="cuda")
quats = torch.randn(n, 4, device="cuda"); scales = torch.full((n, 3), 0.02, device="cuda")
opac = torch.full((n,), 0.5, device="cuda"); colors = torch.rand(n, 3, device="cuda")
K = torch.tensor([[64.0, 0, 32], [0, 64.0, 32], [0, 0, 1]], device="cuda")
viewmat = torch.eye(4, device="cuda")[None]
img, _, meta = gsplat.rasterization(means, quats, scales, opac, colors, viewmat, K[None], 64, 64)
torch.cuda.synchronize()
version = getattr(gsplat, "__version__", "?")
print(f"gsplat {version} CUDA extension ready in {time.perf_counter() - t0:.1f} s; meta keys {sorted(meta)}")
"""
ENV_PROBE = """
import json, platform, sys, torch, taichi as ti
import stavatar_ti
from stavatar_ti.render import runtime
dev = sys.argv[1]
stavatar_ti.init(dev)
cfg = ti.lang.impl.current_cfg()
print(json.dumps({"python": platform.python_version(), "torch": torch.__version__,
                  "torch_cuda": torch.version.cuda, "taichi": ".".join(map(str, ti.__version__)),
                  "gpu": torch.cuda.get_device_name(0) if dev == "cuda" else None,
                  "taichi_arch": runtime.current_arch(), "taichi_options": runtime.current_options(),
                  "fast_math": bool(cfg.fast_math), "device_memory_GB": cfg.device_memory_GB}))
"""


# ---------------------------------------------------------------------------------------- wheels
def strip_wheel(src: Path, dst: Path, prefixes=STRIP_PREFIXES) -> dict:
    """Copy wheel `src` to `dst` without the members under `prefixes` or the `*.data/` tree, and
    without their RECORD lines (pip installs what RECORD lists).

    Taichi 1.7.4's wheel: taichi/_lib/c_api (the C API for AOT, 20 MB), taichi-1.7.4.data (its
    headers and CMake files), assets and examples; `import taichi`, ti.init and kernel compilation
    use none of them (taichi/_lib/core and taichi/_lib/runtime stay).
    Returns:
        {"kept": members, "dropped": members, "bytes": size of dst}.
    Raises:
        ValueError: src is not a wheel (no *.dist-info/RECORD).
    """
    src, dst = Path(src), Path(dst)
    kept, dropped = 0, 0

    def drop(name: str) -> bool:
        top = name.split("/", 1)[0]
        return name.startswith(tuple(prefixes)) or top.endswith(".data")

    with zipfile.ZipFile(src) as zin:
        records = [n for n in zin.namelist() if n.endswith(".dist-info/RECORD")]
        if len(records) != 1:
            raise ValueError(f"{src}: not a wheel (expected one *.dist-info/RECORD)")
        tmp = dst.with_name(dst.name + ".tmp")
        with zipfile.ZipFile(tmp, "w", compression=zipfile.ZIP_DEFLATED, compresslevel=6) as zout:
            for info in zin.infolist():
                if drop(info.filename):
                    dropped += 1
                    continue
                data = zin.read(info)
                if info.filename == records[0]:
                    lines = data.decode().splitlines()
                    data = ("\n".join(ln for ln in lines if not drop(ln.split(",", 1)[0])) + "\n").encode()
                zout.writestr(info, data, compress_type=zipfile.ZIP_DEFLATED)
                kept += 1
        tmp.replace(dst)
    return {"kept": kept, "dropped": dropped, "bytes": dst.stat().st_size}


# ---------------------------------------------------------------------------------------- steps
class Runner:
    """Runs steps as subprocesses with time limits, appending their output to log.txt and their
    records to summary.json (rewritten after each step)."""

    def __init__(self, out: Path, device: str, part: str, quick: bool, budget: float):
        self.out, self.device = out, device
        self.deadline = time.perf_counter() + budget
        self.log = out / "log.txt"
        self.summary = {"device": device, "part": part, "quick": quick, "started": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
                        "host": platform.node(), "steps": []}
        self.env = dict(os.environ, PYTHONUNBUFFERED="1")
        self.env["PYTHONPATH"] = os.pathsep.join(p for p in (str(ROOT), os.environ.get("PYTHONPATH")) if p)

    def left(self, reserve: float = 0.0) -> float:
        """Seconds of the budget left after keeping `reserve` for the steps still to come."""
        return self.deadline - time.perf_counter() - reserve

    def write(self) -> None:
        tmp = self.out / "summary.json.tmp"
        tmp.write_text(json.dumps(self.summary, indent=2, default=str))
        tmp.replace(self.out / "summary.json")

    def _record(self, name, cmd, rc, seconds, note=None) -> dict:
        status = "ok" if rc == 0 else ("timeout" if rc == "timeout" else ("skipped" if rc is None else "failed"))
        rec = {"name": name, "command": cmd if isinstance(cmd, str) else " ".join(shlex.quote(c) for c in cmd),
               "rc": rc, "seconds": round(seconds, 1), "status": status}
        if note:
            rec["note"] = note
        self.summary["steps"].append(rec)
        self.write()
        print(f"[gpu_check] {name}: {status} ({seconds:.0f} s){' - ' + note if note else ''}", flush=True)
        return rec

    def skip(self, name: str, why: str) -> dict:
        return self._record(name, "-", None, 0.0, why)

    def run(self, name: str, cmd: list[str], timeout: float, env: dict | None = None) -> dict:
        t0 = time.perf_counter()
        with open(self.log, "a") as log:
            log.write(f"\n===== {name}: {' '.join(shlex.quote(c) for c in cmd)}\n")
            log.flush()
            try:
                rc = subprocess.run(cmd, cwd=ROOT, env={**self.env, **(env or {})}, stdout=log,
                                    stderr=subprocess.STDOUT, timeout=timeout).returncode
            except subprocess.TimeoutExpired:
                rc = "timeout"
                log.write(f"\n===== {name}: killed after {timeout:.0f} s\n")
        return self._record(name, cmd, rc, time.perf_counter() - t0)

    def start(self, name: str, cmd: list[str], env: dict | None = None):
        """A background step (its own log file, merged into log.txt by `finish`)."""
        path = self.out / f".{name}.log"
        fh = open(path, "w")
        proc = subprocess.Popen(cmd, cwd=ROOT, env={**self.env, **(env or {})}, stdout=fh, stderr=subprocess.STDOUT)
        return {"name": name, "cmd": cmd, "proc": proc, "fh": fh, "path": path, "t0": time.perf_counter()}

    def finish(self, job, timeout: float) -> dict:
        try:
            rc = job["proc"].wait(timeout=max(1.0, timeout))
        except subprocess.TimeoutExpired:
            job["proc"].kill()
            job["proc"].wait()
            rc = "timeout"
        job["fh"].close()
        with open(self.log, "a") as log:
            log.write(f"\n===== {job['name']} (background): {' '.join(shlex.quote(c) for c in job['cmd'])}\n")
            log.write(job["path"].read_text(errors="replace"))
        job["path"].unlink()
        return self._record(job["name"], job["cmd"], rc, time.perf_counter() - job["t0"])


def junit_counts(path: Path) -> dict | None:
    """passed / failed / errors / skipped and the failing test ids from a pytest --junitxml file."""
    if not path.is_file():
        return None
    root = ET.parse(path).getroot()
    out = {"passed": 0, "failed": 0, "errors": 0, "skipped": 0, "failures": []}
    for case in root.iter("testcase"):
        tid = f"{case.get('classname')}::{case.get('name')}"
        if case.find("failure") is not None:
            out["failed"] += 1
            out["failures"].append(tid)
        elif case.find("error") is not None:
            out["errors"] += 1
            out["failures"].append(tid)
        elif case.find("skipped") is not None:
            out["skipped"] += 1
        else:
            out["passed"] += 1
    return out


def _read_json(path: Path):
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None


def digest(out: Path) -> dict:
    """The numbers the issue asks for, read back from the step outputs."""
    res = {}
    env = None
    log = out / "log.txt"
    if log.is_file():
        for line in log.read_text(errors="replace").splitlines():
            if line.startswith("{") and '"taichi_arch"' in line:
                env = json.loads(line)
    res["env"] = env
    res["tests"] = junit_counts(out / "pytest_cuda.xml")
    fast = junit_counts(out / "pytest_fast_math.xml")
    if fast is not None:
        base = set((res["tests"] or {}).get("failures", []))
        res["fast_math_twin"] = {**fast, "only_with_fast_math": sorted(set(fast["failures"]) - base)}
    bench = _read_json(out / "bench_rasterizer_cuda.json")
    if bench:
        res["rasterizer"] = [{k: r.get(k) for k in ("n", "size", "fwd_ms", "fwd_bwd_ms", "isect", "baseline",
                                                     "baseline_fwd_ms", "baseline_fwd_bwd_ms", "baseline_isect",
                                                     "fwd_ratio", "fwd_bwd_ratio", "isect_ratio", "baseline_error")}
                             for r in bench["rasterize"]]
    train = _read_json(out / "bench_train_cuda.json")
    if train:
        res["training"] = {
            "size": train["size"], "device_name": train.get("device_name"),
            "phases": {name: {"it_per_s": ph["it_per_s"], "total_ms": ph["total_ms"], "parts_ms": ph["parts_ms"],
                              "peak_memory_mib": ph["peak_memory"]["max_mib"]}
                       for name, ph in train["phases"].items()},
            "projected_minutes": train["projection"]["minutes"], "projection_basis": train["projection"]["basis"]}
    prof = out / "profile_step.txt"
    res["profile_lines"] = len(prof.read_text().splitlines()) if prof.is_file() else None
    return res


def summary_lines(res: dict) -> list[str]:
    """The digest as a few human-readable lines (printed at the end of a run)."""
    lines = []
    env = res.get("env") or {}
    if env:
        lines.append(f"env: {env.get('gpu') or 'CPU'}, torch {env.get('torch')}, taichi {env.get('taichi')} on "
                     f"{env.get('taichi_arch')} (fast_math {env.get('fast_math')}, pool {env.get('device_memory_GB')} GB)")
    for key, label in (("tests", "tests"), ("fast_math_twin", "twin tests with fast_math")):
        t = res.get(key)
        if t:
            lines.append(f"{label}: {t['passed']} passed, {t['failed']} failed, {t['errors']} errors, "
                         f"{t['skipped']} skipped" + (f"; failing: {', '.join(t['failures'])}" if t["failures"] else ""))
    for r in res.get("rasterizer") or []:
        line = (f"rasterize {r['n']:,} @ {r['size']}²: fwd {r['fwd_ms']:.2f} ms, fwd+bwd {r['fwd_bwd_ms']:.2f} ms, "
                f"{r['isect']:,} intersections")
        if r.get("baseline_fwd_ms") is not None:
            isect = f", {r['baseline_isect']:,} intersections" if r.get("baseline_isect") else ""
            line += (f" | {r['baseline']}: fwd {r['baseline_fwd_ms']:.2f} ms, fwd+bwd {r['baseline_fwd_bwd_ms']:.2f} ms"
                     f"{isect}; time ratio fwd+bwd {r['fwd_bwd_ratio']:.2f}")
        elif r.get("baseline_error"):
            line += f" | no baseline: {r['baseline_error']}"
        lines.append(line)
    tr = res.get("training")
    if tr:
        for name, ph in tr["phases"].items():
            lines.append(f"training {tr['size']} ({name}): {ph['it_per_s']:.2f} it/s, peak {ph['peak_memory_mib']:.0f} MiB")
        lines.append(f"projected paper schedule, 2,000 frames: {tr['projected_minutes']:.1f} min ({tr['projection_basis']})")
    return lines


# ---------------------------------------------------------------------------------------- main
def run_check(args) -> int:
    out = args.out.resolve()
    out.mkdir(parents=True, exist_ok=True)
    py = sys.executable
    dev, quick = args.device, args.quick
    budget = args.budget or BUDGETS[args.part]
    r = Runner(out, dev, args.part, quick, budget)
    r.summary["budget_s"] = budget
    r.write()
    parts = {"1", "2"} if args.part == "all" else {args.part}
    cuda_env = {"STAVATAR_TEST_DEVICE": dev}
    if "1" in parts:
        # time limits: each step gets what the budget leaves after a reserve for the later ones
        # (gsplat wait + rasterizer benchmark: 150 s; the training benchmark in --part all: 200 s)
        later = 150.0 + (200.0 if "2" in parts else 0.0)
        if dev == "cuda":
            r.run("nvidia-smi", ["nvidia-smi"], 30)
        r.run("env", [py, "-c", ENV_PROBE, dev], max(10.0, min(90.0, r.left(later + 60))))
        gsplat = None
        if dev == "cuda" and not args.no_gsplat:
            # builds gsplat's CUDA extension (torch cpp_extension JIT, minutes) while the tests run
            gsplat = r.start("gsplat_build", [py, "-c", GSPLAT_WARM],
                             {"MAX_JOBS": str(os.cpu_count() or 8), "TORCH_CUDA_ARCH_LIST": args.cuda_arch})
        else:
            r.skip("gsplat_build", "CPU dry run" if dev == "cpu" else "--no-gsplat")
        tests = CUDA_TESTS if not quick else ["tests/test_runtime.py::test_cuda_device_index_must_be_zero",
                                              "tests/test_runtime.py::test_non_default_stream_is_rejected"]
        r.run("tests", [py, "-m", "pytest", "-q", "-p", "no:cacheprovider", "--junitxml",
                        str(out / "pytest_cuda.xml"), *tests], max(30.0, min(args.test_timeout, r.left(later))),
              cuda_env)
        if dev != "cuda":
            r.skip("tests_fast_math", "fast_math approximations are a CUDA matter")
        elif r.left(later) < 60:
            r.skip("tests_fast_math", "no time left in the budget")
        else:
            r.run("tests_fast_math", [py, "-m", "pytest", "-q", "-p", "no:cacheprovider", "--junitxml",
                                      str(out / "pytest_fast_math.xml"), *TWIN_TESTS],
                  min(150.0, r.left(later)), {**cuda_env, "STAVATAR_FAST_MATH": "1"})
        gsplat_ok = False
        if gsplat is not None:
            gsplat_ok = r.finish(gsplat, min(args.gsplat_timeout, r.left(later - 60)))["status"] == "ok"
        sizes = "300@32,600@48" if quick else (args.sizes or (BENCH_SIZES if dev == "cuda" else "20000@256"))
        bench = [py, "scripts/bench_rasterizer.py", "--device", dev, "--sizes", sizes,
                 "--out", str(out / "bench_rasterizer_cuda.json")]
        if quick:
            bench += ["--warmup", "1", "--repeats", "1", "--sort-sizes", "3000"]
        elif dev == "cuda":
            bench += ["--sort-sizes", "1000000,10000000"]
        if dev == "cuda" and not gsplat_ok:
            # a killed build leaves torch's extension lock behind: loading gsplat again would wait on it
            bench += ["--no-compare"]
        r.run("bench_rasterizer", bench, max(30.0, min(240.0, r.left(later - 150))))
    if "2" in parts:
        if quick:
            train_args = ["--config", "configs/smoke.yaml", "--size", "32", "--frames", "4", "--warmup", "0",
                          "--iters", "1"]
        else:
            train_args = ["--size", str(args.size)]
        r.run("bench_train", [py, "scripts/bench_train.py", "--device", dev, *train_args,
                              "--json", str(out / "bench_train_cuda.json"),
                              "--profile", str(out / "profile_step.txt")], max(60.0, r.left(5)))
    r.summary["results"] = digest(out)
    r.summary["finished"] = time.strftime("%Y-%m-%dT%H:%M:%S%z")
    r.write()
    print("\n".join(summary_lines(r.summary["results"])))
    failed = [s["name"] for s in r.summary["steps"] if s["status"] in ("failed", "timeout")]
    print(f"[gpu_check] wrote {out}; steps failed: {failed or 'none'}")
    return 1 if failed else 0


def parser() -> argparse.ArgumentParser:
    """The command line of the check (scripts/gpu_check.sh validates its arguments with it before
    installing anything)."""
    ap = argparse.ArgumentParser(description="The CUDA check (docs/performance.md).")
    sub = ap.add_subparsers(dest="cmd", required=True)
    run = sub.add_parser("run", help="run part 1, 2 or all of the check")
    run.add_argument("--device", choices=("cuda", "cpu"), default="cuda")
    run.add_argument("--part", choices=("1", "2", "all"), default="all")
    run.add_argument("--out", type=Path, default=Path(os.environ.get("OUT", "gpu_check_out")))
    run.add_argument("--quick", action="store_true", help="tiny sizes (the CPU dry run of the tests)")
    run.add_argument("--size", type=int, default=512, help="training benchmark image side (default 512)")
    run.add_argument("--sizes", help=f"rasterizer benchmark N@SIZE list (default on CUDA {BENCH_SIZES})")
    run.add_argument("--budget", type=float, help="seconds for all steps (default: part 1 450, part 2 240, all 720)")
    run.add_argument("--test-timeout", type=float, default=220.0)
    run.add_argument("--gsplat-timeout", type=float, default=240.0, help="seconds to wait for gsplat's build")
    run.add_argument("--cuda-arch", default="9.0", help="TORCH_CUDA_ARCH_LIST for gsplat's build (H100/H200: 9.0)")
    run.add_argument("--no-gsplat", action="store_true")
    strip = sub.add_parser("strip-wheel", help="copy the taichi wheel without c_api, data, assets, examples")
    strip.add_argument("src", type=Path)
    strip.add_argument("dst", type=Path)
    return ap


def main(argv=None) -> int:
    args = parser().parse_args(argv)
    if args.cmd == "strip-wheel":
        if not args.src.is_file():
            print(f"error: {args.src}: no such wheel", file=sys.stderr)
            return 2
        try:
            info = strip_wheel(args.src, args.dst)
        except (ValueError, zipfile.BadZipFile) as exc:
            print(f"error: {exc}", file=sys.stderr)
            return 2
        print(f"{args.dst}: {info['bytes'] / 2**20:.1f} MiB, {info['kept']} members kept, {info['dropped']} dropped")
        return 0
    return run_check(args)


if __name__ == "__main__":
    sys.exit(main())
