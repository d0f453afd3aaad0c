#!/usr/bin/env bash
# The main job: install dranspose-fast, replay the shipped example dump through the example
# worker and reducer, write the reducer's result to example-result.h5 and draw its ROI map as
# example-map.png.  Arguments are passed to `dranspose-fast replay`.
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-python3}
log=$(mktemp)
trap 'rm -f "$log"' EXIT

step() { printf '==> %s\n' "$*"; }
fail() {  # what failed, the command that fixes it; the tool's own output is in $log
    printf '\ndemo: %s\n' "$1" >&2
    if [ -s "$log" ]; then
        printf -- '--- last lines of its output ---\n' >&2
        grep -v -i "warning" "$log" | tail -n 15 >&2 || true
        printf -- '--------------------------------\n' >&2
    fi
    printf 'fix: %s\n' "$2" >&2
    exit 1
}

"$PYTHON" -c 'import sys; sys.exit(sys.version_info < (3, 11))' 2>/dev/null \
    || fail "dranspose-fast needs Python 3.11 or newer ($PYTHON is $("$PYTHON" -V 2>&1))" \
            "run with PYTHON=/path/to/python3.11 bash scripts/demo.sh"

step "installing dranspose-fast with the example's extras (compiles the Cython core; the first time takes a few minutes)"
"$PYTHON" -m pip install --disable-pip-version-check -e ".[examples]" >"$log" 2>&1 \
    || fail "pip could not install dranspose-fast (a C compiler and Python headers are needed)" \
            "$PYTHON -m pip install -e '.[examples]'   (on Debian/Ubuntu first: apt-get install build-essential python3-dev)"

if ! "$PYTHON" -c 'import dranspose_fast' >"$log" 2>&1; then
    step "building the compiled extensions in place"
    { "$PYTHON" -m pip install --disable-pip-version-check "Cython>=3.0,<4" "setuptools>=68" \
        && "$PYTHON" setup.py -q build_ext --inplace; } >"$log" 2>&1 \
        || fail "the compiled extensions could not be built" \
                "$PYTHON -m pip install 'Cython>=3.0,<4' setuptools && $PYTHON setup.py build_ext --inplace"
    "$PYTHON" -c 'import dranspose_fast' >"$log" 2>&1 \
        || fail "dranspose_fast does not import after the build" "$PYTHON -m pip install -e ."
fi
: >"$log"

step "replaying examples/data (a 20 x 20 raster scan) through examples.roi:RoiWorker and RoiReducer"
dranspose-fast replay \
    -w examples.roi:RoiWorker -r examples.roi:RoiReducer \
    -f examples/data/eiger.cbors examples/data/positions.cbors \
    -p examples/parameters.json --out example-result.h5 "$@" \
    || fail "the replay failed (its messages are above)" \
            "dranspose-fast replay --help   (check the arguments you passed)"

step "drawing the reducer's ROI map"
"$PYTHON" examples/plot_map.py example-result.h5 example-map.png >"$log" 2>&1 \
    || fail "the map could not be drawn" "$PYTHON -m pip install matplotlib"
printf '\ndone: the result is example-result.h5, its ROI map is %s\n' "$(pwd)/example-map.png"
