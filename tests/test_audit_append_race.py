"""Audit events appended at once by several instances are no tampering (found by review
revfalse, hunting false tamper alarms): an event appended without a state change (a
config reload, a drill, an alert's action: `append_audit`, the same generation) that met
another instance's append answered `audit_conflict` naming the head key as it stood; the
instance then read the store again, and when a third append had landed meanwhile the
document it read anchored a newer head than the key the script had named. That was
reported as "the audit head key names ..., not the head the newest signed state anchors"
and counted in `killgate_state_unverified_total{kind="audit"}` (the shipped alert), where
every byte was a genuine commit. Now only a key that disagrees with a document read
after it (at least as new) is reported. Real redis-server, three stores appending."""

from __future__ import annotations

import asyncio
import time

import pytest

from gateway.domain.audit import AuditDraft
from gateway.domain.statedoc import StateDoc
from gateway.errors import StoreConflict
from tests.conftest import RedisServer
from tests.staterig import store_on

pytestmark = pytest.mark.timeout(30)


async def test_appends_racing_from_three_instances_raise_no_tamper_alarm(
        redis_server: RedisServer) -> None:
    refused: list[str] = []

    def report(kind: str, why: str, which: str | None, cause: str = "other") -> None:
        if which != "previous":
            refused.append(f"{kind}: {why}")

    stores = [store_on(redis_server, "kgappend", on_unverified=report) for _ in range(3)]
    for s in stores:
        await s.open()
    try:
        await stores[0].commit(None, StateDoc(generation=1), AuditDraft("ops", "seed", {}, ""))
        appended = 0

        async def appender(i: int) -> None:
            nonlocal appended
            s = stores[i]
            t0 = time.monotonic()
            while time.monotonic() - t0 < 1.5 and not refused:
                got = await s.load()
                assert got.trusted and got.doc is not None
                try:
                    await s.commit(got.token, got.doc,
                                   AuditDraft(f"i{i}", "config.reload", {}, "race"))
                    appended += 1
                except StoreConflict:
                    pass

        await asyncio.gather(*(appender(i) for i in range(3)))
        assert refused == [], (appended, refused[:3])
        assert appended > 30
    finally:
        for s in stores:
            await s.close()
