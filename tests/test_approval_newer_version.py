"""An approval request written by a NEWER killgate (a rolling upgrade: an action, a field
or a record format this version does not know) is refused by name when approved here:
409 `approval_from_newer_version`, naming the version that wrote it and this one, and
where it can be decided; never applied as if what it does not know were not there; and a
decline that needs killgate:admin says why. Found at stop 37 (impadmin4 item 4): approving
it answered 409 `approval_invalid` ("not a valid record": the approver went looking for
corruption), and a record of a known action with an argument this version does not know
was applied without it (the change the requester asked for was not the one made). On a
real redis-server, the records written as a newer version's signed state change."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import pytest

from tests.backends import echo_app
from tests.conftest import RedisServer, bearer, running_gateway, two_versions, write_config
from tests.test_killswitch import redis_state

pytestmark = pytest.mark.timeout(60)


def _record(ident: str, action: str, args: dict, **newer: Any) -> dict:
    from gateway.admin.actions import Intent

    now = time.time()
    target = {"scope": "global", "route": None, "version": None}
    # (the hash over the change as this version computes it: what it would apply)
    digest = Intent(action, target, args, "", "").change_hash()
    return {"id": ident, "gate": "unkill_global", "hash": digest, "needs": 2,
            "approved_by": ["alice"], "created": now, "expires": now + 600, **newer,
            "intent": {"action": action, "target": {"scope": "global", "route": None,
                                                   "version": None},
                       "args": args, "reason": "newer", "actor": "alice",
                       "request_id": "", "source": ""}}


async def test_a_newer_versions_request_is_refused_by_name(
        tmp_path: Path, backends, redis_server: RedisServer, session) -> None:
    from gateway import __version__
    from gateway.domain.audit import AuditDraft
    from gateway.domain.statedoc import Change

    p = await backends(echo_app("v1"))
    cfg = write_config(tmp_path, two_versions(p, p), state=redis_state(redis_server, tmp_path),
                       extra="approvals: {unkill_global: 2}\n")
    drain, pause, older = "ap-00000000000000c1", "ap-00000000000000c2", "ap-00000000000000c3"
    records = {
        # a known action with an argument (and a format) this version does not know
        drain: _record(drain, "unkill", {"drain_first": True}, format=2,
                       written_by="killgate 0.3.0"),
        # an action it does not know, from a version that named itself
        pause: _record(pause, "pause_route", {}, format=2, written_by="killgate 0.3.0"),
        # ... and from one that did not (before records named their version)
        older: _record(older, "pause_route", {})}
    async with running_gateway(cfg) as g:
        async with session.post(g.admin + "/v1/kill", headers=bearer("killgate:kill"),
                                json={"scope": "global", "reason": "INC-1"}) as r:
            assert r.status == 200
        await g.gw.sync.write(lambda cur: Change(approvals=records),
                              lambda c, n: AuditDraft("alice", "approval.request",
                                                      {"approval": drain}, "newer version"))
        gen = g.gw.holder.doc.generation

        async def step(ident: str, what: str, scope: str) -> tuple[int, dict]:
            async with session.post(g.admin + f"/v1/approvals/{ident}/{what}",
                                    json={"reason": "ok"}, headers=bearer(scope, "bob")) as r:
                return r.status, await r.json()

        for ident, named in ((drain, "killgate 0.3.0"), (pause, "killgate 0.3.0"),
                             (older, "a newer version of killgate")):
            status, body = await step(ident, "approve", "killgate:admin")
            assert (status, body["error"]["type"]) == (409, "approval_from_newer_version"), body
            message = body["error"]["message"]
            assert f"requested on {named}" in message, message
            assert f"runs killgate {__version__}" in message, message
            assert "approve it through an instance of that version" in message, message
        status, body = await step(drain, "approve", "killgate:admin")
        assert "'drain_first'" in body["error"]["message"], body
        assert "format 2" in body["error"]["message"], body
        # nothing applied, nothing dropped
        assert "global" in g.gw.holder.doc.kills and g.gw.holder.doc.generation == gen
        assert set(records) <= set(g.gw.holder.doc.approvals)
        # declined: a known action's scope is enough; an unknown one's takes admin, said so
        status, body = await step(pause, "decline", "killgate:kill")
        assert (status, body["error"]["type"]) == (403, "forbidden"), body
        assert "killgate 0.3.0" in body["error"]["message"], body
        assert "decline it here with killgate:admin" in body["error"]["message"], body
        assert g.gw.holder.doc.generation == gen
        status, body = await step(drain, "decline", "killgate:kill")
        assert status == 200 and drain not in g.gw.holder.doc.approvals, body
        status, body = await step(pause, "decline", "killgate:admin")
        assert status == 200 and pause not in g.gw.holder.doc.approvals, body
        assert "global" in g.gw.holder.doc.kills


def test_records_name_their_format_and_version() -> None:
    """What lets a later version name this one (pure: the record as stored, read back)."""
    from gateway import __version__
    from gateway.admin.actions import Intent
    from gateway.admin.approvalrecord import FORMAT, Approval

    intent = Intent("unkill", {"scope": "global", "route": None, "version": None},
                    {"kill": "k-1"}, "over", "alice")
    rec = Approval("ap-00000000000000d1", "unkill_global", intent, intent.change_hash(), 2,
                   ("alice",), 1.0, 2.0)
    stored = rec.to_json()
    assert (stored["format"], stored["written_by"]) == (FORMAT, f"killgate {__version__}")
    assert Approval.from_json(stored) == rec


async def test_a_replayed_decline_of_a_newer_request_needs_the_scope_it_took(
        tmp_path: Path, backends, session) -> None:
    """The decline of a request of an unknown action took killgate:admin; its replay (the
    same subject and Idempotency-Key) took only killgate:read (the scope recorded with the
    answer was a reader's, as for an invalid record): answered with the first result to a
    token that could not have declined it."""
    from gateway.domain.audit import AuditDraft
    from gateway.domain.statedoc import Change

    p = await backends(echo_app("v1"))
    cfg = write_config(tmp_path, two_versions(p, p), extra="approvals: {unkill_global: 2}\n")
    ident = "ap-00000000000000e1"
    async with running_gateway(cfg) as g:
        await g.gw.sync.write(
            lambda cur: Change(approvals={ident: _record(ident, "pause_route", {})}),
            lambda c, n: AuditDraft("alice", "approval.request", {"approval": ident}, "n"))

        async def decline(scope: str) -> tuple[int, bool]:
            h = {**bearer(scope, "bob"), "Idempotency-Key": "d-1"}
            async with session.post(g.admin + f"/v1/approvals/{ident}/decline", json={},
                                    headers=h) as r:
                return r.status, "idempotent-replayed" in r.headers

        assert await decline("killgate:admin") == (200, False)
        assert await decline("killgate:read") == (403, False)
        assert await decline("killgate:admin") == (200, True)
