"""The `unknown` record of a write whose commit's answer was lost (admin/writes.py
`_unknown`), when the store is away at that moment too (a failover: likely what lost the
answer): tried again in the background until the claim's lease ends
(idemkeys.settle_later). A real redis-server behind a fault proxy that mutes the replies."""

from __future__ import annotations

import asyncio
import hashlib
from pathlib import Path

import pytest

from tests.backends import echo_app
from tests.conftest import running_gateway, two_versions, wait_until, write_config
from tests.faultproxy import Forwarder, redis_state_via
from tests.test_killswitch import auth, kill
from tests.test_unkill_outcome_unknown import BODY

pytestmark = pytest.mark.timeout(60)


async def test_the_unknown_record_is_made_once_the_store_is_back(
        tmp_path: Path, backends, session, fwd: Forwarder) -> None:
    """Found by review (revmerge16): the commit's answer lost, then the store away for the
    record of the `unknown` key too: the claim was left to lapse (15 s), and a retry after
    that ran the unkill again (409 not_killed, though the first lifted the kill). The record
    is now made once the store is back (within the lease), and the retry answers the first
    attempt's result."""
    p = await backends(echo_app("v1"))
    state = redis_state_via(fwd, tmp_path, "kg-url", command_timeout="300ms")
    cfg = write_config(tmp_path, two_versions(p, p), state=state)
    async with running_gateway(cfg) as g:
        await kill(session, g.admin, scope="route", route="iris")
        cmd, *rest = [ln for ln in fwd.links if b"SUBSCRIBE" not in ln.head]
        for link in rest:  # (the commits' connection: their replies lost)
            link.muted = True
        headers = {**auth(), "Idempotency-Key": "late"}
        first = asyncio.ensure_future(session.post(f"{g.admin}/v1/unkill?wait=1s",
                                                   json=BODY, headers=headers))
        await wait_until(lambda: "route:iris" not in g.gw.holder.doc.kills, 5, 0.005,
                         what="the unkill, landed (its push)")
        cmd.muted = True  # the store away for the `unknown` record too
        async with await first as r:
            body = await r.json()
            assert (r.status, body["error"]["type"]) == (503, "outcome_unknown"), body
        for link in fwd.links:
            link.muted = False
        ident = hashlib.sha256(b"alice\nlate").hexdigest()

        async def recorded() -> bool:
            rec = await g.gw.sync.store.idem_claim(
                ident, {"fingerprint": "probe", "holder": "probe"}, 0.001)
            return rec is not None and "unknown" in rec

        await wait_until(recorded, 8, what="the unknown record, made once the store is back")
        async with session.post(f"{g.admin}/v1/unkill?wait=1s", json=BODY,
                                headers=headers) as r:
            body = await r.json()
            assert (r.status, r.headers.get("idempotent-replayed")) == (200, "true"), body
        unkills = [e for e in await g.gw.sync.store.audit_events() if e["action"] == "unkill"]
        assert [e["id"] for e in unkills] == [body["audit_id"]]
