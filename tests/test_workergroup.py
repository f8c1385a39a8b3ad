"""The supervisor's worker group (gateway/workergroup.py) with real child processes: a stop
that lands while a worker is being started, before one is, and a crash loop. The group's
life under `killgate serve --workers N` is tested end to end in test_workers.py and
test_worker_config.py."""

from __future__ import annotations

import itertools
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from gateway.childwait import ChildWait
from gateway.workergroup import WorkerGroup

pytestmark = pytest.mark.timeout(30)

#: a worker's start: the group starts it with the stop signals held (workergroup.spawn); a
#: gateway worker lets them through once its handlers are in place (serving.py), these
#: stand-ins at once, the default action (the end) standing for those handlers
UNBLOCK = ("import signal; signal.pthread_sigmask(signal.SIG_UNBLOCK, "
           "{signal.SIGTERM, signal.SIGINT}); ")
SLEEPER = [sys.executable, "-c", UNBLOCK + "import time; time.sleep(60)"]


@pytest.fixture
def handler() -> Iterator[list[WorkerGroup]]:
    """Installs the group's `forward` as this process's SIGTERM handler, as the supervisor
    does (and puts the old one back); the test appends its group."""
    groups: list[WorkerGroup] = []
    old = signal.signal(signal.SIGTERM, lambda sig, frame: groups[0].forward(sig, frame))
    try:
        yield groups
    finally:
        signal.signal(signal.SIGTERM, old)
        for g in groups:
            for p in g.procs.values():
                p.kill()
                p.wait(5)


def _term_parent() -> None:  # runs in the child between fork and exec: Popen is still waiting
    os.kill(os.getppid(), signal.SIGTERM)


def test_a_sigterm_while_a_worker_is_being_started_stops_that_worker_too(
        handler: list[WorkerGroup]) -> None:
    """The handler runs while Popen waits for the exec, when the new worker is not yet among
    the processes it forwards to: the group ends it once Popen returns, or it would serve
    on after the supervisor's stop (and the supervisor would wait for it)."""
    group = WorkerGroup(lambda i: SLEEPER, preexec_fn=_term_parent)
    handler.append(group)
    group.spawn(0)
    assert group.stopping
    assert group.procs[0].wait(10) == -signal.SIGTERM


def _hup_parent() -> None:  # between fork and exec, as _term_parent
    os.kill(os.getppid(), signal.SIGHUP)


def _sighup_pending(pid: int) -> bool:
    bit = 1 << (signal.SIGHUP - 1)
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(("SigPnd:", "ShdPnd:")) and int(line.split()[1], 16) & bit:
            return True
    return False


def test_a_sighup_while_a_worker_is_being_started_reaches_that_worker_too() -> None:
    """A reload asked for (SIGHUP to the supervisor) while Popen waits for the exec missed
    the new worker, not yet among the processes `forward` sends to: it served on from the
    config bytes it was started with, never reloading (a CI run of
    test_worker_config.py's SIGHUP case found it). The group sends the signal on once Popen
    returns; the worker, which starts with SIGHUP blocked, holds it pending."""
    groups: list[WorkerGroup] = []
    old = signal.signal(signal.SIGHUP, lambda sig, frame: groups[0].forward(sig, frame))
    group = WorkerGroup(lambda i: SLEEPER, preexec_fn=_hup_parent)
    groups.append(group)
    try:
        group.spawn(0)
        pid = group.procs[0].pid
        deadline = time.monotonic() + 10
        while not _sighup_pending(pid):
            assert time.monotonic() < deadline, "the SIGHUP never reached the new worker"
            time.sleep(0.01)
        assert not group.stopping
    finally:
        signal.signal(signal.SIGHUP, old)
        for p in group.procs.values():
            p.kill()
            p.wait(5)


def test_no_worker_is_started_once_the_group_is_stopping(handler: list[WorkerGroup]) -> None:
    group = WorkerGroup(lambda i: SLEEPER)
    handler.append(group)
    group.forward(signal.SIGTERM)
    group.spawn(0)
    assert group.procs == {}
    wait = ChildWait().open()
    try:
        assert group.run(wait) == 0  # nothing to wait for
    finally:
        wait.close()


def test_a_worker_that_dies_again_at_once_stops_the_group(handler: list[WorkerGroup]) -> None:
    """A slot's first death restarts it; a second within the restart window is a crash loop:
    its code is the group's failure, and the other workers are stopped (SIGTERM while
    stopping counts as a clean end)."""
    argv = {0: [sys.executable, "-c", UNBLOCK + "raise SystemExit(3)"], 1: SLEEPER}
    group = WorkerGroup(lambda i: argv[i], stdout=subprocess.DEVNULL)
    handler.append(group)
    wait = ChildWait().open()
    try:
        group.spawn(0)
        group.spawn(1)
        assert group.run(wait) == 1
    finally:
        wait.close()
    assert group.codes == {0: 3, 1: 0}
    assert group.stopping


SLOW_FAIL = [sys.executable, "-c", UNBLOCK + "import time; time.sleep(1.5); raise SystemExit(4)"]
SERVES_THEN_DIES = [sys.executable, "-c", UNBLOCK +
                    "import os, time; os.write(int(os.environ['KILLGATE_READY_FD']), b'1'); "
                    "time.sleep(1.5); raise SystemExit(5)"]


def test_a_worker_that_fails_slowly_before_serving_is_a_crash_loop_too(
        handler: list[WorkerGroup]) -> None:
    """A start that fails after longer than the restart window (a worker importing, syncing
    and checking its config on a loaded host takes seconds) was restarted for ever, each
    restart a core's worth of work: a restarted worker that never said it serves is a crash
    loop, whenever it dies."""
    spawned: list[int] = []

    def argv(i: int) -> list[str]:
        spawned.append(i)
        assert len(spawned) <= 3, "restarted again and again"
        return SLOW_FAIL

    group = WorkerGroup(argv, stdout=subprocess.DEVNULL)
    handler.append(group)
    wait = ChildWait().open()
    try:
        group.spawn(0)
        assert group.run(wait) == 1
    finally:
        wait.close()
    assert spawned == [0, 0] and group.codes == {0: 4}


def test_a_worker_that_served_is_restarted_each_time_it_dies(
        handler: list[WorkerGroup]) -> None:
    """Deaths more than a second after the worker said it serves are not a crash loop,
    however many: each is restarted (the fourth start here stops the group)."""
    spawned: list[int] = []
    groups: list[WorkerGroup] = []

    def argv(i: int) -> list[str]:
        spawned.append(i)
        if len(spawned) == 4:
            groups[0].stopping = True  # (spawn ends this one: the group's stop)
            return SLEEPER
        return SERVES_THEN_DIES

    group = WorkerGroup(argv, stdout=subprocess.DEVNULL)
    groups.append(group)
    handler.append(group)
    wait = ChildWait().open()
    try:
        group.spawn(0)
        assert group.run(wait) == 0
    finally:
        wait.close()
    assert len(spawned) == 4 and group.codes == {0: 0}


SERVES = [sys.executable, "-c", UNBLOCK +
          "import os, time; os.write(int(os.environ['KILLGATE_READY_FD']), b'1'); "
          "time.sleep(60)"]
FAILS_SOON = [sys.executable, "-c", UNBLOCK + "import time; time.sleep(0.5); raise SystemExit(6)"]


def test_a_crash_loop_while_other_workers_serve_backs_off_and_keeps_the_group(
        handler: list[WorkerGroup]) -> None:
    """One slot that cannot start must not take down the workers that serve (a secret file
    removed since they started, say): it is tried again after 1 s, then 2 s, ..., and the
    group serves on with the others."""
    starts: list[float] = []
    groups: list[WorkerGroup] = []

    def argv(i: int) -> list[str]:
        if i == 1:
            return SERVES
        starts.append(time.monotonic())
        if len(starts) == 4:
            groups[0].forward(signal.SIGTERM)  # (spawn ends this one: the group's stop)
            return SLEEPER
        return FAILS_SOON

    group = WorkerGroup(argv, stdout=subprocess.DEVNULL)
    groups.append(group)
    handler.append(group)
    wait = ChildWait().open()
    try:
        group.spawn(1)
        deadline = time.monotonic() + 10
        while not group._up:  # the serving worker has said so
            assert time.monotonic() < deadline
            group._heard()
            time.sleep(0.01)
        group.spawn(0)
        assert group.run(wait) == 0
    finally:
        wait.close()
    gaps = [b - a for a, b in itertools.pairwise(starts)]
    assert len(starts) == 4
    assert gaps[0] < 1.4  # the first death: restarted at once (0.5 s of life)
    assert 1.4 <= gaps[1] < 3.0  # then 1 s after a death 0.5 s in
    assert 2.4 <= gaps[2] < 4.5  # then 2 s
    assert group.codes == {0: 0, 1: 0}
