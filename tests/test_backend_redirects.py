"""A URL the backend built from the Host the gateway sends it (its own address: a
trailing-slash redirect, say) in `Location` or `Content-Location`: made relative, the
version's base path taken out, as nginx's `proxy_redirect default` does, so the client
follows it to the gateway and never learns the backend's address; never into a path another
host could be read from (`//host`, `/\\host`, a tab or line break that URL parsers drop);
at a cost linear in the value; the base path recognised however the backend spells its
percent-escapes. From the second to the sixth hostile reviews."""

from __future__ import annotations

import asyncio
import textwrap
import time
from pathlib import Path
from urllib.parse import urljoin, urlsplit

import pytest
from aiohttp import ClientSession, web

from gateway.dataplane.upstream import Pool
from tests.conftest import running_gateway, two_versions, write_config
from tests.test_upstream import exchange, feed

pytestmark = pytest.mark.timeout(30)


def slash_redirect_app() -> web.Application:
    async def handler(req: web.Request) -> web.StreamResponse:
        if not req.path.endswith("/"):  # (Starlette's redirect_slashes, from request.url)
            raise web.HTTPTemporaryRedirect(f"http://{req.host}{req.path}/")
        return web.json_response({"ok": True})

    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", handler)
    return app


def decoded_slash_redirect_app() -> web.Application:
    """A backend adding a slash from its decoded path (aiohttp's `req.path`), its Location
    set raw (aiohttp's redirect exceptions pass the URL through yarl)."""
    async def handler(req: web.Request) -> web.StreamResponse:
        if not req.path.endswith("/"):
            return web.Response(status=307,
                                headers={"Location": f"http://{req.host}{req.path}/"})
        return web.json_response({"ok": True})

    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", handler)
    return app


def _everything_to(url: str) -> str:
    """One route, every path, one version at `url`."""
    return f"""\
        - name: all
          match: {{path_prefix: /}}
          stable: v1
          versions:
            - {{name: v1, url: "{url}"}}
        """


async def test_a_backend_redirect_does_not_name_the_backend_address(
        tmp_path: Path, backends) -> None:
    port = await backends(slash_redirect_app())
    cfg = write_config(tmp_path, two_versions(port, port, 100, 0))
    async with running_gateway(cfg) as g, ClientSession() as session:
        resp = await session.get(g.url + "/v2/models/iris", allow_redirects=False,
                                 headers={"Host": "models.example.com"})
        location = resp.headers.get("location", "")
        status = resp.status
        resp.release()
    assert status == 307
    assert location == "/v2/models/iris/", (
        f"the client was sent to the backend's own address: Location: {location}")


async def _located(value: bytes, base: bytes, p: Pool | None = None) -> bytes:
    ex, _ = exchange(p)
    ex.begin(asyncio.get_running_loop().time() + 5, 5, False, base)
    await ex.send(b"GET " + (base or b"/") + b" HTTP/1.1\r\n\r\n", None)
    feed(ex, b"HTTP/1.1 307 Temporary Redirect\r\nLocation: " + value
         + b"\r\nContent-Length: 0\r\n\r\n", 0)
    await ex.read_head()
    assert ex.headers[0][0] == b"Location"
    return ex.headers[0][1]


@pytest.mark.parametrize("value, base", [
    # a trailing-slash redirect for the client path `//evil.example` (sent on as
    # `/base//evil.example`): same host on the backend, another site at the client
    (b"http://127.0.0.1:9/base//evil.example/", b"/base"),
    (b"http://127.0.0.1:9/base/\\evil.example/", b"/base"),  # browsers read `/\` as `//`
    (b"http://127.0.0.1:9//evil.example/", b""),
])
async def test_rewritten_location_never_names_another_host(
        value: bytes, base: bytes) -> None:
    """A URL on the backend's own host must not become a network-path reference
    (`//host/...`, or `/\\host` which browsers treat alike) that sends the client elsewhere:
    an open redirect the backend never made."""
    got = await _located(value, base)
    assert not got.startswith((b"//", b"/\\")), got


async def test_explicit_default_port_is_the_backends_own_address() -> None:
    """A pool on port 80 sends `Host: 127.0.0.1`; a backend that writes the port anyway
    (`http://127.0.0.1:80/x`) names its own address all the same, and should be made
    relative like `http://127.0.0.1/x` is."""
    p = Pool("http", "127.0.0.1", 80, 4, asyncio.get_running_loop(), set(), 8)
    assert await _located(b"http://127.0.0.1/x", b"", p) == b"/x"  # (what works)
    assert await _located(b"http://127.0.0.1:80/x", b"", p) == b"/x"


async def test_location_with_trailing_whitespace_is_made_relative() -> None:
    """HTTP field values carry no trailing whitespace (RFC 9110 §5.5: OWS is not part of
    the value), but httptools hands it over: `http://host/base  ` names the backend all
    the same, and leaks its address to the client."""
    assert await _located(b"http://127.0.0.1:9/base  ", b"/base") == b"/"


@pytest.mark.parametrize("value, base, relative", [
    (b"http://127.0.0.1:9/api%2Dv1/x", b"/api-v1", b"/x"),  # an unreserved byte escaped
    (b"http://127.0.0.1:9/api-v1/x", b"/api%2dv1", b"/x"),  # ... in the version's URL
    (b"http://127.0.0.1:9/m%c3%a9/x", b"/m%C3%A9", b"/x"),  # hex digits in lower case
    (b"http://127.0.0.1:9/a%7ev1", b"/a~v1", b"/"),
])
async def test_base_path_spelled_with_other_escapes_is_the_backends_own_address(
        value: bytes, base: bytes, relative: bytes) -> None:
    """RFC 3986 §6.2.2: `%2D` is `-` and `%c3` is `%C3`. A backend that escapes its base
    path otherwise than the version's URL does still names its own address, which must
    not reach the client."""
    assert await _located(value, base) == relative


@pytest.mark.parametrize("value, base", [
    (b"http://127.0.0.1:9/api%2Fv1/x", b"/api/v1"),  # an escaped "/" is not a "/"
    (b"http://127.0.0.1:9/bas%65//evil.example/", b"/base"),
    (b"http://127.0.0.1:9/base%2F%2Fevil.example/", b"/base"),
    (b"http://127.0.0.1:9/ba%6", b"/bas"),  # an escape cut short
    (b"http://127.0.0.1:9/b", b"/base"),
])
async def test_escapes_never_make_another_path_or_host(value: bytes, base: bytes) -> None:
    """Only escapes RFC 3986 calls equivalent are equal: an escaped `/` is another path,
    and a base path matched through escapes still never becomes `//host`; such URLs pass
    as they came."""
    assert await _located(value, base) == value


async def test_ipv6_default_port_left_out_is_the_backends_own_address() -> None:
    """The IPv6 pool always writes the port (`Host: [::1]:80`); a backend that normalises
    the default port away (`http://[::1]/x`, as URL builders do) names its own address,
    which is forwarded to the client as it came."""
    p = Pool("http", "::1", 80, 4, asyncio.get_running_loop(), set(), 8)
    assert await _located(b"http://[::1]:80/x", b"", p) == b"/x"  # (what works)
    assert await _located(b"http://[::1]/x", b"", p) == b"/x"


async def test_a_redirect_from_a_version_with_a_base_path_is_followable(
        tmp_path: Path, backends) -> None:
    port = await backends(slash_redirect_app())
    cfg = write_config(tmp_path, textwrap.dedent(f"""\
        - name: iris
          match: {{path_prefix: /v2/models/iris}}
          stable: v1
          versions:
            - {{name: v1, url: "http://127.0.0.1:{port}/base", weight: 100}}
        """))
    async with running_gateway(cfg) as g, ClientSession() as session:
        resp = await session.get(g.url + "/v2/models/iris", allow_redirects=False)
        location = resp.headers.get("location", "")
        resp.release()
        assert resp.status == 307
        # the client follows the relative Location to the gateway
        async with session.get(g.url + location, allow_redirects=False) as followed:
            followed_status = followed.status
            body = await followed.text()
    assert followed_status == 200, (
        f"Location: {location} (the backend's base path left in) -> "
        f"{followed_status} {body[:200]}")


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
async def test_a_redirect_built_from_a_decoded_path_does_not_name_the_backend(
        tmp_path: Path, backends, path: str) -> None:
    """A backend adding a slash from its decoded path (aiohttp's `req.path`): its Location
    names its own host, built from the Host the gateway sent; the client gets a path."""
    port = await backends(decoded_slash_redirect_app())
    cfg = write_config(tmp_path, _everything_to(f"http://127.0.0.1:{port}"))
    async with running_gateway(cfg) as g, ClientSession() as session:
        resp = await session.get(g.url + path, allow_redirects=False)
        raw = dict(resp.raw_headers).get(b"Location", b"")
        status = resp.status
        resp.release()
    assert status == 307, (status, raw)
    assert f"127.0.0.1:{port}".encode() not in raw, raw


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
    backend's trailing-slash redirect was `scheme://127.0.0.1/x`: its own address, yet not
    in `origins`, so it reached the client. The Host names such a port now."""
    p = Pool(scheme, "127.0.0.1", port, 4, asyncio.get_running_loop(), set(), 8)
    own = scheme.encode() + b"://" + p.host_header + b"/x"
    assert await _located(own, b"", p) == b"/x"


async def test_end_to_end_a_tab_redirect_does_not_send_the_client_to_another_host(
        tmp_path: Path, backends) -> None:
    """End to end: a version under a base path, a backend that redirects to add a slash
    from its decoded path (aiohttp's `req.path`). The client asks for `/%09/evil.example`;
    the backend answers `Location: http://127.0.0.1:P/base/\\t/evil.example/` (its own
    host); rewritten to `/\\t/evil.example/`, a browser would follow it to
    http://evil.example/ (the URL parser strips the tab): it is forwarded as it came."""
    port = await backends(decoded_slash_redirect_app())
    cfg = write_config(tmp_path, _everything_to(f"http://127.0.0.1:{port}/base"))
    async with running_gateway(cfg) as g, ClientSession() as session:
        resp = await session.get(g.url + "/%09/evil.example", allow_redirects=False)
        location = resp.headers.get("location", "")
        status = resp.status
        resp.release()
    assert status == 307, (status, location)
    got = _browser_view(location.encode("latin-1"))
    assert not got.startswith((b"//", b"/\\")), location


N = 30_000  # well under the 64 KiB answer head limit


async def test_location_rewrite_is_linear_in_the_value() -> None:
    value = b"http://127.0.0.1:9/?" + b"#" * N + b" x"
    t = time.perf_counter()
    got = await _located(value, b"")
    took = time.perf_counter() - t
    assert got == value[len(b"http://127.0.0.1:9"):]  # made relative (a path on the gateway)
    assert took < 0.25, f"one Location of {len(value)} bytes took {took:.2f} s"


async def test_one_backend_location_stalls_every_other_request(
        tmp_path: Path, backends) -> None:
    """End to end: while one answer's Location is checked, a request on another route,
    to a healthy backend, waits as long (the loop is blocked)."""
    async def hostile(req: web.Request) -> web.StreamResponse:
        return web.Response(status=302, headers={
            "Location": f"http://{req.host}/?" + "#" * N + " x"})

    async def healthy(req: web.Request) -> web.StreamResponse:
        return web.json_response({"ok": True})

    bad, good = web.Application(), web.Application()
    bad.router.add_route("*", "/{tail:.*}", hostile)
    good.router.add_route("*", "/{tail:.*}", healthy)
    bad_port, good_port = await backends(bad), await backends(good)
    routes = f"""\
        - name: bad
          match: {{path_prefix: /bad}}
          stable: v1
          versions:
            - {{name: v1, url: "http://127.0.0.1:{bad_port}"}}
        - name: good
          match: {{path_prefix: /}}
          stable: v1
          versions:
            - {{name: v1, url: "http://127.0.0.1:{good_port}"}}
        """
    cfg = write_config(tmp_path, routes)
    async with running_gateway(cfg) as g, ClientSession(max_line_size=1 << 17,
                                                        max_field_size=1 << 17) as session:
        async def timed(path: str) -> tuple[int, float]:
            t = time.perf_counter()
            async with session.get(g.url + path, allow_redirects=False) as resp:
                await resp.read()
                return resp.status, time.perf_counter() - t

        bad_status, _ = await timed("/bad")  # warm both pools
        await timed("/ok")
        hostile_task = asyncio.create_task(timed("/bad"))
        await asyncio.sleep(0)
        good_status, good_took = await timed("/ok")
        await hostile_task
    assert bad_status == 302
    assert good_status == 200
    assert good_took < 1.0, f"a healthy request took {good_took:.2f} s behind one Location"
