"""Landmark embeddings: where each MediaPipe face-mesh landmark sits on a head model's surface.

    LandmarkEmbedding(mp_index, face, bary, weight).points(vertices) -> [B,L,3]
    load_flame_embedding(path, faces=None) -> LandmarkEmbedding   # MICA / metrical-tracker's FLAME file
    open_head_embedding() -> LandmarkEmbedding                    # the open head (shipped, calibrated here)
    save_embedding(path, embedding, **extra)                      # the same .npz layout (+ weight, ...)
    head_view_angles(R_cam, centre_cam) -> [...,2]                # yaw, pitch as the camera sees the head
    raycast_mesh(origins, directions, vertices, faces) -> (face, bary, distance)

An embedding point is a barycentric combination of one triangle's vertices (FLAME's landmark
embedding, Li et al. SIGGRAPH Asia 2017 Sec. 6; the MediaPipe variant is MICA's, Zielonka et al.
ECCV 2022, ``mediapipe_landmark_embedding.npz``: keys ``lmk_face_idx`` [L], ``lmk_b_coords`` [L,3],
``landmark_indices`` [L] (MediaPipe indices)), so it follows the posed mesh exactly.

The open-head embedding (``open_head_mediapipe.npz`` next to this file)
-------------------------------------------------------------------------
Our own derived data (the open head is this project's; MediaPipe is Apache-2.0), made by
``python scripts/calibrate_landmarks.py`` (about 12 minutes on one CPU core; deterministic up to
MediaPipe's own numerics):

1. Render 120 consecutive frames (512 x 512) of each of 8 synthetic identities / textures
   (`stavatar_ti.synthetic`, seeds 0-3 and 8-11; seeds 4-7, 12, 13 are kept for testing) whose
   motion is the synthetic talking-head motion (expressions, jaw, blinks, gaze, out-of-basis
   non-rigid fields) plus a smooth extra head turn sweeping yaw +-35 deg, pitch +-18 deg and
   roll +-8 deg, so that landmarks that slide with the view reveal it.
2. Run MediaPipe Face Mesh as the preprocessing does (`stavatar_ti.video.detect.detect_landmarks`:
   video mode, ``refine_landmarks=True``: 478 landmarks; 468-472 and 473-477 are the subject's
   right and left iris, centre first).  957 of the 960 frames had a face.
3. Cast the camera ray through every landmark pixel against the TRUE posed triangles of that frame
   (`raycast_mesh`, Moller-Trumbore, nearest front-facing hit).  Iris landmarks are cast against
   the eyeball spheres only (so that ``eyes_pose`` moves them); all others against the skin, the
   mouth cavity and the eyeballs, where an eyeball hit (an eye-contour landmark placed inside the
   lid opening) moves to the nearest eyelid-margin vertex (no proxy teeth, no lid linings).  A
   ray that misses (silhouette) takes the front-facing vertex nearest to the landmark in the image
   if it is within 2 px.
4. Map every hit to the rest pose: the same (triangle, barycentric) on the zero-shape, zero-pose
   template.  Per landmark, over the frames where it hit, fit the rest points as
   P = a + B (yaw, pitch) + e by least squares (refitted without residuals above 3 x their median),
   with the head's yaw / pitch as the camera sees it (`head_view_angles`).  The embedded point is
   the hit whose rest point is nearest a; B is stored as ``lmk_pose_slope`` (the landmark's slide,
   median 2.1 mm over 20 deg); the spread is the median |e| (mm).
5. Weight = 1 / (1 + (spread / 3 mm)^2); landmarks with spread > 6 mm, or hit in fewer than half
   of the frames, are dropped.

Result (the file's ``spread_mm`` / ``hit_fraction`` arrays): 392 of 478 landmarks kept.  Dropped:
25 of the 36 face-oval points (silhouette contour), 18 of the 20 inner-lip points (they slide into
the mouth as it opens), 3 eye-contour points and 40 others near the jaw line and cheeks.  Spread of
the kept landmarks: median 2.42 mm, 90th percentile 4.18 mm (without the pose-dependent slide:
median 2.83 mm, 90th percentile 4.64 mm); the 10 irises 0.8-1.3 mm, all kept, on the eyeball
spheres.  Weights: median 0.61 (10th / 90th percentile 0.34 / 0.81).  Most of the spread is
MediaPipe's frame-to-frame scatter on these renders (about 2 mm on frontal views, growing with yaw).

What it gives the tracker (`stavatar_ti.video.tracker`, 256 x 256 renders of 6 held-out identities,
20 frames each): head pose error mean 1.51 deg, median 1.45, 90th percentile 2.39, max 3.72, 75 % of
the frames under 2 deg; the same data without the slide (a static embedding): mean 2.38, max 6.12.
The rest is identity-dependent (MediaPipe places a given face's landmarks a little differently),
mostly pitch and yaw offsets of up to about 2 deg per identity.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

__all__ = ["LandmarkEmbedding", "load_flame_embedding", "open_head_embedding", "save_embedding", "raycast_mesh",
           "head_view_angles", "EmbeddingFileError", "OPEN_HEAD_EMBEDDING_PATH", "NUM_MEDIAPIPE_LANDMARKS"]

OPEN_HEAD_EMBEDDING_PATH = Path(__file__).with_name("open_head_mediapipe.npz")
NUM_MEDIAPIPE_LANDMARKS = 478   # face mesh with refine_landmarks=True (468 + 2 x 5 iris points)


class EmbeddingFileError(ValueError):
    """A landmark-embedding file that is missing, unreadable or malformed (the message names it)."""


@dataclass
class LandmarkEmbedding:
    """Landmarks as barycentric points on a head model's triangles.

    Attributes:
        mp_index: int64 [L] MediaPipe landmark index of each embedded landmark (0..477).
        face: int64 [L] triangle id (row of the model's ``faces``).
        bary: float32 [L,3] barycentric coordinates (sum to 1) of the landmark in that triangle.
        weight: float32 [L] >= 0 confidence weight used by the tracker (1 = fully trusted).
        vertex_ids: optional int64 [L,3], the vertex ids of each landmark's triangle (= the model's
            ``faces[face]``), set by `bind`; with it `points` needs no ``faces`` argument.
        pose_slope: optional float32 [L,3,2], metres per radian: how far (in the rest pose, model
            axes) the detector's landmark slides over the surface with the head's yaw and pitch
            as the camera sees them (`head_view_angles`; a linear, calibrated "dynamic" embedding
            in the spirit of FLAME's yaw-dependent contour landmarks).  The rest-pose point at
            yaw a, pitch b is ``bary point + pose_slope[l] @ (a, b)``.  `points` ignores it (the
            static part); the tracker applies it.
    Raises (on construction):
        ValueError: inconsistent lengths / shapes, negative weights or non-finite values.
    """

    mp_index: np.ndarray
    face: np.ndarray
    bary: np.ndarray
    weight: np.ndarray
    vertex_ids: np.ndarray | None = None
    pose_slope: np.ndarray | None = None

    def __post_init__(self):
        self.mp_index = np.asarray(self.mp_index, np.int64).reshape(-1)
        self.face = np.asarray(self.face, np.int64).reshape(-1)
        self.bary = np.asarray(self.bary, np.float32)
        self.weight = np.asarray(self.weight, np.float32).reshape(-1)
        L = len(self.mp_index)
        if self.face.shape != (L,) or self.bary.shape != (L, 3) or self.weight.shape != (L,):
            raise ValueError(f"LandmarkEmbedding: expected mp_index [L], face [L], bary [L,3], weight [L]; got "
                             f"{list(self.mp_index.shape)}, {list(self.face.shape)}, {list(self.bary.shape)}, "
                             f"{list(self.weight.shape)}")
        if not (np.isfinite(self.bary).all() and np.isfinite(self.weight).all()):
            raise ValueError("LandmarkEmbedding: bary / weight contain NaN or inf")
        if (self.weight < 0).any() or (self.face < 0).any() or (self.mp_index < 0).any():
            raise ValueError("LandmarkEmbedding: negative weight, face id or MediaPipe index")
        if self.vertex_ids is not None:
            self.vertex_ids = np.asarray(self.vertex_ids, np.int64)
            if self.vertex_ids.shape != (L, 3) or (self.vertex_ids < 0).any():
                raise ValueError(f"LandmarkEmbedding: vertex_ids must be non-negative [L,3] = [{L},3], got "
                                 f"{list(self.vertex_ids.shape)}")
        if self.pose_slope is not None:
            self.pose_slope = np.asarray(self.pose_slope, np.float32)
            if self.pose_slope.shape != (L, 3, 2) or not np.isfinite(self.pose_slope).all():
                raise ValueError(f"LandmarkEmbedding: pose_slope must be finite [L,3,2] = [{L},3,2], got "
                                 f"{list(self.pose_slope.shape)}")

    def __len__(self) -> int:
        return len(self.mp_index)

    def bind(self, faces) -> "LandmarkEmbedding":
        """A copy that knows its triangles' vertex ids (``faces[face]``), so `points` needs no faces.

        Args:
            faces: [F,3] int triangles of the model (``FlameModel.faces``, torch or numpy).
        Raises:
            ValueError: a face id outside `faces`.
        """
        f = np.asarray(faces.detach().cpu() if torch.is_tensor(faces) else faces, np.int64)
        if f.ndim != 2 or f.shape[1] != 3:
            raise ValueError(f"faces: expected [F,3], got {list(f.shape)}")
        if len(self) and int(self.face.max()) >= f.shape[0]:
            raise ValueError(f"faces: the embedding uses face {int(self.face.max())}, the model has {f.shape[0]}")
        return LandmarkEmbedding(self.mp_index, self.face, self.bary, self.weight, f[self.face], self.pose_slope)

    def points(self, vertices: torch.Tensor, faces=None) -> torch.Tensor:
        """Landmark positions on a (posed) mesh, differentiable w.r.t. `vertices`.

        Args:
            vertices: [B,V,3] or [V,3] float tensor (any units; metres for our models).
            faces: [F,3] int triangles of the model (``FlameModel.faces``); optional when the
                embedding is bound (`bind`, or `open_head_embedding`), and then it takes precedence.
        Returns:
            [B,L,3] (or [L,3]) = sum_k bary[l,k] * vertices[faces[face[l], k]], same dtype as
            `vertices` (the barycentric combination; FLAME's landmark embedding).
        Raises:
            ValueError: no faces and not bound, a face id outside `faces`, or a vertex id outside `vertices`.
        """
        if faces is not None:
            tri = self.bind(faces).vertex_ids
        elif self.vertex_ids is not None:
            tri = self.vertex_ids
        else:
            raise ValueError("faces: this embedding is not bound to a mesh; pass the model's faces or call bind(faces)")
        if tri.size and int(tri.max()) >= vertices.shape[-2]:
            raise ValueError(f"vertices: {vertices.shape[-2]} rows, the embedding needs vertex {int(tri.max())}")
        tri = torch.as_tensor(tri, device=vertices.device)
        b = torch.as_tensor(self.bary, device=vertices.device).to(vertices.dtype)
        return (vertices[..., tri, :] * b[..., None]).sum(-2)

    def select(self, keep) -> "LandmarkEmbedding":
        """The sub-embedding of the landmarks where `keep` (bool [L] or int indices) holds."""
        vid = None if self.vertex_ids is None else self.vertex_ids[keep]
        slope = None if self.pose_slope is None else self.pose_slope[keep]
        return LandmarkEmbedding(self.mp_index[keep], self.face[keep], self.bary[keep], self.weight[keep], vid, slope)


def _load_npz(path, need_weight: bool) -> dict:
    p = Path(path)
    if not p.is_file():
        raise EmbeddingFileError(f"{p}: landmark embedding file not found")
    try:
        with np.load(p, allow_pickle=False) as z:
            data = {k: z[k] for k in z.files}
    except Exception as exc:  # noqa: BLE001 - zip / format errors of any kind become one clear line
        raise EmbeddingFileError(f"{p}: not a readable .npz landmark embedding ({type(exc).__name__}: {exc})") from None
    keys = ["lmk_face_idx", "lmk_b_coords", "landmark_indices"] + (["weight"] if need_weight else [])
    missing = [k for k in keys if k not in data]
    if missing:
        raise EmbeddingFileError(f"{p}: not a MediaPipe landmark embedding, missing key(s) {missing} "
                                 f"(found {sorted(data)})")
    face, bary, idx = data["lmk_face_idx"], data["lmk_b_coords"], data["landmark_indices"]
    L = idx.reshape(-1).shape[0] if idx.ndim <= 1 else -1
    if idx.ndim != 1 or not np.issubdtype(idx.dtype, np.integer):
        raise EmbeddingFileError(f"{p}: 'landmark_indices' must be an integer array [L], got {idx.dtype} "
                                 f"{list(idx.shape)}")
    if face.shape != (L,) or not np.issubdtype(face.dtype, np.integer):
        raise EmbeddingFileError(f"{p}: 'lmk_face_idx' must be an integer array [{L}], got {face.dtype} "
                                 f"{list(face.shape)}")
    if bary.shape != (L, 3) or not np.issubdtype(bary.dtype, np.floating) or not np.isfinite(bary).all():
        raise EmbeddingFileError(f"{p}: 'lmk_b_coords' must be a finite float array [{L},3], got {bary.dtype} "
                                 f"{list(bary.shape)}")
    if L == 0:
        raise EmbeddingFileError(f"{p}: the embedding has no landmarks")
    if idx.min() < 0 or idx.max() >= NUM_MEDIAPIPE_LANDMARKS or face.min() < 0:
        raise EmbeddingFileError(f"{p}: landmark index outside 0..{NUM_MEDIAPIPE_LANDMARKS - 1} or negative face id")
    weight = data.get("weight")
    if weight is None:
        weight = np.ones(L, np.float32)
    elif weight.shape != (L,) or not np.isfinite(weight).all() or (weight < 0).any():
        raise EmbeddingFileError(f"{p}: 'weight' must be a finite non-negative array [{L}], got {list(weight.shape)}")
    vid = data.get("lmk_vertex_idx")
    if vid is not None and (vid.shape != (L, 3) or not np.issubdtype(vid.dtype, np.integer) or vid.min() < 0):
        raise EmbeddingFileError(f"{p}: 'lmk_vertex_idx' must be a non-negative integer array [{L},3], got "
                                 f"{list(vid.shape)}")
    slope = data.get("lmk_pose_slope")
    if slope is not None and (slope.shape != (L, 3, 2) or not np.isfinite(slope).all()):
        raise EmbeddingFileError(f"{p}: 'lmk_pose_slope' must be a finite float array [{L},3,2], got "
                                 f"{list(slope.shape)}")
    return dict(mp_index=idx, face=face, bary=bary, weight=weight, vertex_ids=vid, pose_slope=slope, extra=data)


def load_flame_embedding(path, faces=None) -> LandmarkEmbedding:
    """Read a MediaPipe -> FLAME landmark embedding (MICA / metrical-tracker's
    ``mediapipe_landmark_embedding.npz``: ``lmk_face_idx`` int [L] FLAME triangle ids,
    ``lmk_b_coords`` float [L,3] barycentric coordinates, ``landmark_indices`` int [L] MediaPipe
    indices; an optional ``weight`` [L] is honoured, otherwise all weights are 1).

    The FLAME triangle ids stay valid for `FlameModel` with proxy teeth (the teeth faces are appended
    after the template's). The file is user supplied and never shipped here.

    Args:
        path: the .npz file; read with ``allow_pickle=False`` (nothing in it is executed).
        faces: optional [F,3] triangles of the model to bind to (`LandmarkEmbedding.bind`).
    Returns:
        LandmarkEmbedding.
    Raises:
        EmbeddingFileError (a ValueError) naming the file: missing / unreadable file, missing key,
        wrong shape or dtype, MediaPipe index outside 0..477, a face id outside `faces`.
    """
    d = _load_npz(path, need_weight=False)
    emb = LandmarkEmbedding(d["mp_index"], d["face"], d["bary"], d["weight"], d["vertex_ids"], d["pose_slope"])
    if faces is not None:
        try:
            emb = emb.bind(faces)
        except ValueError as exc:
            raise EmbeddingFileError(f"{Path(path)}: does not fit this model ({exc})") from None
    return emb


def open_head_embedding() -> LandmarkEmbedding:
    """The calibrated MediaPipe embedding of the open head (`stavatar_ti.flame.open_head`, with the
    proxy teeth appended as in `FlameModel(add_teeth=True)`; face ids refer to that model's faces).
    How it was made and how consistent it is: the module docstring.

    Returns:
        LandmarkEmbedding, bound (``vertex_ids`` set, so ``points(vertices)`` works directly), with
        per-landmark weights from the calibration spread.
    Raises:
        EmbeddingFileError: the shipped data file is missing or damaged (a broken install).
    """
    d = _load_npz(OPEN_HEAD_EMBEDDING_PATH, need_weight=True)
    if d["vertex_ids"] is None:
        raise EmbeddingFileError(f"{OPEN_HEAD_EMBEDDING_PATH}: missing key 'lmk_vertex_idx'")
    return LandmarkEmbedding(d["mp_index"], d["face"], d["bary"], d["weight"], d["vertex_ids"], d["pose_slope"])


def save_embedding(path, embedding: LandmarkEmbedding, **extra) -> None:
    """Write `embedding` as an .npz in MICA's layout (``lmk_face_idx``, ``lmk_b_coords``,
    ``landmark_indices``) plus ``weight``, ``lmk_vertex_idx`` (when bound), ``lmk_pose_slope`` (when
    set) and any numpy `extra`
    arrays (e.g. ``spread_mm``); readable by `load_flame_embedding`.
    Written to ``<path>.tmp.npz`` and renamed, so a failed write leaves no half file."""
    p = Path(path)
    tmp = p.with_name(p.name + ".tmp.npz")
    arrays = {"lmk_face_idx": embedding.face.astype(np.int64), "lmk_b_coords": embedding.bary.astype(np.float32),
              "landmark_indices": embedding.mp_index.astype(np.int64), "weight": embedding.weight.astype(np.float32)}
    if embedding.vertex_ids is not None:
        arrays["lmk_vertex_idx"] = embedding.vertex_ids.astype(np.int64)
    if embedding.pose_slope is not None:
        arrays["lmk_pose_slope"] = embedding.pose_slope.astype(np.float32)
    arrays.update({k: np.asarray(v) for k, v in extra.items()})
    np.savez_compressed(tmp, **arrays)
    tmp.replace(p)


def head_view_angles(R_cam, centre_cam) -> np.ndarray:
    """Yaw and pitch of a head as a pinhole camera sees it (the angles `LandmarkEmbedding.pose_slope`
    is calibrated against).

    The head's rotation in camera axes is taken relative to the camera turned to look straight at
    the head (so a frontal face off the optical axis counts as frontal): with the unit direction
    d = centre_cam / |centre_cam| and R_look = Ry(atan2(d_x, d_z)) Rx(-asin(d_y)) (which maps +z to d),
    R_rel = diag(1,-1,-1) R_look^T R_cam = Ry(yaw) Rx(pitch) Rz(roll) (FLAME-like axes: x right,
    y up, z toward the camera; yaw > 0 turns the face toward the image's right, the subject's left;
    pitch > 0 tilts it down).

    Args:
        R_cam: [...,3,3] the head's rotation in OpenCV camera axes (R_view @ R_head, world->camera
            rotation times the head's world rotation incl. neck_pose).
        centre_cam: [...,3] camera-space position of the head (the mid-point of the eye joints).
    Returns:
        float64 [...,2] (yaw, pitch) in radians.
    """
    R = np.asarray(R_cam, np.float64)
    d = np.asarray(centre_cam, np.float64)
    d = d / np.linalg.norm(d, axis=-1, keepdims=True)
    a, b = np.arctan2(d[..., 0], d[..., 2]), -np.arcsin(np.clip(d[..., 1], -1.0, 1.0))
    ca, sa, cb, sb = np.cos(a), np.sin(a), np.cos(b), np.sin(b)
    o, z = np.ones_like(a), np.zeros_like(a)
    Ry = np.stack([np.stack([ca, z, sa], -1), np.stack([z, o, z], -1), np.stack([-sa, z, ca], -1)], -2)
    Rx = np.stack([np.stack([o, z, z], -1), np.stack([z, cb, -sb], -1), np.stack([z, sb, cb], -1)], -2)
    look = Ry @ Rx
    Rr = np.diag([1.0, -1.0, -1.0]) @ np.swapaxes(look, -1, -2) @ R
    yaw = np.arctan2(Rr[..., 0, 2], Rr[..., 2, 2])
    pitch = np.arcsin(np.clip(-Rr[..., 1, 2], -1.0, 1.0))
    return np.stack([yaw, pitch], -1)


def raycast_mesh(origins, directions, vertices, faces, chunk: int = 64, front_only: bool = True, candidates=None):
    """Nearest ray-triangle hits (Moller & Trumbore, "Fast, minimum storage ray-triangle
    intersection", JGT 1997), vectorised in float64 numpy.

    Args:
        origins: [R,3] ray origins; directions: [R,3] ray directions (need not be unit).
        vertices: [V,3] mesh vertices (same units as origins); faces: [F,3] int triangles.
        chunk: rays per batch when testing every face (memory is about chunk * F * 200 bytes).
        front_only: ignore hits on triangles facing away from the ray (normal (b-a)x(c-a) . d >= 0),
            i.e. keep only outside surfaces of a counter-clockwise-outward mesh.
        candidates: optional list of R int arrays, the rows of `faces` to test for each ray (e.g. the
            faces whose screen-space bounding box contains the ray's pixel); None = all faces.
    Returns:
        face int64 [R] (row of `faces`, -1 = miss), bary float64 [R,3] (weights of the triangle's
        three vertices; zeros on a miss), distance float64 [R] (ray parameter t, in units of
        |direction|; inf on a miss).  Only hits with t > 0 count.
    """
    o = np.asarray(origins, np.float64).reshape(-1, 3)
    d = np.asarray(directions, np.float64).reshape(-1, 3)
    v = np.asarray(vertices, np.float64)
    f = np.asarray(faces, np.int64)
    R = len(o)
    face = np.full(R, -1, np.int64)
    bary = np.zeros((R, 3))
    dist = np.full(R, np.inf)
    if candidates is None:
        for s in range(0, R, chunk):
            rows = np.repeat(np.arange(s, min(R, s + chunk)), len(f))
            cols = np.tile(np.arange(len(f)), min(R, s + chunk) - s)
            _pairs(o, d, v, f, rows, cols, front_only, face, bary, dist)
    else:
        if len(candidates) != R:
            raise ValueError(f"candidates: expected {R} arrays (one per ray), got {len(candidates)}")
        cols = [np.asarray(c, np.int64).reshape(-1) for c in candidates]
        rows = np.repeat(np.arange(R), [len(c) for c in cols])
        if len(rows):
            _pairs(o, d, v, f, rows, np.concatenate(cols), front_only, face, bary, dist)
    return face, bary, dist


def _pairs(o, d, v, f, rows, cols, front_only, face, bary, dist):
    """Moller-Trumbore on (ray, face) pairs; keeps the nearest hit per ray in face / bary / dist."""
    a = v[f[cols, 0]]
    e1, e2 = v[f[cols, 1]] - a, v[f[cols, 2]] - a
    dd, oo = d[rows], o[rows]
    p = np.cross(dd, e2)
    det = (e1 * p).sum(-1)
    ok = np.abs(det) > 1e-18
    if front_only:
        ok &= (np.cross(e1, e2) * dd).sum(-1) < 0
    inv = np.where(ok, 1.0 / np.where(ok, det, 1.0), 0.0)
    tv = oo - a
    u = (tv * p).sum(-1) * inv
    q = np.cross(tv, e1)
    w = (dd * q).sum(-1) * inv
    t = (e2 * q).sum(-1) * inv
    eps = 1e-9
    hit = ok & (u >= -eps) & (w >= -eps) & (u + w <= 1 + eps) & (t > 0)
    idx = np.flatnonzero(hit)
    if len(idx) == 0:
        return
    # nearest hit per ray: sort by (ray, t) and take the first of each ray
    order = idx[np.lexsort((t[idx], rows[idx]))]
    first = order[np.r_[True, rows[order][1:] != rows[order][:-1]]]
    r = rows[first]
    better = t[first] < dist[r]
    first, r = first[better], r[better]
    face[r] = cols[first]
    bary[r] = np.stack([1.0 - u[first] - w[first], u[first], w[first]], -1)
    dist[r] = t[first]
