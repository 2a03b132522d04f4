"""Interactive web viewer of a trained avatar (scripts/view.py), served with viser.

The browser only moves a camera and shows pictures: every frame is rendered here by our rasterizer
(`Avatar.rasterize_gaussians`, SH and all) and streamed to the page as the scene's background image
(JPEG), so the page shows exactly what `Avatar.render` gives for the same parameters and camera.

    app = ViewerApp(avatar, timelines, host="127.0.0.1", port=8080, out_dir=run / "viewer")
    app.start()                     # the render thread; app.url is the page
    ...
    app.stop()

Pieces usable without a server (and tested so): `camera_from_viser` / `viser_pose` (viser's client
camera <-> our OpenCV viewmat + K), `ViewerState` + `state_params` (timeline frame + hand-driven
offsets -> head-model parameters), `GaussianCache` (θ* per parameter set, so a camera-only move does
not rerun the UV network) and `render_view` (uint8 image, equal to `Avatar.render_image`).

Camera convention (viser 1.x, `viser.CameraHandle`): `wxyz` and `position` are R and t of
P_world = R p_camera + t with OpenCV camera axes (x right, y down, z forward), `fov` the vertical
field of view in radians; the page draws the background image over the whole canvas, so a pinhole
camera with the canvas' aspect, square pixels, the principal point at the image centre and
fy = (H/2) / tan(fov/2) lines up with it.
"""

from __future__ import annotations

import hashlib
import math
import threading
import time
from collections import OrderedDict
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np
import torch

from ..geometry import matrix_to_quat, quat_to_matrix
from ..render.cameras import camera_center
from ..render.runtime import taichi_lock
from .media import write_video

__all__ = ["ViewCamera", "Timeline", "ViewerState", "GaussianCache", "ViewerApp", "camera_from_viser",
           "viser_pose", "state_params", "render_view", "timelines_for", "benchmark", "N_EXPR_SLIDERS"]

N_EXPR_SLIDERS = 10          # expression coefficients with a slider (the first ones)
SETTLE_S = 0.25              # camera still for this long -> full-resolution frame


@dataclass
class ViewCamera:
    """A pinhole camera: `viewmat` [4,4] float64 world->camera (OpenCV axes), `K` [3,3] float64 pixel
    intrinsics, image `width` x `height` pixels."""

    viewmat: np.ndarray
    K: np.ndarray
    width: int
    height: int


@dataclass
class Timeline:
    """Frames the viewer can scrub: `params` (head-model parameter dicts, batch 1), `cameras`
    (ViewCamera of each frame, the capture camera), `labels` (text per frame)."""

    params: list
    cameras: list
    labels: list

    def __len__(self) -> int:
        return len(self.params)


@dataclass(frozen=True)
class ViewerState:
    """What is shown, apart from the camera: timeline `source` and `frame` index, and offsets added to
    that frame's parameters (radians for rotations, axis-angle components): `jaw` (open = x, side = y),
    `neck` (pitch x, yaw y, roll z), `eyes` (pitch x, yaw y; both eyes), `expr` (the first expression
    coefficients)."""

    source: str = "train"
    frame: int = 0
    jaw: tuple = (0.0, 0.0)
    neck: tuple = (0.0, 0.0, 0.0)
    eyes: tuple = (0.0, 0.0)
    expr: tuple = (0.0,) * N_EXPR_SLIDERS


def _size_for(canvas_w: int, canvas_h: int, side: int) -> tuple[int, int]:
    """Image size with the canvas' aspect whose longer side is `side` pixels."""
    s = side / max(canvas_w, canvas_h, 1)
    return max(1, round(canvas_w * s)), max(1, round(canvas_h * s))


def camera_from_viser(wxyz, position, fov: float, canvas_w: int, canvas_h: int, side: int) -> ViewCamera:
    """Our camera of a viser client camera.

    Args:
        wxyz: [4] camera->world rotation quaternion (w, x, y, z), OpenCV camera axes (viser's
            `CameraHandle.wxyz`). position: [3] camera centre, world units (`CameraHandle.position`).
        fov: vertical field of view, radians (`CameraHandle.fov`).
        canvas_w, canvas_h: the browser canvas in pixels (`image_width`, `image_height`): the aspect.
        side: pixels of the longer image side of the render.
    Returns:
        ViewCamera: viewmat = [R^T | -R^T t] (float64), K with fx = fy = (H/2)/tan(fov/2) and the
        principal point at (W/2, H/2) (the pixel-centre convention puts the image centre there).
    Raises:
        ValueError: fov outside (0, pi) or a non-positive size.
    """
    if not 0.0 < float(fov) < math.pi:
        raise ValueError(f"fov: expected a vertical field of view in (0, pi) radians, got {fov!r}")
    if canvas_w <= 0 or canvas_h <= 0 or side <= 0:
        raise ValueError(f"canvas size / side: expected positive pixels, got {canvas_w}x{canvas_h}, {side}")
    q = torch.as_tensor(np.asarray(wxyz, np.float64))
    R = quat_to_matrix(q / q.norm()).numpy()                 # camera -> world
    t = np.asarray(position, np.float64)
    V = np.eye(4)
    V[:3, :3] = R.T
    V[:3, 3] = -R.T @ t
    w, h = _size_for(canvas_w, canvas_h, side)
    f = (h / 2.0) / math.tan(float(fov) / 2.0)
    K = np.array([[f, 0.0, w / 2.0], [0.0, f, h / 2.0], [0.0, 0.0, 1.0]])
    return ViewCamera(V, K, w, h)


def viser_pose(viewmat, K, height: int, target=None) -> dict:
    """The viser camera of one of our cameras (the inverse of `camera_from_viser` for a centred
    principal point; an off-centre one cannot be shown by the browser camera and is dropped).

    Args:
        viewmat: [4,4] world->camera (OpenCV). K: [3,3] pixels. height: image height of K, pixels.
        target: [3] world point to orbit around (default: 1 unit ahead); the look-at point is its
            projection on the viewing axis, so the orientation is kept exactly.
    Returns:
        dict: wxyz [4], position [3], look_at [3], up [3] (world direction of the image's up, -y of
        the camera), fov (vertical, radians); float64 numpy / float.
    """
    V = np.asarray(viewmat, np.float64)
    R = V[:3, :3].T                                          # camera -> world
    pos = camera_center(V)
    forward = R[:, 2]
    dist = 1.0 if target is None else max(float((np.asarray(target, np.float64) - pos) @ forward), 1e-3)
    fov = 2.0 * math.atan((height / 2.0) / float(np.asarray(K)[1, 1]))
    wxyz = matrix_to_quat(torch.as_tensor(R)).numpy()
    return {"wxyz": wxyz, "position": pos, "look_at": pos + dist * forward, "up": -R[:, 1], "fov": fov}


def state_params(timeline: Timeline, state: ViewerState) -> dict:
    """Head-model parameters shown for `state`: frame `state.frame` of `timeline` with the offsets added
    (jaw_pose[0:2] += jaw, neck_pose += neck, both eyes' [0:2] += eyes, expr[:, :n] += expr).

    Axis-angle components are added, not composed: exact for rotations about one axis, close for the
    small offsets the sliders give. Returns new tensors (the timeline is not changed).
    Raises:
        ValueError: frame outside the timeline.
    """
    if not 0 <= state.frame < len(timeline):
        raise ValueError(f"frame: expected an index in [0, {len(timeline)}), got {state.frame}")
    base = timeline.params[state.frame]
    p = {k: (v.clone() if torch.is_tensor(v) else v) for k, v in base.items()}

    def add(key, cols, values):
        v = torch.as_tensor(values, dtype=p[key].dtype, device=p[key].device)
        p[key][:, cols] += v

    add("jaw_pose", slice(0, 2), state.jaw)
    add("neck_pose", slice(0, 3), state.neck)
    add("eyes_pose", slice(0, 2), state.eyes)
    add("eyes_pose", slice(3, 5), state.eyes)
    n = min(len(state.expr), p["expr"].shape[1])
    add("expr", slice(0, n), state.expr[:n])
    return p


def _params_key(params: dict) -> str:
    h = hashlib.sha1()
    for k in sorted(params):
        v = params[k]
        h.update(k.encode())
        if torch.is_tensor(v):
            h.update(v.detach().cpu().contiguous().numpy().tobytes())
        else:
            h.update(repr(v).encode())
    return h.hexdigest()


class GaussianCache:
    """θ* (`Avatar.gaussians`) of the last `size` parameter sets, keyed by their exact values, so that
    a camera-only change rasterizes cached Gaussians instead of rerunning FLAME + the UV network.
    `misses` counts the θ* evaluations."""

    def __init__(self, size: int = 8):
        if size < 1:
            raise ValueError(f"size: expected at least 1, got {size}")
        self.size, self.misses = size, 0
        self._items: OrderedDict = OrderedDict()
        self._lock = threading.Lock()

    def get(self, avatar, params: dict) -> dict:
        key = _params_key(params)
        with self._lock:
            if key in self._items:
                self._items.move_to_end(key)
                return self._items[key]
        g = avatar.gaussians(params)
        with self._lock:
            self.misses += 1
            self._items[key] = g
            while len(self._items) > self.size:
                self._items.popitem(last=False)
        return g


def render_view(avatar, params: dict, camera: ViewCamera, cache: GaussianCache | None = None) -> np.ndarray:
    """[H,W,3] uint8 image of `params` seen by `camera`: θ* (cached when `cache` is given) rasterized by
    `Avatar.rasterize_gaussians` under the Taichi lock, clamped and rounded as `Avatar.render_image`,
    so it equals `avatar.render_image(params, camera.viewmat, camera.K, camera.width, camera.height)`."""
    with taichi_lock():
        g = cache.get(avatar, params) if cache is not None else avatar.gaussians(params)
        out = avatar.rasterize_gaussians(g, camera.viewmat, camera.K, camera.width, camera.height)
        img = out.image.clamp(0, 1)
    return (img.cpu().numpy() * 255).round().astype(np.uint8)


def timelines_for(avatar, dataset=None, driver=None) -> dict:
    """The viewer's timelines: "train" and "test" (the run's frames with their capture cameras, when
    `dataset` is given), "drive" (cross-reenactment by `driver`, a SequenceDataset, with its cameras),
    and "table" (every parameter-table row with the first training camera) when there is no dataset.

    Raises:
        ValueError: no dataset and no driver (there is then no camera to start from).
    """
    from .runs import split_frames

    def cams(frames):
        return [ViewCamera(np.asarray(f.viewmat, np.float64), np.asarray(f.K, np.float64), f.width, f.height)
                for f in frames]

    out = {}
    if dataset is not None:
        for split in ("train", "test"):
            frames = [f for f in dataset.splits.get(split, []) if f.timestep < avatar.num_timesteps]
            if frames:
                out[split] = Timeline([avatar.params(f.timestep) for f in frames], cams(frames),
                                      [f"{split} frame {i} (timestep {f.timestep})" for i, f in enumerate(frames)])
    if driver is not None:
        frames = split_frames(driver, "all")
        out["drive"] = Timeline(avatar.drive_params(driver)[: len(frames)], cams(frames),
                                [f"driver frame {i} (timestep {f.timestep})" for i, f in enumerate(frames)])
    if not out:
        raise ValueError("timelines: no dataset and no driving sequence (pass --data DIR)")
    return out


def benchmark(avatar, timeline: Timeline, side: int = 256, n: int = 20) -> dict:
    """What the viewer's render loop reaches: median milliseconds of `render_view` at `side` x `side`
    from the first frame's camera, for camera-only moves (θ* cached: rasterization only; the camera
    yaws 1 degree per frame about the head) and for parameter changes (successive timeline frames: FLAME
    + UV network + rasterization). One warm-up render first (Taichi compiles its kernels).

    Returns: {"camera_ms", "camera_fps", "frame_ms", "frame_fps", "side", "gaussians"}.
    """
    if n < 1:
        raise ValueError(f"n: expected at least 1, got {n}")
    cam = timeline.cameras[0]
    center = avatar.head_center(timeline.params[0])
    pose = viser_pose(cam.viewmat, cam.K, cam.height, center)
    R0 = quat_to_matrix(torch.as_tensor(pose["wxyz"])).numpy()
    up = pose["up"] / np.linalg.norm(pose["up"])

    def yawed(deg):
        a = math.radians(deg)
        Ry = (math.cos(a) * np.eye(3) + math.sin(a) * np.cross(np.eye(3), up) + (1 - math.cos(a)) * np.outer(up, up))
        wxyz = matrix_to_quat(torch.as_tensor(Ry @ R0)).numpy()
        return camera_from_viser(wxyz, center + Ry @ (pose["position"] - center), pose["fov"], side, side, side)

    cache = GaussianCache(2)
    render_view(avatar, timeline.params[0], yawed(0.0), cache)
    cam_ms = []
    for i in range(n):
        t0 = time.perf_counter()
        render_view(avatar, timeline.params[0], yawed(i + 1.0), cache)
        cam_ms.append((time.perf_counter() - t0) * 1000.0)
    frame_ms = []
    for i in range(n):
        t0 = time.perf_counter()
        render_view(avatar, timeline.params[(i + 1) % len(timeline)], yawed(0.0), GaussianCache(1))
        frame_ms.append((time.perf_counter() - t0) * 1000.0)
    c, f = float(np.median(cam_ms)), float(np.median(frame_ms))
    return {"camera_ms": c, "camera_fps": 1000.0 / c, "frame_ms": f, "frame_fps": 1000.0 / f, "side": side,
            "gaussians": avatar.num_gaussians}


# ---------------------------------------------------------------------------------------------- server
@dataclass
class _Client:
    """Per-browser render bookkeeping."""

    handle: object
    last_move: float = 0.0
    shown: tuple | None = None         # (camera key, state, side) of the image on the page


@dataclass
class _Recording:
    client_id: int
    t0: float
    fps: float
    cameras: list = field(default_factory=list)     # (t, wxyz, position, fov)
    states: list = field(default_factory=list)      # (t, ViewerState)
    canvas: tuple = (1, 1)


class ViewerApp:
    """The viser server, its GUI and the render thread.

    Args:
        avatar: a loaded `stavatar_ti.api.Avatar`.
        timelines: {name: Timeline} (`timelines_for`).
        host, port: where to listen (loopback by default; never a public share link).
        out_dir: where "Save PNG" and the recordings go (created when first written).
        resolution: longer image side of full-resolution frames, 64..2048 pixels; while the camera
            moves the page gets frames at half of it.
    Raises:
        ValueError: no timeline, or a resolution out of range.
    Attributes after `start()`: server (viser.ViserServer), url, state (ViewerState), gui (dict of the
    GUI handles by name), cache (GaussianCache), frames_sent, last_render_ms, saved (written paths),
    last_frames ({client id: (ViewCamera, uint8 image sent, True when full resolution)}).
    """

    def __init__(self, avatar, timelines: dict, host: str = "127.0.0.1", port: int = 8080,
                 out_dir: Path | None = None, resolution: int = 256):
        if not timelines:
            raise ValueError("timelines: at least one timeline is needed")
        if not 64 <= resolution <= 2048:
            raise ValueError(f"resolution: expected 64..2048 pixels, got {resolution}")
        self.avatar, self.timelines, self.host, self.port = avatar, timelines, host, port
        self.out_dir = Path(out_dir) if out_dir is not None else Path("viewer_out")
        self.resolution = int(resolution)
        first = next(iter(timelines))
        self.state = ViewerState(source=first, expr=(0.0,) * min(N_EXPR_SLIDERS, avatar.config.model.n_expr))
        self.cache = GaussianCache(16)
        self.frames_sent, self.last_render_ms, self.saved = 0, float("nan"), []
        self.last_frames: dict = {}
        self.gui: dict = {}
        self._clients: dict[int, _Client] = {}
        self._lock = threading.Lock()
        self._wake = threading.Event()
        self._jobs: list = []
        self._recording: _Recording | None = None
        self._running = False
        self._thread: threading.Thread | None = None
        self._ema_ms: float | None = None
        self._last_advance = 0.0
        self.server = None

    # ------------------------------------------------------------------ lifecycle
    def start(self) -> "ViewerApp":
        """Start the server (viser's HTTP + websocket thread) and the render thread; returns self.
        Raises ImportError without viser, OSError when the port cannot be bound."""
        import viser

        self.server = viser.ViserServer(host=self.host, port=self.port, label="stavatar_ti", verbose=False)
        # Never a public link: no share button, and the share request of a (modified) page is refused.
        self.server.request_share_url = lambda *a, **k: None
        self.server.gui.configure_theme(show_share_button=False, show_logo=False, control_width="medium")
        self.port = self.server.get_port()
        self.url = f"http://{self.host}:{self.port}"
        cam = self._timeline().cameras[self.state.frame]
        pose = viser_pose(cam.viewmat, cam.K, cam.height, self._head_center())
        self.server.scene.set_up_direction(tuple(pose["up"]))
        ic = self.server.initial_camera
        ic.position, ic.look_at, ic.up, ic.fov = pose["position"], pose["look_at"], pose["up"], pose["fov"]
        self._build_gui()
        self.server.on_client_connect(self._on_connect)
        self.server.on_client_disconnect(self._on_disconnect)
        self._running = True
        self._thread = threading.Thread(target=self._loop, name="stavatar-viewer-render", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        """Stop the render thread and the server."""
        self._running = False
        self._wake.set()
        if self._thread is not None:
            self._thread.join(timeout=30)
        if self.server is not None:
            self.server.stop()

    # ------------------------------------------------------------------ state
    def _timeline(self, state: ViewerState | None = None) -> Timeline:
        return self.timelines[(state or self.state).source]

    def _head_center(self) -> np.ndarray:
        return self.avatar.head_center(self.current_params())

    def current_params(self) -> dict:
        """Head-model parameters of the current state."""
        return state_params(self._timeline(), self.state)

    def set_state(self, **changes) -> None:
        with self._lock:
            self.state = replace(self.state, **changes)
            if self._recording is not None:
                self._recording.states.append((time.time(), self.state))
        self._wake.set()

    # ------------------------------------------------------------------ GUI
    def _build_gui(self) -> None:
        gui, g = self.server.gui, self.gui
        g["status"] = gui.add_markdown("starting ...")
        with gui.add_folder("Timeline"):
            g["source"] = gui.add_dropdown("source", tuple(self.timelines), initial_value=self.state.source)
            g["frame"] = gui.add_slider("frame", 0, max(len(self._timeline()) - 1, 0), 1, 0)
            g["play"] = gui.add_checkbox("play", False)
            g["loop"] = gui.add_checkbox("loop", True)
            g["fps"] = gui.add_slider("play FPS", 1, 60, 1, 25)
            g["label"] = gui.add_markdown(self._timeline().labels[0])
        with gui.add_folder("Camera"):
            g["reset_camera"] = gui.add_button("reset to training camera")
            g["resolution"] = gui.add_slider("resolution (px)", 64, 2048, 32, self.resolution)
        with gui.add_folder("Drive"):
            g["jaw_open"] = gui.add_slider("jaw open", -0.2, 0.6, 0.01, 0.0)
            g["jaw_side"] = gui.add_slider("jaw sideways", -0.2, 0.2, 0.01, 0.0)
            for i, name in enumerate(("neck pitch", "neck yaw", "neck roll")):
                g[f"neck{i}"] = gui.add_slider(name, -0.6, 0.6, 0.01, 0.0)
            g["eyes0"] = gui.add_slider("eyes pitch", -0.4, 0.4, 0.01, 0.0)
            g["eyes1"] = gui.add_slider("eyes yaw", -0.5, 0.5, 0.01, 0.0)
            for i in range(len(self.state.expr)):
                g[f"expr{i}"] = gui.add_slider(f"expression {i}", -2.0, 2.0, 0.05, 0.0)
            g["reset_drive"] = gui.add_button("reset pose and expression")
        with gui.add_folder("Record"):
            g["save_png"] = gui.add_button("save PNG")
            g["record"] = gui.add_button("start recording (camera + timeline)")
            g["timeline_mp4"] = gui.add_button("timeline to MP4 (current camera)")

        g["source"].on_update(self._on_source)
        g["frame"].on_update(lambda _: self.set_state(frame=int(g["frame"].value)))
        g["resolution"].on_update(lambda _: self._set_resolution(int(g["resolution"].value)))
        for name in ("jaw_open", "jaw_side", "neck0", "neck1", "neck2", "eyes0", "eyes1") + tuple(
                f"expr{i}" for i in range(len(self.state.expr))):
            g[name].on_update(lambda _: self._on_drive())
        g["reset_drive"].on_click(lambda _: self.reset_drive())
        g["reset_camera"].on_click(lambda ev: self.reset_camera(ev.client))
        g["save_png"].on_click(lambda ev: self._queue("png", ev.client))
        g["record"].on_click(lambda ev: self._toggle_recording(ev.client))
        g["timeline_mp4"].on_click(lambda ev: self._queue("timeline", ev.client))

    def _on_source(self, _) -> None:
        src = self.gui["source"].value
        n = len(self.timelines[src])
        frame = min(self.state.frame, n - 1)
        self.set_state(source=src, frame=frame)
        self.gui["frame"].max = max(n - 1, 0)
        self.gui["frame"].value = frame

    def _on_drive(self) -> None:
        g = self.gui
        self.set_state(jaw=(g["jaw_open"].value, g["jaw_side"].value),
                       neck=tuple(g[f"neck{i}"].value for i in range(3)),
                       eyes=(g["eyes0"].value, g["eyes1"].value),
                       expr=tuple(g[f"expr{i}"].value for i in range(len(self.state.expr))))

    def _set_resolution(self, side: int) -> None:
        self.resolution = side
        self._wake.set()

    def reset_drive(self) -> None:
        """Set every hand-driven offset back to zero (the timeline frame as tracked)."""
        for name, h in self.gui.items():
            if name.startswith(("jaw_", "neck", "eyes", "expr")):
                h.value = 0.0

    def reset_camera(self, client) -> None:
        """Move `client`'s browser camera to the current frame's capture camera."""
        if client is None:
            return
        cam = self._timeline().cameras[self.state.frame]
        pose = viser_pose(cam.viewmat, cam.K, cam.height, self._head_center())
        with client.atomic():
            client.camera.fov = pose["fov"]
            client.camera.position = pose["position"]
            client.camera.look_at = pose["look_at"]
            client.camera.up_direction = pose["up"]

    # ------------------------------------------------------------------ clients
    def _on_connect(self, client) -> None:
        with self._lock:
            self._clients[client.client_id] = _Client(client)

        @client.camera.on_update
        def _(camera) -> None:
            now = time.time()
            with self._lock:
                c = self._clients.get(client.client_id)
                if c is not None:
                    c.last_move = now
                rec = self._recording
                if rec is not None and rec.client_id == client.client_id:
                    rec.cameras.append((now, camera.wxyz.copy(), camera.position.copy(), camera.fov))
            self._wake.set()

        self._wake.set()

    def _on_disconnect(self, client) -> None:
        with self._lock:
            self._clients.pop(client.client_id, None)

    # ------------------------------------------------------------------ render loop
    def _camera_of(self, handle, side: int) -> ViewCamera:
        cam = handle.camera
        return camera_from_viser(cam.wxyz, cam.position, cam.fov, cam.image_width, cam.image_height, side)

    def _loop(self) -> None:
        while self._running:
            self._wake.wait(timeout=0.05)
            self._wake.clear()
            try:
                self._advance_playback()
                self._run_jobs()
                self._render_clients()
            except Exception as exc:  # keep serving; show the error on the page
                self._status(f"**error:** {type(exc).__name__}: {exc}")
                time.sleep(0.2)

    def _advance_playback(self) -> None:
        if not self.gui["play"].value:
            return
        now = time.time()
        if now - self._last_advance < 1.0 / float(self.gui["fps"].value):
            return
        self._last_advance = now
        n = len(self._timeline())
        nxt = self.state.frame + 1
        if nxt >= n:
            if not self.gui["loop"].value:
                self.gui["play"].value = False
                return
            nxt = 0
        self.gui["frame"].value = nxt         # its callback sets the state

    def _render_clients(self) -> None:
        with self._lock:
            clients = list(self._clients.values())
            state = self.state
        now = time.time()
        for c in clients:
            try:
                cam = c.handle.camera
                key = (tuple(cam.wxyz), tuple(cam.position), cam.fov, cam.image_width, cam.image_height)
            except AssertionError:       # no camera message yet
                continue
            if key[3] <= 0 or key[4] <= 0:   # a hidden page reports an empty canvas
                continue
            moving = now - c.last_move < SETTLE_S
            side = max(16, self.resolution // 2) if moving else self.resolution
            want = (key, state, side)
            if want == c.shown:
                continue
            camera = camera_from_viser(*key[:3], key[3], key[4], side)
            t0 = time.perf_counter()
            img = render_view(self.avatar, state_params(self._timeline(state), state), camera, self.cache)
            ms = (time.perf_counter() - t0) * 1000.0
            c.handle.scene.set_background_image(img, format="jpeg", jpeg_quality=92)
            c.shown = want
            self.last_frames[c.handle.client_id] = (camera, img, not moving)
            self.frames_sent += 1
            self.last_render_ms = ms
            self._ema_ms = ms if self._ema_ms is None else 0.8 * self._ema_ms + 0.2 * ms
            self._status(f"render **{ms:.0f} ms** ({1000.0 / self._ema_ms:.1f} FPS), {camera.width}x{camera.height}, "
                         f"{self.avatar.num_gaussians:,} Gaussians, {'moving' if moving else 'full'}")
        label = self._timeline(state).labels[state.frame]
        if self.gui["label"].content != label:
            self.gui["label"].content = label

    def _status(self, text: str) -> None:
        rec = " — **recording**" if self._recording is not None else ""
        self.gui["status"].content = text + rec

    # ------------------------------------------------------------------ PNG / MP4
    def _queue(self, kind: str, client) -> None:
        if client is None:
            return
        with self._lock:
            self._jobs.append((kind, client))
        self._wake.set()

    def _toggle_recording(self, client) -> None:
        if client is None:
            return
        with self._lock:
            rec = self._recording
            if rec is None:
                cam = client.camera
                self._recording = _Recording(client.client_id, time.time(), float(self.gui["fps"].value),
                                             [(time.time(), cam.wxyz.copy(), cam.position.copy(), cam.fov)],
                                             [(time.time(), self.state)], (cam.image_width, cam.image_height))
                self.gui["record"].label = "stop recording and write MP4"
                return
            self._recording = None
            self._jobs.append(("record", client, rec, time.time()))
        self.gui["record"].label = "start recording (camera + timeline)"
        self._wake.set()

    def _next_path(self, stem: str, suffix: str) -> Path:
        self.out_dir.mkdir(parents=True, exist_ok=True)
        i = 0
        while (self.out_dir / f"{stem}_{i:04d}{suffix}").exists():
            i += 1
        return self.out_dir / f"{stem}_{i:04d}{suffix}"

    def _run_jobs(self) -> None:
        with self._lock:
            jobs, self._jobs = self._jobs, []
        for job in jobs:
            kind, client = job[0], job[1]
            if kind == "png":
                path = self.save_png(client)
            elif kind == "timeline":
                path = self.timeline_video(client)
            else:
                path = self.recording_video(job[2], job[3])
            self._status(f"wrote `{path}`")
            try:
                client.send_file_download(path.name, path.read_bytes())
            except Exception:  # the page may have gone; the file is on disk
                pass

    def save_png(self, client) -> Path:
        """Render `client`'s current view at full resolution and write it as PNG to out_dir."""
        import imageio.v3 as iio

        img = render_view(self.avatar, self.current_params(), self._camera_of(client, self.resolution), self.cache)
        path = self._next_path("view", ".png")
        iio.imwrite(path, img)
        self.saved.append(path)
        return path

    def timeline_video(self, client) -> Path:
        """Every frame of the current timeline (with the current offsets) from `client`'s camera, MP4."""
        camera = self._camera_of(client, self.resolution)
        state = self.state
        frames, n = [], len(self._timeline(state))
        for i in range(n):
            self._status(f"writing the timeline MP4: frame {i + 1}/{n}")
            frames.append(render_view(self.avatar, state_params(self._timeline(state), replace(state, frame=i)),
                                      camera, self.cache))
        path = self._next_path("timeline", ".mp4")
        write_video(path, frames, float(self.gui["fps"].value))
        self.saved.append(path)
        return path

    def recording_video(self, rec: _Recording, t_end: float) -> Path:
        """Re-render a recording at full resolution: video frame k shows the last camera and state
        recorded before t0 + k / fps (the browser's camera messages and the state changes are logged
        with their times, so slow rendering does not change the timing)."""
        n = max(1, int((t_end - rec.t0) * rec.fps))
        frames, ci, si = [], 0, 0
        for k in range(n):
            t = rec.t0 + k / rec.fps
            while ci + 1 < len(rec.cameras) and rec.cameras[ci + 1][0] <= t:
                ci += 1
            while si + 1 < len(rec.states) and rec.states[si + 1][0] <= t:
                si += 1
            _, wxyz, pos, fov = rec.cameras[ci]
            state = rec.states[si][1]
            camera = camera_from_viser(wxyz, pos, fov, rec.canvas[0], rec.canvas[1], self.resolution)
            self._status(f"writing the recording MP4: frame {k + 1}/{n}")
            frames.append(render_view(self.avatar, state_params(self._timeline(state), state), camera, self.cache))
        path = self._next_path("recording", ".mp4")
        write_video(path, frames, rec.fps)
        self.saved.append(path)
        return path
