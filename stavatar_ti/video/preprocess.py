"""Own video -> a VHAP-layout dataset that `scripts/train.py` reads (no external tracker).

    preprocess_video(video, out, size=512, max_frames=None, head_model=None, embedding=None, ...)
        -> PreprocessReport

Steps (each in its own module of this package):

1. decode (`decode.read_video`, imageio-ffmpeg);
2. MediaPipe face mesh, 478 landmarks with iris, and selfie segmentation (`detect`); frames without a
   face are dropped (warned, listed in ``preprocess.json``); a video without any face is an error;
3. head tracking (`tracker.fit_sequence`) in the original frames with one static pinhole camera of
   horizontal field of view `fov_deg` (webcam-like default, or `focal_px`): rigid pose, shared
   shape, expression, jaw and eye gaze from the irises, with temporal smoothing.  The world origin
   is moved to the mean head position, so the head sits at the origin as in VHAP exports;
4. a face-centred square crop smoothed over time (`crop`), resized to `size`; the crop moves, so
   each frame gets its own principal point (``cx, cy`` per frame in ``transforms_*.json``);
5. matte to white with the segmentation, then whiten everything below a line 3 cm above the tracked
   head model's neck cut, as VHAP whitens below the neck (`matte`); the synthetic sequences fade the
   same band to white;
6. write the VHAP layout (`stavatar_ti.data.writer`) with the last `test_fraction` of the kept frames
   as the test split, and ``preprocess.json`` (settings, dropped frames, per-frame landmark error).

Head models: the open head (default) with its calibrated MediaPipe embedding
(`embedding.open_head_embedding`), or a FLAME file plus the user's MediaPipe<->FLAME embedding
(`embedding.load_flame_embedding`; MICA's ``mediapipe_landmark_embedding.npz``).
"""

from __future__ import annotations

import json
import math
import time
import warnings
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch

from ..render.cameras import static_camera
from ..data.writer import (atomic_output, check_output, split_frames, write_canonical_params, write_frame,
                           write_transforms)
from ..flame import FlameModel
from ..geometry import axis_angle_to_matrix
from ..hashing import sha256_file
from ..flame.open_head import make_open_head
from . import crop as _crop
from .decode import read_video
from .detect import detect_landmarks, segment_person
from .embedding import load_flame_embedding, open_head_embedding
from .matte import boundary_from_points, matte_to_white, whiten_below
from .tracker import TrackerOptions, fit_sequence, neck_line

FORMAT_VERSION = 2   # 2: transforms store cy from the bottom, as VHAP does (older caches are redone)
N_SHAPE, N_EXPR = 300, 100          # parameter sizes written (the trainer's defaults)
CAMERA_DISTANCE = 1.0               # initial camera height above the world origin (m), before recentring
NECK_MARGIN_M = 0.03                # whiten from this far above the model's neck cut (the synthetic data's fade)


@dataclass
class PreprocessReport:
    """What `preprocess_video` did. Times in seconds, errors in pixels of the original video."""

    out: str
    frames_in_video: int
    kept: int
    dropped: list
    mean_landmark_error_px: float
    seconds: dict = field(default_factory=dict)
    settings: dict = field(default_factory=dict)


def settings_for(video, size: int, max_frames, head_model, embedding, fov_deg: float, focal_px,
                 test_fraction: float) -> dict:
    """The settings a cached preprocessing must match (video by sha256, not by name)."""
    return {"version": FORMAT_VERSION, "video_sha256": sha256_file(Path(video)), "size": int(size),
            "max_frames": max_frames, "head_model": str(head_model) if head_model else "open_head",
            "embedding": str(embedding) if embedding else None, "fov_deg": float(fov_deg),
            "focal_px": focal_px, "test_fraction": float(test_fraction)}


def cached(out, settings: dict) -> bool:
    """True when `out` holds a finished preprocessing made with the same `settings`."""
    meta = Path(out) / "preprocess.json"
    if not meta.is_file():
        return False
    try:
        return json.loads(meta.read_text()).get("settings") == settings
    except ValueError:
        return False


def load_tracking_model(head_model=None, embedding=None):
    """(FlameModel, LandmarkEmbedding) for tracking: the open head with its shipped embedding, or a
    FLAME file with the user's MediaPipe embedding. Raises ValueError if only one of the two FLAME
    inputs is given, FlameFileError / EmbeddingFileError (ValueErrors) for unreadable files."""
    if head_model is None or str(head_model) == "open_head":
        if embedding is not None:
            raise ValueError("--landmark-embedding: only used with a FLAME --head-model")
        model = FlameModel(make_open_head(), n_shape=N_SHAPE, n_expr=N_EXPR, add_teeth=True, source="open_head")
        return model, open_head_embedding()
    if embedding is None:
        raise ValueError(f"{head_model}: tracking FLAME needs its MediaPipe landmark embedding "
                         "(--landmark-embedding mediapipe_landmark_embedding.npz)")
    model = FlameModel.from_file(head_model, n_shape=N_SHAPE, n_expr=N_EXPR, add_teeth=True)
    return model, load_flame_embedding(embedding, faces=model.faces)


def video_camera(width: int, height: int, fov_deg: float = 55.0, focal_px: float | None = None):
    """Static pinhole camera of the original video: OpenCV viewmat [4,4] (camera at +z, looking at
    -z, FLAME's +y up) and K [3,3] with f = focal_px or (W/2)/tan(fov/2), principal point at the
    centre. Raises ValueError for a field of view outside (1, 179) degrees or a focal <= 0."""
    if focal_px is None:
        if not 1.0 < float(fov_deg) < 179.0:
            raise ValueError(f"fov_deg: expected a horizontal field of view in (1, 179) degrees, got {fov_deg!r}")
        focal_px = 0.5 * width / math.tan(math.radians(float(fov_deg)) / 2.0)
    if not float(focal_px) > 0:
        raise ValueError(f"focal_px: expected > 0, got {focal_px!r}")
    return static_camera(width, height, float(focal_px), CAMERA_DISTANCE)


def _recentre(track, viewmat: np.ndarray) -> np.ndarray:
    """Move the world origin to the mean head translation (VHAP puts the head at the origin)."""
    m = track.translation.mean(0).astype(np.float64)
    track.translation = (track.translation - m).astype(np.float32)
    shift = np.eye(4)
    shift[:3, 3] = m
    return viewmat @ shift


def _whitening_line(model, track, t0: int, t1: int) -> np.ndarray:
    """[B,N,3] world points: the posed neck-cut ring raised by NECK_MARGIN_M along the head's up axis
    (the shirt collar covers the lowest part of a real neck)."""
    with torch.no_grad():
        params = track.torch_params(t0, t1)
        ring = neck_line(model(**params), model).double()
        up = axis_angle_to_matrix(params["rotation"].double())[:, :, 1]          # head +y in world
        return (ring + NECK_MARGIN_M * up[:, None, :]).numpy()


def preprocess_video(video, out, size: int = 512, max_frames: int | None = None, head_model=None,
                     embedding=None, fov_deg: float = 55.0, focal_px: float | None = None,
                     test_fraction: float = 0.15, tracker_options: TrackerOptions | None = None,
                     overwrite: bool = False, reuse: bool = False, console=None) -> PreprocessReport:
    """Turn a monocular video into a VHAP-layout dataset in `out` (see the module docstring).

    Args:
        video: video file (anything ffmpeg decodes). out: output folder (written atomically).
        size: output image side (pixels). max_frames: decode at most this many frames.
        head_model: None / "open_head", or a FLAME .pkl/.npz; embedding: the MediaPipe<->FLAME
            embedding .npz (required with FLAME).
        fov_deg / focal_px: the original camera's horizontal field of view (degrees) or focal
            length (pixels; wins when given).
        test_fraction: the last share of the kept frames held out as the test split.
        tracker_options: `TrackerOptions` for the landmark fit. overwrite: replace `out`.
        reuse: return the recorded report when `out` already holds a preprocessing of the same video
            (sha256) with the same settings; otherwise preprocess (replacing `out`).
        console: optional rich Console for progress lines.
    Returns:
        PreprocessReport (also written to ``out/preprocess.json``).
    Raises:
        FileNotFoundError / ValueError naming the video (missing, undecodable, no face in any frame);
        ImportError without MediaPipe (``pip install 'stavatar_ti[video]'``); ValueError for bad
        arguments or model / embedding files; FileExistsError if `out` exists and not `overwrite`.
    """
    say = console.print if console is not None else (lambda *a, **k: None)
    video = Path(video)
    if int(size) < 16:
        raise ValueError(f"size: expected an output side of at least 16 pixels, got {size!r}")
    split_frames(2, test_fraction)  # validates test_fraction before the slow steps
    if not video.is_file():
        raise FileNotFoundError(f"{video}: video not found")
    settings = settings_for(video, size, max_frames, head_model, embedding, fov_deg, focal_px, test_fraction)
    if reuse and cached(out, settings):
        meta = json.loads((Path(out) / "preprocess.json").read_text())
        say(f"reusing the preprocessing in {out}")
        return PreprocessReport(**{k: meta[k] for k in PreprocessReport.__dataclass_fields__})
    overwrite = overwrite or reuse
    check_output(out, overwrite)  # before the slow steps
    model, emb = load_tracking_model(head_model, embedding)
    seconds = {}

    t = time.time()
    frames, fps = read_video(video, max_frames=max_frames)
    T0, H, W = frames.shape[:3]
    seconds["decode"] = time.time() - t
    say(f"decoded {T0} frames {W}x{H} at {fps:.2f} fps from {video}")

    t = time.time()
    landmarks, found = detect_landmarks(frames)
    seconds["landmarks"] = time.time() - t
    if not found.any():
        raise ValueError(f"{video}: no face found in any of its {T0} frames")
    dropped = [int(i) for i in np.nonzero(~found)[0]]
    if dropped:
        warnings.warn(f"{video}: no face in {len(dropped)} of {T0} frames; dropped frames {dropped}", stacklevel=2)
    keep = np.nonzero(found)[0]
    frames, landmarks = frames[keep], landmarks[keep]
    T = len(keep)
    t = time.time()
    masks = segment_person(frames)
    seconds["segmentation"] = time.time() - t
    say(f"landmarks in {T}/{T0} frames ({seconds['landmarks']:.1f} s), segmentation {seconds['segmentation']:.1f} s")

    t = time.time()
    viewmat, K = video_camera(W, H, fov_deg, focal_px)
    track = fit_sequence(landmarks[..., :2], np.ones(T, bool), model, emb, K, viewmat, options=tracker_options)
    viewmat = _recentre(track, viewmat)
    seconds["tracking"] = time.time() - t
    say(f"tracked {T} frames in {seconds['tracking']:.1f} s: mean landmark error "
        f"{track.mean_reprojection_error:.2f} px (original {W}x{H} video)")

    t = time.time()
    boxes = _crop.crop_boxes(landmarks, np.ones(T, bool), (W, H))
    train, test = split_frames(T, test_fraction)
    Ks = np.stack([_crop.crop_intrinsics(K, boxes[i], size) for i in range(T)])
    R, tv = viewmat[:3, :3], viewmat[:3, 3]
    with atomic_output(out, overwrite) as tmp:
        chunk = 64
        for c0 in range(0, T, chunk):
            c1 = min(T, c0 + chunk)
            ring = _whitening_line(model, track, c0, c1)
            for i in range(c0, c1):
                image = _crop.apply_crop(frames[i], boxes[i], size)
                mask = _crop.crop_mask(masks[i], boxes[i], size)
                image = matte_to_white(image, mask)
                cam = ring[i - c0] @ R.T + tv
                uv = cam @ Ks[i].T
                uv = uv[:, :2] / uv[:, 2:3]
                image, mask = whiten_below(image, mask, boundary_from_points(uv, size))
                write_frame(tmp, i, image, mask, track.flame_params(i))
        write_canonical_params(tmp, track.flame_params(0))
        write_transforms(tmp, viewmat, Ks, size, size, train, test)
        seconds["write"] = time.time() - t
        report = PreprocessReport(out=str(out), frames_in_video=int(T0), kept=int(T), dropped=dropped,
                                  mean_landmark_error_px=float(track.mean_reprojection_error),
                                  seconds={k: round(v, 2) for k, v in seconds.items()}, settings=settings)
        meta = dict(asdict(report), settings=settings, fps=float(fps), video=str(video), video_size=[W, H],
                    source_frames=[int(i) for i in keep], focal_px=float(K[0, 0]),
                    landmark_error_px=[round(float(e), 3) for e in track.reprojection_error],
                    tracker_stage_losses=track.stage_losses)
        (tmp / "preprocess.json").write_text(json.dumps(meta, indent=1))
    say(f"wrote {out} ({len(train)} train / {len(test)} test frames at {size}x{size})")
    return report


__all__ = ["PreprocessReport", "cached", "load_tracking_model", "preprocess_video", "settings_for", "video_camera"]
