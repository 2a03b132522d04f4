"""sha256 of files (downloads and caches are checked against pinned digests)."""

from __future__ import annotations

import hashlib
from pathlib import Path


def sha256_file(path) -> str:
    """Hex sha256 of the file at `path`, read in 1 MiB blocks. Raises OSError if it cannot be read."""
    h = hashlib.sha256()
    with open(Path(path), "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()
