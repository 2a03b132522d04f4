"""Taichi runtime setup: lazy initialisation with the arch taken from the tensors' device.

Taichi holds one global runtime per process with one arch. `init()` may be called explicitly;
otherwise the first kernel call initialises Taichi from the device of its tensors (CUDA -> cuda,
CPU -> x64). A later call with tensors on the other device raises a ValueError instead of letting
Taichi copy them across devices on every launch.

Fail fast instead of falling back: `ti.init` runs with `enable_fallback=False` and the arch that
Taichi actually started on is checked afterwards (TI_ARCH in the environment overrides the
requested one inside ti.init), so a CUDA request never ends up on x64, where every CUDA tensor
would be copied host<->device on each launch.

Taichi 1.7.4's CUDA backend always runs on CUDA device 0 and launches on the legacy default
stream (kernel_impl.py passes the torch tensors' raw pointers; it knows nothing of torch streams).
`ensure_device` therefore rejects tensors on cuda:N (N != 0) and a non-default current torch
stream, where kernels would read another GPU's pointers or race with the torch stream.

All Taichi launches of the library go through `taichi_lock()` so that calls coming from torch's
autograd worker threads never interleave with calls from the main thread.
"""

from __future__ import annotations

import os
import threading
import warnings

import taichi as ti
import torch

_ARCHS = {"cpu": "x64", "x64": "x64", "cuda": "cuda"}
_state: dict = {"arch": None, "options": {}}
_lock = threading.RLock()


class BackendError(RuntimeError):
    """Taichi could not start the requested backend; stavatar_ti refuses to fall back to another."""


def _started_arch():
    """The arch Taichi's running program was created for (ti.lang.impl.current_cfg().arch)."""
    return ti.lang.impl.current_cfg().arch


def _env_options(name: str) -> dict:
    """ti.init options from the environment (see `init`)."""
    out = {}
    fast = os.environ.get("STAVATAR_FAST_MATH")
    if fast is not None and fast != "":
        if fast not in ("0", "1"):
            raise ValueError(f"STAVATAR_FAST_MATH: expected 0 or 1, got {fast!r}")
        out["fast_math"] = fast == "1"
    threads = os.environ.get("STAVATAR_CPU_THREADS")
    if name == "x64" and threads:  # e.g. 1 for bit-reproducible CPU runs (float atomics)
        out["cpu_max_num_threads"] = int(threads)
    pool = os.environ.get("STAVATAR_DEVICE_MEMORY_GB")
    if name == "cuda" and pool:
        try:
            out["device_memory_GB"] = float(pool)
        except ValueError:
            raise ValueError(f"STAVATAR_DEVICE_MEMORY_GB: expected a number of GiB, got {pool!r}") from None
    return out


def init(arch: str = "cpu", **kwargs) -> None:
    """Initialise Taichi for stavatar_ti, on exactly the requested backend.

    Args:
        arch: "cpu"/"x64" or "cuda".
        **kwargs: passed on to `ti.init` (e.g. `debug=True`, `device_memory_GB=2`, `fast_math=False`).
            Taichi's defaults apply otherwise: fast_math=True (approximate exp/division on CUDA;
            the tolerance policy is in docs/performance.md, "CUDA check"), device_memory_GB=1.0
            (CUDA: the pool that Taichi's sparse fields allocate from; the trainer sizes it from
            the Gaussian cap, `stavatar_ti.temporal.stats.pool_gb`).
    Raises:
        ValueError: unknown arch, or Taichi already initialised by stavatar_ti for another arch,
            or a malformed environment variable below.
        BackendError: Taichi could not start the backend (e.g. no CUDA driver), or started on
            another arch than requested (TI_ARCH set); never a silent CPU fallback.
    Environment (explicit kwargs win): STAVATAR_CPU_THREADS limits Taichi's CPU threads (1 makes
    float atomics, and so CPU training, bit-reproducible); STAVATAR_FAST_MATH=0|1 sets fast_math;
    STAVATAR_DEVICE_MEMORY_GB sets the CUDA pool.
    A second call for the running arch does nothing (with a warning when it asks for other
    options: Taichi cannot change them without a reset that would drop every field).
    """
    if arch not in _ARCHS:
        raise ValueError(f"arch: expected one of {sorted(_ARCHS)}, got {arch!r}")
    name = _ARCHS[arch]
    with _lock:
        if _state["arch"] is not None:
            if _state["arch"] != name:
                raise ValueError(f"arch: Taichi is already initialised for {_state['arch']} in this process; "
                                 f"cannot switch to {name}")
            running = ti.lang.impl.default_cfg()  # what ti.init configured: defaults where not given
            differ = [k for k, v in kwargs.items() if _state["options"].get(k, getattr(running, k, None)) != v]
            if differ:
                warnings.warn(f"init: Taichi already runs on {name}; options {sorted(differ)} ignored", stacklevel=2)
            return
        kwargs = {**_env_options(name), **kwargs}
        kwargs.setdefault("log_level", ti.WARN)
        kwargs.setdefault("default_fp", ti.f32)
        want = getattr(ti, name)
        try:
            ti.init(arch=want, enable_fallback=False, **kwargs)
        except (KeyError, TypeError):
            raise  # an unknown ti.init option: a programming error, not a backend failure
        except Exception as exc:  # noqa: BLE001 - any failure to start the backend
            reason = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
            raise BackendError(f"{arch}: Taichi could not start its {name} backend ({reason}); "
                               "refusing to fall back to the CPU") from None
        got = _started_arch()
        if got != want:
            got_name = ti.lang.impl._ti_core.arch_name(got)
            raise BackendError(f"{arch}: Taichi started on {got_name} instead of {name} "
                               f"(TI_ARCH={os.environ.get('TI_ARCH')!r}); refusing to run on another backend")
        _state["arch"] = name
        _state["options"] = {k: v for k, v in kwargs.items() if k not in ("log_level", "default_fp")}


def current_arch() -> str | None:
    """"x64", "cuda", or None before initialisation."""
    return _state["arch"]


def current_options() -> dict:
    """The ti.init options stavatar_ti started Taichi with (environment and explicit ones)."""
    return dict(_state["options"])


def check_cuda_index(device: torch.device, what: str) -> None:
    """Raise a ValueError naming `what` if `device` is a CUDA device other than index 0.

    Taichi 1.7.4's CUDA backend always uses device 0 (select the GPU with CUDA_VISIBLE_DEVICES).
    """
    if device.type == "cuda" and device.index not in (None, 0):
        raise ValueError(f"{what}: on {device}, but Taichi's CUDA backend always runs on cuda:0; move the "
                         "tensors to cuda:0 (choose the GPU with CUDA_VISIBLE_DEVICES)")


def check_default_stream(stream, what: str) -> None:
    """Raise a ValueError naming `what` unless `stream` (a torch.cuda.Stream) is the legacy default
    stream (`cuda_stream == 0`), the only one Taichi 1.7.4 launches on."""
    if getattr(stream, "cuda_stream", 0) != 0:
        raise ValueError(f"{what}: the current torch CUDA stream is {stream}, but Taichi launches on the legacy "
                         "default stream; call stavatar_ti outside `with torch.cuda.stream(...)`")


def ensure_device(device: torch.device, what: str = "tensors") -> None:
    """Initialise Taichi for `device` if needed and check that it matches the running arch.

    Raises:
        ValueError: the device is neither CPU nor CUDA, a CUDA device other than cuda:0, the
            current torch CUDA stream is not the default one, or Taichi runs on the other arch.
        BackendError: from `init`.
    """
    if device.type not in ("cpu", "cuda"):
        raise ValueError(f"{what}: device {device} is not supported (use cpu or cuda)")
    check_cuda_index(device, what)
    name = _ARCHS[device.type]
    with _lock:
        if _state["arch"] is None:
            init(device.type)
        elif _state["arch"] != name:
            raise ValueError(f"{what}: on {device.type}, but Taichi was initialised for {_state['arch']} "
                             f"in this process; keep all rendering on one device per process")
    if name == "cuda":  # a few microseconds, CUDA only
        check_default_stream(torch.cuda.current_stream(device), what)


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
