"""A retry of an approval short of the last (202, the request still waiting) with its
Idempotency-Key is answered with that 202 only while the request can be open, as the
request's own answer is: after, it asks anew. Found by review (revmerge21): the step's
answer was kept a day, so a retry after the request expired (or was swept) still said
"waiting, approved by alice and bob", a replay of a state gone (its `outcome_unknown`
record too, impadmin3). On a real in-process gateway with its state in a local store."""

from __future__ import annotations

import functools
from pathlib import Path

import pytest

from tests.adminpost import keyed_post, unkill_asked
from tests.backends import echo_app
from tests.conftest import running_gateway, two_versions, wait_until, write_config

pytestmark = pytest.mark.timeout(30)


_call = functools.partial(keyed_post, wait=None)


async def test_an_approval_steps_answer_is_replayed_only_while_it_can_be_open(
        tmp_path: Path, backends, session) -> None:
    p = await backends(echo_app("v1"))
    cfg = write_config(tmp_path, two_versions(p, p),
                       extra="approvals: {unkill_global: 3, ttl: 2s}\n")
    async with running_gateway(cfg) as g:
        ident = (await unkill_asked(session, g.admin, "INC-8", _call))["id"]
        path = f"/v1/approvals/{ident}/approve"
        status, body, _ = await _call(session, g.admin, "bob", path, {"reason": "ok"}, "s-1")
        assert status == 202, body
        status, body, replayed = await _call(session, g.admin, "bob", path, {"reason": "ok"},
                                             "s-1")
        assert (status, replayed) == (202, True), body  # (while it can be open: replayed)
        await wait_until(lambda: ident not in g.gw.holder.doc.approvals, 10, 0.05,
                         "the request, expired and swept")
        status, body, replayed = await _call(session, g.admin, "bob", path, {"reason": "ok"},
                                             "s-1")
        assert not replayed and (status, body["error"]["type"]) == (
            404, "unknown_approval"), body
        assert "global" in g.gw.holder.doc.kills
