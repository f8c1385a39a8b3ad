"""A rolling upgrade: approval requests a NEWER killgate stored in the shared state (a
record `format` past this one's, an argument or an action it does not know) are open
requests here too, on a real redis-server: listed by GET /v1/approvals, marked
`from_newer_version` (who wrote them, what this version does not know, where they are
decided), and counted against the bounds on open requests (MAX_OPEN_PER_REQUESTER,
MAX_OPEN). Found at stop 38 (impupgrade item 3): they were invisible to this version's
approvers (an approver on an old instance saw nothing to approve) and uncounted, so the
fleet could hold MAX_OPEN requests of each version, every one riding in each signed
state change (a kill's too). The records are written as a signed state change, the
newer version's record shape (tests/test_approval_newer_version.py's)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from tests.backends import echo_app
from tests.conftest import RedisServer, bearer, running_gateway, two_versions, write_config
from tests.test_approval_newer_version import _record
from tests.test_killswitch import redis_state

pytestmark = pytest.mark.timeout(60)


def _ident(n: int) -> str:
    return f"ap-{n:016x}"


async def _newer(g: Any, records: dict[str, dict]) -> None:
    from gateway.domain.audit import AuditDraft
    from gateway.domain.statedoc import Change

    await g.gw.sync.write(lambda cur: Change(approvals=records),
                          lambda c, n: AuditDraft("alice", "approval.request",
                                                  {"approval": next(iter(records))}, "newer"))


async def test_a_newer_versions_requests_are_listed_and_counted(
        tmp_path: Path, backends, redis_server: RedisServer, session,
        monkeypatch: pytest.MonkeyPatch) -> None:
    from gateway.admin import approvals

    monkeypatch.setattr(approvals, "MAX_OPEN", 12)
    p = await backends(echo_app("v1"))
    cfg = write_config(tmp_path, two_versions(p, p), state=redis_state(redis_server, tmp_path),
                       extra="approvals: {unkill_global: 2, weights: 2}\n")
    async with running_gateway(cfg) as g:

        async def call(method: str, path: str, scope: str, who: str,
                       body: Any = None) -> tuple[int, Any]:
            async with session.request(method, g.admin + path, json=body,
                                       headers=bearer(scope, who)) as r:
                return r.status, await r.json()

        assert (await call("POST", "/v1/kill", "killgate:kill", "alice",
                           {"scope": "global", "reason": "INC-1"}))[0] == 200
        # alice's 10 requests, made on the newer version: an unkill with an argument this
        # version does not know, and actions it does not know
        mine = {_ident(1): _record(_ident(1), "unkill", {"drain_first": True}, format=2,
                                   written_by="killgate 0.3.0")}
        mine.update({_ident(n): _record(_ident(n), "pause_route", {"n": n}, format=2,
                                        written_by="killgate 0.3.0") for n in range(2, 11)})
        await _newer(g, mine)

        status, body = await call("GET", "/v1/approvals", "killgate:read", "bob")
        assert status == 200 and [a["id"] for a in body["approvals"]] == list(mine), body
        assert all("from_newer_version" in a for a in body["approvals"]), body
        first = body["approvals"][0]
        assert (first["action"], first["requested_by"]) == ("unkill", "alice"), first
        newer = first["from_newer_version"]
        assert newer["written_by"] == "killgate 0.3.0", newer
        assert "'drain_first'" in newer["unknown"] and "format 2" in newer["unknown"], newer
        assert "approve it through an instance of that version" in newer["decide"], newer
        # an approver's token without killgate:read: the unkill its scope decides, not
        # the actions whose scope this version does not know (and no 500 for them)
        status, body = await call("GET", "/v1/approvals", "killgate:kill", "bob")
        assert status == 200 and [a["id"] for a in body["approvals"]] == [_ident(1)], body

        # counted: alice is at her 10 (they were not: 202, an 11th request)
        status, body = await call("POST", "/v1/unkill", "killgate:kill", "alice",
                                  {"scope": "global", "reason": "over"})
        assert (status, body["error"]["type"]) == (409, "too_many_approvals"), body
        # ... and the fleet at its 12
        await _newer(g, {_ident(11): _record(_ident(11), "pause_route", {}, format=2)})
        status, body = await call("POST", "/v1/unkill", "killgate:kill", "carol",
                                  {"scope": "global", "reason": "over"})
        assert status == 202, body  # (11 open: room for carol's)
        status, body = await call("POST", "/v1/unkill", "killgate:kill", "dave",
                                  {"scope": "global", "reason": "over"})
        assert status == 202 and "you_may_approve" in body, body  # (the same change)
        # 12 open in all, 11 of them the newer version's: a new change is refused
        gen = g.gw.holder.doc.generation
        status, body = await call("PUT", "/v1/routes/iris/weights", "killgate:rollout",
                                  "erin", {"weights": {"v1": 1, "v2": 1}, "reason": "r"})
        assert (status, body["error"]["type"]) == (409, "too_many_approvals"), body
        assert g.gw.holder.doc.generation == gen and len(g.gw.holder.doc.approvals) == 12


def test_the_cli_says_a_request_was_made_on_a_newer_version() -> None:
    """`killgate approvals` lists it with a line saying so (escaped, as every value from
    the state is), rather than as a request this gateway would approve."""
    from gateway.cli.approvals import _describe

    item = {"id": _ident(1), "action": "unkill", "target": {"scope": "global"}, "args": {},
            "requested_by": "alice", "reason": "over", "needs": 2, "approved_by": ["alice"],
            "expires": "2026-12-06T10:00:00.000Z", "hash": "0" * 64}
    assert "NEWER" not in _describe(item)
    shown = _describe({**item, "from_newer_version": {
        "written_by": "killgate 0.3.0\x1b[2J", "unknown": "argument 'drain_first'",
        "decide": "approve it through an instance of that version"}})
    assert shown.splitlines()[-1] == (
        "  REQUESTED ON A NEWER VERSION (killgate 0.3.0\\x1b[2J): argument 'drain_first'; "
        "approve it through an instance of that version"), shown


async def test_an_approval_step_keeps_the_version_that_asked(
        tmp_path: Path, backends, redis_server: RedisServer, session) -> None:
    """A request a newer version made in a format this one knows whole, approved here
    short of its last approval: the record in redis is the one stored with one more
    approver, still naming the version that asked (it was rewritten whole as this
    version's: `written_by` this one, so the newer one read a record an older one took
    over). One of a format past this one's is never rewritten at all (409)."""
    from tests.test_forgery import stored_doc

    p = await backends(echo_app("v1"))
    cfg = write_config(tmp_path, two_versions(p, p), state=redis_state(redis_server, tmp_path),
                       extra="approvals: {unkill_global: 3}\n")
    same, past = _ident(21), _ident(22)
    async with running_gateway(cfg) as g:
        await _newer(g, {same: {**_record(same, "unkill", {}, format=1,
                                          written_by="killgate 0.3.0"), "needs": 3},
                         past: {**_record(past, "unkill", {}, format=2,
                                          written_by="killgate 0.3.0"), "needs": 3}})
        before = stored_doc(redis_server)["approvals"]
        for ident, want in ((same, 202), (past, 409)):
            async with session.post(g.admin + f"/v1/approvals/{ident}/approve",
                                    json={"reason": "ok"},
                                    headers=bearer("killgate:kill", "bob")) as r:
                assert r.status == want, await r.text()
        stored = stored_doc(redis_server)["approvals"]
        assert stored[same] == {**before[same], "approved_by": ["alice", "bob"]}, stored
        assert stored[past] == before[past]
