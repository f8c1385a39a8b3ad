"""Traffic shifting from config files, third hostile review: `killgate diff` agrees with
what `serve` does with the same file, and a storm of reload signals stays bounded."""

from __future__ import annotations

from pathlib import Path

import pytest
from aiohttp import ClientSession

from tests.backends import echo_app
from tests.conftest import admin_token, running_gateway, wait_until, write_config

pytestmark = pytest.mark.timeout(60)


def _iris(p1: int, p2: int, art2: str, w2: int = 10) -> str:
    return f"""\
- name: iris
  match: {{path_prefix: /v2/models/iris}}
  stable: v1
  versions:
    - {{name: v1, url: "http://127.0.0.1:{p1}", weight: 90, artifact: "sha256:aaaa"}}
    - {{name: v2, url: "http://127.0.0.1:{p2}", weight: {w2}, artifact: "{art2}"}}
"""


async def test_diff_refuses_a_changed_artifact_as_serve_does(
        tmp_path: Path, backends, session: ClientSession) -> None:
    """A file giving a running version name another artifact is refused by the gateway
    (versions are immutable); `killgate diff` against it listed the change and exited 2
    ("would change"), so a pipeline gating merges on diff merged a file the fleet refuses."""
    from tests.test_cli import acli

    p1, p2 = await backends(echo_app("v1")), await backends(echo_app("v2"))
    cfg = write_config(tmp_path, _iris(p1, p2, "sha256:bbbb"))
    other = write_config(tmp_path, _iris(p1, p2, "sha256:cccc", 20), name="other.yaml")
    async with running_gateway(cfg) as g:
        await wait_until(lambda: "v2" in g.gw.holder.doc.identities.get("iris", {}), 10,
                         what="identities recorded")
        env = {"KILLGATE_ADMIN_URL": g.admin, "KILLGATE_TOKEN": admin_token("killgate:read")}
        res = await acli("diff", str(other), env=env)
        # what serve does with the same file
        cfg.write_text(other.read_text())
        g.gw.request_reload()
        await wait_until(lambda: g.gw.watcher.outcome.last_error is not None, 10,
                         what="the reload refused")
        assert "routes[0].versions[1].artifact" in g.gw.watcher.outcome.last_error
        assert res.returncode == 1, (res.returncode, res.stdout, res.stderr)
        assert "routes[0].versions[1].artifact" in res.stderr, res.stderr
        assert "sha256:bbbb" in res.stderr and "new version name" in res.stderr, res.stderr
