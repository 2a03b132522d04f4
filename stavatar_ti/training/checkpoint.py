"""Atomic, versioned training checkpoints (loaded with torch.load(weights_only=True))."""

from __future__ import annotations

from pathlib import Path

import torch

CHECKPOINT_VERSION = 1


class CheckpointError(ValueError):
    """A checkpoint that cannot be used; the message names the file."""


def save_checkpoint(state: dict, path: str | Path) -> None:
    """Write `state` to `path` atomically (temporary file + rename): a crash never leaves a torn file."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    torch.save(state, tmp)
    tmp.replace(path)


def load_checkpoint(path: str | Path, cfg=None) -> dict:
    """Load a checkpoint written by `save_checkpoint`.

    Raises:
        CheckpointError: unreadable file, another checkpoint version, or (when `cfg` is given) a
            checkpoint trained with a different binding mode.
    """
    path = Path(path)
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # noqa: BLE001 - torch raises many types for bad files
        raise CheckpointError(f"{path}: cannot read checkpoint ({type(exc).__name__}: {exc})") from None
    if not isinstance(state, dict) or state.get("version") != CHECKPOINT_VERSION:
        got = state.get("version") if isinstance(state, dict) else None
        raise CheckpointError(f"{path}: checkpoint version {got}, this stavatar_ti writes {CHECKPOINT_VERSION}")
    if cfg is not None and state["config"]["model"]["binding"] != cfg.model.binding:
        raise CheckpointError(f"{path}: trained with binding={state['config']['model']['binding']}, "
                              f"config asks for {cfg.model.binding}")
    return state
