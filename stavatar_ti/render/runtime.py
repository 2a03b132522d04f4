"""Taichi runtime setup: lazy initialisation with the arch taken from the tensors' device.

Taichi holds one global runtime per process with one arch. `init()` may be called explicitly;
otherwise the first kernel call initialises Taichi from the device of its tensors (CUDA -> cuda,
CPU -> x64). A later call with tensors on the other device raises a ValueError instead of letting
Taichi copy them across devices on every launch.

All Taichi launches of the library go through `taichi_lock()` so that calls coming from torch's
autograd worker threads never interleave with calls from the main thread.
"""

from __future__ import annotations

import os
import threading

import taichi as ti
import torch

_ARCHS = {"cpu": "x64", "x64": "x64", "cuda": "cuda"}
_state: dict = {"arch": None}
_lock = threading.RLock()


def init(arch: str = "cpu", **kwargs) -> None:
    """Initialise Taichi for stavatar_ti.

    Args:
        arch: "cpu"/"x64" or "cuda".
        **kwargs: passed on to `ti.init` (e.g. `debug=True`, `device_memory_GB=2`).
    Raises:
        ValueError: unknown arch, or Taichi already initialised by stavatar_ti for another arch.
    Environment: STAVATAR_CPU_THREADS limits Taichi's CPU threads (1 makes float atomics, and so
    CPU training, bit-reproducible).
    """
    if arch not in _ARCHS:
        raise ValueError(f"arch: expected one of {sorted(_ARCHS)}, got {arch!r}")
    name = _ARCHS[arch]
    with _lock:
        if _state["arch"] is not None:
            if _state["arch"] != name:
                raise ValueError(f"arch: Taichi is already initialised for {_state['arch']} in this process; "
                                 f"cannot switch to {name}")
            return
        kwargs.setdefault("log_level", ti.WARN)
        kwargs.setdefault("default_fp", ti.f32)
        threads = os.environ.get("STAVATAR_CPU_THREADS")
        if name == "x64" and threads:  # e.g. 1 for bit-reproducible CPU runs (float atomics)
            kwargs.setdefault("cpu_max_num_threads", int(threads))
        ti.init(arch=getattr(ti, name), **kwargs)
        _state["arch"] = name


def current_arch() -> str | None:
    """"x64", "cuda", or None before initialisation."""
    return _state["arch"]


def ensure_device(device: torch.device, what: str = "tensors") -> None:
    """Initialise Taichi for `device` if needed and check that it matches the running arch.

    Raises:
        ValueError: the device is neither CPU nor CUDA, or Taichi runs on the other arch.
    """
    if device.type not in ("cpu", "cuda"):
        raise ValueError(f"{what}: device {device} is not supported (use cpu or cuda)")
    name = _ARCHS[device.type]
    with _lock:
        if _state["arch"] is None:
            init(device.type)
        elif _state["arch"] != name:
            raise ValueError(f"{what}: on {device.type}, but Taichi was initialised for {_state['arch']} "
                             f"in this process; keep all rendering on one device per process")


def taichi_lock() -> threading.RLock:
    """The re-entrant lock that serialises Taichi launches across threads."""
    return _lock


def launch(kernel, *args) -> None:
    """Run a Taichi kernel under the lock, passing torch tensors detached.

    Initialises Taichi from the first tensor's device if needed (see `ensure_device`).

    Taichi allocates `.grad` on any tensor argument that requires grad (for its own autodiff),
    which would leave zero `.grad` tensors on the caller's parameters; detached views share the
    same memory (zero-copy) without that side effect.
    """
    tensors = [a for a in args if isinstance(a, torch.Tensor)]
    with _lock:
        if tensors:
            ensure_device(tensors[0].device, "tensors")
        kernel(*(a.detach() if isinstance(a, torch.Tensor) else a for a in args))
