"""dataplane/protocol.py without sockets: random pipelines of requests (sized, chunked with
extensions and trailers, large, 100-continue, HTTP/1.0 kept alive, empty lines between),
fed in random pieces (1 byte to a few hundred KiB, so both the read path and the sliced
one), answered at once or later: every answer comes back, whole and in request order."""

from __future__ import annotations

import asyncio
import random

import pytest

from gateway.dataplane.protocol import Limits
from gateway.dataplane.request import Request
from tests.test_protocol import Recorder, answer, answers, connect, until

pytestmark = pytest.mark.timeout(30)

_LIMITS = Limits(header_timeout=5, keepalive_timeout=5, body_timeout=5, send_timeout=5)


def _request(rng: random.Random) -> tuple[bytes, bytes]:
    """A request's bytes, and the answer body the handler gives it."""
    kind = rng.choice(["get", "post", "chunked", "http10", "large", "expect", "empty"])
    path = b"/p%d" % rng.randrange(1000)
    if kind in ("get", "empty", "http10"):
        lead = b"\r\n" * rng.randrange(1, 3) if kind == "empty" else b""
        head = (b"GET " + path + b" HTTP/1.0\r\nConnection: keep-alive\r\n\r\n"
                if kind == "http10" else
                b"GET " + path + b" HTTP/1.1\r\nHost: x\r\nX-A: "
                + b"a" * rng.randrange(0, 3000) + b"\r\n\r\n")
        return lead + head, b"GET " + path + b" "
    if kind == "chunked":
        parts, body = [], b""
        for _ in range(rng.randrange(0, 6)):
            c = bytes(rng.choice(b"xyz") for _ in range(rng.randrange(1, 3000)))
            ext = b";e=%d" % rng.randrange(99) if rng.random() < 0.3 else b""
            parts.append(b"%x%s\r\n%s\r\n" % (len(c), ext, c))
            body += c
        trailer = b"T: 1\r\n" if rng.random() < 0.3 else b""
        return (b"POST " + path + b" HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n"
                + b"".join(parts) + b"0\r\n" + trailer + b"\r\n"), b"POST " + path + b" " + body
    if kind == "large":
        body = b"z" * rng.randrange(65537, 200000)
    else:
        body = bytes(rng.choice(b"abcdef") for _ in range(rng.randrange(0, 5000)))
    expect = b"Expect: 100-continue\r\n" if kind == "expect" else b""
    return (b"POST " + path + b" HTTP/1.1\r\nHost: x\r\n" + expect
            + b"Content-Length: %d\r\n\r\n" % len(body) + body), b"POST " + path + b" " + body


class Sometimes(Recorder):
    """Answers at once, or after reading the body as it streams and a short wait."""

    def __init__(self, rng: random.Random) -> None:
        super().__init__()
        self.rng = rng

    def handle(self, req: Request) -> None:
        self.seen.append(req)
        if req.body_done and self.rng.random() < 0.5:
            answer(req)
            return

        async def later() -> None:
            if self.rng.random() < 0.5:
                await asyncio.sleep(self.rng.random() * 0.003)
            body = req.body() if req.body_done else b"".join(
                [c async for c in req.rest(0, 1 << 22)])
            answer(req, req.method + b" " + req.target + b" " + body)

        asyncio.get_running_loop().create_task(later())


@pytest.mark.parametrize("seed", range(200))
async def test_random_pipelines_in_random_pieces_are_answered_in_order(seed: int) -> None:
    rng = random.Random(seed)
    reqs = [_request(rng) for _ in range(rng.randrange(1, 8))]
    data = b"".join(r for r, _ in reqs)
    h = Sometimes(rng)
    proto, tr, server = connect(h, limits=_LIMITS)
    i = 0
    while i < len(data):
        await until(lambda: not tr.paused)  # (the connection reads on once answers caught up)
        n = rng.choice([1, 7, 100, 4096, 5000, 70000, 300000])
        proto.data_received(data[i:i + n])
        i += n
        if rng.random() < 0.3:
            await asyncio.sleep(0)
    want = [w for _, w in reqs]

    def got() -> list[bytes]:
        return answers(bytes(tr.out).replace(b"HTTP/1.1 100 Continue\r\n\r\n", b""))

    await until(lambda: len(got()) >= len(want) or tr.closed)
    assert got() == want, (seed, server.counts)
    assert not tr.closed
