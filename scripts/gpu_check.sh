#!/usr/bin/env bash
# The CUDA check (docs/performance.md, "CUDA check"), in at most two device calls:
#   bash scripts/gpu_check.sh --part 1 --out "$OUT"     # ~7 min: env, CUDA tests, rasterizer vs gsplat
#   bash scripts/gpu_check.sh --part 2 --out "$OUT"     # ~4 min: training benchmark at 512², profiler table
#   bash scripts/gpu_check.sh --device cpu --quick --part all --out DIR   # CPU dry run (tests/test_gpu_check.py)
# On the GPU machine (Python 3.12 + torch, no taichi, no network) carry .whl/ from
# scripts/make_gpu_wheels.sh: the wheels are installed into /tmp/site when taichi is missing.
set -uo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
WHEELS=${GPU_CHECK_WHEELS:-.whl}
# bad flags are one-line errors before anything is installed (the module's parser, loaded as a file:
# importing the package would need taichi)
"$PY" -c 'import importlib.util as u, sys
s = u.spec_from_file_location("gpu_check_cli", "stavatar_ti/tools/gpu_check.py"); m = u.module_from_spec(s)
sys.modules[s.name] = m; s.loader.exec_module(m); m.parser().parse_args(["run", *sys.argv[1:]])' "$@" || exit 2
case " $* " in *" -h "*|*" --help "*) exit 0 ;; esac
if ! "$PY" -c "import taichi" >/dev/null 2>&1; then
    if ! ls "$WHEELS"/*.whl >/dev/null 2>&1; then
        echo "error: taichi is not installed and $WHEELS/ holds no wheels (run scripts/make_gpu_wheels.sh here first)" >&2
        exit 2
    fi
    "$PY" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site "$WHEELS"/*.whl \
        || { echo "error: $WHEELS: installing the wheels failed" >&2; exit 2; }
    export PYTHONPATH=/tmp/site${PYTHONPATH:+:$PYTHONPATH}
    "$PY" -c "import taichi" || { echo "error: import taichi fails after installing $WHEELS/" >&2; exit 2; }
fi
# kernels/ is stavatar_ti.kernels only through an install (pyproject package-dir); uninstalled, link it
if ! PYTHONPATH=$PWD${PYTHONPATH:+:$PYTHONPATH} "$PY" -c "import stavatar_ti.kernels" >/dev/null 2>&1; then
    [ -e stavatar_ti/kernels ] || ln -s ../kernels stavatar_ti/kernels
fi
export PYTHONPATH=$PWD${PYTHONPATH:+:$PYTHONPATH}
exec "$PY" -m stavatar_ti.tools.gpu_check run "$@"
