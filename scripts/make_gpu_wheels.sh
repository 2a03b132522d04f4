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
ls -l "$DIR"/*.whl
taichi=$(du -cb "$DIR"/taichi-*.whl | tail -1 | cut -f1)
wheels=$(du -cb "$DIR"/*.whl | tail -1 | cut -f1)
# what a device call carries: the working tree (tracked + untracked, not ignored) plus the wheels
tree=$(git ls-files -co --exclude-standard -z | du -cb --files0-from=- 2>/dev/null | tail -1 | cut -f1)
echo "$DIR: taichi $taichi bytes, all wheels $wheels bytes; working tree $tree bytes"
if [ "$taichi" -gt $((40 * 1024 * 1024)) ]; then
    echo "error: $DIR: the stripped taichi wheel takes $taichi bytes (expected about 35 MB)" >&2
    exit 1
fi
if [ $((wheels + tree)) -gt $((60 * 1024 * 1024)) ]; then
    echo "error: $DIR: wheels + working tree take $((wheels + tree)) bytes, over 60 MiB of the 64 MiB a device call carries" >&2
    exit 1
fi
