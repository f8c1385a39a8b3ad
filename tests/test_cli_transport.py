"""The admin client's connection (cli/transport.py): a loopback admin URL never goes through
the operator's proxy, --timeout bounds a whole answer, a huge answer is refused unread; against
real loopback servers (issue-13 review of the CLI, revcli6)."""

from __future__ import annotations

import asyncio
import time

import pytest
from aiohttp import web

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


@pytest.mark.parametrize("host", ["127.0.0.1", "localhost", "0.0.0.0"])
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
