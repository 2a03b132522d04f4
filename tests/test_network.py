"""Tests for stavatar_ti.model (uv_network, unet, offsets): the dual-branch UV network, offset activations and θ* (method.md §5, §6)."""

import math

import pytest
import torch
import torch.nn.functional as F

from stavatar_ti.geometry import quat_to_matrix
from stavatar_ti.model.offsets import (OffsetActivation, activate_offsets, axis_angle_to_quat, compose_final,
                                       unpack_offsets)
from stavatar_ti.model.unet import FourierEncoder
from stavatar_ti.model.uv_network import UVNetwork, network_pose

S = 32  # small maps for speed; the architecture is resolution independent


def _make_net(size=S, n_expr=100, seed=0, dtype=torch.float32):
    torch.manual_seed(seed)
    net = UVNetwork(uv_size=size, n_expr=n_expr).to(dtype)
    g = torch.Generator().manual_seed(seed + 1)
    ref = torch.rand(1, 3, 2 * size, 2 * size, generator=g, dtype=dtype)
    uv_pos = torch.rand(1, 3, size, size, generator=g, dtype=dtype)
    masks = torch.zeros(1, 4, size, size, dtype=dtype)
    masks[0, 0, 4:10, 4:28] = 1.0   # eye region
    masks[0, 1, 10:18, 12:20] = 1.0  # nose
    masks[0, 2, 19:24, 10:22] = 1.0  # lips
    masks[0, 3, 0:3, 2:30] = 1.0    # forehead
    net.set_inputs(ref, uv_pos, masks)
    return net


def _frame(B=1, size=S, n_expr=100, seed=2, dtype=torch.float32):
    g = torch.Generator().manual_seed(seed)
    return (torch.rand(B, 3, size, size, generator=g, dtype=dtype),
            torch.randn(B, n_expr, generator=g, dtype=dtype),
            0.3 * torch.randn(B, 15, generator=g, dtype=dtype),
            0.1 * torch.randn(B, 3, generator=g, dtype=dtype))


# ---------------------------------------------------------------------------------------------- §5.2

def test_fourier_encoder_layout():
    enc = FourierEncoder()
    assert sum(p.numel() for p in enc.parameters()) == 0
    x = torch.rand(2, 3, 4, 5, dtype=torch.float64)
    y = enc(x)
    assert y.shape == (2, 39, 4, 5) and enc.out_channels(3) == 39
    freqs = [10 ** (k / 5) for k in range(6)]
    assert freqs[0] == 1.0 and abs(freqs[-1] - 10.0) < 1e-12
    torch.testing.assert_close(y[:, :3], x)
    for c in range(3):
        for k, f in enumerate(freqs):
            torch.testing.assert_close(y[:, 3 + c * 6 + k], torch.sin(2 * math.pi * f * x[:, c]), rtol=0, atol=1e-6)
            torch.testing.assert_close(y[:, 21 + c * 6 + k], torch.cos(2 * math.pi * f * x[:, c]), rtol=0, atol=1e-6)


# ---------------------------------------------------------------------------------------------- sizes

def test_parameter_count_exact():
    net = UVNetwork(uv_size=256, n_expr=100)  # no forward pass needed
    count = lambda m: sum(p.numel() for p in m.parameters())
    unet, total = count(net.image_encoder), count(net)
    # U-Net (§5.3), convs without bias: inc 3·32·9+32·64·9, down1 64·128·9+128·128·9, down2
    # 128·256·9+256·256·9, down3 2·256·256·9, up1 512·256·9+256·128·9, up2 256·128·9+128·64·9,
    # up3 128·64·9+64·64·9
    assert unet == 19_296 + 221_184 + 884_736 + 1_179_648 + 1_474_560 + 368_640 + 110_592 == 4_258_656
    assert count(net.pos_stem) == count(net.disp_stem) == 39 * 64 * 9 + 64 == 22_528
    assert count(net.expr_embed) + count(net.pose_embed) + count(net.trans_embed) == 9_696 + 256 + 64
    assert count(net.global_decoder) == (256 * 256 * 9 + 256) + (256 * 128 * 9 + 128) == 885_120
    assert count(net.local_expr_embed) + count(net.local_decoder) == 6_464 + 110_656 + 36_928 + 4_160 == 158_208
    assert count(net.fusion) == (384 * 128 * 9 + 128) + (128 * 64 * 9 + 64) + (64 * 13 + 13) == 517_133
    assert total - unet == 1_615_533
    assert total == 5_874_189  # method.md §5: ≈ 5.87 M (U-Net 4.26 M, rest 1.62 M)
    # the count does not depend on S; n_expr changes only the two expression Linears
    assert count(UVNetwork(uv_size=32)) == 5_874_189
    assert count(UVNetwork(uv_size=32, n_expr=50)) == 5_874_189 - 50 * (96 + 64)


def test_output_shape_and_n_expr():
    net = _make_net()
    out = net(*_frame(B=2))
    assert out.shape == (2, 13, S, S) and out.dtype == torch.float32
    net50 = _make_net(n_expr=50)
    assert net50(*_frame(B=1, n_expr=50)).shape == (1, 13, S, S)


# ---------------------------------------------------------------------------------------------- §5.8

def test_init_statistics_and_identity_offsets():
    net = UVNetwork(uv_size=64)
    for name, m in net.named_modules():
        if isinstance(m, (torch.nn.Conv2d, torch.nn.Linear)):
            w = m.weight.detach()
            if w.numel() >= 2000:
                assert abs(w.std().item() - 0.01) < 0.001, name
                assert abs(w.mean().item()) < 0.001, name
            else:
                assert w.abs().max().item() < 0.01 * 6, name
            if name.startswith("image_encoder"):
                assert m.bias is None, name  # §5.3: U-Net convs have no bias
            else:
                assert m.bias is not None and torch.count_nonzero(m.bias) == 0, name
    net = _make_net()
    out = net(*_frame(B=1))
    assert out.abs().max().item() < 1e-3  # O ≈ 0
    raw = out.permute(0, 2, 3, 1)  # per-texel [1,S,S,13], as if looked up per Gaussian
    act = activate_offsets(raw)
    assert act["delta_means"].abs().max() < 1e-4
    assert (act["delta_scales"] - 1).abs().max() < 1e-3
    ident = torch.tensor([1.0, 0.0, 0.0, 0.0])
    assert (act["delta_quats"] - ident).abs().max() < 1e-2
    assert act["delta_sh_dc"].abs().max() < 1e-3
    assert act["delta_opacities"].abs().max() < 1e-3


# ---------------------------------------------------------------------------------------------- §5.6

def test_region_masking_local_branch():
    net = _make_net()
    masks = net.region_masks
    union = masks.amax(1, keepdim=True)  # [1,1,S,S]
    uv_disp, expr, pose, trans = _frame(B=1)
    with torch.no_grad():
        d3, _ = net.constant_features()
        disp_feat = net.disp_stem(net.fourier(uv_disp))
        local = net.local_branch(disp_feat, d3, expr)  # [1,4,64,S,S]
        for r in range(4):
            outside = masks[0, r] == 0
            assert torch.count_nonzero(local[0, r][:, outside]) == 0
            assert torch.count_nonzero(local[0, r][:, ~outside]) > 0

        # uv_disp enters O only through the masked local branch: editing it at texels whose 3×3
        # neighbourhood (the disp stem's receptive field) lies outside every mask leaves O unchanged.
        near = F.max_pool2d(union, 3, stride=1, padding=1) > 0
        edited = torch.where(near, uv_disp, uv_disp + 5.0 * torch.rand_like(uv_disp))
        assert torch.count_nonzero(edited - uv_disp) > 0
        base = net(uv_disp, expr, pose, trans)
        assert torch.equal(net(edited, expr, pose, trans), base)
        # ...while editing inside a mask does change it
        inside = torch.where(union > 0, uv_disp + 1.0, uv_disp)
        assert not torch.allclose(net(inside, expr, pose, trans), base, rtol=0, atol=1e-9)
        # and with all masks empty, uv_disp has no influence at all
        net.region_masks.zero_()
        assert torch.equal(net(edited + 1.0, expr, pose, trans), net(uv_disp, expr, pose, trans))


def test_forward_matches_dense_reference():
    """forward (constant channels folded, local branch on mask tiles) = forward_dense, values and
    gradients, also for sizes that are not a multiple of the tile, masks at the map border, a batch,
    and after the masks change in place (the cached tile layout follows them)."""
    for size, B in ((40, 2), (32, 1)):
        net = _make_net(size=size, dtype=torch.float64)
        with torch.no_grad():
            for p in net.parameters():  # O(1) activations, so that every term matters
                p.normal_(0.0, 0.1)
        frame = _frame(B=B, size=size, dtype=torch.float64)
        for edit in (None, "erase_nose", "all_empty"):
            with torch.no_grad():
                if edit == "erase_nose":
                    net.region_masks[0, 1] = 0.0
                    net.region_masks[0, 2, size - 3:, :] = 1.0  # lips now touch the bottom border
                elif edit == "all_empty":
                    net.region_masks.zero_()
            dense = net.forward_dense(*frame)
            fast = net(*frame)
            torch.testing.assert_close(fast, dense, rtol=1e-12, atol=1e-9 * float(dense.detach().abs().max()))
            w = torch.randn(dense.shape, generator=torch.Generator().manual_seed(3), dtype=dense.dtype)
            params = list(net.parameters())
            g_dense = torch.autograd.grad((dense * w).sum(), params)
            g_fast = torch.autograd.grad((fast * w).sum(), params, allow_unused=True)
            for (name, _), a, b in zip(net.named_parameters(), g_dense, g_fast):
                b = torch.zeros_like(a) if b is None else b  # unused: the local branch with empty masks
                torch.testing.assert_close(b, a, rtol=1e-10, atol=1e-10 * float(a.abs().max()) + 1e-300,
                                           msg=name)


# ---------------------------------------------------------------------------------------------- cache

def test_cached_eval_equals_uncached():
    net = _make_net()
    frame = _frame(B=2)
    net.train()
    with torch.no_grad():
        out_train = net(*frame)
    assert net._cache is None  # training never caches
    net.eval()
    with torch.no_grad():
        first = net(*frame)   # computes and caches
        assert net._cache is not None
        cached = net(*frame)  # reuses the cache
        net.clear_cache()
        assert net._cache is None
        uncached = net(*frame)
    assert torch.equal(cached, uncached) and torch.equal(first, cached)
    torch.testing.assert_close(out_train, uncached, rtol=0, atol=0)
    # the cache really is used: a weight edit in eval mode shows only after clear_cache()
    with torch.no_grad():
        net.image_encoder.inc[0].weight.mul_(3.0)
        assert torch.equal(net(*frame), cached)
        net.clear_cache()
        assert not torch.equal(net(*frame), cached)
        net.train()  # train()/eval() also drop the cache
        assert net._cache is None


def test_state_dict_round_trip():
    net = _make_net()
    sd = net.state_dict()
    for key in ("ref_image", "uv_pos", "region_masks"):
        assert key in sd
    other = UVNetwork(uv_size=S)
    with pytest.raises(RuntimeError):
        other(*_frame())
    other.load_state_dict(sd)
    net.eval(), other.eval()
    with torch.no_grad():
        assert torch.equal(net(*_frame()), other(*_frame()))


# ---------------------------------------------------------------------------------------------- inputs

def test_set_inputs_resizes_and_validates():
    net = UVNetwork(uv_size=S)
    ref = torch.rand(3, 100, 77)
    uv_pos, masks = torch.rand(3, S, S), torch.ones(4, S, S)
    net.set_inputs(ref, uv_pos, masks)
    want = F.interpolate(ref[None], size=(S, S), mode="bilinear", align_corners=False, antialias=True)
    torch.testing.assert_close(net.ref_image, want.clamp(0, 1))
    torch.testing.assert_close(net.uv_pos, uv_pos[None])
    assert net.ref_image.shape == (1, 3, S, S) and net.region_masks.shape == (1, 4, S, S)
    with pytest.raises(ValueError, match="ref_image"):
        net.set_inputs(torch.rand(1, 4, S, S), uv_pos, masks)
    with pytest.raises(ValueError, match="ref_image"):
        net.set_inputs(2.0 + torch.rand(3, S, S), uv_pos, masks)
    with pytest.raises(ValueError, match="uv_pos"):
        net.set_inputs(ref, torch.rand(1, 3, S + 1, S), masks)
    with pytest.raises(ValueError, match="region_masks"):
        net.set_inputs(ref, uv_pos, torch.ones(1, 3, S, S))
    uv_disp, expr, pose, trans = _frame()
    with pytest.raises(ValueError, match="uv_disp"):
        net(uv_disp[:, :2], expr, pose, trans)
    with pytest.raises(ValueError, match="expr"):
        net(uv_disp, expr[:, :50], pose, trans)
    with pytest.raises(ValueError, match="pose"):
        net(uv_disp, expr, pose[:, :12], trans)
    with pytest.raises(ValueError, match="trans"):
        net(uv_disp, expr, pose, torch.zeros(2, 3))


def test_network_pose_order():
    rot, neck, jaw = torch.full((2, 3), 1.0), torch.full((2, 3), 2.0), torch.full((2, 3), 3.0)
    eyes = torch.full((2, 6), 4.0)
    pose = network_pose(rot, neck, jaw, eyes)
    assert pose.shape == (2, 15)
    expected = torch.tensor([2.0] * 3 + [3.0] * 3 + [4.0] * 6 + [1.0] * 3).expand(2, 15)
    assert torch.equal(pose, expected)
    with pytest.raises(ValueError, match="eyes_pose"):
        network_pose(rot, neck, jaw, eyes[:, :3])


# ---------------------------------------------------------------------------------------------- gradients

def test_gradients_reach_every_parameter():
    net = _make_net()
    net.train()
    out = net(*_frame(B=2))
    g = torch.Generator().manual_seed(5)
    loss = (out * torch.randn(out.shape, generator=g)).sum()
    loss.backward()
    for name, p in net.named_parameters():
        assert p.grad is not None, name
        assert torch.isfinite(p.grad).all(), name
        assert p.grad.abs().max() > 0, name


# ---------------------------------------------------------------------------------------------- §5.9

def test_axis_angle_to_quat_values_and_gradcheck():
    zero = torch.zeros(3, dtype=torch.float64)
    assert torch.equal(axis_angle_to_quat(zero), torch.tensor([1.0, 0, 0, 0], dtype=torch.float64))
    tiny = torch.tensor([1e-7, -2e-7, 3e-7], dtype=torch.float64)
    q_tiny = axis_angle_to_quat(tiny)  # ≈ (1 − θ²/8, aa/2)
    torch.testing.assert_close(q_tiny, torch.cat([torch.ones(1, dtype=torch.float64), tiny / 2]), rtol=0, atol=1e-13)
    torch.testing.assert_close(q_tiny[0], torch.tensor(1.0 - 14e-14 / 8, dtype=torch.float64), rtol=0, atol=1e-16)
    aa = torch.tensor([[0.0, 0.0, math.pi / 2], [math.pi, 0.0, 0.0], [0.3, -0.5, 1.2]], dtype=torch.float64)
    q = axis_angle_to_quat(aa)
    c = math.cos(math.pi / 4)
    torch.testing.assert_close(q[0], torch.tensor([c, 0, 0, c], dtype=torch.float64))
    torch.testing.assert_close(q[1], torch.tensor([0.0, 1.0, 0, 0], dtype=torch.float64), rtol=0, atol=1e-15)
    torch.testing.assert_close(q.norm(dim=-1), torch.ones(3, dtype=torch.float64))
    # continuity across the Taylor / exact switch (θ = 1e-3)
    d = torch.tensor([0.6, 0.0, 0.8], dtype=torch.float64)
    for theta in (1e-3 * (1 - 1e-9), 1e-3, 1e-3 * (1 + 1e-9), 1e-4, 1e-2):
        exact = torch.cat([torch.tensor([math.cos(theta / 2)], dtype=torch.float64), d * math.sin(theta / 2)])
        torch.testing.assert_close(axis_angle_to_quat(d * theta), exact, rtol=0, atol=2e-16)
    # gradients: exactly at zero (no NaN), tiny, and away from zero
    for x in (zero, tiny, aa[2], d * 1e-3, torch.tensor([2.0, -1.5, 2.5], dtype=torch.float64)):
        x = x.clone().requires_grad_(True)
        assert torch.autograd.gradcheck(axis_angle_to_quat, (x,))
    x = zero.clone().requires_grad_(True)
    axis_angle_to_quat(x).sum().backward()
    assert torch.isfinite(x.grad).all()
    torch.testing.assert_close(x.grad, torch.full((3,), 0.5, dtype=torch.float64))  # d(aa/2)/d aa


def test_activate_offsets_gradcheck():
    for raw in (torch.zeros(2, 13, dtype=torch.float64), torch.randn(2, 13, dtype=torch.float64)):
        raw = raw.requires_grad_(True)
        assert torch.autograd.gradcheck(lambda r: activate_offsets(r)["packed"], (raw,))


def test_activation_ranges():
    g = torch.Generator().manual_seed(0)
    raw = torch.cat([torch.full((1, 13), 1e3), torch.full((1, 13), -1e3), 1e3 * torch.randn(64, 13, generator=g),
                     torch.randn(64, 13, generator=g)])
    act = OffsetActivation()(raw)
    packed = act["packed"]
    assert packed.shape == (130, 14)
    assert not torch.isnan(packed).any()
    assert (act["delta_means"].abs() <= 0.1).all()
    assert (act["delta_scales"] >= 0).all()  # exp: float overflow gives inf/0 at ±1e3 ...
    mid = activate_offsets(torch.tensor([[0.0] * 3 + [-20.0, 0.0, 20.0] + [0.0] * 7]))["delta_scales"]
    assert torch.isfinite(mid).all() and (mid > 0).all()  # ... but moderate inputs stay in (0, ∞)
    assert (act["delta_axis_angle"].abs() <= math.pi).all()
    torch.testing.assert_close(act["delta_quats"].norm(dim=-1), torch.ones(130))
    assert (act["delta_sh_dc"].abs() <= 0.7).all()
    assert (act["delta_opacities"].abs() <= 0.5).all()
    # saturation values
    torch.testing.assert_close(act["delta_means"][0], torch.full((3,), 0.1))
    torch.testing.assert_close(act["delta_sh_dc"][1], torch.full((3,), -0.7))
    torch.testing.assert_close(act["delta_opacities"][:2], torch.tensor([0.5, -0.5]))
    # packed slots (§5.9 "final slot")
    un = unpack_offsets(packed)
    for key in ("delta_means", "delta_scales", "delta_quats", "delta_sh_dc", "delta_opacities"):
        assert torch.equal(un[key], act[key]), key
    # any leading shape
    assert activate_offsets(torch.zeros(2, 5, 13))["packed"].shape == (2, 5, 14)
    with pytest.raises(ValueError, match="raw"):
        activate_offsets(torch.zeros(4, 12))


# ---------------------------------------------------------------------------------------------- §6

def test_compose_final_by_hand():
    h = math.sqrt(0.5)
    at = math.atanh(0.5)
    N, K = 3, 16
    g = torch.Generator().manual_seed(3)
    coarse = {
        "means": torch.tensor([[0.0, 0.0, 0.0], [1.0, 2.0, 3.0], [-1.0, 0.5, 0.0]]),
        "scales": torch.tensor([[0.01, 0.02, 0.03], [1.0, 1.0, 1.0], [0.5, 0.25, 2.0]]),
        # 90° about x; a non-unit identity; 90° about y
        "quats": torch.tensor([[h, h, 0.0, 0.0], [2.0, 0.0, 0.0, 0.0], [h, 0.0, h, 0.0]]),
        "sh": torch.randn(N, K, 3, generator=g),
        "opacities": torch.tensor([0.3, 0.8, 0.2]),
        "binding": torch.tensor([5, 6, 7]),
    }
    sh_before = coarse["sh"].clone()
    raw = torch.zeros(N, 13)
    raw[0, 8] = at            # rotation: π·tanh = π/2 about z
    raw[1, 0:3] = torch.tensor([at, -at, 0.0])  # δμ = (0.05, -0.05, 0)
    raw[1, 3:6] = torch.tensor([math.log(2.0), 0.0, -math.log(4.0)])  # δs = (2, 1, 0.25)
    raw[1, 9:12] = torch.tensor([at, 0.0, -at])  # δc = (0.35, 0, -0.35)
    raw[1, 12] = 50.0         # δα = +0.5 -> 0.8 + 0.5 clamps to 1
    raw[2, 12] = -50.0        # δα = -0.5 -> 0.2 - 0.5 clamps to 0
    raw[2, 6] = -at           # -90° about x, applied after +90° about y
    act = activate_offsets(raw)
    out = compose_final(coarse, act)

    # Gaussian 0: Rz(90°) after Rx(90°) = (0.5, 0.5, 0.5, 0.5), the 120° turn about (1,1,1)
    torch.testing.assert_close(out["quats"][0], torch.tensor([0.5, 0.5, 0.5, 0.5]))
    Rx = torch.tensor([[1.0, 0, 0], [0, 0, -1], [0, 1, 0]])
    Rz = torch.tensor([[0.0, -1, 0], [1, 0, 0], [0, 0, 1]])
    torch.testing.assert_close(quat_to_matrix(out["quats"][0]), Rz @ Rx, rtol=0, atol=1e-6)
    # Gaussian 2: Rx(-90°) ⊗ Ry(90°): (h,-h,0,0)⊗(h,0,h,0) = (0.5, -0.5, 0.5, -0.5)
    torch.testing.assert_close(out["quats"][2], torch.tensor([0.5, -0.5, 0.5, -0.5]))
    Ry = torch.tensor([[0.0, 0, 1], [0, 1, 0], [-1, 0, 0]])
    torch.testing.assert_close(quat_to_matrix(out["quats"][2]), Rx.T @ Ry, rtol=0, atol=1e-6)
    # Gaussian 1: identity rotation, normalised
    torch.testing.assert_close(out["quats"][1], torch.tensor([1.0, 0, 0, 0]))

    torch.testing.assert_close(out["means"], coarse["means"] + torch.tensor([[0, 0, 0], [0.05, -0.05, 0], [0, 0, 0]]))
    torch.testing.assert_close(out["scales"][1], torch.tensor([2.0, 1.0, 0.25]))
    torch.testing.assert_close(out["scales"][[0, 2]], coarse["scales"][[0, 2]])
    torch.testing.assert_close(out["sh"][1, 0], sh_before[1, 0] + torch.tensor([0.35, 0.0, -0.35]))
    torch.testing.assert_close(out["sh"][[0, 2]], sh_before[[0, 2]])
    assert torch.equal(out["sh"][:, 1:], sh_before[:, 1:])  # higher bands untouched
    assert torch.equal(coarse["sh"], sh_before)               # not modified in place
    torch.testing.assert_close(out["opacities"], torch.tensor([0.3, 1.0, 0.0]))
    assert torch.equal(out["binding"], coarse["binding"])
    # the packed form gives the same result
    out_p = compose_final(coarse, act["packed"])
    for key in ("means", "scales", "quats", "sh", "opacities"):
        assert torch.equal(out_p[key], out[key]), key
    with pytest.raises(ValueError, match="quats"):
        compose_final({**coarse, "quats": torch.zeros(N, 3)}, act)
    with pytest.raises(ValueError, match="delta_means"):
        compose_final(coarse, {k: v[:2] for k, v in act.items()})


def test_compose_final_gradients():
    N = 4
    g = torch.Generator().manual_seed(1)
    coarse = {"means": torch.randn(N, 3, generator=g), "scales": torch.rand(N, 3, generator=g) + 0.1,
              "quats": torch.randn(N, 4, generator=g), "sh": torch.randn(N, 4, 3, generator=g),
              "opacities": 0.25 + 0.5 * torch.rand(N, generator=g)}
    coarse = {k: v.double().requires_grad_(True) for k, v in coarse.items()}
    raw = (0.3 * torch.randn(N, 13, generator=g)).double().requires_grad_(True)
    out = compose_final(coarse, activate_offsets(raw))
    sum(v.sum() * (i + 1) for i, v in enumerate(out.values())).backward()
    for k, v in coarse.items():
        assert v.grad is not None and torch.isfinite(v.grad).all(), k
    assert raw.grad is not None and (raw.grad.abs() > 0).all()
