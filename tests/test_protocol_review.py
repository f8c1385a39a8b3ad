"""Review of the fast path's cuts (fast3): attacks on where a request begins, now that the
parser has no `on_message_begin`. Each failed before its fix (see the commit)."""

from __future__ import annotations

import asyncio

import pytest

from gateway.dataplane.protocol import Limits
from tests.test_protocol import GET, Recorder, answer, answers, connect, feed, until

pytestmark = pytest.mark.timeout(10)

_SLOW_IDLE = Limits(header_timeout=0.2, keepalive_timeout=30, body_timeout=5, send_timeout=30)


@pytest.mark.parametrize("before", [
    GET,                                                                  # no body
    b"POST /s HTTP/1.1\r\nHost: x\r\nContent-Length: 3\r\n\r\nabc",       # a sized body
    b"POST /c HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n0\r\n\r\n",
    b"POST /t HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n0\r\nX-T: 1\r\n\r\n",
])
@pytest.mark.parametrize("answer_now", [True, False])
@pytest.mark.parametrize("tail", [b"G", b"\r\nGE", b"GET "])
async def test_a_second_head_begun_in_the_read_that_ends_a_request_has_its_deadline(
        before: bytes, answer_now: bool, tail: bytes) -> None:
    """Slowloris: the first bytes of a second request (its method, not yet its target) in
    the read that ends the previous one, then nothing. The head's deadline is
    header_timeout from those bytes, not keepalive_timeout."""
    h = Recorder(answer_now=answer_now)
    proto, tr, _ = connect(h, limits=_SLOW_IDLE)
    loop = asyncio.get_running_loop()
    feed(proto, GET)
    answer(h.seen[0]) if not answer_now else None
    t0 = loop.time()
    feed(proto, before + tail)
    if not answer_now:
        answer(h.seen[1])
    await until(lambda: tr.aborted, timeout=2)
    assert loop.time() - t0 < 1.0
    assert len(answers(tr.out)) == 2
