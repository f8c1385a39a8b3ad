"""No tracked text file carries a merge's conflict markers: one did (benchmarks/RESULTS.md
kept a `<<<<<<< HEAD` half of a merge for a stop), and nothing else reads that file."""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
MARKER = re.compile(rb"^(<{7}|>{7}|={7})( |$)", re.MULTILINE)
TEXT = (".py", ".md", ".yaml", ".yml", ".toml", ".json", ".txt", ".cfg", ".sh", ".html",
        ".js", ".css", "Dockerfile", "run")


def test_no_conflict_markers_in_tracked_files() -> None:
    names = subprocess.run(["git", "ls-files"], cwd=ROOT, capture_output=True, text=True,
                           check=True, timeout=30).stdout.split()
    found = [n for n in names if n.endswith(TEXT) and (ROOT / n).is_file()
             and MARKER.search((ROOT / n).read_bytes())]
    assert not found, f"conflict markers left by a merge in: {found}"
