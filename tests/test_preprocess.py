"""Own-video preprocessing: the VHAP writer/reader round trip (per-frame intrinsics included), and,
with MediaPipe, the whole path on a rendered clip (geometry consistent with the written cameras)
and the no-face error."""

import json

import imageio.v3 as iio
import numpy as np
import pytest
import torch

from stavatar_ti.data import load_dataset
from stavatar_ti.data.writer import atomic_output, split_frames, write_frame, write_transforms


def test_writer_reader_round_trip(tmp_path):
    rng = np.random.default_rng(0)
    T, S = 7, 24
    viewmat = np.diag([1.0, -1.0, -1.0, 1.0])
    viewmat[:3, 3] = [0.01, -0.02, 0.9]
    Ks = np.stack([np.array([[50.0 + t, 0, 12.0 + 0.5 * t], [0, 51.0 + t, 11.0 - 0.25 * t], [0, 0, 1]])
                   for t in range(T)])
    images = rng.integers(0, 256, (T, S, S, 3), dtype=np.uint8)
    masks = rng.random((T, S, S)) > 0.5
    params = [{"rotation": rng.normal(size=(1, 3)).astype(np.float32),
               "neck_pose": np.zeros((1, 3), np.float32), "jaw_pose": rng.normal(size=(1, 3)).astype(np.float32),
               "eyes_pose": rng.normal(size=(1, 6)).astype(np.float32),
               "translation": rng.normal(size=(1, 3)).astype(np.float32),
               "expr": rng.normal(size=(1, 100)).astype(np.float32), "shape": np.arange(300, dtype=np.float32)}
              for _ in range(T)]
    train, test = split_frames(T, 0.15)
    assert (train, test) == (list(range(6)), [6])
    out = tmp_path / "seq"
    with atomic_output(out) as tmp:
        for t in range(T):
            write_frame(tmp, t, images[t], masks[t].astype(np.float32), params[t])
        write_transforms(tmp, viewmat, Ks, S, S, train, test)
    ds = load_dataset(out)
    recs = {r.timestep: r for split in ("train", "test") for r in ds.splits[split]}
    assert [r.timestep for r in ds.splits["test"]] == [6] and len(recs) == T
    for t, r in recs.items():
        np.testing.assert_allclose(r.K, Ks[t], atol=1e-9)
        np.testing.assert_allclose(r.viewmat, viewmat, atol=1e-9)
        np.testing.assert_array_equal(iio.imread(r.image_path), images[t])
        np.testing.assert_array_equal(iio.imread(r.mask_path) > 127, masks[t])
        for k, v in params[t].items():
            np.testing.assert_array_equal(np.asarray(r.params[k]).reshape(v.shape), v)
    # an interrupted write leaves nothing behind
    with pytest.raises(RuntimeError):
        with atomic_output(tmp_path / "broken"):
            raise RuntimeError("stop")
    assert not any(p.name.startswith("broken") for p in tmp_path.iterdir())
    with pytest.raises(ValueError, match="K: expected"):
        write_transforms(out, viewmat, np.eye(4), S, S, train, test)


def _write_video(path, frames, fps=25):
    iio.imwrite(path, frames, extension=".mp4", fps=fps, quality=10)


@pytest.mark.slow
def test_preprocess_rendered_clip_is_consistent(tmp_path):
    pytest.importorskip("mediapipe", reason="MediaPipe is the [video] extra (pip install 'stavatar_ti[video]')")
    from stavatar_ti.synthetic.generate import build_sequence
    from stavatar_ti.video.preprocess import load_tracking_model, preprocess_video

    seq = build_sequence(frames=20, size=256, seed=1)
    frames = np.stack([seq.render(t)[0] for t in range(seq.frames)])
    video = tmp_path / "clip.mp4"
    _write_video(video, frames)
    out = tmp_path / "data"
    report = preprocess_video(video, out, size=128, fov_deg=2 * np.degrees(np.arctan(0.5 / 2.8)))
    assert report.kept == 20 and report.dropped == [] and report.mean_landmark_error_px < 3.0
    meta = json.loads((out / "preprocess.json").read_text())
    assert meta["kept"] == 20 and len(meta["landmark_error_px"]) == 20
    ds = load_dataset(out)
    assert len(ds.splits["test"]) == 3 and len(ds.splits["train"]) == 17
    # the tracked head, posed and projected with the written cameras, lies on the written foreground
    model, emb = load_tracking_model()
    inside = []
    for r in ds.splits["train"][::4]:
        p = {k: torch.as_tensor(np.asarray(v, np.float32)).reshape(1, -1) for k, v in r.params.items()
             if k in ("rotation", "neck_pose", "jaw_pose", "eyes_pose", "translation", "expr", "shape")}
        with torch.no_grad():
            verts = model(**p)[0].double().numpy()
        lm = emb.points(torch.as_tensor(verts[None], dtype=torch.float32))[0].double().numpy()
        cam = lm @ r.viewmat[:3, :3].T + r.viewmat[:3, 3]
        uv = cam @ r.K.T
        uv = uv[:, :2] / uv[:, 2:3]
        mask = iio.imread(r.mask_path) > 127
        ij = np.floor(uv).astype(int)
        ok = (ij >= 0).all(1) & (ij < 128).all(1)
        assert ok.mean() > 0.99
        inside.append(mask[ij[ok, 1], ij[ok, 0]].mean())
    assert min(inside) > 0.95, inside
    # reuse: same video and settings -> the recorded report, no work
    again = preprocess_video(video, out, size=128, fov_deg=2 * np.degrees(np.arctan(0.5 / 2.8)), reuse=True)
    assert again.kept == 20 and again.seconds == report.seconds


def test_preprocess_no_face_is_a_clear_error(tmp_path):
    pytest.importorskip("mediapipe", reason="MediaPipe is the [video] extra (pip install 'stavatar_ti[video]')")
    from stavatar_ti.video.preprocess import preprocess_video
    video = tmp_path / "grey.mp4"
    _write_video(video, np.full((6, 96, 128, 3), 128, np.uint8))
    with pytest.raises(ValueError, match="no face found"):
        preprocess_video(video, tmp_path / "out", size=64)
    assert not (tmp_path / "out").exists() and not list(tmp_path.glob("out.tmp-*"))
