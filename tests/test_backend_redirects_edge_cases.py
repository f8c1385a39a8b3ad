"""Edge cases of the Location rewrite (a URL naming the version's own URL made relative):
never a path another host could be read from (`//host`, `/\\host`), the default port with
or without its number, IPv6, trailing whitespace. (From a fourth hostile review.) Left
alone: a base path spelled with other percent-escapes than the version URL's is not
recognised (the URL passes as it came)."""

from __future__ import annotations

import asyncio

import pytest

from gateway.dataplane.upstream import Pool
from tests.test_upstream import exchange, feed

pytestmark = pytest.mark.timeout(10)


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


async def test_ipv6_default_port_left_out_is_the_backends_own_address() -> None:
    """The IPv6 pool always writes the port (`Host: [::1]:80`); a backend that normalises
    the default port away (`http://[::1]/x`, as URL builders do) names its own address,
    which is forwarded to the client as it came."""
    p = Pool("http", "::1", 80, 4, asyncio.get_running_loop(), set(), 8)
    assert await _located(b"http://[::1]:80/x", b"", p) == b"/x"  # (what works)
    assert await _located(b"http://[::1]/x", b"", p) == b"/x"
