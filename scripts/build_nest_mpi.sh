#!/usr/bin/env bash
# Build an MPI-enabled NEST Simulator from its PyPI source distribution with
# Debian's Open MPI, for multi-process runs of biosnn's NEST backend.
#
# Not part of CI: the PyPI wheel of nest-simulator has no MPI, and this build
# takes minutes (see "Timing" below).  Run as root on Debian 12 (it installs
# Debian packages with apt-get).
#
# Usage
#   scripts/build_nest_mpi.sh                 # biosnn's models only, into /opt/nest-mpi
#   NEST_PREFIX=$HOME/nest-mpi scripts/build_nest_mpi.sh
#   NEST_MODELSET=full scripts/build_nest_mpi.sh     # every NEST model (much longer build)
#
# Environment (all optional)
#   NEST_PREFIX     install prefix, outside the repository   [/opt/nest-mpi]
#   NEST_VERSION    nest-simulator version on PyPI            [3.10]
#   NEST_SDIST      path of an already downloaded sdist       [pip download it]
#   NEST_BUILD_DIR  scratch directory for unpacking/building  [/tmp/nest-mpi-build]
#   PYTHON          interpreter PyNEST is built for; it must be the one that
#                   runs biosnn (Python.h and Cython >= 3 must be available to it)
#                   [the repository's .venv/bin/python, else python3]
#   NEST_MODELSET   "biosnn" (default) or "full" or any file in the sdist's modelsets/
#   NEST_MODELS     a ';'-separated list of model headers, overriding NEST_MODELSET
#   JOBS            parallel make jobs                         [2]
#   NICE            niceness of the compile                    [19]
#
# Models
#   NEST compiles every model of its "full" modelset (~180 models) by default;
#   most of the build time goes there.  biosnn's NEST backend
#   (biosnn/backends/nest.py, nest_models.py) creates only:
#     iaf_psc_delta       the library "lif" neuron
#     parrot_neuron       Poisson relays (shared trains) and STDP delay relays
#     poisson_generator   Poisson inputs
#     spike_generator     spike-time inputs
#     spike_recorder, multimeter   monitors
#     static_synapse, stdp_synapse projections (fixed weights, pair STDP)
#   plus volume_transmitter (NESTML creates one to detect NEST's version before
#   it generates code; without it NESTML assumes an old NEST API and the
#   generated code does not compile: "dictdatum.h: No such file"),
#   weight_recorder (NEST's own minimal modelset carries it), iaf_psc_exp,
#   iaf_psc_alpha, dc_generator and step_current_generator (cheap, common
#   companions for hand-written comparisons).  Equation-defined models are
#   compiled by NESTML at run time against this NEST (its nest-config is
#   installed in $NEST_PREFIX/bin), so they need no built-in model.
#   If a spec needs another built-in model, rebuild with NEST_MODELSET=full or
#   add it to NEST_MODELS.
#
# Timing, measured 2026-11-23 on a 2-core machine shared with other jobs (load
#   5-9, nice 19, make -j2): NEST with biosnn's models ~29 min (cmake 15 s; the
#   cpptests and PyNEST's Cython module are built too), mpi4py from source ~8 min.
#   The full modelset compiles ~180 models more; expect a multiple of that.
#   The script prints its own total ("build time") at the end.
#
# Using the result (NEST 3.10 installs no nest_vars.sh; the kernel is linked into
# PyNEST's extension module, so PYTHONPATH is all it needs)
#   export PYTHONPATH=$NEST_PREFIX/lib/python3.X/site-packages
#   mpirun -np 2 "$PYTHON" your_script.py     # or: "$PYTHON" benchmarks/nest_mpi_cuba.py
#   (mpi4py, needed to gather recordings across ranks, is installed into the
#    same site-packages; $NEST_PREFIX/bin/nest-config is what NESTML builds against.)
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
repo="$(dirname "$here")"
NEST_PREFIX="${NEST_PREFIX:-/opt/nest-mpi}"
NEST_VERSION="${NEST_VERSION:-3.10}"
NEST_BUILD_DIR="${NEST_BUILD_DIR:-/tmp/nest-mpi-build}"
NEST_MODELSET="${NEST_MODELSET:-biosnn}"
JOBS="${JOBS:-2}"
NICE="${NICE:-19}"
if [ -z "${PYTHON:-}" ]; then
    if [ -x "$repo/.venv/bin/python" ]; then PYTHON="$repo/.venv/bin/python"; else PYTHON="$(command -v python3)"; fi
fi
BIOSNN_MODELS="iaf_psc_delta;iaf_psc_exp;iaf_psc_alpha;parrot_neuron;poisson_generator;spike_generator"
BIOSNN_MODELS="$BIOSNN_MODELS;dc_generator;step_current_generator;spike_recorder;multimeter;weight_recorder"
BIOSNN_MODELS="$BIOSNN_MODELS;static_synapse;stdp_synapse;volume_transmitter"

case "$NEST_PREFIX" in
    "$repo"|"$repo"/*) echo "NEST_PREFIX=$NEST_PREFIX is inside the repository; choose a prefix outside it" >&2; exit 2;;
esac

echo "== Debian packages (MPI, compiler, cmake, GSL, Boost, ltdl)"
export DEBIAN_FRONTEND=noninteractive
need=(libopenmpi-dev openmpi-bin g++ cmake make libgsl-dev libboost-dev libltdl-dev pkg-config)
missing=()
for p in "${need[@]}"; do dpkg -s "$p" >/dev/null 2>&1 || missing+=("$p"); done
if [ "${#missing[@]}" -gt 0 ]; then
    apt-get update -qq
    apt-get install -y --no-install-recommends "${missing[@]}"
fi

echo "== Python: $PYTHON"
"$PYTHON" - <<'EOF'
import sys, sysconfig, os
inc = sysconfig.get_paths()["include"]
if not os.path.exists(os.path.join(inc, "Python.h")):
    sys.exit(f"no Python.h in {inc}: install the interpreter's development headers (Debian: python3-dev)")
try:
    import Cython
except ImportError:
    sys.exit("PyNEST needs Cython >= 3 in this interpreter: pip install 'cython>=3'")
print("Python", sys.version.split()[0], "headers", inc, "Cython", Cython.__version__)
EOF
pybin="$(dirname "$PYTHON")"

mkdir -p "$NEST_BUILD_DIR"
if [ -z "${NEST_SDIST:-}" ]; then
    echo "== pip download nest-simulator==$NEST_VERSION (source distribution)"
    "$PYTHON" -m pip download "nest-simulator==$NEST_VERSION" --no-binary :all: --no-deps -d "$NEST_BUILD_DIR"
    NEST_SDIST="$(ls "$NEST_BUILD_DIR"/nest_simulator-*.tar.gz | head -1)"
fi
src="$NEST_BUILD_DIR/src"
rm -rf "$src" && mkdir -p "$src"
tar xzf "$NEST_SDIST" -C "$src" --strip-components=1

if [ -n "${NEST_MODELS:-}" ]; then
    models=(-Dwith-models="$NEST_MODELS")
elif [ "$NEST_MODELSET" = biosnn ]; then
    models=(-Dwith-models="$BIOSNN_MODELS")
else
    models=(-Dwith-modelset="$NEST_MODELSET")
fi

build="$NEST_BUILD_DIR/build"
rm -rf "$build" && mkdir -p "$build"
start=$(date +%s)
echo "== cmake (with-mpi=ON, models: ${models[*]})"
( cd "$build" && PATH="$pybin:$PATH" cmake "$src" \
    -DCMAKE_INSTALL_PREFIX="$NEST_PREFIX" \
    -DPython_EXECUTABLE="$PYTHON" \
    -Dwith-mpi=ON -Dwith-openmp=ON -Dwith-gsl=ON -Dwith-boost=ON -Dwith-ltdl=ON \
    -Dwith-python=ON "${models[@]}" )
echo "== make -j$JOBS (nice $NICE)"
( cd "$build" && PATH="$pybin:$PATH" nice -n "$NICE" make -j"$JOBS" )
echo "== make install -> $NEST_PREFIX"
( cd "$build" && make install >/dev/null )

site="$("$PYTHON" -c "import sys; print(f'$NEST_PREFIX/lib/python{sys.version_info[0]}.{sys.version_info[1]}/site-packages')")"
echo "== mpi4py against Debian's MPI -> $site"
MPICC="$(command -v mpicc)" nice -n "$NICE" "$PYTHON" -m pip install --no-binary mpi4py --no-deps \
    --target "$site" --upgrade mpi4py
end=$(date +%s)

echo "== check: NEST with MPI under mpirun -np 2"
mpi_root=(--oversubscribe)  # 2 ranks even on a 1-core machine
if [ "$(id -u)" = 0 ]; then mpi_root+=(--allow-run-as-root); fi
PYNEST_QUIET=1 PYTHONPATH="$site${PYTHONPATH:+:$PYTHONPATH}" mpirun "${mpi_root[@]}" -np 2 "$PYTHON" -c \
    "import nest; from mpi4py import MPI; assert nest.build_info['have_mpi'], 'NEST built without MPI'; \
print('rank', nest.Rank(), 'of', nest.NumProcesses(), '| mpi4py rank', MPI.COMM_WORLD.Get_rank())"

cat <<EOF

NEST $NEST_VERSION with MPI is installed in $NEST_PREFIX (build time $((end - start)) s).
Use it:
    export PYTHONPATH=$site\${PYTHONPATH:+:\$PYTHONPATH}
    mpirun ${mpi_root[*]} -np 2 $PYTHON your_script.py
    $PYTHON benchmarks/nest_mpi_cuba.py      # CUBA on 1 and 2 ranks, spike trains compared
Without the PYTHONPATH, biosnn keeps using the PyPI wheel (no MPI).
EOF
