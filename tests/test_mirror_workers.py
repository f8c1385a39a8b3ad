"""The audit mirror (`state.audit_mirror`) under `serve --workers N`: the workers share
the file, and it stays one chain of the trail (each event once, each continuing the one
before), however many workers copy it."""

from __future__ import annotations

import asyncio
import fcntl
import itertools
import json
import os
import threading
from pathlib import Path

import pytest
from aiohttp import ClientSession

from gateway.state.mirror import _append
from tests.backends import echo_app
from tests.conftest import free_port, two_versions, wait_until, write_config
from tests.test_killswitch import auth, kill, redis_state, unkill

pytestmark = pytest.mark.timeout(60)


async def test_two_workers_copy_each_event_once(tmp_path: Path, backends, redis_server,
                                                 gateway_procs, session) -> None:
    """Both workers ran a mirror of their own on the one file: each appended every event it
    fetched after its own in-memory last hash, so the file held each event twice, a chain
    broken at the second line (found by review of the kill switch across workers)."""
    p = await backends(echo_app("v1"))
    mirror = tmp_path / "mirror.jsonl"
    state = redis_state(redis_server, tmp_path, extra=f"  audit_mirror: {mirror}\n")
    cfg = write_config(tmp_path, two_versions(p, p, 100, 0), state=state,
                       listen=f"127.0.0.1:{free_port()}", admin=f"127.0.0.1:{free_port()}")
    gw = gateway_procs(cfg, workers=2)
    await asyncio.to_thread(gw.wait_ready)
    await wait_until(lambda: redis_server.cmd("HLEN", "kgtest:instances") == "2", 10,
                     what="both workers registered")
    for _ in range(3):
        await kill(session, gw.admin, scope="route", route="iris")
        await unkill(session, gw.admin, scope="route", route="iris")
    n = int(redis_server.cmd("XLEN", "kgtest:audit"))
    assert n >= 6

    def lines() -> list[dict]:
        return [json.loads(x) for x in mirror.read_text().splitlines() if x.strip()]

    seen: dict[str, str | None] = {}

    async def both_copied_all() -> bool:
        async with ClientSession() as fresh, fresh.get(gw.admin + "/v1/status",
                                                       headers=auth()) as r:
            body = await r.json()
        seen[body["instance"]] = body["store"]["audit"]["mirror"]["last_hash"]
        if not mirror.exists():  # (neither copied yet: both say None, as `last` would)
            return False
        last = lines()[-1]["hash"] if lines() else None
        return len(seen) == 2 and all(h == last for h in seen.values()) and len(
            {e["hash"] for e in lines()}) == n

    await wait_until(both_copied_all, 15, what="both workers' mirrors at the trail's end")
    assert gw.stop() == 0, gw.output()
    got = lines()
    hashes = [e["hash"] for e in got]
    assert len(hashes) == len(set(hashes)) == n, f"{len(hashes)} lines, {len(set(hashes))} events"
    for before, ev in itertools.pairwise(got):
        assert ev["prev_hash"] == before["hash"]


def test_a_lock_held_by_a_hung_sibling_does_not_hold_the_copy_forever(tmp_path: Path) -> None:
    """The workers share `FILE.lock`. A sibling holding it (stopped mid-append: SIGSTOP, a
    debugger, a hung disk) held the copying thread in flock forever: the mirror said
    nothing of it, and a stop hung in asyncio's executor shutdown, which joins that thread
    (found by review of revkill6). The wait is bounded: the append fails (OSError, shown,
    counted and retried by the mirror's loop) and lands once the lock is free."""
    mirror = tmp_path / "mirror.jsonl"
    events = [{"hash": "h1", "prev_hash": None}, {"hash": "h2", "prev_hash": "h1"}]
    outcome: list[object] = []

    def attempt() -> None:
        try:
            outcome.append(_append(mirror, events, None))
        except OSError as exc:
            outcome.append(exc)

    sibling = os.open(tmp_path / "mirror.jsonl.lock", os.O_RDWR | os.O_CREAT, 0o600)
    try:
        fcntl.flock(sibling, fcntl.LOCK_EX)
        thread = threading.Thread(target=attempt, daemon=True)
        thread.start()
        thread.join(timeout=4)
        assert outcome, "the append still waits for the lock"
        assert isinstance(outcome[0], OSError) and "mirror.jsonl.lock" in str(outcome[0])
        assert not mirror.exists() or mirror.read_bytes() == b""
    finally:
        os.close(sibling)
    done, at = _append(mirror, events, None)
    assert done == events and at is None
    assert [json.loads(line)["hash"] for line in mirror.read_text().splitlines()] == ["h1", "h2"]
