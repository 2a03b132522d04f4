"""Tests of the procedural open head model (stavatar_ti/flame/open_head/).

Everything here is plain numpy: mesh topology and orientation, the UV layout (a coverage
rasterisation finds overlapping UV triangles), joints, skinning (a small FLAME-style LBS),
blendshapes and the lip rings the proxy teeth are built from.
"""

import time

import numpy as np
import pytest

from stavatar_ti.flame.open_head import EXPRESSION_NAMES, SHAPE_NAMES, make_open_head


@pytest.fixture(scope="module")
def head():
    return make_open_head()


def _col(head, name):
    names = list(head["expression_names"])
    return head["shapedirs"][:, :, int(head["shape_basis_size"]) + names.index(name)]


def _rodrigues(axis_angle):
    a = np.asarray(axis_angle, float)
    th = np.linalg.norm(a)
    if th < 1e-12:
        return np.eye(3)
    k = a / th
    K = np.array([[0, -k[2], k[1]], [k[2], 0, -k[0]], [-k[1], k[0], 0]])
    return np.eye(3) + np.sin(th) * K + (1 - np.cos(th)) * K @ K


def _lbs(head, pose, v=None):
    """FLAME LBS without pose correctives; pose [5,3] axis-angle per joint."""
    v = head["v_template"] if v is None else v
    J = head["J_regressor"] @ v
    parents = head["kintree_table"][0]
    G = []
    for j in range(5):
        T = np.eye(4)
        T[:3, :3] = _rodrigues(pose[j])
        T[:3, 3] = J[j] - (J[parents[j]] if parents[j] >= 0 else 0)
        G.append(T if parents[j] < 0 else G[parents[j]] @ T)
    A = np.stack(G)
    A[:, :3, 3] -= np.einsum("jab,jb->ja", A[:, :3, :3], J)
    T = np.einsum("vj,jab->vab", head["weights"], A)
    return np.einsum("vab,vb->va", T[:, :3, :3], v) + T[:, :3, 3]


def _components(F, n):
    parent = np.arange(n)

    def find(a):
        while parent[a] != a:
            parent[a] = parent[parent[a]]
            a = parent[a]
        return a
    for a, b, c in F:
        for u, w in ((a, b), (b, c)):
            ru, rw = find(u), find(w)
            if ru != rw:
                parent[ru] = rw
    return np.array([find(i) for i in range(n)])


# -- determinism, keys, shapes, dtypes ---------------------------------------------------------

def test_deterministic_fast_and_seed_only_touches_extra_components(head):
    import stavatar_ti.flame.open_head as oh
    saved = oh._CACHE
    oh._CACHE = None                                   # a full rebuild from scratch
    try:
        t = time.perf_counter()
        a = make_open_head()
        elapsed = time.perf_counter() - t
    finally:
        oh._CACHE = saved
    assert elapsed < 6.0                                 # about 0.7 s on one core
    assert a.keys() == head.keys()
    for k in a:
        np.testing.assert_array_equal(a[k], head[k])
    c = make_open_head(seed=7)
    np.testing.assert_array_equal(a["shapedirs"], c["shapedirs"])
    big0, big1 = make_open_head(n_shape=20, seed=0), make_open_head(n_shape=20, seed=1)
    np.testing.assert_array_equal(big0["shapedirs"][..., :16], big1["shapedirs"][..., :16])
    assert not np.allclose(big0["shapedirs"][..., 16:20], big1["shapedirs"][..., 16:20])
    np.testing.assert_array_equal(big0["shapedirs"][..., :10], a["shapedirs"][..., :10])
    np.testing.assert_array_equal(big0["shapedirs"][..., 20:], a["shapedirs"][..., 10:])
    assert list(big0["shape_names"][16:]) == [f"random_{k}" for k in range(4)]
    # the returned arrays are copies: editing them does not change the next model
    a["v_template"][:] = 0.0
    assert np.abs(make_open_head()["v_template"]).max() > 0.1


def test_keys_shapes_and_dtypes(head):
    V = head["v_template"].shape[0]
    F = head["f"].shape[0]
    n_shape, n_expr = 10, len(EXPRESSION_NAMES)
    assert 3000 <= V <= 6000
    expect = {
        "v_template": (np.float64, (V, 3)),
        "f": (np.int64, (F, 3)),
        "shapedirs": (np.float64, (V, 3, n_shape + n_expr)),
        "shape_basis_size": (np.int64, ()),
        "posedirs": (np.float64, (V, 3, 36)),
        "J_regressor": (np.float64, (5, V)),
        "kintree_table": (np.int64, (2, 5)),
        "weights": (np.float64, (V, 5)),
        "vt": (np.float64, (head["vt"].shape[0], 2)),
        "ft": (np.int64, (F, 3)),
        "lip_ring_upper": (np.int64, (15,)),
        "lip_ring_lower": (np.int64, (15,)),
    }
    for k, (dt, shp) in expect.items():
        assert head[k].dtype == dt, k
        assert head[k].shape == shp, k
    assert int(head["shape_basis_size"]) == n_shape
    assert head["expression_names"].dtype.kind == "U" and head["shape_names"].dtype.kind == "U"
    assert list(head["expression_names"]) == list(EXPRESSION_NAMES)
    assert list(head["shape_names"]) == list(SHAPE_NAMES[:n_shape])
    assert n_expr >= 12
    np.testing.assert_array_equal(head["kintree_table"], [[-1, 0, 1, 1, 1], [0, 1, 2, 3, 4]])
    for k in ("region_eye_region", "region_nose", "region_lips", "region_forehead"):
        r = head[k]
        assert r.dtype == np.int64 and r.ndim == 1 and len(r) > 20
        assert len(np.unique(r)) == len(r) and r.min() >= 0 and r.max() < V
    for k, v in head.items():
        if v.dtype.kind == "f":
            assert np.isfinite(v).all(), k


def test_n_shape_variants_and_bad_input():
    for n in (0, 3, 16, 40):
        h = make_open_head(n_shape=n)
        assert h["shapedirs"].shape[2] == n + len(EXPRESSION_NAMES)
        assert int(h["shape_basis_size"]) == n and len(h["shape_names"]) == n
    for bad in (-1, 301, 2.5, "10", True):
        with pytest.raises(ValueError, match="^n_shape"):
            make_open_head(n_shape=bad)
    for bad in (-1, 1.5, None):
        with pytest.raises(ValueError, match="^seed"):
            make_open_head(seed=bad)


def test_size_and_placement(head):
    v = head["v_template"]
    assert 0.14 <= np.ptp(v[:, 0][v[:, 1] > -0.02]) <= 0.19          # width incl. ears
    assert abs(v[:, 1].min() + 0.155) < 1e-9                         # neck cut
    crown = v[:, 1].max()
    chin = v[(v[:, 2] > 0.05) & (np.abs(v[:, 0]) < 0.02)][:, 1].min()
    assert 0.21 <= crown - chin <= 0.25
    assert abs(v[:, 0].mean()) < 1e-9                                # mirror symmetric
    assert abs(v[:, 2].max() + v[:, 2].min()) < 0.03                 # centred front to back
    assert abs(v[:, 0].max() + v[:, 0].min()) < 1e-9


# -- topology ------------------------------------------------------------------------------------

def test_faces_valid_closed_and_outward(head):
    v, f = head["v_template"], head["f"]
    assert f.min() >= 0 and f.max() < len(v)
    assert len(np.unique(np.arange(len(v)))) == len(np.unique(f))   # every vertex is used
    a, b, c = v[f[:, 0]], v[f[:, 1]], v[f[:, 2]]
    n = np.cross(b - a, c - a)
    area = 0.5 * np.linalg.norm(n, axis=1)
    assert area.min() > 1e-9                                        # 0.001 mm^2
    assert len({tuple(sorted(t)) for t in f.tolist()}) == len(f)   # no duplicate faces
    # closed and consistently oriented: each directed edge once, its reverse once
    e = np.concatenate([f[:, [0, 1]], f[:, [1, 2]], f[:, [2, 0]]])
    key = e[:, 0] * len(v) + e[:, 1]
    rkey = e[:, 1] * len(v) + e[:, 0]
    assert len(np.unique(key)) == len(key)
    assert np.isin(rkey, key).all()
    # every closed component encloses positive volume (outward normals)
    comp = _components(f, len(v))
    vol = np.einsum("ij,ij->i", a, np.cross(b, c)) / 6.0
    roots = np.unique(comp)
    assert len(roots) == 3                                          # skin shell + 2 eyeballs
    vols = {r: vol[comp[f[:, 0]] == r].sum() for r in roots}
    big = max(vols, key=vols.get)
    assert 0.0035 < vols[big] < 0.0065                             # head + neck, m^3
    for r in roots:
        if r != big:
            assert abs(vols[r] - 4 / 3 * np.pi * 0.012 ** 3) < 0.1 * 4 / 3 * np.pi * 0.012 ** 3
    # normals at the forehead and the nose tip point out of the face (+z)
    fn = n / np.linalg.norm(n, axis=1, keepdims=True)
    cen = (a + b + c) / 3
    tip = np.argmax(np.where(np.abs(cen[:, 0]) < 0.004, cen[:, 2], -1))
    assert fn[tip, 2] > 0.7
    fh = np.flatnonzero((np.abs(cen[:, 0]) < 0.01) & (np.abs(cen[:, 1] - 0.06) < 0.006) & (cen[:, 2] > 0.05))
    assert len(fh) and (fn[fh, 2] > 0.5).all()


# -- UVs -----------------------------------------------------------------------------------------

def _uv_coverage(vt, ft, res):
    """Number of UV triangles covering each texel centre (strictly inside), [res, res].

    Texel (row i, column j) has its centre at uv = ((j + 0.5) / res, (i + 0.5) / res).  Triangles
    are processed in batches of similar bounding-box size, each on a fixed window of texels."""
    count = np.zeros(res * res, np.int64)
    P = vt[ft] * res - 0.5                        # texel centres at integer coordinates
    lo = np.maximum(np.ceil(P.min(1)), 0).astype(np.int64)
    hi = np.minimum(np.floor(P.max(1)), res - 1).astype(np.int64)
    size = (hi - lo + 1).max(1)
    prev = 0
    for s in (2, 4, 8, 16, 32, 64, 128, 256, 512):
        sel = np.flatnonzero((size > prev) & (size <= s))
        prev = s
        if sel.size == 0:
            continue
        oy, ox = np.divmod(np.arange(s * s), s)
        xs = lo[sel, 0, None] + ox
        ys = lo[sel, 1, None] + oy
        (x0, y0), (x1, y1), (x2, y2) = (P[sel, k, :].T[:, :, None] for k in range(3))
        d = (x1 - x0) * (y2 - y0) - (x2 - x0) * (y1 - y0)
        w0 = ((x1 - xs) * (y2 - ys) - (x2 - xs) * (y1 - ys)) / d
        w1 = ((x2 - xs) * (y0 - ys) - (x0 - xs) * (y2 - ys)) / d
        inside = ((w0 > 1e-9) & (w1 > 1e-9) & (1 - w0 - w1 > 1e-9)
                  & (xs <= hi[sel, 0, None]) & (ys <= hi[sel, 1, None]))
        np.add.at(count, (ys * res + xs)[inside], 1)
    return count.reshape(res, res)


def test_uv_layout(head):
    vt, ft, v, f = head["vt"], head["ft"], head["v_template"], head["f"]
    assert ft.min() >= 0 and ft.max() < len(vt)
    assert (vt >= 0).all() and (vt <= 1).all()
    assert vt[:, 1].max() < 0.95                              # the teeth strip stays free
    a, b, c = vt[ft[:, 0]], vt[ft[:, 1]], vt[ft[:, 2]]
    uv_area = 0.5 * ((b[:, 0] - a[:, 0]) * (c[:, 1] - a[:, 1]) - (b[:, 1] - a[:, 1]) * (c[:, 0] - a[:, 0]))
    assert (uv_area > 0).all()                                # all counter-clockwise, none degenerate
    count = _uv_coverage(vt, ft, 512)
    assert count.max() == 1                                   # no two UV triangles overlap
    assert (count > 0).mean() > 0.5                           # and the layout uses the square
    # area proportional on the face (within a factor of ~2.5 either way of the median)
    p = v[f]
    area3 = 0.5 * np.linalg.norm(np.cross(p[:, 1] - p[:, 0], p[:, 2] - p[:, 0]), axis=1)
    cen = p.mean(1)
    n = np.cross(p[:, 1] - p[:, 0], p[:, 2] - p[:, 0])
    eyeball = (head["weights"][:, 3] == 1.0) | (head["weights"][:, 4] == 1.0)
    face = ((cen[:, 2] > 0.045) & (np.abs(cen[:, 1] + 0.01) < 0.06) & ~eyeball[f].any(1)
            & (n[:, 2] > 0.3 * np.linalg.norm(n, axis=1)))
    ratio = uv_area[face] / area3[face]
    lo, med, hi = np.percentile(ratio, [5, 50, 95])
    assert hi / med < 2.5 and med / lo < 2.5


# -- joints and skinning -------------------------------------------------------------------------

def test_weights_and_regressor(head):
    W, J = head["weights"], head["J_regressor"]
    assert (W >= 0).all() and np.allclose(W.sum(1), 1.0, atol=1e-12)
    assert (J >= 0).all() and np.allclose(J.sum(1), 1.0, atol=1e-12)


def test_joint_positions(head):
    J = head["J_regressor"] @ head["v_template"]
    root, neck, jaw, le, re = J
    assert abs(root[1] + 0.155) < 0.005 and abs(root[0]) < 1e-6
    assert root[1] < neck[1] < jaw[1] < le[1]
    assert abs(neck[0]) < 1e-6 and abs(jaw[0]) < 1e-6
    np.testing.assert_allclose(le * [-1, 1, 1], re, atol=1e-9)  # eyes symmetric, left = +x
    assert 0.025 < le[0] < 0.04 and le[2] > 0.04
    assert jaw[1] < le[1] - 0.02 and jaw[2] < le[2] - 0.03       # jaw below and behind the eyes
    v = head["v_template"]
    for k, j in ((3, le), (4, re)):                             # eyeballs sit on their joints
        ids = np.flatnonzero(head["weights"][:, k] == 1.0)
        r = np.linalg.norm(v[ids] - j, axis=1)
        assert len(ids) > 100 and np.allclose(r, r.mean(), atol=1e-9) and 0.011 < r.mean() < 0.013


def test_jaw_opens_the_mouth_and_keeps_the_cranium(head):
    pose = np.zeros((5, 3))
    pose[2, 0] = 0.3
    v0 = head["v_template"]
    v1 = _lbs(head, pose)
    up, lo = head["lip_ring_upper"], head["lip_ring_lower"]
    gap0 = np.linalg.norm(v0[up] - v0[lo], axis=1).mean()
    gap1 = np.linalg.norm(v1[up] - v1[lo], axis=1).mean()
    assert gap1 - gap0 > 0.01
    cranium = v0[:, 1] > 0.0
    assert head["weights"][cranium, 2].max() == 0.0
    assert np.abs(v1[cranium] - v0[cranium]).max() < 1e-12
    assert np.abs(v1[lo, 1] - v0[lo, 1]).min() > 0.008         # the whole lower lip goes down
    assert np.abs(v1[up] - v0[up]).max() < 1e-3                # the upper lip stays
    # identity pose is the identity
    np.testing.assert_allclose(_lbs(head, np.zeros((5, 3))), v0, atol=1e-12)
    # turning the head (neck joint) moves the cranium rigidly and leaves the neck base
    pose = np.zeros((5, 3))
    pose[1, 1] = 0.4
    v2 = _lbs(head, pose)
    base = v0[:, 1] < -0.15
    assert np.abs(v2[base] - v0[base]).max() < 1e-3
    assert np.abs(v2[cranium] - v0[cranium]).max() > 0.02


# -- lips ----------------------------------------------------------------------------------------

def test_lip_rings(head):
    v = head["v_template"]
    up, lo = head["lip_ring_upper"], head["lip_ring_lower"]
    assert len(set(up.tolist()) | set(lo.tolist())) == 30
    assert (v[up, 1] > v[lo, 1]).all()
    gap = np.linalg.norm(v[up] - v[lo], axis=1)
    assert 0.002 < gap.mean() < 0.008 and gap.max() < 0.009
    assert np.all(np.diff(v[up, 0]) > 0) and np.all(np.diff(v[lo, 0]) > 0)   # right -> left corner
    np.testing.assert_allclose(v[up, 0], v[lo, 0], atol=0.002)               # paired columns
    assert 0.035 < np.ptp(v[up, 0]) < 0.06
    # room behind the lips for teeth 1-2 cm deep (GaussianAvatars / VHAP construction): every
    # teeth vertex lies in the mouth cavity, i.e. outside the closed skin surface (winding ~ 0)
    teeth = _teeth_points(v[up], v[lo])
    depth = v[up, 2].mean() - teeth[:, 2].min()
    assert 0.01 < depth < 0.025
    skin = ~((head["weights"][:, 3] == 1.0) | (head["weights"][:, 4] == 1.0))
    f = head["f"][skin[head["f"]].all(1)]
    w = np.abs(_winding(v, f, teeth)).reshape(8, 15)
    assert w[[0, 2, 4, 6]].max() < 0.05                  # biting edges, front and back
    assert (w < 0.05).mean() > 0.8                        # roots may sit in the gums
    probes = np.array([[0.0, 0.0, 0.0], [0.0, -0.1, -0.02], [0.0, 0.0, 0.3]])
    np.testing.assert_allclose(_winding(v, f, probes), [1.0, 1.0, 0.0], atol=1e-6)


def _teeth_points(up, lo):
    """The 120 proxy-teeth vertices of the GaussianAvatars / VHAP recipe (stavatar_ti.flame.teeth)."""
    g = np.linalg.norm(up - lo, axis=1).mean()
    mid = 0.5 * (up + lo)
    mid[:, 1] = mid[:, 1].mean()
    mid[:, 2] -= 1.5 * g
    ey, ez = np.array([0.0, g, 0.0]), np.array([0.0, 0.0, g])
    ue = mid + 0.1 * ey
    ur = ue + 2.0 * ey
    le = mid - 0.1 * ey - 0.4 * ez
    lr = le - 2.0 * ey
    rows = [ue, ur, le, lr]
    return np.concatenate(rows + [r - ez for r in rows])


def _winding(v, f, q):
    """Generalised winding numbers of points q [Q,3] w.r.t. the triangle mesh (v, f)."""
    out = []
    for p in q:
        a, b, c = v[f[:, 0]] - p, v[f[:, 1]] - p, v[f[:, 2]] - p
        la, lb, lc = (np.linalg.norm(x, axis=1) for x in (a, b, c))
        det = np.einsum("ij,ij->i", a, np.cross(b, c))
        den = la * lb * lc + np.einsum("ij,ij->i", a, b) * lc + np.einsum("ij,ij->i", b, c) * la \
            + np.einsum("ij,ij->i", c, a) * lb
        out.append(2.0 * np.arctan2(det, den).sum() / (4 * np.pi))
    return np.array(out)


def test_lips_touch_at_rest(head):
    """The lip cut: the upper and lower lip rows are distinct vertices at the same place."""
    v = head["v_template"]
    _, first, counts = np.unique(np.round(v, 12), axis=0, return_index=True, return_counts=True)
    assert (counts == 2).sum() >= 15 and counts.max() == 2
    up, lo = head["lip_ring_upper"], head["lip_ring_lower"]
    mid_y = 0.5 * (v[up, 1] + v[lo, 1])
    dup = np.isin(np.round(v, 12), np.round(v[first[counts == 2]], 12)).all(1)
    lip_line = dup & (np.abs(v[:, 0]) < np.abs(v[up, 0]).max() + 1e-9)
    assert lip_line.sum() == 30                                  # 15 columns x 2 rows
    assert np.abs(v[lip_line, 1] - mid_y.mean()).max() < 0.002


# -- blendshapes ---------------------------------------------------------------------------------

def test_blink_closes_the_left_eye_only(head):
    v = head["v_template"]
    d = _col(head, "blink_left")
    le, re = (head["J_regressor"] @ v)[3:5]
    near_l = np.linalg.norm(v - le, axis=1) < 0.02
    near_r = np.linalg.norm(v - re, axis=1) < 0.02
    upper_l = near_l & (v[:, 1] > le[1] + 0.003) & (v[:, 2] > le[2] + 0.008)
    assert (-d[upper_l, 1]).max() > 0.008
    assert np.abs(d[near_r]).max() == 0.0
    np.testing.assert_allclose(_col(head, "blink_right"), d[_mirror(v)] * [-1, 1, 1], atol=1e-12)
    # closed: every ray from the left eye centre through its front hemisphere hits the lids
    vb = v + d
    assert _eye_covered(head, vb, le)
    assert not _eye_covered(head, v, le)


def _mirror(v):
    key = {tuple(np.round(p, 9)): i for i, p in enumerate(v.tolist())}
    out = []
    for i, p in enumerate(v.tolist()):
        out.append(key.get(tuple(np.round([-p[0], p[1], p[2]], 9)), i))
    return np.array(out)


def _eye_covered(head, v, centre):
    """Does skin (non-eyeball) geometry cover the eyeball's front as seen from straight ahead?
    Casts rays toward -z at points of the eyeball front and looks for skin triangles in front."""
    f = head["f"]
    eye = (head["weights"][:, 3] == 1.0) | (head["weights"][:, 4] == 1.0)
    skin_f = f[~eye[f].any(1)]
    p = v[skin_f]
    cen = p.mean(1)
    near = np.linalg.norm(cen - centre, axis=1) < 0.02
    p = p[near]
    ok = True
    for dx in np.linspace(-0.006, 0.006, 5):
        for dy in np.linspace(-0.003, 0.003, 3):
            o = centre + np.array([dx, dy, 0.0])
            # 2D point-in-triangle in xy, and the triangle in front of the eyeball
            a, b, c = p[:, 0, :2], p[:, 1, :2], p[:, 2, :2]
            q = o[:2]
            def s(u, w):
                return (w[:, 0] - u[:, 0]) * (q[1] - u[:, 1]) - (w[:, 1] - u[:, 1]) * (q[0] - u[:, 0])
            s0, s1, s2 = s(a, b), s(b, c), s(c, a)
            hit = ((s0 >= 0) & (s1 >= 0) & (s2 >= 0)) | ((s0 <= 0) & (s1 <= 0) & (s2 <= 0))
            front = p[:, :, 2].min(1) > centre[2] + 0.009
            ok &= bool((hit & front).any())
    return ok


def test_smile_and_other_expressions(head):
    v = head["v_template"]
    up, lo = head["lip_ring_upper"], head["lip_ring_lower"]
    d = _col(head, "smile")
    corners = np.concatenate([up[[0, -1]], lo[[0, -1]]])
    assert (d[corners, 1] > 0.004).all()
    assert d[up[7], 1] < d[up[0], 1]                     # corners rise more than the middle
    frown = _col(head, "frown")
    assert (frown[corners, 1] < -0.003).all()
    eyeballs = (head["weights"][:, 3] == 1.0) | (head["weights"][:, 4] == 1.0)
    J0 = head["J_regressor"] @ v
    for name in head["expression_names"]:
        d = _col(head, name)
        assert 0.003 < np.abs(d).max() < 0.02, name      # visible, not absurd
        assert np.abs(d[eyeballs]).max() == 0.0, name    # expressions never move the eyeballs
        np.testing.assert_allclose(head["J_regressor"] @ (v + d), J0, atol=2e-3)
    pucker = _col(head, "pucker")
    assert pucker[up[7], 2] > 0.006 and pucker[up[0], 0] > 0.003 and pucker[up[-1], 0] < -0.003
    wide = _col(head, "eye_wide")
    assert (wide[:, 1]).max() > 0.002


def test_blendshapes_do_not_fold_the_surface():
    """No visible face turns over at coefficient 1 (shape also at -1).  Only the hidden eyelid
    linings inside the eyeballs may fold when the lids close."""
    h = make_open_head(n_shape=16)
    v, f = h["v_template"], h["f"]
    eyeball = (h["weights"][:, 3] == 1.0) | (h["weights"][:, 4] == 1.0)
    le, re = (h["J_regressor"] @ v)[3:5]
    hidden = np.minimum(np.linalg.norm(v - le, axis=1), np.linalg.norm(v - re, axis=1)) < 0.0121
    visible = ~(hidden & ~eyeball)[f].any(1)

    def normals(x):
        n = np.cross(x[f[:, 1]] - x[f[:, 0]], x[f[:, 2]] - x[f[:, 0]])
        return n / np.linalg.norm(n, axis=1, keepdims=True)
    n0 = normals(v)
    for k in range(h["shapedirs"].shape[2]):
        for c in ((1.0, -1.0) if k < 16 else (1.0,)):
            dot = (normals(v + c * h["shapedirs"][:, :, k]) * n0).sum(1)
            assert dot[visible].min() > 0.0, (k, c)


def test_shape_components(head):
    v = head["v_template"]
    S = head["shapedirs"][:, :, : int(head["shape_basis_size"])]
    mags = np.abs(S).max(axis=(0, 1))
    assert (mags > 0.004).all() and (mags < 0.02).all()
    for k in range(S.shape[2]):                          # eyeballs move rigidly
        for j in (3, 4):
            ids = head["weights"][:, j] == 1.0
            d = S[ids, :, k]
            assert np.abs(d - d[0]).max() < 1e-12
    width = S[:, :, list(head["shape_names"]).index("head_width")]
    assert width[np.argmax(v[:, 0]), 0] > 0.008
