"""scripts/bench_train.py: a tiny end-to-end run of the training benchmark and its JSON report,
and Trainer.enable_timing (the per-part timers it reads)."""

import importlib.util
import json
import math
from pathlib import Path

import pytest

from conftest import DEVICE

ROOT = Path(__file__).resolve().parents[1]
PARTS = ("network", "gaussians", "render", "losses", "backward", "densify_stats", "optimizer")


def load_script():
    spec = importlib.util.spec_from_file_location("script_bench_train", ROOT / "scripts" / "bench_train.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_bench_train_reports_every_part(tmp_path, capsys):
    bench = load_script()
    out = tmp_path / "bench.json"
    rc = bench.main(["--config", str(ROOT / "configs" / "smoke.yaml"), "--size", "64", "--frames", "6",
                     "--warmup", "1", "--iters", "2", "--device", DEVICE, "--json", str(out)])
    assert rc == 0
    printed = capsys.readouterr().out
    assert "it/s" in printed and "Projected" in printed and "projection" in printed
    result = json.loads(out.read_text())
    for key in ("device", "torch", "taichi", "date", "command", "phases", "projection", "size"):
        assert key in result, key
    assert result["size"] == "64x64" and "--iters" in result["command"]
    assert list(result["phases"]) == ["early"]  # smoke.yaml has no LPIPS term
    phase = result["phases"]["early"]
    assert phase["iterations"] == 2 and len(phase["totals_ms"]) == 2
    assert set(phase["parts_ms"]) == set(PARTS) == set(phase["shares_pct"])
    assert all(v >= 0 for v in phase["parts_ms"].values())
    assert phase["parts_ms"]["network"] > 0 and phase["parts_ms"]["backward"] > 0  # soft binding
    assert math.isclose(sum(phase["shares_pct"].values()), 100.0, abs_tol=0.01)
    assert phase["it_per_s"] > 0 and phase["total_ms"] > 0
    # the parts account for the iteration (the timer itself costs microseconds)
    assert sum(phase["parts_ms"].values()) == pytest.approx(phase["total_ms"], rel=0.25)
    assert phase["peak_memory"]["max_mib"] > 0
    proj = result["projection"]
    assert proj["n_train"] == 1700 and proj["iterations"] == 6 * 1700  # smoke.yaml keeps 6 epochs
    assert proj["minutes"] == pytest.approx(proj["iterations"] / phase["it_per_s"] / 60.0)
