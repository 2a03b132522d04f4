"""The web viewer (stavatar_ti.tools.viewer, scripts/view.py) on one smoke-trained run: camera
conversion against a known pose, render equality with Avatar.render, the Gaussian cache, the server
(page, GUI -> state, recordings) and an end-to-end headless-Chromium test. Needs the `viewer` extra
(viser); the browser test also needs Debian's chromium + chromium-driver and selenium."""

import importlib.util
import math
import shutil
import socket
import time
import urllib.request
from pathlib import Path

import numpy as np
import pytest
import torch

viser = pytest.importorskip("viser", reason="the viewer extra (viser) is not installed")

from viser import transforms as vtf  # noqa: E402

from stavatar_ti.api import Avatar  # noqa: E402
from stavatar_ti.config import load_config  # noqa: E402
from stavatar_ti.data import load_dataset  # noqa: E402
from stavatar_ti.render.cameras import look_at  # noqa: E402
from stavatar_ti.synthetic import generate_sequence  # noqa: E402
from stavatar_ti.tools import viewer as V  # noqa: E402
from stavatar_ti.training import Trainer  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
CHROMIUM, CHROMEDRIVER = shutil.which("chromium"), shutil.which("chromedriver")


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    """(Avatar, dataset) of a few smoke iterations (SH degree 1, fine-tuned table)."""
    base = tmp_path_factory.mktemp("viewer")
    data = generate_sequence(base / "seq", frames=10, size=64, seed=5)
    cfg = load_config(ROOT / "configs" / "smoke.yaml", ["train.iterations=4", "model.sh_degree_interval=2",
                                                        "train.device=cpu"])
    Trainer(cfg, data, base / "run").run()
    return Avatar.load(base / "run", device="cpu"), load_dataset(data)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def project(cam: V.ViewCamera, p) -> np.ndarray:
    x = cam.viewmat[:3, :3] @ np.asarray(p, float) + cam.viewmat[:3, 3]
    uv = cam.K @ (x / x[2])
    return uv[:2]


def wait_for(cond, timeout=60.0, what="condition"):
    t0 = time.time()
    while time.time() - t0 < timeout:
        if cond():
            return
        time.sleep(0.05)
    raise AssertionError(f"timed out waiting for {what}")


# ------------------------------------------------------------------------------------------ cameras
def test_camera_from_viser_known_pose():
    eye, target, up = np.array([0.3, 0.1, 1.2]), np.array([0.0, 0.05, 0.0]), np.array([0.0, 1.0, 0.0])
    # viser's convention by hand: R columns = camera x (right), y (down), z (forward) in world.
    z = (target - eye) / np.linalg.norm(target - eye)
    x = np.cross(z, up)
    x /= np.linalg.norm(x)
    y = np.cross(z, x)
    wxyz = vtf.SO3.from_matrix(np.stack([x, y, z], 1)).wxyz
    fov = math.radians(40.0)
    cam = V.camera_from_viser(wxyz, eye, fov, canvas_w=640, canvas_h=480, side=320)
    assert (cam.width, cam.height) == (320, 240)
    np.testing.assert_allclose(cam.viewmat, look_at(eye, target, up), atol=1e-9)
    np.testing.assert_allclose(project(cam, target), [160.0, 120.0], atol=1e-6)     # the image centre
    d = np.linalg.norm(target - eye)
    up_cam = -y
    # a point at half the vertical fov above the axis lands on the top edge (row 0), and right is +column
    np.testing.assert_allclose(project(cam, eye + d * z + d * math.tan(fov / 2) * up_cam), [160.0, 0.0], atol=1e-6)
    assert project(cam, target + 0.05 * x)[0] > 160.0
    # portrait canvas: the longer side is the height
    assert (V.camera_from_viser(wxyz, eye, fov, 300, 600, 200).width, 200) == (100, 200)
    with pytest.raises(ValueError, match="fov"):
        V.camera_from_viser(wxyz, eye, 0.0, 640, 480, 320)


def test_viser_pose_round_trip():
    vm = look_at([0.2, -0.1, 1.0], [0.0, 0.0, 0.1], [0.0, 1.0, 0.0])
    K = np.array([[300.0, 0, 128], [0, 300.0, 128], [0, 0, 1]])
    pose = V.viser_pose(vm, K, 256, target=[0.0, 0.0, 0.1])
    cam = V.camera_from_viser(pose["wxyz"], pose["position"], pose["fov"], 256, 256, 256)
    np.testing.assert_allclose(cam.viewmat, vm, atol=1e-9)
    np.testing.assert_allclose(cam.K, K, atol=1e-9)
    # the look-at point lies on the viewing axis, at the target's depth
    np.testing.assert_allclose(project(cam, pose["look_at"]), [128.0, 128.0], atol=1e-6)
    np.testing.assert_allclose(pose["up"] @ np.array([0.0, 1.0, 0.0]) > 0.9, True)


# ------------------------------------------------------------------------------------------ rendering
def test_render_view_equals_avatar_render(run):
    avatar, dataset = run
    tl = V.timelines_for(avatar, dataset)
    assert set(tl) == {"train", "test"} and len(tl["train"]) + len(tl["test"]) <= 10
    f = dataset.splits["train"][2]
    state = V.ViewerState(source="train", frame=2, jaw=(0.2, 0.0), neck=(0.0, 0.15, 0.0), eyes=(0.0, -0.1),
                          expr=(0.8, 0.0, -0.5) + (0.0,) * 7)
    # the same parameters built by hand from the table row
    p = avatar.params(f.timestep)
    p["jaw_pose"][0, 0] += 0.2
    p["neck_pose"][0, 1] += 0.15
    p["eyes_pose"][0, 1] -= 0.1
    p["eyes_pose"][0, 4] -= 0.1
    p["expr"][0, 0] += 0.8
    p["expr"][0, 2] -= 0.5
    got = V.state_params(tl["train"], state)
    for k in p:
        assert torch.equal(got[k], p[k]) if torch.is_tensor(p[k]) else got[k] is p[k], k
    # zero offsets give the table row unchanged (and the timeline is not modified by the above)
    plain = V.state_params(tl["train"], V.ViewerState(frame=2))
    assert all(torch.equal(plain[k], v) for k, v in avatar.params(f.timestep).items() if torch.is_tensor(v))

    pose = V.viser_pose(f.viewmat, f.K, f.height, avatar.head_center(p))
    cam = V.camera_from_viser(pose["wxyz"], pose["position"], pose["fov"], 80, 64, 80)
    cache = V.GaussianCache(4)
    img = V.render_view(avatar, got, cam, cache)
    ref = avatar.render_image(p, cam.viewmat, cam.K, cam.width, cam.height)
    assert img.dtype == np.uint8 and img.shape == (64, 80, 3)
    assert np.array_equal(img, ref)
    assert (img.astype(int).sum(-1) < 3 * 250).mean() > 0.05        # the head is in view, not just background
    # a camera-only move rasterizes the cached θ*: no new UV-network evaluation, same result as Avatar.render
    cam2 = V.camera_from_viser(vtf.SO3.from_y_radians(0.3).multiply(vtf.SO3(pose["wxyz"])).wxyz, pose["position"],
                               pose["fov"], 80, 64, 80)
    img2 = V.render_view(avatar, got, cam2, cache)
    assert cache.misses == 1
    assert np.array_equal(img2, avatar.render_image(p, cam2.viewmat, cam2.K, 80, 64))
    assert not np.array_equal(img2, img)
    V.render_view(avatar, V.state_params(tl["train"], state.__class__(frame=2)), cam, cache)
    assert cache.misses == 2


def test_drive_timeline_and_cli_errors(run, tmp_path, capsys):
    avatar, dataset = run
    # the run's own sequence as the driver reproduces its table rows (Avatar.drive_params)
    drive = V.timelines_for(avatar, dataset, driver=dataset)["drive"]
    assert len(drive) == avatar.num_timesteps == 10
    for i in (0, 7):
        p = avatar.params(i)
        assert all(torch.equal(drive.params[i][k], p[k]) for k in ("expr", "jaw_pose", "rotation", "shape"))
    with pytest.raises(ValueError, match="--data"):
        V.timelines_for(avatar)
    spec = importlib.util.spec_from_file_location("script_view", ROOT / "scripts" / "view.py")
    view = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(view)
    for argv, word in ((["--model", str(tmp_path / "missing")], "missing"), (["--model", ".", "--port", "0"], "--port"),
                       (["--model", ".", "--resolution", "10"], "--resolution")):
        assert view.main(argv) == 1
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and err[0].startswith("error:") and word in err[0], err


# ------------------------------------------------------------------------------------------ server
@pytest.fixture(scope="module")
def app(run, tmp_path_factory):
    avatar, dataset = run
    app = V.ViewerApp(avatar, V.timelines_for(avatar, dataset), port=free_port(),
                      out_dir=tmp_path_factory.mktemp("viewer_out"), resolution=96).start()
    yield app
    app.stop()


def test_server_page_and_gui_state(app, run):
    avatar, _ = run
    assert app.url.startswith("http://127.0.0.1:")
    with urllib.request.urlopen(app.url + "/", timeout=30) as r:
        html = r.read().decode()
    assert r.status == 200 and "<!doctype html>" in html.lower() and "<script" in html
    g = app.gui
    g["source"].value = "test"
    assert app.state.source == "test" and g["frame"].max == len(app.timelines["test"]) - 1
    g["source"].value = "train"
    g["frame"].value = 3
    g["jaw_open"].value = 0.3
    g["neck1"].value = -0.2
    g["eyes0"].value = 0.1
    g["expr1"].value = 1.5
    assert app.state == V.ViewerState(source="train", frame=3, jaw=(0.3, 0.0), neck=(0.0, -0.2, 0.0),
                                      eyes=(0.1, 0.0), expr=(0.0, 1.5) + (0.0,) * 8)
    p = app.current_params()
    ref = avatar.params(run[1].splits["train"][3].timestep)
    assert torch.allclose(p["jaw_pose"][0, 0], ref["jaw_pose"][0, 0] + 0.3)
    assert torch.allclose(p["expr"][0, 1], ref["expr"][0, 1] + 1.5)
    app.reset_drive()
    assert app.state == V.ViewerState(source="train", frame=3)
    # playback advances the frame (render thread), and stops at the end without loop
    g["loop"].value = False
    g["fps"].value = 60
    g["play"].value = True
    wait_for(lambda: not g["play"].value, 30, "playback to reach the last frame")
    assert app.state.frame == len(app.timelines["train"]) - 1
    g["frame"].value = 0


def test_recording_video(app, run, monkeypatch):
    """A recorded camera path is re-rendered at the recorded times: frame k shows the camera logged
    last before t0 + k/fps."""
    iio = pytest.importorskip("imageio.v3")
    pytest.importorskip("imageio_ffmpeg")
    avatar, dataset = run
    f = dataset.splits["train"][0]
    pose = V.viser_pose(f.viewmat, f.K, f.height, avatar.head_center(0))
    wxyz_b = vtf.SO3.from_y_radians(0.5).multiply(vtf.SO3(pose["wxyz"])).wxyz
    t0 = 1000.0
    rec = V._Recording(client_id=0, t0=t0, fps=10.0, canvas=(96, 96),
                       cameras=[(t0, pose["wxyz"], pose["position"], pose["fov"]),
                                (t0 + 0.45, wxyz_b, pose["position"], pose["fov"])],
                       states=[(t0, V.ViewerState(frame=0))])
    path = app.recording_video(rec, t0 + 1.0)
    frames = iio.imread(path)
    assert frames.shape[0] == 10 and path.suffix == ".mp4"
    a = V.render_view(avatar, V.state_params(app.timelines["train"], V.ViewerState(frame=0)),
                      V.camera_from_viser(pose["wxyz"], pose["position"], pose["fov"], 96, 96, 96))
    b = V.render_view(avatar, V.state_params(app.timelines["train"], V.ViewerState(frame=0)),
                      V.camera_from_viser(wxyz_b, pose["position"], pose["fov"], 96, 96, 96))
    err = lambda x, y: np.abs(x.astype(float) - y.astype(float)).mean()  # noqa: E731
    for k in range(10):
        want, other = (a, b) if k < 5 else (b, a)
        assert err(frames[k], want) < 4.0 < err(frames[k], other), k


# ------------------------------------------------------------------------------------------ browser
@pytest.mark.skipif(CHROMIUM is None or CHROMEDRIVER is None,
                    reason="needs Debian's chromium and chromium-driver (apt-get install chromium chromium-driver)")
def test_browser_end_to_end(app, run, tmp_path):
    """Headless Chromium opens the page; the first frame arrives; the screenshot shows the avatar where
    the server's render puts it; the browser's initial camera is the training camera; a drag orbits;
    the "save PNG" button writes the view."""
    webdriver = pytest.importorskip("selenium.webdriver", reason="needs selenium (pip install selenium)")
    from selenium.webdriver.chrome.service import Service
    from selenium.webdriver.common.action_chains import ActionChains
    from selenium.webdriver.common.by import By

    avatar, dataset = run
    opts = webdriver.ChromeOptions()
    opts.binary_location = CHROMIUM
    for a in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--window-size=1200,800",
              "--use-angle=swiftshader", "--enable-unsafe-swiftshader", "--force-device-scale-factor=1"):
        opts.add_argument(a)
    driver = webdriver.Chrome(service=Service(CHROMEDRIVER), options=opts)
    try:
        f = dataset.splits["train"][0]

        def click_button(label):
            # the GUI panel scrolls: bring the button into view before clicking it
            button = driver.find_element(By.XPATH, f"//button[contains(., '{label}')]")
            driver.execute_script("arguments[0].scrollIntoView();", button)
            button.click()

        def training_view_shown():
            # a full-resolution frame of the browser's camera (as the viser client reports it) that is the
            # training camera of frame 0 (the page may report its default camera first)
            return any(full and np.abs(c.viewmat - f.viewmat).max() < 1e-4 for c, _, full in app.last_frames.values())

        driver.get(app.url)
        wait_for(training_view_shown, 120, "a full-resolution frame from the training camera")
        (cid, (cam, img, _)), = app.last_frames.items()
        client = app.server.get_clients()[cid]
        fy = (cam.height / 2) / math.tan(client.camera.fov / 2)
        np.testing.assert_allclose(fy * f.height / cam.height, f.K[1, 1], rtol=1e-4)
        import imageio.v3 as iio
        shot_path, prev = tmp_path / "viewer.png", None
        for _ in range(30):            # the page fades in: wait for two equal screenshots and no new frame
            n = app.frames_sent
            time.sleep(1.0)
            driver.save_screenshot(str(shot_path))
            shot = iio.imread(shot_path)[..., :3].astype(int)
            if app.frames_sent == n and app.last_frames[cid][2] and prev is not None \
                    and np.abs(shot - prev).mean() < 0.2:
                break
            prev = shot
        cam, img, _ = app.last_frames[cid]
        cw, ch = client.camera.image_width, client.camera.image_height
        canvas = shot[:ch, :cw]
        # the image we sent, scaled to the canvas (nearest), compared in the middle third of the width
        # (the GUI panel covers the right, a notification the top left)
        rows = (np.arange(ch) * img.shape[0] // ch)[:, None]
        cols = (np.arange(cw) * img.shape[1] // cw)[None, :]
        sent_big = img[rows, cols].astype(int)
        mid = slice(cw // 3, 2 * cw // 3)
        fg_shot = (255 * 3 - canvas[:, mid].sum(-1)) > 60
        fg_sent = (255 * 3 - sent_big[:, mid].sum(-1)) > 60
        assert fg_sent.mean() > 0.1 and fg_shot.mean() > 0.1, "the page shows no avatar"
        iou = (fg_shot & fg_sent).sum() / (fg_shot | fg_sent).sum()
        assert iou > 0.8, iou
        # and the colours: the canvas averaged down to the sent image's pixels (area), middle third
        small = torch.nn.functional.adaptive_avg_pool2d(torch.from_numpy(canvas).permute(2, 0, 1).double(),
                                                         img.shape[:2]).permute(1, 2, 0).numpy()
        m = slice(img.shape[1] // 3, 2 * img.shape[1] // 3)
        diff = np.abs(small[:, m] - img[:, m].astype(float)).mean()
        assert diff < 6.0, diff
        # orbit while recording: drag on the canvas; the camera moves, a new full frame of the new view
        # arrives, and the MP4 starts at the training view and ends at the new one
        app.gui["fps"].value = 5
        click_button("start recording")
        wait_for(lambda: app._recording is not None, 30, "the recording to start")
        n = app.frames_sent
        el = driver.find_element(By.TAG_NAME, "canvas")
        ActionChains(driver).move_to_element(el).click_and_hold().move_by_offset(150, 0).pause(0.3).release().perform()
        wait_for(lambda: app.frames_sent > n and app.last_frames[cid][2], 60, "a frame after the drag")
        moved, moved_img, _ = app.last_frames[cid]
        assert np.abs(moved.viewmat - cam.viewmat).max() > 0.05
        time.sleep(0.5)
        saved = len(app.saved)
        click_button("stop recording")
        wait_for(lambda: len(app.saved) > saved, 120, "the recording MP4")
        video = iio.imread(app.saved[-1])
        assert video.shape[0] >= 2 and video.shape[1] - img.shape[0] in (0, 1) and video.shape[2] - img.shape[1] in (0, 1)
        video = video[:, : img.shape[0], : img.shape[1]]                 # write_video pads odd sizes
        err = lambda x, y: np.abs(x.astype(float) - y.astype(float)).mean()  # noqa: E731
        assert err(video[0], img) < 4.0 < err(video[0], moved_img)
        assert err(video[-1], moved_img) < 4.0 < err(video[-1], img)
        app.gui["fps"].value = 25
        # "save PNG" from the page writes the current view at full resolution
        saved = len(app.saved)
        click_button("save PNG")
        wait_for(lambda: len(app.saved) > saved, 60, "the PNG")
        png = iio.imread(app.saved[-1])
        now = app._camera_of(client, app.resolution)
        assert np.array_equal(png, V.render_view(avatar, app.current_params(), now))
    finally:
        driver.quit()
