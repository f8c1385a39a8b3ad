"""A Location naming the backend's own URL whose path holds a space, "|", braces or raw
UTF-8 (a trailing-slash redirect built from a decoded path: /caf%C3%A9, /a%20b) is made
relative: a path that begins with one "/" stays on the gateway's host whatever follows. A
whitelist first used for the check passed them as they came, naming the backend. (From a
sixth hostile review.)"""

from __future__ import annotations

from pathlib import Path
from urllib.parse import urljoin, urlsplit

import pytest
from aiohttp import ClientSession, web

from tests.conftest import running_gateway, write_config
from tests.test_backend_redirects_edge_cases import _located

pytestmark = pytest.mark.timeout(10)


@pytest.mark.parametrize("value", [
    b"http://127.0.0.1:9/a b/",
    b"http://127.0.0.1:9/a|b/",
    b"http://127.0.0.1:9/caf\xc3\xa9/",
    b"http://127.0.0.1:9/x{1}/",
])
async def test_own_url_with_a_safe_path_byte_is_made_relative(value: bytes) -> None:
    got = await _located(value, b"")
    assert not got.startswith(b"http://127.0.0.1:9"), got
    # and what it was made is on the gateway's own host
    joined = urljoin("http://gateway.example/some/path", got.decode("latin-1"))
    assert urlsplit(joined).netloc == "gateway.example"


@pytest.mark.parametrize("path", ["/caf%C3%A9", "/a%20b", "/a%7Cb"])
async def test_end_to_end_trailing_slash_redirect_leaks_the_backend_address(
        tmp_path: Path, backends, path: str) -> None:
    """A backend adding a slash from its decoded path (aiohttp's `req.path`, as in
    test_backend_redirects_controls.py): its Location names its own host, built from the
    Host the gateway sent, and the client gets the backend's address."""
    async def handler(req: web.Request) -> web.StreamResponse:
        if not req.path.endswith("/"):
            return web.Response(status=307,
                                headers={"Location": f"http://{req.host}{req.path}/"})
        return web.json_response({"ok": True})

    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", handler)
    port = await backends(app)
    routes = f"""\
        - name: all
          match: {{path_prefix: /}}
          stable: v1
          versions:
            - {{name: v1, url: "http://127.0.0.1:{port}"}}
        """
    cfg = write_config(tmp_path, routes)
    async with running_gateway(cfg) as g, ClientSession() as session:
        resp = await session.get(g.url + path, allow_redirects=False)
        raw = dict(resp.raw_headers).get(b"Location", b"")
        status = resp.status
        resp.release()
    assert status == 307, (status, raw)
    assert f"127.0.0.1:{port}".encode() not in raw, raw
