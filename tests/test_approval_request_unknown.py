"""A gated write (its approval REQUEST) whose commit's answer was lost (503
`outcome_unknown`) and retried with its Idempotency-Key is answered as every other
retried write is: with the first answer, marked `idempotent-replayed: true`, and one
`replay` record in the trail, not a second `approval.request` (real redis-server behind
the fault proxy muting the commit connection's replies). Found at stop 37 (impadmin4 item
1): the request carried no answer with its lost commit, so its key was let go and the
retry ran the request again: the same id was found, but the answer was not marked a
replay (a script could not tell a retry answered from a fresh request)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from tests.adminpost import keyed_post
from tests.backends import echo_app
from tests.conftest import running_gateway, two_versions, wait_until, write_config
from tests.faultproxy import Forwarder, redis_state_via

pytestmark = pytest.mark.timeout(60)


def _mute_commits(fwd: Forwarder) -> None:
    # the connections: "cmd" (made first), the subscription, and "write" (commits)
    for link in [ln for ln in fwd.links if b"SUBSCRIBE" not in ln.head][1:]:
        link.muted = True


async def test_a_retried_request_after_outcome_unknown_is_a_replay(
        tmp_path: Path, backends, session: Any, fwd: Forwarder) -> None:
    p = await backends(echo_app("v1"))
    state = redis_state_via(fwd, tmp_path, "kg-apreq1", command_timeout="300ms")
    cfg = write_config(tmp_path, two_versions(p, p), state=state,
                       extra="approvals: {unkill_global: 2, ttl: 1m}\n")
    async with running_gateway(cfg) as g:
        status, body, _ = await keyed_post(session, g.admin, "alice", "/v1/kill",
                                           {"scope": "global", "reason": "INC-9"})
        assert status == 200, body
        _mute_commits(fwd)
        ask = {"scope": "global", "reason": "INC-9 over"}
        status, body, _ = await keyed_post(session, g.admin, "alice", "/v1/unkill", ask,
                                           "unkill-1")
        assert (status, body["error"]["type"]) == (503, "outcome_unknown"), body
        await wait_until(lambda: bool(g.gw.holder.doc.approvals), 5,
                         what="the request, landed (its push)")
        (ident,) = g.gw.holder.doc.approvals
        gen = g.gw.holder.doc.generation
        for _ in range(2):  # (the retry that learns it landed, and one after)
            status, again, replayed = await keyed_post(session, g.admin, "alice",
                                                       "/v1/unkill", ask, "unkill-1")
            assert (status, again["approval"]["id"], replayed) == (202, ident, True), again
            assert again["approval"]["requested_by"] == "alice"
            assert again["approval"]["approved_by"] == ["alice"]
        assert g.gw.holder.doc.generation == gen and "global" in g.gw.holder.doc.kills
        events = await g.gw.sync.store.audit_events()
        assert len([e for e in events if e["action"] == "approval.request"]) == 1
