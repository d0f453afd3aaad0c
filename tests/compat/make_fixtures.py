"""Regenerate tests/data/dr02_* with the real dranspose 0.2 (run with the dr02 venv's python).

    $(tests/compat/setup_dr02_venv.sh) tests/compat/make_fixtures.py

Each file in fixtures.json is rewritten from scratch by dr02_roundtrip.write; the tests compare
what our reader returns with the same specs.
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

HERE = Path(__file__).parent
DATA = HERE.parent / "data"
sys.path.insert(0, str(HERE))

from dr02_roundtrip import write  # noqa: E402


def main() -> None:
    fixtures = json.loads((HERE / "fixtures.json").read_text())
    for name, spec in fixtures.items():
        out = DATA / name
        if out.exists():
            os.unlink(out)
        write(str(out), spec)
        print(f"{out}: {out.stat().st_size} bytes")


if __name__ == "__main__":
    main()
