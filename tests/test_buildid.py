"""Telling which instances of a fleet an upgrade has reached (review revupgrade47, a real
rolling upgrade from 999220ed to main). Upgrading says to unkill again "once every instance
runs the new version (`count by (killgate_version) (killgate_build_info)` in Prometheus;
`killgate --version` on a host)"; but every commit so far, 999220ed and main alike, says
0.1.0: mid-upgrade both told one version, the old and the new, so nothing told an SRE which
hosts were done. Two trees whose code differs, run as real processes, must say so."""

from __future__ import annotations

import asyncio
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from aiohttp import ClientSession

from tests.backends import echo_app
from tests.conftest import ROOT, free_port, two_versions, write_config

pytestmark = pytest.mark.timeout(90)


def _tree(tmp: Path, name: str, change: str = "") -> dict[str, str]:
    """A copy of this checkout's package (`change` appended to its __init__.py: another
    commit's code), and the environment that runs a process from it, not from the checkout."""
    root = tmp / name
    shutil.copytree(ROOT / "gateway", root / "gateway",
                    ignore=shutil.ignore_patterns("__pycache__"))
    if change:
        with open(root / "gateway" / "__init__.py", "a") as f:
            f.write(change)
    return {"PYTHONPATH": str(root), "PYTHONSAFEPATH": "1"}  # (not the cwd's gateway)


def _version(env: dict[str, str]) -> str:
    res = subprocess.run([sys.executable, "-m", "gateway", "--version"], capture_output=True,
                         text=True, timeout=30, cwd=ROOT, env={**os.environ, **env})
    assert res.returncode == 0, res.stderr
    return res.stdout.strip()


def test_killgate_version_tells_two_builds_apart(tmp_path: Path) -> None:
    """`killgate --version` on a host upgraded and on one that is not: on main both printed
    `killgate 0.1.0`. The same code twice says the same build."""
    old, new = _tree(tmp_path, "old"), _tree(tmp_path, "new", "# a later commit\n")
    same = _tree(tmp_path, "same")
    got_old, got_new, got_same = _version(old), _version(new), _version(same)
    assert got_old != got_new, (got_old, got_new)
    assert got_old == got_same and "(build " in got_old, (got_old, got_same)


async def test_build_info_counts_a_mixed_fleet_by_build(tmp_path: Path, backends, gateway_procs,
                                                        session: ClientSession) -> None:
    """Two real `killgate serve` processes, one from each tree, mid-upgrade: their
    `killgate_build_info` series are two, each naming the build `killgate --version` names
    on its host (on main both were `{killgate_version="0.1.0"}`: one series, "done")."""
    from prometheus_client.parser import text_string_to_metric_families

    stable, canary = await backends(echo_app("v1")), await backends(echo_app("v2"))
    routes = two_versions(stable, canary)
    trees = [_tree(tmp_path, "old"), _tree(tmp_path, "new", "# a later commit\n")]
    builds = []
    for n, env in enumerate(trees):
        cfg = write_config(tmp_path, routes, name=f"{n}.yaml", listen=f"127.0.0.1:{free_port()}",
                           admin=f"127.0.0.1:{free_port()}")
        gw = gateway_procs(cfg, env=env)
        await asyncio.to_thread(gw.wait_ready)
        async with session.get(gw.admin + "/metrics") as r:
            text = await r.text()
        labels = [s.labels for f in text_string_to_metric_families(text)
                  if f.name == "killgate_build_info" for s in f.samples]
        assert len(labels) == 1, labels
        builds.append(labels[0].get("build"))
        said = _version(env)
        assert f"(build {builds[-1]})" in said, (said, labels)
    assert None not in builds and builds[0] != builds[1], builds
