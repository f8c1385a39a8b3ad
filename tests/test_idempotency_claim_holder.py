"""An Idempotency-Key's claim is a 15 s lease renewed while its write runs (admin/writes.py).
A write whose renewals could not land (the store slow or away for a while) loses it, and a
retry (the CLI's, to another instance) then claims the key and runs the write. The first
write's later renewal, or its release when it fails, then overwrote or deleted the retry's
claim: a third try ran the write once more, while the retry's own renewals kept a record
that was not its own. A claim names its holder now: renewed and released only while it is
still the one the key holds. On a real redis-server and on the local store's file."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import RedisServer
from tests.staterig import store_on

pytestmark = pytest.mark.timeout(20)


async def _lapse_then_retry(store: Any) -> None:
    first = {"fingerprint": "f", "holder": "first"}
    retry = {"fingerprint": "f", "holder": "retry"}
    # (a lease long enough that a loaded host's pause between the two calls is not a lapse)
    assert await store.idem_claim("k", first, 1.5) is None
    assert await store.idem_renew("k", first, 1.5)  # (held: renewed)
    # the first write's renewals do not land: its claim lapses, and the retry takes it
    deadline = time.monotonic() + 10
    while await store.idem_claim("k", retry, 30.0) is not None:
        assert time.monotonic() < deadline, "the claim never lapsed"
        await store_pause()
    # the first write's renewal, then its release (it failed): the retry's claim stands
    assert not await store.idem_renew("k", first, 30.0)
    await store.idem_release("k", first)
    third = {"fingerprint": "f", "holder": "third"}
    assert await store.idem_claim("k", third, 30.0) == retry
    assert await store.idem_renew("k", retry, 30.0)
    await store.idem_release("k", retry)
    assert await store.idem_claim("k", third, 30.0) is None  # (released by its holder)


async def store_pause() -> None:
    import asyncio

    await asyncio.sleep(0.05)  # (polling the store until the lease lapses)


async def test_a_lapsed_claim_does_not_take_back_a_retrys(redis_server: RedisServer) -> None:
    store = store_on(redis_server, "kgidem")
    await store.open()
    try:
        await _lapse_then_retry(store)
    finally:
        await store.close()


async def test_a_lapsed_claim_does_not_take_back_a_retrys_on_the_local_store(
        tmp_path: Path) -> None:
    from gateway.state.local import LocalStore

    store = LocalStore(tmp_path / "store.json")
    await store.open()
    try:
        await _lapse_then_retry(store)
    finally:
        await store.close()
