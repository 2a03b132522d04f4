#!/usr/bin/env bash
# One command on a fresh machine: make a virtual environment, install stavatar_ti, train the
# embedded demo (synthetic sequence + configs/demo.yaml). Extra arguments go to scripts/train.py.
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
exec "$VENV/bin/python" scripts/train.py "$@"
