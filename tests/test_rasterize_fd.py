"""Finite differences on the Taichi kernels themselves (float32, CPU backend).

The scene is chosen smooth: a few large Gaussians well separated in depth that cover the whole
image with alpha in (1/255, 0.99) everywhere and no early stop, so no discrete decision flips under
the perturbation and central differences are accurate to O(eps^2) plus float32 rounding.
"""

import pytest
import torch

import stavatar_ti

W, H = 23, 19


def smooth_scene(sh: bool):
    g = torch.Generator().manual_seed(1)
    n = 4
    means = torch.randn(n, 3, generator=g) * 0.05
    means[:, 2] += 3.0 + 0.3 * torch.arange(n)
    s = dict(means=means, quats=torch.randn(n, 4, generator=g), scales=torch.rand(n, 3, generator=g) * 0.2 + 0.5,
             opacities=torch.rand(n, generator=g) * 0.3 + 0.2, background=torch.tensor([0.3, 0.6, 0.9]))
    if sh:
        s["sh"] = torch.randn(n, 16, 3, generator=g) * 0.3
    else:
        s["colors"] = torch.rand(n, 3, generator=g)
    viewmat = torch.eye(4)
    viewmat[:3, 3] = torch.tensor([0.01, -0.02, 0.2])
    K = torch.tensor([[40.0, 0, 11.0], [0, 45.0, 9.0], [0, 0, 1]])
    return s, viewmat, K


@pytest.mark.parametrize("sh", [False, True])
def test_directional_derivatives_match_central_differences(sh, device):
    params, viewmat, K = smooth_scene(sh)
    params, viewmat, K = {k: v.to(device) for k, v in params.items()}, viewmat.to(device), K.to(device)
    g = torch.Generator().manual_seed(2)
    w_img = torch.rand(H, W, 3, generator=g).double().to(device)
    w_alpha = torch.rand(H, W, generator=g).double().to(device)

    def loss(p):
        out = stavatar_ti.rasterize(**p, viewmat=viewmat, K=K, width=W, height=H)
        return (out.image.double() * w_img).sum() + (out.alpha.double() * w_alpha).sum()  # f64 sum: less noise

    leaves = {k: v.clone().requires_grad_() for k, v in params.items()}
    loss(leaves).backward()
    eps = 1e-2
    for name, leaf in leaves.items():
        d = torch.randn(leaf.shape, generator=g).to(device)
        with torch.no_grad():
            plus = {k: (v + eps * d if k == name else v) for k, v in params.items()}
            minus = {k: (v - eps * d if k == name else v) for k, v in params.items()}
            fd = float(loss(plus) - loss(minus)) / (2 * eps)
        analytic = float((leaf.grad * d).sum())
        assert abs(fd - analytic) <= 3e-3 * abs(analytic) + 1e-3, (name, fd, analytic)
