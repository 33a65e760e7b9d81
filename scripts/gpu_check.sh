#!/usr/bin/env bash
# The GPU check in one command (benchmarks/gpu_check.py): run from the repository root on the GPU
# machine, with the folder .gpu carried (benchmarks/gpu_prebuild.py makes it):
#
#   bash scripts/gpu_check.sh                 # on the GPU machine; figures to $OUT (or ./gpu_check_out)
#   bash scripts/gpu_check.sh --dry-run       # anywhere: small sizes, CUDA parts 'not run: no GPU'
#
# It installs the carried wheels (brian2, brian2cuda, spikingjelly) when python3 lacks brian2cuda,
# points BIOSNN_MNIST at the carried MNIST, copies the carried trained models to benchmarks/.cache
# and the prebuilt binaries into a fresh build cache, compiles for compute capability 9.0 unless
# BIOSNN_CUDA_COMPUTE_CAPABILITY says otherwise, and runs every step in its time box. Arguments go
# to benchmarks/gpu_check.py (--steps, --budget, --dry-run).
set -u
cd "$(dirname "$0")/.."
ROOT=$PWD
PY=${PYTHON:-python3}
GPU=$ROOT/.gpu
OUT=${OUT:-$ROOT/gpu_check_out}
mkdir -p "$OUT"
t0=$(date +%s)
if ! "$PY" -c "import brian2cuda" 2>/dev/null; then
    if ls "$GPU"/wheels/*.whl >/dev/null 2>&1; then
        "$PY" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
            --target /tmp/biosnn-site "$GPU"/wheels/*.whl || exit 1
        export PYTHONPATH=/tmp/biosnn-site
    else
        echo "gpu_check: brian2cuda is missing and $GPU/wheels has no wheels (benchmarks/gpu_prebuild.py --assets)" >&2
        exit 1
    fi
fi
export PYTHONPATH=$ROOT${PYTHONPATH:+:$PYTHONPATH}
if [ -z "${BIOSNN_MNIST:-}" ] && [ -f "$GPU/data/mnist.npz" ]; then
    export BIOSNN_MNIST=$GPU/data/mnist.npz
fi
mkdir -p benchmarks/.cache
if ls "$GPU"/models/*.pt >/dev/null 2>&1; then
    cp -n "$GPU"/models/*.pt benchmarks/.cache/
fi
export BIOSNN_CACHE_DIR=${BIOSNN_CACHE_DIR:-/tmp/biosnn-gpu-cache}
mkdir -p "$BIOSNN_CACHE_DIR"
for d in "$GPU"/prebuilt/*/; do
    [ -f "$d/main" ] && mkdir -p "$BIOSNN_CACHE_DIR/$(basename "$d")" && cp "$d"/main* "$BIOSNN_CACHE_DIR/$(basename "$d")/"
done
export BIOSNN_CUDA_COMPUTE_CAPABILITY=${BIOSNN_CUDA_COMPUTE_CAPABILITY:-9.0}
export BIOSNN_PROGRESS=0 PYTHONUNBUFFERED=1
echo "gpu_check: set-up $(( $(date +%s) - t0 )) s; python $("$PY" -c 'import sys; print(sys.version.split()[0])'); cache $BIOSNN_CACHE_DIR"
exec "$PY" benchmarks/gpu_check.py --out "$OUT" "$@"
