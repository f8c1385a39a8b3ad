"""Instances that started while the state store did not answer audited every later reload
once each, for as long as they ran (found by revreload): `begin` could not read the fleet's
config occurrence, so each kept a random one of its own, and a change's claim key (made of
it) differed per instance: two instances, two `config.reload` events for one change; a
`serve --workers 8` group started in an outage, eight, for every reload until restarted
(the log said "the next config change"). Now an instance joins the fleet's occurrence once
the store answers (ConfigHistory.begin, again, in the background), as a start then would.

Real redis-server, stopped before two gateways start on one file (no snapshot: they start
on the config alone after start_timeout), started again; then one change, made by both."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from gateway.configfile import load_config
from tests.backends import echo_app
from tests.conftest import RedisServer, running_gateway, wait_until
from tests.staterig import redis_section
from tests.test_reload_audit_double import reload_events, two_instances

pytestmark = pytest.mark.timeout(60)


async def test_instances_started_in_an_outage_record_a_later_change_once(
        tmp_path: Path, backends: Any, redis_server: RedisServer) -> None:
    p1, p2 = await backends(echo_app("v1")), await backends(echo_app("v2"))
    state = redis_section(redis_server.url, "kgjoin", poll_interval="100ms",
                          heartbeat_interval="200ms", instance_lease="2s",
                          command_timeout="300ms", start_timeout="1s",
                          ready_without_state="true")
    copies, b = two_instances(tmp_path, p1, p2, state)
    redis_server.kill()
    async with running_gateway(copies[0], "one") as g1, \
            running_gateway(copies[1], "two") as g2:
        gws = (g1.gw, g2.gw)
        assert not any(g.sync.synced_once for g in gws)  # (they started without the store)
        redis_server.start()
        await wait_until(lambda: all(g.sync.synced_once for g in gws), 20,
                         what="both instances to sync")
        db = load_config(b).digest
        # (the join, read from the trail once the store answered, ended: a task of the
        # fix's; without it there is none, and the change below is recorded twice)
        await wait_until(lambda: all(getattr(g.history, "_join", None) is None
                                     or g.history._join.done() for g in gws), 10,
                         what="both instances to join the fleet's config occurrence")
        for c, g in zip(copies, gws, strict=True):
            c.write_bytes(b.read_bytes())
            g.request_reload()
        await wait_until(lambda: all(g.watcher is not None
                                     and g.watcher.outcome.loaded_digest == db for g in gws),
                         15, what="the change applied on both (its audit queued)")
        await wait_until(lambda: not any(g.history.pending() for g in gws), 20,
                         what="both audits to end")
        events = [e for e in reload_events(redis_server, "kgjoin")
                  if e["after"]["digest"] == db]
        assert len(events) == 1, [(e["actor"], e["after"]["occurrence"]) for e in events]
