"""A chunked admin body whose framing turns bad after the handler began reading it
(revfront): answered 400 at once, the connection closed. aiohttp's parser refused the
bytes and queued its 400 behind the request in progress, whose body then never ended:
its handler waited out server.body_timeout (30 s by default) holding the connection, and
answered 408 "the request body did not arrive", which is not what happened."""

from __future__ import annotations

import asyncio
import json
import logging
from pathlib import Path
from typing import Any

import pytest

from tests.backends import echo_app
from tests.conftest import bearer, running_gateway, two_versions, wait_until, write_config

pytestmark = pytest.mark.timeout(60)

KILL = json.dumps({"scope": "version", "route": "iris", "version": "v2",
                   "reason": "bad chunk"}).encode()


async def test_a_chunk_framed_wrong_mid_body_is_answered_400_at_once(
        tmp_path: Path, backends: Any, caplog: pytest.LogCaptureFixture) -> None:
    p = await backends(echo_app("v1"))
    async with running_gateway(write_config(tmp_path, two_versions(p, p))) as g:
        port = g.gw.admin_addr[1]
        fields = {"Host": f"127.0.0.1:{port}", **bearer("killgate:admin"),
                  "Content-Type": "application/json", "Transfer-Encoding": "chunked"}
        head = ("POST /v1/kill HTTP/1.1\r\n" + "".join(f"{k}: {v}\r\n" for k, v in
                                                      fields.items()) + "\r\n").encode()
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        try:
            caplog.set_level(logging.DEBUG)
            # the head and a good first chunk: the handler reads and waits for more
            writer.write(head + b"%x\r\n%s\r\n" % (len(KILL), KILL))
            await writer.drain()
            await wait_until(lambda: g.gw._admin_runner.server.requests_count >= 1, 5)
            writer.write(b"ZZ\r\n\r\n")  # not a chunk size
            await writer.drain()
            out = b""
            async with asyncio.timeout(5):  # (server.body_timeout is 30 s)
                try:
                    while chunk := await reader.read(65536):
                        out += chunk
                except ConnectionResetError:
                    pass
        finally:
            writer.close()
        assert out.startswith(b"HTTP/1.1 400 "), out[:300]
        top, _, rest = out.partition(b"\r\n\r\n")
        length = int(top.lower().split(b"content-length:")[1].split(b"\r\n")[0])
        error = json.loads(rest[:length])["error"]
        assert error["type"] == "bad_request" and "chunk" in error["message"]
        assert not g.gw.holder.doc.kills  # (nothing applied from a body framed wrong)
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR]
