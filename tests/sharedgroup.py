"""One `killgate serve --workers 2` group shared by a module's tests (a module fixture).

A group costs three interpreter starts (the supervisor, two workers: ~2.5 s of CPU, 7-8 s
of wall time on a loaded 2-core CI machine) and its stop; tests that leave it serving (a
worker stopped, killed and replaced, signals it serves on) can each take it in turn. Before
each test it is checked: the supervisor runs, both workers listen, and each has served
longer than RESTART_WINDOW (a worker killed sooner is, by design, a crash loop). A test
that stops the group (or leaves it broken: a failed test) leaves the next one a new group.
Each test reads only the log written since it took the group (`Shared.out`). With
`hold_exit`, a test can hold its workers' exits (`Shared.exits_held`: tests/exithold/).

The backends run in a thread of their own with its own event loop: the module outlives
each test's loop.
"""

from __future__ import annotations

import asyncio
import math
import os
import signal
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from pathlib import Path
from typing import Any

from aiohttp import web

from gateway.workergroup import RESTART_WINDOW
from tests.backends import echo_app, serve_app
from tests.conftest import (
    SECRET,
    STATE_KEY,
    STATE_KEY_ENV,
    GatewayProcess,
    free_port,
    two_versions,
    wait_until_sync,
    write_config,
)
from tests.test_worker_config import Group, _listening

#: a sitecustomize that holds a worker's exit while a test asks (Shared.exits_held)
EXIT_HOLD = Path(__file__).parent / "exithold"


class ThreadedApps:
    """aiohttp applications served from a thread's own event loop, until `close`."""

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self._runners: list[web.AppRunner] = []
        self._thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self._thread.start()

    def serve(self, app: web.Application) -> int:
        runner, port = asyncio.run_coroutine_threadsafe(serve_app(app), self.loop).result(10)
        self._runners.append(runner)
        return port

    def close(self) -> None:
        for r in reversed(self._runners):
            with suppress(Exception):
                asyncio.run_coroutine_threadsafe(r.cleanup(), self.loop).result(10)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self._thread.join(10)
        self.loop.close()


class Shared:
    """A module's group: `take()` before each test, `close()` after the module."""

    def __init__(self, tmp: Path, server: str = "", watch: bool = False,
                 artifact: str = "", hold_exit: bool = False) -> None:
        self.tmp = tmp
        self.hold_exit = hold_exit
        self._hold = tmp / "exit-hold"  # (while it exists, a worker's exit waits)
        self.server = server
        self.watch = watch
        self.artifact = artifact  # v1's (`artifact: "sha256:..."`), as _group takes it
        self.apps = ThreadedApps()
        self.p1, self.p2 = self.apps.serve(echo_app("v1")), self.apps.serve(echo_app("v2"))
        self.group: Group | None = None
        self.starts = 0  # groups started (each in a folder of its own)
        self.first = ""  # the current group's config file as it started
        #: requests the tests sent through the current group (tests that count them keep it)
        self.sent = 0
        self._mark = 0  # where the log stood when the current test took the group
        self._seen: dict[int, float] = {}  # a worker's pid -> when it was first seen listening
        self._fresh: set[Group] = set()  # a group none of whose workers was replaced yet

    def _start(self) -> Group:
        self.starts += 1
        self.sent = 0
        self._seen.clear()  # (pids of another group's workers: a new process may reuse one)
        tmp = self.tmp / f"group-{self.starts}"
        tmp.mkdir()
        routes = two_versions(self.p1, self.p2, 100, 0)
        if self.artifact:
            routes = routes.replace(f'{self.p1}", weight: 100}}',
                                    f'{self.p1}", weight: 100, {self.artifact}}}')
        cfg = write_config(tmp, routes,
                           extra=f"server: {{watch_config: {'true' if self.watch else 'false'}"
                                 f"{self.server}}}\n",
                           listen=f"127.0.0.1:{free_port()}", admin=f"127.0.0.1:{free_port()}")
        self.first = cfg.read_text()
        run = tmp / "run"
        run.mkdir()
        env = {"TMPDIR": str(run), "KILLGATE_TEST_SECRET": SECRET, STATE_KEY_ENV: STATE_KEY}
        if self.hold_exit:
            env["PYTHONPATH"] = os.pathsep.join(
                p for p in (str(EXIT_HOLD), os.environ.get("PYTHONPATH", "")) if p)
            env["KILLGATE_TEST_EXIT_HOLD"] = str(self._hold)
        gw = GatewayProcess(cfg, workers=2, env=env)
        gw.wait_ready()
        return Group(gw, run)

    def _healthy(self, g: Group) -> bool:
        if g.gw.proc.poll() is not None:
            return False
        kids = _children(g.sup)
        return len(kids) == 2 and all(_state(p) not in ("T", "Z", None) for p in kids)

    def take(self) -> Group:
        """The group, serving with both workers past the restart window; a new one when the
        last test stopped or broke it."""
        g = self.group
        if g is not None and not self._healthy(g):
            self._end(g)
            g = None
        if g is None:
            g = self.group = self._start()
            self._fresh.add(g)
        log = g.gw.output

        def both_listening() -> bool:
            kids = _children(g.sup)
            return len(kids) == 2 and all(_listening(log(), p) for p in kids)

        wait_until_sync(both_listening, 30, 0.02, "both workers of the shared group listening")
        now = time.monotonic()
        for p in _children(g.sup):
            # (a group's first workers: killed at once, each is restarted, never a crash loop)
            self._seen.setdefault(p, -math.inf if g in self._fresh else now)
        self._fresh.discard(g)
        settled = max(self._seen[p] for p in _children(g.sup)) + RESTART_WINDOW + 0.5
        wait_until_sync(lambda: time.monotonic() > settled, 5, 0.05,
                        "both workers past the restart window")
        self._mark = len(g.gw.output())
        return g

    def renew(self) -> Group:
        """A new group in place of the current one (a test left it in a state the next
        cannot start from)."""
        if self.group is not None:
            self._end(self.group)
            self.group = None
        return self.take()

    @contextmanager
    def exits_held(self) -> Iterator[None]:
        """While in the block, a worker that ends waits at its exit (drained, `stopped`
        logged, its supervisor told its loop is done) until the block ends."""
        assert self.hold_exit, "Shared(hold_exit=True)"
        self._hold.touch()
        try:
            yield
        finally:
            self._hold.unlink()

    @property
    def g(self) -> Group:
        assert self.group is not None
        return self.group

    def out(self) -> str:
        """The group's log since the current test took it."""
        assert self.group is not None
        return self.group.gw.output()[self._mark:]

    def _end(self, g: Group) -> int:
        for p in _children(g.sup) if g.gw.proc.poll() is None else []:
            with suppress(ProcessLookupError):
                os.kill(p, signal.SIGCONT)
        return g.gw.stop()

    def close(self) -> str:
        """Stop the group (if one runs): '' when it stopped as it should (exit 0, no
        traceback), else what went wrong."""
        g, self.group = self.group, None
        problem = ""
        if g is not None:
            running = g.gw.proc.poll() is None
            rc = self._end(g)
            out = g.gw.output()
            if (running and rc != 0) or "Traceback" in out:
                problem = f"the shared group ended with {rc}:\n{out}"
            elif running and list(g.tmp.iterdir()):  # (its supervisor removes its run dir)
                problem = f"the shared group left {list(g.tmp.iterdir())}"
        self.apps.close()
        return problem


def module_group(tmp: Path, **kw: Any) -> Iterator[Shared]:
    """A module's shared group in `tmp` (Shared's arguments), stopped at the module's end:
    whatever a test left wrong with it fails there."""
    rig = Shared(tmp, **kw)
    try:
        yield rig
    finally:
        problem = rig.close()
    assert not problem, problem


def _children(pid: int) -> list[int]:
    return [int(p) for p in Path(f"/proc/{pid}/task/{pid}/children").read_text().split()]


def _state(pid: int) -> str | None:
    try:
        return Path(f"/proc/{pid}/status").read_text().split("State:")[1].split()[0]
    except (FileNotFoundError, IndexError):
        return None
