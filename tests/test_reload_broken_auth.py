"""A gateway whose admin key file cannot be used (missing: a new user's typo, a Secret not
mounted) must still take config reloads. Its admin API answers 503 either way, so refusing
a reload "to keep the running admin auth settings in force" protects nothing, and it
blocked every other change, among them the README's fallback when the admin API or the
store cannot act: set the bad version's weight to 0 and reload. It also logged a
`config_rejected` at every start, the user having changed nothing (and so paged
KillgateConfigRefused about a config that was fine). What is wrong is the admin key: the
gauge `killgate_admin_auth_broken` is 1 while it cannot be used (KillgateAdminAuthBroken
pages on it; /readyz is 200 and the data plane serves, so only a log line said so), and 0
again once a reload finds a usable key.

Found by the new-user review (revnewuser2): `killgate serve` with a missing
`hs256_secret_file` logged `config_rejected trigger="file"` right after it started.
"""

from __future__ import annotations

import logging
from pathlib import Path

import pytest
from aiohttp import ClientSession

from tests.backends import echo_app
from tests.conftest import SECRET, running_gateway, two_versions, write_config

pytestmark = pytest.mark.timeout(30)


def _rejected(caplog: pytest.LogCaptureFixture) -> list[logging.LogRecord]:
    return [r for r in caplog.records if r.getMessage() == "config_rejected"]


async def _versions(session: ClientSession, url: str, n: int = 20) -> set[str]:
    seen = set()
    for _ in range(n):
        async with session.post(url + "/v2/models/iris/infer", data=b"{}") as r:
            seen.add(r.headers.get("x-killgate-version", ""))
    return seen


async def _auth_broken(session: ClientSession, admin: str) -> float:
    async with session.get(admin + "/metrics") as r:
        for line in (await r.text()).splitlines():
            if line.startswith("killgate_admin_auth_broken "):
                return float(line.split()[1])
    raise AssertionError("no killgate_admin_auth_broken series")


async def test_a_reload_is_applied_while_the_admin_key_file_is_missing(
        tmp_path: Path, backends, session, caplog: pytest.LogCaptureFixture) -> None:
    key = tmp_path / "absent.secret"
    p1, p2 = await backends(echo_app("v1")), await backends(echo_app("v2"))
    cfg = write_config(tmp_path, two_versions(p1, p2, 100, 0))
    cfg.write_text(cfg.read_text().replace(
        "hs256_secret_env: KILLGATE_TEST_SECRET",
        f"hs256_secret_file: {key}"))
    with caplog.at_level(logging.INFO):
        async with running_gateway(cfg) as g:
            watcher = g.gw.watcher
            assert watcher is not None
            # the start's own look at the file (nothing changed) refuses nothing
            await watcher.reload("sighup")
            assert not _rejected(caplog), _rejected(caplog)
            assert await _versions(session, g.url) == {"v1"}
            assert await _auth_broken(session, g.admin) == 1
            # the operator moves every request off v1 in the file, and reloads
            text = cfg.read_text()
            cfg.write_text(text.replace(f'{p1}", weight: 100', f'{p1}", weight: 0')
                           .replace(f'{p2}", weight: 0', f'{p2}", weight: 100'))
            assert await watcher.reload("sighup")
            assert not _rejected(caplog), _rejected(caplog)
            assert await _versions(session, g.url) == {"v2"}
            # the admin API still says what is wrong (503), and where to look
            async with session.get(g.admin + "/v1/status",
                                   headers={"Authorization": "Bearer x.y.z"}) as r:
                assert r.status == 503
                assert (await r.json())["error"]["type"] == "auth_not_configured"
            assert await _auth_broken(session, g.admin) == 1
            # the key put in place, a reload takes it: the gauge goes back to 0
            key.write_text(SECRET + "\n")
            key.chmod(0o600)
            await watcher.reload("sighup")  # (False: the file itself is unchanged)
            assert await _auth_broken(session, g.admin) == 0
