"""scripts/ablate.py records (issue 21): one JSON record per (variant, seed) with the region metrics,
written after every run, and the mean ± std table. Training is replaced by a stub that returns
known numbers (the real training path is covered by tests/test_run_safety.py)."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import numpy as np
import pytest

from stavatar_ti.training import ablation

ROOT = Path(__file__).resolve().parents[1]
SMOKE = ROOT / "configs" / "smoke.yaml"
KEYS = ("psnr", "ssim", "lpips", "mouth_interior_psnr", "mouth_interior_lpips", "eyelid_psnr", "eyelid_lpips")


def _script():
    spec = importlib.util.spec_from_file_location("ablate_script", ROOT / "scripts" / "ablate.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod.main


def _metric(binding, densifier, schedule, seed, k):
    """A distinct, known value per (config, seed, metric)."""
    v = {"hard": 1.0, "soft": 2.0}[binding] + {"vanilla": 0.0, "temporal": 10.0}[densifier]
    v += {"sequential": 0.0, "interleaved": 100.0}[schedule] if densifier == "temporal" else 0.0
    return v + 0.5 * seed * (k + 1)


class _StubTrainer:
    runs = []
    fail_at = None

    def __init__(self, cfg, data, run_dir, console=None):
        self.cfg, self.run_dir = cfg, Path(run_dir)

    def run(self, resume=False, overwrite=False):
        if len(self.runs) == self.fail_at:
            raise ValueError("stub: training failed")
        c = self.cfg
        self.runs.append((c.model.binding, c.densify.densifier, c.train.seed))
        test = {k: _metric(c.model.binding, c.densify.densifier, c.densify.cluster_schedule, c.train.seed, i)
                for i, k in enumerate(KEYS)}
        test["eyelid_frames"] = 3
        return {"test": test, "test_frames": [{"timestep": 7, "psnr": test["psnr"]}], "num_gaussians": 100,
                "iterations": 5, "train_seconds": 1.0}


@pytest.fixture
def stub(monkeypatch):
    _StubTrainer.runs, _StubTrainer.fail_at = [], None
    monkeypatch.setattr(ablation, "Trainer", _StubTrainer)
    monkeypatch.setattr(ablation, "preflight", lambda *a, **k: None)
    return _StubTrainer


def test_records_for_every_variant_and_seed(stub, tmp_path, capsys):
    out, js = tmp_path / "abl", tmp_path / "records" / "synthetic.json"
    assert _script()(["--data", str(tmp_path), "--config", str(SMOKE), "--out", str(out), "--variants", "4,2",
                      "--seeds", "0,3", "--sequence", "synthetic", "--json", str(js)]) == 0
    recs = json.loads(js.read_text())
    assert [(r["variant_id"], r["seed"]) for r in recs] == [(4, 0), (2, 0), (4, 3), (2, 3)]  # order given
    assert [r["variant"] for r in recs[:2]] == ["soft + Temporal ADC (interleaved)", "soft + vanilla ADC"]
    assert stub.runs == [("soft", "temporal", 0), ("soft", "vanilla", 0), ("soft", "temporal", 3),
                         ("soft", "vanilla", 3)]
    for r in recs:
        assert r["sequence"] == "synthetic" and set(KEYS) <= set(r["test"])
        assert r["test_frames"] == [{"timestep": 7, "psnr": r["test"]["psnr"]}]
        assert Path(r["out"]) == out / f"seed{r['seed']}" / str(r["variant_id"])
    # the table: mean ± sample std over the seeds, per variant
    table = (out / "ablation.md").read_text()
    row = next(line for line in table.splitlines() if "(interleaved)" in line).split(" | ")
    header = table.splitlines()[0].split(" | ")
    for i, k in enumerate(("psnr", "mouth_interior_psnr", "eyelid_lpips")):
        vals = [_metric("soft", "temporal", "interleaved", s, KEYS.index(k)) for s in (0, 3)]
        cell = row[header.index(k.replace("_", " "))]
        digits = dict(ablation.TABLE_METRICS)[k]
        assert cell == f"{np.mean(vals):.{digits}f} ± {np.std(vals, ddof=1):.{digits}f}"
    assert row[header.index("seeds")] == "2"


def test_records_written_after_every_run(stub, tmp_path):
    stub.fail_at = 2
    js = tmp_path / "r.json"
    with pytest.raises(ValueError, match="stub"):
        ablation.run_ablation(SMOKE, tmp_path, tmp_path / "abl", variants=[1, 3], seeds=(0, 1), json_path=js)
    recs = json.loads(js.read_text())   # the two finished runs are on disk
    assert [(r["variant_id"], r["seed"]) for r in recs] == [(1, 0), (3, 0)]
    assert recs[1]["variant"] == "soft + Temporal ADC (paper schedule)"
    assert not (tmp_path / "r.json.tmp").exists()


@pytest.mark.parametrize("flag", ["x,1", "-1"])
def test_bad_seeds_flag(stub, tmp_path, capsys, flag):
    with pytest.raises(SystemExit) as exc:
        _script()(["--data", str(tmp_path), "--out", str(tmp_path / "abl"), "--seeds", flag])
    assert exc.value.code == 2 and "--seeds" in capsys.readouterr().err
    assert stub.runs == [] and not (tmp_path / "abl").exists()
