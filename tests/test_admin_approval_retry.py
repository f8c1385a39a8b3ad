"""A gated write sent again with its Idempotency-Key after its approval request expired
asks anew: the first answer (202, "waiting for approval") is kept only as long as the
request it names. Found by review (revadmin7): it was kept for 24 h, so a script that
sends a change with a fixed key was told, all day, that a request gone long ago (expired,
swept) was waiting for approval, and no new one was made."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.backends import echo_app
from tests.conftest import bearer, running_gateway, two_versions, wait_until, write_config

pytestmark = pytest.mark.timeout(60)


async def test_a_retry_after_the_request_expired_asks_again(
        tmp_path: Path, backends, session) -> None:
    p = await backends(echo_app("v1"))
    cfg = write_config(tmp_path, two_versions(p, p),
                       extra="approvals: {weights: 2, ttl: 1s}\n")
    h = {**bearer("killgate:rollout", "alice"), "Idempotency-Key": "weights-50-50"}
    body = {"weights": {"v1": 50, "v2": 50}, "reason": "even split"}
    async with running_gateway(cfg) as g:
        async def ask() -> tuple[int, dict, bool]:
            async with session.put(g.admin + "/v1/routes/iris/weights", json=body,
                                   headers=h) as r:
                return r.status, await r.json(), "idempotent-replayed" in r.headers

        status, first, _ = await ask()
        assert status == 202, first
        ident = first["approval"]["id"]
        status, again, replayed = await ask()  # (while it waits: the same answer)
        assert (status, again["approval"]["id"], replayed) == (202, ident, True)
        await wait_until(lambda: not g.gw.holder.doc.approvals, 6, 0.05, "the expiry")
        status, later, replayed = await ask()
        assert status == 202 and not replayed, later
        assert later["approval"]["id"] != ident
        assert later["approval"]["id"] in g.gw.holder.doc.approvals


async def test_an_invalid_record_is_dropped_only_by_a_reader(
        tmp_path: Path, backends, session) -> None:
    """A stored approval record of no valid shape (another version's, a bug's) can be
    declined, as its comment said, by "anyone who may read it": a token without
    killgate:read (Alertmanager's killgate:alert) dropped it too, a state change with an
    audit event in that token's name (found by review, revadmin7)."""
    from gateway.domain.audit import AuditDraft
    from gateway.domain.statedoc import Change

    p = await backends(echo_app("v1"))
    cfg = write_config(tmp_path, two_versions(p, p), extra="approvals: {weights: 2}\n")
    ident = "ap-00000000000000bb"
    async with running_gateway(cfg) as g:
        await g.gw.sync.write(lambda cur: Change(approvals={ident: {"not": "a record"}}),
                              lambda c, n: AuditDraft("alice", "approval.request",
                                                      {"approval": ident}, "test"))
        gen = g.gw.holder.doc.generation

        async def decline(scope: str) -> tuple[int, dict]:
            async with session.post(g.admin + f"/v1/approvals/{ident}/decline", json={},
                                    headers=bearer(scope, "bot")) as r:
                return r.status, await r.json()

        status, body = await decline("killgate:alert")
        assert (status, body["error"]["type"]) == (403, "forbidden"), body
        assert ident in g.gw.holder.doc.approvals and g.gw.holder.doc.generation == gen
        status, body = await decline("killgate:read")
        assert status == 200, body
        assert ident not in g.gw.holder.doc.approvals


@pytest.mark.parametrize("step", ["approve", "decline"])
async def test_a_replay_of_an_approval_step_needs_the_actions_scope(
        tmp_path: Path, backends, session, step: str) -> None:
    """An approve/decline retried with its Idempotency-Key by a token of the same subject
    without the action's scope is refused (403), not answered with the first step's
    result: the scope was checked inside the step, which a replay skips, and the record it
    was read from is gone once applied. Found by review (impleft); failed before: 200,
    idempotent-replayed."""
    p = await backends(echo_app("v1"))
    cfg = write_config(tmp_path, two_versions(p, p), extra="approvals: {weights: 2}\n")
    async with running_gateway(cfg) as g:
        async with session.put(g.admin + "/v1/routes/iris/weights",
                               json={"weights": {"v1": 50, "v2": 50}, "reason": "split"},
                               headers=bearer("killgate:rollout", "alice")) as r:
            assert r.status == 202
            ident = (await r.json())["approval"]["id"]

        async def act(scope: str) -> tuple[int, dict, bool]:
            h = {**bearer(scope, "bob"), "Idempotency-Key": "step-1"}
            async with session.post(g.admin + f"/v1/approvals/{ident}/{step}",
                                    json={"reason": "ok"}, headers=h) as r:
                return r.status, await r.json(), "idempotent-replayed" in r.headers

        status, first, _ = await act("killgate:rollout")
        assert status == 200 and ident not in g.gw.holder.doc.approvals, first
        gen = g.gw.holder.doc.generation
        status, body, replayed = await act("killgate:alert")
        assert status == 403 and not replayed, (status, body, replayed)
        assert body["error"]["type"] == "forbidden", body
        assert g.gw.holder.doc.generation == gen
        status, again, replayed = await act("killgate:rollout")  # (the token that may)
        assert status == 200 and replayed, again
