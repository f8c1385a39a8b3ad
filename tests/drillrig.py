"""The drill tests' rig: two routes on real backends, the drill API called as dana.

`routes(p1, p2)`: `iris` and its drill route `iris-drill`, versions v1 and v2 at 50/50 on
two backends; `hdr`/`call`: the admin API as dana with the drill and read scopes (the
status and JSON of each answer); `open_drill`: a kill drill of v2 on iris-drill, opened;
`answer`: a data-plane request's status, version and decision. `Drill`: the real
`killgate drill` CLI in its own process against a fleet (tests/drillfleet.py), run again
when its own traffic `fell_short` of the steady window; `FAST`: short drill timings.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import re
import subprocess
import time
import urllib.request
from typing import Any

from aiohttp import ClientSession

from tests import cli_fork_spawn
from tests.conftest import ROOT, bearer, wait_until
from tests.drillfleet import Fleet, token

__all__ = ["DRILL", "FAST", "Drill", "answer", "call", "fell_short", "hdr", "open_drill",
           "routes", "store_back", "store_not_ready"]

DRILL = "killgate:drill killgate:read"
ENDING = 10.0  # seconds a drill whose wait failed is left to end (restore) before SIGKILL


def hdr(scope: str = DRILL, sub: str = "dana") -> dict[str, str]:
    # (3 h: a module may mint one at import, and a loaded suite runs past 20 minutes)
    return bearer(scope, sub, 10800)


def routes(p1: int, p2: int, pin: bool = True) -> str:
    versions = (f'  versions:\n'
                f'    - {{name: v1, url: "http://127.0.0.1:{p1}", weight: 50}}\n'
                f'    - {{name: v2, url: "http://127.0.0.1:{p2}", weight: 50}}\n')
    return (f"- name: iris\n  match: {{path_prefix: /v2/models/iris}}\n  stable: v1\n"
            f"  allow_pin: {str(pin).lower()}\n" + versions
            + "- name: iris-drill\n  match: {path_prefix: /drill/iris}\n  drill_for: iris\n"
            "  stable: v1\n  allow_pin: true\n" + versions)


async def call(s: ClientSession, method: str, url: str, body: Any = None,
               headers: dict[str, str] | None = None) -> tuple[int, dict[str, Any]]:
    async with s.request(method, url, json=body, headers=headers or hdr()) as r:
        return r.status, await r.json()


async def answer(s: ClientSession, url: str, **headers: str) -> tuple[int, str, str]:
    async with s.get(url, headers=headers) as r:
        await r.read()
        return (r.status, r.headers.get("x-killgate-version", ""),
                r.headers.get("x-killgate-decision", ""))


async def open_drill(s: ClientSession, admin: str, **body: Any) -> str:
    """Open a drill (a kill of v2 on iris-drill unless `body` says otherwise): its id."""
    st, out = await call(s, "POST", f"{admin}/v1/drills", {
        "kind": "kill", "route": "iris-drill", "version": "v2", "reason": "r", **body})
    assert st == 200, out
    return str(out["drill"])


#: a steady-state check that failed only because the drill's own traffic fell short of half
#: its rate in the window (a loaded machine: the drill rightly stops before injecting)
_SHORT = re.compile(r"stopping: the steady-state check failed: (?:[^;]*: answered \d+ drill "
                    r"requests in the steady window \(expected >= \d+\); )+restoring$")


def fell_short(text: str) -> bool:
    """Whether a drill's output says it stopped at a steady window its own traffic could
    not fill, and for no other reason."""
    return any(_SHORT.search(line.strip()) for line in text.splitlines())


#: the drill refused before opening anything: the instance asked had lost the state store
#: (a loaded machine: redis did not answer within the fleet's 300 ms command timeout, and
#: the instance reconnects at its next poll)
_NOT_READY = re.compile(r"^killgate drill: 503 store_not_ready: instance \S+ cannot reach "
                        r"the state store \(")


def store_not_ready(text: str) -> bool:
    """Whether a drill's output says it refused to start because the instance it asked
    could not reach the state store (nothing opened, nothing changed)."""
    return any(_NOT_READY.search(line) for line in text.splitlines())


async def store_back(admin: str) -> None:
    """Once the instance at `admin` has the state store again (after `store_not_ready`)."""
    await wait_until(lambda: asyncio.to_thread(_store_connected, admin), 30, interval=0.2,
                     what=f"{admin} to reach the state store again")


def _store_connected(admin: str) -> bool:
    req = urllib.request.Request(admin + "/v1/status",
                                 headers={"Authorization": f"Bearer {token()}"})
    with contextlib.suppress(OSError, ValueError), urllib.request.urlopen(req, timeout=5) as r:
        return json.loads(r.read()).get("store", {}).get("connected") is True
    return False


class Drill:
    """The real CLI in its own process (forked from one that imported it: tests/cli_fork.py).

    A drill whose steady window its own traffic could not fill (`fell_short`) stopped and
    restored before injecting anything; one refused because the instance it asked had lost
    the store (`store_not_ready`) opened nothing: either is run again (the latter once
    that instance has the store back), up to `RUNS` times in all: what the tests prove
    comes after the injection."""

    RUNS = 3

    def __init__(self, f: Fleet, *args: str, scope: str = "killgate:drill killgate:read") -> None:
        self.argv = ["drill", *args, "--json", "--out", str(f.tmp / "reports"), "--admin",
                     f.admin, "--token", token(scope)]
        self.admin = f.admin
        self.runs = 0
        self._spawn()

    def _spawn(self) -> None:
        self.runs += 1
        self.proc = cli_fork_spawn.spawn(self.argv, dict(os.environ), str(ROOT))
        self.lines: list[str] = []

    async def _again(self, text: str) -> bool:
        """After `text`: whether the drill fell short and was started again."""
        not_ready = store_not_ready(text)
        if self.runs >= self.RUNS or not (fell_short(text) or not_ready):
            return False
        try:  # (its restore, its exit)
            await asyncio.to_thread(self.proc.communicate, None, 60)
        except subprocess.TimeoutExpired:
            raise await self._failed(f"the drill still ran 60 s after: {text}", 0) from None
        if not_ready:
            await store_back(self.admin)
        self._spawn()
        return True

    async def wait_line(self, text: str, timeout: float = 20) -> str:
        assert self.proc.stderr is not None
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            line = await asyncio.to_thread(self.proc.stderr.readline)
            if not line:
                break
            self.lines.append(line)
            if text in line:
                return line
            if await self._again(line):
                deadline = time.monotonic() + timeout
        raise await self._failed(f"no {text!r} from the drill: {self.lines}")

    def kill(self) -> None:
        self.proc.kill()
        self.proc.wait(5)
        for f in (self.proc.stdout, self.proc.stderr):
            if f is not None:
                f.close()

    async def _failed(self, why: str, ending: float = ENDING) -> AssertionError:
        """A wait that failed (`why`: the error returned, to raise): the drill is given
        `ending` seconds to end on its own (its restore), then SIGKILLed; its two pipes
        are closed either way. (Left open, the
        failed test's traceback held them, and the next full collection, in whichever test
        ran later on that xdist worker, found them: an unraisable ResourceWarning, which
        failed that test: test_metrics_scrape_flood after test_drill_kept's failed
        wait_line, twice in CI.)"""
        with contextlib.suppress(subprocess.TimeoutExpired):
            _, err = await asyncio.to_thread(self.proc.communicate, None, ending)
            why += f"; then: {err}"
        self.kill()
        return AssertionError(why)

    async def result(self, timeout: float = 40) -> tuple[int, dict[str, Any] | None, str]:
        while True:
            try:
                out, err = await asyncio.to_thread(self.proc.communicate, None, timeout)
            except subprocess.TimeoutExpired:
                raise await self._failed(
                    f"the drill still ran after {timeout:g} s: {self.lines}", 0) from None
            said = "".join(self.lines) + err
            if not await self._again(said):
                report = json.loads(out) if out.strip() else None
                return self.proc.returncode, report, said


FAST = ("--rate", "40", "--steady", "600ms", "--hold", "1500ms", "--settle", "1s")
