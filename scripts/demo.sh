#!/usr/bin/env bash
# The main job: install dranspose-fast, replay the shipped example dump through the example
# worker and reducer, and write the reducer's result to example-result.h5.
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-python3}
"$PYTHON" -m pip install -q --disable-pip-version-check -e .
"$PYTHON" setup.py -q build_ext --inplace 2>&1 | grep -v -i "warn" || true
exec dranspose-fast replay \
    -w examples.roi:RoiWorker -r examples.roi:RoiReducer \
    -f examples/data/eiger.cbors examples/data/positions.cbors \
    -p examples/parameters.json --out example-result.h5 "$@"
