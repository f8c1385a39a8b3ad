"""A stop's `leave` on the local store with the instances' lock held (state/localbeats.py):
a sibling worker stopped or hung mid-write holds `<path>.instances/.lock`. The removal
waited LOCK_WAIT (2 s) for it on a thread: the stop gave up awaiting it after
command_timeout, but asyncio's executor shutdown joined the thread before the process
could exit. It now tries the lock briefly and leaves the heartbeat to age out. Real files,
a real flock held from another open file description, an in-process gateway."""

from __future__ import annotations

import fcntl
import os
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from tests.backends import echo_app
from tests.conftest import running_gateway, two_versions, wait_until, write_config

pytestmark = pytest.mark.timeout(20)


@contextmanager
def held(lock: Path) -> Iterator[None]:
    """The flock of `lock`, held as a hung sibling holds it."""
    fd = os.open(lock, os.O_RDWR | os.O_CREAT, 0o666)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)


def _leave_threads(name: str = "_leave") -> int:
    """Executor threads still running a `_leave` (a stop's join waits for each), or the
    function `name`."""
    import sys

    frames = sys._current_frames()
    return sum(1 for t in threading.enumerate() if (f := frames.get(t.ident or -1)) is not None
               and any(s.f_code.co_name == name for s in _stack(f)))


def _stack(frame):  # type: ignore[no-untyped-def]
    while frame is not None:
        yield frame
        frame = frame.f_back


async def test_a_leave_with_the_lock_held_gives_up_at_once_and_leaves_the_beat(
        tmp_path: Path) -> None:
    from gateway.errors import StoreUnavailable
    from gateway.state.local import LocalStore

    store = LocalStore(tmp_path / "s.json")
    await store.open()
    await store.heartbeat("pod-1", 1)
    with held(store.instances_dir / ".lock"):
        t0 = time.monotonic()
        with pytest.raises(StoreUnavailable) as err:
            await store.leave("pod-1")
        took = time.monotonic() - t0
        assert took < 0.5, f"the leave waited {took:.2f}s for the lock"
        assert "left to age out after its lease" in str(err.value)
        assert _leave_threads() == 0
    assert (await store.fleet(5.0))["pod-1"]["generation"] == 1  # (ages out: a lease)
    await store.leave("pod-1")  # (the lock free: removed)
    assert await store.fleet(5.0) == {}


async def test_a_gateway_stops_without_waiting_for_a_held_instances_lock(
        tmp_path: Path, backends) -> None:
    """command_timeout 3s (a slow store's setting): the stop waited the full 2 s of the
    lock's wait, and the thread ran on after it."""
    p = await backends(echo_app("v1"))
    state = (f"state:\n  backend: local\n  path: {tmp_path}/store.json\n"
             f"  snapshot_path: {tmp_path}/snapshot.json\n  poll_interval: 50ms\n"
             "  command_timeout: 3s\n")
    cfg = write_config(tmp_path, two_versions(p, p, 100, 0), state=state)
    beat = tmp_path / "store.json.instances" / "gw-a.json"
    cm = running_gateway(cfg, "gw-a")
    await cm.__aenter__()
    try:
        await wait_until(beat.exists, 5, what="gw-a's heartbeat")
    finally:
        with held(beat.parent / ".lock"):
            t0 = time.monotonic()
            await cm.__aexit__(None, None, None)
            took = time.monotonic() - t0
            assert _leave_threads() == 0, "a leave thread outlived the stop"
    assert took < 1.0, f"the stop took {took:.2f}s with the instances' lock held"
    assert beat.exists()  # (left to age out after its lease)


async def test_a_heartbeat_waiting_for_the_lock_gives_up_when_the_stop_begins(
        tmp_path: Path) -> None:
    """Found by the test above failing 1 run in 6: an apply's side task heartbeat waiting
    its 2 s for a held lock when the stop began; the stop waits for side tasks (and joins
    the thread), so it took 2.2 s. `stopping()` makes a waiting heartbeat give up, and it
    is not put in place: dropped, as one that got the lock after the stop's `leave` is, not
    an error (it raised StoreUnavailable, "not waited for: this instance is stopping", for
    a requested stop; seen failing test_local_leave_race on a loaded machine)."""
    import asyncio

    from gateway.state.local import LocalStore

    store = LocalStore(tmp_path / "s.json")
    await store.open()
    with held(store.instances_dir / ".lock"):
        beat = asyncio.ensure_future(store.heartbeat("pod-1", 1))
        await wait_until(lambda: _leave_threads("flock_within") == 1, 5,
                         what="the heartbeat's thread waiting for the lock")
        assert not beat.done()
        t0 = time.monotonic()
        store.stopping()
        await asyncio.wait_for(beat, 5.0)  # (given up, dropped: no error)
        assert time.monotonic() - t0 < 0.5
    assert await store.fleet(5.0) == {}
