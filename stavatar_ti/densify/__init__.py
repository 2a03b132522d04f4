"""Adaptive density control: primitives with optimizer surgery, vanilla 3DGS ADC, Temporal ADC."""

from .ops import append, clone_params, prune, scene_extent_from_cameras, split_params
from .vanilla import Densifier, VanillaADC

__all__ = ["Densifier", "VanillaADC", "append", "clone_params", "prune", "scene_extent_from_cameras",
           "split_params"]
