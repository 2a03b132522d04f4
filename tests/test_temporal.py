"""Temporal ADC: error gathering kernel, sparse statistics, FTC clustering, densify bookkeeping."""

import math

import numpy as np
import pytest
import torch

from conftest import DEVICE
from stavatar_ti.temporal import SparseDensityStats, ftc_cluster, gather_gaussian_error, halve_opacity_logit


def brute_force_error(E, means2d, C, A, formula):
    """Direct transcription of method.md Sec. 10.5 with explicit pixel loops (float64)."""
    H, W = E.shape
    out = torch.zeros(len(C), dtype=torch.float64)
    E = E.double()
    for g in range(len(C)):
        c = int(C[g])
        if c == 0:
            continue
        x = min(max(int(means2d[g, 0]), 0), W - 1)
        y = min(max(int(means2d[g, 1]), 0), H - 1)
        if formula == "paper":
            R = math.sqrt(c) / 2
            total = 0.0
            for yy in range(H):
                for xx in range(W):
                    if x - R <= xx <= x + R and y - R <= yy <= y + R:
                        total += float(E[yy, xx])
            out[g] = float(A[g]) / c * total
        else:
            R = math.floor(math.sqrt(c)) / 2
            x1, x2 = min(max(x - R, 0), W - 1), min(max(x + R, 0), W - 1)
            y1, y2 = min(max(y - R, 0), H - 1), min(max(y + R, 0), H - 1)
            total = float(E[int(y1):int(y2) + 1, int(x1):int(x2) + 1].sum())
            out[g] = float(A[g]) / (c + 1) * total / ((x2 - x1 + 1) * (y2 - y1 + 1))
    return out


@pytest.mark.parametrize("formula", ["code", "paper"])
def test_error_gather_matches_brute_force(formula):
    g = torch.Generator().manual_seed(0)
    H, W, N = 37, 53, 300
    E = torch.rand(H, W, generator=g)
    # centres inside, near and beyond the borders (windows get clipped), some culled (C = 0)
    means2d = torch.rand(N, 2, generator=g) * torch.tensor([W + 20.0, H + 20.0]) - 10.0
    C = torch.randint(0, 400, (N,), generator=g, dtype=torch.int32)
    C[::7] = 0
    A = torch.rand(N, generator=g) * C.float()
    got = gather_gaussian_error(E.to(DEVICE), means2d.to(DEVICE), C.to(DEVICE), A.to(DEVICE), formula).cpu()
    ref = brute_force_error(E, means2d, C, A, formula)
    assert torch.allclose(got.double(), ref, rtol=1e-5, atol=1e-6)
    assert (got[::7] == 0).all() and (got > 0).sum() > N // 2


def test_error_gather_paper_worked_example():
    # method.md Sec. 10.5: C = 9, R = 1.5, A = 6, window sum 4.8 -> 3.2
    E = torch.zeros(9, 9)
    E[3:6, 3:6] = 4.8 / 9
    out = gather_gaussian_error(E.to(DEVICE), torch.tensor([[4.5, 4.2]], device=DEVICE),
                                torch.tensor([9], dtype=torch.int32, device=DEVICE), torch.tensor([6.0], device=DEVICE),
                                "paper")
    assert abs(float(out[0]) - 3.2) < 1e-5


def test_sparse_stats_match_dense_accumulation_and_grow():
    g = torch.Generator().manual_seed(1)
    stats = SparseDensityStats(max_clusters=3, capacity=300, device=DEVICE)
    dense = {k: {"grad": torch.zeros(1000), "count": torch.zeros(1000, dtype=torch.int32),
                 "err": torch.zeros(1000), "burst": torch.zeros(1000)} for k in range(3)}
    n = 200
    for it in range(12):
        if it == 6:
            n = 900  # densification added Gaussians: capacity must grow, old cells survive
        k = it % 2
        grad = torch.rand(n, generator=g)
        visible = torch.rand(n, generator=g) < 0.3
        err = torch.rand(n, generator=g) * (torch.rand(n, generator=g) < 0.2)
        stats.accumulate(k, grad.to(DEVICE), visible.to(DEVICE), err.to(DEVICE))
        d = dense[k]
        d["grad"][:n] += grad * visible
        d["count"][:n] += visible.int()
        d["err"][:n] += err
        d["burst"][:n] = torch.maximum(d["burst"][:n], err)
    assert stats.capacity >= 900
    for k in (0, 1):
        out = stats.export(k, 1000)
        for key in ("grad", "err", "burst"):
            assert torch.allclose(out[key].cpu(), dense[k][key], atol=1e-5), (k, key)
        assert torch.equal(out["count"].cpu(), dense[k]["count"])
    # only touched pairs are active; cluster 2 was never touched
    touched = ((dense[0]["count"] > 0) | (dense[0]["err"] > 0)).sum()
    assert stats.active(0) == int(touched) and stats.active(2) == 0
    stats.reset(0)
    assert stats.active(0) == 0 and stats.active(1) > 0
    assert (stats.export(0, 1000)["grad"] == 0).all()
    # checkpoint round trip
    saved = stats.export(1, 1000)
    stats.reset(1)
    stats.restore(1, saved)
    assert torch.allclose(stats.export(1, 1000)["err"], saved["err"])


def test_ftc_recovers_constructed_groups():
    rng = np.random.default_rng(0)
    groups, per = 6, 30
    centers_e = rng.normal(0, 1, (groups, 100))
    centers_p = rng.normal(0, 0.3, (groups, 15))
    labels = np.repeat(np.arange(groups), per)
    expr = centers_e[labels] + rng.normal(0, 0.05, (groups * per, 100))
    pose = centers_p[labels] + rng.normal(0, 0.01, (groups * per, 15))
    trans = rng.normal(0, 0.001, (groups * per, 3))
    timesteps = np.arange(groups * per)
    clusters, k, scores = ftc_cluster(timesteps, expr, pose, trans)
    assert k == groups and set(scores) == set(range(5, 13))
    found = sorted(tuple(c) for c in clusters)
    assert found == sorted(tuple(np.nonzero(labels == c)[0]) for c in range(groups))


def test_halve_opacity_composites_back():
    logit = torch.tensor([-3.0, 0.0, 2.0])
    a = torch.sigmoid(logit)
    h = torch.sigmoid(halve_opacity_logit(logit))
    assert torch.allclose(1 - (1 - h) ** 2, a, atol=1e-6)


def test_sparse_stats_grow_geometrically_and_keep_values_exactly():
    """Gaussian counts rising in 51 small steps: capacity at least doubles (6 rebuilds from 64 to
    8192, not one per step), every growth keeps the active cells bit-exactly, and the final statistics equal
    a dense float32 accumulation in the same order."""
    g = torch.Generator().manual_seed(3)
    stats = SparseDensityStats(max_clusters=2, capacity=64, device=DEVICE)
    ref = {"grad": torch.zeros(5000), "count": torch.zeros(5000, dtype=torch.int32), "err": torch.zeros(5000),
           "burst": torch.zeros(5000)}
    prev, capacities = 0, [stats.capacity]
    for n in range(64, 5001, 97):
        if n > stats.capacity:
            before = stats.export(1, prev)
            stats.ensure_capacity(n)
            after = stats.export(1, prev)
            assert all(torch.equal(before[k], after[k]) for k in before)
            capacities.append(stats.capacity)
        grad = torch.rand(n, generator=g)
        visible = torch.rand(n, generator=g) < 0.5
        err = torch.rand(n, generator=g) * (torch.rand(n, generator=g) < 0.3)
        stats.accumulate(1, grad.to(DEVICE), visible.to(DEVICE), err.to(DEVICE))
        ref["grad"][:n] += torch.where(visible, grad, torch.zeros(()))
        ref["count"][:n] += visible.int()
        ref["err"][:n] += err
        ref["burst"][:n] = torch.maximum(ref["burst"][:n], err)
        prev = n
    # 51 growing steps, 6 rebuilds: 161 needs 256, then doubling up to 8192 >= 5000
    assert capacities == [64] + [256 * 2**i for i in range(6)] and stats.rebuilds == 6
    out = stats.export(1, 5000)
    for key, value in ref.items():
        assert torch.equal(out[key].cpu(), value), key
    assert stats.active(0) == 0


def test_pool_size_from_the_gaussian_cap():
    from stavatar_ti.temporal.stats import pool_gb

    # paper config: 13 windows x 200,000 -> 16 x 4096 pointer slots, 13 x 4096 nodes of 1032 bytes
    tree = 16 * 4096 * 8 + 13 * 4096 * 1032
    assert 2 * tree / 2**30 + 0.5 < 1.0 and pool_gb(13, 200_000) == 1.0  # Taichi's default suffices
    # 13 x 10M: 16 x 262144 slots, 13 x 262144 nodes
    tree = 16 * 262144 * 8 + 13 * 262144 * 1032
    assert pool_gb(13, 10_000_000) == math.ceil((2 * tree / 2**30 + 0.5) * 8) / 8 == 7.125


def test_temporal_densifier_builds_stats_at_the_cap(device):
    from types import SimpleNamespace

    from stavatar_ti.temporal import TemporalADC

    cfg = SimpleNamespace(k_max=4, max_gaussians=3000)
    adc = TemporalADC(cfg, quirks=None, extent=1.0, table=None, device=device)
    assert adc.stats.capacity >= 3000 and adc.stats.max_clusters == 5 and adc.stats.rebuilds == 0
    assert all(adc.stats.active(k) == 0 for k in range(5))
    adc.stats.accumulate(2, torch.ones(2999, device=device), torch.ones(2999, dtype=torch.bool, device=device),
                         torch.zeros(2999, device=device))
    assert adc.stats.rebuilds == 0 and adc.stats.active(2) == 2999
