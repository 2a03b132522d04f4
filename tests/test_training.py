"""End-to-end training on a tiny synthetic sequence: outputs, loss decrease, resume, interrupts,
non-finite losses, hard binding and Temporal ADC (CPU backend)."""

import json
import os
import signal
import subprocess
import sys
import textwrap
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch

from stavatar_ti.config import ConfigError, load_config
from stavatar_ti.synthetic import generate_sequence
from stavatar_ti.training import Trainer, TrainingError

ROOT = Path(__file__).resolve().parents[1]
SMOKE = ROOT / "configs" / "smoke.yaml"


@pytest.fixture(scope="session")
def tiny_data(tmp_path_factory):
    return generate_sequence(tmp_path_factory.mktemp("synthetic") / "seq", frames=14, size=64, seed=3)


def read_ply_header(path):
    with open(path, "rb") as fh:
        lines = []
        while True:
            line = fh.readline().decode("ascii").strip()
            lines.append(line)
            if line == "end_header":
                return lines


def test_smoke_training_writes_outputs_and_learns(tiny_data, tmp_path):
    cfg = load_config(SMOKE, ["train.iterations=40"])
    trainer = Trainer(cfg, tiny_data, tmp_path / "run")
    losses = []
    original_step = trainer.step

    def recording_step():
        info = original_step()
        losses.append(info["loss"])
        return info

    trainer.step = recording_step
    results = trainer.run()
    assert np.mean(losses[-8:]) < 0.8 * np.mean(losses[:4])  # the loss decreases
    out = tmp_path / "run"
    saved = json.loads((out / "results.json").read_text())
    assert saved["iterations"] == 40 and saved["num_gaussians"] == results["num_gaussians"] > 0
    for key in ("psnr", "ssim"):
        assert np.isfinite(saved["test"][key])
    assert (out / "checkpoints" / "last.pt").is_file() and (out / "config.yaml").is_file()
    renders = sorted((out / "renders" / "test").glob("*.png"))
    assert renders and len(renders) == len(list((out / "renders" / "gt").glob("*.png")))
    header = read_ply_header(out / "point_cloud.ply")
    props = [h.split()[-1] for h in header if h.startswith("property")]
    assert props[:9] == ["x", "y", "z", "nx", "ny", "nz", "f_dc_0", "f_dc_1", "f_dc_2"]
    assert props[-8:] == ["opacity", "scale_0", "scale_1", "scale_2", "rot_0", "rot_1", "rot_2", "rot_3"]
    assert f"element vertex {saved['num_gaussians']}" in header


RESUME_SCRIPT = textwrap.dedent("""
    import sys, torch
    from stavatar_ti.config import load_config
    from stavatar_ti.training import Trainer
    data, out, smoke = sys.argv[1:4]
    over = ["train.iterations=16", "densify.densify_from=6", "densify.densify_interval=6", "densify.densify_until=12"]
    cfg = load_config(smoke, over)
    full = Trainer(cfg, data, out + "/full")
    for _ in range(16):
        full.step()
    half = Trainer(load_config(smoke, over), data, out + "/half")
    for _ in range(8):
        half.step()
    half.checkpoint()
    resumed = Trainer(load_config(smoke, over), data, out + "/half")
    resumed.restore(resumed.out / "checkpoints" / "last.pt")
    for _ in range(8):
        resumed.step()
    a, b = full.scene.avatar, resumed.scene.avatar
    assert a.num_gaussians == b.num_gaussians, (a.num_gaussians, b.num_gaussians)
    worst = max(float((getattr(a, n) - getattr(b, n)).abs().max()) for n in ("xyz", "scaling", "features_dc", "opacity"))
    net = max(float((p - q).abs().max()) for p, q in zip(full.scene.network.parameters(), resumed.scene.network.parameters()))
    print("MAXDIFF", worst, net)
    assert worst < 1e-5 and net < 1e-6
""")


def test_resume_matches_uninterrupted_run(tiny_data, tmp_path):
    """Runs in a subprocess with one Taichi CPU thread, so float atomics are reproducible."""
    env = dict(os.environ, STAVATAR_CPU_THREADS="1", OMP_NUM_THREADS="1")
    proc = subprocess.run([sys.executable, "-c", RESUME_SCRIPT, str(tiny_data), str(tmp_path), str(SMOKE)],
                          capture_output=True, text=True, env=env, timeout=600)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-3000:]
    assert "MAXDIFF" in proc.stdout


def interrupt_at(trainer: Trainer, iteration: int) -> None:
    """Make `trainer` receive SIGINT (as from Ctrl-C) right after its step `iteration`."""
    step = trainer.step

    def interrupting_step():
        info = step()
        if trainer.iteration == iteration:
            signal.raise_signal(signal.SIGINT)
        return info

    trainer.step = interrupting_step


def test_sigint_saves_checkpoint_and_stops(tiny_data, tmp_path):
    cfg = load_config(SMOKE, ["train.iterations=30"])
    trainer = Trainer(cfg, tiny_data, tmp_path / "run")
    interrupt_at(trainer, 3)
    results = trainer.run()
    assert results == {"interrupted": True, "iteration": 3}
    assert (tmp_path / "run" / "checkpoints" / "last.pt").is_file()
    again = Trainer(load_config(SMOKE, ["train.iterations=5"]), tiny_data, tmp_path / "run")
    assert again.run(resume=True)["iterations"] == 5


def test_nonfinite_losses_are_skipped_then_stop(tiny_data, tmp_path):
    cfg = load_config(SMOKE, ["train.iterations=30", "train.max_nan_steps=3"])
    trainer = Trainer(cfg, tiny_data, tmp_path / "run")
    trainer.step()
    before = trainer.scene.avatar.features_dc.detach().clone()
    trainer.loss_terms = lambda *a: {"photo": torch.tensor(float("nan"), requires_grad=True)}
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        assert np.isnan(trainer.step()["loss"])
    assert any("non-finite loss" in str(w.message) for w in caught)
    assert torch.equal(trainer.scene.avatar.features_dc, before)  # the step was skipped
    with pytest.raises(TrainingError, match="non-finite"):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            trainer.step()
            trainer.step()


def test_hard_binding_and_temporal_adc_run(tiny_data, tmp_path):
    hard = Trainer(load_config(SMOKE, ["model.binding=hard", "train.iterations=6"]), tiny_data, tmp_path / "hard")
    assert hard.scene.network is None
    assert hard.run()["iterations"] == 6
    cfg = load_config(SMOKE, ["densify.densifier=temporal", "train.iterations=null", "train.epochs=6",
                              "densify.k_min=2", "densify.k_max=3"])
    tr = Trainer(cfg, tiny_data, tmp_path / "temporal")
    dens = [s for s in tr.plan if s.densify]
    assert len(dens) == len(tr.densifier.clusters) >= 2  # once per cluster
    n0 = tr.scene.avatar.num_gaussians
    for _ in range(tr.plan.index(dens[0]) + 1):
        info = tr.step()
    assert "densified" in info and tr.scene.avatar.num_gaussians != n0
    # optimizer state follows the new parameter count
    for group in tr.optimizer.param_groups:
        if group["name"] == "xyz":
            state = tr.optimizer.state[group["params"][0]]
            assert state["exp_avg"].shape[0] == tr.scene.avatar.num_gaussians


def test_cluster_phase_eval_records_the_forgetting_matrix(tiny_data, tmp_path):
    with pytest.raises(ConfigError, match="train.cluster_phase_eval"):
        load_config(SMOKE, ["train.cluster_phase_eval=true"])  # vanilla ADC has no clusters
    cfg = load_config(SMOKE, ["densify.densifier=temporal", "train.iterations=null", "train.epochs=4",
                              "densify.epochs_per_cluster=3", "densify.k_min=2", "densify.k_max=3",
                              "train.cluster_phase_eval=true"])
    tr = Trainer(cfg, tiny_data, tmp_path / "phases")
    k = len(tr.densifier.clusters)
    # the sequential plan's window changes (cluster phases), then the end of the all-frames phase
    ends = [i + 1 for i in range(len(tr.plan) - 1) if tr.plan[i].window != tr.plan[i + 1].window] + [len(tr.plan)]
    phases = tr.run()["cluster_phases"]
    assert [p["iteration"] for p in phases] == ends and len(ends) == k + 1
    assert [p["after_cluster"] for p in phases] == list(range(k + 1))
    assert all(len(p["psnr"]) == k and np.isfinite(p["psnr"]).all() for p in phases)
    # the last row, recomputed here: float64 MSE over the first, middle and last frame of each cluster
    views = {v.timestep: v for v in tr.scene.train_views}
    sh_degree = min(cfg.model.sh_degree, tr.iteration // cfg.model.sh_degree_interval)
    for c, got in zip(tr.densifier.clusters, phases[-1]["psnr"]):
        pick = np.linspace(0, len(c) - 1, min(3, len(c))).round().astype(int)
        vals = []
        for t in np.asarray(c)[pick]:
            with torch.no_grad():
                out, _, _ = tr.scene.render(views[int(t)], sh_degree)
            img = out.image.clamp(0, 1).double().numpy()
            gt = tr.scene.image_float(views[int(t)]).permute(1, 2, 0).double().numpy()
            vals.append(-10 * np.log10(np.mean((img - gt) ** 2)))
        assert got == pytest.approx(np.mean(vals), abs=1e-3)


def test_staggered_temporal_adc_spreads_the_clusters_over_the_densify_window(tiny_data, tmp_path):
    cfg = load_config(SMOKE, ["densify.densifier=temporal", "densify.cluster_schedule=staggered",
                              "train.iterations=null", "train.epochs=8", "densify.k_min=3", "densify.k_max=3",
                              "densify.densify_from=10", "densify.densify_until=30"])
    tr = Trainer(cfg, tiny_data, tmp_path / "staggered")
    clusters = tr.densifier.clusters
    n = len(tr.scene.train_views)
    cluster_of = {v: w for w, ids in enumerate(clusters) for v in ids}  # timestep mapping = view order here
    # cluster k is due at 10, 20, 30 (1-based) and accumulates over the 2 x n iterations before
    due = {0: 10, 1: 20, 2: 30}
    dens = {}
    for i, s in enumerate(tr.plan, start=1):
        w = cluster_of[tr.scene.train_views[s.view].timestep]
        assert s.window == w
        first = w not in dens and i >= due[w]
        assert s.densify == first
        if first:
            dens[w] = i
        assert s.accumulate == (i > due[w] - 2 * n and (w not in dens or dens[w] == i))
    assert sorted(dens) == [0, 1, 2] and dens[0] < dens[1] < dens[2]
    assert all(0 <= dens[w] - due[w] < 2 * n for w in dens)  # its first frame at or after the due time
    # every epoch is a permutation of the views, as in vanilla 3DGS
    for e in range(len(tr.plan) // n):
        assert sorted(s.view for s in tr.plan[e * n:(e + 1) * n]) == list(range(n))


def test_interleaved_temporal_adc_densifies_each_cluster_once_and_reindexes(tiny_data, tmp_path):
    cfg = load_config(SMOKE, ["densify.densifier=temporal", "densify.cluster_schedule=interleaved",
                              "train.iterations=null", "train.epochs=4", "densify.k_min=2", "densify.k_max=3"])
    tr = Trainer(cfg, tiny_data, tmp_path / "interleaved")
    clusters = tr.densifier.clusters
    cluster_of = {v: w for w, ids in enumerate(clusters) for v in ids}  # timestep mapping = view order here
    seen = [0] * len(clusters)
    for i, s in enumerate(tr.plan):
        assert s.window == cluster_of[tr.scene.train_views[s.view].timestep]
        seen[s.window] += 1
        due = 2 * len(clusters[s.window]) + 1  # densify_epoch 3: two passes over the cluster, plus one
        assert s.densify == (seen[s.window] == due) and s.accumulate == (seen[s.window] <= due)
    dens = [i for i, s in enumerate(tr.plan) if s.densify]
    assert len(dens) == len(clusters) >= 2 and len({tr.plan[i].window for i in dens}) == len(clusters)
    # run to just before the first densify; another cluster's window must survive the re-indexing
    for _ in range(dens[0]):
        tr.step()
    other = tr.plan[dens[1]].window
    n = tr.scene.avatar.num_gaussians
    before = tr.densifier.stats.export(other, n)
    with torch.no_grad():  # make the prune remove rows so that the other window must move
        tr.scene.avatar.opacity[::5] = -10.0
    xyz_before = tr.scene.avatar.xyz.detach().clone()
    info = tr.step()
    assert "densified" in info
    after = tr.densifier.stats.export(other, tr.scene.avatar.num_gaussians)
    xyz_after = tr.scene.avatar.xyz.detach()
    # survivors keep their order and stored position; find each one's old row by its position
    # (new rows may be pruned too, Sec. 10.7: the survivors are the rows equal to an old one, first)
    kept = next(j for j in range(xyz_after.shape[0]) if not (xyz_before == xyz_after[j]).all(1).any())
    assert kept >= n - info["densified"]["pruned"] - info["densified"]["split"]
    old_rows = [int(torch.nonzero((xyz_before == xyz_after[j]).all(1)).squeeze(1)[0]) for j in range(kept)]
    assert sorted(set(old_rows)) == old_rows and old_rows[-1] >= kept  # rows did move
    for key in ("grad", "count", "err", "burst"):
        assert torch.equal(after[key][:kept], before[key][old_rows]), key
        assert not after[key][kept:].any(), key  # clones and split children start empty
    assert before["count"].sum() > 0


def test_trainer_warms_up_and_validates_its_first_render_only(tiny_data, tmp_path, monkeypatch):
    """SH degrees compiled before the first step; rasterize's value checks on the first step only."""
    from stavatar_ti.training import scene as scene_module
    from stavatar_ti.training import trainer as trainer_module

    warmed, validated = [], []
    real_warm_up, real_rasterize = trainer_module.warm_up, scene_module.rasterize
    monkeypatch.setattr(trainer_module, "warm_up",
                        lambda device, degrees: warmed.append(list(degrees)) or real_warm_up(device, degrees))
    monkeypatch.setattr(scene_module, "rasterize",
                        lambda *a, **kw: validated.append(kw["validate"]) or real_rasterize(*a, **kw))
    tr = Trainer(load_config(SMOKE, ["train.iterations=12"]), tiny_data, tmp_path / "run")
    assert warmed == [[0, 1]]  # smoke.yaml: SH degree 1 from iteration 10 of 12
    for _ in range(3):
        assert np.isfinite(tr.step()["loss"])
    assert validated == [True, False, False]
