"""The fault proxy's cut holds (tests/faultproxy.py): the rig many state tests rely on.

A connection accepted just before `point()` and still connecting to the old target lived
on past the cut: in full CI runs (a busy test loop), test_drill_behind's "cut-off" instance
kept one link to the store, never went stale, applied the restore, and the drill it was
meant to fail passed (4 of 4 full runs at stop 36, never alone).
"""

from __future__ import annotations

import asyncio
import contextlib
import socket

import pytest

from tests.conftest import wait_until
from tests.faultproxy import Forwarder

pytestmark = pytest.mark.timeout(30)


def _syn_sent(port: int) -> bool:
    """Whether a connection to 127.0.0.1:`port` is in its handshake (SYN_SENT)."""
    with open("/proc/net/tcp") as f:
        rows = [line.split() for line in f.readlines()[1:]]
    return any(r[2] == f"0100007F:{port:04X}" and r[3] == "02" for r in rows)


async def _eof(reader: asyncio.StreamReader) -> bool:
    try:
        return await asyncio.wait_for(reader.read(1), 10) == b""
    except (ConnectionError, TimeoutError):
        return True


async def test_a_connection_still_connecting_at_the_cut_is_dropped() -> None:
    # a target whose accept queue is full: the forwarder's connection to it stays in its
    # handshake (the SYN is dropped and retried) until the queue is drained
    target = socket.socket()
    target.bind(("127.0.0.1", 0))
    target.listen(0)
    filler = socket.create_connection(target.getsockname())
    port = target.getsockname()[1]
    fwd = Forwarder(port)
    await fwd.start()
    writer: asyncio.StreamWriter | None = None
    try:
        reader, writer = await asyncio.open_connection("127.0.0.1", fwd.port)
        await wait_until(lambda: _syn_sent(port), 5, 0.01, "the forwarder connecting onwards")
        fwd.point(None)  # the cut, while that link connects to the old target
        target.setblocking(False)
        accepted: list[socket.socket] = []

        def drain() -> bool:  # (the old target takes it now: the handshake completes)
            with contextlib.suppress(BlockingIOError):
                accepted.append(target.accept()[0])
            return len(accepted) >= 2

        await wait_until(drain, 10, 0.05, "the old target accepting the forwarder's link")
        assert await _eof(reader), "a link made across the cut lived on"
        assert not fwd.pipes
        for s in accepted:
            s.close()
    finally:
        if writer is not None:
            writer.close()
        filler.close()
        target.close()
        await fwd.close()


async def test_after_a_cut_every_connection_is_dropped_as_it_comes() -> None:
    server = await asyncio.start_server(lambda r, w: w.close(), "127.0.0.1", 0)
    fwd = Forwarder(server.sockets[0].getsockname()[1])
    await fwd.start()
    try:
        fwd.point(None)
        reader, writer = await asyncio.open_connection("127.0.0.1", fwd.port)
        assert await _eof(reader)
        writer.close()
        assert not fwd.links
    finally:
        await fwd.close()
        server.close()
        await server.wait_closed()
