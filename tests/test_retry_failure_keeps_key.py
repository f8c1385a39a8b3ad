"""A retry (after 503 outcome_unknown) that takes the Idempotency-Key to run the write
again, because the first attempt had not landed yet, and then fails (refused, the store
away) puts the key's record of the first attempt back: it may still land, its commit in
flight. Found by review (revmerge21): the failure let the key go, and with it the first
attempt's write id: the next retry ran the step afresh, unfenced, and when the first
attempt had landed meanwhile a final approve's retry answered 404 unknown_approval for
the change it had applied. On a real redis-server behind a fault proxy that delays the
first attempt's commit past the call's deadline (it lands after the answer)."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.adminpost import keyed_post, unkill_asked
from tests.backends import echo_app
from tests.conftest import running_gateway, two_versions, wait_until, write_config
from tests.faultproxy import Forwarder, redis_state_via

pytestmark = pytest.mark.timeout(60)


_call = keyed_post


async def test_a_failed_retry_puts_back_the_first_attempts_record(
        tmp_path: Path, backends, session, fwd: Forwarder) -> None:
    p = await backends(echo_app("v1"))
    state = redis_state_via(fwd, tmp_path, "kg-rfk", command_timeout="300ms")
    cfg = write_config(tmp_path, two_versions(p, p), state=state,
                       extra="approvals: {unkill_global: 2, ttl: 1m}\n")
    async with running_gateway(cfg) as g:
        approval = await unkill_asked(session, g.admin, "INC-5")
        path = f"/v1/approvals/{approval['id']}/approve"
        # (the refusal below is tallied into the trail at shutdown: an event appended
        # before the late commit moves the audit head it compares, and it would not land)
        await g.gw.admin_api.denied.stop()
        # the store's "write" connection (commits): the commit reaches redis after the
        # call's deadline
        conn = g.gw.sync.store._conns["write"]
        port = conn._transport.get_extra_info("sockname")[1]
        write = [ln for ln in fwd.links if ln.client_port == port]
        assert len(write) == 1
        for link in write:
            link.latency = 1.0
        status, body, _ = await _call(session, g.admin, "bob", path, {"reason": "ok"}, "k")
        for link in write:
            link.latency = 0.0
        assert (status, body["error"]["type"]) == (503, "outcome_unknown"), body
        assert "global" in g.gw.holder.doc.kills  # (not landed yet: in flight)
        # a retry that runs it again and is refused (here: the same subject's token
        # without the action's scope): nothing done, and the first attempt's record kept
        status, body, _ = await _call(session, g.admin, "bob", path, {"reason": "ok"}, "k",
                                      scope="killgate:read")
        assert status == 403, body
        await wait_until(lambda: "global" not in g.gw.holder.doc.kills, 5,
                         what="the first attempt, landed late")
        status, body, replayed = await _call(session, g.admin, "bob", path,
                                             {"reason": "ok"}, "k")
        assert (status, replayed) == (200, True), body
        assert body["approval"]["state"] == "applied", body
