#!/usr/bin/env bash
# Wheels the GPU check needs on the lent GPU machine (Python 3.12, torch + CUDA, no network, no taichi):
# taichi 1.7.4 stripped to fit the 64 MiB transfer, gsplat 1.5.3 (compiles its CUDA extension on first
# use), and the small pure-Python dependencies the machine lacks. See docs/performance.md, "CUDA check".
#
#   bash scripts/make_gpu_wheels.sh [DIR]        # default DIR: .whl (ignored by git; carry it)
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-.venv/bin/python}
DIR=${1:-.whl}
RAW="$DIR/raw"
mkdir -p "$RAW"
platforms=(--platform manylinux_2_28_x86_64 --platform manylinux_2_27_x86_64 --platform manylinux_2_17_x86_64
           --platform manylinux2014_x86_64 --platform manylinux1_x86_64)
# taichi's own needs (numpy, colorama, rich) are on the GPU image; dill is not. lpips and smplx: the
# project's and its tests' pure-Python dependencies missing there.
"$PY" -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp "${platforms[@]}" \
    -d "$RAW" taichi==1.7.4 gsplat==1.5.3 dill==0.4.1 lpips==0.1.4 smplx==0.1.28
for whl in "$RAW"/*.whl; do
    name=$(basename "$whl")
    case "$name" in
        taichi-*) "$PY" -m stavatar_ti.tools.gpu_check strip-wheel "$whl" "$DIR/$name" ;;
        *) cp "$whl" "$DIR/$name" ;;
    esac
done
rm -rf "$RAW"
total=$(du -cb "$DIR"/*.whl | tail -1 | cut -f1)
ls -l "$DIR"/*.whl
if [ "$total" -gt $((40 * 1024 * 1024)) ]; then
    echo "error: $DIR: the wheels take $total bytes, over the 40 MiB left for them in a 64 MiB transfer" >&2
    exit 1
fi
echo "$DIR: $total bytes of wheels"
