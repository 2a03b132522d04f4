"""The Taichi radix sort and prefix sum against torch (the oracle), CPU backend."""

import pytest
import torch

from stavatar_ti.render.sorting import exclusive_scan, radix_sort_pairs


@pytest.mark.parametrize("n,high,dtype,bits", [
    (1, 10, torch.int32, None),
    (1000, 7, torch.int32, 3),            # few distinct keys: long runs of ties
    (100_003, 2**31 - 1, torch.int32, None),
    (50_000, 2**20, torch.int32, 20),
    (30_000, 2**40, torch.int64, 40),     # more passes than int32 allows
    (70_001, 300, torch.int64, None),
])
def test_radix_sort_matches_stable_torch_sort(n, high, dtype, bits, device):
    g = torch.Generator().manual_seed(n)
    keys = torch.randint(0, high, (n,), generator=g, dtype=torch.int64).to(dtype)
    values = torch.randperm(n, generator=g).to(torch.int32)
    sorted_keys, sorted_values = radix_sort_pairs(keys.to(device), values.to(device), bits)
    sorted_keys, sorted_values = sorted_keys.cpu(), sorted_values.cpu()
    ref_keys, ref_idx = torch.sort(keys, stable=True)
    assert torch.equal(sorted_keys, ref_keys)
    assert torch.equal(sorted_values, values[ref_idx])  # stability: ties keep input order
    assert torch.equal(keys, torch.randint(0, high, (n,), generator=torch.Generator().manual_seed(n),
                                           dtype=torch.int64).to(dtype))  # input untouched


def test_radix_sort_float_depth_bits_order_like_floats(device):
    depths = torch.rand(20_000, generator=torch.Generator().manual_seed(0)) * 50 + 0.01
    depths[::7] = depths[3]  # duplicates
    keys = depths.view(torch.int32)
    _, order = radix_sort_pairs(keys.to(device), torch.arange(len(depths), dtype=torch.int32, device=device), 31)
    assert torch.equal(order.long().cpu(), torch.sort(depths, stable=True).indices)


def test_radix_sort_empty_and_bad_input(device):
    k, v = radix_sort_pairs(torch.zeros(0, dtype=torch.int32, device=device),
                            torch.zeros(0, dtype=torch.int32, device=device))
    assert k.numel() == 0 and v.numel() == 0
    with pytest.raises(ValueError, match="keys"):
        radix_sort_pairs(torch.zeros(3), torch.zeros(3, dtype=torch.int32))
    with pytest.raises(ValueError, match="values"):
        radix_sort_pairs(torch.zeros(3, dtype=torch.int32), torch.zeros(4, dtype=torch.int32))
    with pytest.raises(ValueError, match="num_bits"):
        radix_sort_pairs(torch.zeros(3, dtype=torch.int32), torch.zeros(3, dtype=torch.int32), 40)


@pytest.mark.parametrize("n", [0, 1, 63, 64, 65, 4096, 300_001])
def test_exclusive_scan_matches_cumsum(n, device):
    x = torch.randint(0, 50, (n,), generator=torch.Generator().manual_seed(n), dtype=torch.int32)
    expected = torch.cumsum(x.long(), 0) - x.long()
    assert torch.equal(exclusive_scan(x.to(device)).long().cpu(), expected)
