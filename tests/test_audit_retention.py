"""Audit retention against real stores (redis-server, the local files) and the real CLI:
a trim removes the oldest events and appends a signed checkpoint atomically; the trail
still verifies, saying where it starts; pages past its oldest event end; and an attacker
who deletes more, deletes without a checkpoint, or forges one is still a break.
"""

from __future__ import annotations

import asyncio
import errno
import fcntl
import json
import os
import re
import socket
import subprocess
from pathlib import Path
from typing import Any

import pytest
from aiohttp import ClientSession

from gateway.domain.audit import AuditDraft, seal
from gateway.domain.retention import Retention, TrimDecision, TrimWindow, decide_trim
from gateway.errors import StoreConflict, StoreUnavailable
from gateway.state.redistrim import _SCAN
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


@pytest.mark.parametrize("backend", ["local", "redis"])
async def test_a_trimmed_trail_verifies_and_every_attack_is_a_break(
        tmp_path: Path, backends, session, request: pytest.FixtureRequest,
        backend: str) -> None:
    p = await backends(echo_app("v1"))
    redis = request.getfixturevalue("redis_server") if backend == "redis" else None
    cfg = write_config(tmp_path, two_versions(p, p), state=_state(tmp_path, redis))
    async with running_gateway(cfg) as g:
        await _fill(g, 125)
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
    p = await backends(echo_app("v1"))
    redis = request.getfixturevalue("redis_server") if backend == "redis" else None
    cfg = write_config(tmp_path, two_versions(p, p), state=_state(tmp_path, redis))
    async with running_gateway(cfg) as g:
        await _fill(g, 125)
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
    p = await backends(echo_app("v1"))
    redis = request.getfixturevalue("redis_server") if backend == "redis" else None
    cfg = write_config(tmp_path, two_versions(p, p), state=_state(tmp_path, redis))
    async with running_gateway(cfg) as g:
        await _fill(g, 125)
        store = g.gw.sync.store
        events = await store.audit_events()
        await _write_events(store, tmp_path, redis, events[5:])
        res = await asyncio.to_thread(_verify, g.admin)
        assert res.returncode == 1 and "events before it were lost" in res.stderr, res.stderr
        decision, ck = await g.gw.sync.retention.trim_once()
        assert ck is None and decision.broken, decision
        assert len(await store.audit_events()) == len(events) - 5  # (the break shows)
        _, st = await _get(session, g.admin + "/v1/status")
        assert "does not verify" in st["store"]["audit"]["retention"]["refused"]["problem"]


@pytest.mark.parametrize("backend", ["local", "redis"])
async def test_two_trims_at_once_remove_once_and_an_append_meanwhile_is_kept(
        tmp_path: Path, backends, request: pytest.FixtureRequest, backend: str) -> None:
    p = await backends(echo_app("v1"))
    redis = request.getfixturevalue("redis_server") if backend == "redis" else None
    cfg = write_config(tmp_path, two_versions(p, p), state=_state(tmp_path, redis))
    async with running_gateway(cfg) as g:
        await _fill(g, 125)
        sync, store = g.gw.sync, g.gw.sync.store
        # an event appended between the read and the trim: the trim changes nothing
        loop = asyncio.get_running_loop()
        pol = Retention(max_events=100)

        def decide(window: TrimWindow) -> TrimDecision:
            d = decide_trim(window, store.audit_keys.keys(), pol, loop.time())
            asyncio.run_coroutine_threadsafe(sync.append_audit(AuditDraft(
                actor="bob", action="kill", target={}, reason="meanwhile")), loop).result(5)
            return d

        with pytest.raises(StoreConflict):
            await store.audit_trim(decide, lambda n, first: True)
        assert (await store.audit_events())[-1]["reason"] == "meanwhile"
        # two at once (two instances' looks): one trims, the other changes nothing
        got = await asyncio.gather(sync.retention.trim_once(), sync.retention.trim_once(),
                                   return_exceptions=True)
        done = [r for r in got if isinstance(r, tuple) and r[1] is not None]
        assert len(done) == 1, got
        events = await store.audit_events()
        assert [e["action"] for e in events].count("audit.trim") == 1
        assert len(events) == 101 and events[-2]["reason"] == "meanwhile"
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
        tmp_path: Path, backends, redis_server, monkeypatch: pytest.MonkeyPatch) -> None:
    """More to remove than one trim takes (TRIM_BATCH, 10 here): the task trims again at
    once, down to the bound, though the trail is no longer 10% past it."""
    for mod in ("gateway.domain.retention", "gateway.state.redistrim",
                "gateway.state.retention"):
        monkeypatch.setattr(f"{mod}.TRIM_BATCH", 10)
    p = await backends(echo_app("v1"))
    cfg = write_config(tmp_path, two_versions(p, p), state=_state(tmp_path, redis_server))
    async with running_gateway(cfg) as g:
        store = g.gw.sync.store
        await _fill(g, 125)
        n = len(await store.audit_events())
        assert await g.gw.sync.retention.look() == 3  # (what the task runs at each look)
        got = [e for e in await store.audit_events() if e["action"] == "audit.trim"]
        assert [t["after"]["removed"] for t in got] == [10, 10, n - 100 - 18], got
        assert len(await store.audit_events()) == 101
        res = await asyncio.to_thread(_verify, g.admin)
        assert res.returncode == 0, res.stdout + res.stderr


def _xadd_many(redis: Any, key: str, bodies: list[str]) -> None:
    """XADD each body to `key` in one pipelined write (thousands in well under a second)."""
    out = bytearray()
    for b in bodies:
        for part in (b"*5", b"$4", b"XADD", b"$%d" % len(key), key.encode(), b"$1", b"*",
                     b"$1", b"e", b"$%d" % len(b.encode()), b.encode()):
            out += part + b"\r\n"
    with socket.create_connection(("127.0.0.1", redis.port), timeout=5) as s:
        s.sendall(out)
        s.shutdown(socket.SHUT_WR)
        while s.recv(1 << 20):
            pass


async def test_a_long_trail_is_read_in_short_scripts_that_find_what_lies_deep(
        tmp_path: Path, backends, redis_server) -> None:
    """A trim's read of a long trail must not hold redis (and so every kill) for long: one
    script scanned the whole stream (~0.8 s for 100k events, ~10 s for 1M, past the
    command timeout of every kill meanwhile). The newest checkpoint and a re-seed lying
    deep in the trail are still found."""
    p = await backends(echo_app("v1"))
    cfg = write_config(tmp_path, two_versions(p, p), state=_state(tmp_path, redis_server))
    async with running_gateway(cfg) as g:
        store = g.gw.sync.store
        ev = (await store.audit_events())[-1]
        ck = {**ev, "action": "audit.trim", "id": "ck-deep"}
        reseed = {**ev, "action": "state.reseed", "id": "reseed-deep"}
        filler = json.dumps({"id": "filler", "action": "kill"})  # (what a scan reads past)
        _xadd_many(redis_server, "kgtest:audit", [filler] * 10000 + [json.dumps(ck)]
                   + [filler] * 10000 + [json.dumps(reseed)] + [filler] * 10000)
        redis_server.cmd("CONFIG", "SET", "slowlog-max-len", "100000")
        redis_server.cmd("CONFIG", "SET", "slowlog-log-slower-than", "0")
        redis_server.cmd("SLOWLOG", "RESET")
        seen: list[TrimWindow] = []

        def decide(window: TrimWindow) -> TrimDecision:
            seen.append(window)
            return TrimDecision(0, None, "looked only")

        await store.audit_trim(decide, lambda n, first: True)
        log = redis_server.cmd("SLOWLOG", "GET", "-1")
        redis_server.cmd("CONFIG", "SET", "slowlog-log-slower-than", "10000")
        w = seen[0]
        assert w.count >= 30002 and w.checkpoint is not None
        assert w.checkpoint["id"] == "ck-deep"
        assert [r["id"] for r in w.reseeds] == ["reseed-deep"]
        took = [int(us) for us in re.findall(
            r":\d+\r\n:\d+\r\n:(\d+)\r\n\*\d+\r\n\$\d+\r\n(?:EVALSHA|EVAL)\r\n", log)]
        # (no single script takes a large share of the read's time in redis: the read is
        # in steps, whatever the machine's speed)
        assert took and max(took) < sum(took) / 4, sorted(took)[-5:]
        # the next read scans only what was appended since (one step, not the trail
        # again: a catch-up's trims, a look read again after a conflict), and still
        # knows what lies deep
        await g.gw.sync.append_audit(AuditDraft(actor="bob", action="kill", target={},
                                                reason="since"))
        redis_server.cmd("CONFIG", "SET", "slowlog-log-slower-than", "0")
        redis_server.cmd("SLOWLOG", "RESET")
        await store.audit_trim(decide, lambda n, first: True)
        log = redis_server.cmd("SLOWLOG", "GET", "-1")
        redis_server.cmd("CONFIG", "SET", "slowlog-log-slower-than", "10000")
        assert log.count(_SCAN.sha) == 1, log.count(_SCAN.sha)
        w = seen[1]
        assert w.checkpoint is not None and w.checkpoint["id"] == "ck-deep"
        assert [r["id"] for r in w.reseeds] == ["reseed-deep"]
        assert w.newest is not None and w.newest["reason"] == "since"


@pytest.mark.parametrize("backend", ["local", "redis"])
async def test_a_look_reads_again_when_a_write_lands_meanwhile(
        tmp_path: Path, backends, request: pytest.FixtureRequest, backend: str,
        monkeypatch: pytest.MonkeyPatch) -> None:
    """A write landing while the trail was read made the look end with nothing trimmed
    until the next one (10 min): a fleet that writes more often than a long trail takes
    to read never trimmed. The look reads again at once."""
    p = await backends(echo_app("v1"))
    redis = request.getfixturevalue("redis_server") if backend == "redis" else None
    cfg = write_config(tmp_path, two_versions(p, p), state=_state(tmp_path, redis))
    async with running_gateway(cfg) as g:
        await _fill(g, 125)
        sync, loop = g.gw.sync, asyncio.get_running_loop()
        writes: list[int] = []

        def busy(*args: Any) -> TrimDecision:
            if not writes:  # (the first read only: a write lands before the trim)
                writes.append(1)
                asyncio.run_coroutine_threadsafe(sync.append_audit(AuditDraft(
                    actor="bob", action="kill", target={}, reason="meanwhile")),
                    loop).result(5)
            return decide_trim(*args)

        monkeypatch.setattr("gateway.state.retention.decide_trim", busy)
        assert await sync.retention.look() == 1
        events = await sync.store.audit_events()
        assert len(events) == 101 and events[-2]["reason"] == "meanwhile"


async def test_a_local_trim_writes_the_trail_kept_without_the_commit_lock(
        tmp_path: Path, backends, monkeypatch: pytest.MonkeyPatch) -> None:
    """The file kept (the whole trail but what is removed) was written and fsynced under
    the commit lock: every kill waited for it (~140 ms per 100k events here, each batch
    of a catch-up). Only the rename is under the lock now."""
    p = await backends(echo_app("v1"))
    cfg = write_config(tmp_path, two_versions(p, p), state=_state(tmp_path, None))
    async with running_gateway(cfg) as g:
        store = g.gw.sync.store
        await _fill(g, 125)
        held: list[bool] = []
        fsync = os.fsync

        def probe(fd: int) -> None:  # (is the commit lock free while the kept file syncs?)
            if os.readlink(f"/proc/self/fd/{fd}").endswith(".tmp") and ".audit.jsonl." in \
                    os.readlink(f"/proc/self/fd/{fd}"):
                with open(store.lock_path, "a+b") as lock:
                    try:
                        fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
                        held.append(False)
                    except BlockingIOError:
                        held.append(True)
            fsync(fd)

        with monkeypatch.context() as mp:
            mp.setattr(os, "fsync", probe)
            decision, ck = await g.gw.sync.retention.trim_once()
        assert ck is not None and held == [False], (decision, held)
        assert not list(store.audit_path.parent.glob("*.tmp"))
        res = await asyncio.to_thread(_verify, g.admin)
        assert res.returncode == 0, res.stdout + res.stderr


async def test_a_local_trim_on_a_full_disk_leaves_the_trail_as_it_was(
        tmp_path: Path, backends, monkeypatch: pytest.MonkeyPatch) -> None:
    """The state file could not be written (a full disk), and neither could the audit
    file be written back: the events were removed and the checkpoint left unanchored,
    which `audit verify` reads as forged. The file as it was is now put back by a rename
    (no space needed)."""
    p = await backends(echo_app("v1"))
    cfg = write_config(tmp_path, two_versions(p, p), state=_state(tmp_path, None))
    async with running_gateway(cfg) as g:
        store = g.gw.sync.store
        await _fill(g, 125)
        before = await store.audit_events()

        def full(*args: Any, **kw: Any) -> None:
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

        with monkeypatch.context() as mp:
            mp.setattr("gateway.state.localtrim.atomic_write", full)
            with pytest.raises(StoreUnavailable, match="No space left"):
                await g.gw.sync.retention.trim_once()
        assert await store.audit_events() == before
        assert sorted(x.name for x in store.audit_path.parent.iterdir()
                      if x.name.startswith(".")) == []
        res = await asyncio.to_thread(_verify, g.admin)
        assert res.returncode == 0, res.stdout + res.stderr
        _, ck = await g.gw.sync.retention.trim_once()  # (and the next trim goes on)
        assert ck is not None
