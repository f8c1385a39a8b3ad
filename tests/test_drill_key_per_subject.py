"""A drill open's Idempotency-Key is the caller's own (admin/idemkeys.py: the key's identity
is the subject's and the key's hash), as every write's: another caller sending the same key
and body never gets the first caller's drill, its `readyz_keys` or its `before`, and the
same caller's key with another body is refused. Checked by review (revdrill10) after the
drill writes began keeping a 503 not_durable answer under the key (the first try's drill
replayed to a retry): a guard, not a fix. On a real redis-server, without a replica under
`min_replicas: 1` (every open answered not_durable, committed), then with one."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.adminpost import keyed_post
from tests.backends import echo_app
from tests.conftest import RedisServer, running_gateway, wait_until, write_config
from tests.drillrig import DRILL, routes
from tests.faultproxy import Forwarder, redis_state_via
from tests.test_replicas import attach_replica

pytestmark = pytest.mark.timeout(60)


async def test_another_caller_with_the_same_key_never_gets_the_first_callers_drill(
        tmp_path: Path, backends, session, redis_server: RedisServer,
        second_redis: RedisServer, fwd: Forwarder) -> None:
    p1, p2 = await backends(echo_app("v1")), await backends(echo_app("v2"))
    state = redis_state_via(fwd, tmp_path, "kg-subj", min_replicas="1",
                            replica_timeout="200ms")
    async with running_gateway(write_config(tmp_path, routes(p1, p2), state=state)) as g:
        opened = {"kind": "kill", "route": "iris-drill", "version": "v2", "reason": "r"}
        status, body, _ = await keyed_post(session, g.admin, "dana", "/v1/drills", opened,
                                           "same-key", DRILL)
        assert (status, body["error"]["type"]) == (503, "not_durable"), body
        [danas] = g.gw.holder.doc.drills
        assert body["error"]["drill"] == danas, body  # (the 503 names the drill it opened)
        # bob, the same key and body: his own open, refused (dana's drill holds the route)
        status, body, replayed = await keyed_post(session, g.admin, "bob", "/v1/drills",
                                                  opened, "same-key", DRILL)
        assert (status, body["error"]["type"], replayed) == (409, "drill_in_progress",
                                                              False), body
        assert "readyz_keys" not in body and "before" not in body
        await attach_replica(redis_server, second_redis)

        async def confirmed() -> bool:
            got = await keyed_post(session, g.admin, "dana", "/v1/drills", opened,
                                   "same-key", DRILL)
            return got[0] == 200

        await wait_until(confirmed, 10, 0.2, "dana's open, confirmed")
        status, body, replayed = await keyed_post(session, g.admin, "dana", "/v1/drills",
                                                  opened, "same-key", DRILL)
        assert (status, replayed, body["drill"]) == (200, True, danas), body
        status, body, replayed = await keyed_post(session, g.admin, "bob", "/v1/drills",
                                                  opened, "same-key", DRILL)
        assert (status, body["error"]["type"], replayed) == (409, "drill_in_progress",
                                                              False), body
        # dana's key with another body: refused, not her first answer
        status, body, _ = await keyed_post(session, g.admin, "dana", "/v1/drills",
                                           {**opened, "version": "v1"}, "same-key", DRILL)
        assert (status, body["error"]["type"]) == (409, "idempotency_key_reused"), body
