"""A `serve --workers 2` worker paused (SIGSTOP: a VM pause, a stuck host) while a kill is
committed, then resumed: the requests it finds waiting are decided on the new state.

The worker's subscribed store connection holds the pushed kill in its socket buffer; the
requests sent after it wait on kept-alive connections and in its accept queue. On resume
one epoll batch reports both; the kill must be applied before any of those requests is
routed (a real `killgate serve --workers 2`, a second instance taking the kill, a real
redis-server).
"""

from __future__ import annotations

import asyncio
import os
import signal
import socket
from pathlib import Path

import pytest
from aiohttp import ClientSession

from tests.backends import echo_app
from tests.conftest import two_versions, wait_until
from tests.test_killswitch import INFER, fixed_ports_config, kill, redis_state, status_of
from tests.test_workers import _children

pytestmark = [pytest.mark.skipif(not Path("/proc/net/tcp").exists(), reason="needs /proc"),
              pytest.mark.timeout(60)]

REQUEST = f"GET {INFER} HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n".encode()


def _inodes(pid: int) -> set[str]:
    out = set()
    for fd in os.listdir(f"/proc/{pid}/fd"):
        try:
            link = os.readlink(f"/proc/{pid}/fd/{fd}")
        except OSError:
            continue
        if link.startswith("socket:["):
            out.add(link[8:-1])
    return out


def _worker_of(sock: socket.socket, workers: list[int]) -> int | None:
    """The worker holding the accepted end of `sock` (/proc/net/tcp: the inode of the
    connection whose remote port is our local port)."""
    port = f"{sock.getsockname()[1]:04X}"
    server = f"{sock.getpeername()[1]:04X}"
    for line in Path("/proc/net/tcp").read_text().splitlines()[1:]:
        f = line.split()
        if f[1].endswith(":" + server) and f[2].endswith(":" + port):
            return next((w for w in workers if f[9] in _inodes(w)), None)
    return None


def _answer(sock: socket.socket) -> tuple[int, str]:
    """One answer's status and x-killgate-decision (the body is read and dropped)."""
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = sock.recv(65536)
        assert chunk, data
        data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    fields = {k.strip().lower(): v.strip() for k, _, v in
              (ln.partition(":") for ln in lines[1:])}
    n = int(fields.get("content-length", "0"))
    while len(body) < n:
        chunk = sock.recv(65536)
        assert chunk
        body += chunk
    return int(lines[0].split()[1]), fields.get("x-killgate-decision", "")


async def test_a_resumed_worker_refuses_the_requests_it_finds_waiting(
        tmp_path: Path, backends, redis_server, gateway_procs, session: ClientSession) -> None:
    port = await backends(echo_app("v1"))
    routes = two_versions(port, port, 100, 0)
    group = gateway_procs(fixed_ports_config(
        tmp_path, routes, redis_state(redis_server, tmp_path, "a"), "a"), workers=2)
    other = gateway_procs(fixed_ports_config(
        tmp_path, routes, redis_state(redis_server, tmp_path, "b"), "b"))
    await asyncio.to_thread(group.wait_ready, 40)
    await asyncio.to_thread(other.wait_ready, 40)
    await wait_until(lambda: redis_server.cmd("HLEN", "kgtest:instances") == "3", 10,
                     what="3 instances registered")
    workers = _children(group.proc.pid)
    # kept-alive connections, each served once: SO_REUSEPORT spreads them over both workers
    conns: list[socket.socket] = []
    on: dict[int, list[socket.socket]] = {w: [] for w in workers}
    for _ in range(40):
        s = socket.create_connection(("127.0.0.1", group.data_port), timeout=10)
        conns.append(s)
        s.sendall(REQUEST)
        assert await asyncio.to_thread(_answer, s) in ((200, "stable"), (200, "weighted"))
        w = _worker_of(s, workers)
        assert w is not None
        on[w].append(s)
        if all(len(v) >= 3 for v in on.values()):
            break
    paused, sibling = sorted(workers, key=lambda w: -len(on[w]))
    assert on[paused] and on[sibling], on
    os.kill(paused, signal.SIGSTOP)
    fresh: list[socket.socket] = []
    try:
        await kill(session, other.admin, wait="0s", scope="route", route="iris")

        def sibling_refuses() -> bool:  # (redis wrote the push to every subscriber by then)
            on[sibling][0].sendall(REQUEST)
            return _answer(on[sibling][0]) == (503, "killed")

        await wait_until(lambda: asyncio.to_thread(sibling_refuses), 10, 0.01,
                         "the running worker to refuse")
        for s in on[paused]:  # waiting in the paused worker's socket buffers
            s.sendall(REQUEST)
        for _ in range(8):  # some wait in its accept queue
            s = socket.create_connection(("127.0.0.1", group.data_port), timeout=10)
            s.sendall(REQUEST)
            fresh.append(s)
    finally:
        os.kill(paused, signal.SIGCONT)
    answers = [await asyncio.to_thread(_answer, s) for s in [*on[paused], *fresh]]
    assert answers == [(503, "killed")] * len(answers), answers
    assert await status_of(session, group.url) == (503, "killed")
    for s in [*conns, *fresh]:
        s.close()
    assert group.stop() == 0, group.output()
