"""RELIABILITY row 8: huge responses and compression bombs pass through in bounded memory.

A real `killgate serve` process (so its peak RSS, `VmHWM`, is its own) in front of an
aiohttp backend in the test process:

* a 256 MiB answer read at full speed arrives whole, and the gateway's peak RSS grows by a
  few MiB, not by the body;
* a client that stops reading makes the gateway stop reading from the backend: while the
  client sleeps, the backend gets to send only what the socket buffers and the gateway's
  bounded read-ahead hold, then its writes wait;
* a gzip body that inflates to 1 GiB is passed through as the compressed bytes it is (the
  gateway never decompresses), byte for byte, with its `Content-Encoding`.
"""

from __future__ import annotations

import asyncio
import hashlib
import time
import zlib
from pathlib import Path

from aiohttp import ClientSession, ClientTimeout, web

from tests.conftest import free_port, two_versions, wait_until, write_config

MIB = 1024 * 1024
CHUNK = bytes(range(256)) * 4096  # 1 MiB


def big_app(sent: dict[str, int]) -> web.Application:
    async def stream(request: web.Request) -> web.StreamResponse:
        total = int(request.query.get("mib", "256")) * MIB
        resp = web.StreamResponse(headers={"Content-Type": "application/octet-stream"})
        resp.content_length = total
        await resp.prepare(request)
        sent["bytes"] = 0
        while sent["bytes"] < total:
            await resp.write(CHUNK)  # waits while the gateway is not reading
            sent["bytes"] += len(CHUNK)
        await resp.write_eof()
        return resp

    bomb = gzip_bomb()

    async def zipped(_: web.Request) -> web.Response:
        return web.Response(body=bomb, headers={"Content-Encoding": "gzip",
                                                "Content-Type": "application/json"})

    app = web.Application()
    app.router.add_get("/v2/models/iris/big", stream)
    app.router.add_get("/v2/models/iris/bomb", zipped)
    return app


def gzip_bomb() -> bytes:
    """1 GiB of zeros as gzip (~1 MB): 1,024 gzip members of 1 MiB each, one after the
    other, which RFC 1952 readers inflate as one stream."""
    z = zlib.compressobj(9, zlib.DEFLATED, 31)  # 31: gzip framing
    member = z.compress(bytes(MIB)) + z.flush()
    return member * 1024


def peak_rss_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    raise AssertionError("no VmHWM")


async def test_huge_and_compressed_answers_in_bounded_memory(tmp_path: Path, backends,
                                                             gateway_procs) -> None:
    sent = {"bytes": 0}
    port = await backends(big_app(sent))
    cfg = write_config(tmp_path, two_versions(port, port, 100, 0),
                       listen=f"127.0.0.1:{free_port()}", admin=f"127.0.0.1:{free_port()}")
    gw = gateway_procs(cfg)
    await asyncio.to_thread(gw.wait_ready)
    async with ClientSession(auto_decompress=False, timeout=ClientTimeout(total=60)) as s:
        # warm up every code path once, so the baseline includes what any answer costs
        async with s.get(gw.url + "/v2/models/iris/big?mib=4") as r:
            assert len(await r.read()) == 4 * MIB
        baseline = peak_rss_mib(gw.proc.pid)

        # 1. 256 MiB at full speed
        digest, n, t0 = hashlib.sha256(), 0, time.monotonic()
        async with s.get(gw.url + "/v2/models/iris/big") as r:
            assert r.status == 200 and r.content_length == 256 * MIB
            async for part in r.content.iter_chunked(256 * 1024):
                digest.update(part)
                n += len(part)
        elapsed = time.monotonic() - t0
        expected = hashlib.sha256()
        for _ in range(256):
            expected.update(CHUNK)
        assert n == 256 * MIB and digest.digest() == expected.digest()
        grown = peak_rss_mib(gw.proc.pid) - baseline
        print(f"\n256 MiB through the gateway in {elapsed:.2f}s "
              f"({256 / elapsed:.0f} MiB/s); peak RSS +{grown:.1f} MiB")
        assert grown < 32, grown

        # 2. a client that stops reading: the backend is held back
        async with s.get(gw.url + "/v2/models/iris/big") as r:
            await r.content.readexactly(MIB)
            await wait_until(lambda: sent["bytes"] > 0, 5, what="the stream to start")
            last, stalled_since = -1, time.monotonic()
            while time.monotonic() - stalled_since < 1.0:  # sent has stopped growing
                if sent["bytes"] != last:
                    last, stalled_since = sent["bytes"], time.monotonic()
                await asyncio.sleep(0.05)
            # unbounded buffering would have taken the whole 256 MiB by now (~650 MiB/s)
            await asyncio.sleep(0.5)
            held_back = sent["bytes"]
            print(f"the backend sent {held_back / MIB:.0f} MiB of 256 while the client read 1")
            assert held_back < 64 * MIB, held_back
            rest = 0
            async for part in r.content.iter_chunked(MIB):
                rest += len(part)
            assert rest == 255 * MIB
        assert peak_rss_mib(gw.proc.pid) - baseline < 32

        # 3. a gzip bomb is passed through compressed, untouched
        bomb = gzip_bomb()
        async with s.get(gw.url + "/v2/models/iris/bomb") as r:
            assert r.headers["Content-Encoding"] == "gzip"
            body = await r.read()
        assert body == bomb and len(body) < 2 * MIB
        assert peak_rss_mib(gw.proc.pid) - baseline < 32


async def test_a_client_that_never_reads_is_dropped_and_frees_the_backend(
        tmp_path: Path, backends) -> None:
    """RELIABILITY row 37 (slow read): a client that stops reading is dropped after
    `server.send_timeout`, and the backend connection it held serves others again."""
    import socket

    from tests.conftest import running_gateway

    sent = {"bytes": 0}
    port = await backends(big_app(sent))
    # one connection to the backend: a reader that pinned it would starve everyone
    cfg = write_config(tmp_path, two_versions(port, port, 100, 0),
                       extra="server: {send_timeout: 500ms, max_connections_per_backend: 1}\n")
    async with running_gateway(cfg) as g:
        sock = socket.socket()
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        sock.setblocking(False)
        try:
            await asyncio.get_running_loop().sock_connect(sock, g.gw.data_addr)
            sock.send(b"GET /v2/models/iris/big?mib=64 HTTP/1.1\r\nHost: x\r\n\r\n")
            await wait_until(lambda: sent["bytes"] > 0, 5, what="the stream to start")
            t0 = time.monotonic()
            await wait_until(lambda: g.gw.metrics.get("killgate_client_send_timeouts_total"),
                             10, 0.02, "the reader to be dropped")
            assert time.monotonic() - t0 < 5.0
            stopped = sent["bytes"]
            assert stopped < 64 * MIB  # the backend was cut off, not drained into memory
            # the one backend connection serves a reading client again
            async with ClientSession(timeout=ClientTimeout(total=20)) as s, \
                    s.get(g.url + "/v2/models/iris/big?mib=2") as r:
                assert r.status == 200 and len(await r.read()) == 2 * MIB
        finally:
            sock.close()
        assert g.gw.metrics.get("killgate_client_send_timeouts_total") == 1
