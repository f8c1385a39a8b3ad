"""Which state key ids each instance trusts, fleet-wide (found by review revrot5): a key
rotation's step 2 (swapping the keys) is safe only once every instance holds the new key
(step 1 done everywhere), its step 3 once every one signs with it; `/v1/status` said only
the answering instance's keys, so an operator could not tell from one place when a step was
safe. Every heartbeat now carries the key ids (signed with its addresses) and `GET
/v1/fleet` says them per instance and counts them per key id over the live instances.

Real redis-server, real gateways (the code of `killgate serve`).
"""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.conftest import RedisServer, bearer, running_gateway, wait_until
from tests.rotationrig import A_ENV, B_ENV, rotation

pytestmark = pytest.mark.timeout(40)


async def test_the_fleet_view_says_which_key_ids_each_instance_trusts(
        tmp_path: Path, backends, session, redis_server: RedisServer,
        monkeypatch: pytest.MonkeyPatch) -> None:
    rot = await rotation(tmp_path, redis_server, backends, monkeypatch)
    a, b = rot.a, rot.b
    cfg = rot.cfg

    # one instance at step 1 (the new key B as its previous), one not yet
    async with running_gateway(cfg("s1", A_ENV, B_ENV), "gw-s1") as g1, \
            running_gateway(cfg("s0", A_ENV), "gw-s0"):
        url, auth = g1.admin + "/v1/fleet", bearer("killgate:read")

        async def both_said() -> dict | None:
            async with session.get(url, headers=auth) as r:
                assert r.status == 200
                body = await r.json()
            said = [r for r in body["instances"] if r["live"] and r["key_ids"]]
            return body if len(said) == 2 else None

        body = await wait_until(both_said, 10, 0.05, "both instances' key ids")
        rows = {r["instance"]: r for r in body["instances"]}
        assert rows["gw-s1"]["key_ids"] == [a.kid, b.kid]
        assert rows["gw-s0"]["key_ids"] == [a.kid]
        # step 2 is not safe yet: one live instance of two does not hold B
        assert body["live"] == 2
        assert body["key_ids"] == {a.kid: {"signing": 2, "trusted": 2},
                                   b.kid: {"signing": 0, "trusted": 1}}
        async with session.get(g1.admin + "/v1/status", headers=auth) as r:  # (the same)
            status = await r.json()
        assert status["instances"]["gw-s1"]["key_ids"] == [a.kid, b.kid], status["instances"]
