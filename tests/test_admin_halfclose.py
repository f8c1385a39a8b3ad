"""A client that closes its sending side once its request is sent (`printf ... | nc -N`,
`socat`, a script's `shutdown(SHUT_WR)`): the admin listener answers the request it took
whole, then closes (revfront). aiohttp's protocol closed the transport at the client's
FIN: the kill was applied and its answer lost, so the operator could not tell a kill made
from one refused. A request cut off by the FIN (its head or body incomplete) can never be
answered in full: its connection is closed at once, as before, not held."""

from __future__ import annotations

import asyncio
import json
import time
from pathlib import Path
from typing import Any

import pytest

from tests.backends import echo_app
from tests.conftest import bearer, running_gateway, two_versions, write_config

pytestmark = pytest.mark.timeout(60)

KILL = json.dumps({"scope": "version", "route": "iris", "version": "v2",
                   "reason": "half-close"}).encode()


def _head(port: int, path: str, length: int, extra: str = "") -> bytes:
    fields = {"Host": f"127.0.0.1:{port}", **bearer("killgate:admin"),
              "Content-Type": "application/json", "Content-Length": str(length)}
    return (f"POST {path} HTTP/1.1\r\n" + "".join(f"{k}: {v}\r\n" for k, v in fields.items())
            + extra + "\r\n").encode()


async def _sent_then_shut(port: int, data: bytes, timeout: float = 10.0) -> tuple[bytes, float]:
    """`data` sent, our side shut (FIN), and all the server sent until it closed, with how
    long that took."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        writer.write(data)
        await writer.drain()
        writer.write_eof()
        t0 = time.monotonic()
        out = b""
        async with asyncio.timeout(timeout):
            try:
                while chunk := await reader.read(65536):
                    out += chunk
            except ConnectionResetError:
                out += b"<reset>"
        return out, time.monotonic() - t0
    finally:
        writer.close()


async def test_a_request_sent_whole_before_the_fin_is_answered(
        tmp_path: Path, backends: Any) -> None:
    p = await backends(echo_app("v1"))
    async with running_gateway(write_config(tmp_path, two_versions(p, p))) as g:
        port = g.gw.admin_addr[1]
        out, _ = await _sent_then_shut(port, _head(port, "/v1/kill", len(KILL)) + KILL)
        assert out.startswith(b"HTTP/1.1 200 "), out[:200]
        answer = json.loads(out.partition(b"\r\n\r\n")[2])
        assert answer["kill"] == "version:iris:v2" and answer["changed"] is True
        # two pipelined before the FIN: both answered, then the connection closed
        two = _head(port, "/v1/unkill", len(KILL)) + KILL + _head(port, "/v1/kill", len(KILL)) \
            + KILL
        out, _ = await _sent_then_shut(port, two)
        assert out.count(b"HTTP/1.1 200 ") == 2, out[:400]
        assert g.gw.holder.doc.kills  # (the second, a kill again, in force)
        # one sent whole and the start of another's head: the whole one answered
        part = _head(port, "/v1/unkill", len(KILL)) + KILL + b"POST /v1/kill HTTP/1.1\r\nHo"
        out, _ = await _sent_then_shut(port, part)
        assert out.count(b"HTTP/1.1 200 ") == 1 and b'"unkill"' in out, out[:400]
        assert not g.gw.holder.doc.kills


async def test_a_request_cut_off_by_the_fin_is_closed_at_once(
        tmp_path: Path, backends: Any) -> None:
    p = await backends(echo_app("v1"))
    async with running_gateway(write_config(tmp_path, two_versions(p, p))) as g:
        port = g.gw.admin_addr[1]
        for data in (_head(port, "/v1/kill", len(KILL)) + KILL[:10],  # a body cut off
                     _head(port, "/v1/kill", len(KILL))[:40],  # a head cut off
                     b""):  # nothing sent
            out, took = await _sent_then_shut(port, data)
            assert took < 5.0 and b" 200 " not in out, (data[:60], out[:200], took)
        assert not g.gw.holder.doc.kills
