"""`killgate check` on `analysis` with more than two versions says which versions and what
to do (found trying issue #13's shadow gate as a new user: a route with a canary and a
shadow, plus `analysis: {min_shadow_agreement: ...}`, was refused with "canary analysis
needs exactly two versions: the stable and one canary", which named neither the three
versions nor that the shadow counts, nor a way out)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from tests import cli_fork

pytestmark = pytest.mark.timeout(60)

CONFIG = """\
routes:
  - name: iris
    match: {path_prefix: /iris}
    stable: v1
    versions:
      - {name: v1, url: 'http://127.0.0.1:1', weight: 90}
      - {name: v2, url: 'http://127.0.0.1:2', weight: 10}
      - {name: v3, url: 'http://127.0.0.1:3', weight: 0}
    shadow: {version: v3, sample: 1.0}
    analysis: {min_shadow_agreement: 0.95}
"""


def test_analysis_with_three_versions_names_them_and_the_way_out(tmp_path: Path) -> None:
    cfg = tmp_path / "killgate.yaml"
    cfg.write_text(CONFIG)
    res = cli_fork.run(["check", str(cfg)], {"PATH": "/usr/bin:/bin"}, os.getcwd(), 30)
    assert res.returncode == 1, res.stdout
    line = next(x for x in (res.stdout + res.stderr).splitlines() if "routes[0].analysis" in x)
    assert "this route has 3 (v1, v2, v3)" in line, line
    assert "the shadow counts" in line and "remove `analysis`" in line, line
