"""The Taichi runtime rules of stavatar_ti.render.runtime and the forward's host syncs:
no silent fallback to the CPU, cuda:0 and the default stream only, validation without extra syncs,
kernel warm-up. CUDA behaviour is simulated by monkeypatching on the CPU backend."""

import warnings
from types import SimpleNamespace

import pytest
import taichi as ti
import torch

import stavatar_ti
from conftest import DEVICE
from stavatar_ti.render import rasterization, runtime


@pytest.fixture
def fresh_runtime(monkeypatch):
    """runtime state as before any init, and a fake ti.init that records its arguments."""
    monkeypatch.setattr(runtime, "_state", {"arch": None, "options": {}})
    calls = []
    monkeypatch.setattr(runtime.ti, "init", lambda **kw: calls.append(kw))
    return calls


def test_init_refuses_to_fall_back(fresh_runtime, monkeypatch):
    def unsupported(**kw):
        fresh_runtime.append(kw)
        raise RuntimeError("Arch=[<Arch.cuda: 4>] is not supported\nmore detail")

    monkeypatch.setattr(runtime.ti, "init", unsupported)
    with pytest.raises(runtime.BackendError, match=r"^cuda: Taichi could not start its cuda backend \(Arch=\[<Arch.cuda: 4>\] "
                                                    r"is not supported\); refusing to fall back to the CPU$"):
        stavatar_ti.init("cuda")
    assert fresh_runtime[0]["enable_fallback"] is False and fresh_runtime[0]["arch"] == ti.cuda
    assert runtime.current_arch() is None


def test_init_checks_the_arch_taichi_started_on(fresh_runtime, monkeypatch):
    # ti.init honours TI_ARCH over its argument: a CUDA request that comes up on x64 is an error
    monkeypatch.setattr(runtime, "_started_arch", lambda: ti.x64)
    monkeypatch.setenv("TI_ARCH", "x64")
    with pytest.raises(runtime.BackendError, match=r"^cuda: Taichi started on x64 instead of cuda \(TI_ARCH='x64'\)"):
        stavatar_ti.init("cuda")
    assert runtime.current_arch() is None
    monkeypatch.setattr(runtime, "_started_arch", lambda: ti.cuda)
    stavatar_ti.init("cuda", device_memory_GB=3.0)
    assert runtime.current_arch() == "cuda" and fresh_runtime[-1]["device_memory_GB"] == 3.0


def test_init_options_from_the_environment(fresh_runtime, monkeypatch):
    monkeypatch.setattr(runtime, "_started_arch", lambda: ti.cuda)
    monkeypatch.setenv("STAVATAR_FAST_MATH", "0")
    monkeypatch.setenv("STAVATAR_DEVICE_MEMORY_GB", "2.5")
    monkeypatch.setenv("STAVATAR_CPU_THREADS", "1")
    stavatar_ti.init("cuda")
    kw = fresh_runtime[-1]
    assert kw["fast_math"] is False and kw["device_memory_GB"] == 2.5 and "cpu_max_num_threads" not in kw
    assert runtime.current_options() == {"fast_math": False, "device_memory_GB": 2.5}
    with pytest.warns(UserWarning, match=r"options \['fast_math'\] ignored"):  # fixed once Taichi runs
        stavatar_ti.init("cuda", fast_math=True)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        stavatar_ti.init("cuda", fast_math=False, device_memory_GB=2.5)  # what runs already: silent
    monkeypatch.setattr(runtime, "_state", {"arch": None, "options": {}})
    stavatar_ti.init("cuda", fast_math=True)  # explicit kwargs win over the environment
    assert fresh_runtime[-1]["fast_math"] is True
    monkeypatch.setattr(runtime, "_state", {"arch": None, "options": {}})
    monkeypatch.setenv("STAVATAR_FAST_MATH", "yes")
    with pytest.raises(ValueError, match="^STAVATAR_FAST_MATH: expected 0 or 1, got 'yes'"):
        stavatar_ti.init("cuda")


def test_cuda_device_index_must_be_zero():
    runtime.check_cuda_index(torch.device("cuda:0"), "means")
    runtime.check_cuda_index(torch.device("cuda"), "means")
    runtime.check_cuda_index(torch.device("cpu"), "means")
    with pytest.raises(ValueError, match=r"^means: on cuda:1, but Taichi's CUDA backend always runs on cuda:0"):
        runtime.check_cuda_index(torch.device("cuda:1"), "means")
    # checked before anything else, also before Taichi is initialised
    with pytest.raises(ValueError, match="^sh: on cuda:2"):
        runtime.ensure_device(torch.device("cuda:2"), "sh")


def test_non_default_stream_is_rejected(monkeypatch):
    runtime.check_default_stream(SimpleNamespace(cuda_stream=0), "means")
    with pytest.raises(ValueError, match=r"^means: the current torch CUDA stream is .*legacy default stream"):
        runtime.check_default_stream(SimpleNamespace(cuda_stream=0x5A5A), "means")
    # ensure_device consults torch's current stream when Taichi runs on CUDA
    monkeypatch.setattr(runtime, "_state", {"arch": "cuda", "options": {}})
    current = {"stream": SimpleNamespace(cuda_stream=0)}
    monkeypatch.setattr(torch.cuda, "current_stream", lambda device=None: current["stream"])
    runtime.ensure_device(torch.device("cuda:0"), "quats")
    current["stream"] = SimpleNamespace(cuda_stream=77)
    with pytest.raises(ValueError, match="^quats: the current torch CUDA stream"):
        runtime.ensure_device(torch.device("cuda:0"), "quats")


def _scene(n=60, seed=0):
    g = torch.Generator().manual_seed(seed)
    means = torch.randn(n, 3, generator=g) * 0.3
    means[:, 2] += 3.0
    s = dict(means=means, quats=torch.randn(n, 4, generator=g), scales=torch.rand(n, 3, generator=g) * 0.05 + 0.02,
             opacities=torch.rand(n, generator=g) * 0.9, sh=torch.randn(n, 16, 3, generator=g) * 0.3,
             viewmat=torch.eye(4), K=torch.tensor([[60.0, 0, 20], [0, 60.0, 15], [0, 0, 1]]))
    return {k: v.to(DEVICE) for k, v in s.items()}


class SyncCounter:
    """Counts the tensor -> host reads (each one a device sync on CUDA)."""

    METHODS = ("item", "tolist", "cpu", "numpy", "__bool__", "__int__", "__float__", "__index__")

    def __init__(self, monkeypatch):
        self.calls = []
        for name in self.METHODS:
            real = getattr(torch.Tensor, name)
            monkeypatch.setattr(torch.Tensor, name, self._wrap(name, real))

    def _wrap(self, name, real):
        def wrapper(t, *args, **kwargs):
            self.calls.append(name)
            return real(t, *args, **kwargs)
        return wrapper


@pytest.mark.parametrize("validate", [True, False])
def test_forward_has_exactly_one_host_sync(validate, monkeypatch):
    s = _scene()
    stavatar_ti.rasterize(**s, width=40, height=30)  # compile outside the count
    counter = SyncCounter(monkeypatch)
    out = stavatar_ti.rasterize(**s, width=40, height=30, validate=validate)
    assert counter.calls == ["tolist"]
    monkeypatch.undo()
    assert out.pixel_count.sum() > 0


def test_validation_switch_and_debug_mode(monkeypatch):
    s = _scene()
    s["means"] = s["means"].clone()
    s["means"][3, 0] = float("nan")
    s["scales"] = s["scales"].clone()
    s["scales"][5, 1] = -0.01
    with pytest.raises(ValueError, match="^means: contains NaN or inf$"):
        stavatar_ti.rasterize(**s, width=40, height=30)
    # without validation the bad rows are culled (memory-safe), the others render as before
    out = stavatar_ti.rasterize(**s, width=40, height=30, validate=False)
    assert out.radii[3] == 0 and (out.radii > 0).sum() > 30 and torch.isfinite(out.image).all()
    s["means"][3, 0] = 0.0
    with pytest.raises(ValueError, match=r"^scales: all entries must be > 0"):
        stavatar_ti.rasterize(**s, width=40, height=30)
    sh = s["sh"].clone()
    sh[7, 2, 0] = float("inf")  # named as sh, not as the colours computed from it
    with pytest.raises(ValueError, match="^sh: contains NaN or inf$"):
        stavatar_ti.rasterize(**{**s, "sh": sh}, width=40, height=30)
    monkeypatch.setenv("STAVATAR_DEBUG", "1")  # the debug mode validates every call
    with pytest.raises(ValueError, match=r"^scales: all entries must be > 0"):
        stavatar_ti.rasterize(**s, width=40, height=30, validate=False)


def test_warm_up_compiles_every_sh_degree(monkeypatch):
    from stavatar_ti.kernels import binning, projection, rasterize, scan, sh, sort

    seen = []
    real_launch = rasterization.SHColors.forward.__globals__["launch"]

    def spy(kernel, *args):
        if kernel in (sh.sh_fwd, sh.sh_bwd):
            seen.append((kernel.__name__, args[3]))
        return real_launch(kernel, *args)

    monkeypatch.setitem(rasterization.SHColors.forward.__globals__, "launch", spy)
    assert rasterization.warm_up(DEVICE) == [0, 1, 2, 3]
    assert sorted(set(seen)) == sorted((k, d) for k in ("sh_fwd", "sh_bwd") for d in range(4))
    monkeypatch.undo()
    kernels = [obj._primal for mod in (binning, projection, rasterize, scan, sh, sort) for obj in vars(mod).values()
               if hasattr(obj, "_primal") and hasattr(obj._primal, "compiled_kernels")]
    assert len(kernels) >= 12
    before = {id(k): len(k.compiled_kernels) for k in kernels}
    # a larger scene through every degree (as the SH schedule steps): nothing new is compiled
    s = _scene(n=3000, seed=1)
    for degree in range(4):
        leaves = {k: s[k].clone().requires_grad_() for k in ("means", "quats", "scales", "opacities", "sh")}
        out = stavatar_ti.rasterize(**leaves, viewmat=s["viewmat"], K=s["K"], width=200, height=150,
                                    sh_degree=degree)
        out.image.sum().backward()
    assert {id(k): len(k.compiled_kernels) for k in kernels} == before
    with pytest.raises(ValueError, match="^sh_degrees"):
        rasterization.warm_up(DEVICE, [4])
