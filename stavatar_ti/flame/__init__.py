"""Head models: the FLAME layer (`FlameModel`), per-triangle frames, proxy teeth, safe loading."""

from .frames import TriangleFrames, triangle_frames
from .loading import FlameFileError, safe_load_pickle
from .model import FlameModel

__all__ = ["FlameModel", "FlameFileError", "TriangleFrames", "safe_load_pickle", "triangle_frames"]
