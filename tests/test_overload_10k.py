"""RELIABILITY rows 38 and 39: connections by the thousand on one `killgate serve`.

Row 39: 10,000 client connections at once, each answered and then held open; a fresh
client's latency stays bounded meanwhile, nothing is refused below the cap, and memory per
held connection stays small. Row 38: 5,000 connections that never send a request are all
closed once `header_timeout` passes. (Bounded queues and connection caps, rows 12 and 40:
tests/test_overload.py.)
"""

from __future__ import annotations

import asyncio
import os
import re
import resource
import time
from collections import Counter
from pathlib import Path
from typing import cast

import pytest

from tests.backends import echo_app
from tests.conftest import free_port, rss_kib, two_versions, write_config


class _Held(asyncio.Protocol):
    """One client connection, read by hand: `ask` writes REQUEST and its future gets the
    answer's status once the head and Content-Length body are in. (asyncio's streams cost
    the test process more CPU than the gateway spent on the same 10,000 connections; with
    its backend's, ~5.5 s at load 15, which took the test past its timeout.)"""

    REQUEST = b"GET /v2/models/iris/infer HTTP/1.1\r\nHost: x\r\n\r\n"
    LENGTH = re.compile(rb"(?i)\r\ncontent-length: *(\d+)")

    def __init__(self) -> None:
        self.transport: asyncio.Transport | None = None
        self.buf = b""
        self.waiter: asyncio.Future[int] | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)

    def data_received(self, data: bytes) -> None:
        self.buf += data
        head = self.buf.find(b"\r\n\r\n")
        if head < 0:
            return
        m = self.LENGTH.search(self.buf, 0, head + 2)
        assert m is not None, self.buf[:head]
        end = head + 4 + int(m.group(1))
        if len(self.buf) >= end:
            status, self.buf = int(self.buf[9:12]), self.buf[end:]
            if self.waiter is not None and not self.waiter.done():
                self.waiter.set_result(status)

    def connection_lost(self, exc: Exception | None) -> None:
        if self.waiter is not None and not self.waiter.done():
            self.waiter.set_exception(ConnectionError(f"closed before an answer: {exc}"))

    def ask(self) -> asyncio.Future[int]:
        assert self.transport is not None
        self.waiter = asyncio.get_running_loop().create_future()
        self.transport.write(self.REQUEST)
        return self.waiter


class _Ok(asyncio.Protocol):
    """The model server: a fixed 200 for each request head (the gateway's GETs have no
    body), over real keep-alive connections. (aiohttp's, echoing each request as JSON, was
    most of the test process's CPU for its 10,000 requests.)"""

    ANSWER = b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 2\r\n\r\n{}"

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)
        self.buf = b""

    def data_received(self, data: bytes) -> None:
        self.buf += data
        if (n := self.buf.count(b"\r\n\r\n")):
            self.buf = self.buf[self.buf.rfind(b"\r\n\r\n") + 4:]
            self.transport.write(self.ANSWER * n)


@pytest.mark.timeout(180)  # (its work is ~8 s of CPU: at load 15, 30-60 s; 60 s failed)
async def test_ten_thousand_connections_held_open(tmp_path: Path, gateway_procs,
                                                  session) -> None:
    """RELIABILITY row 39: 10,000 client connections at once on one `killgate serve`
    process, each answered and then held open (keep-alive); a fresh client keeps a
    bounded latency meanwhile, nothing is refused below the cap, and memory per held
    connection stays small (plain aiohttp + uvloop: ~12.6 KB each, per the matrix)."""
    n = 10_000
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard < n + 2_000:
        pytest.skip(f"needs {n + 2_000} open files in this process; the hard limit is {hard}")
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    loop = asyncio.get_running_loop()
    served: list[_Ok] = []

    def ok() -> _Ok:
        served.append(_Ok())
        return served[-1]

    backend = await loop.create_server(ok, "127.0.0.1", 0)
    try:
        p = backend.sockets[0].getsockname()[1]
        # 64 pooled connections: a burst of 256 connects would overflow the test backend's
        # listen backlog, and the gateway would rightly eject it for failing to connect;
        # a long keep-alive, so no held connection expires on a slow machine
        cfg = write_config(tmp_path, two_versions(p, p, 100, 0),
                           listen=f"127.0.0.1:{free_port()}", admin=f"127.0.0.1:{free_port()}",
                           extra="server:\n  max_connections_per_backend: 64\n"
                                 "  keepalive_timeout: 600s\n")
        gw = gateway_procs(cfg)
        await asyncio.to_thread(gw.wait_ready)
        rss_before = rss_kib(gw.proc.pid)
        held: list[_Held] = []  # every connection we open, closed at the end

        async def connect_and_ask() -> tuple[_Held, int]:
            _, c = await loop.create_connection(_Held, "127.0.0.1", gw.data_port)
            held.append(c)
            return c, await c.ask()

        conns: list[tuple[_Held, int]] = []
        cpu0 = _cpu(gw.proc.pid)
        t0 = time.monotonic()
        try:
            for _ in range(n // 500):  # 500 at a time: the backend pool's queue is not the test
                conns += await asyncio.wait_for(
                    asyncio.gather(*(connect_and_ask() for _ in range(500))), 60)
            opened_s = time.monotonic() - t0
            cpu = [b - a for a, b in zip(cpu0, _cpu(gw.proc.pid), strict=True)]
            assert Counter(status for _, status in conns) == {200: n}
            rss_held = rss_kib(gw.proc.pid)
            # a fresh client, while every one of the 10,000 stays connected
            fresh, _ = await connect_and_ask()
            lat = []
            for _ in range(200):
                t = time.monotonic()
                assert await asyncio.wait_for(fresh.ask(), 5) == 200
                lat.append(time.monotonic() - t)
            lat.sort()
            p99 = lat[int(len(lat) * 0.99)]
            # the held connections are still open and still answer
            for c, _ in conns[:: n // 20]:
                assert await asyncio.wait_for(c.ask(), 5) == 200
            async with session.get(f"{gw.admin}/metrics") as resp:
                metrics = await resp.text()
            print(f"\n{n} connections answered and held in {opened_s:.1f}s (CPU: this process "
                  f"{cpu[0]:.2f}s, the gateway {cpu[1]:.2f}s); fresh client p99 "
                  f"{p99 * 1000:.1f} ms; RSS {rss_before / 1024:.0f} -> {rss_held / 1024:.0f} MiB "
                  f"({(rss_held - rss_before) * 1024 / n / 1000:.1f} KB per connection)")
            assert p99 < 0.25, lat[-5:]  # generous: ~1 ms here
            assert (rss_held - rss_before) * 1024 / n < 64_000  # bytes per held connection
            for refused in ("killgate_connections_refused_total", "killgate_requests_shed_total",
                            "killgate_upstream_errors_total"):  # none refused, shed or failed
                assert not re.search(rf"^{refused}\b.* [1-9]", metrics, re.M), metrics
            assert 'killgate_upstream_health{route="iris",version="v1"} 1' in metrics
        finally:
            for c in held:
                if c.transport is not None:
                    c.transport.close()
            await asyncio.sleep(0)  # (closed before the file limit goes back down)
    finally:
        backend.close()
        for b in served:
            b.transport.close()
        await asyncio.sleep(0)
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))


def _cpu(pid: int) -> tuple[float, float]:
    """CPU seconds so far: this process's, and process `pid`'s."""
    ru = resource.getrusage(resource.RUSAGE_SELF)
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return ru.ru_utime + ru.ru_stime, (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


async def test_five_thousand_idle_sockets_are_closed(tmp_path: Path, backends, gateway_procs,
                                                     session) -> None:
    """RELIABILITY row 38: 5,000 connections that never send a request are all closed once
    `header_timeout` passes, and a client with a request is served meanwhile."""
    n = 5_000
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard < n + 2_000:
        pytest.skip(f"needs {n + 2_000} open files in this process; the hard limit is {hard}")
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    writers: list[asyncio.StreamWriter] = []
    try:
        p = await backends(echo_app("v1"))
        cfg = write_config(tmp_path, two_versions(p, p, 100, 0),
                           listen=f"127.0.0.1:{free_port()}", admin=f"127.0.0.1:{free_port()}",
                           extra="server: {header_timeout: 2s}\n")
        gw = gateway_procs(cfg)
        await asyncio.to_thread(gw.wait_ready)

        async def idle() -> asyncio.StreamReader:
            reader, writer = await asyncio.open_connection("127.0.0.1", gw.data_port)
            writers.append(writer)
            return reader

        t0 = time.monotonic()
        readers: list[asyncio.StreamReader] = []
        # 500 at a time: with aiohttp's default accept queue of 128 some of them stayed in
        # the kernel's queue, never accepted, so no deadline of ours ever applied to them
        for _ in range(n // 500):
            readers += await asyncio.wait_for(asyncio.gather(*(idle() for _ in range(500))), 30)
        # served while they are all open and silent
        async with session.get(gw.url + "/v2/models/iris/infer") as r:
            assert r.status == 200
        async def end(r: asyncio.StreamReader) -> tuple[bytes | None, float]:
            try:
                return await asyncio.wait_for(r.read(), 20), time.monotonic()
            except TimeoutError:
                return None, time.monotonic()

        ends = await asyncio.gather(*(end(r) for r in readers))
        assert Counter(e for e, _ in ends) == {b"": n}, Counter(e for e, _ in ends)
        # none closed before its deadline: not even the first one accepted (after t0)
        assert min(t for _, t in ends) - t0 >= 2.0 - 0.1
        async with session.get(gw.url + "/v2/models/iris/infer") as r:
            assert r.status == 200
        assert gw.stop() == 0, gw.output()
    finally:
        for w in writers:
            w.close()
        await asyncio.gather(*(w.wait_closed() for w in writers), return_exceptions=True)
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))
