"""A retried approval step (approve, decline) after `outcome_unknown` answers with the
step's recorded result, as the other writes do (admin/writes.py), on a real redis-server
whose commit replies are lost (a fault proxy mutes the commit connection). Found by
review (impadmin3 item 3): a step carried no answer with its lost commit, so its
Idempotency-Key was let go and the retry ran the step again: 404 unknown_approval for a
final approve or a decline that had landed, 409 already_approved for an approval that had
(a script retrying on 5xx reported a failure for a step done)."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import pytest

from tests.adminpost import keyed_post, unkill_asked
from tests.backends import echo_app
from tests.conftest import (
    bearer,
    free_port,
    running_gateway,
    two_versions,
    wait_until,
    write_config,
)
from tests.faultproxy import Forwarder, redis_state_via

pytestmark = pytest.mark.timeout(60)


_call = keyed_post


async def _requested(session: Any, g: Any, fwd: Forwarder) -> str:
    """A global kill, alice's request to lift it (waiting for approval), and from now
    on the commit connection's replies lost: the approval's id."""
    approval = await unkill_asked(session, g.admin, "INC-9")
    # the connections: "cmd" (made first), the subscription, and "write" (commits)
    for link in [ln for ln in fwd.links if b"SUBSCRIBE" not in ln.head][1:]:
        link.muted = True
    return str(approval["id"])


def _config(tmp_path: Path, port: int, fwd: Forwarder, prefix: str, approvals: int,
            **listeners: str) -> Path:
    """Commits through `fwd` (a 300 ms deadline), global unkills needing `approvals`."""
    return write_config(tmp_path, two_versions(port, port),
                        state=redis_state_via(fwd, tmp_path, prefix, command_timeout="300ms"),
                        extra=f"approvals: {{unkill_global: {approvals}, ttl: 1m}}\n",
                        **listeners)


async def _lost_then_replayed(session: Any, g: Any, who: str, path: str,
                              landed: Any) -> tuple[int, dict]:
    status, body, _ = await _call(session, g.admin, who, path, {"reason": "ok"}, "step-1")
    assert (status, body["error"]["type"]) == (503, "outcome_unknown"), body
    await wait_until(landed, 5, what="the step, landed (its push)")
    status, body, replayed = await _call(session, g.admin, who, path, {"reason": "ok"},
                                         "step-1")
    assert replayed, (status, body)
    # and again: the answer as recorded now
    status2, again, replayed = await _call(session, g.admin, who, path, {"reason": "ok"},
                                           "step-1")
    assert (status2, again.get("audit_id"), replayed) == (status, body.get("audit_id"), True)
    return status, body


async def test_a_retried_final_approve_answers_the_applied_change(
        tmp_path: Path, backends, session, fwd: Forwarder) -> None:
    p = await backends(echo_app("v1"))
    cfg = _config(tmp_path, p, fwd, "kg-apou1", 2)
    async with running_gateway(cfg) as g:
        ident = await _requested(session, g, fwd)
        status, body = await _lost_then_replayed(
            session, g, "bob", f"/v1/approvals/{ident}/approve",
            lambda: "global" not in g.gw.holder.doc.kills)
        assert status == 200 and body["approval"]["state"] == "applied", body
        assert body["approval"]["approved_by"] == ["alice", "bob"]
        assert body["generation"] == g.gw.holder.doc.generation
        unkills = [e for e in await g.gw.sync.store.audit_events() if e["action"] == "unkill"]
        assert [e["id"] for e in unkills] == [body["audit_id"]]


async def test_a_retried_approval_short_of_the_last_answers_the_step(
        tmp_path: Path, backends, session, fwd: Forwarder) -> None:
    """An approval that does not apply the change yet (202, no generation to wait for):
    answered as it was made, the approvals it counted."""
    p = await backends(echo_app("v1"))
    cfg = _config(tmp_path, p, fwd, "kg-apou2", 3)
    async with running_gateway(cfg) as g:
        ident = await _requested(session, g, fwd)

        def counted() -> bool:
            raw = g.gw.holder.doc.approvals.get(ident) or {}
            return "bob" in str(raw)

        status, body = await _lost_then_replayed(
            session, g, "bob", f"/v1/approvals/{ident}/approve", counted)
        assert status == 202 and body["approval"]["approved_by"] == ["alice", "bob"], body
        assert "generation" not in body and "global" in g.gw.holder.doc.kills
        steps = [e for e in await g.gw.sync.store.audit_events()
                 if e["action"] == "approval.approve"]
        assert len(steps) == 1


async def test_a_retried_decline_answers_the_decline(
        tmp_path: Path, backends, session, fwd: Forwarder) -> None:
    p = await backends(echo_app("v1"))
    cfg = _config(tmp_path, p, fwd, "kg-apou3", 2)
    async with running_gateway(cfg) as g:
        ident = await _requested(session, g, fwd)
        status, body = await _lost_then_replayed(
            session, g, "carol", f"/v1/approvals/{ident}/decline",
            lambda: ident not in g.gw.holder.doc.approvals)
        assert status == 200 and body["approval"] == {"id": ident, "state": "declined"}, body
        declines = [e for e in await g.gw.sync.store.audit_events()
                    if e["action"] == "approval.decline"]
        assert [e["id"] for e in declines] == [body["audit_id"]]
        assert "global" in g.gw.holder.doc.kills


async def test_a_retried_final_approve_on_killgate_serve(
        tmp_path: Path, backends, session, fwd: Forwarder, gateway_procs) -> None:
    """The same on a `killgate serve` process: the approver's retry is answered with the
    applied change, and the trail holds one unkill."""
    p = await backends(echo_app("v1"))
    cfg = _config(tmp_path, p, fwd, "kg-apou4", 2, listen=f"127.0.0.1:{free_port()}",
                  admin=f"127.0.0.1:{free_port()}")
    gw = gateway_procs(cfg)
    await asyncio.get_running_loop().run_in_executor(None, gw.wait_ready)
    read = bearer("killgate:read")

    async def kills() -> list:
        async with session.get(gw.admin + "/v1/status", headers=read) as r:
            return list((await r.json())["kills"])

    ident = await _requested(session, gw, fwd)
    status, body = await _lost_then_replayed(
        session, gw, "bob", f"/v1/approvals/{ident}/approve", lambda: _none(kills))
    assert status == 200 and body["approval"]["state"] == "applied", body
    async with session.get(gw.admin + "/v1/audit?limit=50", headers=read) as r:
        events = (await r.json())["events"]
    assert [e["id"] for e in events if e["action"] == "unkill"] == [body["audit_id"]]
    assert gw.stop() == 0


async def _none(read: Any) -> bool:
    return not await read()
