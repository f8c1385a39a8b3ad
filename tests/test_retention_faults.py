"""Audit retention under load and faults, against real stores: a long redis trail is read
in short scripts (a kill never waits for a whole scan) and scanned again only past what
the last read saw; a look reads again when a write lands meanwhile; a local trim writes
the trail kept without the commit lock, and leaves it as it was when the state cannot be
written (a full disk).
"""

from __future__ import annotations

import asyncio
import errno
import fcntl
import json
import os
import re
import socket
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import pytest

from gateway.domain.audit import AuditDraft
from gateway.domain.retention import TrimDecision, TrimWindow, decide_trim
from gateway.errors import StoreUnavailable
from gateway.state.trailscan import _SCAN
from tests.backends import echo_app
from tests.conftest import running_gateway, two_versions, wait_until, write_config
from tests.test_audit_retention import _fill, _filled, _state, _trim_batches_of_ten, _verify

pytestmark = pytest.mark.timeout(30)


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


async def _mirrored(tmp_path: Path, backends: Any) -> tuple[Path, Path, Path]:
    """A config with a local store and a local mirror: (the config, the mirror, its cursor)."""
    p = await backends(echo_app("v1"))
    mirror = tmp_path / "mirror.jsonl"
    cfg = write_config(tmp_path, two_versions(p, p), state=_state(
        tmp_path, None, extra=f"  audit_mirror: {mirror}\n"))
    return cfg, mirror, mirror.with_name(mirror.name + ".cursor")


@asynccontextmanager
async def trimmed_between_pages(tmp_path: Path, backends: Any, monkeypatch: pytest.MonkeyPatch
                                ) -> AsyncIterator[tuple[Any, list[int]]]:
    """A gateway on a local trail of 1200 events, over a bound of 1150 (over one page of
    1000: each trim removes a few) whose store trims between two pages of one read, while
    `trims` (yielded with it, [3] at first) is above 0."""
    p = await backends(echo_app("v1"))
    state = _state(tmp_path, None).replace("max_events: 100,", "max_events: 1150,")
    cfg = write_config(tmp_path, two_versions(p, p), state=state)
    async with running_gateway(cfg) as g:
        store, retention = g.gw.sync.store, g.gw.sync.retention
        await _fill(g, 1200)
        page, trims = store.audit_page, [3]

        async def paged(limit: int, before: str | None) -> Any:
            if before is not None and trims[0] > 0:  # (between two pages of one read)
                trims[0] -= 1
                _, ck = await retention.trim_once(going_on=True)
                assert ck is not None
            return await page(limit, before)

        monkeypatch.setattr(store, "audit_page", paged)
        yield g, trims


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

        await store.audit_trim(decide, lambda n, first, clock: True)
        log = redis_server.cmd("SLOWLOG", "GET", "-1")
        redis_server.cmd("CONFIG", "SET", "slowlog-log-slower-than", "10000")
        w = seen[0]
        assert w.count >= 30002 and w.checkpoint is not None
        assert w.checkpoint["id"] == "ck-deep"
        assert [r["id"] for r in w.reseeds] == ["reseed-deep"]
        # (the read is in steps: each script is asked for SCAN_STEP entries, so it takes
        # ~30000 / SCAN_STEP (500) of them, whatever the machine's speed; one script scanning
        # the whole stream would be one call. Counted, not timed: the slowlog's times are
        # redis's wall time, and at a load of 20 one step preempted took 165 ms, more than
        # a quarter of all of them, in a clean-clone CI run)
        steps = re.findall(re.escape(_SCAN.sha) + r"\r\n\$1\r\n1\r\n\$\d+\r\nkgtest:audit"
                           r"\r\n\$\d+\r\n[^\r]*\r\n\$\d+\r\n(\d+)\r\n", log)
        assert len(steps) >= 30 and max(map(int, steps)) <= 1000, (len(steps), set(steps))
        # the next read scans only what was appended since (one step, not the trail
        # again: a catch-up's trims, a look read again after a conflict), and still
        # knows what lies deep
        await g.gw.sync.append_audit(AuditDraft(actor="bob", action="kill", target={},
                                                reason="since"))
        redis_server.cmd("CONFIG", "SET", "slowlog-log-slower-than", "0")
        redis_server.cmd("SLOWLOG", "RESET")
        await store.audit_trim(decide, lambda n, first, clock: True)
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
    async with _filled(tmp_path, backends, request, backend) as (g, _):
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
        # (the trim lands at once, sealed again on the document as it is now, the decision
        # on the trail as read: the event appended meanwhile is kept besides; the local
        # store too since revaudit5, as redis did)
        assert len(events) == 102, len(events)
        assert events[-2]["reason"] == "meanwhile"


def _never_free(lock_path: Path, within: float) -> bool:
    """Whether the commit lock stays taken for `within` seconds (tried every 10 ms). The
    trim is stopped in the caller meanwhile, so a lock it held would never come free; the
    instance's other threads take it too, for moments (a poll's read shares it: one such
    moment met by a single try failed this test on a loaded machine)."""
    deadline = time.monotonic() + within
    with open(lock_path, "a+b") as lock:
        while True:
            try:
                fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                if time.monotonic() > deadline:
                    return True
                time.sleep(0.01)
            else:
                fcntl.flock(lock, fcntl.LOCK_UN)
                return False


async def test_a_local_trim_writes_the_trail_kept_without_the_commit_lock(
        tmp_path: Path, backends, request: pytest.FixtureRequest,
        monkeypatch: pytest.MonkeyPatch) -> None:
    """The file kept (the whole trail but what is removed) was written and fsynced under
    the commit lock: every kill waited for it (~140 ms per 100k events here, each batch
    of a catch-up). The events kept are written and fsynced without it; under it only
    the events appended meanwhile and the checkpoint are added (a second, small fsync)
    and the file renamed in."""
    async with _filled(tmp_path, backends, request, "local") as (g, _):
        store = g.gw.sync.store
        held: list[bool] = []
        sizes: list[int] = []
        fsync = os.fsync

        def probe(fd: int) -> None:  # (is the commit lock free while the kept file syncs?)
            name = os.readlink(f"/proc/self/fd/{fd}")
            if name.endswith(".tmp") and ".audit.jsonl." in name:
                held.append(_never_free(store.lock_path, 5.0))
                sizes.append(os.fstat(fd).st_size)
            fsync(fd)

        with monkeypatch.context() as mp:
            mp.setattr(os, "fsync", probe)
            decision, ck = await g.gw.sync.retention.trim_once()
        # (the bulk synced without the lock; under it, the file grew by the checkpoint alone)
        assert ck is not None and held == [False, True], (decision, held)
        assert 0 < sizes[1] - sizes[0] < 4096, sizes
        # (the trail's own: the snapshot writer's temporary file may be there meanwhile)
        assert not list(store.audit_path.parent.glob(f"*{store.audit_path.name}*.tmp"))
        res = await asyncio.to_thread(_verify, g.admin)
        assert res.returncode == 0, res.stdout + res.stderr


async def test_a_local_trim_on_a_full_disk_leaves_the_trail_as_it_was(
        tmp_path: Path, backends, request: pytest.FixtureRequest,
        monkeypatch: pytest.MonkeyPatch) -> None:
    """The state file could not be written (a full disk), and neither could the audit
    file be written back: the events were removed and the checkpoint left unanchored,
    which `audit verify` reads as forged. The file as it was is now put back by a rename
    (no space needed)."""
    async with _filled(tmp_path, backends, request, "local") as (g, _):
        store = g.gw.sync.store
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


async def test_verify_reads_again_while_a_look_trims_batch_after_batch(
        tmp_path: Path, backends, monkeypatch: pytest.MonkeyPatch) -> None:
    """`audit verify` read the trail again once when its start read as broken (a trim
    landed while its pages were read); a look trims batch after batch on a long trail, so
    a verify run then said BROKEN: a tamper alarm for nothing. It reads again while the
    head moves (here: a trim lands during each of its first three reads)."""
    async with trimmed_between_pages(tmp_path, backends, monkeypatch) as (g, trims):
        res = await asyncio.to_thread(_verify, g.admin)
        assert trims == [0]
        assert res.returncode == 0, res.stdout + res.stderr
        assert "starts at a trim checkpoint: 1 older event(s)" in res.stdout, res.stdout


async def test_a_mirror_with_a_cursor_from_before_trims_goes_on_after_one(
        tmp_path: Path, backends) -> None:
    """A local mirror's cursor saved by a version without retention is a bare byte offset.
    A trim rewrites the audit file shorter: reading at that offset found nothing (the
    mirror copied nothing, silently), and once the file grew past it, half a line (the
    mirror refused: an alarm for nothing). The mirror now adds the hash its file ends with,
    by which the store finds its place in the rewritten file."""
    cfg, mirror, cursor = await _mirrored(tmp_path, backends)
    async with running_gateway(cfg) as g:
        await _fill(g, 125)
        last = (await g.gw.sync.store.audit_events())[-1]["hash"]
        await wait_until(lambda: mirror.exists() and last in mirror.read_text(), 5)
        await wait_until(lambda: cursor.exists() and last in cursor.read_text(), 5)
    cursor.write_text(cursor.read_text().split(":")[0])  # (as an older version saved it)
    async with running_gateway(cfg) as g:
        sync = g.gw.sync
        _, ck = await sync.retention.trim_once()
        assert ck is not None
        await _fill(g, 1)
        last = (await sync.store.audit_events())[-1]["hash"]
        await wait_until(lambda: last in mirror.read_text(), 5)
        assert sync.mirror is not None and sync.mirror.status()["ok"], sync.mirror.status()


async def test_a_local_trail_is_trimmed_to_the_bound_in_one_rewrite(
        tmp_path: Path, backends, request: pytest.FixtureRequest,
        monkeypatch: pytest.MonkeyPatch) -> None:
    """A local store rewrites its whole audit file at every trim, and a trim removed at
    most TRIM_BATCH (a redis script's bound): turning retention on over a local trail of
    1M events rewrote ~500 MB 500 times. The trail read whole is trimmed at once."""
    _trim_batches_of_ten(monkeypatch)
    async with _filled(tmp_path, backends, request, "local") as (g, _):
        store = g.gw.sync.store
        n = len(await store.audit_events())
        assert await g.gw.sync.retention.look() == 1
        got = [e["after"]["removed"] for e in await store.audit_events()
               if e["action"] == "audit.trim"]
        assert got == [n - 100] and len(await store.audit_events()) == 101, got


async def test_a_mirror_whose_cursor_file_is_garbage_starts_over_and_goes_on(
        tmp_path: Path, backends) -> None:
    """A local mirror's cursor file that does not parse (a torn write of an older version,
    an operator's edit) raised ValueError in the mirror task: copying ended, silently. It
    is now read as no cursor: the store is read from its start and the events the file
    already holds are skipped."""
    cfg, mirror, cursor = await _mirrored(tmp_path, backends)
    async with running_gateway(cfg) as g:
        await _fill(g, 3)
        last = (await g.gw.sync.store.audit_events())[-1]["hash"]
        await wait_until(lambda: cursor.exists() and last in cursor.read_text(), 5)
    cursor.write_text("12x:zz")
    async with running_gateway(cfg) as g:
        await _fill(g, 1)
        last = (await g.gw.sync.store.audit_events())[-1]["hash"]
        await wait_until(lambda: last in mirror.read_text(), 5)
        assert g.gw.sync.mirror is not None and g.gw.sync.mirror.status()["ok"]
    hashes = [json.loads(x)["hash"] for x in mirror.read_text().splitlines()]
    assert len(hashes) == len(set(hashes))  # (nothing copied twice)
