"""The local store's `leave` against heartbeats racing it (state/localbeats.py): real files,
real threads, the instances' flock between them. A removal's read and unlink were two
steps: a restarted instance's heartbeat renamed into place between them was removed, and a
heartbeat of the leaving instance itself, still being written when the stop cancelled its
task, landed after the removal (the stopped instance back in the fleet for a lease)."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import pytest

pytestmark = pytest.mark.timeout(20)

#: a heartbeat this long takes milliseconds to read back: the window between a removal's
#: read and its unlink, microseconds with a real one, made wide enough to be hit every time
BIG = {"data": "http://10.0.0.1:8080/" + "x" * 4_000_000}


async def test_a_heartbeat_landing_during_a_leave_is_kept(tmp_path: Path) -> None:
    """pod-1 (old) stops while pod-1 restarted (new) writes its heartbeat, both on their
    threads at once, round after round: the restarted one's heartbeat is never the one
    removed (the file is always there, and new's, when both are done)."""
    from gateway.state.local import LocalStore

    path = tmp_path / "s.json"
    beat = path.with_name("s.json.instances") / "pod-1.json"
    deadline, rounds = time.monotonic() + 1.5, 0
    while time.monotonic() < deadline or rounds < 3:
        rounds += 1
        old, new = LocalStore(path), LocalStore(path)
        await old.open()
        await old.heartbeat("pod-1", 1, urls=BIG)
        await asyncio.gather(old.leave("pod-1"), new.heartbeat("pod-1", 1000 + rounds))
        assert beat.exists(), f"round {rounds}: the restarted instance's heartbeat was removed"
        assert (await new.fleet(5.0))["pod-1"]["generation"] == 1000 + rounds
        await new.leave("pod-1")
        assert not beat.exists()


async def test_a_heartbeat_in_flight_when_leaving_is_not_put_back(tmp_path: Path) -> None:
    """A stop cancels the heartbeat task, whose thread goes on writing, then leaves: the
    heartbeat landed after the removal, and the stopped instance stayed in the fleet. A
    heartbeat begun before a `leave` is dropped; one begun after it is written."""
    from gateway.state.local import LocalStore

    store = LocalStore(tmp_path / "s.json")
    await store.open()
    beat = store.instances_dir / "pod-1.json"
    for gen in range(1, 4):  # (first beat ever, then with one of ours in place)
        await asyncio.gather(store.heartbeat("pod-1", gen, urls=BIG), store.leave("pod-1"))
        assert not beat.exists(), f"beat {gen}: the leaving instance's heartbeat is back"
        assert await store.fleet(5.0) == {}
        assert not list(store.instances_dir.glob(".*.tmp"))  # (the dropped one's file too)
        await store.heartbeat("pod-1", gen)  # (a later start of the same store)
        assert (await store.fleet(5.0))["pod-1"]["generation"] == gen


async def test_a_fleet_read_stands_while_the_instances_lock_is_held(tmp_path: Path) -> None:
    """A sibling holds the instances' lock (stopped or hung mid-write) while a gone
    instance's heartbeat is due for removal: the read waited 2 s for the lock, then raised
    LockBusy (an OSError, no StateError: /v1/status and the console answered 500, receipts
    failed). The read stands at once; the cleanup is left to a later read."""
    import fcntl
    import json
    import os

    from gateway.state.local import LocalStore

    store = LocalStore(tmp_path / "s.json")
    await store.open()
    await store.heartbeat("live", 3)
    gone = store.instances_dir / "gone.json"
    gone.write_text(json.dumps({"generation": 1, "seen": time.time() - 3600}))
    fd = os.open(store.instances_dir / ".lock", os.O_RDWR | os.O_CREAT, 0o666)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)  # (another open file description: held against it)
        t0 = time.monotonic()
        fleet = await store.fleet(1.0)
        assert set(fleet) == {"live"} and fleet["live"]["generation"] == 3
        assert time.monotonic() - t0 < 1.0
    finally:
        os.close(fd)
    assert set(await store.fleet(1.0)) == {"live"}
    assert not gone.exists()  # (removed by the next read, the lock free)


async def test_a_heartbeat_refused_by_a_held_lock_leaves_no_file_behind(
        tmp_path: Path) -> None:
    """The heartbeat is written aside, then renamed into place under the instances' lock:
    with the lock held past its wait (a sibling hung), the beat fails as StoreUnavailable
    and its file written aside stayed, one more every heartbeat while the hang lasted."""
    import fcntl
    import os

    from gateway.errors import StoreUnavailable
    from gateway.state.local import LocalStore

    store = LocalStore(tmp_path / "s.json")
    await store.open()
    await store.heartbeat("pod-1", 1)
    fd = os.open(store.instances_dir / ".lock", os.O_RDWR | os.O_CREAT, 0o666)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        with pytest.raises(StoreUnavailable, match="held by another process"):
            await store.heartbeat("pod-1", 2)
    finally:
        os.close(fd)
    assert not list(store.instances_dir.glob(".*.tmp"))
    assert (await store.fleet(5.0))["pod-1"]["generation"] == 1

