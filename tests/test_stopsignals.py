"""A second Ctrl-C stops at once (gateway/stopsignals.py), as uvicorn and gunicorn do: the
first SIGINT drains (up to drain_timeout, 30 s, with a stream open) and says a second one
stops at once; the second cuts the open answers and exits 130, with no traceback. Real
processes: `killgate serve`, a `--workers 2` group signalled as a terminal does (every
process of its group gets each Ctrl-C, the workers twice with the supervisor's forward),
and `killgate demo`. Before, a second Ctrl-C did nothing, and nothing said so."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import subprocess
import sys
import threading
import time
import urllib.request
from pathlib import Path

import pytest

from tests.backends import sse_app
from tests.conftest import ROOT, die_with_parent, free_port, wait_until, wait_until_sync
from tests.test_server import _cfg, _inflight

pytestmark = pytest.mark.timeout(90)

HINT = "a second Ctrl-C (SIGINT) stops at once"


class Stream:
    """An endless SSE answer read in a thread: when each event arrived, and how it ended."""

    def __init__(self, url: str, data: bytes | None = None) -> None:
        self.events: list[float] = []
        self.ended: str | None = None
        req = urllib.request.Request(url, data=data, method="POST" if data else "GET")
        self.thread = threading.Thread(target=self._read, args=(req,), daemon=True)
        self.thread.start()

    def _read(self, req: urllib.request.Request) -> None:
        try:
            with urllib.request.urlopen(req, timeout=60) as r:
                for line in r:
                    if line.startswith(b"data: [DONE]"):
                        self.ended = "done"
                        return
                    if line.startswith(b"data: "):
                        self.events.append(time.monotonic())
            self.ended = "closed"
        except Exception as exc:  # noqa: BLE001 - how it was cut is the finding
            self.ended = type(exc).__name__

    def flowing_since(self, t: float) -> bool:
        return any(e > t for e in self.events) and self.ended is None


async def _ctrl_c_twice(proc: subprocess.Popen[bytes], output, stream: Stream,
                        signal_it) -> float:
    """Ctrl-C: the stream flows on (a drain) and the log says a second one stops at once;
    Ctrl-C again: how long the process took to end."""
    signal_it()
    first = time.monotonic()
    await wait_until(lambda: HINT in output(), 10, 0.05, "the stopping line with the hint")
    await wait_until(lambda: stream.flowing_since(first + 0.5), 10, 0.05,
                     "the stream flowing on during the drain")
    assert proc.poll() is None, output()
    signal_it()
    second = time.monotonic()
    await asyncio.to_thread(proc.wait, 15)
    await asyncio.to_thread(stream.thread.join, 10)
    return time.monotonic() - second


def _clean(out: str, rc: int) -> None:
    assert rc == 130, out
    assert "Traceback" not in out and "KeyboardInterrupt" not in out, out
    assert "stopping_now" in out, out


@pytest.mark.parametrize("workers", [1, 2])
async def test_a_second_ctrl_c_stops_serve_at_once(tmp_path: Path, backends, gateway_procs,
                                                   workers: int) -> None:
    port = await backends(sse_app("v1", events=400, interval=0.1))  # a 40 s stream
    gw = gateway_procs(_cfg(tmp_path, port, "server: {drain_timeout: 30s}\n"), workers=workers)
    await asyncio.to_thread(gw.wait_ready)
    stream = Stream(gw.url + "/v2/models/iris/stream")
    await asyncio.to_thread(wait_until_sync, lambda: _inflight(gw.admin) >= 1, 5.0)
    # as a terminal's Ctrl-C: to every process of the group (supervisor and workers alike)
    took = await _ctrl_c_twice(gw.proc, gw.output, stream,
                               lambda: os.killpg(gw.proc.pid, signal.SIGINT))
    assert took < 5, gw.output()
    assert stream.ended not in (None, "done"), stream.ended  # cut, not finished
    _clean(gw.output(), gw.proc.returncode)


async def test_a_second_sigint_to_the_supervisor_alone_stops_its_workers_at_once(
        tmp_path: Path, backends, gateway_procs) -> None:
    """`kill -INT` twice to the supervisor's pid (a process manager's): it passes the stop at
    once on to the workers."""
    port = await backends(sse_app("v1", events=400, interval=0.1))
    gw = gateway_procs(_cfg(tmp_path, port, "server: {drain_timeout: 30s}\n"), workers=2)
    await asyncio.to_thread(gw.wait_ready)
    stream = Stream(gw.url + "/v2/models/iris/stream")
    await asyncio.to_thread(wait_until_sync, lambda: _inflight(gw.admin) >= 1, 5.0)
    took = await _ctrl_c_twice(gw.proc, gw.output, stream, lambda: gw.signal(signal.SIGINT))
    assert took < 5, gw.output()
    _clean(gw.output(), gw.proc.returncode)


async def test_sigterm_then_sigterm_still_drains(tmp_path: Path, backends,
                                                 gateway_procs) -> None:
    """Only SIGINT escalates: `systemctl stop` signals every process of the unit, so a
    worker gets SIGTERM twice, and the drain must run its course (exit 0)."""
    port = await backends(sse_app("v1", events=20, interval=0.1))  # a 2 s stream
    gw = gateway_procs(_cfg(tmp_path, port, "server: {drain_timeout: 30s}\n"))
    await asyncio.to_thread(gw.wait_ready)
    stream = Stream(gw.url + "/v2/models/iris/stream")
    await asyncio.to_thread(wait_until_sync, lambda: _inflight(gw.admin) >= 1, 5.0)
    gw.signal(signal.SIGTERM)
    gw.signal(signal.SIGTERM)
    assert await asyncio.to_thread(gw.proc.wait, 15) == 0, gw.output()
    await asyncio.to_thread(stream.thread.join, 10)
    assert stream.ended == "done"


def _demo(log: Path, port: int) -> subprocess.Popen[bytes]:
    env = dict(os.environ, PYTHONUNBUFFERED="1")
    with open(log, "wb") as out:
        return subprocess.Popen([sys.executable, "-m", "gateway", "demo", "--port", str(port),
                                 "--admin-port", str(free_port())], stdout=out,
                                stderr=subprocess.STDOUT, cwd=str(ROOT), env=env,
                                start_new_session=True, preexec_fn=die_with_parent)


async def test_a_second_ctrl_c_stops_the_demo_at_once(tmp_path: Path) -> None:
    port = free_port()
    log = tmp_path / "demo.log"
    proc = _demo(log, port)
    try:
        await wait_until(lambda: "export KILLGATE_TOKEN=" in log.read_text(), 20, 0.05,
                         "the demo to print its instructions")
        stream = Stream(f"http://127.0.0.1:{port}/v2/models/iris/generate_stream",
                        b'{"n": 1000}')
        await wait_until(lambda: len(stream.events) >= 1, 10, 0.05, "the stream")
        took = await _ctrl_c_twice(proc, log.read_text, stream,
                                   lambda: os.killpg(proc.pid, signal.SIGINT))
        assert took < 5, log.read_text()
        _clean(log.read_text(), proc.returncode)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(5)


async def test_a_second_ctrl_c_ends_a_drained_process_whose_exit_hangs(
        tmp_path: Path, backends, gateway_procs) -> None:
    """A process alone, stopped and drained, ignored every signal until its exit: one whose
    exit hung (the loop's close waits for a call in a thread: here a write's Idempotency-Key
    claim, waiting for the local store's lock, which the test holds; before, a JWKS fetch
    the IdP never answered) could not be ended by a second Ctrl-C, only by SIGKILL. It now
    ends at once, exit 130."""
    import fcntl

    from tests.backends import echo_app
    from tests.conftest import bearer

    cfg = _cfg(tmp_path, await backends(echo_app("v1")), "server: {drain_timeout: 1s}\n")
    gw = gateway_procs(cfg)
    await asyncio.to_thread(gw.wait_ready)
    lock = open(tmp_path / "store.json.lock", "a+b")  # noqa: SIM115, ASYNC230 - closed below
    fcntl.flock(lock, fcntl.LOCK_EX)
    asked = threading.Event()

    def ask() -> None:
        req = urllib.request.Request(
            gw.admin + "/v1/kill", method="POST",
            data=b'{"scope": "global", "reason": "x"}',
            headers={**bearer("killgate:admin"), "Idempotency-Key": "k1",
                     "Content-Type": "application/json"})
        asked.set()
        with contextlib.suppress(OSError):  # (cut by the stop)
            urllib.request.urlopen(req, timeout=10).close()

    threading.Thread(target=ask, daemon=True).start()
    await asyncio.to_thread(asked.wait, 5)
    await asyncio.sleep(0.3)  # (the claim is waiting for the lock in its thread)
    gw.signal(signal.SIGTERM)
    await wait_until(lambda: 'phase="stopped"' in gw.output() or "phase=stopped" in gw.output(),
                     5, 0.01, "the drain's end")
    t0 = time.monotonic()
    gw.signal(signal.SIGINT)
    rc = await asyncio.to_thread(gw.proc.wait, 10)
    took = time.monotonic() - t0
    lock.close()
    assert rc == 130 and took < 2, (rc, round(took, 1), gw.output()[-3000:])
