"""Denied admin calls in the audit trail (RELIABILITY rows 41, 43, 45): tallied at once,
written in the background, bounded under a flood, kept while the store is away, and
written on the way out."""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import json
import time
from pathlib import Path

from aiohttp import ClientSession

from gateway.admin import denied
from gateway.admin.denied import DeniedLog
from gateway.domain.audit import AuditDraft
from gateway.domain.auditverify import verify_chain
from gateway.errors import StoreUnavailable
from gateway.telemetry.metrics import Metrics
from tests.backends import echo_app
from tests.conftest import RedisServer, running_gateway, two_versions, wait_until, write_config
from tests.test_killswitch import redis_state

BAD = {"Authorization": "Bearer not.a.token"}


class Sink:
    """An audit trail in memory that can be made to fail."""

    def __init__(self) -> None:
        self.drafts: list[AuditDraft] = []
        self.down = False
        self.stuck: asyncio.Event | None = None  # set: appends hang (a frozen store)

    async def append(self, draft: AuditDraft) -> None:
        if self.stuck is not None:
            self.stuck.set()
            await asyncio.Event().wait()
        if self.down:
            raise StoreUnavailable("the store is down")
        self.drafts.append(draft)


async def test_a_flood_from_many_addresses_is_bounded_per_flush() -> None:
    sink = Sink()
    log = DeniedLog(sink.append, Metrics(), max_events=16, max_keys=64)
    for i in range(100):  # 100 addresses, 3 attempts each
        for _ in range(3):
            log.record("authn_fail", None, f"10.0.0.{i}", "POST", "/v1/kill",
                       "invalid_token: a valid bearer token is required", "killgate:kill")
    await log.flush()
    itemised = [d for d in sink.drafts if d.action == "authn_fail"]
    summary = [d for d in sink.drafts if d.action == "denied.summary"]
    assert len(itemised) == 16 and len(summary) == 1
    assert {d.source for d in itemised} == {f"10.0.0.{i}" for i in range(16)}  # the first
    assert all((d.extra or {})["attempts"] == 3 for d in itemised)
    # every attempt is accounted for: 16 itemised, 48 tallied beyond them, 36 past max_keys
    assert (summary[0].extra or {})["attempts"] == 300 - 16 * 3
    await log.flush()
    assert len(sink.drafts) == 17  # nothing left, nothing written twice


async def test_a_failed_flush_keeps_its_tallies_for_the_next() -> None:
    sink = Sink()
    metrics = Metrics()
    log = DeniedLog(sink.append, metrics)
    log.record("authz_fail", "bob", "127.0.0.1", "POST", "/v1/kill",
               "forbidden: the token lacks the scope 'killgate:kill'", "killgate:kill")
    sink.down = True
    await log.flush()
    assert sink.drafts == [] and log.pending == 1
    assert metrics.get("killgate_audit_denied_failures_total") == 1
    log.record("authz_fail", "bob", "127.0.0.1", "POST", "/v1/kill",
               "forbidden: the token lacks the scope 'killgate:kill'", "killgate:kill")
    sink.down = False
    await log.flush()
    [draft] = sink.drafts  # merged: one caller, one endpoint
    assert (draft.actor, draft.action, draft.source) == ("bob", "authz_fail", "127.0.0.1")
    extra = draft.extra or {}
    assert extra["attempts"] == 2 and extra["first"] <= extra["last"]
    assert log.pending == 0


async def test_a_flush_cut_short_loses_nothing() -> None:
    sink = Sink()
    log = DeniedLog(sink.append, Metrics(), max_events=2)
    for peer in ("10.0.0.1", "10.0.0.2", "10.0.0.3"):
        log.record("authn_fail", None, peer, "GET", "/v1/status", "invalid_token: x",
                   "killgate:read")
    sink.stuck = asyncio.Event()
    task = asyncio.create_task(log.flush())
    await asyncio.wait_for(sink.stuck.wait(), 5)
    task.cancel()  # as a stop does, mid-write
    with contextlib.suppress(asyncio.CancelledError):
        await task
    assert log.pending == 3
    sink.stuck = None
    await log.flush()
    assert sum((d.extra or {})["attempts"] for d in sink.drafts) == 3


async def test_denials_answer_at_once_while_the_store_is_down_and_are_audited_after(
        tmp_path: Path, backends, redis_server: RedisServer, session: ClientSession) -> None:
    p = await backends(echo_app("v1"))
    # a long command timeout: a refusal that waited on the store would take seconds
    cfg = write_config(tmp_path, two_versions(p, p, 100, 0),
                       state=redis_state(redis_server, tmp_path, command_timeout="3s"))
    async with running_gateway(cfg) as g:
        redis_server.kill()
        await wait_until(lambda: not g.gw.sync.connected, 10, what="the store to be missed")
        took = []
        for _ in range(3):
            t0 = time.monotonic()
            async with session.post(g.admin + "/v1/kill", headers=BAD,
                                    json={"scope": "global", "reason": "x"}) as r:
                assert r.status == 401
            took.append(time.monotonic() - t0)
        assert max(took) < 1.0, took
        redis_server.start()

        async def audited() -> list[dict] | None:
            try:
                evs = await g.gw.sync.store.audit_events()
            except StoreUnavailable:
                return None
            return [e for e in evs if e["action"] == "authn_fail"] or None

        evs = await wait_until(audited, 20, 0.1, "the denials to be written")
        assert sum(e["attempts"] for e in evs) == 3
        # redis restarted empty: the re-seed continues the chain from the head this instance
        # had anchored, so the trail says the events before it were lost, and is whole after
        trail = await g.gw.sync.store.audit_events()
        brk = verify_chain(trail)[1]
        assert brk is not None and brk.index == 0 and "were lost" in brk.problem
        assert trail[0]["action"] == "state.reseed"
        assert all(b["prev_hash"] == a["hash"] for a, b in itertools.pairwise(trail))


async def test_the_last_denials_are_written_on_the_way_out(tmp_path: Path, backends, monkeypatch,
                                                           session: ClientSession) -> None:
    p = await backends(echo_app("v1"))
    cfg = write_config(tmp_path, two_versions(p, p, 100, 0))
    monkeypatch.setattr(denied, "FLUSH_INTERVAL", 3600.0)  # only the stop writes them
    async with running_gateway(cfg) as g:
        async with session.get(g.admin + "/v1/status", headers=BAD) as r:
            assert r.status == 401
        assert g.gw.admin_api.denied.pending == 1
    trail = [json.loads(line) for line in (tmp_path / "store.json.audit.jsonl")
             .read_text().splitlines()]
    [ev] = [e for e in trail if e["action"] == "authn_fail"]
    assert (ev["attempts"], ev["target"]["path"], ev["source"]) == (1, "/v1/status",
                                                                    "127.0.0.1")
    assert verify_chain(trail)[1] is None


async def test_a_sustained_flood_slows_the_writes_down_and_quiet_restores_them() -> None:
    sink = Sink()
    log = DeniedLog(sink.append, Metrics(), interval=0.01, max_interval=0.08)
    log.start()
    try:
        async def flood_until(pred) -> None:  # type: ignore[no-untyped-def]
            async def check() -> bool:
                log.record("authn_fail", None, "10.0.0.1", "GET", "/v1/status", "x", "r")
                return bool(pred())
            await wait_until(check, 5, 0.002, "the interval to change")

        await flood_until(lambda: log.wait == 0.08)  # doubled while every write had news
        writes = len(sink.drafts)
        await wait_until(lambda: log.wait == 0.01, 5, 0.005, "a quiet write to reset it")
        assert len(sink.drafts) == writes + 1  # the rest of the flood, in one event
    finally:
        await log.stop()


async def test_a_caller_cannot_put_its_text_in_the_trail(tmp_path: Path, backends,
                                                         session: ClientSession) -> None:
    p = await backends(echo_app("v1"))
    cfg = write_config(tmp_path, two_versions(p, p, 100, 0))
    async with running_gateway(cfg) as g:
        for name in ("a%1b%5b31m%0aFORGED", "b" * 2000):
            async with session.post(g.admin + f"/v1/routes/{name}/rollback", headers=BAD,
                                    json={"reason": "x"}) as r:
                assert r.status == 401

        async def written() -> list[dict] | None:
            evs = [e for e in await g.gw.sync.store.audit_events()
                   if e["action"] == "authn_fail"]
            return evs or None

        [ev] = await wait_until(written, 10, 0.05, "the denials to be written")
    # one caller, one endpoint pattern: the two paths are one tally, without their text
    assert ev["target"]["path"] == "/v1/routes/{route}/rollback" and ev["attempts"] == 2
    assert "FORGED" not in json.dumps(ev) and "bbbb" not in json.dumps(ev)


async def test_bursts_timed_around_quiet_writes_gain_no_events() -> None:
    """Denials need no token, and the trail (a Redis stream, never trimmed) keeps every
    event. The interval came back to its shortest at the first quiet write, so a caller
    who sent a burst of distinct denials just after each write and then paused for one
    quiet write had 17 events written every ~3 s instead of 17 a minute: 14 times the
    documented bound, forever. Now the events themselves are budgeted too."""
    sink = Sink()
    log = DeniedLog(sink.append, Metrics(), interval=0.02, max_events=4, max_interval=0.4)
    log.start()
    try:
        loop = asyncio.get_running_loop()
        end = loop.time() + 4.0
        burst = itertools.count()
        while loop.time() < end:
            for i in range(10):  # 10 callers: more than one write itemises
                log.record("authn_fail", None, f"10.0.{next(burst) % 250}.{i}", "GET",
                           "/v1/status", "x", "r")
            seen = len(sink.drafts)
            await wait_until(lambda s=seen: len(sink.drafts) > s, 5, 0.002, "a write")
            await asyncio.sleep(log.wait * 1.2)  # quiet: the next write finds nothing
    finally:
        await log.stop()
    # the bound: (max_events + 1) events per max_interval, after one burst of as many, and
    # the last write on the way out
    assert len(sink.drafts) <= 5 * (4.0 / 0.4 + 1) + 5, len(sink.drafts)
