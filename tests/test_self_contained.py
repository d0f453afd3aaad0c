"""No file of the repository refers to a path outside it (issue 8): a clone is all a reader has.

The patterns are the citations that used to point at notes beside the repository: a design
document, a reference with numbered sections, a limits file, a shared folder.
"""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
# built by concatenation so this file does not match itself
OUTSIDE = re.compile("|".join([
    re.escape("../" + "shared"), "DESIGN" + r"\.md", "reference" + " §", r"\blimits" + r"\.md",
    "seed" + " slides",
]))


def tracked_files() -> list[Path]:
    out = subprocess.run(["git", "ls-files"], cwd=ROOT, capture_output=True, text=True,
                         check=False)
    if out.returncode != 0:  # not a git checkout (an sdist): every file below the root
        return [p for p in ROOT.rglob("*") if p.is_file() and ".git" not in p.parts]
    return [ROOT / line for line in out.stdout.splitlines()]


def test_no_file_cites_a_path_outside_the_repository() -> None:
    found = []
    for path in tracked_files():
        try:
            text = path.read_text()
        except (UnicodeDecodeError, FileNotFoundError, IsADirectoryError):
            continue
        for number, line in enumerate(text.splitlines(), 1):
            if OUTSIDE.search(line):
                found.append(f"{path.relative_to(ROOT)}:{number}: {line.strip()[:100]}")
    assert not found, "say the fact, or cite a file of the repository:\n" + "\n".join(found)
