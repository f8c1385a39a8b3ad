"""Approving a newer version's request of a known action takes that action's scope before
anything is said of the record, as for any request: a token without it (a reader) is
refused 403, audited as a refused call, not told 409 `approval_from_newer_version` to
"approve it through an instance of that version", which it could not do either. Found by
review (revmerge30 of impadmin4 item 4): the 409 came before the scope check, unaudited."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.backends import echo_app
from tests.conftest import bearer, running_gateway, two_versions, write_config
from tests.test_approval_newer_version import _record

pytestmark = pytest.mark.timeout(30)


async def test_approving_a_newer_request_takes_its_scope_first(
        tmp_path: Path, backends, session) -> None:
    from gateway.domain.audit import AuditDraft
    from gateway.domain.statedoc import Change

    p = await backends(echo_app("v1"))
    cfg = write_config(tmp_path, two_versions(p, p), extra="approvals: {unkill_global: 2}\n")
    ident = "ap-00000000000000f1"
    newer = _record(ident, "unkill", {"drain_first": True}, format=2,
                    written_by="killgate 0.3.0")
    async with running_gateway(cfg) as g:
        await g.gw.sync.write(lambda cur: Change(approvals={ident: newer}),
                              lambda c, n: AuditDraft("alice", "approval.request",
                                                      {"approval": ident}, "newer"))
        gen = g.gw.holder.doc.generation

        async def approve(scope: str) -> tuple[int, dict]:
            async with session.post(g.admin + f"/v1/approvals/{ident}/approve", json={},
                                    headers=bearer(scope, "bob")) as r:
                return r.status, await r.json()

        status, body = await approve("killgate:read")
        assert (status, body["error"]["type"]) == (403, "forbidden"), body
        assert "killgate:kill" in body["error"]["message"], body
        status, body = await approve("killgate:kill")
        assert (status, body["error"]["type"]) == (409, "approval_from_newer_version"), body
        assert g.gw.holder.doc.generation == gen and ident in g.gw.holder.doc.approvals
