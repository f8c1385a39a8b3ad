"""A restart with another state key (KILLGATE_STATE_KEY regenerated, or rotated without
`state.previous_signing_key_env`) refuses the store's document and the instance's own
snapshot, signed with the old key; `killgate status` said of that "something wrote to the
store without the signing key", which reads as an intruder at 3 a.m. (review as a new user,
restarting `config/killgate.yaml` in a new shell). It now names the likely cause first.
Real redis-server, real gateways, the real CLI."""

from __future__ import annotations

from pathlib import Path

import pytest

from gateway.cli.statuswarn import ANOTHER_KEY
from tests.backends import echo_app
from tests.conftest import (
    RedisServer,
    running_gateway,
    two_versions,
    wait_until,
    write_config,
)
from tests.test_cli import acli
from tests.test_killswitch import kill, redis_state, token

pytestmark = pytest.mark.timeout(60)


async def test_a_restart_with_another_state_key_says_the_key_changed(
        tmp_path: Path, backends, session, redis_server: RedisServer,
        monkeypatch: pytest.MonkeyPatch) -> None:
    p = await backends(echo_app("v1"))
    cfg = write_config(tmp_path, two_versions(p, p), state=redis_state(redis_server, tmp_path))
    async with running_gateway(cfg) as g:
        await kill(session, g.admin, scope="version", route="iris", version="v2")
    monkeypatch.setenv("KILLGATE_TEST_STATE_KEY", "another-state-key-0123456789-abcdefghij")
    async with running_gateway(cfg) as g:
        env = {"KILLGATE_ADMIN_URL": g.admin, "KILLGATE_TOKEN": token("killgate:read")}

        async def said() -> str | None:
            res = await acli("status", env=env)
            return res.stdout if "UNVERIFIED" in res.stdout else None

        text = await wait_until(said, 10, 0.1, what="status to say UNVERIFIED")
        line = next(x for x in text.splitlines() if x.startswith("UNVERIFIED"))
        assert "signed with an unknown key id" in line, line
        assert line.endswith(ANOTHER_KEY), line
        assert "something wrote to the store without the signing key" not in line, line
