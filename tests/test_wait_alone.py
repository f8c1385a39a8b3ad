"""A write waiting for its replicas (WAIT) has its connection to itself: a commit made
meanwhile (the sync loop's re-seed of a store that lost a write: it does not wait for the
write lock) does not queue behind the WAIT (state/rediscommit.py `replicated`).

WAIT blocks the connection it is sent on; a commit sent on it meanwhile missed its deadline
there, and the deadline closed the connection, the WAIT's too: the commit was answered
"outcome unknown" and the write "not durable", though redis would have run the one and the
replica was about to confirm the other. A primary and a real replica, SIGSTOPped while the
commit is made (its ack comes late, as a busy replica's does)."""

from __future__ import annotations

import asyncio
import subprocess

import pytest

from gateway.domain.audit import AuditDraft
from gateway.domain.statedoc import StateDoc
from tests.conftest import RedisServer, wait_until
from tests.staterig import store_on
from tests.test_replicas import attach_replica

pytestmark = pytest.mark.timeout(60)


def _waiting(redis: RedisServer) -> bool:
    out = subprocess.run(["redis-cli", "-p", str(redis.port), "CLIENT", "LIST"],
                         capture_output=True, text=True, timeout=5).stdout
    return "cmd=wait" in out


async def test_a_commit_made_while_a_write_waits_for_replicas_goes_past_it(
        redis_server: RedisServer, second_redis: RedisServer) -> None:
    primary, replica = redis_server, second_redis
    await attach_replica(primary, replica)
    store = store_on(primary, "kgwait", timeout=0.5)
    await store.open()
    try:
        await store.commit(None, StateDoc(generation=1), AuditDraft("ops", "seed", {}, ""))
        replica.freeze()
        try:
            waited = asyncio.ensure_future(store.replicated(1, 8.0, 1))
            await wait_until(lambda: _waiting(primary), 10, 0.02, what="the WAIT")
            got = await store.load()
            assert got.doc is not None
            await store.commit(got.token, got.doc, AuditDraft("ops", "append", {}, "beside"))
            assert not waited.done()
        finally:
            replica.thaw()
        assert await asyncio.wait_for(waited, 20) == 1  # (before: StoreUnavailable)
    finally:
        await store.close()
