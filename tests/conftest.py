"""Test device selection: the suite runs on the CPU (x64) backend unless STAVATAR_TEST_DEVICE=cuda.

Taichi holds one arch per process, so a GPU run is a separate invocation:
    STAVATAR_TEST_DEVICE=cuda python3 -m pytest -q
Tests that only make sense on one device say so with a skip reason.
"""

import os

import pytest
import torch

DEVICE = os.environ.get("STAVATAR_TEST_DEVICE", "cpu")
# fast_math policy (docs/performance.md, "CUDA check"): on CUDA, fast_math replaces exp and division
# by approximations; the twin tests compare the kernels' math against float64 with no threshold flip
# allowed, so the suite runs with it off. Training keeps Taichi's default (on);
# scripts/gpu_check.sh reruns the twin tests with STAVATAR_FAST_MATH=1 to classify the differences.
if DEVICE == "cuda":
    os.environ.setdefault("STAVATAR_FAST_MATH", "0")


def pytest_configure(config):
    if DEVICE not in ("cpu", "cuda"):
        raise pytest.UsageError(f"STAVATAR_TEST_DEVICE: expected cpu or cuda, got {DEVICE!r}")
    if DEVICE == "cuda" and not torch.cuda.is_available():
        raise pytest.UsageError("STAVATAR_TEST_DEVICE=cuda but torch sees no CUDA device")


def pytest_collection_modifyitems(config, items):
    skip_cuda = pytest.mark.skip(reason="needs STAVATAR_TEST_DEVICE=cuda and a CUDA GPU")
    for item in items:
        if "cuda" in item.keywords and DEVICE != "cuda":
            item.add_marker(skip_cuda)


@pytest.fixture
def device() -> torch.device:
    """The device the Taichi kernels under test run on."""
    return torch.device(DEVICE)
