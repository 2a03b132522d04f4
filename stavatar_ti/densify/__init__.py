"""Adaptive density control: primitives with optimizer surgery, vanilla 3DGS ADC, Temporal ADC."""

from .ops import (append, apply_densify, clone_params, prune, scene_extent_from_cameras, scene_extent_from_vertices,
                  split_params)
from .vanilla import Densifier, Step, VanillaADC, ndc_grad_norm, shuffled_epochs

__all__ = ["Densifier", "Step", "VanillaADC", "append", "apply_densify", "clone_params", "ndc_grad_norm", "prune",
           "scene_extent_from_cameras", "scene_extent_from_vertices", "shuffled_epochs", "split_params"]
