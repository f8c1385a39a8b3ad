"""An admin body whose Content-Length is over admin.max_body_size is refused 413 at once
(revfront), as one that arrives over it is: it was read until the cap's bytes came, so a
caller sending it slowly (or not at all, after its head) was held for server.body_timeout
and answered 408 "did not arrive", not "too large"."""

from __future__ import annotations

import asyncio
import json
import time
from pathlib import Path
from typing import Any

import pytest

from tests.backends import echo_app
from tests.conftest import bearer, running_gateway, two_versions, write_config
from tests.rawhttp import read_answer

pytestmark = pytest.mark.timeout(60)


async def test_a_body_declared_over_the_cap_is_refused_before_it_arrives(
        tmp_path: Path, backends: Any) -> None:
    p = await backends(echo_app("v1"))
    cfg = write_config(tmp_path, two_versions(p, p))
    cfg.write_text(cfg.read_text().replace("admin:\n", "admin:\n  max_body_size: 2048\n", 1))
    async with running_gateway(cfg) as g:
        port = g.gw.admin_addr[1]
        fields = {"Host": f"127.0.0.1:{port}", **bearer("killgate:admin"),
                  "Content-Type": "application/json", "Content-Length": "1000000"}
        for path in ("/v1/kill", "/v1/alerts/alertmanager"):
            reader, writer = await asyncio.open_connection("127.0.0.1", port)
            try:
                writer.write((f"POST {path} HTTP/1.1\r\n" + "".join(
                    f"{k}: {v}\r\n" for k, v in fields.items()) + "\r\n").encode()
                    + b'{"scope": "global", "reason": "')  # (and nothing more)
                await writer.drain()
                t0 = time.monotonic()
                status, _, body = await read_answer(reader, 5.0)  # (body_timeout: 30 s)
            finally:
                writer.close()
            assert status == 413, body
            assert json.loads(body)["error"]["type"] == "body_too_large"
            assert time.monotonic() - t0 < 5.0
        assert not g.gw.holder.doc.kills
