"""Reading FLAME-format head models safely: restricted unpickling, .npz, and OBJ UV layouts.

FLAME 2020 `generic_model.pkl` and FLAME 2023 `flame2023.pkl` are Python-2 era pickles holding
numpy arrays, a scipy.sparse `J_regressor` and chumpy `Ch` objects (which break on modern numpy).
`safe_load_pickle` never runs code from the file: its unpickler resolves only an allow-list of
numpy / scipy.sparse / builtins names, and replaces chumpy and scipy.sparse classes by inert
records whose state is converted to plain numpy / scipy arrays afterwards. Anything else in the
file (e.g. `os.system`, `builtins.eval`) is refused with a `FlameFileError`.
"""

from __future__ import annotations

import copyreg
import pickle
import zipfile
from pathlib import Path

import numpy as np
import scipy.sparse

REQUIRED_KEYS = ("v_template", "f", "shapedirs", "posedirs", "J_regressor", "weights", "kintree_table")


class FlameFileError(ValueError):
    """A head-model file that is unreadable, unsafe, or not a FLAME-format model."""


class _Record:
    """Inert stand-in for a chumpy / scipy.sparse object: keeps the pickled state, runs nothing."""

    qualname = "?"

    def __init__(self, *args):
        self.args = args
        self.state = None

    def __setstate__(self, state):
        self.state = state


def _record_class(qualname: str) -> type:
    return type("_Record", (_Record,), {"qualname": qualname})


def _numpy_globals() -> dict:
    """The numpy names an array pickle refers to, under numpy 1 and numpy 2 module paths."""
    try:
        from numpy._core import multiarray, numeric
    except ImportError:  # numpy < 2
        from numpy.core import multiarray, numeric
    table = {("numpy", "ndarray"): np.ndarray, ("numpy", "dtype"): np.dtype}
    for prefix in ("numpy.core", "numpy._core"):
        table[(f"{prefix}.multiarray", "_reconstruct")] = multiarray._reconstruct
        table[(f"{prefix}.multiarray", "scalar")] = multiarray.scalar
        table[(f"{prefix}.numeric", "_frombuffer")] = numeric._frombuffer
    return table


def _latin1_encode(text, encoding="latin1"):
    """Python 3 writes bytes in protocol-2 pickles as _codecs.encode(str, 'latin1'); nothing else."""
    if encoding not in ("latin1", "latin-1") or not isinstance(text, str):
        raise pickle.UnpicklingError(f"refusing to load _codecs.encode with encoding {encoding!r}")
    return text.encode("latin1")


_NUMPY_GLOBALS = _numpy_globals()
_BUILTINS = {"object": object, "set": set, "frozenset": frozenset, "list": list, "dict": dict, "tuple": tuple}
_SPARSE = {"csc_matrix", "csr_matrix", "coo_matrix"}


class _RestrictedUnpickler(pickle.Unpickler):
    def find_class(self, module: str, name: str):
        if (module, name) in _NUMPY_GLOBALS:
            return _NUMPY_GLOBALS[(module, name)]
        if (module, name) in {("copy_reg", "_reconstructor"), ("copyreg", "_reconstructor")}:
            return copyreg._reconstructor  # only ever receives classes this method returned
        if (module, name) == ("_codecs", "encode"):
            return _latin1_encode
        if module in ("__builtin__", "builtins") and name in _BUILTINS:
            return _BUILTINS[name]
        if module == "chumpy" or module.startswith("chumpy."):
            return _record_class(f"{module}.{name}")
        if module.startswith("scipy.sparse") and name in _SPARSE:
            return _record_class(f"scipy.sparse.{name}")
        raise pickle.UnpicklingError(f"refusing to load {module}.{name}")


def _to_plain(obj, file: Path, key: str):
    """Convert records (chumpy arrays, sparse matrices) to numpy / scipy values."""
    if isinstance(obj, _Record):
        state = obj.state if isinstance(obj.state, dict) else {}
        state = {(k.decode() if isinstance(k, bytes) else k): v for k, v in state.items()}
        if obj.qualname.startswith("chumpy"):
            if "x" not in state:
                raise FlameFileError(f"{file}: key {key!r} is a chumpy {obj.qualname} without array data")
            return _to_plain(state["x"], file, key)
        fmt = obj.qualname.rsplit(".", 1)[1]
        shape = tuple(state.get("_shape", state.get("shape", ())))
        try:
            if fmt == "coo_matrix":
                return scipy.sparse.coo_matrix((state["data"], (state["row"], state["col"])), shape=shape)
            cls = scipy.sparse.csc_matrix if fmt == "csc_matrix" else scipy.sparse.csr_matrix
            return cls((state["data"], state["indices"], state["indptr"]), shape=shape)
        except (KeyError, ValueError, TypeError) as exc:
            raise FlameFileError(f"{file}: key {key!r} is a malformed sparse matrix ({exc})") from None
    return obj


def safe_load_pickle(path: str | Path) -> dict:
    """Load a FLAME-format pickle without executing code from it.

    Args:
        path: the .pkl file (FLAME 2020/2023/2023 Open, or any pickle of the same keys).
    Returns:
        dict of key -> numpy array / scipy.sparse matrix / str.
    Raises:
        FlameFileError: unreadable, not a dict, or containing anything outside the allow-list
            (numpy arrays, scipy.sparse csc/csr/coo, chumpy arrays, builtin containers).
    """
    path = Path(path)
    try:
        with open(path, "rb") as fh:
            data = _RestrictedUnpickler(fh, encoding="latin1").load()
    except pickle.UnpicklingError as exc:
        raise FlameFileError(f"{path}: not a safe FLAME pickle ({exc})") from None
    except (OSError, EOFError, ValueError, TypeError, AttributeError, IndexError, KeyError) as exc:
        raise FlameFileError(f"{path}: cannot read pickle ({type(exc).__name__}: {exc})") from None
    if not isinstance(data, dict):
        raise FlameFileError(f"{path}: expected a dict of arrays, got {type(data).__name__}")
    return {(k.decode() if isinstance(k, bytes) else str(k)): _to_plain(v, path, str(k)) for k, v in data.items()}


def load_npz(path: str | Path) -> dict:
    """Load an .npz head model (no pickles allowed). Raises FlameFileError if unreadable."""
    path = Path(path)
    try:
        with np.load(path, allow_pickle=False) as z:
            return {k: z[k] for k in z.files}
    except (OSError, ValueError, zipfile.BadZipFile, EOFError) as exc:
        raise FlameFileError(f"{path}: cannot read npz ({exc})") from None


def read_obj_uvs(path: str | Path) -> tuple[np.ndarray, np.ndarray]:
    """UV layout of an OBJ (e.g. FLAME's head_template_mesh.obj).

    Returns:
        vt [T,2] float64 (OBJ convention, v up) and ft [F,3] int64 (0-based), triangles only.
    Raises:
        FlameFileError: unreadable file, no `vt` lines, faces without UV indices or non-triangles.
    """
    path = Path(path)
    vt, ft = [], []
    try:
        lines = path.read_text(encoding="utf-8", errors="replace").splitlines()
    except OSError as exc:
        raise FlameFileError(f"{path}: cannot read OBJ ({exc})") from None
    for lineno, line in enumerate(lines, 1):
        parts = line.split()
        if not parts:
            continue
        if parts[0] == "vt":
            vt.append([float(parts[1]), float(parts[2])])
        elif parts[0] == "f":
            if len(parts) != 4 or any("/" not in p or not p.split("/")[1] for p in parts[1:]):
                raise FlameFileError(f"{path}:{lineno}: expected a triangle with UV indices (v/vt)")
            ft.append([int(p.split("/")[1]) - 1 for p in parts[1:]])
    if not vt or not ft:
        raise FlameFileError(f"{path}: no UV coordinates (vt) or faces found")
    return np.asarray(vt, dtype=np.float64), np.asarray(ft, dtype=np.int64)


def load_flame_masks(path: str | Path, num_vertices: int | None = None) -> dict[str, np.ndarray]:
    """FLAME's vertex-region masks (`FLAME_masks.pkl` from the FLAME website), read with the restricted
    unpickler: a dict of region name (e.g. 'eye_region', 'nose', 'lips', 'forehead', 'face', 'scalp',
    'neck', 'left_ear', 'right_eyeball', 'boundary') -> vertex ids.

    Args:
        path: the .pkl file. num_vertices: when given, every id must lie in [0, num_vertices).
    Returns:
        dict name -> [K] int64 unique sorted vertex ids.
    Raises:
        FlameFileError: unreadable or unsafe pickle, not a dict, a value that is not a 1-D array of
            non-negative integer ids, or an id out of range (the message names the file and key).
    """
    path = Path(path)
    if not path.is_file():
        raise FlameFileError(f"{path}: no such file")
    data = safe_load_pickle(path)
    out = {}
    for name, ids in data.items():
        arr = np.asarray(ids)
        if arr.ndim != 1 or not (np.issubdtype(arr.dtype, np.integer) or arr.size == 0):
            raise FlameFileError(f"{path}: key {name!r} is not a 1-D array of vertex ids "
                                 f"(got {arr.dtype} {list(arr.shape)})")
        arr = np.unique(arr.astype(np.int64))
        if arr.size and (arr[0] < 0 or (num_vertices is not None and arr[-1] >= num_vertices)):
            raise FlameFileError(f"{path}: key {name!r} has vertex ids outside [0, {num_vertices})")
        out[name] = arr
    return out


def load_model_file(path: str | Path) -> dict:
    """Read a FLAME-format model (.pkl or .npz) and check it has the FLAME keys.

    Raises:
        FlameFileError: missing file, unknown extension, unsafe pickle, or missing keys.
    """
    path = Path(path)
    if not path.is_file():
        raise FlameFileError(f"{path}: no such file")
    if path.suffix == ".npz":
        data = load_npz(path)
    elif path.suffix in (".pkl", ".pickle"):
        data = safe_load_pickle(path)
    else:
        raise FlameFileError(f"{path}: expected a .pkl or .npz FLAME model")
    missing = [k for k in REQUIRED_KEYS if k not in data]
    if missing:
        raise FlameFileError(f"{path}: not a FLAME model, missing keys {missing}")
    return data
