"""The admin client's connection (cli/transport.py): a loopback admin URL never goes through
the operator's proxy, --timeout bounds a whole answer, a huge answer is refused unread; against
real loopback servers (issue-13 review of the CLI, revcli6)."""

from __future__ import annotations

import asyncio
import os
import time

import pytest
from aiohttp import web

from gateway.cli.http import ClientError, call
from tests.test_cli import acli, cli_process
from tests.test_cli_http import _lying_api

pytestmark = pytest.mark.timeout(30)

TOKEN = "eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiJvcHMifQ.c2VjcmV0LXNpZ25hdHVyZQ"


def _recorder(seen: list[tuple[str, str]]) -> web.Application:
    """A forward proxy that records what reaches it (and answers as an admin API would not)."""
    async def handler(req: web.Request) -> web.StreamResponse:
        seen.append((str(req.url), req.headers.get("authorization", "")))
        return web.json_response({"error": {"type": "proxied", "message": "via the proxy"}},
                                 status=403)

    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", handler)
    return app


@pytest.mark.parametrize("host", ["127.0.0.1", "localhost", "0.0.0.0", "127.1", "2130706433"])
async def test_a_loopback_admin_url_never_goes_through_the_proxy(backends, host: str) -> None:
    """With `http_proxy` set in the operator's shell (a corporate proxy), `killgate status
    --admin http://127.0.0.1:8081` sent the request, bearer token and all, to the proxy
    (urllib's default opener; `no_proxy` lists names, and rarely 127.0.0.1): the token left
    the host and the answer was the proxy's. Loopback now never takes a proxy (Go's rule,
    kubectl's)."""
    seen: list[tuple[str, str]] = []
    proxy = await backends(_recorder(seen))
    api = await backends(_lying_api({"error": {"type": "invalid_token", "message": "no"}}, 401))
    env = {"KILLGATE_ADMIN_URL": f"http://{host}:{api}", "KILLGATE_TOKEN": TOKEN,
           "http_proxy": f"http://127.0.0.1:{proxy}", "HTTP_PROXY": f"http://127.0.0.1:{proxy}",
           "no_proxy": "", "NO_PROXY": ""}
    # (a fresh interpreter: the fork server's opener was built before this env was set)
    res = await asyncio.to_thread(cli_process, "status", env=env)
    assert seen == [], seen
    assert res.returncode == 1 and "401 invalid_token" in res.stderr, res.stderr


async def test_another_host_honours_the_proxy_and_no_proxy(backends) -> None:
    """Not loopback: the proxy is used as curl uses it, and `no_proxy` takes it off."""
    seen: list[tuple[str, str]] = []
    proxy = await backends(_recorder(seen))
    env = {"KILLGATE_ADMIN_URL": "http://gateway-admin.invalid:8081", "KILLGATE_TOKEN": TOKEN,
           "http_proxy": f"http://127.0.0.1:{proxy}", "no_proxy": "", "NO_PROXY": ""}
    res = await acli("status", env=env)
    assert [u for u, _ in seen] == ["http://gateway-admin.invalid:8081/v1/status"], seen
    assert "403 proxied" in res.stderr, res.stderr
    res = await acli("status", env={**env, "no_proxy": "gateway-admin.invalid"})
    assert len(seen) == 1 and res.returncode == 1, (seen, res.stderr)
    assert "cannot reach the admin API" in res.stderr, res.stderr


def _dripping(head_only: bool = False) -> web.Application:
    async def handler(req: web.Request) -> web.StreamResponse:
        resp = web.StreamResponse(status=200, headers={"content-type": "application/json",
                                                       "content-length": "100000"})
        await resp.prepare(req)
        for _ in range(600):  # a byte every 50 ms: each read gets one well within a timeout
            await resp.write(b" ")
            await asyncio.sleep(0.05)
        return resp

    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", handler)
    return app


async def test_timeout_bounds_an_answer_that_drips(backends) -> None:
    """--timeout bounded each socket read, not the answer: an admin endpoint (or a broken
    middlebox) that sent a byte every few seconds held `killgate status` forever, and a kill
    never said it had no answer. Now the whole try is bounded; a write is sent once more,
    then says it may have been applied."""
    port = await backends(_dripping())
    env = {"KILLGATE_ADMIN_URL": f"http://127.0.0.1:{port}", "KILLGATE_TOKEN": TOKEN}
    t0 = time.monotonic()
    res = await acli("status", "--timeout", "0.6", env=env)
    assert time.monotonic() - t0 < 5, res
    assert res.returncode == 1 and "no answer within 0.6s" in res.stderr, res.stderr
    assert "Traceback" not in res.stderr
    t0 = time.monotonic()
    res = await acli("kill", "--global", "--reason", "x", "--timeout", "0.6", env=env)
    assert time.monotonic() - t0 < 6, res
    assert "sending it once more" in res.stderr and "may have been applied" in res.stderr, (
        res.stderr)


async def test_a_huge_answer_is_refused_unread(backends) -> None:
    """A hostile (or broken) admin URL answering an endless body: the CLI read it all into
    memory (a MemoryError traceback, or the operator's machine swapping). Now an answer
    over 32 MiB is refused, said as such."""
    async def endless(req: web.Request) -> web.StreamResponse:
        resp = web.StreamResponse(status=200, headers={"content-type": "application/json"})
        await resp.prepare(req)
        await resp.write(b'{"a": "')
        chunk = b"x" * (1 << 20)
        for _ in range(64):
            await resp.write(chunk)
        return resp

    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", endless)
    port = await backends(app)
    env = {"KILLGATE_ADMIN_URL": f"http://127.0.0.1:{port}", "KILLGATE_TOKEN": TOKEN}
    res = await acli("status", env=env)
    assert res.returncode == 1, res
    assert "over 32 MiB: not read" in res.stderr and "Traceback" not in res.stderr, res.stderr


async def _dripping_server(heads: list[bytes], done: asyncio.Event,
                           status: bytes = b"200 OK") -> asyncio.Server:
    """Answers 200 with no Content-Length (its end is the connection's close) and drips its
    body a blank every 50 ms until `done`, far longer than the client waits."""

    async def answer(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            heads.append(await reader.readuntil(b"\r\n\r\n"))
            writer.write(b"HTTP/1.1 " + status + b"\r\ncontent-type: application/json\r\n"
                         b"connection: close\r\n\r\n")
            while not done.is_set():
                writer.write(b" ")
                await writer.drain()
                await asyncio.sleep(0.05)
        except (OSError, asyncio.IncompleteReadError):
            pass
        finally:
            writer.close()

    return await asyncio.start_server(answer, "127.0.0.1", 0)


async def test_an_answer_cut_by_the_timeout_is_no_answer_not_a_whole_one() -> None:
    """An answer whose end is its connection's close (no Content-Length, as an HTTP/1.0
    proxy sends it), dripped: the --timeout timer shut the socket, the read saw that as the
    answer's end, and the client said 'answered 200 with something that is not JSON' (a
    write: not sent again, nor said to be perhaps applied). It is no answer within
    --timeout, as for any other cut answer."""
    heads: list[bytes] = []
    done = asyncio.Event()
    server = await _dripping_server(heads, done)
    base = f"http://127.0.0.1:{server.sockets[0].getsockname()[1]}"
    retries: list[str] = []
    try:
        t0 = time.monotonic()
        with pytest.raises(ClientError) as read:
            await asyncio.to_thread(call, base, None, "GET", "/v1/status", None, 0.4)
        with pytest.raises(ClientError) as write:
            await asyncio.to_thread(call, base, "t.o.k", "POST", "/v1/kill", {"reason": "x"},
                                    0.4, retries.append)
        took = time.monotonic() - t0
    finally:
        done.set()
        server.close()
        await server.wait_closed()
        await asyncio.sleep(0.1)  # (each answer sees `done` within its 50 ms)
    assert "no answer within 0.4s" in str(read.value), read.value
    assert "no answer within 0.4s" in str(write.value), write.value
    assert "may have been applied" in str(write.value), write.value
    assert len(retries) == 1 and "sending it once more" in retries[0], retries
    keys = [h for h in b"".join(heads[1:]).split(b"\r\n") if h.lower().startswith(b"idem")]
    assert len(keys) == 2 and keys[0] == keys[1], heads
    assert took < 5, took


@pytest.mark.parametrize(("no_proxy", "url"), [
    ("10.0.0.0/8", "http://10.96.12.34:8081"),  # (Kubernetes' usual NO_PROXY: the Service IP)
    ("fd00::/8", "http://[fd00::1]:8081"),
    ("fd00::1", "http://[fd00::1]:8081"),
    ("[fd00::1]:8081", "http://[fd00::1]:8081"),
    ("example.com", "https://admin.example.com"),
    (".svc", "http://killgate-admin.ops.svc:8081"),
    ("admin.svc:443", "https://admin.svc"),
])
async def test_no_proxy_names_the_admin_host_as_curl_reads_it(backends, no_proxy: str,
                                                              url: str) -> None:
    """`no_proxy=10.0.0.0/8,.svc` (a pod's, set for kubectl and curl) took a ClusterIP admin
    URL off the proxy there, but not here: urllib matched no CIDR range and no bare IPv6
    address, and the bearer token went to the proxy (revcli6 says `no_proxy` is read as curl
    reads it). Each of these goes direct: nothing reaches the proxy."""
    seen: list[tuple[str, str]] = []
    proxy = await backends(_recorder(seen))
    env = {"http_proxy": f"http://127.0.0.1:{proxy}", "https_proxy": f"http://127.0.0.1:{proxy}",
           "no_proxy": no_proxy}
    for name, value in env.items():
        os.environ[name] = value
    try:
        with pytest.raises(ClientError):  # (direct: nothing listens there)
            await asyncio.to_thread(call, url, TOKEN, "GET", "/v1/status", None, 0.2)
        with pytest.raises(ClientError):  # (and a host it does not name goes to the proxy)
            await asyncio.to_thread(call, "http://elsewhere.example:8081", TOKEN, "GET",
                                    "/v1/status", None, 2.0)
    finally:
        for name in env:
            del os.environ[name]
    assert [u for u, _ in seen] == ["http://elsewhere.example:8081/v1/status"], seen


async def test_a_write_whose_5xx_answer_did_not_come_whole_may_have_been_applied() -> None:
    """A write answered 503 or 504 (a proxy in front, or the gateway) whose body did not come
    whole within --timeout: the client said only that the answer 'did not come whole', never
    that the write may have been applied (as it says when such an answer is cut short), so
    the operator at 3 a.m. read it as refused and sent it again. A 4xx is a refusal: nothing
    is added to it."""
    said = {}
    for status in (b"504 Gateway Time-out", b"403 Forbidden"):
        done = asyncio.Event()
        server = await _dripping_server([], done, status)
        base = f"http://127.0.0.1:{server.sockets[0].getsockname()[1]}"
        try:
            with pytest.raises(ClientError) as write:
                await asyncio.to_thread(call, base, "t.o.k", "POST", "/v1/kill",
                                        {"reason": "x"}, 0.3)
        finally:
            done.set()
            server.close()
            await server.wait_closed()
            await asyncio.sleep(0.1)
        said[status[:3]] = str(write.value)
    assert "did not come whole within 0.3s" in said[b"504"], said
    assert "may have been applied" in said[b"504"], said
    assert "may have been applied" not in said[b"403"], said


async def test_a_proxy_that_refuses_the_tunnel_is_named_and_the_write_not_resent() -> None:
    """https through a proxy (CONNECT) that answered 407 (its credentials missing, or the
    admin host not allowed): the client said 'cannot reach the admin API at ...: Tunnel
    connection failed', sent the write once more, then said it may have been applied,
    though nothing had gone past the proxy; and no message named the proxy, so the operator
    looked for a fault in the gateway. The proxy is named (never its password), the write is
    not resent, nor said to be perhaps applied."""
    connects: list[bytes] = []

    async def refuse(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            connects.append((await reader.readuntil(b"\r\n\r\n")).split(b"\r\n")[0])
            writer.write(b"HTTP/1.1 407 Proxy Authentication Required\r\n"
                         b"content-length: 0\r\n\r\n")
            await writer.drain()
        except (OSError, asyncio.IncompleteReadError):
            pass
        finally:
            writer.close()

    server = await asyncio.start_server(refuse, "127.0.0.1", 0)
    proxy = f"127.0.0.1:{server.sockets[0].getsockname()[1]}"
    env = {"https_proxy": f"http://ops:s3cret@{proxy}", "no_proxy": ""}
    os.environ.update(env)
    retries: list[str] = []
    try:
        with pytest.raises(ClientError) as write:
            await asyncio.to_thread(call, "https://killgate-admin.example:8443", TOKEN, "POST",
                                    "/v1/kill", {"reason": "x"}, 2.0, retries.append)
    finally:
        for name in env:
            del os.environ[name]
        server.close()
        await server.wait_closed()
    said = str(write.value)
    assert f"the proxy {proxy} refused the tunnel (407 Proxy Authentication" in said, said
    assert "may have been applied" not in said and "s3cret" not in said, said
    assert retries == [] and connects == [b"CONNECT killgate-admin.example:8443 HTTP/1.0"], (
        retries, connects)


@pytest.mark.parametrize("url", ["http://::1:8081", "http://fd00::1:8081/"])
def test_an_ipv6_admin_url_without_brackets_says_where_they_go(url: str) -> None:
    """`--admin http://::1:8081` (admin.listen's host pasted without its brackets) said only
    'Port could not be cast to integer value as ':1:8081'', a puzzle at 3 a.m."""
    from gateway.cli.urls import admin_base

    with pytest.raises(ClientError) as refused:
        admin_base(url)
    assert "an IPv6 address goes in brackets: http://[::1]:8081" in str(refused.value)
