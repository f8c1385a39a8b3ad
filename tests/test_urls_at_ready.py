"""An instance's published addresses carry `admin` and `data` as soon as it is ready: the
first heartbeat was written before the listeners bound (no addresses yet), so for up to a
heartbeat interval a drill or `killgate status` found no admin URL for it. A heartbeat is
now sent once the listeners are bound (gateway/startup.py). Real redis-server; the heartbeat
interval is 30 s, so the next interval's beat cannot be what carries them."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.conftest import RedisServer, running_gateway, write_config
from tests.staterig import redis_section
from tests.test_kill_after_routing_reload import _route

pytestmark = pytest.mark.timeout(30)


async def test_the_admin_address_is_published_at_readiness(
        tmp_path: Path, redis_server: RedisServer) -> None:
    state = redis_section(redis_server.url, "kgtest", f"{tmp_path}/snapshot.json",
                          poll_interval="100ms", heartbeat_interval="30s",
                          instance_lease="61s", command_timeout="300ms")
    cfg = write_config(tmp_path, _route("iris", {"v1": (1, 100)}), state=state)
    async with running_gateway(cfg, "ready-now") as g:
        raw = redis_server.cmd("HGET", "kgtest:instances:urls", "ready-now")
        assert f"{g.admin}" in raw and '"admin"' in raw, raw
        assert '"data"' in raw, raw
