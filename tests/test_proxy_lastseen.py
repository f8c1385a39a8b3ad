"""A connection's last target and Host (`Connection.last_target`, `last_host`: compared
before the proxy's caches are asked, `Proxy.handle`), over real sockets: one kept-alive
client connection whose requests change target, Host (or send none, in HTTP/1.0) and come
back to earlier ones, each routed by its own path and Host and forwarded with its own
target; a target or Host refused in between (400) leaves the next request routed as its own."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import pytest

from tests.backends import echo_app
from tests.conftest import admin_token, running_gateway, write_config
from tests.rawhttp import read_answer

pytestmark = pytest.mark.timeout(30)


async def test_each_request_on_a_connection_is_routed_by_its_own_target_and_host(
        tmp_path: Path, backends) -> None:
    a, b, c = [await backends(echo_app(n)) for n in ("a", "b", "c")]
    routes = "".join(
        f"- name: {name}\n  match: {{path_prefix: {prefix}{host}}}\n  stable: v1\n"
        f"  versions:\n    - {{name: v1, url: 'http://127.0.0.1:{port}', weight: 100}}\n"
        for name, prefix, host, port in (
            ("hosted", "/a", ", host: b.example", b), ("a", "/a", "", a),
            ("c", "/c", "", c)))
    cfg = write_config(tmp_path, routes)
    # (target, Host or None for HTTP/1.0 without one) -> the backend that must answer
    asks = [("/a/1?x=1", b"a.example", "a"), ("/a/1?x=1", b"a.example", "a"),
            ("/a/1?x=1", b"b.example", "hosted"), ("/c/2", b"b.example", "c"),
            ("/a/1?x=1", None, "a"), ("/a/1?x=1", b"B.Example", "hosted"),
            ("/a/%2e%2e/1", b"b.example", 400), ("/a/1?x=1", b"b.example", "hosted"),
            ("/a/1?x=1", b"a@b.example", 400), ("/a/1?x=1", b"b.example", "hosted"),
            ("/c/2", b"b.example", "c"), ("/a/%7e", b"a.example", "a"),
            ("/a/1?x=1", b"a.example", "a")]
    async with running_gateway(cfg) as g:
        reader, writer = await asyncio.open_connection("127.0.0.1", g.gw.data_addr[1])
        try:
            for target, host, want in asks:
                if host is None:
                    writer.write(b"GET %s HTTP/1.0\r\nConnection: keep-alive\r\n\r\n"
                                 % target.encode())
                else:
                    writer.write(b"GET %s HTTP/1.1\r\nHost: %s\r\n\r\n" % (target.encode(),
                                                                        host))
                status, headers, body = await read_answer(reader)
                if want == 400:
                    assert status == 400, (target, body)
                    continue
                assert status == 200, (target, host, body)
                assert headers["x-killgate-route"] == want, (target, host)
                echoed = json.loads(body)
                assert echoed["path"] == target, (target, host)
                fields = {k.lower(): v for k, v in echoed["headers"]}
                assert fields.get("x-forwarded-host") == (host and host.decode()), host
        finally:
            writer.close()
            await writer.wait_closed()


async def test_a_kill_reaches_every_later_request_of_a_connection(tmp_path: Path, backends,
                                                                  session) -> None:
    """The last (path, Host) pair's route is found again by `is` (`Proxy._route`,
    `LastMatch`): a kill makes a new table, and every request after it on the same
    connection and the same target is answered by it (503), the second as the first; an
    unkill brings the route back."""
    port = await backends(echo_app("v1"))
    cfg = write_config(tmp_path, "- name: r\n  match: {path_prefix: /r}\n  stable: v1\n"
                       f"  versions:\n    - {{name: v1, url: 'http://127.0.0.1:{port}', "
                       "weight: 100}\n")
    auth = {"Authorization": f"Bearer {admin_token('killgate:kill killgate:read')}"}
    async with running_gateway(cfg) as g:
        reader, writer = await asyncio.open_connection("127.0.0.1", g.gw.data_addr[1])

        async def ask() -> int:
            writer.write(b"GET /r/x HTTP/1.1\r\nHost: h.example\r\n\r\n")
            return (await read_answer(reader))[0]

        try:
            assert [await ask() for _ in range(3)] == [200, 200, 200]
            async with session.post(f"{g.admin}/v1/kill", headers=auth,
                                    json={"scope": "route", "route": "r", "reason": "t"}) as r:
                assert r.status == 200, await r.text()
            assert [await ask() for _ in range(3)] == [503, 503, 503]
            async with session.post(f"{g.admin}/v1/unkill", headers=auth,
                                    json={"scope": "route", "route": "r", "reason": "t"}) as r:
                assert r.status == 200, await r.text()
            assert [await ask() for _ in range(3)] == [200, 200, 200]
        finally:
            writer.close()
            await writer.wait_closed()
