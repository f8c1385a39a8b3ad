"""The subscription kept while the store held a document this instance cannot verify
(state/redis.py `kept`, state/startup.py): no heartbeat is sent then, so nothing judges
its silence, and a subscription that died meanwhile was kept as it was. Once the document
verified again, kills made elsewhere came by poll alone (poll_interval) until its silence
was noticed. Real redis-server, in-process gateways (the code of `killgate serve`); a
fresh instance (no snapshot: nothing of its own to re-seed with) goes unverifiable on a
forged document; the document is repaired by deleting it (an empty store: seeded again)."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import pytest
from aiohttp import ClientSession

from tests.backends import echo_app
from tests.conftest import RedisServer, running_gateway, two_versions, wait_until, write_config
from tests.faultproxy import Forwarder, redis_state_via
from tests.staterig import redis_section
from tests.test_killswitch import kill

pytestmark = pytest.mark.timeout(30)

#: a poll this slow tells a push from the poll; the heartbeat as slow: a subscription's
#: silence is judged after 3 of them (and at the next watch: after the poll)
SLOW = {"poll_interval": "20s", "heartbeat_interval": "8s", "instance_lease": "40s",
        "max_staleness": "60s", "command_timeout": "300ms", "start_timeout": "400ms"}
FORGED = "KGS1 0badc0de " + "0" * 64 + " {}"


async def _unverifiable_then_repaired(tmp_path: Path, backends, session: ClientSession,
                                      redis: RedisServer, fwd: Forwarder,
                                      break_sub) -> float:  # type: ignore[no-untyped-def]
    """A (through `fwd`) starts on a forged document: unverifiable. `break_sub` breaks
    its subscription; the document is repaired; B kills a version: how long A took."""
    p = await backends(echo_app("v1"))
    routes = two_versions(p, p, 100, 0)
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    await asyncio.to_thread(redis.cmd, "SET", "kgsub:state", FORGED)
    await asyncio.to_thread(redis.cmd, "SET", "kgsub:gen", "7")
    cfg_a = write_config(tmp_path / "a", routes,
                         state=redis_state_via(fwd, tmp_path / "a", "kgsub", **SLOW))
    cfg_b = write_config(tmp_path / "b", routes, state=redis_section(
        redis.url, "kgsub", tmp_path / "b" / "snap.json", **SLOW))
    async with running_gateway(cfg_a, "a") as a:
        sync = a.gw.sync
        await wait_until(lambda: sync.answering and sync.unverifiable, 5,
                         what="a to refuse the forged document")
        await break_sub()
        await asyncio.sleep(0.3)  # (an attempt or two on the broken subscription)
        await asyncio.to_thread(redis.cmd, "DEL", "kgsub:state", "kgsub:gen")
        await wait_until(lambda: sync.connected and sync.unverifiable is None, 5,
                         what="a to sync on the repaired store")
        async with running_gateway(cfg_b, "b") as b:
            t0 = time.monotonic()
            await kill(session, b.admin, wait="0s", scope="version", route="iris",
                       version="v2")
            await wait_until(lambda: "version:iris:v2" in sync.holder.doc.kills, 10,
                             what="the kill to reach a")
            return time.monotonic() - t0


async def test_a_subscription_killed_while_unverifiable_is_replaced(
        tmp_path: Path, backends, session: ClientSession, redis_server: RedisServer,
        fwd: Forwarder) -> None:
    """CLIENT KILL TYPE pubsub: the connection's end is seen (its `closed`), at the next
    attempt's `kept`."""
    async def client_kill() -> None:
        await asyncio.to_thread(redis_server.cmd, "CLIENT", "KILL", "TYPE", "pubsub")

    took = await _unverifiable_then_repaired(tmp_path, backends, session, redis_server, fwd,
                                             client_kill)
    assert took < 1.5, f"the kill took {took:.1f}s to reach a (a poll, not a push)"


async def test_a_subscription_gone_silent_while_unverifiable_is_replaced(
        tmp_path: Path, backends, session: ClientSession, redis_server: RedisServer,
        fwd: Forwarder) -> None:
    """The subscription's connection goes silent (half-open: what redis sends is lost on
    the way, no end is ever seen): kept, every push after the repair was lost until a
    poll. `kept` now asks the subscription (PING) and replaces one that does not answer."""
    async def mute() -> None:
        subs = [link for link in fwd.links if b"SUBSCRIBE" in link.head
                and not link.ends[0].is_closing()]  # (each start attempt subscribed)
        assert len(subs) == 1, len(subs)
        subs[0].muted = True

    took = await _unverifiable_then_repaired(tmp_path, backends, session, redis_server, fwd,
                                             mute)
    assert took < 1.5, f"the kill took {took:.1f}s to reach a (a poll, not a push)"
