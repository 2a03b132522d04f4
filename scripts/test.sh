#!/usr/bin/env bash
# The test command (README "Test"; .ci/run calls exactly this): make or reuse a virtual environment,
# install the CPU torch 2.13.0 (+ torchvision 0.28.0, which lpips needs), stavatar_ti with the test
# extra (and the optional video extra) into it, and run the test suite with it. The user's own
# Python (and, say, its CUDA torch) is never touched. Extra arguments go to pytest.
# VENV: the environment (default .venv, shared with scripts/demo.sh); TORCH_SPEC overrides the torch
# requirement (default: torch==2.13.0 torchvision==0.28.0).
set -euo pipefail
cd "$(dirname "$0")/.."
VENV="${VENV:-.venv}"
if [ ! -x "$VENV/bin/python" ]; then
  python3 -m venv "$VENV" || { echo "error: python3 -m venv $VENV failed (on Debian/Ubuntu: apt-get install python3-venv)" >&2; exit 1; }
fi
export PIP_DISABLE_PIP_VERSION_CHECK=1 PIP_ROOT_USER_ACTION=ignore
# torch first and pinned: an unpinned torch would pull several GB of CUDA packages.
"$VENV/bin/python" -m pip install -q ${TORCH_SPEC:-torch==2.13.0 torchvision==0.28.0}
"$VENV/bin/python" -m pip install -q -e ".[test]"
# The video extra (MediaPipe) is optional: its tests skip with a reason when it cannot be installed.
"$VENV/bin/python" -m pip install -q -e ".[test,video]" || echo "the [video] extra did not install; its tests will skip"
# The cluster extra (Ray, scripts/train_many.py) likewise: tests/test_train_many.py skips without it.
"$VENV/bin/python" -m pip install -q -e ".[test,cluster]" || echo "the [cluster] extra did not install; its tests will skip"
# The viewer extra (viser, scripts/view.py) likewise: tests/test_viewer.py skips without it.
"$VENV/bin/python" -m pip install -q -e ".[test,viewer]" || echo "the [viewer] extra did not install; its tests will skip"
set +e
"$VENV/bin/python" -m pytest -q "$@"
rc=$?
set -e
if [ "$rc" -eq 5 ]; then
  echo "pytest collected no tests (exit code 5); treating as success"
  exit 0
fi
exit "$rc"
