"""Review of fast3's caches read by subscript (a miss is the KeyError) and of the in-flight
set taken out once (Proxy.done): attacker-chosen targets, Hosts and client hops by the
thousand on one kept-alive connection, answered on the fast path and off it."""

from __future__ import annotations

import asyncio

import pytest

from gateway.dataplane.outgoing import CACHE_MAX
from tests.backends import echo_app
from tests.conftest import running_gateway, two_versions, wait_until, write_config

pytestmark = pytest.mark.timeout(60)


async def _pipeline(port: int, heads: list[bytes]) -> list[bytes]:
    """Every request on one connection, pipelined (written while the answers are read);
    the status line of each answer."""
    r, w = await asyncio.open_connection("127.0.0.1", port)

    async def send() -> None:
        for head in heads:
            w.write(head)
            await w.drain()

    sender = asyncio.ensure_future(send())
    try:
        statuses = []
        for head in heads:
            statuses.append((await r.readline()).rstrip())
            length = 0
            while (line := await r.readline()) != b"\r\n":
                if line.lower().startswith(b"content-length:"):
                    length = int(line.split(b":")[1])
            if not head.startswith(b"HEAD "):
                await r.readexactly(length)
        await sender
        return statuses
    finally:
        sender.cancel()
        w.transport.abort()


async def test_thousands_of_distinct_targets_and_hosts_leave_the_caches_bounded(
        tmp_path, backends) -> None:
    port = await backends(echo_app("v1"))
    n = 3 * CACHE_MAX
    heads = []
    for i in range(n):
        host = b"h%d.example" % i if i % 7 else "hé%d.example".encode() % i  # (non-ASCII too: refused)
        method = b"HEAD" if i % 11 == 0 else b"GET"
        target = b"/v2/models/iris/x%d?q=%d" % (i, i) if i % 13 else b"/nowhere/%d" % i
        heads.append(b"%s %s HTTP/1.1\r\nHost: %s\r\nX-Forwarded-For: 10.0.%d.%d\r\n\r\n"
                     % (method, target, host, i // 256 % 256, i % 256))
    async with running_gateway(write_config(tmp_path, two_versions(port, port, 100, 0))) as g:
        statuses = await _pipeline(g.gw.data_addr[1], heads)
        assert len(statuses) == n
        want = [b"400" if i % 7 == 0 else b"404" if i % 13 == 0 else b"200" for i in range(n)]
        assert [s.split()[1] for s in statuses] == want  # (a non-ASCII Host: 400, refused)
        p = g.gw.proxy
        assert p is not None
        for cache in (p._targets, p._hosts, p._forwarded, p._matched or {}, p._labels.by):
            assert len(cache) <= CACHE_MAX
        await wait_until(lambda: g.gw.inflight.count == 0, 5, what="nothing in flight")
        assert not g.gw.inflight.handles  # every flight taken out of the set
