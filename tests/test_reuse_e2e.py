"""End to end against the data plane's object reuse (impperf8/9: the last finished request's
Flight started again, and its Request begun again, when `sys.getrefcount` says nothing else
refers to them): a real `killgate serve` (also under `python -X dev`, whose asyncio debug
mode and allocator hooks must not turn the count into corruption) and a real keep-alive
backend. Clients pipeline every shape of request at once on some connections (a body, HEAD,
an answer with a 103 before it, an answer sent before the body is read, a chunked body),
cut others in the middle of a streamed answer, and a kill cuts one in flight: each answer
must be its own request's (its id, its body), in order, and after it all no flight is left
in the in-flight set for a later kill to find (review revreuse: none was found; this pins it).
"""

from __future__ import annotations

import asyncio
import json
import re
from pathlib import Path

import pytest
from aiohttp import ClientSession

from tests.conftest import free_port, write_config
from tests.test_killswitch import kill, unkill

pytestmark = pytest.mark.timeout(120)

ID = re.compile(rb"\r\nx-id: ([^\r]*)", re.I)


class Backend:
    """A keep-alive HTTP/1.1 backend answering each request with its `x-id` and its body:
    `/hints` after a 103, `/early` at once at the head (then its body is read), `/big` a
    long chunked answer, `/hold` once `release` is set; `seen` holds each id as it comes."""

    def __init__(self) -> None:
        self.release = asyncio.Event()
        self.seen: list[str] = []
        self.server: asyncio.AbstractServer | None = None
        self.writers: set[asyncio.StreamWriter] = set()

    async def start(self) -> int:
        self.server = await asyncio.start_server(self._conn, "127.0.0.1", 0)
        return int(self.server.sockets[0].getsockname()[1])

    async def stop(self) -> None:
        for w in self.writers:
            w.close()
        if self.server is not None:
            self.server.close()

    async def _conn(self, r: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
        self.writers.add(w)
        try:
            while True:
                await self._one(r, w)
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            self.writers.discard(w)
            w.close()

    async def _one(self, r: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
        head = await r.readuntil(b"\r\n\r\n")
        method, path = head.split(b" ", 2)[:2]
        rid = (m.group(1) if (m := ID.search(head)) else b"").decode()
        self.seen.append(rid)

        def answer(extra: str = "") -> bytes:
            out = json.dumps({"id": rid, "path": path.decode(), "body": body.decode()}).encode()
            return (f"HTTP/1.1 200 OK\r\nx-id: {rid}\r\ncontent-type: application/json\r\n"
                    f"content-length: {len(out)}\r\n{extra}\r\n").encode() + (
                b"" if method == b"HEAD" else out)

        body = b""
        if b"/early" in path:
            w.write(answer())  # (before the body is read)
        n = int(m.group(1)) if (m := re.search(rb"\r\ncontent-length: (\d+)", head, re.I)) else 0
        if b"transfer-encoding: chunked" in head.lower():
            while (size := int((await r.readuntil(b"\r\n")).split(b";")[0], 16)) != 0:
                body += await r.readexactly(size)
                await r.readexactly(2)
            await r.readuntil(b"\r\n")
        elif n:
            body = await r.readexactly(n)
        if b"/early" in path:
            return
        if b"/hold" in path:
            await self.release.wait()
        if b"/hints" in path:
            w.write(b"HTTP/1.1 103 Early Hints\r\nlink: </s.css>; rel=preload\r\n\r\n")
            await w.drain()
        if b"/big" in path:
            w.write(f"HTTP/1.1 200 OK\r\nx-id: {rid}\r\ntransfer-encoding: chunked\r\n\r\n"
                    .encode())
            for _ in range(400):
                w.write(b"%x\r\n%b\r\n" % (1024, b"b" * 1024))
                await w.drain()
            w.write(b"0\r\n\r\n")
            return
        w.write(answer())
        await w.drain()


def request(kind: str, rid: str) -> bytes:
    """One request of `kind` carrying `rid` in its `x-id`, its target and any body."""
    head = f"{'HEAD' if kind == 'head' else 'GET'} /r/{kind}/{rid} HTTP/1.1\r\nhost: h\r\n" \
           f"x-id: {rid}\r\n"
    if kind in ("post", "early"):
        body = json.dumps({"id": rid, "pad": "p" * (100_000 if kind == "early" else 10)})
        return (f"POST /r/{kind}/{rid} HTTP/1.1\r\nhost: h\r\nx-id: {rid}\r\n"
                f"content-length: {len(body)}\r\n\r\n{body}").encode()
    if kind == "chunked":
        body = json.dumps({"id": rid})
        return (f"POST /r/{kind}/{rid} HTTP/1.1\r\nhost: h\r\nx-id: {rid}\r\n"
                f"transfer-encoding: chunked\r\n\r\n{len(body):x}\r\n{body}\r\n0\r\n\r\n").encode()
    return (head + "\r\n").encode()


async def answer(r: asyncio.StreamReader, head_only: bool) -> tuple[int, bytes, bytes]:
    head = await asyncio.wait_for(r.readuntil(b"\r\n\r\n"), 20)
    status = int(head.split(b" ", 2)[1])
    if head_only:
        return status, head, b""
    if (m := re.search(rb"\r\ncontent-length: (\d+)", head, re.I)) is not None:
        return status, head, await r.readexactly(int(m.group(1)))
    body = b""
    while (size := int((await r.readuntil(b"\r\n")).split(b";")[0], 16)) != 0:
        body += await r.readexactly(size)
        await r.readexactly(2)
    await r.readuntil(b"\r\n")
    return status, head, body


def check(kind: str, rid: str, got: tuple[int, bytes, bytes]) -> None:
    status, head, body = got
    assert status == 200, (kind, rid, head)
    m = ID.search(head)
    assert m is not None and m.group(1).decode() == rid, (kind, rid, head)
    if kind != "head":
        echoed = json.loads(body)
        assert echoed["id"] == rid and rid in echoed["path"], (kind, rid, body[:200])
        if kind in ("post", "chunked"):
            assert rid in echoed["body"], (kind, rid, body[:200])


KINDS = ("post", "head", "hints", "early", "chunked", "get")


async def pipelined(port: int, tag: str, rounds: int) -> None:
    """Every kind at once on one connection, `rounds` times; each answer its own."""
    r, w = await asyncio.open_connection("127.0.0.1", port)
    try:
        for n in range(rounds):
            ids = [f"{tag}-{n}-{k}" for k in KINDS]
            w.write(b"".join(request(k, i) for k, i in zip(KINDS, ids, strict=True)))
            for k, i in zip(KINDS, ids, strict=True):
                check(k, i, await answer(r, k == "head"))
    finally:
        w.close()


async def one_by_one(port: int, tag: str, rounds: int) -> None:
    r, w = await asyncio.open_connection("127.0.0.1", port)
    try:
        for n in range(rounds):
            for k in KINDS:
                w.write(request(k, rid := f"{tag}-{n}-{k}"))
                check(k, rid, await answer(r, k == "head"))
    finally:
        w.close()


async def cut_mid_answer(port: int, tag: str, rounds: int) -> None:
    """A streamed answer's head and first bytes read, then the connection reset."""
    for n in range(rounds):
        r, w = await asyncio.open_connection("127.0.0.1", port)
        w.write(request("big", f"{tag}-{n}"))
        head = await asyncio.wait_for(r.readuntil(b"\r\n\r\n"), 20)
        assert f"x-id: {tag}-{n}".encode() in head, head
        await r.readexactly(2048)
        w.transport.abort()


@pytest.mark.parametrize("env", [{}, {"PYTHONDEVMODE": "1"}], ids=["plain", "devmode"])
async def test_every_answer_is_its_own_requests_while_objects_are_reused(
        tmp_path: Path, gateway_procs, session: ClientSession, env: dict[str, str]) -> None:
    backend = Backend()
    port = await backend.start()
    data = free_port()
    cfg = write_config(tmp_path, f"""\
        - name: r
          match: {{path_prefix: /r}}
          stable: v1
          versions:
            - {{name: v1, url: "http://127.0.0.1:{port}", weight: 100}}
        """, listen=f"127.0.0.1:{data}", admin=f"127.0.0.1:{free_port()}")
    g = gateway_procs(cfg, env=env)
    try:
        await asyncio.to_thread(g.wait_ready)
        await asyncio.gather(*(pipelined(data, f"p{c}", 15) for c in range(4)),
                             *(one_by_one(data, f"s{c}", 5) for c in range(2)),
                             cut_mid_answer(data, "cut", 10))
        # a kill cuts the one in flight; the next request on another connection is refused
        # by it, and after the unkill served as its own
        r, w = await asyncio.open_connection("127.0.0.1", data)
        w.write(request("hold", "held"))
        deadline = asyncio.get_running_loop().time() + 10
        while "held" not in backend.seen:
            assert asyncio.get_running_loop().time() < deadline, "the held request never came"
            await asyncio.sleep(0.01)
        await kill(session, g.admin, scope="route", route="r")
        status, head, _ = await answer(r, False)
        assert status == 503 and b"x-killgate-decision: killed" in head, head
        w.close()
        r2, w2 = await asyncio.open_connection("127.0.0.1", data)
        w2.write(request("get", "after-kill"))
        assert (await answer(r2, False))[0] == 503
        await unkill(session, g.admin, scope="route", route="r")
        for n in range(5):
            w2.write(request("post", rid := f"after-unkill-{n}"))
            check("post", rid, await answer(r2, False))
        w2.close()
        backend.release.set()
        # nothing left in flight: a kill now finds no request to cut (a flight left in the
        # in-flight set would be logged as one)
        before = g.output().count("inflight_aborted")
        await kill(session, g.admin, scope="route", route="r")
        await unkill(session, g.admin, scope="route", route="r")
        assert g.output().count("inflight_aborted") == before, g.output()[-2000:]
    finally:
        g.stop()
        await backend.stop()
