"""An Idempotency-Key claimed by a write whose instance died before it answered (SIGKILL,
OOM, a node lost): the CLI sends the write once more with that key (to another instance,
through the load balancer), and that retry must run it, not answer "still being applied"
for the next 24 hours while no kill is made. Found by review (revadmin7): the claim was
kept as long as the answer (24 h), so every retry with the key got 409 in_progress."""

from __future__ import annotations

import asyncio
import hashlib
import json
import time
from pathlib import Path

import pytest

from gateway.admin import writes
from tests.backends import echo_app
from tests.conftest import bearer, running_gateway, two_versions, wait_until, write_config

pytestmark = pytest.mark.timeout(60)

KILL = json.dumps({"scope": "route", "route": "iris", "reason": "incident"}).encode()


async def test_a_claim_left_by_a_dead_instance_lapses_and_the_retry_applies_the_kill(
        tmp_path: Path, backends, session, monkeypatch: pytest.MonkeyPatch) -> None:
    lease = 1.0
    # the claim a write makes lives as long as this (before: as long as its answer, 24 h)
    ttl = lease if hasattr(writes, "CLAIM_LEASE") else writes.IDEMPOTENCY_TTL
    monkeypatch.setattr(writes, "CLAIM_LEASE", lease, raising=False)
    p = await backends(echo_app("v1"))
    async with running_gateway(write_config(tmp_path, two_versions(p, p))) as g:
        # the claim the first try made on the instance that died (as Writer makes it)
        ident = hashlib.sha256(b"alice\nkey-1").hexdigest()
        fingerprint = hashlib.sha256(b"POST /v1/kill\n" + KILL).hexdigest()
        assert await g.gw.sync.store.idem_claim(ident, {"fingerprint": fingerprint},
                                                ttl) is None
        claimed = time.monotonic()
        h = {**bearer("killgate:kill"), "Idempotency-Key": "key-1",
             "Content-Type": "application/json"}
        async with session.post(g.admin + "/v1/kill", data=KILL, headers=h) as r:
            body = await r.json()
            assert r.status == 200, body
        assert body["changed"] is True and "route:iris" in body["kill"], body
        assert "idempotent-replayed" not in r.headers
        assert time.monotonic() - claimed < lease + 5.5
        assert "route:iris" in g.gw.holder.doc.kills
        # a retry after that answer gets it back: one kill, one audit event
        async with session.post(g.admin + "/v1/kill", data=KILL, headers=h) as r:
            again = await r.json()
            assert r.status == 200 and r.headers["idempotent-replayed"] == "true"
        assert again["audit_id"] == body["audit_id"]
        async with session.get(g.admin + "/v1/audit", headers=bearer("killgate:read")) as r:
            events = (await r.json())["events"]
        assert [e["action"] for e in events].count("kill") == 1


async def test_a_write_running_longer_than_the_lease_keeps_its_claim(
        tmp_path: Path, backends, session, monkeypatch: pytest.MonkeyPatch) -> None:
    """The claim is renewed while its write runs: a retry sent meanwhile gets the first
    answer once it is there, and the write is made once (not a second time by the retry,
    as if the first had died)."""
    monkeypatch.setattr(writes, "CLAIM_LEASE", 0.6)
    p = await backends(echo_app("v1"))
    async with running_gateway(write_config(tmp_path, two_versions(p, p))) as g:
        sync = g.gw.sync
        real = sync.write
        writes_made: list[float] = []

        async def slow(*args, **kw):  # type: ignore[no-untyped-def]
            writes_made.append(time.monotonic())
            await asyncio.sleep(1.5)  # (a store that is slow to answer: 2.5 leases)
            return await real(*args, **kw)

        monkeypatch.setattr(sync, "write", slow)
        h = {**bearer("killgate:kill"), "Idempotency-Key": "key-2",
             "Content-Type": "application/json"}

        async def send() -> tuple[int, dict, bool]:
            async with session.post(g.admin + "/v1/kill?wait=5s", data=KILL,
                                    headers=h) as r:
                return r.status, await r.json(), "idempotent-replayed" in r.headers

        first = asyncio.ensure_future(send())
        await wait_until(lambda: writes_made, 5, 0.01, "the first write")
        await asyncio.sleep(1.0)  # (past the lease: only its renewal keeps the claim)
        second = await send()
        assert (await first)[0] == 200 and second[0] == 200, second
        assert second[2] is True, second  # the first answer, given back
        assert second[1]["audit_id"] == (await first)[1]["audit_id"]
        assert len(writes_made) == 1
