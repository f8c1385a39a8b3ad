"""KEY UNCONFIRMED lasts while another instance signing with a key this one does not hold
is live by the lease, no longer (found by review revfalse2, a stop-38 residual). After such
an instance crashed (no leave: its heartbeat stays in the store until 10 leases old), a
lone instance said KEY UNCONFIRMED for up to a lease after it READ that heartbeat, whenever
that was: one that started (or restarted) after the crash read the dead instance's
heartbeat, refused it, and said its own key unconfirmed, though nothing live signs with
another key. The rule now: a refused heartbeat counts by the time the store stamped it
(an ack pushed on the acks channel, by its arrival), over the instance lease, as a verified
heartbeat counts an instance live.

Real redis-server; the other-key instance is a RedisStore signing with its own key (a crash
is its heartbeat left in the store); the lone instance is an in-process gateway (the code
of `killgate serve`).
"""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import pytest

from gateway.state.redis import RedisStore
from gateway.state.signing import Key, Keyring
from tests.backends import echo_app
from tests.conftest import RedisServer, running_gateway, two_versions, wait_until, write_config
from tests.staterig import redis_state

pytestmark = pytest.mark.timeout(30)


def other_key_store(redis: RedisServer) -> RedisStore:
    return RedisStore(redis.url, "kgtest", 1.0, keys=Keyring(Key.of(b"o" * 64)))


async def test_key_unconfirmed_ends_with_the_other_keys_lease(
        tmp_path: Path, backends, redis_server: RedisServer) -> None:
    p = await backends(echo_app("v1"))
    cfg = write_config(tmp_path, two_versions(p, p, 100, 0),
                       state=redis_state(redis_server, tmp_path, "a"))  # (lease 2 s)
    other = other_key_store(redis_server)
    await other.open()
    try:
        async with running_gateway(cfg, "gw-a") as a:
            sync = a.gw.sync
            await wait_until(lambda: sync.synced_once, 5, what="A synced")
            for _ in range(3):  # the other instance lives for a moment, then crashes
                await other.heartbeat("gw-other", 1, "sha256:x")
                await asyncio.sleep(0.2)
                await sync.peers.members()  # (/v1/status, /v1/fleet: a fleet read)
            assert sync.key_unconfirmed() is not None
            crashed = time.monotonic()
            while time.monotonic() - crashed < 2.0 + 0.6:
                await sync.peers.members()
                await asyncio.sleep(0.1)
            assert sync.key_unconfirmed() is None, "still unconfirmed past the lease"
        # a lone instance started after the crash: the dead instance's heartbeat (older
        # than a lease, still in the store) says nothing of its key
        await asyncio.sleep(0.5)
        async with running_gateway(cfg, "gw-a") as a:
            sync = a.gw.sync
            await wait_until(lambda: sync.synced_once, 5, what="A synced again")
            await sync.peers.members()
            assert sync.tamper.counts.get("heartbeat")  # (counted, as ever: refused)
            assert sync.key_unconfirmed() is None, sync.key_unconfirmed()
    finally:
        await other.close()
