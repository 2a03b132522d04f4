"""Using a trained avatar (stavatar_ti.api, stavatar_ti.tools, stavatar_ti.render.cameras, scripts/render.py,
evaluate.py, export.py) on one smoke-trained run shared by all tests (CPU unless
STAVATAR_TEST_DEVICE=cuda)."""

import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from stavatar_ti import rasterize
from stavatar_ti.api import Avatar
from stavatar_ti.tools.media import write_video
from stavatar_ti.render.cameras import centered_intrinsics, orbit_cameras, yaw_pitch
from stavatar_ti.config import load_config
from stavatar_ti.data import load_dataset
from stavatar_ti.synthetic import generate_sequence
from stavatar_ti.training import Trainer

ROOT = Path(__file__).resolve().parents[1]
SMOKE = ROOT / "configs" / "smoke.yaml"
DEVICE = os.environ.get("STAVATAR_TEST_DEVICE", "cpu")


def load_script(name):
    spec = importlib.util.spec_from_file_location(f"script_{name}", ROOT / "scripts" / f"{name}.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


@pytest.fixture(scope="session")
def smoke_run(tmp_path_factory):
    """(run folder, data folder) of one short smoke training (a few iterations are enough to exercise
    loading, SH degree 1 and the fine-tuned table; the CPU may be shared with other jobs)."""
    base = tmp_path_factory.mktemp("avatar_api")
    data = generate_sequence(base / "seq", frames=14, size=64, seed=3)
    cfg = load_config(SMOKE, ["train.iterations=4", "model.sh_degree_interval=2", f"train.device={DEVICE}"])
    Trainer(cfg, data, base / "run").run()
    return base / "run", data


@pytest.fixture(scope="session")
def avatar(smoke_run):
    return Avatar.load(smoke_run[0], device=DEVICE)


@pytest.fixture(scope="session")
def dataset(smoke_run):
    return load_dataset(smoke_run[1])


def read_ply(path):
    """Parse a binary little-endian PLY of float properties with numpy: {name: [N] float32}."""
    raw = Path(path).read_bytes()
    end = raw.index(b"end_header\n") + len(b"end_header\n")
    header = raw[:end].decode("ascii").splitlines()
    assert header[0] == "ply" and header[1] == "format binary_little_endian 1.0"
    n = next(int(h.split()[2]) for h in header if h.startswith("element vertex"))
    names = []
    for h in header:
        if h.startswith("property"):
            kind, name = h.split()[1:]
            assert kind == "float"
            names.append(name)
    data = np.frombuffer(raw[end:], dtype=[(nm, "<f4") for nm in names], count=n)
    assert len(raw) - end == n * 4 * len(names)
    return {nm: data[nm].copy() for nm in names}


def test_load_and_basic_api(avatar, smoke_run):
    assert avatar.num_gaussians > 0 and avatar.num_timesteps == 14 and avatar.sh_degree == 1
    p = avatar.params(3)
    assert p["expr"].shape == (1, 16)
    g = avatar.gaussians(p)
    assert g["means"].shape == (avatar.num_gaussians, 3)
    mesh = avatar.posed_mesh(3)
    assert mesh.vertices.shape[1] == 3 and mesh.faces.shape[1] == 3
    with pytest.raises(ValueError, match="timestep"):
        avatar.params(99)


def test_load_errors_name_the_file(tmp_path):
    with pytest.raises(ValueError, match="last.pt"):
        Avatar.load(tmp_path)
    bad = tmp_path / "checkpoints" / "last.pt"
    bad.parent.mkdir()
    torch.save({"version": 1, "something": 1}, bad)
    with pytest.raises(ValueError, match="last.pt"):
        Avatar.load(tmp_path)
    bad.write_bytes(b"not a checkpoint")
    with pytest.raises(ValueError, match="last.pt"):
        Avatar.load(tmp_path)


def test_ply_export_reimport_renders_the_same(avatar, dataset, tmp_path):
    f = dataset.splits["test"][0]
    t = f.timestep
    avatar.export(t, tmp_path / "g.ply", tmp_path / "m.obj")
    cols = read_ply(tmp_path / "g.ply")
    n = avatar.num_gaussians
    assert len(cols["x"]) == n
    dev = avatar.device
    T = lambda a: torch.from_numpy(np.ascontiguousarray(a, np.float32)).to(dev)  # noqa: E731
    means = T(np.stack([cols["x"], cols["y"], cols["z"]], 1))
    scales = T(np.exp(np.stack([cols[f"scale_{i}"] for i in range(3)], 1).astype(np.float64)))
    quats = T(np.stack([cols[f"rot_{i}"] for i in range(4)], 1))
    opac = T(1.0 / (1.0 + np.exp(-cols["opacity"].astype(np.float64))))
    dc = np.stack([cols[f"f_dc_{i}"] for i in range(3)], 1)[:, None, :]
    n_rest = sum(k.startswith("f_rest_") for k in cols)
    rest = np.stack([cols[f"f_rest_{j}"] for j in range(n_rest)], 1).reshape(n, 3, n_rest // 3).transpose(0, 2, 1)
    sh = T(np.concatenate([dc, rest], 1))
    w, h = f.width, f.height
    vm, K = T(f.viewmat), T(f.K)
    again = rasterize(means, quats, scales, opac, sh=sh, sh_degree=avatar.sh_degree, viewmat=vm, K=K, width=w,
                      height=h, background=avatar.background)
    ref = avatar.render(t, f.viewmat, f.K, w, h)
    assert float((again.image - ref.image).abs().max()) < 1e-5
    assert float(ref.alpha.max()) > 0.1  # the head is in view
    # the .obj holds the posed mesh
    mesh = avatar.posed_mesh(t)
    lines = (tmp_path / "m.obj").read_text().splitlines()
    v = np.array([[float(x) for x in ln.split()[1:]] for ln in lines if ln.startswith("v ")])
    fc = np.array([[int(x) for x in ln.split()[1:]] for ln in lines if ln.startswith("f ")])
    assert np.allclose(v, mesh.vertices.cpu().numpy(), atol=1e-6)
    assert np.array_equal(fc - 1, mesh.faces.cpu().numpy())


def test_cross_reenactment_with_source_as_driver_is_self_reenactment(avatar, dataset):
    driven = avatar.drive_params(avatar)
    assert len(driven) == avatar.num_timesteps
    f = dataset.splits["test"][0]
    for t in (0, f.timestep):
        own = avatar.params(t)
        for k in own:
            a, b = own[k], driven[t][k]
            assert (a is None and b is None) or torch.equal(a, b), k
        r0 = avatar.render(own, f.viewmat, f.K, f.width, f.height).image
        r1 = avatar.render(driven[t], f.viewmat, f.K, f.width, f.height).image
        assert torch.equal(r0, r1)
    # a parameter-dict driver with an offset expression: identity (first-frame expression) does not leak
    shifted = [{**avatar.params(t), "expr": avatar.params(t)["expr"] + 0.5} for t in range(4)]
    out = avatar.drive_params(shifted)
    for t in range(4):
        assert torch.allclose(out[t]["expr"], avatar.params(t)["expr"], atol=1e-6)
    # dataset frames (tracked params) drive with the source's shape
    frames = avatar.drive_params(dataset)
    assert torch.allclose(frames[0]["expr"], avatar.params(0)["expr"], atol=1e-6)
    assert torch.equal(frames[3]["shape"], avatar.params(0)["shape"])


def test_orbit_cameras_look_at_the_head_centre(avatar, dataset):
    f = dataset.splits["train"][0]
    center = avatar.head_center(f.timestep)
    yaw, pitch, n = 30.0, 10.0, 24
    cams = orbit_cameras(center, n, reference_viewmat=f.viewmat, yaw=yaw, pitch=pitch)
    K = centered_intrinsics(f.K, f.width, f.height)
    angles = []
    for c in cams:
        pc = c.viewmat[:3, :3] @ center + c.viewmat[:3, 3]
        assert pc[2] > 0
        px = K @ (pc / pc[2])
        assert abs(px[0] - f.width / 2) < 1e-3 and abs(px[1] - f.height / 2) < 1e-3
        R = c.viewmat[:3, :3]
        assert np.allclose(R @ R.T, np.eye(3), atol=1e-9) and np.linalg.det(R) > 0
        angles.append(yaw_pitch(c.viewmat, center, f.viewmat))
        assert np.allclose(angles[-1], (c.yaw, c.pitch), atol=1e-6)
    angles = np.array(angles)
    assert np.isclose(angles[:, 0].max(), yaw, atol=1e-6) and np.isclose(angles[:, 0].min(), -yaw, atol=1e-6)
    assert np.isclose(angles[:, 1].max(), pitch, atol=1e-6) and np.isclose(angles[:, 1].min(), -pitch, atol=1e-6)
    # same distance as the reference camera
    ref_eye = -f.viewmat[:3, :3].T @ f.viewmat[:3, 3]
    eye0 = -cams[0].viewmat[:3, :3].T @ cams[0].viewmat[:3, 3]
    assert np.isclose(np.linalg.norm(eye0 - center), np.linalg.norm(ref_eye - center))


def test_render_orbit_video_frame_count(smoke_run, tmp_path):
    pytest.importorskip("imageio_ffmpeg", reason="imageio-ffmpeg is not installed (MP4 writing needs it)")
    import imageio_ffmpeg

    run, data = smoke_run
    rc = load_script("render").main(["--model", str(run), "--data", str(data), "--orbit", "--orbit-frames", "7",
                                     "--video", "--out", str(tmp_path / "orbit"), "--device", DEVICE])
    assert rc == 0
    assert len(list((tmp_path / "orbit" / "renders").glob("*.png"))) == 7
    nframes, _ = imageio_ffmpeg.count_frames_and_secs(str(tmp_path / "orbit" / "renders.mp4"))
    assert nframes == 7
    # odd sizes are padded, counts still exact
    assert write_video(tmp_path / "odd.mp4", [np.full((33, 35, 3), i * 20, np.uint8) for i in range(5)]) == 5
    assert imageio_ffmpeg.count_frames_and_secs(str(tmp_path / "odd.mp4"))[0] == 5


def test_render_self_reenactment_writes_strips(smoke_run, tmp_path, capsys):
    run, data = smoke_run
    rc = load_script("render").main(["--model", str(run), "--data", str(data), "--split", "test",
                                     "--max-frames", "2", "--out", str(tmp_path / "r"), "--device", DEVICE])
    assert rc == 0
    strips = sorted((tmp_path / "r" / "compare").glob("*.png"))
    assert len(strips) == 2
    import imageio.v3 as iio
    assert iio.imread(strips[0]).shape == (64, 3 * 64, 3)
    assert "FPS" in capsys.readouterr().out
    # cross-reenactment driven by a dataset: driver | render strips
    rc = load_script("render").main(["--model", str(run), "--target", str(data), "--max-frames", "2",
                                     "--out", str(tmp_path / "x"), "--device", DEVICE])
    assert rc == 0
    assert len(list((tmp_path / "x" / "renders").glob("*.png"))) == 2
    assert iio.imread(sorted((tmp_path / "x" / "compare").glob("*.png"))[0]).shape == (64, 2 * 64, 3)


def test_evaluate_writes_per_frame_json(smoke_run, tmp_path, capsys):
    run, data = smoke_run
    rc = load_script("evaluate").main(["--model", str(run), "--data", str(data), "--out", str(tmp_path / "ev"),
                                       "--device", DEVICE])
    assert rc == 0
    per_frame = json.loads((tmp_path / "ev" / "per_frame.json").read_text())
    n_test = len(load_dataset(data).splits["test"])
    assert len(per_frame["per_frame"]) == n_test
    rec = per_frame["per_frame"][0]
    assert np.isfinite(rec["psnr"]) and np.isfinite(rec["ssim"]) and "mouth_psnr" in rec
    assert "background" in per_frame["convention"] and per_frame["lpips_net"] == "alex"
    out = capsys.readouterr().out
    assert "convention" in out


def test_export_script_and_bad_model_errors(smoke_run, tmp_path, capsys):
    run, _ = smoke_run
    export = load_script("export")
    assert export.main(["--model", str(run), "--frame", "2", "--out", str(tmp_path / "ex"), "--device", DEVICE]) == 0
    assert (tmp_path / "ex" / "frame_00002.ply").is_file() and (tmp_path / "ex" / "frame_00002.obj").is_file()
    capsys.readouterr()
    assert export.main(["--model", str(run), "--frame", "99", "--device", DEVICE]) == 1
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: ") and "\n" not in err
    for name in ("evaluate", "export", "render"):
        extra = ["--frame", "0"] if name == "export" else []
        assert load_script(name).main(["--model", str(tmp_path / "nope"), *extra]) == 1
        err = capsys.readouterr().err.strip()
        assert err.startswith("error: ") and "\n" not in err and "nope" in err, err
    # the real process exit status and a single stderr line
    proc = subprocess.run([sys.executable, str(ROOT / "scripts" / "evaluate.py"), "--model", str(tmp_path / "nope")],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 1
    lines = [ln for ln in proc.stderr.splitlines() if not ln.startswith("[Taichi]")]
    assert len(lines) == 1 and lines[0].startswith("error: "), proc.stderr
