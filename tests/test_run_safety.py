"""Runs never lose work and never fail late (issue 17, architecture.md Sec. 6-7): one test per class
of the failure catalogue. Tiny synthetic data and configs/smoke.yaml-sized runs (CPU backend); the
scripts are called through their main(argv) and must return non-zero with one `error:` line."""

import importlib.util
import json
import math
import shutil
import signal
from pathlib import Path

import imageio.v3 as iio
import numpy as np
import pytest
import torch

from stavatar_ti.config import ConfigError, load_config
from stavatar_ti.losses.lpips import load_backbone_state
from stavatar_ti.model.uv_network import UVNetwork
from stavatar_ti.training import CheckpointError, Trainer, TrainingError, load_checkpoint
from stavatar_ti.training.preflight import (PreflightError, check_lpips, check_output_folder, check_run_folder,
                                            estimate_checkpoint_bytes)

from test_training import interrupt_at, tiny_data  # noqa: F401 - tiny_data: the shared session fixture (14 frames, 64x64)

ROOT = Path(__file__).resolve().parents[1]
SMOKE = ROOT / "configs" / "smoke.yaml"
PAPER = ROOT / "configs" / "paper.yaml"


def script(name: str):
    """main() of scripts/<name>.py."""
    spec = importlib.util.spec_from_file_location(f"script_{name}", ROOT / "scripts" / f"{name}.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod.main


def one_error_line(capsys) -> str:
    err = capsys.readouterr().err.strip().splitlines()
    errors = [ln for ln in err if ln.startswith("error:")]
    assert len(errors) == 1 and "Traceback" not in "\n".join(err), err
    return errors[0]


def tree(folder: Path) -> dict:
    """{relative path: bytes} of every file under `folder` (to prove nothing changed)."""
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


@pytest.fixture
def no_lpips_cache(tmp_path, monkeypatch):
    """An empty LPIPS weight cache (XDG_CACHE_HOME); returns the folder the weights would be in."""
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    return tmp_path / "cache" / "stavatar_ti" / "lpips"


@pytest.fixture(scope="module")
def resumed_run(tiny_data, tmp_path_factory):  # noqa: F811
    """A smoke run interrupted (SIGINT) at iteration 6 of 8 and resumed: (out, resumed Trainer,
    the interrupted trainer's mid-run results, the resumed run's results)."""
    out = tmp_path_factory.mktemp("resume") / "run"
    over = ["train.iterations=8", "train.checkpoint_every=100", "train.eval_fractions=[0.5,1.0]"]
    first = Trainer(load_config(SMOKE, over), tiny_data, out)
    interrupt_at(first, 6)
    assert first.run() == {"interrupted": True, "iteration": 6}
    mid = dict(first.mid_results)
    second = Trainer(load_config(SMOKE, over), tiny_data, out)
    results = second.run(resume=True)
    return out, second, mid, results


# ------------------------------------------------------------------------------------------------
# Config values: one-line errors naming the key, at load time
# ------------------------------------------------------------------------------------------------

CATALOGUE = [("train.checkpoint_every", "0"), ("train.iterations", "0"), ("train.iterations", "-5"),
             ("train.epochs", "0"), ("optim.feature_lr", ".inf"), ("optim.position_lr_init", ".nan"),
             ("optim.network_lr", "-1e-4"), ("optim.scaling_lr", "1e400"), ("train.iterations", "2.5"),
             ("train.eval_fractions", "[0.5,2]"), ("loss.lpips_start_fraction", "1.5"),
             ("densify.densify_interval", "0"), ("train.max_nan_steps", "0")]


@pytest.mark.parametrize("key,value", CATALOGUE)
def test_bad_config_values_fail_at_load_naming_the_key(key, value):
    with pytest.raises(ConfigError) as info:
        load_config(SMOKE, [f"{key}={value}"])
    msg = str(info.value)
    assert msg.startswith(f"{key}: ") and "\n" not in msg, msg


def test_bad_config_value_in_a_file_and_through_train_py(tmp_path, capsys):
    bad = tmp_path / "bad.yaml"
    bad.write_text(SMOKE.read_text().replace("checkpoint_every: 20", "checkpoint_every: 0"))
    with pytest.raises(ConfigError, match=r"^train\.checkpoint_every: expected >= 1, got 0$"):
        load_config(bad)
    out = tmp_path / "run"
    assert script("train")(["--config", str(SMOKE), "--out", str(out), "train.iterations=-5"]) == 1
    assert one_error_line(capsys).startswith("error: train.iterations: ")
    assert not out.exists()
    cfg = load_config(SMOKE, ["train.iterations=7", "optim.scene_extent=0.5"])  # good values still load
    assert cfg.train.iterations == 7 and cfg.optim.scene_extent == 0.5 and math.isfinite(cfg.optim.feature_lr)


# ------------------------------------------------------------------------------------------------
# No clobbering: a run folder is continued only with --resume, replaced only with --overwrite
# ------------------------------------------------------------------------------------------------

def test_train_refuses_to_overwrite_a_run_without_resume_or_overwrite(tiny_data, tmp_path, capsys):  # noqa: F811
    out = tmp_path / "run"
    (out / "checkpoints").mkdir(parents=True)
    (out / "checkpoints" / "last.pt").write_bytes(b"an earlier run's checkpoint")
    (out / "results.json").write_text('{"iterations": 123}')
    (out / "notes.txt").write_text("mine")
    before = tree(out)
    train = script("train")
    args = ["--config", str(SMOKE), "--data", str(tiny_data), "--out", str(out), "train.iterations=2"]
    assert train(args) == 1
    line = one_error_line(capsys)
    assert str(out) in line and "--resume" in line and "--overwrite" in line
    assert tree(out) == before  # nothing touched
    with pytest.raises(PreflightError, match="--overwrite"):
        check_run_folder(out)
    # --overwrite replaces the run's outputs (and only them)
    assert train(args + ["--overwrite"]) == 0
    results = json.loads((out / "results.json").read_text())
    assert results["iterations"] == 2
    assert load_checkpoint(out / "checkpoints" / "last.pt")["iteration"] == 2
    assert (out / "notes.txt").read_text() == "mine"


# ------------------------------------------------------------------------------------------------
# Save on failure: any exception after the first iteration leaves a loadable checkpoint
# ------------------------------------------------------------------------------------------------

def test_failure_after_first_iteration_saves_a_checkpoint_and_says_where(tiny_data, tmp_path):  # noqa: F811
    cfg = load_config(SMOKE, ["train.iterations=12", "train.checkpoint_every=100", "train.eval_fractions=[1.0]"])
    trainer = Trainer(cfg, tiny_data, tmp_path / "a")
    step = trainer.step
    plan = {"fail_at": 3, "nan_at": None}

    def failing_step():
        if trainer.iteration + 1 == plan["fail_at"]:
            raise OSError(28, "No space left on device")
        info = step()
        if trainer.iteration == plan["nan_at"]:
            with torch.no_grad():
                trainer.scene.avatar.xyz[0, 0] = float("nan")
        return info

    trainer.step = failing_step
    # 1. a full disk at iteration 3: the state of iteration 2 goes to checkpoints/last.pt
    with pytest.raises(TrainingError) as info:
        trainer.run()
    msg = str(info.value)
    last = tmp_path / "a" / "checkpoints" / "last.pt"
    assert "\n" not in msg and "No space left on device" in msg and f"saved to {last}" in msg, msg
    assert load_checkpoint(last)["iteration"] == 2
    # 2. the checkpoint folder cannot be written (here: a file in its place): OUT/failure.pt instead
    trainer.out = tmp_path / "b"
    trainer.out.mkdir()
    (trainer.out / "checkpoints").write_text("not a folder")
    plan["fail_at"] = 5
    with pytest.raises(TrainingError) as info:
        trainer.run()
    msg = str(info.value)
    assert f"saved to {trainer.out / 'failure.pt'}" in msg and "\n" not in msg, msg
    assert load_checkpoint(trainer.out / "failure.pt")["iteration"] == 4
    # 3. a non-finite state is not saved: the last finite checkpoint stays and is named
    trainer.out = tmp_path / "c"
    trainer.cfg.train.checkpoint_every = 6
    plan.update(fail_at=8, nan_at=7)
    with pytest.raises(TrainingError) as info:
        trainer.run()
    msg = str(info.value)
    last = tmp_path / "c" / "checkpoints" / "last.pt"
    assert f"the last finite checkpoint is {last} (iteration 6)" in msg, msg
    ck = load_checkpoint(last)
    assert ck["iteration"] == 6 and torch.isfinite(ck["avatar"]["xyz"]).all()
    # a resumed run continues from the saved state
    trainer.restore(tmp_path / "a" / "checkpoints" / "last.pt")
    assert trainer.iteration == 2 and trainer.state_is_finite()


# ------------------------------------------------------------------------------------------------
# LPIPS: missing weights stop the run before iteration 1, corrupt ones give a one-line error
# ------------------------------------------------------------------------------------------------

def test_lpips_weights_are_checked_before_the_first_iteration(tiny_data, tmp_path, no_lpips_cache, capsys):  # noqa: F811
    # the paper config's LPIPS loss switches on at half-time: refused at the start, naming the fix
    with pytest.raises(PreflightError) as info:
        check_lpips(load_config(PAPER))
    msg = str(info.value)
    assert msg.startswith("loss.lambda_lpips=0.05") and "python scripts/fetch_lpips_weights.py" in msg
    assert str(no_lpips_cache / "vgg.pt") in msg
    out = tmp_path / "run"
    assert script("train")(["--config", str(SMOKE), "--data", str(tiny_data), "--out", str(out),
                            "loss.lambda_lpips=0.05", "train.iterations=4"]) == 1
    line = one_error_line(capsys)
    assert "python scripts/fetch_lpips_weights.py" in line and "loss.lambda_lpips" in line
    assert not out.exists()
    # only the metric: a warning (LPIPS reported as null), not an error
    notes = check_lpips(load_config(SMOKE))
    assert len(notes) == 1 and "fetch_lpips_weights.py" in notes[0] and str(no_lpips_cache / "alex.pt") in notes[0]
    # a corrupt cached weight file: one line naming the file and the fetch command
    no_lpips_cache.mkdir(parents=True)
    for content in (b"\x00garbage", None):
        if content is None:
            torch.save({"features.0.weight": torch.nn.Linear(2, 2)}, no_lpips_cache / "alex.pt")
        else:
            (no_lpips_cache / "alex.pt").write_bytes(content)
        with pytest.raises(ValueError) as info:
            load_backbone_state("alex")
        msg = str(info.value)
        assert msg.startswith(f"{no_lpips_cache / 'alex.pt'}: corrupt") and "fetch_lpips_weights.py --net alex" in msg
        assert "\n" not in msg and "weights_only=False" not in msg
        with pytest.raises(ValueError, match="corrupt LPIPS"):
            check_lpips(load_config(SMOKE))


# ------------------------------------------------------------------------------------------------
# Preflight: data, output folder, device
# ------------------------------------------------------------------------------------------------

def _copy_with_bad_image(src: Path, dst: Path, kind: str) -> Path:
    shutil.copytree(src, dst)
    images = sorted((dst / "images").glob("*.png"))
    bad = images[-1]  # a test frame: the run would meet it only at the evaluation
    if kind == "unreadable":
        bad.write_bytes(b"\x89PNG\r\n\x1a\n not an image")
    else:
        iio.imwrite(bad, np.zeros((32, 48, 3), np.uint8))
    return bad


def test_bad_images_are_found_before_training_and_by_check_dataset(tiny_data, tmp_path, capsys):  # noqa: F811
    data = tmp_path / "data"
    bad = _copy_with_bad_image(tiny_data, data, "unreadable")
    out = tmp_path / "run"
    assert script("train")(["--config", str(SMOKE), "--data", str(data), "--out", str(out)]) == 1
    assert one_error_line(capsys).startswith(f"error: {bad}: ")
    assert not out.exists()
    check = script("check_dataset")
    assert check([str(data)]) == 1  # every image by default, no flag needed
    assert one_error_line(capsys).startswith(f"error: {bad}: ")
    sized = tmp_path / "sized"
    bad = _copy_with_bad_image(tiny_data, sized, "size")
    assert check([str(sized)]) == 1
    line = one_error_line(capsys)
    assert line.startswith(f"error: {bad}: ") and "expected 64x64" in line
    assert check([str(tiny_data), "--quick"]) == 0  # a sample of good data passes
    assert "images decoded" in capsys.readouterr().out


def test_output_folder_and_device_are_checked_first(tiny_data, tmp_path, monkeypatch, capsys):  # noqa: F811
    cfg = load_config(SMOKE)
    need = estimate_checkpoint_bytes(cfg, num_faces=10_000, num_timesteps=14)
    n_net = sum(p.numel() for p in UVNetwork(uv_size=32, n_expr=16).parameters())
    assert need > 3 * 4 * n_net + 30_000 * 3 * 4 * 23  # network and Gaussians with their Adam moments
    out = tmp_path / "run"
    check_output_folder(out, need)  # tmp has room; nothing is created
    assert not out.exists()
    import stavatar_ti.training.preflight as pf
    monkeypatch.setattr(pf.shutil, "disk_usage", lambda p: shutil._ntuple_diskusage(10 << 30, 10 << 30, 1 << 20))
    with pytest.raises(PreflightError, match=r"1 MiB free, the run needs about"):
        check_output_folder(out, need)
    monkeypatch.undo()

    def read_only(*a, **k):
        raise OSError(30, "Read-only file system")

    monkeypatch.setattr(pf.tempfile, "mkstemp", read_only)
    with pytest.raises(PreflightError, match=r"output folder is not writable \(Read-only file system\)"):
        check_output_folder(out, need)
    monkeypatch.undo()
    afile = tmp_path / "afile"
    afile.write_text("x")
    train = script("train")
    assert train(["--config", str(SMOKE), "--data", str(tiny_data), "--out", str(afile)]) == 1
    assert str(afile) in one_error_line(capsys)
    if not torch.cuda.is_available():
        assert train(["--config", str(SMOKE), "--data", str(tiny_data), "--out", str(out), "train.device=cuda"]) == 1
        assert one_error_line(capsys).startswith("error: train.device: cuda requested")
        assert not out.exists()


# ------------------------------------------------------------------------------------------------
# Resume: mid-run evaluations kept; checkpoints that do not fit give one line naming the file
# ------------------------------------------------------------------------------------------------

def test_resume_keeps_mid_run_evaluations(resumed_run):
    out, trainer, mid, results = resumed_run
    assert set(mid) == {"test_at_4"}  # evaluated before the interruption at 6
    saved = json.loads((out / "results.json").read_text())
    assert saved["iterations"] == 8 and "test_at_4" in saved
    assert saved["test_at_4"]["psnr"] == pytest.approx(mid["test_at_4"]["psnr"])


def _altered(src: Path, dst: Path, edit) -> Path:
    ck = torch.load(src, weights_only=True)
    edit(ck)
    torch.save(ck, dst)
    return dst


def test_checkpoints_that_do_not_fit_give_one_line_naming_the_file(resumed_run, tmp_path):
    out, trainer, _, _ = resumed_run
    last = out / "checkpoints" / "last.pt"
    net_key = next(iter(trainer.scene.network.state_dict()))

    def grow(section, key):
        def edit(ck):
            t = ck[section][key]
            ck[section][key] = torch.zeros(t.shape[0] + 1, *t.shape[1:], dtype=t.dtype)
        return edit

    cases = [("table.expr", grow("table", "expr")), (f"network.{net_key}", grow("network", net_key)),
             ("avatar.xyz", lambda ck: ck["avatar"].__setitem__("xyz", ck["avatar"]["xyz"][:, :2].clone())),
             ("trained on", lambda ck: ck.__setitem__("data_fingerprint", "0" * 64))]
    for i, (what, edit) in enumerate(cases):
        bad = _altered(last, tmp_path / f"bad{i}.pt", edit)
        with pytest.raises(CheckpointError) as info:
            trainer.restore(bad)
        msg = str(info.value)
        assert msg.startswith(f"{bad}: ") and what in msg and "\n" not in msg, msg
    assert "--overwrite" in msg  # the dataset case says how to start over
    # the same checkpoints loaded as a trained avatar (render / evaluate / export): one line naming the file
    from stavatar_ti.api import Avatar
    for i, what in enumerate(("table", "network.", "avatar.xyz")):
        run = tmp_path / f"run{i}"
        (run / "checkpoints").mkdir(parents=True)
        shutil.copy(out / "config.yaml", run / "config.yaml")
        shutil.copy(tmp_path / f"bad{i}.pt", run / "checkpoints" / "last.pt")
        with pytest.raises(ValueError) as info:
            Avatar.load(run)
        msg = str(info.value)
        assert msg.startswith(f"{run / 'checkpoints' / 'last.pt'}: ") and what in msg and "\n" not in msg, msg
    # a file that is not plain tensors: torch's advice to load it with weights_only=False is not passed on
    hostile = tmp_path / "module.pt"
    torch.save({"version": 1, "avatar": torch.nn.Linear(2, 2)}, hostile)
    with pytest.raises(CheckpointError) as info:
        trainer.restore(hostile)
    msg = str(info.value)
    assert msg.startswith(f"{hostile}: cannot read checkpoint") and "\n" not in msg
    assert "weights_only=False" not in msg and "likely succeed" not in msg
    # the same frames in a moved folder: resumes (with a warning)
    moved = _altered(last, tmp_path / "moved.pt", lambda ck: ck.__setitem__("data", "/elsewhere/seq"))
    trainer.restore(moved)
    assert trainer.iteration == 8


# ------------------------------------------------------------------------------------------------
# Ablation: Ctrl-C saves and exits 130; running it again continues the interrupted variant
# ------------------------------------------------------------------------------------------------

def test_ablation_ctrl_c_saves_exits_130_and_continues(tiny_data, tmp_path, monkeypatch, capsys):  # noqa: F811
    out = tmp_path / "ablation"
    steps = []
    original = Trainer.step

    def step(self):
        info = original(self)
        steps.append(self.iteration)
        if self.iteration == 3 and len(steps) == 3:
            signal.raise_signal(signal.SIGINT)
        return info

    monkeypatch.setattr(Trainer, "step", step)
    ablate = script("ablate")
    args = ["--data", str(tiny_data), "--config", str(SMOKE), "--out", str(out), "--variants", "1",
            "train.iterations=6", "train.eval_fractions=[1.0]"]
    assert ablate(args) == 130
    err = capsys.readouterr().err
    assert "--reuse" in err and "--resume" not in err
    run_dir = next(out.glob("seed*/1"))
    assert (run_dir / "checkpoints" / "last.pt").is_file() and not (run_dir / "results.json").exists()
    assert not (out / "ablation.md").exists()  # no empty table row
    steps.clear()
    assert ablate(args + ["--reuse"]) == 0
    assert steps == [4, 5, 6]  # continued from the checkpoint, not retrained
    records = json.loads((out / "ablation.json").read_text())
    assert len(records) == 1 and records[0]["iterations"] == 6
    # a finished run is neither retrained nor overwritten silently
    assert ablate(args) == 1
    line = one_error_line(capsys)
    assert str(run_dir) in line and "--reuse" in line and "--overwrite" in line


# ------------------------------------------------------------------------------------------------
# Scripts: flags checked before the slow steps; no empty output folders on errors
# ------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("flags,flag", [(["--fov", "0"], "--fov"), (["--fov", "nan"], "--fov"),
                                        (["--focal", "-3"], "--focal"), (["--size", "8"], "--size"),
                                        (["--test-fraction", "1.5"], "--test-fraction")])
def test_preprocess_video_checks_flags_first(tmp_path, capsys, flags, flag):
    video = tmp_path / "clip.mp4"
    video.write_bytes(b"not decoded: the flags are checked first")
    assert script("preprocess_video")([str(video), "--out", str(tmp_path / "out")] + flags) == 1
    assert one_error_line(capsys).startswith(f"error: {flag}: ")
    assert not (tmp_path / "out").exists()


def test_preprocess_video_checks_out_first(tmp_path, capsys):
    video = tmp_path / "clip.mp4"
    video.write_bytes(b"x")
    main = script("preprocess_video")
    afile = tmp_path / "afile"
    afile.write_text("x")
    assert main([str(video), "--out", str(afile)]) == 1
    assert one_error_line(capsys).startswith("error: --out: ")
    (tmp_path / "exists").mkdir()
    assert main([str(video), "--out", str(tmp_path / "exists")]) == 1
    assert "--overwrite" in one_error_line(capsys)
    assert main([str(tmp_path / "missing.mp4"), "--out", str(tmp_path / "new")]) == 1
    assert one_error_line(capsys).startswith(f"error: {tmp_path / 'missing.mp4'}: ")


def test_render_and_export_leave_no_empty_folders_on_errors(resumed_run, tmp_path, monkeypatch, capsys):
    out, _, _, _ = resumed_run
    from stavatar_ti.api import Avatar

    def broken(*a, **k):
        raise RuntimeError("rasterizer failed")

    monkeypatch.setattr(Avatar, "render_image", broken)
    target = tmp_path / "deep" / "render"
    assert script("render")(["--model", str(out), "--out", str(target), "--max-frames", "1"]) == 1
    assert "rasterizer failed" in one_error_line(capsys)
    assert not (tmp_path / "deep").exists()
    monkeypatch.setattr(Avatar, "export", lambda *a, **k: broken())
    assert script("export")(["--model", str(out), "--frame", "0", "--out", str(target)]) == 1
    assert "rasterizer failed" in one_error_line(capsys)
    assert not (tmp_path / "deep").exists()


# ------------------------------------------------------------------------------------------------
# The test command runs in its own environment; CI runs exactly it
# ------------------------------------------------------------------------------------------------

def test_ci_runs_exactly_the_readme_test_command():
    lines = [ln.strip() for ln in (ROOT / ".ci" / "run").read_text().splitlines()]
    commands = [ln for ln in lines if ln and not ln.startswith("#")]
    # the suite runs once, last, through the README's command; nothing else runs pytest or pip
    assert commands[-1] == "bash scripts/test.sh", commands
    assert not any("pytest" in ln or "pip " in ln for ln in commands), commands
    test_sh = (ROOT / "scripts" / "test.sh").read_text()
    assert '"$VENV/bin/python" -m pytest -q "$@"' in test_sh and "python3 -m pip" not in test_sh
    assert "bash scripts/test.sh" in (ROOT / "README.md").read_text()
