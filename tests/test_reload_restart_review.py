"""What a reload cannot change shows as such (hostile config review): the drill key
settings are read once, at start, and were not listed in config.restart_required; and
`killgate status` did not print restart_required at all, so a change in git that is not in
force looked applied."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.backends import echo_app
from tests.conftest import admin_token, running_gateway, two_versions, wait_until, write_config
from tests.test_cli import acli

pytestmark = pytest.mark.timeout(60)


async def test_status_says_which_changes_wait_for_a_restart(tmp_path: Path, backends) -> None:
    p1, p2 = await backends(echo_app("v1")), await backends(echo_app("v2"))
    cfg = write_config(tmp_path, two_versions(p1, p2))
    async with running_gateway(cfg) as g:
        old = g.gw.loaded.digest
        cfg.write_text(write_config(
            tmp_path, two_versions(p1, p2), name="next.yaml",
            extra="server: {max_body_size: 1000}\ndrills: {key_env: OTHER_DRILL_KEY}\n",
            admin="127.0.0.1:0\n  max_connections: 7"
        ).read_text())
        g.gw.request_reload()
        await wait_until(lambda: g.gw.watcher.outcome.loaded_digest != old, 10, what="reload")
        assert g.gw.watcher.outcome.restart_required == ["server", "admin.max_connections",
                                                          "drills.key_env"]
        res = await acli("status", env={"KILLGATE_ADMIN_URL": g.admin,
                                        "KILLGATE_TOKEN": admin_token("killgate:read")})
        assert res.returncode == 0, res.stderr
        assert "RESTART REQUIRED for: server, admin.max_connections, drills.key_env" in res.stdout, res.stdout
