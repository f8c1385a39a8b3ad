"""The libraries whose private internals killgate relies on are pinned below their next
release in pyproject.toml (an upgrade is then a decision, its tests run), and the versions
installed are within those pins.

aiohttp: admin/listener.py reads RequestHandler's internals; httptools: the data plane's
parser callbacks; the OTLP exporter: telemetry/spanqueue.py's `_client`; pydantic: the
audit's fast writer (domain/auditcanon.py) checks pydantic-core's output at import.
"""

from __future__ import annotations

import tomllib
from importlib.metadata import version
from pathlib import Path

import pytest
from packaging.requirements import Requirement
from packaging.version import Version

pytestmark = pytest.mark.timeout(30)

ROOT = Path(__file__).resolve().parent.parent
#: the library -> the bound below which the code was written and tested
PINNED = {"aiohttp": "3.15", "httptools": "0.10", "opentelemetry-exporter-otlp-proto-http": "1.46",
          "pydantic": "3"}


def _requirements() -> dict[str, Requirement]:
    data = tomllib.loads((ROOT / "pyproject.toml").read_text())
    reqs = (Requirement(r) for r in data["project"]["dependencies"])
    return {r.name: r for r in reqs}


@pytest.mark.parametrize("name", sorted(PINNED))
def test_relied_on_internals_are_pinned_below_the_next_release(name: str) -> None:
    req = _requirements()[name]
    upper = [s for s in req.specifier if s.operator == "<"]
    assert [s.version for s in upper] == [PINNED[name]], f"{name}: {req}"


@pytest.mark.parametrize("name", sorted(PINNED))
def test_the_installed_version_is_within_its_pin(name: str) -> None:
    req = _requirements()[name]
    assert Version(version(name)) in req.specifier, f"{name} {version(name)} not in {req}"


def test_the_listeners_docstring_names_the_pin_in_force() -> None:
    doc = (ROOT / "gateway/admin/listener.py").read_text()
    assert f"pins aiohttp below {PINNED['aiohttp']}" in doc
