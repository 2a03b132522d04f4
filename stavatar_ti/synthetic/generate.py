"""Render a synthetic monocular talking-head sequence and write it in the VHAP / NeRF export layout.

    generate_sequence(out_dir, frames=300, size=256, seed=0, head_model=None, **options) -> Path
    ensure_demo_sequence(out_dir) -> Path          # the default demo, generated once
    build_sequence(frames, size, seed, head_model, ...) -> SyntheticSequence   # in memory

Layout written (method.md Sec. 11; read back by `stavatar_ti.data.load_dataset`):

    images/{t:05d}_00.png          RGB on white (8 bit)
    fg_masks/{t:05d}_00.png        mesh silhouette (8-bit coverage; binary without supersampling)
    flame_param/{t:05d}.npz        translation, rotation, neck_pose, jaw_pose [1,3], eyes_pose [1,6],
                                   shape [n_shape], expr [1,n_expr], static_offset [1,V0,3] (zeros)
    canonical_flame_param.npz      the same keys at zero pose / expression
    transforms_{train,val,test}.json   camera_angle_x, fl_x, fl_y, cx, cy, w, h, timestep_indices,
                                   camera_indices, frames[] (file_path, transform_matrix (camera-to-
                                   world, OpenGL axes), timestep_index, camera_index, flame_param_path,
                                   fg_mask_path, fl_x, fl_y, cx, cy, w, h, camera_angle_x); val is empty,
                                   test = `test_fraction` of the frames in interleaved segments that
                                   reach into wide-open mouths and blinks (`event_split`)
    synthetic.json                 generator settings and version (what `ensure_demo_sequence` checks)
    synthetic_truth.npz            the true driving signal (poses, expression, identity, named
                                   channels, non-rigid coefficients and fields, tracker noise)

Camera (VHAP monocular style): one static pinhole camera at (0, 0, 1) m looking toward -z, focal
length 2.8 x the image size (the chin-to-crown height fills about 65 % of the image), principal
point at the centre.  Its OpenCV world->camera matrix is V = diag(1, -1, -1, 1) with t = (0, 0, 1);
``transform_matrix`` = inv(V) @ diag(1, -1, -1, 1) (= a translation by +1 along z).  The head is
centred at the world origin by the translation parameter (a fixed offset, -head_centre, is part of
both the true and the written translation).

Images: the subject's true mesh (the identity, the true expression, the true poses, plus the
non-rigid fields as a per-frame offset before skinning) rendered by the independent z-buffer
renderer (`stavatar_ti.flame.meshrender`, back faces culled, Lambert shading with a fixed key light from the
upper left and ambient 0.42) with the baked UV texture times the frame's wrinkle shading.  Then, in
the image: a fuzz of hair strands sticks out of the silhouette up to 5 mm where the scalp is at the
border (anchored to the surface UV, so it moves with the head), and the bottom 3 cm of the neck
fade to white like VHAP's neck-line whitening.  With ``supersample`` > 1 everything is rendered at
that factor and box-filtered down.
"""

from __future__ import annotations

import hashlib
import json
import math
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import scipy.ndimage
import torch

from ..render.cameras import static_camera
from ..data.writer import (atomic_output, camera_fields, check_output, split_frames, transform_matrix,
                           write_canonical_params, write_frame, write_transforms)
from ..flame.meshrender import render_mesh
from .head import SyntheticHead, load_head
from .motion import (FPS, Motion, TrackedParams, TrackerNoise, make_motion, make_nonrigid_fields, mouth_open,
                     simulate_tracker)
from .texture import Appearance, WRINKLES, bake_appearance, wrinkle_weights

__all__ = ["SyntheticSequence", "Camera", "build_sequence", "generate_sequence", "ensure_demo_sequence",
           "make_camera", "head_fingerprint", "DEMO_SETTINGS", "FORMAT_VERSION", "LIGHT_DIR", "AMBIENT",
           "event_split", "eyes_closed"]

FORMAT_VERSION = 2   # 2: the test split is interleaved event segments (`event_split`)
EYES_CLOSED = 0.8    # blink weight at or above which a frame counts as eyes closed
SEGMENT_FRAMES = 10  # target length of one held-out segment
DEMO_SETTINGS = dict(frames=300, size=256, seed=0)
FOCAL_FACTOR = 2.8
CAMERA_DISTANCE = 1.0
LIGHT_DIR = (-0.35, 0.45, 1.0)       # world direction toward the key light (upper left, in front)
AMBIENT = 0.42
HAIR_FUZZ_M = 0.005                  # hair strands stick out of the silhouette up to this (metres)
NECK_FADE_M = (0.006, 0.030)         # the neck fades to white between these heights above its cut
N_SHAPE, N_EXPR = 300, 100


@dataclass
class Camera:
    """Pinhole camera: OpenCV world->camera ``viewmat`` [4,4] and pixel ``K`` [3,3] (float64)."""

    viewmat: np.ndarray
    K: np.ndarray
    width: int
    height: int

    def transform_matrix(self) -> np.ndarray:
        """Camera-to-world in OpenGL / Blender axes (x right, y up, z backward)."""
        return transform_matrix(self.viewmat)

    @property
    def camera_angle_x(self) -> float:
        return camera_fields(self.K, self.width, self.height)["camera_angle_x"]

    def scaled(self, factor: int) -> "Camera":
        K = self.K.copy()
        K[:2] *= factor
        return Camera(self.viewmat.copy(), K, self.width * factor, self.height * factor)

    def project(self, points: np.ndarray) -> np.ndarray:
        """[N,3] world points -> [N,2] pixel coordinates (u right, v down; pixel centres at +0.5)."""
        p = np.asarray(points, np.float64) @ self.viewmat[:3, :3].T + self.viewmat[:3, 3]
        uv = p @ self.K.T
        return uv[:, :2] / uv[:, 2:3]


def make_camera(size: int, distance: float = CAMERA_DISTANCE, focal_factor: float = FOCAL_FACTOR) -> Camera:
    """The static camera at (0, 0, distance) looking toward -z, square `size` image."""
    V, K = static_camera(size, size, focal_factor * size, distance)
    return Camera(V, K, int(size), int(size))


def _smoothstep(a, b, x):
    t = np.clip((x - a) / (b - a), 0.0, 1.0)
    return t * t * (3.0 - 2.0 * t)


def _texture_size(size: int, supersample: int) -> int:
    """Texture resolution with about one texel per pixel on the face (a mip level, at least 128)."""
    want = 1.9 * size * supersample
    return int(min(2048, max(128, 2 ** math.ceil(math.log2(want)))))


@dataclass
class SyntheticSequence:
    """Everything needed to render and write a synthetic sequence (see `build_sequence`)."""

    head: SyntheticHead
    motion: Motion
    tracked: TrackedParams
    fields: np.ndarray          # [K,V0,3]
    appearance: Appearance
    camera: Camera
    centre_offset: np.ndarray   # [3] added to every translation (true and written)
    neutral: np.ndarray         # [V,3] neutral vertices of the identity
    landmarks: dict
    wrinkles: np.ndarray        # [T,K] wrinkle strengths
    supersample: int
    seed: int

    @property
    def frames(self) -> int:
        return self.motion.frames

    # ------------------------------------------------------------------------------------------
    def true_params(self, t0: int, t1: int | None = None) -> dict:
        """Keyword arguments of `FlameModel.forward` for the true frames [t0, t1) (torch float32),
        with the non-rigid offsets as ``static_offset``."""
        t1 = t0 + 1 if t1 is None else t1
        m = self.motion
        f32 = torch.float32
        p = {k: torch.as_tensor(getattr(m, k)[t0:t1], dtype=f32) for k in
             ("rotation", "neck_pose", "jaw_pose", "eyes_pose", "expr")}
        p["translation"] = torch.as_tensor(m.translation[t0:t1] + self.centre_offset, dtype=f32)
        p["shape"] = torch.as_tensor(np.repeat(self._shape_vec(m.shape)[None], t1 - t0, 0), dtype=f32)
        D = np.einsum("tk,kvc->tvc", m.nonrigid[t0:t1], self.fields)
        p["static_offset"] = torch.as_tensor(D, dtype=f32)
        return p

    def _shape_vec(self, shape) -> np.ndarray:
        out = np.zeros(self.head.n_shape)
        out[: len(shape)] = shape[: self.head.n_shape]
        return out

    def true_vertices(self, t0: int, t1: int | None = None) -> np.ndarray:
        """[B,V,3] float64 posed vertices of the true frames [t0, t1)."""
        with torch.no_grad():
            return self.head.model(**self.true_params(t0, t1)).double().numpy()

    def written_params(self, t: int) -> dict:
        """The parameter file of frame t (numpy float32, VHAP shapes)."""
        p = self.tracked.params
        out = {k: np.asarray(p[k][t:t + 1], np.float32) for k in ("rotation", "neck_pose", "jaw_pose", "eyes_pose")}
        out["translation"] = np.asarray(p["translation"][t:t + 1] + self.centre_offset, np.float32)
        out["expr"] = np.asarray(p["expr"][t:t + 1], np.float32)
        out["shape"] = self._shape_vec(self.tracked.shape).astype(np.float32)
        out["static_offset"] = np.zeros((1, self.head.n_template, 3), np.float32)
        return out

    # ------------------------------------------------------------------------------------------
    def render(self, t: int, verts: np.ndarray | None = None):
        """Render frame t. Returns (image uint8 [H,W,3], mask uint8 [H,W] (coverage x 255),
        MeshRender at the supersampled resolution)."""
        if verts is None:
            verts = self.true_vertices(t)[0]
        ss = self.supersample
        cam = self.camera.scaled(ss)
        H, W = cam.height, cam.width
        head, app = self.head, self.appearance
        kw = dict(light_dir=LIGHT_DIR, ambient=AMBIENT, background=(1.0, 1.0, 1.0), cull_backfaces=True)
        tex = app.frame_texture(self.wrinkles[t])
        if app.per_vertex:
            r = render_mesh(verts, head.faces, cam.viewmat, cam.K, W, H, vertex_colors=tex, **kw)
        else:
            r = render_mesh(verts, head.faces, cam.viewmat, cam.K, W, H, uvs=head.uvs, uv_faces=head.uv_faces,
                            texture=tex, **kw)
        img = r.image.numpy().astype(np.float64)
        mask = r.mask.numpy()
        fid = r.face_id.numpy()[mask]
        bary = r.bary.numpy()[mask].astype(np.float64)
        # hair coverage / strand pattern and canonical height of every covered pixel
        if app.per_vertex:
            hair = (app.hair[head.faces[fid]] * bary).sum(1)
            strands = (app.strands[head.faces[fid]] * bary).sum(1)
        else:
            uv = (head.uvs[head.uv_faces[fid]] * bary[..., None]).sum(1)
            n = app.hair.shape[0]
            col = np.clip((uv[:, 0] * n).astype(np.int64), 0, n - 1)
            row = np.clip(((1.0 - uv[:, 1]) * n).astype(np.int64), 0, n - 1)
            hair, strands = app.hair[row, col], app.strands[row, col]
        y_can = (self.neutral[head.faces[fid], 1] * bary).sum(1)
        # hair fuzz beyond the silhouette
        hair_img = np.zeros((H, W))
        hair_img[mask] = hair
        strand_img = np.zeros((H, W))
        strand_img[mask] = strands
        L = HAIR_FUZZ_M * cam.K[0, 0] / CAMERA_DISTANCE
        if L >= 1.0 and hair.max(initial=0.0) > 0:
            dist, (iy, ix) = scipy.ndimage.distance_transform_edt(~mask, return_indices=True)
            cand = (~mask) & (dist <= L)
            qy, qx = iy[cand], ix[cand]
            h, s = hair_img[qy, qx], strand_img[qy, qx]
            length = L * (0.5 + 0.5 * ((s * 7.31) % 1.0))
            alpha = 0.85 * h * (0.5 + 0.5 * _smoothstep(0.3, 0.7, s)) \
                * np.clip(1.0 - dist[cand] / length, 0.0, 1.0) ** 1.3
            img[cand] = img[cand] * (1 - alpha[:, None]) + img[qy, qx] * 0.9 * alpha[:, None]
        # VHAP-like whitening of the neck bottom
        fade = _smoothstep(self.landmarks["neck_y"] + NECK_FADE_M[0], self.landmarks["neck_y"] + NECK_FADE_M[1], y_can)
        sub = img[mask]
        img[mask] = sub * fade[:, None] + (1.0 - fade[:, None])
        cov = mask.astype(np.float64)
        if ss > 1:
            h0, w0 = self.camera.height, self.camera.width
            img = img.reshape(h0, ss, w0, ss, 3).mean((1, 3))
            cov = cov.reshape(h0, ss, w0, ss).mean((1, 3))
        image = np.clip(np.round(img * 255.0), 0, 255).astype(np.uint8)
        return image, np.round(cov * 255.0).astype(np.uint8), r


def build_sequence(frames: int = 300, size: int = 256, seed: int = 0, head_model=None, *, supersample: int = 1,
                   texture_size: int | None = None, fps: float = FPS, noise: TrackerNoise | None = None,
                   uv_obj=None) -> SyntheticSequence:
    """Everything of a synthetic sequence except the files: head, true motion, non-rigid fields,
    simulated tracker output, baked appearance and camera.

    Args:
        frames, size, seed: sequence length, square image size in pixels, random seed.
        head_model: None (open head), FlameModel, FLAME-format dict or FLAME file path.
        supersample: render at this factor and box-filter down (1 = one sample per pixel).
        texture_size: UV texture resolution (default: about one texel per pixel on the face).
        fps: frame rate of the motion.
        noise: tracker noise levels (default `TrackerNoise()`).
        uv_obj: OBJ with the UV layout of a FLAME file without one.
    """
    for name, v, lo in (("frames", frames, 1), ("size", size, 8), ("supersample", supersample, 1)):
        if isinstance(v, bool) or not isinstance(v, (int, np.integer)) or v < lo:
            raise ValueError(f"{name}: expected an int >= {lo}, got {v!r}")
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or seed < 0:
        raise ValueError(f"seed: expected a non-negative int, got {seed!r}")
    head = load_head(head_model, n_shape=N_SHAPE, n_expr=N_EXPR, uv_obj=uv_obj)
    n_id = 10 if head.source == "open_head" else min(10, head.n_shape)
    motion = make_motion(int(frames), int(seed), head.expression_names, n_expr=head.n_expr, n_shape=n_id, fps=fps)
    shape = np.zeros(head.n_shape)
    shape[:n_id] = motion.shape
    neutral = head.neutral(shape)
    L = head.landmarks(neutral)
    fields = make_nonrigid_fields(head, neutral, L, int(seed), motion.nonrigid.shape[1])
    tracked = simulate_tracker(motion, head, fields, int(seed), noise)
    tex = texture_size or _texture_size(int(size), int(supersample))
    app = bake_appearance(head, shape, int(seed), tex, verts=neutral)
    return SyntheticSequence(head=head, motion=motion, tracked=tracked, fields=fields, appearance=app,
                             camera=make_camera(int(size)), centre_offset=-L["head_centre"], neutral=neutral,
                             landmarks=L, wrinkles=wrinkle_weights(motion.named, motion.frames),
                             supersample=int(supersample), seed=int(seed))


# ----------------------------------------------------------------------------------------------
# writing

def head_fingerprint(head: SyntheticHead) -> str:
    """sha1 of the head's template, faces and UVs (a cached demo is regenerated when it changes)."""
    h = hashlib.sha1()
    h.update(np.ascontiguousarray(head.model.v_template.numpy(), np.float32).tobytes())
    h.update(np.ascontiguousarray(head.faces, np.int64).tobytes())
    if head.uvs is not None:
        h.update(np.ascontiguousarray(head.uvs, np.float32).tobytes())
    return h.hexdigest()


def _meta(seq: SyntheticSequence, size: int, frames: int, test_fraction: float) -> dict:
    return {
        "generator": "stavatar_ti.synthetic", "version": FORMAT_VERSION, "frames": frames, "size": size,
        "seed": seq.seed, "fps": seq.motion.fps, "head_model": seq.head.source, "supersample": seq.supersample,
        "head_fingerprint": head_fingerprint(seq.head), "n_template_vertices": seq.head.n_template,
        "texture_size": int(seq.appearance.albedo.shape[0]) if not seq.appearance.per_vertex else None,
        "test_fraction": test_fraction, "light_dir": list(LIGHT_DIR), "ambient": AMBIENT,
        "mouth_open_fraction": float(mouth_open(seq.motion).mean()),
        "appearance": seq.appearance.info, "wrinkle_maps": list(WRINKLES),
        "tracker_noise": TrackerNoise().__dict__,
    }


def _write_truth(path: Path, seq: SyntheticSequence) -> None:
    m, tr = seq.motion, seq.tracked
    arrays = {f"true_{k}": v.astype(np.float32) for k, v in m.params().items()}
    arrays["true_translation"] = (m.translation + seq.centre_offset).astype(np.float32)
    arrays["true_shape"] = seq._shape_vec(m.shape).astype(np.float32)
    arrays["nonrigid_coefficients"] = m.nonrigid.astype(np.float32)
    arrays["nonrigid_fields"] = seq.fields.astype(np.float32)
    arrays["expr_projection"] = tr.projection.astype(np.float32)
    arrays["wrinkle_weights"] = seq.wrinkles.astype(np.float32)
    arrays["mouth_open"] = mouth_open(m)
    for k, v in m.named.items():
        arrays[f"named_{k}"] = np.asarray(v, np.float32)
    for k, v in tr.noise.items():
        arrays[f"noise_{k}"] = np.asarray(v, np.float32)
    np.savez_compressed(path, **arrays)


def generate_sequence(out_dir, frames: int = 300, size: int = 256, seed: int = 0, head_model=None, *,
                      supersample: int = 1, texture_size: int | None = None, test_fraction: float = 0.15,
                      overwrite: bool = False, progress=None, uv_obj=None) -> Path:
    """Render a synthetic sequence and write it to `out_dir` (layout in the module docstring).

    Everything is written into a sibling folder ``<out_dir>.tmp-<pid>`` that is renamed to `out_dir`
    at the end, so an interrupted run never leaves a half dataset behind.

    Args:
        out_dir: destination folder (must not exist unless `overwrite`).
        frames, size, seed, head_model, supersample, texture_size, uv_obj: see `build_sequence`.
        test_fraction: share of frames in the test split (interleaved segments, `event_split`).
        overwrite: replace an existing `out_dir`.
        progress: optional callable(done, total) called after every frame.
    Returns:
        Path of the written dataset.
    Raises:
        ValueError: bad arguments; FileExistsError: `out_dir` exists and not `overwrite`;
        FlameFileError: unreadable head model file.
    """
    split_frames(int(frames), float(test_fraction))  # validates test_fraction first
    out = check_output(out_dir, overwrite)
    seq = build_sequence(frames, size, seed, head_model, supersample=supersample, texture_size=texture_size,
                         uv_obj=uv_obj)
    train, test = event_split(seq.frames, test_fraction, [mouth_open(seq.motion), eyes_closed(seq.motion)])
    with atomic_output(out, overwrite) as tmp:
        T = seq.frames
        chunk = 32
        for t0 in range(0, T, chunk):
            t1 = min(T, t0 + chunk)
            verts = seq.true_vertices(t0, t1)
            for t in range(t0, t1):
                image, mask, _ = seq.render(t, verts[t - t0])
                write_frame(tmp, t, image, mask, seq.written_params(t))
                if progress is not None:
                    progress(t + 1, T)
        write_canonical_params(tmp, seq.written_params(0))
        cam = seq.camera
        write_transforms(tmp, cam.viewmat, cam.K, cam.width, cam.height, train, test)
        _write_truth(tmp / "synthetic_truth.npz", seq)
        (tmp / "synthetic.json").write_text(json.dumps(_meta(seq, int(size), T, float(test_fraction)), indent=1))
    return out


def eyes_closed(motion: Motion) -> np.ndarray:
    """bool [T]: frames whose blink weight (either eye) reaches EYES_CLOSED."""
    return np.maximum(motion.named["blink_left"], motion.named["blink_right"]) >= EYES_CLOSED


def _runs(flags: np.ndarray) -> list[tuple[int, int]]:
    """(first, last) frame of every run of True in a bool [T] array."""
    d = np.diff(np.concatenate([[0], flags.astype(np.int8), [0]]))
    return list(zip(np.nonzero(d == 1)[0].tolist(), (np.nonzero(d == -1)[0] - 1).tolist()))


def event_split(frames: int, test_fraction: float, events: list) -> tuple[list, list]:
    """Train / test timesteps with the test frames in interleaved segments that reach into events.

    The n_test frames (as `data.writer.split_frames`: round(test_fraction * frames), at least 1) form
    S = round(n_test / SEGMENT_FRAMES) segments (at least 1), one inside each of S equal blocks of the
    sequence.  Segment k looks for a run of an event kind whose middle frame lies in its block
    (kinds with fewer held-out frames so far first, ties in list order) and ends on that middle
    frame, so the test split holds the run's
    first half and the training split the rest; without such a run it sits in the block's middle.
    Deterministic (no randomness).

    Args:
        frames: T; test_fraction: in [0, 1); events: list of bool [T] arrays (e.g. mouth_open,
            eyes_closed), tried in this order.
    Returns:
        (train, test) sorted timestep lists, disjoint, covering 0..T-1.
    Raises:
        ValueError: test_fraction outside [0, 1) or an event array not of shape [T].
    """
    _, tail = split_frames(int(frames), float(test_fraction))
    n_test = len(tail)
    for e in events:
        if np.shape(e) != (frames,):
            raise ValueError(f"events: expected bool arrays of shape [{frames}], got {np.shape(e)}")
    if n_test == 0:
        return list(range(frames)), []
    S = max(1, int(round(n_test / SEGMENT_FRAMES)))
    lengths = [n_test // S + (1 if k < n_test % S else 0) for k in range(S)]
    mids = [[a + (b - a) // 2 for a, b in _runs(np.asarray(e, bool))] for e in events]
    test = []
    for k, L in enumerate(lengths):
        b0, b1 = k * frames // S, (k + 1) * frames // S
        end = b0 + (b1 - b0) // 2 + L // 2   # default: the block's middle
        held = np.zeros(frames, bool)
        held[test] = True
        # the kind with the fewest held-out event frames so far goes first (ties: list order)
        for j in sorted(range(len(events)), key=lambda j: int(np.count_nonzero(np.asarray(events[j], bool) & held))):
            inside = [m for m in mids[j] if b0 <= m < b1]
            if inside:
                end = inside[0]
                break
        start = min(max(end - L + 1, b0), b1 - L)
        test += range(start, start + L)
    held = set(test)
    return [t for t in range(frames) if t not in held], sorted(held)


def _is_current_demo(path: Path) -> bool:
    try:
        meta = json.loads((path / "synthetic.json").read_text())
    except (OSError, ValueError):
        return False
    want = dict(DEMO_SETTINGS, version=FORMAT_VERSION, head_model="open_head")
    if not all(meta.get(k) == v for k, v in want.items()) or not (path / "transforms_test.json").is_file():
        return False
    # the open head may have been re-sculpted since: its parameters would no longer fit
    return meta.get("head_fingerprint") == head_fingerprint(load_head())


def ensure_demo_sequence(out_dir, quiet: bool = False) -> Path:
    """The default demo sequence (300 frames, 256 x 256, seed 0, open head) in `out_dir`, generated
    on first use (about a minute on two CPU cores) and reused afterwards.

    A folder written by an older generator version, or for an open head whose geometry has changed
    since, is regenerated; a folder that is not a synthetic sequence is never touched (ValueError)."""
    out = Path(out_dir)
    if _is_current_demo(out):
        return out
    if out.exists() and any(out.iterdir()) and not (out / "synthetic.json").is_file():
        raise ValueError(f"{out}: exists and is not a synthetic sequence; remove it or pass --data")
    if not quiet:
        print(f"generating the synthetic demo sequence in {out} "
              f"({DEMO_SETTINGS['frames']} frames, {DEMO_SETTINGS['size']}^2; about a minute) ...",
              file=sys.stderr, flush=True)
    t0 = time.time()
    generate_sequence(out, **DEMO_SETTINGS, overwrite=True)
    if not quiet:
        print(f"synthetic demo sequence ready ({time.time() - t0:.0f} s)", file=sys.stderr, flush=True)
    return out
