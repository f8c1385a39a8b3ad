"""dataplane/sse.py: cutting fed in every fragmentation, checked against the cutter it was
(a whole-buffer search on every read), and its cost linear in the bytes fed."""

from __future__ import annotations

import asyncio
import itertools
import os
import re
import time
from pathlib import Path

import pytest
from aiohttp import web
from hypothesis import given, settings
from hypothesis import strategies as st

from gateway.dataplane.sse import EVENT_CAP, EventCutter
from tests.conftest import serving_process, two_versions
from tests.rawhttp import request

_REF_BOUNDARY = re.compile(rb"(?:\r\n|\n|\r(?!\n))(?:\r\n|\n|\r)")


def _ref_last_boundary(data: bytes) -> int:
    if b"\r" not in data:
        i = data.rfind(b"\n\n")
        return i + 2 if i >= 0 else -1
    end = -1
    for m in _REF_BOUNDARY.finditer(data):
        end = m.end()
    return end


class RefCutter:
    """The cutter as it was: simple and quadratic (what is held is joined to each read and
    the whole searched again). The reference the linear one must agree with byte for byte."""

    def __init__(self, cap: int) -> None:
        self.cap, self.tail, self.mid_event = cap, b"", False

    def feed(self, data: bytes) -> bytes:
        data = self.tail + data
        cut = _ref_last_boundary(data)
        if cut < 0:
            if len(data) > self.cap:
                self.tail, self.mid_event = b"", True
                return data
            self.tail = data
            return b""
        self.tail, self.mid_event = data[cut:], False
        if len(self.tail) > self.cap:
            self.tail, self.mid_event = b"", True
            return data
        return data[:cut]

    def flush(self) -> bytes:
        tail, self.tail = self.tail, b""
        return tail


def _run(cutter: EventCutter | RefCutter, pieces: list[bytes]) -> list[tuple[bytes, bool, bytes]]:
    seen = [(cutter.feed(p), cutter.mid_event, cutter.tail) for p in pieces]
    return [*seen, (cutter.flush(), cutter.mid_event, cutter.tail)]


def _agree(pieces: list[bytes], cap: int) -> None:
    got, want = _run(EventCutter(cap), pieces), _run(RefCutter(cap), pieces)
    assert got == want, pieces
    assert b"".join(out for out, _, _ in got) == b"".join(pieces)
    assert all(len(tail) <= cap for _, _, tail in got)  # the hold-back stays capped


TRICKY = [
    b"data: a\r\n\r\n", b"data: a\r\r", b"data: a\n\n", b"data: a\r\n\n", b"data: a\n\r\n",
    b"data: a\r\n\r\ndata: b\r\n\r\n", b"a\r\r\r", b"a\n\n\n", b"a\n\n\n\n\nb", b"a\r\n\r\n\r\n",
    b"a\r\n\r\r\n\n", b"\r\n\r\n", b"\n\r", b"\r\n\r", b"x\ry\r\nz\n\r\nw", b"a\nb\rc\r\nd",
    b"id: 1\ndata: d\r\n\ndata: e\r", b"data: x\r\ndata: y\r\n", b"\r\r\n\n\r\r\n\r",
]
CAPS = [EVENT_CAP, 2, 3, 5, 8]


@pytest.mark.parametrize("stream", TRICKY)
def test_every_split_point_cuts_as_the_reference(stream: bytes) -> None:
    for cap in CAPS:
        for i in range(len(stream) + 1):
            _agree([stream[:i], stream[i:]], cap)
        for i, j in itertools.combinations(range(len(stream) + 1), 2):
            _agree([stream[:i], stream[i:j], stream[j:]], cap)
        _agree([stream[k:k + 1] for k in range(len(stream))], cap)


@pytest.mark.parametrize("before, after", [
    (b"data: a\r", b"\n\r\n"), (b"data: a\r\n\r", b"\ndata: b\n\n"), (b"data: a\r", b"\r"),
    (b"data: a\r", b"\n"), (b"data: a\n", b"\r\n"), (b"data: a\r\n", b"\r"),
    (b"data: a\r\n\r", b"\n"),
])
def test_a_cr_and_lf_split_across_reads(before: bytes, after: bytes) -> None:
    """A CRLF cut in two by the reads is one line end, as when it comes whole."""
    for prefix in (b"", b"data: held\r\n", b"x" * 100):
        for cap in CAPS:
            _agree([prefix + before, after], cap)
            _agree([prefix, before, after, b"data: z\r\n\r\n"], cap)


_STREAMS = st.lists(st.sampled_from([b"\r", b"\n", b"\r\n", b"a", b"data: x", b":"]),
                    max_size=40).map(b"".join)


@given(_STREAMS, st.lists(st.integers(0, 12), max_size=20), st.sampled_from(CAPS))
@settings(max_examples=1500, derandomize=True, database=None, deadline=None)
def test_random_streams_in_random_reads_cut_as_the_reference(
        stream: bytes, sizes: list[int], cap: int) -> None:
    pieces, at = [], 0
    for n in sizes:
        pieces.append(stream[at:at + n])
        at += n
    pieces.append(stream[at:])
    _agree(pieces, cap)


@pytest.mark.timeout(60)
@pytest.mark.parametrize("line", [b"data: token-token\r\n", b"data: token-token\n",
                                  b"data: token-token\r"])
def test_a_long_event_in_tiny_reads_costs_linear_cpu(line: bytes) -> None:
    """One event of nearly EVENT_CAP in 11-byte reads: 17-27 s of CPU when every read
    searched all that was held; tens of milliseconds now."""
    stream = line * ((EVENT_CAP - 1024) // len(line)) + line[-1:]
    cutter = EventCutter()
    start = time.process_time()
    out = [cutter.feed(stream[i:i + 11]) for i in range(0, len(stream), 11)]
    took = time.process_time() - start
    assert b"".join(out) == stream and not cutter.mid_event and cutter.tail == b""
    assert took < 1.0, f"{took:.2f} s of CPU to cut one {len(stream)}-byte event"


# ----------------------------------------------------------------- end to end

_LINE = b"data: token-token\r\n"  # CRLF line ends (WHATWG allows CRLF, LF or CR)
_PER_WRITE = 8
_EVENT = 256 * 1024  # the cutter's hold-back cap (sse.EVENT_CAP)


def one_long_event() -> web.Application:
    """An SSE backend that streams one multi-line event of ~256 KiB, a few lines per write
    (as a model server writes tokens), then its blank line."""

    async def handler(req: web.Request) -> web.StreamResponse:
        resp = web.StreamResponse(headers={"content-type": "text/event-stream"})
        await resp.prepare(req)
        sent = 0
        while sent < _EVENT - 1024:
            await resp.write(_LINE * _PER_WRITE)
            sent += len(_LINE) * _PER_WRITE
            await asyncio.sleep(0.001)
        await resp.write(b"\r\n")
        await resp.write_eof()
        return resp

    app = web.Application()
    app.router.add_get("/v2/models/iris/stream", handler)
    return app


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


@pytest.mark.timeout(90)
async def test_a_long_event_in_small_writes_costs_linear_cpu(
        tmp_path: Path, backends, gateway_procs) -> None:
    """Each read of an event not yet whole was joined to what is held (`tail + data`) and
    the whole of it searched again for a blank line (`last_boundary`: a regex `finditer`
    when it holds a CR), so an event that arrives in n reads cost O(n^2): one 256 KiB
    event with CRLF lines in 150-byte writes cost the gateway seconds of CPU on its event
    loop (27 s in 11-byte reads, measured on sse.EventCutter alone), for 256 KiB forwarded.
    Expected: about what forwarding 256 KiB costs (well under half a second)."""
    port = await backends(one_long_event())
    gw, data = await serving_process(gateway_procs, tmp_path, two_versions(port, port, 100, 0))
    try:
        before = cpu_seconds(gw.proc.pid)
        reader, writer = await asyncio.open_connection("127.0.0.1", data)
        writer.write(request("GET", "/v2/models/iris/stream"))
        got = await asyncio.wait_for(reader.read(), 60)
        writer.close()
        spent = cpu_seconds(gw.proc.pid) - before
        assert got.startswith(b"HTTP/1.1 200") and got.count(b"token-token") > 10_000
        assert spent < 0.5, f"the gateway spent {spent:.1f} s of CPU on one 256 KiB event"
    finally:
        gw.stop()
