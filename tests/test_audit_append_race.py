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
import contextlib
import time

import pytest

from gateway.domain.audit import AuditDraft
from gateway.domain.retention import Retention, TrimDecision, TrimWindow, decide_trim
from gateway.domain.statedoc import StateDoc
from gateway.errors import StateError, StoreConflict
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


async def test_appends_racing_a_trim_raise_no_tamper_alarm(redis_server: RedisServer) -> None:
    """The same with retention trimming the trail meanwhile (a trim rewrites the document
    at the same generation, as an append does)."""
    refused: list[str] = []

    def report(kind: str, why: str, which: str | None, cause: str = "other") -> None:
        if which != "previous":
            refused.append(f"{kind}: {why}")

    stores = [store_on(redis_server, "kgtrimrace", on_unverified=report) for _ in range(3)]
    for s in stores:
        await s.open()
    try:
        s0 = stores[0]
        await s0.commit(None, StateDoc(generation=1), AuditDraft("ops", "seed", {}, ""))
        for n in range(130):
            got = await s0.load()
            assert got.doc is not None
            await s0.commit(got.token, got.doc, AuditDraft("ops", "config.reload", {}, f"{n}"))
        trims = 0

        def decide(window: TrimWindow) -> TrimDecision:
            return decide_trim(window, s0.audit_keys.keys(), Retention(max_events=100),
                               time.time())

        async def appender(i: int) -> None:
            s = stores[i]
            t0 = time.monotonic()
            while time.monotonic() - t0 < 1.2 and not refused:
                got = await s.load()
                assert got.trusted and got.doc is not None
                with contextlib.suppress(StoreConflict):
                    await s.commit(got.token, got.doc,
                                   AuditDraft(f"i{i}", "config.reload", {}, "race"))
                await asyncio.sleep(0.01 * i)  # (a trim gets in now and then)

        async def trimmer() -> None:
            nonlocal trims
            t0 = time.monotonic()
            while time.monotonic() - t0 < 1.2 and not refused:
                try:
                    _, ev = await s0.audit_trim(decide, lambda n, first, clock: n > 105)
                    trims += ev is not None
                except StateError:
                    pass
                await asyncio.sleep(0.02)

        await asyncio.gather(appender(1), appender(2), trimmer())
        assert refused == [], refused[:3]
        assert trims >= 1
    finally:
        for s in stores:
            await s.close()
