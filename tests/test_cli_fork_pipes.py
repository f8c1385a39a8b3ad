"""tests/cli_fork_spawn.Spawned closes its own pipes (found by review): it behaved as Popen and
left them to its caller, so a test that failed before its communicate() left two open pipes
to the garbage collector, whose ResourceWarning then failed whichever innocent later test
collected them (filterwarnings = error). A real forked `killgate status` that hangs on an
admin API that never answers (a socket that listens, never accepts)."""

from __future__ import annotations

import gc
import os
import socket
import warnings
from collections.abc import Iterator

import pytest

from tests import cli_fork_spawn
from tests.cli_fork import ROOT

pytestmark = pytest.mark.timeout(30)


@pytest.fixture
def mute_admin() -> Iterator[str]:
    with socket.socket() as lsock:
        lsock.bind(("127.0.0.1", 0))
        lsock.listen(8)
        yield f"http://127.0.0.1:{lsock.getsockname()[1]}"


def _hanging(admin: str) -> cli_fork_spawn.Spawned:
    return cli_fork_spawn.spawn(["status", "--admin", admin, "--token", "x.y.z", "--timeout", "25"],
                          dict(os.environ), str(ROOT))


def _unclosed_once_dropped(held: list[cli_fork_spawn.Spawned]) -> list[str]:
    """The ResourceWarnings (an unclosed file's) raised as the last reference to what
    `held` holds goes and a garbage collection runs."""
    with warnings.catch_warnings(record=True) as seen:
        warnings.simplefilter("always")
        held.clear()
        gc.collect()
    return [str(w.message) for w in seen if issubclass(w.category, ResourceWarning)]


def test_a_caller_failing_before_communicate_leaves_no_open_pipe(mute_admin: str) -> None:
    """The fake caller fails between spawn() and communicate(), as a test's assertion did;
    the end of the test (conftest's autouse fixture runs cli_fork_spawn.close_all()) kills it and
    closes its pipes, so the collection that follows warns of nothing."""
    seen: list[cli_fork_spawn.Spawned] = []

    def failing_caller() -> None:
        proc = _hanging(mute_admin)
        seen.append(proc)
        try:
            raise AssertionError("the caller's own failure, before communicate()")
        finally:  # (as Popen's callers do: its end awaited, its pipes forgotten)
            proc.kill()
            proc.wait(5)

    with pytest.raises(AssertionError, match="the caller's own failure"):
        failing_caller()
    proc = seen[0]
    assert proc.returncode is not None and not proc.stdout.closed  # (as the caller left it)
    cli_fork_spawn.close_all()  # (what the end of every test now does)
    assert proc.stdout.closed and proc.stderr.closed
    del proc
    assert _unclosed_once_dropped(seen) == []


def test_one_still_running_at_the_end_of_its_test_is_killed(mute_admin: str) -> None:
    held = [_hanging(mute_admin)]
    assert held[0].poll() is None
    cli_fork_spawn.close_all()
    assert held[0].returncode is not None and held[0].returncode < 0, held[0].returncode
    assert held[0].stdout.closed and held[0].stderr.closed
    assert _unclosed_once_dropped(held) == []


def test_leaving_with_closes_its_pipes(mute_admin: str) -> None:
    held: list[cli_fork_spawn.Spawned] = []
    with pytest.raises(AssertionError), _hanging(mute_admin) as proc:
        held.append(proc)
        raise AssertionError("failed inside")
    del proc
    assert held[0].stdout.closed and held[0].stderr.closed and held[0].returncode is not None
    assert _unclosed_once_dropped(held) == []


def test_communicate_then_close_all_changes_nothing(mute_admin: str) -> None:
    """A caller that read it to its end: close_all() has nothing left of it to close."""
    proc = cli_fork_spawn.spawn(["--version"], dict(os.environ), str(ROOT))
    out, err = proc.communicate(timeout=20)
    assert proc.returncode == 0 and out, (out, err)
    assert proc not in cli_fork_spawn._open
    cli_fork_spawn.close_all()
    assert proc.returncode == 0
