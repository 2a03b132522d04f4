"""Per-timestep FLAME parameters as trainable tensors (method.md Sec. 2: per-frame fine-tuning).

Expression, pose (rotation, neck, jaw, eyes) and translation are optimised for the training
timesteps only (test rows never receive gradients because they are never rendered in training);
shape and the static offset come from timestep 0 and stay fixed.
"""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import torch

DYNAMIC = ("expr", "rotation", "neck_pose", "jaw_pose", "eyes_pose", "translation")


def fit_size(x: np.ndarray, size: int) -> np.ndarray:
    """Truncate or zero-pad the last axis to `size`."""
    x = np.asarray(x, np.float32).reshape(-1)
    return x[:size] if x.shape[0] >= size else np.concatenate([x, np.zeros(size - x.shape[0], np.float32)])


class FlameTable(torch.nn.Module):
    """Rows indexed by timestep. Parameters: expr [T,E], rotation/neck_pose/jaw_pose [T,3],
    eyes_pose [T,6], translation [T,3]. Buffers: shape [1,S], static_offset [1,V0,3] or None."""

    def __init__(self, frames: list, n_shape: int, n_expr: int, use_static_offset: bool = True):
        super().__init__()
        num_t = max(f.timestep for f in frames) + 1
        sizes = {"expr": n_expr, "rotation": 3, "neck_pose": 3, "jaw_pose": 3, "eyes_pose": 6, "translation": 3}
        table = {k: np.zeros((num_t, n), np.float32) for k, n in sizes.items()}
        for f in frames:
            for k, n in sizes.items():
                table[k][f.timestep] = fit_size(f.params[k], n)
        for k in DYNAMIC:
            setattr(self, k, torch.nn.Parameter(torch.from_numpy(table[k])))
        first = min(frames, key=lambda f: f.timestep)
        self.register_buffer("shape", torch.from_numpy(fit_size(first.params.get("shape", np.zeros(0)), n_shape))[None])
        offset = first.params.get("static_offset") if use_static_offset else None
        self.register_buffer("static_offset", None if offset is None else
                             torch.as_tensor(np.asarray(offset, np.float32)).reshape(1, -1, 3))

    def row(self, t: int) -> dict:
        """Keyword arguments for FlameModel.forward for timestep t (batch 1)."""
        out = {k: getattr(self, k)[t:t + 1] for k in DYNAMIC}
        out["shape"] = self.shape
        out["static_offset"] = self.static_offset
        return out

    @classmethod
    def from_state(cls, state: dict, n_shape: int, n_expr: int) -> "FlameTable":
        """A FlameTable with the checkpoint's rows (built from stub frames, then loaded)."""
        num_t = state["expr"].shape[0]
        sizes = {"expr": n_expr, "rotation": 3, "neck_pose": 3, "jaw_pose": 3, "eyes_pose": 6, "translation": 3}
        zeros = {k: np.zeros(n, np.float32) for k, n in sizes.items()}
        first = dict(zeros, shape=np.zeros(n_shape, np.float32))
        offset = state.get("static_offset")
        if offset is not None:
            first["static_offset"] = np.zeros(tuple(offset.shape[1:]), np.float32)
        stubs = [SimpleNamespace(timestep=0, params=first)]
        if num_t > 1:
            stubs.append(SimpleNamespace(timestep=num_t - 1, params=zeros))
        table = cls(stubs, n_shape, n_expr, use_static_offset=offset is not None)
        table.load_state_dict(state)
        return table
