"""revproto6's wake of a stalled upload (`Awaiting._send_body`), sans-I/O: a fake
transport and a real Exchange. A backend's early answer (or failure) that arrives as the
backend takes the body again (its `resume_writing` and its answer in the same turn of the
loop, before the send resumes) was missed: the send went back to waiting for the client's
next bytes with a fresh guard, and the events that would have woken it had come already.
A client whose upload had stalled then got 408 after body_timeout, not the answer."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import pytest

from gateway.dataplane.exchange import Exchange
from gateway.dataplane.upstream import Pool
from gateway.errors import UpstreamError

pytestmark = pytest.mark.timeout(10)


class SlowBackend(asyncio.Transport):
    """A backend slow to take the body: the first body write fills its socket."""

    def __init__(self) -> None:
        super().__init__()
        self.ex: Exchange | None = None
        self.writes = 0
        self.aborted = False

    def write(self, data: Any) -> None:
        self.writes += 1
        if self.writes == 2 and self.ex is not None:  # (the head, then the first piece)
            self.ex.pause_writing()

    def abort(self) -> None:
        self.aborted = True

    def close(self) -> None:
        self.aborted = True

    def pause_reading(self) -> None: ...

    def resume_reading(self) -> None: ...


def _stalled_client() -> tuple[AsyncIterator[bytes], Any]:
    """A body that sends one piece, then stalls; its wake yields b'' (as Request.rest)."""
    loop = asyncio.get_running_loop()
    waiting: list[asyncio.Future[None]] = []

    def wake() -> None:
        if waiting and not waiting[-1].done():
            waiting[-1].set_result(None)

    async def body() -> AsyncIterator[bytes]:
        yield b"x" * 1000
        while True:
            fut = loop.create_future()
            waiting.append(fut)
            await fut
            yield b""

    return body(), wake


@pytest.mark.parametrize("event", ["answer", "close"])
async def test_an_answer_that_comes_as_the_backend_takes_the_body_again_is_heard(
        event: str) -> None:
    loop = asyncio.get_running_loop()
    pool = Pool("http", "127.0.0.1", 9, 4, loop, set(), 8)
    ex = Exchange(pool)
    tr = SlowBackend()
    tr.ex = ex
    ex.connection_made(tr)
    pool.open = 1
    ex.begin(loop.time() + 5, 5, False)
    body, wake = _stalled_client()
    send = asyncio.ensure_future(ex.send(b"POST / HTTP/1.1\r\nHost: x\r\n"
                                         b"Transfer-Encoding: chunked\r\n\r\n", body, True, wake))
    for _ in range(50):  # until the send waits for the backend to take the body
        await asyncio.sleep(0)
        if ex in pool.waiting:
            break
    assert ex in pool.waiting and ex._write_paused
    # the backend takes the body and answers (or closes) in the same turn of the loop
    ex.resume_writing()
    if event == "answer":
        ex.data_received(b"HTTP/1.1 413 Payload Too Large\r\nContent-Length: 0\r\n\r\n")
    else:
        ex.connection_lost(None)
    try:
        await asyncio.wait_for(send, 1.0)
    except UpstreamError:
        assert event == "close"
    else:
        assert event == "answer" and ex.headers_done and ex.status == 413
