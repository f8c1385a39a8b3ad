"""`server.worker_timeout`: a worker whose event loop stops running is ended and replaced
(gateway/workergroup.py). A worker SIGSTOPped stands for one stuck in a bug or a blocking
call: it holds its share of the connections SO_REUSEPORT hands out and answers none.

The tests that leave their group serving take turns on one group per module fixture
(tests/sharedgroup.py: checked before each, read from where each began); one that stops
its group ends that group (its exit code covers the tests before it), and the next test
is given a new one: 3 groups started where each test started its own (9). The watchdog-off
group's tests all leave it serving but the last (a double Ctrl-C: exit 130), whose drain
stands for the exit code 0 of a stop after them: both workers, the one SIGSTOPped and
continued by the first test among them, say `phase stopped` (drained), or it fails."""

from __future__ import annotations

import contextlib
import os
import signal
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import aiohttp
import pytest
from aiohttp import ClientSession

from tests import cli_fork
from tests.backends import echo_app
from tests.conftest import ROOT, free_port, serving_process, two_versions, wait_until, write_config
from tests.sharedgroup import Shared, _state, module_group
from tests.test_worker_config import Group, _listening
from tests.test_workers import _children

pytestmark = [pytest.mark.skipif(not Path("/proc/self/status").exists(), reason="needs /proc"),
              pytest.mark.timeout(60)]


def _rig(tmp_path_factory: pytest.TempPathFactory, server: str) -> Iterator[Shared]:
    yield from module_group(tmp_path_factory.mktemp("group"), server=server, hold_exit=True)


@pytest.fixture(scope="module")
def _watched(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Shared]:
    yield from _rig(tmp_path_factory, ", worker_timeout: 2s")


@pytest.fixture(scope="module")
def _unwatched(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Shared]:
    yield from _rig(tmp_path_factory, ", worker_timeout: 0s")


@pytest.fixture
def watched(_watched: Shared) -> Shared:
    """The module's group with `worker_timeout: 2s`, serving (taken by this test)."""
    _watched.take()
    return _watched


@pytest.fixture
def unwatched(_unwatched: Shared) -> Shared:
    """The module's group with the watchdog off (`worker_timeout: 0s`)."""
    _unwatched.take()
    return _unwatched


def _gone(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/status").read_text().split("State:")[1].split()[0] == "Z"
    except FileNotFoundError:
        return True


async def _both_serving(g: Group) -> list[int]:
    """The two workers' pids, once both listen (a worker's loop has beaten by then; the
    supervisor watches a worker from its loop's first beat)."""
    pids = _children(g.sup)
    await wait_until(lambda: all(_listening(g.gw.output(), p) for p in pids), 15, 0.02,
                     "both workers listening")
    return pids


async def _stuck_worker_replaced(rig: Shared, resume: bool) -> str:
    g = rig.g
    stuck, sibling = await _both_serving(g)
    os.kill(stuck, signal.SIGSTOP)
    try:
        await wait_until(lambda: "worker_unresponsive" in rig.out(), 10, 0.05,
                         "the supervisor noticing the silent worker")
        if resume:  # its SIGUSR1 is taken: faulthandler writes its stacks
            os.kill(stuck, signal.SIGCONT)
        new = await g.replacement(stuck, {sibling})
        await wait_until(lambda: _listening(g.gw.output(), new), 15, 0.02,
                         "the replacement listening")
    finally:
        if not _gone(stuck):
            os.kill(stuck, signal.SIGCONT)
    assert sibling in _children(g.sup)  # the serving one was never taken for silent
    async with ClientSession(connector=aiohttp.TCPConnector(force_close=True)) as s:
        for _ in range(20):  # fresh connections reach both workers: none hangs
            async with s.get(g.gw.url + "/v2/models/iris/x",
                             timeout=aiohttp.ClientTimeout(total=5)) as r:
                assert r.status == 200
    out = rig.out()
    assert out.count("worker_unresponsive") == 1, out
    g.alive()  # (and the group's exit code, 0, at the module's end: tests/sharedgroup.py)
    return out


async def test_a_stopped_worker_is_killed_and_replaced(watched: Shared) -> None:
    out = await _stuck_worker_replaced(watched, resume=False)
    assert "code=-9" in out and 'action="restart"' in out, out


async def test_a_stuck_worker_writes_its_stacks_then_is_replaced(watched: Shared) -> None:
    """Its stacks, then SIGKILL: SIGABRT wrote them too, but its default action then dumped
    core, a copy of the worker's memory for each stuck worker where core dumps are on."""
    out = await _stuck_worker_replaced(watched, resume=True)
    assert "(most recent call first)" in out and "Fatal Python error" not in out, out
    assert "code=-9" in out and 'action="restart"' in out and "code=-6" not in out, out


async def test_every_worker_stuck_at_once_is_killed_and_replaced(watched: Shared) -> None:
    """Every worker silent at once (a shared cause: their stderr pipe full, say), none
    ending on its SIGUSR1: each is SIGKILLed, and the supervisor, then waiting on no deadline
    at all, waits for their exits (it used to die: OverflowError on an infinite wait)."""
    g = watched.g
    pids = await _both_serving(g)
    for p in pids:
        os.kill(p, signal.SIGSTOP)
    try:
        await wait_until(lambda: watched.out().count("code=-9") == 2
                         or g.gw.proc.poll() is not None, 15, 0.05, "both workers killed")
        assert g.gw.proc.poll() is None, g.gw.output()
        await wait_until(lambda: len(set(_children(g.sup)) - set(pids)) == 2, 15, 0.05,
                         "two replacements")
    finally:
        for p in pids:
            if not _gone(p):
                os.kill(p, signal.SIGCONT)
    out = watched.out()
    assert "Traceback" not in out, out
    assert g.gw.proc.poll() is None, out  # (its exit code, 0, at the module's end)


async def test_sigusr1_to_the_supervisor_writes_its_stacks_and_the_group_serves_on(
        watched: Shared) -> None:
    """README: any `serve` process writes its stacks on `kill -USR1 PID` and serves on. The
    PID an operator has is the supervisor's (a container's, systemd's MainPID): it had no
    handler, so SIGUSR1's default action ended it, and its workers with it."""
    g = watched.g
    pids = await _both_serving(g)
    g.gw.signal(signal.SIGUSR1)
    # the supervisor's stacks, then each worker's (passed on: what a stuck request is in);
    # one "Current thread" per process
    await wait_until(lambda: watched.out().count("Current thread") >= 3
                     or g.gw.proc.poll() is not None, 10, 0.05, "three processes' stacks")
    assert g.gw.proc.poll() is None, g.gw.output()
    async with ClientSession(connector=aiohttp.TCPConnector(force_close=True)) as s:
        for _ in range(10):
            async with s.get(g.gw.url + "/v2/models/iris/x",
                             timeout=aiohttp.ClientTimeout(total=5)) as r:
                assert r.status == 200
    assert _children(g.sup) == pids
    # (this group's watchdog is on: the stacks counted above are the signal's, not its)
    assert "worker_unresponsive" not in watched.out(), watched.out()


async def test_sigusr1_to_the_supervisor_never_ends_a_worker_still_starting(
        watched: Shared) -> None:
    """Review of 5cab16b: the supervisor passed SIGUSR1 on to every worker, one still
    starting too, before its handler was in place, so SIGUSR1's default action ended it
    (-10): a restarted worker's death before it serves is a crash loop, which with no
    sibling serving stops the group. An operator dumping stacks while workers are being
    replaced (when one looked stuck) could take the gateway down. A worker now holds the
    signal until it can write its stacks."""
    g = watched.g
    await _both_serving(g)
    victim, others = await g.kill_one()
    new = await g.replacement(victim, others)
    g.gw.signal(signal.SIGUSR1)  # (while the replacement imports and reads its config)
    await wait_until(lambda: _listening(g.gw.output(), new) or _gone(new), 15, 0.02,
                     "the replacement listening")
    assert _listening(g.gw.output(), new), g.gw.output()
    assert new in _children(g.sup)
    g.alive()
    # held, not lost: the replacement wrote its stacks once it could
    await wait_until(lambda: watched.out().count("Current thread") >= 3, 10, 0.05,
                     "three processes' stacks")
    assert "worker_unresponsive" not in watched.out(), watched.out()


@contextlib.asynccontextmanager
async def _drained_and_slow_to_exit(rig: Shared, sig: int) -> AsyncIterator[None]:
    """`sig` to the group; both workers drain, log `stopped` and hang in their exit until
    the block ends (tests/exithold/: a call in a thread that never returns, say). (A worker
    SIGSTOPped once its `stopped` line was read raced its exit, a few ms: on a loaded
    machine the group had exited 0 first.)"""
    g = rig.g
    await _both_serving(g)
    with rig.exits_held():
        g.gw.signal(sig)
        await wait_until(lambda: rig.out().count('phase="stopped"') == 2
                         or rig.out().count("phase=stopped") == 2, 15, 0.02,
                         "both workers drained")
        yield


async def test_a_worker_drained_and_slow_to_exit_is_left_to_exit(watched: Shared) -> None:
    """Once its loop is done (drained, `phase stopped`), a worker beats no more; what is
    left, the interpreter's exit (threads joined, atexit), may take longer than
    worker_timeout, and is not a stuck worker: no SIGUSR1, and the group exits 0 once the
    workers have."""
    g = watched.g
    async with _drained_and_slow_to_exit(watched, signal.SIGTERM):
        t0 = time.monotonic()
        await wait_until(lambda: time.monotonic() - t0 > 3.5 or g.gw.proc.poll() is not None,
                         10, 0.05, "3.5 s")
        # (both still in their exit: held)
        assert g.gw.proc.poll() is None and len(_children(g.sup)) == 2, g.gw.output()
    out = watched.out()
    assert "worker_unresponsive" not in out, out
    # (the group the tests above shared: after their stuck, killed and replaced workers)
    assert g.gw.stop() == 0, g.gw.output()


async def test_a_worker_stuck_when_the_group_stops_is_ended(watched: Shared) -> None:
    """SIGTERM while a worker's loop is stuck: its SIGTERM handler never runs, so it never
    drains; the watchdog still ends it (a draining worker's loop beats), and the group
    exits, 1 (a worker did not drain), where it used to wait for it for ever."""
    g = watched.g
    stuck, _sibling = await _both_serving(g)
    os.kill(stuck, signal.SIGSTOP)
    try:
        g.gw.signal(signal.SIGTERM)
        await wait_until(lambda: g.gw.proc.poll() is not None, 15, 0.05,
                         "the group exiting")
    finally:
        if not _gone(stuck):
            os.kill(stuck, signal.SIGCONT)
    out = watched.out()
    assert "worker_unresponsive" in out and "it did not drain" in out, out
    assert g.gw.stop() == 1, out


def _wakeups(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("voluntary_ctxt_switches:"):
            return int(line.split()[1])
    raise AssertionError("no voluntary_ctxt_switches line")


async def test_with_the_watchdog_off_a_stopped_worker_is_left_alone_and_no_beat_is_sent(
        unwatched: Shared) -> None:
    """With `worker_timeout: 0s` a stopped worker is left alone; and nobody reads the beats,
    so none is sent: every worker's beat woke the supervisor (twice a second per worker)
    for nothing. One window of 3.5 s shows both (they were two tests, each waiting 3-3.5 s
    for nothing to happen): the sibling serving on beside the stopped worker would wake the
    supervisor ~7 times in it if it beat."""
    g = unwatched.g
    stuck, sibling = await _both_serving(g)
    os.kill(stuck, signal.SIGSTOP)
    try:
        # (its stop's SIGCHLD wakes the supervisor once or twice: counted from once it is
        # stopped, with a margin of 3 under what one beating worker would add)
        await wait_until(lambda: _state(stuck) == "T", 5, 0.01, "the worker stopped")
        # longer than the shortest timeout (2 s) with a beat every 0.5 s: nothing happens
        before, t0 = _wakeups(g.sup), time.monotonic()
        await wait_until(lambda: time.monotonic() - t0 > 3.5
                         or "worker_unresponsive" in unwatched.out(), 10, 0.1, "3.5 s")
        woken = _wakeups(g.sup) - before
        assert _children(g.sup) == [stuck, sibling]
        assert "worker_unresponsive" not in unwatched.out()
        assert woken < 4, woken  # (beating: 1 worker x 2 a second x 3.5 s = 7)
    finally:
        os.kill(stuck, signal.SIGCONT)
    # (the group, its worker stopped a while then continued, serves on for the next test:
    # its first Ctrl-C drains both workers, each says `stopped`)
    assert g.gw.proc.poll() is None, g.gw.output()


async def test_a_second_ctrl_c_ends_a_drained_worker_slow_to_exit(unwatched: Shared) -> None:
    """A second Ctrl-C stops the group at once. A drained worker ignores every signal until
    its exit (serving.py), STOP_NOW included: one whose exit hung (a call in a thread that
    never returns, say) kept the group, and the operator's Ctrl-Cs, waiting for ever. It
    is sent SIGKILL ABORT_GRACE later."""
    g = unwatched.g
    async with _drained_and_slow_to_exit(unwatched, signal.SIGINT):
        g.gw.signal(signal.SIGINT)  # the second Ctrl-C
        await wait_until(lambda: g.gw.proc.poll() is not None, 10, 0.05, "the group exiting")
    out = unwatched.out()
    assert out.count("worker_killed") == 2, out
    assert g.gw.stop() == 130, out


async def test_sigusr1_writes_a_single_process_stacks_and_it_serves_on(
        tmp_path: Path, backends, gateway_procs) -> None:
    """What the watchdog sends first is also the operator's: `kill -USR1 PID` on a `serve`
    process writes every thread's stack to its stderr and the process serves on (without a
    handler, SIGUSR1's default action ended it)."""
    p = await backends(echo_app("v1"))
    gw, data = await serving_process(gateway_procs, tmp_path, two_versions(p, p))
    gw.signal(signal.SIGUSR1)
    await wait_until(lambda: "(most recent call first)" in gw.output(), 10, 0.05,
                     "the stacks written")
    async with ClientSession() as s, s.get(f"http://127.0.0.1:{data}/v2/models/iris/x",
                                           timeout=aiohttp.ClientTimeout(total=5)) as r:
        assert r.status == 200
    assert gw.proc.poll() is None
    assert gw.stop() == 0, gw.output()


@pytest.mark.parametrize("value", ["1s", "1h1s", "-1s"])
def test_worker_timeout_out_of_range_is_refused_by_check(tmp_path: Path, value: str) -> None:
    cfg = write_config(tmp_path, two_versions(free_port(), free_port()),
                       extra=f"server: {{worker_timeout: {value}}}\n")
    # (forked from a process that imported the CLI: tests/cli_fork.py)
    res = cli_fork.run(["check", str(cfg)], dict(os.environ), str(ROOT), 60)
    assert res.returncode != 0 and "worker_timeout" in res.stderr + res.stdout, res
