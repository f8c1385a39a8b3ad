"""An instance whose state key is not the fleet's and that holds no snapshot heartbeats all
the same (stop 38's open item "a wrong-key instance with no snapshot on a store it cannot
verify never heartbeats (so nobody hears it)", verified): every sync attempt met the
fleet's document it cannot verify and raised before its heartbeat, so the fleet's
instances heard nothing of it: their /v1/status (store.verification) counted no refused
heartbeat, and only the pod's own /readyz said anything. Now an attempt the store answered
(StoreUnverifiable) still heartbeats when one is due: the fleet refuses it (another key
id) and says so, and the instance itself hears the fleet's (key_unconfirmed).
Real redis-server, in-process gateways (the same code as `killgate serve`)."""

from __future__ import annotations

from pathlib import Path

import pytest
from aiohttp import ClientSession

from tests.backends import echo_app
from tests.conftest import RedisServer, running_gateway, two_versions, wait_until, write_config
from tests.test_killswitch import auth, kill, redis_state

pytestmark = pytest.mark.timeout(30)


async def test_a_wrong_key_instance_without_a_snapshot_is_heard_by_the_fleet(
        tmp_path: Path, backends, redis_server: RedisServer,
        monkeypatch: pytest.MonkeyPatch) -> None:
    p = await backends(echo_app("v1"))
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    cfg_a = write_config(tmp_path / "a", two_versions(p, p, 100, 0),
                         state=redis_state(redis_server, tmp_path, "a"))
    state_b = redis_state(redis_server, tmp_path, "b").replace(
        "KILLGATE_TEST_STATE_KEY", "KILLGATE_OTHER_STATE_KEY")
    cfg_b = write_config(tmp_path / "b", two_versions(p, p, 100, 0), state=state_b)
    monkeypatch.setenv("KILLGATE_OTHER_STATE_KEY", "z" * 64)
    async with running_gateway(cfg_a, "gw-a") as a, ClientSession() as s:
        await kill(s, a.admin, "1s", scope="route", route="iris")
        at = a.gw.sync.tamper.at  # (when a value refused for each kind/cause came last)
        assert not any(k.endswith("/unknown_key_id") for k in at), at
        async with running_gateway(cfg_b, "gw-b") as b:
            assert not b.gw.sync.ready  # (it cannot verify the fleet's document)
            await wait_until(lambda: "ack/unknown_key_id" in at, 3.0,
                what="the fleet to hear (and refuse) the wrong-key instance's heartbeat")
            await wait_until(lambda: b.gw.sync.key_unconfirmed() is not None, 3.0,
                             what="the wrong-key instance to say its key is unconfirmed")
            assert not b.gw.sync.ready
            async with s.get(a.admin + "/v1/status", headers=auth()) as r:
                verification = (await r.json())["store"]["verification"]
            assert verification["unverified"].get("ack", 0) > 0, verification
        assert "route:iris" in a.gw.holder.doc.kills
        assert a.gw.metrics.get("killgate_state_reseeds_total") == 0
