"""The approval sweep during a rolling upgrade (admin/approvalexpiry.py), on a real
redis-server: a request of an action a newer version knows and this one does not is left
alone (logged and counted once), never dropped as invalid."""

from __future__ import annotations

import logging
import time
from pathlib import Path

import pytest

from tests.backends import echo_app
from tests.conftest import (
    RedisServer,
    bearer,
    running_gateway,
    two_versions,
    wait_until,
    write_config,
)
from tests.test_killswitch import redis_state

pytestmark = pytest.mark.timeout(60)


def _record(ident: str, action: str, expires: float) -> dict:
    return {"id": ident, "gate": "unkill_global", "hash": "0" * 64, "needs": 2,
            "approved_by": [], "created": expires - 60, "expires": expires,
            "intent": {"action": action, "target": {"scope": "global"}, "args": {},
                       "reason": "newer", "actor": "alice", "request_id": "", "source": ""}}


async def test_a_request_of_an_unknown_action_is_kept_by_an_older_sweeper(
        tmp_path: Path, backends, redis_server: RedisServer, session,
        caplog: pytest.LogCaptureFixture) -> None:
    """A newer version stores a request for an action this one does not know (written to
    Redis as that version writes it: a signed state change). This version's sweep read it
    as "not a valid approval record" and dropped it (an approval.expire in the trail):
    during a rolling upgrade a request made on a new instance vanished whenever an old one
    swept first. It stays, through sweep after sweep, also just past its own expiry (the
    version that knows it has UNKNOWN_GRACE to decide it); logged once, counted once. A
    request of a known action past its ttl, and a record of no valid shape, are still
    dropped. Declining it takes
    killgate:admin (its action's scope is unknown here), no longer any reader's token."""
    from gateway.domain.audit import AuditDraft
    from gateway.domain.statedoc import Change

    caplog.set_level(logging.INFO, "killgate")
    p = await backends(echo_app("v1"))
    cfg = write_config(tmp_path, two_versions(p, p), state=redis_state(redis_server, tmp_path),
                       extra="approvals: {unkill_global: 2}\n")
    now = time.time()
    newer, newer_past = "ap-0000000000000001", "ap-0000000000000002"
    known_past, junk = "ap-0000000000000003", "ap-0000000000000004"
    records = {newer: _record(newer, "pause_route", now + 600),
               newer_past: _record(newer_past, "pause_route", now - 5),
               known_past: _record(known_past, "unkill", now - 5),
               junk: {"not": "a record"}}
    async with running_gateway(cfg) as g:
        await g.gw.sync.write(lambda cur: Change(approvals=records),
                              lambda c, n: AuditDraft("alice", "approval.request",
                                                      {"approval": newer}, "newer version"))
        expiry = g.gw.admin_api.approval_expiry
        await wait_until(lambda: not ({known_past, junk} & set(g.gw.holder.doc.approvals)),
                         5, 0.05, "the sweep of the expired and the invalid")
        sweeps = 0
        while sweeps < 3:  # (three sweeps more: each leaves them alone)
            await expiry.sweep()
            sweeps += 1
        assert set(g.gw.holder.doc.approvals) == {newer, newer_past}
        # as stored in Redis (what every other instance reads)
        loaded = await g.gw.sync.store.load()
        assert loaded.doc is not None and set(loaded.doc.approvals) == {newer, newer_past}
        expired = [e["target"]["approval"] for e in await g.gw.sync.store.audit_events()
                   if e["action"] == "approval.expire"]
        assert sorted(expired) == [known_past, junk]
        kept = [r for r in caplog.records if r.getMessage() == "approval_unknown_action_kept"]
        assert len(kept) == 2, kept
        assert g.gw.metrics.get("killgate_approval_unknown_action_total", ()) == 2
        # a decline here needs the scope that implies every scope (its own is unknown
        # here): a reader dropped it as it may drop an invalid record
        async def decline(scope: str) -> int:
            async with session.post(g.admin + f"/v1/approvals/{newer}/decline", json={},
                                    headers=bearer(scope, "bob")) as r:
                return r.status
        assert await decline("killgate:read") == 403
        assert newer in g.gw.holder.doc.approvals
        assert await decline("killgate:admin") == 200
        assert newer not in g.gw.holder.doc.approvals


async def test_a_request_of_an_unknown_action_long_past_its_expiry_is_swept(
        tmp_path: Path, backends, redis_server: RedisServer,
        caplog: pytest.LogCaptureFixture) -> None:
    """A request of an action this version does not know stayed until a version that knew
    it swept it: with none left (the upgrade rolled back) it stayed for ever, in every
    signed state change (which every write, a kill too, sends whole), though no version
    would approve it after its expiry (found by review, impadmin3 item 2). Past its own
    `expires` by more than UNKNOWN_GRACE it is dropped, with an `approval.expire` event
    that says why and holds the record; one still within the grace stays."""
    from gateway.admin.approvalexpiry import UNKNOWN_GRACE
    from gateway.domain.audit import AuditDraft
    from gateway.domain.statedoc import Change

    caplog.set_level(logging.INFO, "killgate")
    p = await backends(echo_app("v1"))
    cfg = write_config(tmp_path, two_versions(p, p), state=redis_state(redis_server, tmp_path),
                       extra="approvals: {unkill_global: 2}\n")
    now = time.time()
    long_gone, in_grace = "ap-00000000000000a1", "ap-00000000000000a2"
    records = {long_gone: _record(long_gone, "pause_route", now - UNKNOWN_GRACE - 30),
               in_grace: _record(in_grace, "pause_route", now - UNKNOWN_GRACE + 30)}
    async with running_gateway(cfg) as g:
        await g.gw.sync.write(lambda cur: Change(approvals=records),
                              lambda c, n: AuditDraft("alice", "approval.request",
                                                      {"approval": long_gone}, "newer version"))
        await wait_until(lambda: long_gone not in g.gw.holder.doc.approvals, 5, 0.05,
                         "the sweep of the request long past its expiry")
        loaded = await g.gw.sync.store.load()  # (as stored in Redis: for every instance)
        assert loaded.doc is not None and set(loaded.doc.approvals) == {in_grace}
        [ev] = [e for e in await g.gw.sync.store.audit_events()
                if e["action"] == "approval.expire"]
        assert (ev["actor"], ev["target"]) == ("killgate/auto", {"approval": long_gone}), ev
        assert "pause_route" in ev["reason"] and "past its expiry" in ev["reason"], ev
        assert ev["before"]["intent"]["action"] == "pause_route", ev
        await g.gw.admin_api.approval_expiry.sweep()  # (once more: the other stays)
        assert set(g.gw.holder.doc.approvals) == {in_grace}
        assert g.gw.admin_api.approval_expiry.unknown == {in_grace}


async def test_a_sweep_drops_at_most_its_bound(
        tmp_path: Path, backends, redis_server: RedisServer,
        monkeypatch: pytest.MonkeyPatch) -> None:
    """Each drop is a signed state change with its event: one sweep makes at most
    MAX_PER_SWEEP, the rest wait for the next (here a sweeper whose clock is past the
    requests' expiry, the gateway's own still before it)."""
    from gateway.admin import approvalexpiry
    from gateway.domain.audit import AuditDraft
    from gateway.domain.statedoc import Change

    p = await backends(echo_app("v1"))
    cfg = write_config(tmp_path, two_versions(p, p), state=redis_state(redis_server, tmp_path),
                       extra="approvals: {unkill_global: 2}\n")
    now = time.time()
    ids = [f"ap-00000000000000b{i}" for i in range(3)]
    records = {ident: _record(ident, action, now + 300)
               for ident, action in zip(ids, ("pause_route", "unkill", "unkill"), strict=True)}
    monkeypatch.setattr(approvalexpiry, "MAX_PER_SWEEP", 2)
    async with running_gateway(cfg) as g:
        await g.gw.sync.write(lambda cur: Change(approvals=records),
                              lambda c, n: AuditDraft("alice", "approval.request",
                                                      {"approval": ids[0]}, "three"))
        api = g.gw.admin_api
        later = approvalexpiry.ApprovalExpiry(api.approval_expiry.current, g.gw.sync,
                                              clock=lambda: now + 1000)
        assert await later.sweep() == 2 and len(g.gw.holder.doc.approvals) == 1
        assert await later.sweep() == 1 and not g.gw.holder.doc.approvals
