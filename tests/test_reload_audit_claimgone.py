"""A change's claim gone before a sibling makes the same change (revleft, suspicion 1a of
the reload audit): deleted by anyone who can write to redis, or past its hour's TTL (a
staged deploy, or a sibling cut off from the store that long): the sibling claimed the
change afresh and wrote its `config.reload` event again, one change twice on the trail.
The event is on the trail's chain with the change's occurrence (`after.occurrence`): a
fresh claim now looks for it there first (occurrence.py `change_event`, the newest NEAR
entries), records nothing more, and names it in the claim.

Real redis-server, two gateways on one file, the claim deleted between their reloads."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from tests.backends import echo_app
from tests.conftest import RedisServer, running_gateway, wait_until
from tests.test_audit_retention import _fill
from tests.test_reload_audit_double import (
    fast_pair,
    reload_events,
    second_records_no_event,
)

pytestmark = pytest.mark.timeout(60)


def claims(redis: RedisServer, prefix: str) -> list[str]:
    raw = redis.cmd("KEYS", f"{prefix}:idem:config:*")
    return [line for line in raw.split("\r\n") if line.startswith(f"{prefix}:idem:")]


async def test_a_change_whose_claim_is_gone_is_not_recorded_again(
        tmp_path: Path, backends: Any, redis_server: RedisServer) -> None:
    p1, p2 = await backends(echo_app("v1")), await backends(echo_app("v2"))
    copies, b = fast_pair(tmp_path, redis_server, "kggone", p1, p2)
    async with running_gateway(copies[0], "one") as g1, \
            running_gateway(copies[1], "two") as g2:
        assert g1.gw.history.token == g2.gw.history.token
        copies[0].write_bytes(b.read_bytes())
        g1.gw.request_reload()
        await wait_until(lambda: len(reload_events(redis_server, "kggone")) == 1
                         and not g1.gw.history.pending(), 15, what="the first's event")
        [claim] = claims(redis_server, "kggone")
        assert redis_server.cmd("DEL", claim) == "1"  # (a redis writer; or its TTL passed)
        events = await second_records_no_event(g2, copies[1], b, redis_server, "kggone")
        # (the claim made again names the event found: a third sibling takes it at once)
        named = await g2.gw.sync.store.idem_claim(
            claim.split(":idem:", 1)[1], {"instance": "three", "time": 0.0}, 60.0)
        assert named is not None and named.get("event") == events[0]["hash"], named


async def test_a_change_whose_event_is_past_the_newest_thousand_is_not_recorded_again(
        tmp_path: Path, backends: Any, redis_server: RedisServer) -> None:
    """The claim still there, naming the first's event, but over NEAR (1,000) events
    appended since (a busy trail, the sibling's reload later within the claim's hour):
    the event was taken for one a store put back had lost, and written again. A claim that
    names an event is looked for further back (occurrence.SCAN entries) before that."""
    p1, p2 = await backends(echo_app("v1")), await backends(echo_app("v2"))
    copies, b = fast_pair(tmp_path, redis_server, "kgfar", p1, p2)
    async with running_gateway(copies[0], "one") as g1, \
            running_gateway(copies[1], "two") as g2:
        copies[0].write_bytes(b.read_bytes())
        g1.gw.request_reload()
        await wait_until(lambda: len(reload_events(redis_server, "kgfar")) == 1
                         and not g1.gw.history.pending(), 15, what="the first's event")
        await _fill(g1, 1010)
        await second_records_no_event(g2, copies[1], b, redis_server, "kgfar")
