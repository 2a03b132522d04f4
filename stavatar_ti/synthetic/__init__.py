"""Synthetic monocular talking-head sequences (ground truth without licensed assets).

    generate_sequence(out_dir, frames=300, size=256, seed=0, head_model=None, **options) -> Path
    ensure_demo_sequence(out_dir) -> Path        # used by ``python scripts/train.py`` with no --data
    build_sequence(...) -> SyntheticSequence     # the same, in memory (render frames, true vertices)

The procedural open head (`stavatar_ti.flame.open_head`) is rendered by the independent mesh
renderer with a procedural UV texture (`texture`), driven by a smooth talking motion (`motion`);
what is written as FLAME parameters is a simulated tracker's estimate (least-squares projection of
the true deformation onto the blendshapes, plus noise).  See `generate` for the files.
"""

from .generate import (DEMO_SETTINGS, Camera, SyntheticSequence, build_sequence, ensure_demo_sequence,
                       generate_sequence, make_camera)
from .head import SyntheticHead, load_head
from .motion import (MOUTH_OPEN_JAW, Motion, TrackerNoise, make_motion, make_nonrigid_fields, mouth_open,
                     simulate_tracker)
from .texture import Appearance, bake_appearance, wrinkle_weights

__all__ = [
    "Appearance", "Camera", "DEMO_SETTINGS", "MOUTH_OPEN_JAW", "Motion", "SyntheticHead", "SyntheticSequence",
    "TrackerNoise", "bake_appearance", "build_sequence", "ensure_demo_sequence", "generate_sequence", "load_head",
    "make_camera", "make_motion", "make_nonrigid_fields", "mouth_open", "simulate_tracker", "wrinkle_weights",
]
