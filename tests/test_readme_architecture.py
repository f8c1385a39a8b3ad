"""The README's Architecture section names every module of the package (it had fallen 24
modules behind): a module added without a line there fails here."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

pytestmark = pytest.mark.timeout(30)

ROOT = Path(__file__).resolve().parent.parent


def _architecture() -> str:
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    start = text.index("\n## Architecture")
    end = text.find("\n## ", start + 5)
    return text[start:end if end != -1 else len(text)]


def test_every_module_is_named_in_the_architecture_section() -> None:
    section = _architecture()
    missing = []
    for path in sorted((ROOT / "gateway").rglob("*.py")):
        if path.name in ("__init__.py", "__main__.py"):
            continue
        if not re.search(rf"(?<![\w.]){re.escape(path.name)}", section):
            missing.append(str(path.relative_to(ROOT)))
    assert not missing, f"add to the README's Architecture section: {missing}"
