"""Audit retention against real stores (redis-server, the local files) and the real CLI:
a trim removes the oldest events and appends a signed checkpoint atomically; the trail
still verifies, saying where it starts; pages past its oldest event end; and an attacker
who deletes more, deletes without a checkpoint, or forges one is still a break.
"""

from __future__ import annotations

import asyncio
import json
import subprocess
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import pytest
from aiohttp import ClientSession

from gateway.domain.audit import AuditDraft, seal
from gateway.domain.retention import Retention, TrimDecision, TrimWindow, decide_trim
from tests.backends import echo_app
from tests.conftest import running_gateway, two_versions, wait_until, write_config
from tests.test_audit import TOKEN, H, _write_events
from tests.test_cli import cli
from tests.test_killswitch import redis_state

pytestmark = pytest.mark.timeout(30)

KEY_ENV = "KILLGATE_TEST_STATE_KEY"
RETAIN = "  audit_retention: {max_events: 100, interval: %s}\n"


def _state(tmp: Path, redis: Any, interval: str = "1h", extra: str = "") -> str:
    extra = RETAIN % interval + extra
    if redis is not None:
        return redis_state(redis, tmp, extra=extra)
    return (f"state:\n  backend: local\n  path: {tmp}/store.json\n  poll_interval: 50ms\n"
            f"  snapshot_path: {tmp}/snapshot.json\n  signing_key_env: {KEY_ENV}\n" + extra)


async def _fill(g: Any, n: int) -> None:
    """`n` genuine events: appended through the store (a local one's file is written
    directly but for the last, which the commit chains and anchors: ~10 ms less each)."""
    store = g.gw.sync.store
    if store.backend == "local" and n > 1:
        events = await store.audit_events()
        prev, key = events[-1]["hash"], store.audit_keys.current
        with store.audit_path.open("a") as f:
            for i in range(n - 1):
                ev = seal(AuditDraft(actor="alice", action="kill", target={"route": "iris"},
                                     reason=f"r{i}").as_event(), prev, (key.kid, key.secret))
                f.write(json.dumps(ev) + "\n")
                prev = ev["hash"]
        n = 1
    for i in range(n):
        await g.gw.sync.append_audit(AuditDraft(actor="alice", action="kill",
                                                target={"route": "iris"}, reason=f"r{i}"))


def _verify(admin: str, *extra: str) -> subprocess.CompletedProcess[str]:
    return cli("audit", "verify", "--admin", admin, "--token", TOKEN, "--key-env", KEY_ENV,
               *extra)


async def _get(session: ClientSession, url: str) -> tuple[int, dict[str, Any]]:
    async with session.get(url, headers=H) as r:
        return r.status, await r.json()


@asynccontextmanager
async def _filled(tmp_path: Path, backends: Any, request: pytest.FixtureRequest,
                  backend: str) -> AsyncIterator[tuple[Any, Any]]:
    """A gateway on `backend`'s store holding 125 genuine events; yields it and the
    redis-server (None for the local store)."""
    p = await backends(echo_app("v1"))
    redis = request.getfixturevalue("redis_server") if backend == "redis" else None
    cfg = write_config(tmp_path, two_versions(p, p), state=_state(tmp_path, redis))
    async with running_gateway(cfg) as g:
        await _fill(g, 125)
        yield g, redis


def _trim_batches_of_ten(monkeypatch: pytest.MonkeyPatch) -> None:
    """A trim removes at most 10 (TRIM_BATCH) events: a batch bound reached with few.
    (redistrim is imported first: imported by the second patch, after the first, it bound
    the patched 10 as its own, the undo "restored" that, and every later test in the
    process trimmed by tens.)"""
    import gateway.state.redistrim  # noqa: F401

    for mod in ("gateway.domain.retention", "gateway.state.redistrim"):
        monkeypatch.setattr(f"{mod}.TRIM_BATCH", 10)


@pytest.mark.parametrize("backend", ["local", "redis"])
async def test_a_trimmed_trail_verifies_and_every_attack_is_a_break(
        tmp_path: Path, backends, session, request: pytest.FixtureRequest,
        backend: str) -> None:
    async with _filled(tmp_path, backends, request, backend) as (g, redis):
        store = g.gw.sync.store
        # a cursor given out before the trim, naming an event the trim removes
        status, page = await _get(session, g.admin + "/v1/audit?limit=110")
        assert status == 200 and page["next"], page
        n = len(await store.audit_events())  # (125, and what the start wrote)
        decision, ck = await g.gw.sync.retention.trim_once()
        assert ck is not None and decision.remove == n - 100, decision
        events = await store.audit_events()
        assert len(events) == 101 and events[-1]["id"] == ck["id"]
        assert events[0]["prev_hash"] == ck["after"]["last_removed"]["hash"]
        res = await asyncio.to_thread(_verify, g.admin)
        assert res.returncode == 0, res.stdout + res.stderr
        assert f"starts at a trim checkpoint: {n - 100} older event(s)" in res.stdout, res.stdout
        # pages past the oldest event kept end normally (not 400 bad_cursor)
        status, older = await _get(session, f"{g.admin}/v1/audit?limit=50&before={page['next']}")
        assert status == 200 and older == {"events": [], "next": None,
                                           "head": ck["hash"]}, older
        _, st = await _get(session, g.admin + "/v1/status")
        assert st["store"]["audit"]["retention"]["last_trim"]["removed"] == n - 100

        async def broken(tampered: list[dict[str, Any]], keyless: bool = False) -> str:
            await _write_events(store, tmp_path, redis, tampered)
            res = await asyncio.to_thread(_verify_keyless if keyless else _verify, g.admin)
            await _write_events(store, tmp_path, redis, events)
            assert res.returncode == 1, res.stdout + res.stderr
            return res.stderr

        # 1. more old events deleted than the checkpoint says
        assert "deleted past it without a signed checkpoint" in await broken(events[3:])
        # 3. a checkpoint forged without the audit key, claiming 10 more removed (appended
        # after the head: the only place a chain takes it): its MAC, and without the key
        # the head the signed state anchors, give it away
        forged = seal({**ck, "id": "forged", "after": {
            **ck["after"], "last_removed": {"id": events[9]["id"],
                                            "hash": events[9]["hash"]}}},
                      ck["hash"], (ck["kid"], b"y" * 32))  # (the key id, not the key)
        assert "past the head the signed state anchors" in await broken(
            [*events[10:], forged], keyless=True)
        if redis is not None:  # (the unsigned head key rewritten too: the MAC still tells)
            redis.cmd("SET", "kgtest:audit:head", forged["hash"])
        assert "BROKEN" in await broken([*events[10:], forged])
        assert (await asyncio.to_thread(_verify, g.admin)).returncode == 0
        # a second trim starts from the first's checkpoint (found from the newest back),
        # and refuses while events were deleted past it
        await _fill(g, 15)
        now = await store.audit_events()
        await _write_events(store, tmp_path, redis, now[3:])
        decision, none = await g.gw.sync.retention.trim_once()
        assert none is None and "does not continue the newest trim checkpoint" in decision.why
        await _write_events(store, tmp_path, redis, now)
        decision, ck2 = await g.gw.sync.retention.trim_once()
        assert ck2 is not None and decision.remove == 16, decision
        assert ck2["after"]["starts_after"]["checkpoint"] == ck["id"]
        res = await asyncio.to_thread(_verify, g.admin)
        assert res.returncode == 0 and "16 older event(s)" in res.stdout, res.stdout + res.stderr


@pytest.mark.parametrize("backend", ["local", "redis"])
async def test_a_head_a_kept_reseed_names_is_not_trimmed(
        tmp_path: Path, backends, request: pytest.FixtureRequest, backend: str) -> None:
    async with _filled(tmp_path, backends, request, backend) as (g, _):
        store = g.gw.sync.store
        events = await store.audit_events()
        # (a re-seed names the head its instance had anchored: `audit verify` checks that
        # this one is in the trail before it, so it must outlive the re-seed)
        await g.gw.sync.append_audit(AuditDraft(
            actor="killgate/auto", action="state.reseed", target={"store": backend},
            reason="test", extra={"anchored_head": events[5]["hash"]}))
        decision, ck = await g.gw.sync.retention.trim_once()
        assert ck is not None and decision.remove == 5, decision
        res = await asyncio.to_thread(_verify, g.admin)
        assert res.returncode == 0, res.stdout + res.stderr


def _verify_keyless(admin: str) -> subprocess.CompletedProcess[str]:
    return cli("audit", "verify", "--admin", admin, "--token", TOKEN,
               env={"KILLGATE_AUDIT_KEY": "", "KILLGATE_STATE_KEY": ""})


@pytest.mark.parametrize("backend", ["local", "redis"])
async def test_events_deleted_without_a_checkpoint_are_a_break_and_stop_trims(
        tmp_path: Path, backends, session, request: pytest.FixtureRequest,
        backend: str) -> None:
    async with _filled(tmp_path, backends, request, backend) as (g, redis):
        store = g.gw.sync.store
        events = await store.audit_events()
        await _write_events(store, tmp_path, redis, events[5:])
        res = await asyncio.to_thread(_verify, g.admin)
        assert res.returncode == 1 and "events were deleted from the trail's start" in res.stderr, res.stderr
        decision, ck = await g.gw.sync.retention.trim_once()
        assert ck is None and decision.broken, decision
        assert len(await store.audit_events()) == len(events) - 5  # (the break shows)
        _, st = await _get(session, g.admin + "/v1/status")
        assert "does not verify" in st["store"]["audit"]["retention"]["refused"]["problem"]


@pytest.mark.parametrize("backend", ["local", "redis"])
async def test_two_trims_at_once_remove_once_and_an_append_meanwhile_is_kept(
        tmp_path: Path, backends, request: pytest.FixtureRequest, backend: str) -> None:
    async with _filled(tmp_path, backends, request, backend) as (g, _):
        sync, store = g.gw.sync, g.gw.sync.store
        # an event appended between the read and the trim: the trim changes nothing
        loop = asyncio.get_running_loop()
        pol = Retention(max_events=100)

        def decide(window: TrimWindow) -> TrimDecision:
            d = decide_trim(window, store.audit_keys.keys(), pol, loop.time())
            asyncio.run_coroutine_threadsafe(sync.append_audit(AuditDraft(
                actor="bob", action="kill", target={}, reason="meanwhile")), loop).result(5)
            return d

        # (the checkpoint is sealed again after the events appended meanwhile: the trim
        # lands, the event kept; redistrim.py, localtrim.py)
        _, ck = await store.audit_trim(decide, lambda n, first, clock: True)
        assert ck is not None
        assert (await store.audit_events())[-2]["reason"] == "meanwhile"
        await _fill(g, 20)  # (over the bound again, for the two below)
        # two at once (two instances' looks): one trims, the other changes nothing
        got = await asyncio.gather(sync.retention.trim_once(), sync.retention.trim_once(),
                                   return_exceptions=True)
        done = [r for r in got if isinstance(r, tuple) and r[1] is not None]
        assert len(done) == 1, got
        events = await store.audit_events()
        assert [e["action"] for e in events].count("audit.trim") == 2
        assert len(events) == 101 and any(e["reason"] == "meanwhile" for e in events)
        res = await asyncio.to_thread(_verify, g.admin)
        assert res.returncode == 0, res.stdout + res.stderr


async def test_the_retention_task_trims_and_a_local_mirror_goes_on(tmp_path: Path, backends,
                                                                   session) -> None:
    p = await backends(echo_app("v1"))
    mirror = tmp_path / "mirror.jsonl"
    cfg = write_config(tmp_path, two_versions(p, p), state=_state(
        tmp_path, None, "100ms", f"  audit_mirror: {mirror}\n"))

    def lines() -> list[dict[str, Any]]:
        return [json.loads(x) for x in mirror.read_text().splitlines()] if mirror.exists() else []

    async with running_gateway(cfg) as g:
        await _fill(g, 125)
        store = g.gw.sync.store

        async def trimmed() -> bool:
            return any(e["action"] == "audit.trim" for e in await store.audit_events())

        for _ in range(100):  # (the task's interval is 100 ms: polled, with a deadline)
            if await trimmed():
                break
            await asyncio.sleep(0.05)
        assert await trimmed()
        await _fill(g, 1)  # (copied after the trim: the mirror's cursor finds its place)
        last = (await store.audit_events())[-1]["hash"]
        try:
            await wait_until(lambda: lines() and lines()[-1]["hash"] == last, 5)
        except AssertionError:
            raise AssertionError(g.gw.sync.mirror.status()) from None
        assert g.gw.sync.mirror is not None and g.gw.sync.mirror.status()["ok"]
        assert len(lines()) == 128  # (every event: the mirror keeps what the store trims)
    res = await asyncio.to_thread(cli, "audit", "verify", "--mirror", str(mirror),
                                  "--key-env", KEY_ENV)
    assert res.returncode == 0, res.stdout + res.stderr


async def test_the_task_goes_on_trimming_a_batch_at_a_time_to_the_bound(
        tmp_path: Path, backends, request: pytest.FixtureRequest,
        monkeypatch: pytest.MonkeyPatch) -> None:
    """More to remove than one trim takes (TRIM_BATCH, 10 here): the task trims again at
    once, down to the bound, though the trail is no longer 10% past it."""
    _trim_batches_of_ten(monkeypatch)
    async with _filled(tmp_path, backends, request, "redis") as (g, _):
        store = g.gw.sync.store
        n = len(await store.audit_events())
        assert await g.gw.sync.retention.look() == 3  # (what the task runs at each look)
        got = [e for e in await store.audit_events() if e["action"] == "audit.trim"]
        assert [t["after"]["removed"] for t in got] == [10, 10, n - 100 - 18], got
        assert len(await store.audit_events()) == 101
        res = await asyncio.to_thread(_verify, g.admin)
        assert res.returncode == 0, res.stdout + res.stderr
