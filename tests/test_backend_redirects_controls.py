"""A Location naming the backend's own URL with a tab or line break after it is not made
relative: URL parsers drop those anywhere, so "/\\t/evil.example/" would read as
"//evil.example/" (an open redirect the rewrite created). And the backend's own URL on
http:443 or https:80 is recognised: the Host the gateway sends names that port now (RFC 9110
§7.2). (From a fifth hostile review.)"""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest
from aiohttp import ClientSession, web

from gateway.dataplane.upstream import Pool
from tests.conftest import running_gateway, write_config
from tests.test_backend_redirects_edge_cases import _located

pytestmark = pytest.mark.timeout(10)


def _browser_view(path: bytes) -> bytes:
    """What a browser parses: ASCII tab, LF and CR removed anywhere in the URL."""
    return path.replace(b"\t", b"").replace(b"\n", b"").replace(b"\r", b"")


@pytest.mark.parametrize("value, base", [
    (b"http://127.0.0.1:9/base/\t/evil.example/", b"/base"),
    (b"http://127.0.0.1:9/\t/evil.example/", b""),
    (b"http://127.0.0.1:9/\t\\evil.example/", b""),
    (b"http://127.0.0.1:9/\t\t/evil.example/", b""),
])
async def test_rewritten_location_with_tab_never_names_another_host(
        value: bytes, base: bytes) -> None:
    """`http://backend/\\t/evil` is a path on the backend (the browser reads
    `http://backend//evil`); rewritten to `/\\t/evil`, the browser reads `//evil`:
    a network-path reference to another site, an open redirect the backend never made."""
    got = await _located(value, base)
    assert not _browser_view(got).startswith((b"//", b"/\\")), got


@pytest.mark.parametrize("scheme, port", [("http", 443), ("https", 80)])
async def test_own_url_from_the_host_we_send_is_made_relative(scheme: str, port: int) -> None:
    """The pool sends `Host: 127.0.0.1` (no port) for http on 443 and https on 80, so a
    backend's trailing-slash redirect is `scheme://127.0.0.1/x`: its own address, built
    from the Host the gateway sent, yet it is not in `origins` and leaks to the client
    (and names the wrong port)."""
    p = Pool(scheme, "127.0.0.1", port, 4, asyncio.get_running_loop(), set(), 8)
    own = scheme.encode() + b"://" + p.host_header + b"/x"
    assert await _located(own, b"", p) == b"/x"


async def test_end_to_end_tab_redirect_sends_the_client_to_another_host(
        tmp_path: Path, backends) -> None:
    """End to end: a version under a base path, a backend that redirects to add a slash
    from its decoded path (aiohttp's `req.path`). The client asks for `/%09/evil.example`;
    the backend answers `Location: http://127.0.0.1:P/base/\\t/evil.example/` (its own
    host); the gateway forwards `/\\t/evil.example/`, which a browser follows to
    http://evil.example/ (the URL parser strips the tab)."""
    async def handler(req: web.Request) -> web.StreamResponse:
        if not req.path.endswith("/"):
            # (set raw: aiohttp's redirect exceptions pass the URL through yarl)
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
            - {{name: v1, url: "http://127.0.0.1:{port}/base"}}
        """
    cfg = write_config(tmp_path, routes)
    async with running_gateway(cfg) as g, ClientSession() as session:
        resp = await session.get(g.url + "/%09/evil.example", allow_redirects=False)
        location = resp.headers.get("location", "")
        status = resp.status
        resp.release()
    assert status == 307, (status, location)
    got = _browser_view(location.encode("latin-1"))
    assert not got.startswith((b"//", b"/\\")), location
