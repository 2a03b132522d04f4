"""Argument checks that turn bad input into one-line ValueErrors naming the argument."""

from __future__ import annotations

import operator
from typing import Sequence

import torch


def check_tensor(x, name: str, shape: Sequence[int | None], dtype: torch.dtype = torch.float32,
                 device: torch.device | None = None) -> torch.Tensor:
    """Check type, shape (None = any size), dtype and device of `x`; return it.

    Raises:
        ValueError: naming `name` and what is wrong.
    """
    if not isinstance(x, torch.Tensor):
        raise ValueError(f"{name}: expected a torch.Tensor, got {type(x).__name__}")
    want = "[" + ",".join("*" if s is None else str(s) for s in shape) + "]"
    if x.ndim != len(shape) or any(s is not None and s != d for s, d in zip(shape, x.shape)):
        raise ValueError(f"{name}: expected shape {want}, got {list(x.shape)}")
    if x.dtype != dtype:
        raise ValueError(f"{name}: expected dtype {dtype}, got {x.dtype}")
    if device is not None and x.device != device:
        raise ValueError(f"{name}: on {x.device}, but the other inputs are on {device}")
    return x


def check_finite(named: dict) -> None:
    """Raise a ValueError naming the first tensor in `named` holding NaN or inf.

    One host sync for the common all-finite case, whatever the number of tensors.
    """
    tensors = [t for t in named.values() if t is not None and t.numel() > 0]
    if not tensors:
        return
    flags = torch.stack([torch.isfinite(t.detach()).all() for t in tensors])
    if bool(flags.all()):
        return
    for name, t in named.items():
        if t is not None and t.numel() > 0 and not bool(torch.isfinite(t.detach()).all()):
            raise ValueError(f"{name}: contains NaN or inf")


def check_positive_int(value, name: str) -> int:
    """Return `value` as an int if it is a positive integer (int, numpy integer), else ValueError."""
    if isinstance(value, bool):
        raise ValueError(f"{name}: expected a positive int, got {value!r}")
    try:
        value = operator.index(value)
    except TypeError:
        raise ValueError(f"{name}: expected a positive int, got {value!r}") from None
    if value <= 0:
        raise ValueError(f"{name}: expected a positive int, got {value}")
    return value


def check_float_tensor(x, name: str, shape) -> torch.Tensor:
    """Check that `x` is a floating tensor of `shape` (None = any size). Raise ValueError naming `name`."""
    if not isinstance(x, torch.Tensor):
        raise ValueError(f"{name}: expected a torch.Tensor, got {type(x).__name__}")
    want = "[" + ",".join("*" if s is None else str(s) for s in shape) + "]"
    if x.ndim != len(shape) or any(s is not None and s != d for s, d in zip(shape, x.shape)):
        raise ValueError(f"{name}: expected shape {want}, got {list(x.shape)}")
    if not x.is_floating_point():
        raise ValueError(f"{name}: expected a floating-point tensor, got {x.dtype}")
    return x
