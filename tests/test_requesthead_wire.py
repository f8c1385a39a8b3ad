"""The backend's head end to end (impperf4's head from the fields the parser sorted, and the
x-forwarded-* lines each connection remembers for its last Host): a real gateway, a raw
client that pipelines hostile heads on one connection in small TCP writes (odd case,
repeated and Connection-named fields, prefixes of dropped names, a Host change between
requests, HTTP/1.0), and a raw backend that records the bytes it is sent. Each head must be
the one the pass over all the fields builds (`requesthead.request_head`, whose rules are
test_requesthead.py's): nothing the old pass dropped reaches the backend, nothing it kept is
lost, and no request carries another's forwarded lines."""

from __future__ import annotations

import asyncio
import random
from pathlib import Path

import pytest

from gateway.dataplane.requesthead import request_head
from tests.backends import RawServer
from tests.conftest import running_gateway, two_versions, write_config

_NAMES = [b"connection", b"keep-alive", b"proxy-connection", b"te", b"trailer", b"expect",
          b"proxy-authorization", b"x-forwarded-for", b"x-forwarded-proto", b"x-forwarded-host",
          b"x-forwarded-port", b"x-forwarded", b"x-forwarde", b"forwarded", b"x-real-ip",
          b"x-real-ip2", b"x-killgate-route", b"x-killgate-decision", b"x-killgate",
          b"x-killgatex", b"via", b"vias", b"traceparent", b"tracestate", b"accept", b"cookie",
          b"connectio", b"connections", b"x-custom", b"x!#$%&'*+.^`|~"]
_VALUES = [b"x", b"", b"keep-alive", b"X-Forwarded-For", b"x-killgate-route, accept",
           b"te, cookie", b"1.0 edge", b" accept ,x-custom", b"\xff\xfe", b"x-custom"]


def _spell(rng: random.Random, name: bytes) -> bytes:
    return bytes(c ^ 32 if 97 <= c <= 122 and rng.random() < 0.4 else c for c in name)


def _request(rng: random.Random, i: int) -> tuple[bytes, list[tuple[bytes, bytes]], bytes | None]:
    """A request's bytes, its fields as the gateway reads them, and its Host."""
    http10 = rng.random() < 0.2
    host = None if http10 and rng.random() < 0.5 else rng.choice([b"a.example", b"b.example",
                                                                  b"c.example:8080"])
    fields = [] if host is None else [(_spell(rng, b"host"), host)]
    for _ in range(rng.choice([0, 2, 6, 30, 110])):
        name = _spell(rng, rng.choice(_NAMES))
        value = b"100-continue" if name.lower() == b"expect" else rng.choice(_VALUES)
        fields.append((name, value))
    if http10:  # (its answer must keep the connection open for the next request)
        fields.append((b"Connection", b"keep-alive"))
    fields.append((b"X-Seq", b"%d" % i))
    rng.shuffle(fields)
    fields.append((b"Content-Length", b"3"))
    head = b"POST /v2/models/iris/x HTTP/1.%d\r\n" % (0 if http10 else 1)
    head += b"".join(n + rng.choice([b": ", b":", b":\t"]) + v + rng.choice([b"", b" "]) +
                     b"\r\n" for n, v in fields)
    return head + b"\r\nabc", fields, host


class _Recording(RawServer):
    """Records each request head it is sent (keep-alive; bodies by Content-Length)."""

    keep_open = True

    def __init__(self) -> None:
        super().__init__()
        self.heads: list[bytes] = []

    async def serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        while True:
            head = await reader.readuntil(b"\r\n\r\n")
            self.heads.append(head)
            length = [int(line.split(b":", 1)[1]) for line in head.split(b"\r\n")
                      if line.lower().startswith(b"content-length:")]
            await reader.readexactly(length[0] if length else 0)
            writer.write(b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok")
            await writer.drain()


def _fields_after_host(head: bytes) -> list[bytes]:
    """A backend head's lines after its request line and our Host, framing left out."""
    lines = head.split(b"\r\n")[2:]
    return [ln for ln in lines if ln and not ln.lower().startswith(
        (b"content-length:", b"transfer-encoding:"))]


@pytest.mark.timeout(30)
@pytest.mark.parametrize("seed", range(3))
async def test_pipelined_hostile_heads_reach_the_backend_as_the_whole_pass_builds_them(
        tmp_path: Path, seed: int) -> None:
    rng = random.Random(seed)
    backend = _Recording()
    port = await backend.start()
    try:
        cfg = write_config(tmp_path, two_versions(port, port, 100, 0))
        async with running_gateway(cfg) as g:
            reader, writer = await asyncio.open_connection("127.0.0.1", g.gw.data_addr[1])
            sent = [_request(rng, i) for i in range(12)]
            data = b"".join(raw for raw, _, _ in sent)
            at = 0
            while at < len(data):  # (in small writes: fields split across segments)
                step = rng.choice([1, 2, 5, 40, 300])
                writer.write(data[at:at + step])
                await writer.drain()
                at += step
            out = b""
            loop = asyncio.get_running_loop()
            end = loop.time() + 10
            while out.count(b"HTTP/1.1 ") < len(sent):
                assert loop.time() < end, out[-400:]
                out += await asyncio.wait_for(reader.read(65536), end - loop.time())
            writer.close()
            assert out.count(b"HTTP/1.1 200 ") == len(sent), out[:600]
        assert len(backend.heads) == len(sent)
        for i, (head, (_, fields, host)) in enumerate(zip(backend.heads, sent, strict=True)):
            assert b"X-Seq: %d\r\n" % i in head  # (in order, one backend head each)
            fwd = b"x-forwarded-for: 127.0.0.1\r\nx-forwarded-proto: http\r\n"
            if host:
                fwd += b"x-forwarded-host: %s\r\n" % host
            want = request_head(b"", [(n, v.strip(b" \t")) for n, v in fields], fwd, 0)
            assert _fields_after_host(head) == _fields_after_host(b"L\r\nH\r\n" + want), (
                seed, i, head)
    finally:
        await backend.stop()
