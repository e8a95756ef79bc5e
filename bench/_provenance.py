"""What produced a bench's figures: the commit its code came from (one home for every bench script).

    from _provenance import code_version   # bench scripts run as `python bench/x.py`: bench/ is on sys.path
"""

from __future__ import annotations

import subprocess
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def export_commit(ref: str, dest: Path) -> Path:
    """`git archive` of ref's src/ into dest (a bench comparing this checkout with an earlier commit); returns the
    src folder."""
    data = subprocess.run(["git", "-C", str(ROOT), "archive", ref, "src"], capture_output=True, check=True).stdout
    subprocess.run(["tar", "-x", "-C", str(dest)], input=data, check=True)
    return dest / "src"


def code_version(paths: tuple[str, ...] = ("src", "bench")) -> str:
    """The short commit checked out, `-dirty` when `paths` have uncommitted changes; "unknown" outside git."""
    try:
        head = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True, text=True,
                              check=True).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no", *paths], cwd=ROOT,
                               capture_output=True, text=True, check=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "unknown"
    return head + ("-dirty" if dirty else "")
