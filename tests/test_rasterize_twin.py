"""The Taichi rasterizer (float32, CPU backend) against the float64 torch twin in tests/reference.py.

Forward: image, alpha, radii (+-1), means2d, depths, pixel_count, blend_weight.
Backward: means, quats, scales, opacities, colors / sh, background and the means2d retain-grad path,
with a random cotangent on image and alpha.
"""

import math

import pytest
import torch

import stavatar_ti
from reference import reference_rasterize

PARAMS = ("means", "quats", "scales", "opacities", "colors", "sh", "background")


def make_scene(n, width, height, seed, *, sh_degree=None, cx=None, cy=None, background=False, spread=0.6,
               scale=(0.01, 0.08)):
    g = torch.Generator().manual_seed(seed)
    fx = fy = 1.2 * max(width, height)
    z = 2.0 + 3.0 * torch.rand(n, generator=g)
    xy = (torch.rand(n, 2, generator=g) - 0.5) * spread * z[:, None] * torch.tensor([width, height]) / fx * 2
    s = dict(
        means=torch.cat([xy, z[:, None]], 1),
        quats=torch.randn(n, 4, generator=g),
        scales=torch.exp(torch.empty(n, 3).uniform_(math.log(scale[0]), math.log(scale[1]), generator=g)),
        opacities=torch.rand(n, generator=g) * 0.98 + 0.01,
        viewmat=_viewmat(g),
        K=torch.tensor([[fx, 0.0, width / 2 if cx is None else cx], [0.0, fy, height / 2 if cy is None else cy],
                        [0.0, 0.0, 1.0]]),
        width=width, height=height,
    )
    # express the means in world coordinates of the random camera
    R, t = s["viewmat"][:3, :3], s["viewmat"][:3, 3]
    s["means"] = (s["means"] - t) @ R
    if sh_degree is None:
        s["colors"] = torch.rand(n, 3, generator=g)
    else:
        s["sh"] = torch.randn(n, (sh_degree + 1) ** 2, 3, generator=g) * 0.4
        s["sh_degree"] = sh_degree
    if background:
        s["background"] = torch.rand(3, generator=g)
    return s


def _viewmat(g):
    """A camera with a small random rotation and translation (so W != I is exercised)."""
    axis = torch.randn(3, generator=g)
    angle = 0.3 * torch.rand(1, generator=g)
    k = axis / axis.norm()
    Kx = torch.tensor([[0, -k[2], k[1]], [k[2], 0, -k[0]], [-k[1], k[0], 0]])
    R = torch.eye(3) + torch.sin(angle) * Kx + (1 - torch.cos(angle)) * Kx @ Kx
    V = torch.eye(4)
    V[:3, :3] = R
    V[:3, 3] = torch.randn(3, generator=g) * 0.1
    return V


def run_both(s, device, seed=0, checkpoint=False):
    """Render with Taichi on `device` and with the twin on the CPU; return (taichi out (on CPU),
    twin out, taichi grads, twin grads)."""
    leaves = {k: s[k].detach().to(device).clone().requires_grad_() for k in PARAMS if k in s}
    leaves64 = {k: s[k].detach().double().clone().requires_grad_() for k in PARAMS if k in s}
    fixed = {k: v for k, v in s.items() if k not in PARAMS}
    out = stavatar_ti.rasterize(**leaves, **{k: (v.to(device) if torch.is_tensor(v) else v) for k, v in fixed.items()})
    ref = reference_rasterize(**leaves64, **{k: (v.double() if torch.is_tensor(v) else v) for k, v in fixed.items()},
                              checkpoint=checkpoint)
    out.means2d.retain_grad()
    ref["means2d"].retain_grad()
    g = torch.Generator().manual_seed(seed + 1000)
    w_img = torch.randn(s["height"], s["width"], 3, generator=g, dtype=torch.float64)
    w_alpha = torch.randn(s["height"], s["width"], generator=g, dtype=torch.float64)
    ((out.image * w_img.float().to(device)).sum() + (out.alpha * w_alpha.float().to(device)).sum()).backward()
    ((ref["image"] * w_img).sum() + (ref["alpha"] * w_alpha).sum()).backward()
    grads = {k: v.grad.cpu() for k, v in leaves.items()}
    grads64 = {k: v.grad for k, v in leaves64.items()}
    grads["means2d"], grads64["means2d"] = out.means2d.grad.cpu(), ref["means2d"].grad
    out = type(out)(**{k: getattr(out, k).detach().cpu() for k in out.__dataclass_fields__})
    return out, ref, grads, grads64


def rel_err(a, b):
    return float((a.double() - b).norm() / b.norm().clamp_min(1e-12))


def assert_matches(s, out, ref, grads, grads64, *, grad_tol=1e-4, pixel_tol=1e-5, max_flips=0):
    """Outputs and gradients agree. `max_flips` pixels may differ by one discrete decision (an alpha
    within float32 rounding of 1/255 or of the stop threshold): at most ~1/255 in colour and one
    (pixel, Gaussian) pair in pixel_count each."""
    vis = ref["radii"] > 0
    # radii may differ by 1 (float32 vs float64 rounding under the ceil)
    assert ((out.radii.long() - ref["radii"]).abs() <= 1).all()
    assert torch.equal(out.radii > 0, vis)
    assert torch.allclose(out.depths.double(), ref["depths"], rtol=1e-5, atol=1e-6)
    assert torch.allclose(out.means2d[vis].double(), ref["means2d"][vis], rtol=1e-5, atol=1e-3)
    err = torch.maximum((out.image.double() - ref["image"]).abs().amax(-1), (out.alpha.double() - ref["alpha"]).abs())
    assert (err > pixel_tol).sum() <= max_flips and err.max() < (pixel_tol if max_flips == 0 else 5e-3)
    assert (out.pixel_count.long() - ref["pixel_count"]).abs().sum() <= max_flips
    blend_tol = 1e-4 if max_flips == 0 else 5e-3
    assert torch.allclose(out.blend_weight.double(), ref["blend_weight"], rtol=1e-4, atol=blend_tol)
    for k, g64 in grads64.items():
        if g64 is None or g64.norm() == 0:
            assert grads[k] is None or grads[k].abs().max() == 0, k
            continue
        assert grads[k] is not None, k
        assert rel_err(grads[k], g64) < grad_tol, (k, rel_err(grads[k], g64))


@pytest.mark.parametrize("n,width,height,seed", [
    (40, 64, 48, 0),
    (120, 37, 29, 1),    # not multiples of 16
    (60, 16, 16, 2),
    (30, 1, 1, 3),       # a single pixel
    (80, 100, 7, 4),     # one tile row, partial
])
def test_colors_match_twin(n, width, height, seed, device):
    s = make_scene(n, width, height, seed, spread=1.0 if width > 1 else 0.01)
    out, ref, grads, grads64 = run_both(s, device, seed)
    assert (out.radii > 0).sum() > 0 and out.pixel_count.sum() > 0
    # at 1x1 (fx = 1.2) every 2D covariance is the 0.3 low-pass plus ~1e-3 of signal, so float32
    # keeps only ~4 significant digits of the shape gradients
    assert_matches(s, out, ref, grads, grads64, grad_tol=1e-2 if width == 1 else 1e-4)


@pytest.mark.parametrize("degree", [0, 1, 2, 3])
def test_sh_degrees_match_twin(degree, device):
    s = make_scene(50, 48, 40, 10 + degree, sh_degree=degree, background=True)
    out, ref, grads, grads64 = run_both(s, device, degree)
    assert grads["sh"].abs().sum() > 0 and grads["background"].abs().sum() > 0
    assert_matches(s, out, ref, grads, grads64)


def test_sh_with_extra_coefficients_ignores_them(device):
    s = make_scene(30, 40, 32, 20, sh_degree=3)
    s["sh_degree"] = 1
    out, ref, grads, grads64 = run_both(s, device)
    assert_matches(s, out, ref, grads, grads64)
    assert grads["sh"][:, 4:].abs().max() == 0


@pytest.mark.parametrize("cx,cy", [(5.0, 40.0), (60.0, -3.0)])
def test_off_centre_principal_point(cx, cy, device):
    s = make_scene(80, 50, 38, 30, cx=cx, cy=cy, spread=1.5, background=True)
    out, ref, grads, grads64 = run_both(s, device)
    assert_matches(s, out, ref, grads, grads64)


def test_behind_offscreen_and_whole_image_gaussians(device):
    s = make_scene(60, 45, 33, 40, spread=3.0)  # many off-screen
    cam_R, cam_t = s["viewmat"][:3, :3], s["viewmat"][:3, 3]
    to_world = lambda p: (p - cam_t) @ cam_R  # noqa: E731
    s["means"][:5] = to_world(torch.tensor([[0.1, 0.0, -2.0], [0.0, 0.1, -0.5], [0.0, 0.0, 0.005],
                                            [0.2, -0.1, 0.3], [5.0, 0.0, 0.5]]))  # behind, near, close, off
    s["means"][5] = to_world(torch.tensor([0.0, 0.0, 2.5]))
    s["scales"][5] = torch.tensor([3.0, 2.5, 1.0])  # covers the whole image
    s["opacities"][5] = 0.6
    out, ref, grads, grads64 = run_both(s, device)
    assert (out.radii[:3] == 0).all() and out.radii[5] > 100
    assert out.pixel_count[5] == 45 * 33 or out.pixel_count[5] > 0.8 * 45 * 33
    assert ((out.radii == 0).sum() > 10)
    assert_matches(s, out, ref, grads, grads64)


def test_early_termination_dense_stack(device):
    """Many opaque Gaussians in a column: pixels stop early and alpha hits the 0.99 clamp (where the
    gradient must vanish); the backward must undo both exactly."""
    s = make_scene(150, 32, 32, 50, spread=0.3, scale=(0.1, 0.4))
    s["opacities"] = torch.linspace(0.9, 1.0, 150)
    out, ref, grads, grads64 = run_both(s, device)
    assert (out.alpha > 0.9999 - 1e-3).float().mean() > 0.3  # a good share of pixels terminate
    assert_matches(s, out, ref, grads, grads64)


@pytest.mark.slow
def test_5k_gaussians_200x150(device):
    s = make_scene(5000, 200, 150, 60, sh_degree=3, background=True, scale=(0.005, 0.04))
    out, ref, grads, grads64 = run_both(s, device, checkpoint=True)
    assert (out.radii > 0).sum() > 3500
    # ~6M (pixel, Gaussian) decisions: allow a few float32-vs-float64 threshold flips (1 seen)
    assert_matches(s, out, ref, grads, grads64, grad_tol=5e-4, max_flips=5)
