"""The open head model: a procedural, deterministic human head in the FLAME model format.

The real FLAME files are licence-restricted and never shipped.  This package builds, from code alone
(no data files), a plausible adult head with neck that has everything the rest of the project
takes from a FLAME model: template, identity shape and expression blendshapes, pose correctives,
joint regressor, kinematic tree, skinning weights, a UV layout, the 15 + 15 outer-lip-ring vertices
the proxy teeth are built from, and the four region vertex sets of the local decoder.  It is the
default head for demos, synthetic data and tests.

    make_open_head(n_shape=10, seed=0) -> dict[str, np.ndarray]

Conventions (FLAME's)
---------------------
* Metres; +y up, +z out of the face (the face looks toward +z), +x toward the subject's left.
  Chin to crown 0.23 m, 0.15 m wide; the head centre is near the origin and the neck is cut
  flat at y = -0.155 (the cut is closed by a flat cap, so the skin is watertight).
* Faces are counter-clockwise seen from outside (outward normals by the right-hand rule).  The skin
  (head, neck, cap, mouth cavity, the hidden eyelid linings) is one closed, edge-manifold,
  consistently oriented surface; each eyeball is a separate closed sphere.
* Joints (FLAME order): 0 global (base of the neck), 1 neck (top of the neck), 2 jaw (hinge in front
  of the ears), 3 left eye, 4 right eye ("left" = the subject's left = +x).
  ``kintree_table`` = [[-1, 0, 1, 1, 1], [0, 1, 2, 3, 4]].
* ``shapedirs`` [V,3,n_shape+n_expr]: the first ``shape_basis_size`` (= n_shape) columns are
  identity shape, the rest expression blendshapes (names in ``shape_names`` /
  ``expression_names``).  Each is a full effect at coefficient 1 (about 1 cm for shape).
* ``posedirs`` [V,3,36] is all zeros: no pose correctives (FLAME's layout, so the LBS code path is
  the same; plain LBS on these weights already opens the jaw and turns the head cleanly).
* UVs (``vt`` [T,2], ``ft`` [F,3]) are in OBJ convention (v up) inside [0,1] x [0,0.95): the strip
  v >= 0.95 is left free for the proxy teeth (``stavatar_ti.flame.teeth``).  Islands: the skin as a
  cylindrical unwrap with the seam at the back of the head (the face in the middle, seen as in a
  photograph), and discs for each eyeball, the mouth cavity, the eyelid linings and the neck cap.
  No two UV triangles overlap and all are counter-clockwise.
* ``lip_ring_upper`` / ``lip_ring_lower`` [15]: the rows of the outer lip surface next to the lip
  line, paired column by column from the subject's right corner to the left.  The lips themselves
  touch at rest (separate upper / lower vertex rows at the same place); the rings sit 2-3 mm above
  and below that line, so the mean ring gap (about 5.5 mm) gives teeth of a realistic size with the
  GaussianAvatars / VHAP construction (``stavatar_ti.flame.teeth``): their biting edges lie in the
  mouth cavity, front and back; parts of the root rows sit in the gums (inside the head).
* Regions: ``region_eye_region`` includes the eyeballs and the lid linings, ``region_lips`` the
  first two rings of the mouth cavity (the inner lip surfaces).

How it is made
--------------
The skin is a signed-distance sculpture (smooth unions of ellipsoids and capsules: cranium, face,
jaw, chin, neck, nose, brow ridge, cheekbones, eye sockets with lid spheres over the eyeballs, lips
as a displacement with a crease at the lip line, simple ears).  A structured grid of rays is cast
onto it, taking the outermost hit: columns are half-planes through a vertical axis (dense on the
face, coarser behind, thinned out near the crown), rows sweep each column from the neck cut to the
crown (rays from behind the mouth for the neck, chin and lips, parallel rays rising over the
nose, eyes and brows, then rays fanning over the cranium).  The eyelid openings are cut along one
grid row whose neighbours are re-warped so that the upper and lower lid margins follow an almond
contour on the lid sphere; the lips are cut along the row of the lip line.  Behind the lip cut
hangs a closed mouth-cavity pocket (room for the proxy teeth), behind each lid cut a short lining
that ends inside the eyeball.  Expression blendshapes are analytic, compactly supported
displacement fields (mouth, cheeks, brows) or differences of re-warped lid rows (blinks, squint,
eye_wide); identity components are analytic fields.  The eyeballs (12 mm radius) only ever move
rigidly.  Everything is vectorised numpy; a build takes well under a second and is cached (every
call returns fresh copies).

The ``seed`` only drives the extra identity components beyond the 16 designed ones (random smooth
symmetric bumps along the normals, used when ``n_shape > 16``); everything else ignores it.

Modules
-------
``sculpt`` (landmarks, the signed-distance sculpture, ray casting), ``ray_grid`` (rows, columns and
the eyelid contour of the ray grid), ``builder`` (the mesh: skin, mouth pocket, lid linings,
eyeballs), ``uvs`` (UV layout), ``masks`` (soft per-vertex masks), ``rigging`` (skinning weights,
joint regressor, regions), ``blendshapes`` (expressions, identity shapes); this file assembles
them (`make_open_head`, cached).
"""

from __future__ import annotations

import numpy as np

from .blendshapes import EXPRESSION_NAMES, NUM_DESIGNED_SHAPES, SHAPE_NAMES, _expressions, _shapes
from .builder import _Builder
from .masks import _mouth_side
from .ray_grid import JF, MOUTH_HALF, RING_ROW
from .rigging import _joint_regressor, _regions, _skinning_weights
from .uvs import _build_uvs

__all__ = ["make_open_head", "EXPRESSION_NAMES", "SHAPE_NAMES", "NUM_DESIGNED_SHAPES"]

MAX_SHAPE = 300


def _template():
    """Everything that does not depend on n_shape / seed (cached)."""
    global _CACHE
    if _CACHE is None:
        B = _Builder()
        V = B.V
        vt, ft, _ = _build_uvs(B)
        s_up, xc = _mouth_side(B, V)
        cols = np.arange(JF - MOUTH_HALF + 1, JF + MOUTH_HALF)
        _CACHE = dict(
            builder=B,
            v_template=V,
            f=B.F,
            vt=vt,
            ft=ft,
            weights=_skinning_weights(B, V, s_up, xc),
            J_regressor=_joint_regressor(B, V),
            expr=_expressions(B, V, s_up),
            lip_ring_upper=B.ida[B.i_m + RING_ROW, cols],
            lip_ring_lower=B.idb[B.i_m - RING_ROW, cols],
            regions=_regions(B, V),
        )
        expr = _CACHE["expr"]
        # evaluation regions (stavatar_ti.training.regions): the mouth cavity behind the lip line,
        # inner lip surfaces included, and the lid skin a blink moves by more than 1 mm
        blink = [EXPRESSION_NAMES.index(n) for n in ("blink_left", "blink_right")]
        moved = np.linalg.norm(expr[:, :, blink], axis=1).max(1) > 1e-3
        _CACHE["regions"]["mouth_interior"] = np.unique(np.concatenate([B.mouth_loop, B.pocket_ids])).astype(np.int64)
        _CACHE["regions"]["eyelids"] = np.nonzero(moved)[0].astype(np.int64)
    return _CACHE


_CACHE = None


def make_open_head(n_shape: int = 10, seed: int = 0) -> dict:
    """Build the open head model (FLAME format, see the module docstring).

    Args:
        n_shape: number of identity shape components, 0 .. 300.  The first 16 are designed
            (``SHAPE_NAMES``); further ones are seeded random smooth symmetric bumps.
        seed: seeds only those extra random components.
    Returns:
        dict of numpy arrays: v_template [V,3] float64 (metres), f [F,3] int64, shapedirs
        [V,3,n_shape+16] float64, shape_basis_size int64 scalar (= n_shape), shape_names /
        expression_names (unicode), posedirs [V,3,36] float64 (zeros), J_regressor [5,V] float64,
        kintree_table [2,5] int64, weights [V,5] float64, vt [T,2] float64, ft [F,3] int64,
        lip_ring_upper / lip_ring_lower [15] int64, region_eye_region / region_nose / region_lips /
        region_forehead int64 vertex ids (the local decoder's), region_mouth_interior /
        region_eyelids int64 vertex ids (evaluation: the mouth-cavity pocket with the lip line, the
        lid skin moved > 1 mm by a blink).
    Raises:
        ValueError: n_shape not an integer in 0 .. 300, or seed not a non-negative integer.
    """
    if isinstance(n_shape, bool) or not isinstance(n_shape, (int, np.integer)):
        raise ValueError(f"n_shape: expected an integer, got {n_shape!r}")
    if not 0 <= int(n_shape) <= MAX_SHAPE:
        raise ValueError(f"n_shape: expected 0 .. {MAX_SHAPE}, got {n_shape}")
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or int(seed) < 0:
        raise ValueError(f"seed: expected a non-negative integer, got {seed!r}")
    n_shape = int(n_shape)
    T = _template()
    B, V = T["builder"], T["v_template"]
    shape = _shapes(B, V, n_shape, int(seed))
    names = list(SHAPE_NAMES[:n_shape]) + [f"random_{k}" for k in range(n_shape - len(SHAPE_NAMES))]
    out = {
        "v_template": V.copy(),
        "f": T["f"].copy(),
        "shapedirs": np.concatenate([shape, T["expr"]], axis=2),
        "shape_basis_size": np.array(n_shape, dtype=np.int64),
        "shape_names": np.array(names, dtype=np.str_) if names else np.zeros(0, dtype="<U1"),
        "expression_names": np.array(EXPRESSION_NAMES, dtype=np.str_),
        "posedirs": np.zeros((len(V), 3, 36)),
        "J_regressor": T["J_regressor"].copy(),
        "kintree_table": np.array([[-1, 0, 1, 1, 1], [0, 1, 2, 3, 4]], dtype=np.int64),
        "weights": T["weights"].copy(),
        "vt": T["vt"].copy(),
        "ft": T["ft"].copy(),
        "lip_ring_upper": np.asarray(T["lip_ring_upper"], np.int64).copy(),
        "lip_ring_lower": np.asarray(T["lip_ring_lower"], np.int64).copy(),
    }
    for k, v in T["regions"].items():
        out["region_" + k] = v.copy()
    return out
