"""The open head's mesh: `_Builder` casts the ray grid into skin vertices and faces and adds the
mouth-cavity pocket, the eyelid linings and the eyeballs (with the bookkeeping the UVs, rigging and
blendshapes need: slit rows, eye band, mirror map); `_tube_faces` closes a hole with a tube.
"""

from __future__ import annotations

import numpy as np

from .ray_grid import (EYE_A, EYE_B, JF, K_LO, K_UP, MOUTH_HALF, NC, S3, _cast, _column_angles, _lid_betas,
                       _row_columns, _row_levels)
from .sculpt import DEG, EYE_CENTER, EYE_RADIUS, Y_NECK_CUT, _bound_capsule


class _Builder:
    """Builds the template mesh, its UVs and the bookkeeping the blendshapes need."""

    def __init__(self):
        self.phis = _column_angles()
        self.levels = _row_levels()
        self.i_m = int(np.flatnonzero(self.levels == 0.0)[0])
        self.row_cols = _row_columns(self.levels, self.phis)
        self.mirror_col = (NC - np.arange(NC)) % NC
        self._neck_ring()
        self._eye_setup()
        self._skin_vertices()
        self._skin_faces()
        self._mouth_pocket()
        self._eye_linings()
        self._eyeballs()
        self._assemble()

    # -- rows and columns --------------------------------------------------------------------
    def _neck_ring(self):
        """e_ring[j]: elevation of the ray (mouth-height origin) that meets the neck cut plane."""
        half = np.arange(JF, NC + 1) % NC          # front .. back (then mirrored)
        es = np.arange(-88.0, -24.0, 1.5) * DEG
        P = _cast(0.0 * es[None, :] - 1.0, self.phis[half][:, None], es[None, :])  # q=-1: e = e_ring
        e_ring = np.empty(NC)
        for k, j in enumerate(half):
            y = np.maximum.accumulate(P[k, :, 1])
            e_ring[j] = np.interp(Y_NECK_CUT, y, es)
        for j in range(NC):
            if not (JF <= j or j == 0):
                e_ring[j] = e_ring[self.mirror_col[j]]
        self.e_ring = e_ring

    def _eye_setup(self):
        """Dense skin table along the left eye's columns, the slit row and the lid solve."""
        # find the slit row: the level nearest the eye centre's height in the middle lid column
        jc = (EYE_A + EYE_B) // 2
        ss = np.arange(0.04, 0.10, 0.0005)
        P = _cast(ss, self.phis[jc], self.e_ring[jc])
        s_mid = np.interp(EYE_CENTER[1], np.maximum.accumulate(P[:, 1]), ss)
        self.i_e = int(np.argmin(np.abs(self.levels - s_mid)))
        lo_fix, hi_fix = self.levels[self.i_e - K_LO - 1], self.levels[self.i_e + K_UP + 1]
        self.tab_cols = np.arange(EYE_A - 3, EYE_B + 4)
        self.tab_s = np.linspace(lo_fix, hi_fix, 111)
        self.tab_P = _cast(self.tab_s[None, :], self.phis[self.tab_cols][:, None],
                           self.e_ring[self.tab_cols][:, None])          # [ncol, ns, 3]
        rel = self.tab_P - EYE_CENTER
        beta = np.arcsin(np.clip(rel[..., 1] / np.linalg.norm(rel, axis=-1), -1.0, 1.0))
        self.tab_beta = np.maximum.accumulate(beta, axis=1)
        self.band_q = self._eye_band(0.0, 0.0)

    def _eye_band(self, down_up, up_lo):
        """Row parameters of the warped eye band of the left eye.

        Returns qa, qb [ncol, K_LO + K_UP + 1]: rows i_e-K_LO .. i_e+K_UP, for faces above / below
        (they differ only on the slit row of the lid columns: upper / lower margin)."""
        phA, phB = self.phis[EYE_A], self.phis[EYE_B]
        lo_fix, hi_fix = self.tab_s[0], self.tab_s[-1]
        nrow = K_LO + K_UP + 1
        qa = np.empty((len(self.tab_cols), nrow))
        qb = np.empty_like(qa)
        s_row = self.levels[self.i_e]
        for c, j in enumerate(self.tab_cols):
            u = (self.phis[j] - phA) / (phB - phA)
            b_up, b_lo = _lid_betas(np.array([u]), down_up, up_lo)
            if EYE_A <= j <= EYE_B:
                s_up = np.interp(b_up[0], self.tab_beta[c], self.tab_s)
                s_lo = np.interp(b_lo[0], self.tab_beta[c], self.tab_s)
                if j in (EYE_A, EYE_B):
                    s_up = s_lo = 0.5 * (s_up + s_lo)
            else:
                corner = EYE_A if j < EYE_A else EYE_B
                cc = corner - self.tab_cols[0]
                b_c = _lid_betas(np.array([0.0 if corner == EYE_A else 1.0]))[0][0]
                s_c = np.interp(b_c, self.tab_beta[cc], self.tab_s)
                ramp = abs(j - corner) / 3.0
                s_up = s_lo = s_c + (s_row - s_c) * ramp
            for k in range(K_LO):
                qa[c, k] = qb[c, k] = lo_fix + (s_lo - lo_fix) * (k + 1) / (K_LO + 1)
            qa[c, K_LO], qb[c, K_LO] = s_up, s_lo
            for k in range(K_UP):
                qa[c, K_LO + 1 + k] = qb[c, K_LO + 1 + k] = s_up + (hi_fix - s_up) * (k + 1) / (K_UP + 1)
        return qa, qb

    def _tab_points(self, c, q):
        """Skin points from the dense eye table (column slots c, parameters q)."""
        ds = self.tab_s[1] - self.tab_s[0]
        f = np.clip((q - self.tab_s[0]) / ds, 0.0, len(self.tab_s) - 1.000001)
        i0 = np.floor(f).astype(int)
        w = (f - i0)[..., None]
        return self.tab_P[c, i0] * (1.0 - w) + self.tab_P[c, i0 + 1] * w

    # -- skin ---------------------------------------------------------------------------------
    def _skin_vertices(self):
        """One vertex per kept (row, column); a second one on the slit rows (mouth and eyes).

        ida[i, j] is the vertex used by faces above row i, idb[i, j] the one used below."""
        NR = len(self.levels)
        ida = -np.ones((NR, NC), np.int64)
        q_v, j_v, i_v, kind = [], [], [], []      # kind: 0 plain, 1 upper copy, 2 lower copy
        mouth_int = set(range(JF - MOUTH_HALF + 1, JF + MOUTH_HALF))
        eye_int = set(range(EYE_A + 1, EYE_B)) | {self.mirror_col[j] for j in range(EYE_A + 1, EYE_B)}
        idb = ida.copy()
        qa, qb = self.band_q
        band_rows = range(self.i_e - K_LO, self.i_e + K_UP + 1)
        tab_slot = {}
        for c, j in enumerate(self.tab_cols):
            tab_slot[j] = c
            tab_slot[self.mirror_col[j]] = c
        for i in range(NR):
            for j in self.row_cols[i]:
                q_up = q_lo = self.levels[i]
                if i in band_rows and j in tab_slot:
                    c = tab_slot[j]
                    q_up, q_lo = qa[c, i - self.i_e + K_LO], qb[c, i - self.i_e + K_LO]
                split = (i == self.i_m and j in mouth_int) or (i == self.i_e and j in eye_int)
                ida[i, j] = len(q_v)
                q_v.append(q_up), j_v.append(j), i_v.append(i), kind.append(1 if split else 0)
                if split:
                    idb[i, j] = len(q_v)
                    q_v.append(q_lo), j_v.append(j), i_v.append(i), kind.append(2)
                else:
                    idb[i, j] = ida[i, j]
        self.ida, self.idb = ida, idb
        self.sk_q, self.sk_j, self.sk_i, self.sk_kind = map(np.array, (q_v, j_v, i_v, kind))
        self.tab_slot = tab_slot
        n = len(q_v)
        # mirror map of skin vertices
        key = {(i, j, k): v for v, (i, j, k) in enumerate(zip(i_v, j_v, kind))}
        self.sk_mirror = np.array([key[(i, self.mirror_col[j], k)] for i, j, k in zip(i_v, j_v, kind)])
        # positions: cast the right half (phi >= 0 and the seam) and mirror the rest
        right = (self.sk_j >= JF) | (self.sk_j == 0)
        P = np.zeros((n, 3))
        idx = np.flatnonzero(right)
        P[idx] = _cast(self.sk_q[idx], self.phis[self.sk_j[idx]], self.e_ring[self.sk_j[idx]])
        # eye band vertices come from the dense table (exactly consistent with the lid variants)
        self.band_idx = np.array([v for v in range(n) if self.sk_i[v] in band_rows and self.sk_j[v] in tab_slot
                                  and right[v]])
        slots = np.array([tab_slot[j] for j in self.sk_j[self.band_idx]])
        P[self.band_idx] = self._tab_points(slots, self.sk_q[self.band_idx])
        self.band_slots = slots
        idx = np.flatnonzero(~right)
        P[idx] = P[self.sk_mirror[idx]] * np.array([-1.0, 1.0, 1.0])
        P[self.sk_i == 0, 1] = Y_NECK_CUT
        if _bound_capsule(P).max() > -0.002:
            raise AssertionError("open head: the sculpture leaves the ray-marching bound")
        self.n_skin = n
        self.P_skin = P
        # pole and neck-cap centre
        self.pole = _cast(np.array([S3]), np.array([0.0]), np.array([0.0]))[0]
        self.pole[0] = 0.0
        ring = P[ida[0, self.row_cols[0]]]
        self.cap_centre = np.array([0.0, Y_NECK_CUT, ring[:, 2].mean()])

    def _skin_faces(self):
        """Faces (and UV corner keys) of the skin grid, the crown fan and the neck cap."""
        NR = len(self.levels)
        faces, wraps = [], []     # wraps: per corner, 1 if it uses the u = 1 copy of the seam column
        phis = self.phis
        for i in range(NR - 1):
            lo, up = self.row_cols[i], self.row_cols[i + 1]
            if len(lo) == len(up) and np.all(lo == up):
                for k in range(len(lo)):
                    j0, j1 = lo[k], lo[(k + 1) % len(lo)]
                    w1 = 1 if j1 == 0 else 0
                    a, b = self.ida[i, j0], self.ida[i, j1]
                    c, d = self.idb[i + 1, j1], self.idb[i + 1, j0]
                    # one diagonal direction everywhere: a mirrored split along the midline
                    # would leave a shading seam where the quads are long and thin
                    faces += [(a, b, c), (a, c, d)]
                    wraps += [(0, w1, w1), (0, w1, 0)]
            else:
                L = list(lo) + [lo[0]]
                U = list(up) + [up[0]]
                aL = [phis[j] for j in lo] + [np.pi]
                aU = [phis[j] for j in up] + [np.pi]
                wl = [0] * len(lo) + [1]
                wu = [0] * len(up) + [1]
                a = b = 0
                while a < len(L) - 1 or b < len(U) - 1:
                    if b == len(U) - 1 or (a < len(L) - 1 and aL[a + 1] <= aU[b + 1] + 1e-12):
                        faces.append((self.ida[i, L[a]], self.ida[i, L[a + 1]], self.idb[i + 1, U[b]]))
                        wraps.append((wl[a], wl[a + 1], wu[b]))
                        a += 1
                    else:
                        faces.append((self.ida[i, L[a]], self.idb[i + 1, U[b + 1]], self.idb[i + 1, U[b]]))
                        wraps.append((wl[a], wu[b + 1], wu[b]))
                        b += 1
        self.skin_faces = np.array(faces, np.int64)
        self.skin_wraps = np.array(wraps, np.int64)
        # crown fan (pole vertex id = n_skin) and neck cap (centre id = n_skin + 1)
        top = self.row_cols[NR - 1]
        fan = [(self.ida[NR - 1, top[k]], self.ida[NR - 1, top[(k + 1) % len(top)]], self.n_skin)
               for k in range(len(top))]
        bot = self.row_cols[0]
        cap = [(self.idb[0, bot[(k + 1) % len(bot)]], self.idb[0, bot[k]], self.n_skin + 1) for k in range(len(bot))]
        self.fan_faces = np.array(fan, np.int64)
        self.cap_faces = np.array(cap, np.int64)

    def _slit_loop(self, row, j_lo, j_hi):
        """Vertex ids around a slit: corner j_lo, upper copies, corner j_hi, lower copies back."""
        ups = [self.ida[row, j] for j in range(j_lo + 1, j_hi)]
        los = [self.idb[row, j] for j in range(j_hi - 1, j_lo, -1)]
        return np.array([self.ida[row, j_lo]] + ups + [self.ida[row, j_hi]] + los, np.int64)

    # -- mouth cavity --------------------------------------------------------------------------
    _POCKET_RINGS = (  # (half-width offset from the corners, H_up, H_lo, D_up, D_lo) in metres
        (-0.0005, 0.0006, 0.0006, 0.0035, 0.0040),     # inner edge of the lips
        (0.0020, 0.0060, 0.0060, 0.0050, 0.0065),      # inner faces of the lips
        (0.0070, 0.0125, 0.0100, 0.0060, 0.0085),      # lip / gum folds
        (0.0100, 0.0140, 0.0120, 0.0120, 0.0150),
        (0.0090, 0.0140, 0.0125, 0.0240, 0.0240),      # palate / floor
        (0.0020, 0.0100, 0.0080, 0.0350, 0.0350),
        (-0.0080, 0.0050, 0.0045, 0.0410, 0.0410),     # throat
    )

    def pocket_rings(self, loop_P, sigma):
        """Mouth-cavity ring positions from the lip-line loop positions [32,3] and sides sigma."""
        xc = 0.5 * (abs(loop_P[0, 0]) + abs(loop_P[MOUTH_HALF * 2, 0]))
        xi = np.clip(loop_P[:, 0] / xc, -1.0, 1.0)
        # dental arch: parabola through the lip line
        A = np.stack([np.ones(len(loop_P)), loop_P[:, 0] ** 2], 1)
        z0, a2 = np.linalg.lstsq(A, loop_P[:, 2], rcond=None)[0]
        ycen = loop_P[:, 1].mean()
        rings = []
        for r, (dx, hu, hl, du, dl) in enumerate(self._POCKET_RINGS):
            ell = np.clip(1.0 - np.abs(xi) ** (2 if r < 2 else 4), 0.0, 1.0) ** (0.5 if r < 2 else 0.25)
            X = xc + dx
            x = xi * X
            h = np.where(sigma > 0, hu, np.where(sigma < 0, hl, 0.0)) * ell
            D = 0.5 * (du + dl) + 0.5 * sigma * (du - dl) * ell
            y = ycen + np.sign(sigma) * h
            z = z0 + a2 * x ** 2 - D
            rings.append(np.stack([x, y, z], 1))
        back = np.array([0.0, ycen, z0 - 0.044])
        return np.stack(rings), back

    def _mouth_pocket(self):
        loop = self._slit_loop(self.i_m, JF - MOUTH_HALF, JF + MOUTH_HALF)
        n = len(loop)
        sigma = np.zeros(n)
        sigma[1:2 * MOUTH_HALF] = 1.0
        sigma[2 * MOUTH_HALF + 1:] = -1.0
        self.mouth_loop, self.mouth_sigma = loop, sigma
        rings, back = self.pocket_rings(self.P_skin[loop], sigma)
        self.mouth_rings_P, self.mouth_back_P = rings, back

    # -- eyelid linings and eyeballs ----------------------------------------------------------
    @staticmethod
    def lining_rings(loop_P, centre):
        u = loop_P - centre
        u /= np.linalg.norm(u, axis=1, keepdims=True)
        c = u.mean(0)
        c /= np.linalg.norm(c)
        r1 = centre + (EYE_RADIUS - 0.0004) * u
        u2 = u + 0.8 * c
        u2 /= np.linalg.norm(u2, axis=1, keepdims=True)
        r2 = centre + (EYE_RADIUS - 0.0025) * u2
        return np.stack([r1, r2]), centre + (EYE_RADIUS - 0.004) * c

    def _eye_linings(self):
        self.eye_loops = []
        for side, (ja, jb) in enumerate(((EYE_A, EYE_B), (self.mirror_col[EYE_B], self.mirror_col[EYE_A]))):
            loop = self._slit_loop(self.i_e, ja, jb)
            centre = EYE_CENTER * np.array([1.0 if side == 0 else -1.0, 1.0, 1.0])
            rings, mid = self.lining_rings(self.P_skin[loop], centre)
            self.eye_loops.append((loop, rings, mid, centre))

    def _eyeballs(self):
        th = np.array([7, 14, 21, 28, 36, 46, 60, 78, 98, 120, 145]) * DEG
        ps = np.arange(20) * (2 * np.pi / 20)
        T, Ps = np.meshgrid(th, ps, indexing="ij")
        ring = np.stack([np.sin(T) * np.cos(Ps), np.sin(T) * np.sin(Ps), np.cos(T)], -1).reshape(-1, 3)
        unit = np.concatenate([[[0.0, 0.0, 1.0]], ring, [[0.0, 0.0, -1.0]]])
        nr, nl = len(th), len(ps)
        F = []
        for k in range(nl):
            k1 = (k + 1) % nl
            F.append((0, 1 + k, 1 + k1))
            for r in range(nr - 1):
                a, b = 1 + r * nl + k, 1 + r * nl + k1
                c, d = 1 + (r + 1) * nl + k1, 1 + (r + 1) * nl + k
                F += [(a, d, c), (a, c, b)]
            F.append((1 + (nr - 1) * nl + k, 1 + nr * nl, 1 + (nr - 1) * nl + k1))
        self.eye_unit = unit
        self.eye_faces = np.array(F, np.int64)
        self.eye_theta = np.concatenate([[0.0], T.ravel(), [np.pi]])
        self.eye_psi = np.concatenate([[0.0], Ps.ravel(), [0.0]])
        self.eye_nr, self.eye_nl = nr, nl

    # -- assembly -----------------------------------------------------------------------------
    def _assemble(self):
        parts = [self.P_skin, self.pole[None], self.cap_centre[None]]
        n = self.n_skin + 2
        self.pole_id, self.cap_id = self.n_skin, self.n_skin + 1
        faces = [self.skin_faces, self.fan_faces, self.cap_faces]
        # mouth pocket
        nl = len(self.mouth_loop)
        self.mouth_ring_ids = [self.mouth_loop]
        for _ in range(len(self.mouth_rings_P)):
            self.mouth_ring_ids.append(np.arange(n, n + nl))
            n += nl
        parts += list(self.mouth_rings_P) + [self.mouth_back_P[None]]
        self.mouth_back_id = n
        n += 1
        faces.append(_tube_faces(self.mouth_ring_ids, self.mouth_back_id))
        self.pocket_ids = np.arange(self.mouth_ring_ids[1][0], n)
        # eyelid linings
        self.lining_ids = []
        for loop, rings, mid, _ in self.eye_loops:
            ids = [loop]
            for r in rings:
                ids.append(np.arange(n, n + len(loop)))
                n += len(loop)
            parts += list(rings) + [mid[None]]
            faces.append(_tube_faces(ids, n))
            self.lining_ids.append((ids, n))
            n += 1
        # eyeballs
        self.eyeball_ids = []
        for side in (0, 1):
            centre = EYE_CENTER * np.array([1.0 if side == 0 else -1.0, 1.0, 1.0])
            parts.append(centre + EYE_RADIUS * self.eye_unit)
            faces.append(self.eye_faces + n)
            self.eyeball_ids.append(np.arange(n, n + len(self.eye_unit)))
            n += len(self.eye_unit)
        self.V = np.concatenate(parts, 0)
        self.F = np.concatenate(faces, 0)
        self.n_vert = n
        self._mirror_map()

    def _mirror_map(self):
        m = np.arange(self.n_vert)
        m[:self.n_skin] = self.sk_mirror
        # mouth pocket ring k, loop slot l  <->  mirrored slot
        nl = len(self.mouth_loop)
        slot_m = np.array([self.mirror_loop_slot(l, nl) for l in range(nl)])
        for ids in self.mouth_ring_ids[1:]:
            m[ids] = ids[slot_m]
        (ids_l, mid_l), (ids_r, mid_r) = self.lining_ids
        ne = len(ids_l[0])
        slot_e = np.array([self.mirror_loop_slot(l, ne) for l in range(ne)])
        for a, b in zip(ids_l[1:], ids_r[1:]):
            m[a] = b[slot_e]
            m[b] = a[slot_e]
        m[mid_l], m[mid_r] = mid_r, mid_l
        el, er = self.eyeball_ids
        ue = self.eye_unit
        # eyeball vertex mirrored: (x, y, z) -> (-x, y, z): psi -> pi - psi
        key = {tuple(np.round(u * np.array([-1, 1, 1]), 9)): k for k, u in enumerate(ue)}
        perm = np.array([key[tuple(np.round(u, 9))] for u in ue])
        m[el] = er[perm]
        m[er] = el[perm]
        self.mirror = m

    @staticmethod
    def mirror_loop_slot(l, n):
        """Slit loops run corner(-phi end), upper copies, corner, lower copies back; under x -> -x a
        loop of the mirrored slit (same construction) maps slot l to this slot."""
        h = n // 2
        if l == 0:
            return h
        if l == h:
            return 0
        if l < h:
            return h - l
        return n - (l - h)


def _tube_faces(ring_ids, centre_id):
    """Quads between consecutive loops (ring 0 = a hole's boundary) and a fan closing the last."""
    F = []
    for A, B in zip(ring_ids[:-1], ring_ids[1:]):
        n = len(A)
        for k in range(n):
            k1 = (k + 1) % n
            F += [(A[k1], A[k], B[k]), (A[k1], B[k], B[k1])]
    last = ring_ids[-1]
    n = len(last)
    F += [(last[(k + 1) % n], last[k], centre_id) for k in range(n)]
    return np.array(F, np.int64)
