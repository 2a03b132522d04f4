"""Head models: the FLAME layer (`FlameModel`), per-triangle frames, proxy teeth, safe loading."""

from .frames import TriangleFrames, triangle_frames
from .loading import FlameFileError, load_flame_masks, safe_load_pickle
from .model import FlameModel
from .open_head import make_open_head

__all__ = ["FlameModel", "FlameFileError", "TriangleFrames", "load_flame_masks", "make_open_head", "safe_load_pickle", "triangle_frames"]
