"""Densification decisions on hand-made statistics (method.md Sec. 10.6-10.7 for Temporal ADC, 3DGS
Sec. 5 / GaussianAvatars for vanilla ADC): exactly which Gaussians are cloned, split and pruned, and
the statistics of the new Gaussians (clone / split noise, SH noise, opacity)."""

from __future__ import annotations

import dataclasses
import math

import numpy as np
import pytest
import torch

from conftest import DEVICE
from stavatar_ti.config import DensifyConfig
from stavatar_ti.densify import VanillaADC
from stavatar_ti.model.gaussians import GaussianAvatar
from stavatar_ti.temporal import TemporalADC
from stavatar_ti.temporal import densifier as temporal_module

pytestmark = pytest.mark.skipif(DEVICE != "cpu", reason="CPU-side bookkeeping; one run is enough")

LN16 = math.log(1.6)


def _logit(p):
    return math.log(p / (1.0 - p))


def _avatar(n: int, faces: int, opacities=None, scaling=None, seed: int = 0) -> GaussianAvatar:
    """n Gaussians, Gaussian i on face i * faces // n, distinct positions and SH (so rows can be traced)."""
    g = torch.Generator().manual_seed(seed)
    av = GaussianAvatar(faces, sh_degree=1)
    params = {
        "xyz": torch.randn(n, 3, generator=g),
        "scaling": torch.zeros(n, 3) if scaling is None else scaling,
        "rotation": torch.tensor([1.0, 0.0, 0.0, 0.0]).repeat(n, 1),
        "features_dc": torch.randn(n, 1, 3, generator=g),
        "features_rest": torch.randn(n, 3, 3, generator=g),
        "opacity": torch.full((n,), _logit(0.5)) if opacities is None else
        torch.tensor([_logit(p) for p in opacities], dtype=torch.float32),
    }
    av.set_params(params, torch.arange(n) * faces // n)
    return av


def _rows(av: GaussianAvatar, before: dict) -> list:
    """For each row of `av`, the index of the original Gaussian with the same xyz, or None (new row)."""
    out = []
    for p in av.xyz.detach():
        hit = torch.nonzero((before["xyz"] == p).all(1)).squeeze(1)
        out.append(int(hit[0]) if hit.numel() else None)
    return out


def _snapshot(av):
    return {k: v.detach().clone() for k, v in av.params().items()} | {"binding": av.binding.clone()}


def _cfg(**kw):
    return dataclasses.replace(DensifyConfig(), **({"max_gaussians": 20_000} | kw))


# ----------------------------------------------------------------------------------- vanilla ADC
def test_vanilla_decisions():
    # i:      0     1     2     3     4     5     6     7     8     9
    grad = [3e-4, 1e-4, 5e-4, 3e-4, 0.0, 1e-3, 3e-4, 0.0, 0.0, 0.0]   # mean NDC gradient
    denom = [4, 4, 2, 5, 0, 3, 1, 4, 4, 4]
    size = [0.005, 0.005, 0.02, 0.02, 0.005, 0.005, 0.005, 0.005, 0.005, 0.005]  # max world scale (E = 1)
    opac = [0.5, 0.5, 0.5, 0.5, 0.005, 0.5, 0.5, 0.009, 0.003, 0.002]
    # faces (2 per face): 4 shares face 2 with 5; 8 and 9 are alone together on face 4
    av = _avatar(10, 5, opac)
    before = _snapshot(av)
    adc = VanillaADC(_cfg(), extent=1.0)
    g, d = torch.tensor(grad), torch.tensor(denom, dtype=torch.float32)
    adc.load_state({"grad_accum": g * d, "denom": d})
    ws = torch.tensor(size)[:, None] * torch.tensor([1.0, 0.5, 0.25])
    stats = adc.densify(0, av, None, ws, torch.Generator().manual_seed(1))
    # hot = mean gradient >= 2e-4 (accumulated sum / visible count): 0, 2, 3, 5, 6
    # clone = hot and max world scale <= 0.01 E: 0, 5, 6 (exact copies); split = hot and big: 2, 3
    # prune = opacity < 0.01: 4, 7 and one of 8 / 9 (face 4 keeps one); split parents removed
    rows = _rows(av, before)
    kept = [r for r in rows if r is not None]
    assert kept[:5] == [0, 1, 5, 6, 8] or kept[:5] == [0, 1, 5, 6, 9]
    assert len(kept) == 8  # 5 originals + 3 exact copies
    assert sorted(kept[5:]) == [0, 5, 6] and rows[5:8] == [0, 5, 6]
    assert stats == {"cloned": 3, "split": 2, "pruned": 3}
    for k in ("xyz", "scaling", "rotation", "features_dc", "features_rest", "opacity"):
        assert torch.equal(getattr(av, k).detach()[5:8], before[k][[0, 5, 6]]), k
    assert torch.equal(av.binding[5:8], before["binding"][[0, 5, 6]])
    # split children: 2 per parent, bound to the parent's face, log scale - ln 1.6, SH and opacity copied
    kids = [i for i, r in enumerate(rows) if r is None]
    assert len(kids) == 4 and av.num_gaussians == 12
    parent = [2, 3, 2, 3]  # child j of parent k at row j K + k
    for i, p in zip(kids, parent):
        assert int(av.binding[i]) == int(before["binding"][p])
        assert torch.allclose(av.scaling.detach()[i], before["scaling"][p] - LN16)
        assert torch.equal(av.features_dc.detach()[i], before["features_dc"][p])
        assert torch.equal(av.opacity.detach()[i], before["opacity"][p])
    assert (av.face_counts() >= 1).all()
    # the accumulators restart empty for the new Gaussian set
    assert adc.grad_accum.shape == (12,) and not adc.grad_accum.any() and not adc.denom.any()


def test_vanilla_split_noise_statistics():
    n = 3000
    av = _avatar(n, n, scaling=torch.full((n, 3), math.log(0.3)))
    # every parent rotated 90 degrees about z: local x <- -y, y <- x
    q = torch.tensor([math.cos(math.pi / 4), 0.0, 0.0, math.sin(math.pi / 4)])
    av.rotation.data[:] = q
    before = _snapshot(av)
    adc = VanillaADC(_cfg(), extent=1.0)
    adc.load_state({"grad_accum": torch.full((n,), 1e-3), "denom": torch.ones(n)})
    s = torch.tensor([0.04, 0.01, 0.02])   # world std per axis (> 0.01 E: all split)
    adc.densify(0, av, None, s.repeat(n, 1), torch.Generator().manual_seed(2))
    assert av.num_gaussians == 2 * n
    parent = torch.arange(2 * n) % n
    off = av.xyz.detach() - before["xyz"][parent]
    R = torch.tensor([[0.0, -1.0, 0.0], [1.0, 0.0, 0.0], [0.0, 0.0, 1.0]])
    local = off @ R          # R^T off: back in the parent's frame, ε ~ N(0, diag(s²))
    assert torch.allclose(local.std(0), s, rtol=0.05)
    assert local.mean(0).abs().max() < 3 * float(s.max()) / math.sqrt(2 * n) + 1e-4
    assert torch.allclose(av.scaling.detach(), before["scaling"][parent] - LN16)


# ---------------------------------------------------------------------------------- Temporal ADC
class _Out:
    def __init__(self, radii, n):
        self.radii = radii
        self.means2d = torch.zeros(n, 2)
        self.pixel_count = torch.zeros(n, dtype=torch.int32)
        self.blend_weight = torch.zeros(n)


def _feed(adc, av, window: int, errors: list, grads: list, visible: list, monkeypatch) -> None:
    """Drive TemporalADC.accumulate with given per-iteration Ē_i (the fused error gather is replaced),
    screen-space gradient norms and visibility (width = height = 2: NDC scale 1)."""
    queue = list(errors)
    monkeypatch.setattr(temporal_module, "fused_error_map", lambda image, gt, lambda_fpe: torch.zeros(2, 2))
    monkeypatch.setattr(temporal_module, "gather_gaussian_error", lambda *a, **k: torch.tensor(queue.pop(0)))
    n = av.num_gaussians
    adc.start_window(window)
    for gr, vis in zip(grads, visible):
        means2d_grad = torch.zeros(n, 2)
        means2d_grad[:, 0] = torch.tensor(gr)
        out = _Out(torch.tensor(vis, dtype=torch.int32), n)
        adc.accumulate(window, av, out, means2d_grad, torch.zeros(2, 2, 3), torch.zeros(3, 2, 2), 2, 2)


def _temporal_case(monkeypatch, clusters: int = 0, densified=(), g5: float = 3e-4, **cfg):
    # i:   0     1      2      3      4     5     6     7     8     9     10    11
    err = [[5e-4, 3.6e-3, 1.5e-3, 1.2e-3, 9e-4, 0, 0, 0, 0, 0, 0, 0]] + \
          [[5e-4, 0.0, 1.5e-3, 1.2e-3, 9e-4, 0, 0, 0, 0, 0, 0, 0]] * 3      # 4 iterations
    grad = [[0, 0, 0, 0, 0, g5, 3e-4, 1.5e-4, 3e-4, 0, 0, 0]] * 4
    vis = [[1] * 12] * 2 + [[1, 1, 1, 1, 1, 1, 0, 1, 1, 1, 1, 1]] * 2           # 6 visible twice only
    size = [0.005] * 5 + [0.02, 0.02, 0.02, 0.005] + [0.005] * 3                 # max world scale, E = 1
    opac = [0.5] * 9 + [0.005, 0.004, 0.003]
    av = _avatar(12, 6, opac)   # faces: (0,1) (2,3) (4,5) (6,7) (8,9) (10,11)
    adc = TemporalADC(_cfg(burst_k=2, **cfg), quirks=None, extent=1.0, table=None, device="cpu")
    adc.clusters, adc.densified = [np.arange(1)] * clusters, set(densified)
    _feed(adc, av, 0, err, grad, vis, monkeypatch)
    before = _snapshot(av)
    ws = torch.tensor(size)[:, None] * torch.tensor([0.5, 1.0, 0.25])
    stats = adc.densify(0, av, None, ws, torch.Generator().manual_seed(3))
    return av, before, stats, adc


def test_temporal_decisions(monkeypatch):
    av, before, stats, adc = _temporal_case(monkeypatch)
    # ē = err_accum / n_it (4): 0 -> 5e-4, 1 -> 9e-4, 2 -> 1.5e-3, 3 -> 1.2e-3, 4 -> 9e-4
    # clone: ē > 1e-3 -> {2, 3}; burst top-2 by the largest single-iteration Ē -> {1, 2}
    # split: g = grad_accum / visible count >= 2e-4 and max world scale > 0.01 E -> 5, 6 (6 was
    # visible twice: 6e-4 / 2); 7 (1.5e-4) is too weak, 8 too small (no gradient clone here)
    # prune: opacity < 0.01 -> 9 (face 4 keeps 8) and one of 10 / 11 (face 5 keeps one)
    rows = _rows(av, before)
    kept = [r for r in rows[:9] if r is not None]
    assert kept in ([0, 1, 2, 3, 4, 7, 8, 10], [0, 1, 2, 3, 4, 7, 8, 11])
    assert stats == {"cloned": 3, "split": 2, "pruned": 2}
    assert av.num_gaussians == 8 + 3 + 4
    clones = torch.arange(8, 11)
    assert torch.equal(av.binding[clones], before["binding"][[1, 2, 3]])
    assert torch.equal(av.scaling.detach()[clones], before["scaling"][[1, 2, 3]])
    assert torch.equal(av.rotation.detach()[clones], before["rotation"][[1, 2, 3]])
    # the originals keep their opacity; the copies get 1 - sqrt(1 - α)
    assert torch.equal(av.opacity.detach()[[1, 2, 3]], before["opacity"][[1, 2, 3]])
    alpha = 1.0 / (1.0 + np.exp(-before["opacity"][[1, 2, 3]].double().numpy()))
    want = 1.0 - np.sqrt(1.0 - alpha)
    assert np.allclose(torch.sigmoid(av.opacity.detach()[clones].double()).numpy(), want, rtol=1e-5)
    # split children: parents 5, 6; log scale - ln 1.6, halved opacity, the parent's face
    kids = torch.arange(11, 15)
    parent = [5, 6, 5, 6]
    assert torch.equal(av.binding[kids], before["binding"][parent])
    assert torch.allclose(av.scaling.detach()[kids], before["scaling"][parent] - LN16)
    assert np.allclose(torch.sigmoid(av.opacity.detach()[kids]).numpy(), 1.0 - math.sqrt(0.5), rtol=1e-5)
    assert (av.face_counts() >= 1).all()
    # the window's statistics are gone after its densify
    assert adc.stats.active(0) == 0


def test_temporal_clone_cap_keeps_the_largest_error(monkeypatch):
    # clone_max = 1: of {2, 3} over the threshold only 2 (the larger ē) stays; burst {1, 2} is added
    av, before, stats, _ = _temporal_case(monkeypatch, clone_max=1)
    assert stats["cloned"] == 2
    n_kept = av.num_gaussians - 2 - 4
    assert [_rows(av, before)[i] for i in range(n_kept, n_kept + 2)] == [None, None]  # noisy copies
    clones = torch.arange(n_kept, n_kept + 2)
    assert torch.equal(av.binding[clones], before["binding"][[1, 2]])


@pytest.mark.parametrize("densified, cloned, split", [((), [2], [5]), ((1, 2), [1, 2, 3], [5, 6])])
def test_temporal_cap_is_shared_among_the_clusters_left(monkeypatch, densified, cloned, split):
    # max_gaussians 18: room 6 for 12 Gaussians; the clone set is {1, 2, 3} (ē 9e-4 by burst,
    # 1.5e-3, 1.2e-3), the split set {5, 6} (g 4e-4, 3e-4): 5 new Gaussians (a split is +1). With 3
    # clusters and none densified, window 0 may add 6 // 3 = 2 < 5: both sets are cut by 2/5,
    # round(3 * 2/5) = 1 copy (the largest ē: 2) and 1 split (the largest g: 5). When the other two
    # have densified it gets all 6 >= 5: everything.
    av, before, stats, adc = _temporal_case(monkeypatch, clusters=3, densified=densified, max_gaussians=18, g5=4e-4)
    assert stats == {"cloned": len(cloned), "split": len(split), "pruned": 2}
    n_kept = av.num_gaussians - len(cloned) - 2 * len(split)
    new = torch.arange(n_kept, av.num_gaussians)
    assert [_rows(av, before)[i] for i in new] == [None] * len(new)  # noisy copies and children
    assert torch.equal(av.binding[new], before["binding"][cloned + split + split])
    # the originals left: all but the split parents, 9 and one of 10 / 11 (pruned)
    kept = _rows(av, before)[:n_kept]
    assert kept[:-1] == [i for i in range(9) if i not in split] and kept[-1] in (10, 11)
    assert adc.densified == set(densified) | {0}
    resumed = TemporalADC(_cfg(max_gaussians=18), quirks=None, extent=1.0, table=None, device="cpu")
    resumed.load_state(adc.state())  # a resumed run keeps the clusters' spent shares
    assert resumed.densified == adc.densified


def test_temporal_low_opacity_copies_are_pruned_at_once(monkeypatch):
    """Sec. 10.7: prune runs after clone and split on every Gaussian, the new ones included. A copy
    of a Gaussian with α = 0.015 has 1 - sqrt(1 - 0.015) = 0.0075 < 0.01 and is removed."""
    av = _avatar(4, 2, [0.015, 0.5, 0.5, 0.5])
    adc = TemporalADC(_cfg(burst_k=1), quirks=None, extent=1.0, table=None, device="cpu")
    _feed(adc, av, 0, [[2e-3, 0, 0, 0]], [[0, 0, 0, 0]], [[1, 1, 1, 1]], monkeypatch)
    before = _snapshot(av)
    stats = adc.densify(0, av, None, torch.full((4, 3), 0.005), torch.Generator().manual_seed(4))
    assert stats == {"cloned": 1, "split": 0, "pruned": 1}
    assert _rows(av, before) == [0, 1, 2, 3]


def test_temporal_clone_noise_statistics(monkeypatch):
    n = 3000
    log_s = torch.tensor([math.log(4.0), math.log(0.5), math.log(2.0)])   # local log scales σ
    av = _avatar(n, n, scaling=log_s.repeat(n, 1))
    adc = TemporalADC(_cfg(clone_max=n), quirks=None, extent=1.0, table=None, device="cpu")
    _feed(adc, av, 0, [[2e-3] * n], [[0.0] * n], [[1] * n], monkeypatch)
    before = _snapshot(av)
    adc.densify(0, av, None, torch.full((n, 3), 0.005), torch.Generator().manual_seed(5))
    assert av.num_gaussians == 2 * n
    new = slice(n, 2 * n)
    assert torch.equal(av.xyz.detach()[:n], before["xyz"]) and torch.equal(av.binding[new], before["binding"])
    # local position: p + N(0, (0.05 exp(σ))²) per axis
    off = av.xyz.detach()[new] - before["xyz"]
    std = 0.05 * torch.exp(log_s)
    assert torch.allclose(off.std(0), std, rtol=0.06)
    assert (off.mean(0).abs() < 4 * std / math.sqrt(n)).all()
    # SH: + N(0, 0.05²) elementwise on f_dc and f_rest; σ and ρ unchanged
    for key in ("features_dc", "features_rest"):
        d = (getattr(av, key).detach()[new] - before[key]).flatten()
        assert abs(float(d.std()) - 0.05) < 0.003 and abs(float(d.mean())) < 0.002, key
    assert torch.equal(av.scaling.detach()[new], before["scaling"])
    assert torch.equal(av.rotation.detach()[new], before["rotation"])
    # opacity of the copies: 1 - sqrt(1 - 0.5); the originals keep 0.5
    assert torch.allclose(torch.sigmoid(av.opacity.detach()[new]), torch.tensor(1.0 - math.sqrt(0.5)), atol=1e-6)
    assert torch.allclose(torch.sigmoid(av.opacity.detach()[:n]), torch.tensor(0.5))
