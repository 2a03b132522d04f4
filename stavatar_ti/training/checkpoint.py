"""Atomic, versioned training checkpoints (loaded with torch.load(weights_only=True)), and the checks
that a checkpoint fits the run that loads it (tensor shapes, the dataset it was trained on)."""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np
import torch

from ..losses.lpips import torch_load_error

CHECKPOINT_VERSION = 1


class CheckpointError(ValueError):
    """A checkpoint that cannot be used; the message names the file."""


def save_checkpoint(state: dict, path: str | Path) -> None:
    """Write `state` to `path` atomically (temporary file + rename): a crash never leaves a torn file.

    Raises:
        OSError: the folder cannot be created or written (full disk, read-only); the temporary file
            is removed and an existing `path` is left as it was.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    try:
        torch.save(state, tmp)
        tmp.replace(path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def load_checkpoint(path: str | Path, cfg=None) -> dict:
    """Load a checkpoint written by `save_checkpoint`.

    Raises:
        CheckpointError: unreadable file (one line: torch's reason without its advice to retry with
            weights_only=False), another checkpoint version, or (when `cfg` is given) a checkpoint
            trained with a different binding mode.
    """
    path = Path(path)
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # noqa: BLE001 - torch raises many types for bad files
        raise CheckpointError(f"{path}: cannot read checkpoint ({torch_load_error(exc)})") from None
    if not isinstance(state, dict) or state.get("version") != CHECKPOINT_VERSION:
        got = state.get("version") if isinstance(state, dict) else None
        raise CheckpointError(f"{path}: checkpoint version {got}, this stavatar_ti writes {CHECKPOINT_VERSION}")
    if cfg is not None and state["config"]["model"]["binding"] != cfg.model.binding:
        raise CheckpointError(f"{path}: trained with binding={state['config']['model']['binding']}, "
                              f"config asks for {cfg.model.binding}")
    return state


def check_shapes(path, what: str, state, reference: dict) -> None:
    """Check that `state` (a checkpoint's state dict) has exactly the keys and tensor shapes of
    `reference` (the state dict of the module that will load it).

    Raises:
        CheckpointError: one line naming the file, `what` (e.g. "table", "network") and the first
            missing / extra key or shape mismatch, with the likely cause.
    """
    if not isinstance(state, dict):
        raise CheckpointError(f"{path}: {what} state is {type(state).__name__}, expected a state dict")
    missing, extra = sorted(set(reference) - set(state)), sorted(set(state) - set(reference))
    if missing or extra:
        raise CheckpointError(f"{path}: {what} state does not fit this run (missing {missing[:3]}, extra "
                              f"{extra[:3]}); was it trained with another config?")
    for k, ref in reference.items():
        got = state[k]
        if not torch.is_tensor(got) or tuple(got.shape) != tuple(ref.shape):
            shape = list(got.shape) if torch.is_tensor(got) else type(got).__name__
            raise CheckpointError(f"{path}: {what}.{k} has shape {shape}, this run expects {list(ref.shape)} "
                                  f"(another dataset, head model or config?)")


def check_avatar_state(path, state, template: dict, num_faces: int) -> int:
    """Check a checkpoint's GaussianAvatar tensors against a fresh avatar's (`template`: its
    state dict): every per-Gaussian tensor has the same N and the template's trailing shape, binding
    ids lie in [0, num_faces), and all values are finite.

    Returns:
        N, the number of Gaussians.
    Raises:
        CheckpointError: one line naming the file and the tensor.
    """
    if not isinstance(state, dict):
        raise CheckpointError(f"{path}: avatar state is {type(state).__name__}, expected a state dict")
    n = None
    for k, ref in template.items():
        got = state.get(k)
        if not torch.is_tensor(got):
            raise CheckpointError(f"{path}: avatar.{k} missing (not a stavatar_ti training checkpoint?)")
        if n is None:
            n = got.shape[0] if got.ndim else -1
        if got.ndim != ref.ndim or got.shape[0] != n or tuple(got.shape[1:]) != tuple(ref.shape[1:]):
            want = ["N", *ref.shape[1:]]
            raise CheckpointError(f"{path}: avatar.{k} has shape {list(got.shape)}, expected {want} with N={n} "
                                  f"(another head model or config?)")
        if got.is_floating_point() and not torch.isfinite(got).all():
            raise CheckpointError(f"{path}: avatar.{k} holds NaN or inf")
    b = state["binding"]
    if n and (int(b.min()) < 0 or int(b.max()) >= num_faces):
        raise CheckpointError(f"{path}: avatar.binding holds face ids outside [0, {num_faces}) "
                              f"(trained with another head model?)")
    return int(n)


def dataset_fingerprint(frames) -> str:
    """sha256 (hex) of what identifies a run's training data: per frame, in order, the timestep,
    camera, image file name, K and viewmat (rounded to 1e-6). A moved folder keeps its fingerprint."""
    h = hashlib.sha256()
    for f in frames:
        h.update(f"{f.timestep}|{f.camera}|{Path(f.image_path).name}|".encode())
        for m in (f.K, f.viewmat):
            h.update(np.round(np.asarray(m, np.float64), 6).tobytes())
    return h.hexdigest()


def check_same_dataset(path, ck: dict, data_root, fingerprint: str) -> str | None:
    """Refuse to resume a checkpoint on data other than what it was trained on.

    Returns:
        a warning to show (the data moved, or an old checkpoint that does not record its data), or None.
    Raises:
        CheckpointError: the checkpoint records another dataset (naming both folders).
    """
    rec, rec_fp = ck.get("data"), ck.get("data_fingerprint")
    if rec_fp is None:
        return f"{path}: the checkpoint does not record its dataset; make sure {data_root} is the one it trained on"
    if rec_fp != fingerprint:
        raise CheckpointError(f"{path}: trained on {rec}, not on {data_root} (other frames or cameras); "
                              f"resume with the same --data, or start over with --overwrite")
    if rec is not None and Path(rec) != Path(data_root).resolve():
        return f"{path}: trained on {rec}; resuming on the same frames in {data_root}"
    return None
