"""The CUDA check (scripts/gpu_check.sh, stavatar_ti.tools.gpu_check): wheel stripping, result
parsing, the benchmark's intersection counts, and the whole script's CPU dry run."""

import importlib.util
import json
import math
import os
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest
import torch

import stavatar_ti
from stavatar_ti.tools import gpu_check

ROOT = Path(__file__).resolve().parents[1]


def load_script(name):
    spec = importlib.util.spec_from_file_location(f"script_{name}", ROOT / "scripts" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def make_wheel(path: Path, members: dict) -> Path:
    """A wheel of `members` (name -> text) with WHEEL, METADATA and a RECORD listing everything."""
    members = {**members, "demo-1.0.dist-info/METADATA": "Metadata-Version: 2.1\nName: demo\nVersion: 1.0\n",
               "demo-1.0.dist-info/WHEEL": "Wheel-Version: 1.0\nGenerator: test\nRoot-Is-Purelib: true\nTag: py3-none-any\n"}
    record = "".join(f"{name},,\n" for name in members) + "demo-1.0.dist-info/RECORD,,\n"
    with zipfile.ZipFile(path, "w") as z:
        for name, text in members.items():
            z.writestr(name, text)
        z.writestr("demo-1.0.dist-info/RECORD", record)
    return path


def test_strip_wheel_drops_unused_parts_and_their_record_lines(tmp_path):
    keep = {"demo/__init__.py": "X = 1\n", "demo/_lib/core/core.txt": "core", "demo/_lib/runtime/rt.bc": "bc"}
    drop = {"demo/_lib/c_api/lib.txt": "c api", "demo/assets/font.ttf": "ttf", "demo/examples/ex.py": "print()",
            "demo-1.0.data/data/include/h.h": "header"}
    src = make_wheel(tmp_path / "demo-1.0-py3-none-any.whl", {**keep, **drop})
    dst = tmp_path / "out" / "demo-1.0-py3-none-any.whl"
    dst.parent.mkdir()
    info = gpu_check.strip_wheel(src, dst, prefixes=("demo/_lib/c_api/", "demo/assets/", "demo/examples/"))
    assert info["dropped"] == len(drop) and info["kept"] == len(keep) + 3 and info["bytes"] == dst.stat().st_size
    with zipfile.ZipFile(dst) as z:
        names = set(z.namelist())
        record = z.read("demo-1.0.dist-info/RECORD").decode()
    assert set(keep) <= names and not set(drop) & names
    listed = {line.split(",")[0] for line in record.splitlines() if line}
    assert listed == names
    # pip installs the stripped wheel, and the package imports
    site = tmp_path / "site"
    subprocess.run([sys.executable, "-m", "pip", "install", "-q", "--no-index", "--no-deps", "--target", str(site),
                    str(dst)], check=True, capture_output=True)
    assert (site / "demo" / "_lib" / "core" / "core.txt").is_file() and not (site / "demo" / "assets").exists()
    assert subprocess.run([sys.executable, "-c", "import demo; assert demo.X == 1"], cwd=site).returncode == 0


def test_strip_wheel_cli_errors(tmp_path, capsys):
    plain = tmp_path / "plain.whl"
    with zipfile.ZipFile(plain, "w") as z:
        z.writestr("a.py", "")
    assert gpu_check.main(["strip-wheel", str(plain), str(tmp_path / "x.whl")]) == 2
    assert "not a wheel" in capsys.readouterr().err and not (tmp_path / "x.whl").exists()
    assert gpu_check.main(["strip-wheel", str(tmp_path / "missing.whl"), str(tmp_path / "x.whl")]) == 2
    assert "missing.whl: no such wheel" in capsys.readouterr().err


def test_junit_counts(tmp_path):
    xml = tmp_path / "j.xml"
    xml.write_text('<testsuites><testsuite><testcase classname="t.a" name="ok"/>'
                   '<testcase classname="t.a" name="bad"><failure message="x"/></testcase>'
                   '<testcase classname="t.b" name="err"><error message="y"/></testcase>'
                   '<testcase classname="t.b" name="skip"><skipped/></testcase></testsuite></testsuites>')
    assert gpu_check.junit_counts(xml) == {"passed": 1, "failed": 1, "errors": 1, "skipped": 1,
                                           "failures": ["t.a::bad", "t.b::err"]}
    assert gpu_check.junit_counts(tmp_path / "none.xml") is None


def test_bench_intersection_counts(device):
    """The benchmark's Taichi count equals the tile rectangles of the rendered radii and centres."""
    bench = load_script("bench_rasterizer")
    size = 64
    scene = bench.make_scene(400, size, str(device), seed=2)
    count = bench.taichi_intersections(scene, size)
    out = stavatar_ti.rasterize(scene["means"], scene["quats"], scene["scales"], scene["opacities"],
                                scene["colors"], viewmat=scene["viewmat"], K=scene["K"], width=size, height=size)
    tiles = size // 16
    expected = 0
    for (u, v), r in zip(out.means2d.cpu().tolist(), out.radii.cpu().tolist()):
        if r > 0:
            x0, x1 = (min(max(math.floor((u + s * r) / 16), 0), tiles - 1) for s in (-1, 1))
            y0, y1 = (min(max(math.floor((v + s * r) / 16), 0), tiles - 1) for s in (-1, 1))
            expected += (x1 - x0 + 1) * (y1 - y0 + 1)
    assert count == expected > 400
    assert bench.gsplat_intersections({"flatten_ids": torch.arange(7), "tiles_per_gauss": torch.ones(3)}) == 7
    assert bench.gsplat_intersections({"tiles_per_gauss": torch.tensor([1, 2, 0])}) == 3
    assert bench.gsplat_intersections({}) is None


def test_gpu_check_refuses_without_taichi_or_wheels(tmp_path):
    """A Python without taichi and no wheels to install: a one-line error, exit 2, nothing run."""
    system = Path("/usr/bin/python3")
    if not system.is_file() or subprocess.run([str(system), "-c", "import taichi"], capture_output=True).returncode == 0:
        pytest.skip("needs a python3 without taichi")
    res = subprocess.run(["bash", str(ROOT / "scripts" / "gpu_check.sh"), "--out", str(tmp_path / "o")],
                         env={**os.environ, "PYTHON": str(system), "GPU_CHECK_WHEELS": str(tmp_path / "none")},
                         capture_output=True, text=True)
    assert res.returncode == 2 and res.stderr.startswith("error: taichi is not installed")
    assert not (tmp_path / "o").exists()


@pytest.mark.slow
def test_gpu_check_cpu_dry_run(tmp_path):
    """Every step of both parts, at tiny sizes on the CPU: summary, JSON, logs in one folder."""
    out = tmp_path / "check"
    env = {**os.environ, "PYTHON": sys.executable, "STAVATAR_CPU_THREADS": "1"}
    res = subprocess.run(["bash", str(ROOT / "scripts" / "gpu_check.sh"), "--device", "cpu", "--quick", "--part", "all",
                          "--out", str(out)], env=env, capture_output=True, text=True, timeout=900)
    assert res.returncode == 0, res.stdout[-3000:] + res.stderr[-3000:]
    files = sorted(p.name for p in out.iterdir())
    assert files == ["bench_rasterizer_cuda.json", "bench_train_cuda.json", "log.txt", "profile_step.txt",
                     "pytest_cuda.xml", "summary.json"]  # <= 8 files, no leftovers
    summary = json.loads((out / "summary.json").read_text())
    steps = {s["name"]: s["status"] for s in summary["steps"]}
    assert steps == {"env": "ok", "gsplat_build": "skipped", "tests": "ok", "tests_fast_math": "skipped",
                     "bench_rasterizer": "ok", "bench_train": "ok"}
    res_ = summary["results"]
    assert res_["env"]["taichi_arch"] == "x64" and res_["env"]["taichi_options"] == {"cpu_max_num_threads": 1}
    assert res_["tests"] == {"passed": 2, "failed": 0, "errors": 0, "skipped": 0, "failures": []}
    assert [(r["n"], r["size"]) for r in res_["rasterizer"]] == [(300, 32), (600, 48)]
    assert all(r["isect"] > 0 and r["fwd_ms"] > 0 and r["baseline"] == "twin_f64" for r in res_["rasterizer"])
    bench = json.loads((out / "bench_rasterizer_cuda.json").read_text())
    assert bench["taichi"] == "1.7.4" and "--sizes 300@32,600@48" in bench["command"] and len(bench["sort"]) == 1
    train = res_["training"]
    assert train["size"] == "32x32" and train["phases"]["early"]["it_per_s"] > 0
    assert train["projected_minutes"] == pytest.approx(10200 / train["phases"]["early"]["it_per_s"] / 60)
    table = (out / "profile_step.txt").read_text()
    assert "Trainer.step" in table and "Self CPU" in table and "aten::" in table
    log = (out / "log.txt").read_text()
    assert "===== bench_train" in log and "===== tests" in log
    printed = res.stdout
    assert "tests: 2 passed, 0 failed" in printed and "rasterize 300 @ 32²" in printed and "twin_f64" in printed
    assert "training 32x32 (early)" in printed and "projected paper schedule" in printed
