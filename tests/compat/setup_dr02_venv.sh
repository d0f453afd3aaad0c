#!/usr/bin/env bash
# Create (once) a throwaway venv with the real dranspose 0.2.0 for tests/test_dump_compat.py.
# Usage: tests/compat/setup_dr02_venv.sh [VENV_DIR]   (default: $DRANSPOSE02_VENV or /tmp/venv-dr02)
# Prints the venv's python path on stdout; export it as DRANSPOSE02_PYTHON before running pytest:
#   export DRANSPOSE02_PYTHON=$(tests/compat/setup_dr02_venv.sh)
set -euo pipefail

venv="${1:-${DRANSPOSE02_VENV:-/tmp/venv-dr02}}"
python="${PYTHON:-python3}"
py="$venv/bin/python"

# Idempotent: a venv that already imports dranspose 0.2.0 is reused as is.
if [ -x "$py" ] && "$py" -c 'import importlib.metadata as m, sys; sys.exit(m.version("dranspose") != "0.2.0")' 2>/dev/null; then
    echo "$py"
    exit 0
fi

"$python" -m venv "$venv" >&2
"$py" -m pip install --quiet --upgrade pip >&2
# cbor2 < 6: dranspose 0.2's decoder tag_hook uses the (decoder, tag) signature that cbor2 6 dropped.
"$py" -m pip install --quiet "dranspose==0.2.0" "cbor2<6" >&2
"$py" -c 'import dranspose.event, dranspose.ingester, dranspose.replay' >&2
echo "$py"
