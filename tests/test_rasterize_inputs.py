"""Bad input, empty scenes, device rules and threading of stavatar_ti.rasterize (CPU backend)."""

import threading

import pytest
import torch

import stavatar_ti
from conftest import DEVICE
from stavatar_ti.render import runtime

OTHER = "cpu" if DEVICE == "cuda" else "cuda"


def scene(n=20, seed=0):
    """A small random scene with every tensor on the test device."""
    g = torch.Generator().manual_seed(seed)
    means = torch.randn(n, 3, generator=g) * 0.3
    means[:, 2] += 3.0
    s = dict(
        means=means, quats=torch.randn(n, 4, generator=g), scales=torch.rand(n, 3, generator=g) * 0.05 + 0.02,
        opacities=torch.rand(n, generator=g) * 0.9, colors=torch.rand(n, 3, generator=g),
        viewmat=torch.eye(4), K=torch.tensor([[60.0, 0, 20], [0, 60.0, 15], [0, 0, 1]]), width=40, height=30)
    return on_device(s)


def on_device(d):
    return {k: (v.to(DEVICE) if torch.is_tensor(v) else v) for k, v in d.items()}


def render(**kw):
    s = scene()
    s.update(on_device(kw))
    return stavatar_ti.rasterize(**s)


@pytest.mark.parametrize("kw,match", [
    (dict(means=torch.zeros(20, 2)), "means"),
    (dict(means=torch.zeros(20, 3, dtype=torch.float64)), "means"),
    (dict(means="x"), "means"),
    (dict(quats=torch.ones(19, 4)), "quats"),
    (dict(scales=torch.ones(20, 3, 1)), "scales"),
    (dict(opacities=torch.ones(20, 1)), "opacities"),
    (dict(colors=torch.ones(20, 4)), "colors"),
    (dict(viewmat=torch.eye(3)), "viewmat"),
    (dict(K=torch.eye(4)), "K"),
    (dict(width=0), "width"),
    (dict(height=12.5), "height"),
    (dict(background=torch.zeros(4)), "background"),
    (dict(near_plane=-1.0), "near_plane"),
    (dict(colors=None), "colors"),
    (dict(sh=torch.zeros(20, 4, 3)), "colors"),
])
def test_bad_shapes_types_and_arguments(kw, match):
    with pytest.raises(ValueError, match=match):
        render(**kw)


@pytest.mark.parametrize("name", ["means", "quats", "scales", "opacities", "colors", "viewmat", "K"])
@pytest.mark.parametrize("bad", [float("nan"), float("inf")])
def test_nan_and_inf_are_named(name, bad):
    s = scene()
    s[name] = s[name].clone()
    s[name].view(-1)[0] = bad
    with pytest.raises(ValueError, match=f"^{name}: contains NaN or inf"):
        stavatar_ti.rasterize(**s)


@pytest.mark.parametrize("kw,match", [
    (dict(scales=torch.full((20, 3), 0.1).index_fill_(0, torch.tensor([3]), 0.0)), "scales"),
    (dict(scales=-torch.full((20, 3), 0.1)), "scales"),
    (dict(opacities=torch.full((20,), 1.5)), "opacities"),
    (dict(quats=torch.zeros(20, 4)), "quats"),
    (dict(K=torch.tensor([[-60.0, 0, 20], [0, 60.0, 15], [0, 0, 1]])), "K"),
])
def test_bad_values(kw, match):
    with pytest.raises(ValueError, match=match):
        render(**kw)


def test_sh_arguments():
    with pytest.raises(ValueError, match="sh"):
        render(colors=None, sh=torch.zeros(20, 5, 3))  # not a square count
    with pytest.raises(ValueError, match="sh_degree"):
        render(colors=None, sh=torch.zeros(20, 16, 3), sh_degree=4)
    with pytest.raises(ValueError, match="sh"):
        render(colors=None, sh=torch.zeros(20, 4, 3), sh_degree=2)  # too few coefficients
    with pytest.raises(ValueError, match="sh_degree"):
        render(sh_degree=1)  # with colors
    # more coefficients than the degree needs is fine (3DGS's progressive SH degree)
    out = render(colors=None, sh=torch.zeros(20, 16, 3), sh_degree=1)
    assert out.image.shape == (30, 40, 3)


def _params(s):
    return {k: s[k].clone().requires_grad_() for k in ("means", "quats", "scales", "opacities", "colors")}


def _check_empty(out, s, params, background):
    bg = torch.zeros(3, device=DEVICE) if background is None else background.to(DEVICE)
    assert torch.equal(out.image, bg.expand(s["height"], s["width"], 3))
    assert torch.equal(out.alpha, torch.zeros(s["height"], s["width"], device=DEVICE))
    assert (out.radii == 0).all() and (out.pixel_count == 0).all() and (out.blend_weight == 0).all()
    (out.image.sum() + out.alpha.sum()).backward()
    for name, p in params.items():
        assert p.grad is not None and torch.equal(p.grad, torch.zeros_like(p)), name


@pytest.mark.parametrize("background", [None, torch.tensor([0.2, 0.5, 1.0])])
def test_zero_gaussians(background):
    s = scene(n=0)
    params = _params(s)
    out = stavatar_ti.rasterize(**params, viewmat=s["viewmat"], K=s["K"], width=40, height=30,
                                background=None if background is None else background.to(DEVICE))
    assert out.radii.shape == (0,) and out.means2d.shape == (0, 2)
    _check_empty(out, s, params, background)


@pytest.mark.parametrize("where", ["behind", "offscreen", "near"])
def test_everything_culled(where):
    s = scene()
    if where == "behind":
        s["means"][:, 2] = -s["means"][:, 2]
    elif where == "offscreen":
        s["means"][:, 0] += 50.0
    else:
        s["means"][:, 2] = 0.005  # in front of the camera but before near_plane=0.01
    params = _params(s)
    out = stavatar_ti.rasterize(**params, viewmat=s["viewmat"], K=s["K"], width=40, height=30,
                                background=torch.tensor([0.1, 0.2, 0.3], device=DEVICE))
    _check_empty(out, s, params, torch.tensor([0.1, 0.2, 0.3]))


def test_inputs_not_modified_and_no_stray_grad():
    s = scene()
    params = _params(s)
    before = {k: v.detach().clone() for k, v in params.items()}
    out = stavatar_ti.rasterize(**params, viewmat=s["viewmat"], K=s["K"], width=40, height=30)
    for k, v in params.items():
        assert torch.equal(v.detach(), before[k]) and v.grad is None, k  # no .grad side effect
    out.image.sum().backward()
    assert all(v.grad is not None for v in params.values())


def test_non_contiguous_inputs_match_contiguous():
    s = scene()
    ref = stavatar_ti.rasterize(**s)
    t = dict(s)
    t["means"] = torch.cat([s["means"], s["means"]], 1)[:, :3]  # non-contiguous view
    t["colors"] = s["colors"].t().contiguous().t()
    assert not t["means"].is_contiguous() and not t["colors"].is_contiguous()
    out = stavatar_ti.rasterize(**t)
    assert torch.equal(out.image, ref.image)


def test_backward_on_another_thread():
    """torch runs CUDA backward on worker threads; Taichi launches must work from any thread."""
    s = scene(n=50)
    params = _params(s)
    out = stavatar_ti.rasterize(**params, viewmat=s["viewmat"], K=s["K"], width=40, height=30)
    w = torch.linspace(0, 1, 3, device=DEVICE)
    loss = (out.image * w).sum()
    errors = []

    def work():
        try:
            loss.backward()
        except Exception as exc:  # noqa: BLE001 - reported below
            errors.append(exc)

    worker = threading.Thread(target=work)
    worker.start()
    worker.join()
    assert not errors, errors
    ref_params = _params(s)
    ref = stavatar_ti.rasterize(**ref_params, viewmat=s["viewmat"], K=s["K"], width=40, height=30)
    (ref.image * w).sum().backward()
    for k in params:
        assert torch.allclose(params[k].grad, ref_params[k].grad, atol=1e-6), k
        assert params[k].grad.abs().sum() > 0, k


def test_device_mismatch_is_a_clear_error():
    stavatar_ti.rasterize(**scene())  # initialises Taichi for the test device
    arch = runtime.current_arch()
    assert arch == ("cuda" if DEVICE == "cuda" else "x64")
    with pytest.raises(ValueError, match="arch"):
        stavatar_ti.init(OTHER)
    with pytest.raises(ValueError, match=f"^means: on {OTHER}, but Taichi was initialised for {arch}"):
        runtime.ensure_device(torch.device(OTHER), "means")
    with pytest.raises(ValueError, match="meta"):
        runtime.ensure_device(torch.device("meta"), "means")
    s = scene()
    s["K"] = s["K"].to("meta")
    with pytest.raises(ValueError, match="^K: on meta"):
        stavatar_ti.rasterize(**s)
