"""A write's answer is recorded under its Idempotency-Key only while the claim is still its
own (found by review, left: the final `idem_set` was unconditional). A write whose claim
lapsed (its renewals could not land) while a retry took the key and answered it overwrote
the retry's record with its own: the next try was answered with the first write's result
while the retry's had also been applied, and the retry's own audit trail pointed nowhere.
The answer is now written by compare-and-set on the claim's holder, as renewals are; a lost
claim is logged `idempotency_claim_lost`. On a real redis-server, the local store's file,
and through a real in-process gateway's admin API."""

from __future__ import annotations

import hashlib
import json
import logging
from pathlib import Path
from typing import Any

import pytest

from tests.backends import echo_app
from tests.conftest import RedisServer, bearer, running_gateway, two_versions, write_config
from tests.staterig import store_on

pytestmark = pytest.mark.timeout(20)

KILL = json.dumps({"scope": "route", "route": "iris", "reason": "INC-40"}).encode()
RETRY = {"fingerprint": "f", "holder": "retry", "status": 200, "response": {"by": "retry"}}


async def _settle_only_while_held(store: Any) -> None:
    first = {"fingerprint": "f", "holder": "first"}
    assert await store.idem_claim("k", first, 30.0) is None
    answer = {**first, "status": 200, "generation": 3, "extra": {}}
    assert await store.idem_settle("k", answer, 30.0)  # (its own claim: written)
    assert await store.idem_settle("k", {**answer, "response": {"by": "first"}}, 30.0)
    # the claim lapsed and a retry took the key and answered: the first's answer is not
    # written over it
    await store.idem_release("k")
    assert await store.idem_claim("k", {"fingerprint": "f", "holder": "retry"}, 30.0) is None
    assert await store.idem_settle("k", RETRY, 30.0)
    assert not await store.idem_settle("k", {**answer, "response": {"by": "first"}}, 30.0)
    assert await store.idem_claim("k", {"fingerprint": "f", "holder": "x"}, 30.0) == RETRY
    await store.idem_release("k")
    assert not await store.idem_settle("k", answer, 30.0)  # (nothing held: nothing written)
    assert await store.idem_claim("k", {"fingerprint": "f", "holder": "y"}, 30.0) is None


async def test_an_answer_is_recorded_only_while_held_on_redis(
        redis_server: RedisServer) -> None:
    store = store_on(redis_server, "kgcas")
    await store.open()
    try:
        await _settle_only_while_held(store)
    finally:
        await store.close()


async def test_an_answer_is_recorded_only_while_held_on_the_local_store(
        tmp_path: Path) -> None:
    from gateway.state.local import LocalStore

    store = LocalStore(tmp_path / "store.json")
    await store.open()
    try:
        await _settle_only_while_held(store)
    finally:
        await store.close()


async def test_a_write_whose_claim_was_taken_keeps_the_retrys_answer(
        tmp_path: Path, backends, session, monkeypatch: pytest.MonkeyPatch,
        caplog: pytest.LogCaptureFixture) -> None:
    p = await backends(echo_app("v1"))
    async with running_gateway(write_config(tmp_path, two_versions(p, p))) as g:
        sync = g.gw.sync
        store = sync.store
        real = sync.write
        ident = hashlib.sha256(b"alice\nkey-40").hexdigest()
        fingerprint = hashlib.sha256(b"POST /v1/kill\n" + KILL).hexdigest()
        retry = {**RETRY, "fingerprint": fingerprint}

        async def lapsed(*args: Any, **kw: Any) -> Any:
            # while this write runs its claim lapses (renewals that did not land), and a
            # retry on another instance claims the key and answers
            await store.idem_release(ident)
            assert await store.idem_claim(ident, {"fingerprint": fingerprint,
                                                  "holder": "retry"}, 30.0) is None
            assert await store.idem_settle(ident, retry, 30.0)
            return await real(*args, **kw)

        monkeypatch.setattr(sync, "write", lapsed)
        h = {**bearer("killgate:kill"), "Idempotency-Key": "key-40",
             "Content-Type": "application/json"}
        with caplog.at_level(logging.WARNING, "killgate.admin"):
            async with session.post(g.admin + "/v1/kill", data=KILL, headers=h) as r:
                assert r.status == 200, await r.text()
        # the retry's record stands; the next try is answered with it
        assert await store.idem_claim(ident, {"fingerprint": fingerprint, "holder": "z"},
                                      30.0) == retry
        assert "idempotency_claim_lost" in caplog.text
