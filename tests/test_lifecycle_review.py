"""`killgate serve` stopped at awkward moments: before start-up finished, mid-request.

Real processes (tests/conftest.py's `gateway_procs`), real backends and sockets.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import socket
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest

from tests import cli_fork
from tests.backends import echo_app
from tests.conftest import ROOT, STATE_KEY_ENV, free_port, two_versions, wait_until_sync, write_config


async def _to_thread(fn, *args):  # type: ignore[no-untyped-def]
    return await asyncio.get_running_loop().run_in_executor(None, fn, *args)


@pytest.mark.parametrize("workers", [1, 2])
async def test_a_sigterm_while_waiting_for_the_store_at_start_stops_at_once(
        tmp_path: Path, gateway_procs, workers: int) -> None:
    """A SIGTERM (a rolling update, a crash-looping pod) that comes while the instance
    still waits for Redis at start (up to `state.start_timeout`) ends it at once, exit 0,
    without ever opening its listeners. It was held until the start deadline, and the
    instance then opened its ports, only to drain them at once."""
    dead = free_port()  # nobody listens: Redis refuses every attempt
    state = (f"state:\n  backend: redis\n  url: redis://127.0.0.1:{dead}/0\n"
             f"  signing_key_env: {STATE_KEY_ENV}\n  snapshot_path: {tmp_path}/snap.json\n"
             "  start_timeout: 30s\n")
    cfg = write_config(tmp_path, two_versions(dead, dead, 100, 0), state=state,
                       listen=f"127.0.0.1:{free_port()}", admin=f"127.0.0.1:{free_port()}")
    gw = gateway_procs(cfg, workers=workers)
    # every worker is in its start (its signal handlers are installed by then)
    await _to_thread(wait_until_sync, lambda: gw.output().count('phase="config"') == workers,
                     20.0)
    began = time.monotonic()
    gw.signal(signal.SIGTERM)
    rc = await _to_thread(gw.proc.wait, 20)
    took = time.monotonic() - began
    assert rc == 0, gw.output()
    assert took < 8.0, f"stopped {took:.1f}s after SIGTERM:\n{gw.output()}"
    assert 'phase="listening"' not in gw.output()
    with pytest.raises(OSError):
        socket.create_connection(("127.0.0.1", gw.data_port), timeout=2).close()


def _answer(sock: socket.socket) -> bytes:
    """Everything `sock` receives until the gateway ends the connection."""
    out = b""
    sock.settimeout(10)
    with contextlib.suppress(ConnectionResetError):
        while chunk := sock.recv(65536):
            out += chunk
    return out


def _taken(port: int) -> int:
    """Connections to the listener on `port` that the gateway has accepted and read all
    that came on (none left in the accept queue: -1 while some are)."""
    rows = [line.split() for line in Path("/proc/net/tcp").read_text().splitlines()[1:]]
    mine = [r for r in rows if int(r[1].split(":")[1], 16) == port]
    if any(r[3] == "0A" and r[4].split(":")[1] != "00000000" for r in mine):
        return -1  # (a listener's rx_queue: connections not accepted yet)
    return sum(1 for r in mine if r[3] == "01" and r[4].split(":")[1] == "00000000")


def _ready(admin: str) -> int:
    try:
        with urllib.request.urlopen(admin + "/readyz", timeout=2) as r:
            return int(r.status)
    except urllib.error.HTTPError as exc:
        return int(exc.code)


async def test_a_drain_answers_a_request_half_received_and_one_just_connected(
        tmp_path: Path, backends, gateway_procs) -> None:
    """At SIGTERM, a connection whose request head is half received, and one that has
    connected but not sent its request yet, are requests in progress: each is answered
    (`Connection: close`), then closed. Both were closed at once with no answer: the client
    saw its connection end under a request it had sent, the lost request of a deploy."""
    port = await backends(echo_app("v1"))
    cfg = write_config(tmp_path, two_versions(port, port, 100, 0),
                       listen=f"127.0.0.1:{free_port()}", admin=f"127.0.0.1:{free_port()}",
                       extra="server: {drain_timeout: 10s}\n")
    gw = gateway_procs(cfg)
    await _to_thread(gw.wait_ready)
    half = socket.create_connection(("127.0.0.1", gw.data_port))
    half.sendall(b"GET /v2/models/iris/half HTTP/1.1\r\nHost: gw\r\n")
    fresh = socket.create_connection(("127.0.0.1", gw.data_port))
    # both are the gateway's (accepted, the half head read) before the drain begins
    await _to_thread(wait_until_sync, lambda: _taken(gw.data_port) == 2, 10.0)
    gw.signal(signal.SIGTERM)
    await _to_thread(wait_until_sync, lambda: _ready(gw.admin) == 503, 5.0)
    half.sendall(b"x-rest: 1\r\n\r\n")
    fresh.sendall(b"GET /v2/models/iris/fresh HTTP/1.1\r\nHost: gw\r\n\r\n")
    for sock, path in ((half, b"/half"), (fresh, b"/fresh")):
        got = await _to_thread(_answer, sock)
        sock.close()
        assert got.startswith(b"HTTP/1.1 200"), (path, got[:200])
        assert path in got and b"\r\nconnection: close\r\n" in got.lower(), got[:400]
    assert await _to_thread(gw.proc.wait, 15) == 0, gw.output()


def _pester(gw, sig: int, until) -> int:  # type: ignore[no-untyped-def]
    """Send `sig` to the process (the supervisor, with workers) every 10 ms until
    `until()`; how many were sent."""
    n = 0
    deadline = time.monotonic() + 30
    while not until():
        assert time.monotonic() < deadline, gw.output()
        if gw.proc.poll() is not None:
            break
        gw.proc.send_signal(sig)
        n += 1
        time.sleep(0.01)
    return n


@pytest.mark.parametrize("workers", [1, 2])
async def test_sighups_from_the_first_moment_to_the_last_never_end_the_process(
        tmp_path: Path, backends, gateway_procs, workers: int) -> None:
    """SIGHUP is a reload request at every moment of a `serve` process's life. Its default
    action (terminate) ended the process, or the supervisor, when one came before the
    handler was installed (the first second: `systemctl reload` right after `start`), and
    a SIGHUP or a second SIGTERM that came while the stopped process tore down made its
    exit code -1 / -15 (and a supervisor's, 1) in place of 0."""
    port = await backends(echo_app("v1"))
    cfg = write_config(tmp_path, two_versions(port, port, 100, 0),
                       listen=f"127.0.0.1:{free_port()}", admin=f"127.0.0.1:{free_port()}")
    gw = gateway_procs(cfg, workers=workers)

    def ready() -> bool:
        return _ready(gw.admin) == 200 if _listening(gw.admin_port) else False

    await _to_thread(wait_until_sync, lambda: _holds(gw.proc.pid, signal.SIGHUP), 10.0)
    sent = await _to_thread(_pester, gw, signal.SIGHUP, ready)
    assert gw.proc.poll() is None, f"ended by SIGHUP #{sent}:\n{gw.output()}"
    await _to_thread(gw.wait_ready)
    gw.signal(signal.SIGTERM)
    await _to_thread(_pester, gw, signal.SIGHUP, lambda: gw.proc.poll() is not None)
    assert gw.proc.wait(15) == 0, gw.output()


@pytest.mark.parametrize("workers", [1, 2])
async def test_sigterms_from_the_first_moment_end_the_process_with_zero(
        tmp_path: Path, backends, gateway_procs, workers: int) -> None:
    """A SIGTERM at any moment of the start (here: from the earliest on, repeated) stops
    the process cleanly: exit 0, as systemd and Kubernetes expect of a requested stop."""
    port = await backends(echo_app("v1"))
    cfg = write_config(tmp_path, two_versions(port, port, 100, 0),
                       listen=f"127.0.0.1:{free_port()}", admin=f"127.0.0.1:{free_port()}")
    gw = gateway_procs(cfg, workers=workers)
    await _to_thread(wait_until_sync, lambda: _holds(gw.proc.pid, signal.SIGTERM), 10.0)
    await _to_thread(_pester, gw, signal.SIGTERM, lambda: gw.proc.poll() is not None)
    assert gw.proc.wait(15) == 0, gw.output()


def _holds(pid: int, sig: int) -> bool:
    """`pid` holds (blocks) `sig`: from then on it is safe from the signal's default action.
    (Before, for the interpreter's start and the import of the command line, about 0.2 s,
    nothing of ours runs yet.)"""
    try:
        status = Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return False
    mask = next(int(line.split()[1], 16) for line in status.splitlines()
                if line.startswith("SigBlk:"))
    return bool(mask >> (sig - 1) & 1)


def _listening(port: int) -> bool:
    with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), 0.5):
        return True
    return False


async def test_shutdown_delay_turns_unready_first_and_serves_new_connections_meanwhile(
        tmp_path: Path, backends, gateway_procs) -> None:
    """`server.shutdown_delay`: at SIGTERM /readyz answers 503 at once while the data
    plane still accepts and serves new connections, so a load balancer that takes an
    instance out by its health check does so before the port refuses; each answer then
    closes its connection, so clients with kept-alive ones move on; then the drain, exit
    0. Without it the listener closed in the same instant /readyz turned 503: outside
    Kubernetes (whose preStop sleep covers it) every connection the balancer sent before
    its next health check was refused."""
    port = await backends(echo_app("v1"))
    cfg = write_config(tmp_path, two_versions(port, port, 100, 0),
                       listen=f"127.0.0.1:{free_port()}", admin=f"127.0.0.1:{free_port()}",
                       extra="server: {shutdown_delay: 3s, drain_timeout: 5s}\n")
    gw = gateway_procs(cfg)
    await _to_thread(gw.wait_ready)
    kept = socket.create_connection(("127.0.0.1", gw.data_port), timeout=5)
    kept.sendall(b"GET /v2/models/iris/before HTTP/1.1\r\nHost: gw\r\n\r\n")
    assert b"connection: close" not in (await _to_thread(kept.recv, 65536)).lower()
    began = time.monotonic()
    gw.signal(signal.SIGTERM)
    await _to_thread(wait_until_sync, lambda: _ready(gw.admin) == 503, 5.0)
    with socket.create_connection(("127.0.0.1", gw.data_port), timeout=5) as s:
        s.sendall(b"GET /v2/models/iris/late HTTP/1.1\r\nHost: gw\r\nConnection: close\r\n\r\n")
        got = await _to_thread(_answer, s)
    assert got.startswith(b"HTTP/1.1 200"), got[:300]
    # a connection kept alive from before: served, and told to go (its client's next
    # connection reaches an instance that stays), not cut later under a request
    kept.sendall(b"GET /v2/models/iris/kept HTTP/1.1\r\nHost: gw\r\n\r\n")
    got = await _to_thread(_answer, kept)
    kept.close()
    assert got.startswith(b"HTTP/1.1 200") and b"\r\nconnection: close\r\n" in got.lower(), got
    assert time.monotonic() - began < 3.0  # (still in the delay)
    assert await _to_thread(gw.proc.wait, 15) == 0, gw.output()
    assert time.monotonic() - began >= 3.0
    assert 'phase="unready"' in gw.output()


async def test_a_second_gateway_on_a_groups_ports_is_refused(
        tmp_path: Path, backends, gateway_procs) -> None:
    """A `serve --workers N` group holds its ports with SO_REUSEPORT, and the kernel let a
    second group of the same user (started by mistake, or a second unit of the same config)
    bind them too: it started silently, and the connections and the admin API were split
    between two groups, perhaps of two configs or versions. It is refused now, as a single
    process always was: exit 1, one line naming the address; the first group serves on.
    (A second group, then a single process, against one first group: each was a case of
    its own, with a first group each.)"""
    port = await backends(echo_app("v1"))
    cfg = write_config(tmp_path, two_versions(port, port, 100, 0),
                       listen=f"127.0.0.1:{free_port()}", admin=f"127.0.0.1:{free_port()}")
    first = gateway_procs(cfg, workers=2)
    await _to_thread(first.wait_ready)
    for second_workers in (2, 1):
        # (forked from a process that imported the CLI: tests/cli_fork.py; it only refuses,
        # its refusal made by main() after the imports)
        res = await _to_thread(cli_fork.run, ["serve", "-c", str(cfg), "--workers",
                                              str(second_workers)], dict(os.environ),
                               str(ROOT), 30)
        out = res.stdout + res.stderr
        assert res.returncode == 1, (second_workers, out)
        assert "cannot listen on 127.0.0.1:" in out, (second_workers, out)
        assert "Traceback" not in out, (second_workers, out)
        assert _ready(first.admin) == 200, second_workers
    assert first.stop() == 0, first.output()


async def test_an_sse_stream_cut_by_the_drain_deadline_ends_with_a_killgate_error(
        tmp_path: Path, backends, gateway_procs) -> None:
    """A stream still running when `drain_timeout` runs out is cut; an SSE client is told
    so, as for a kill or a failed backend (CONTRACT §3): a final `event: killgate.error`
    of type `shutdown`, then the connection closes. It was aborted bare, after whatever
    whole event came last, and the client could not tell a shutdown from a network fault."""
    from tests.backends import sse_app

    port = await backends(sse_app("v1", events=200, interval=0.1))  # 20 s
    cfg = write_config(tmp_path, two_versions(port, port, 100, 0),
                       listen=f"127.0.0.1:{free_port()}", admin=f"127.0.0.1:{free_port()}",
                       extra="server: {drain_timeout: 2s}\n")
    gw = gateway_procs(cfg)
    await _to_thread(gw.wait_ready)
    s = socket.create_connection(("127.0.0.1", gw.data_port))
    s.sendall(b"GET /v2/models/iris/stream HTTP/1.1\r\nHost: gw\r\n\r\n")
    s.settimeout(10)
    first = await _to_thread(s.recv, 65536)
    assert first.startswith(b"HTTP/1.1 200"), first[:200]
    gw.signal(signal.SIGTERM)
    got = first + await _to_thread(_answer, s)
    s.close()
    assert got.count(b"event: killgate.error") == 1, got[-400:]
    tail = got[got.index(b"event: killgate.error"):]
    assert b'"type": "shutdown"' in tail and b'"route": "iris"' in tail
    assert await _to_thread(gw.proc.wait, 15) == 0, gw.output()
    assert "drain_deadline" in gw.output()
