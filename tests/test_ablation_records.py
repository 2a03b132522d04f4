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


def _rec(vid, seed, seq="s", **test):
    return {"variant": str(vid), "variant_id": vid, "seed": seed, "sequence": seq, "test": test}


def test_paired_differences_and_the_seed_std_criterion():
    # variant 4 minus 2 per seed: psnr +1, +1, +0.5 (mean 5/6) but the seed stds are 0.76 and 1.04,
    # so 4 does not beat 2; eyelid psnr +2, +2, +2 with seed stds 0.1 / 0.1: it does; LPIPS lower is
    # better: -0.02 each with stds 0.01 / 0.01 beats, +0.02 would not
    recs = [_rec(4, s, psnr=p4, eyelid_psnr=e, eyelid_lpips=l4) for s, p4, e, l4 in
            [(0, 20.0, 10.1, 0.08), (1, 20.5, 10.2, 0.09), (2, 21.5, 10.3, 0.10)]]
    recs += [_rec(2, s, psnr=p2, eyelid_psnr=e, eyelid_lpips=l2) for s, p2, e, l2 in
             [(0, 19.0, 8.1, 0.10), (1, 19.5, 8.2, 0.11), (2, 21.0, 8.3, 0.12)]]
    recs.append(_rec(2, 5, psnr=99.0))  # no partner seed: left out
    rows = {r["metric"]: r for r in ablation.paired_differences(recs, 4, 2)}
    assert rows["psnr"]["seeds"] == [0, 1, 2]
    assert np.allclose(rows["psnr"]["diffs"], [1.0, 1.0, 0.5])
    assert rows["psnr"]["mean"] == pytest.approx(5 / 6) and rows["psnr"]["std"] == pytest.approx(np.std([1, 1, 0.5], ddof=1))
    assert rows["psnr"]["std_b"] == pytest.approx(np.std([19.0, 19.5, 21.0], ddof=1))
    assert not rows["psnr"]["beats"]
    assert rows["eyelid_psnr"]["beats"] and rows["eyelid_lpips"]["beats"]
    assert not {r["metric"]: r for r in ablation.paired_differences(recs, 2, 4)}["eyelid_lpips"]["beats"]
    assert "mouth_interior_psnr" not in rows  # no values: no row
    table = ablation.paired_table(recs, pairs=((4, 2),))
    assert "| s | 4 − 2 | psnr | 3 | +0.83 ± 0.29 | +1.00, +1.00, +0.50 | 0.76 / 1.04 | no |" in table


def test_report_mode_summarises_records_and_rejects_bad_files(tmp_path, capsys):
    good = tmp_path / "a.json"
    good.write_text(json.dumps([_rec(4, 0, psnr=21.0) | {"variant": "v4"}, _rec(2, 0, psnr=20.0) | {"variant": "v2"}]))
    assert _script()(["--report", str(good)]) == 0
    out = capsys.readouterr().out
    assert "| s | v4 | 1 | 21.00 |" in out and "| s | 4 − 2 | psnr | 1 | +1.00 | +1.00 | - | no |" in out
    bad = tmp_path / "b.json"
    bad.write_text(json.dumps({"psnr": 1}))
    assert _script()(["--report", str(bad)]) == 1
    assert capsys.readouterr().err.strip() == f"error: {bad}: expected a list of ablation records (variant_id, seed, sequence, test)"
    with pytest.raises(SystemExit) as exc:
        _script()([])
    assert exc.value.code == 2


def test_forgetting_from_the_phase_matrix_and_the_phases_report(tmp_path, capsys):
    from stavatar_ti.tools.evaluation import forgetting
    # 2 clusters: cluster 0 reaches 30 after its phase, falls to 26 after cluster 1's, ends at 27;
    # cluster 1 reaches 28 after its phase and ends at 29 (negative forgetting: it improved)
    phases = [{"iteration": 10, "psnr": [30.0, 20.0]}, {"iteration": 20, "psnr": [26.0, 28.0]},
              {"iteration": 30, "psnr": [27.0, 29.0]}]
    rows = forgetting(phases)
    assert [(r["own"], r["final"], r["forgotten"], r["peak"]) for r in rows] == [(30.0, 27.0, 3.0, 30.0),
                                                                               (28.0, 29.0, -1.0, 29.0)]
    with pytest.raises(ValueError, match="expected 3 rows of 2 values"):
        forgetting(phases[:2])
    run = tmp_path / "run"
    run.mkdir()
    (run / "results.json").write_text(json.dumps({"cluster_phases": phases}))
    spec = importlib.util.spec_from_file_location("cluster_metrics_script", ROOT / "scripts" / "cluster_metrics.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    assert mod.main(["--phases", str(run)]) == 0
    out = capsys.readouterr().out
    assert "0 | 30.00 | 27.00 | +3.00 | 30.00" in out and "mean forgotten: +1.00 dB" in out
    (run / "results.json").write_text(json.dumps({"test": {}}))
    assert mod.main(["--phases", str(run)]) == 1
    assert "train with train.cluster_phase_eval=true" in capsys.readouterr().err
