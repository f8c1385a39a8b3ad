"""The admin client against what is not the admin API, and `token -c` with a bad config
(hostile config review): a clear one-line error and exit 1, never a traceback."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path

import pytest

from tests.test_cli import acli

pytestmark = pytest.mark.timeout(60)

Serve = Callable[[bytes], Awaitable[int]]


@pytest.fixture
async def raw_server() -> AsyncIterator[Serve]:
    """A loopback TCP server that answers every connection with `answer`, then closes."""
    servers: list[asyncio.Server] = []

    async def start(answer: bytes) -> int:
        async def handle(r: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
            await r.read(65536)
            w.write(answer)
            await w.drain()
            w.close()

        srv = await asyncio.start_server(handle, "127.0.0.1", 0)
        servers.append(srv)
        return int(srv.sockets[0].getsockname()[1])

    yield start
    for s in servers:
        s.close()
        await s.wait_closed()


@pytest.mark.parametrize(("answer", "why"), [
    # --admin pointed at the redis port
    (b"-ERR wrong number of arguments for 'get' command\r\n", "not HTTP"),
    # a proxy or a crashing API cut the answer short
    (b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 100\r\n\r\n{\"a\":",
     "cut short"),
    (b"HTTP/1.1 503 Service Unavailable\r\nContent-Length: 100\r\n\r\n{\"error\":", "cut short"),
    (b"HTTP/1.1 200 OK\r\nX: " + b"a" * 70000 + b"\r\n\r\n", "not HTTP"),
])
@pytest.mark.parametrize("args", [("status",), ("kill", "--global", "--reason", "x")])
async def test_an_answer_that_is_not_http_is_a_clear_error(
        raw_server: Serve, answer: bytes, why: str, args: tuple[str, ...]) -> None:
    port = await raw_server(answer)
    res = await acli(*args, env={"KILLGATE_ADMIN_URL": f"http://127.0.0.1:{port}",
                                 "KILLGATE_TOKEN": "t"})
    assert res.returncode == 1, res.stdout
    assert "Traceback" not in res.stderr, res.stderr
    assert f"127.0.0.1:{port}" in res.stderr and why in res.stderr, res.stderr


@pytest.mark.parametrize("case", ["missing", "invalid", "secret_file_missing"])
async def test_token_with_a_config_that_cannot_be_used_says_why(tmp_path: Path,
                                                                 case: str) -> None:
    cfg = tmp_path / "killgate.yaml"
    routes = ("routes:\n  - name: iris\n    match: {path_prefix: /iris}\n    stable: v1\n"
              "    versions:\n      - {name: v1, url: 'http://127.0.0.1:1'}\n")
    if case == "invalid":
        cfg.write_text("listen: nowhere\n" + routes)
    elif case == "secret_file_missing":
        cfg.write_text("admin:\n  auth:\n    hs256_secret_file: gone.key\n" + routes)
    res = await acli("token", "--subject", "a", "--scope", "killgate:read", "-c", str(cfg))
    assert res.returncode == 1, res.stdout
    assert "Traceback" not in res.stderr, res.stderr
    want = {"missing": "no such file", "invalid": "listen",
            "secret_file_missing": "gone.key"}[case]
    assert res.stderr.startswith("killgate: ") and want in res.stderr, res.stderr


async def test_a_password_in_the_admin_url_is_never_printed() -> None:
    res = await acli("status", env={"KILLGATE_ADMIN_URL": "http://ops:hunter2-s3cret@127.0.0.1:1",
                                    "KILLGATE_TOKEN": "t"})
    assert res.returncode == 1
    assert "hunter2" not in res.stderr + res.stdout and "user name or password" in res.stderr


@pytest.mark.parametrize("pair", ["v1=nan", "v1=inf", "v1=-inf"])
async def test_a_weight_that_is_not_a_finite_number_is_refused_by_name(pair: str) -> None:
    # (nothing listens there: the CLI must refuse before any call)
    res = await acli("weights", "iris", pair, "v2=1", "--reason", "x",
                     env={"KILLGATE_ADMIN_URL": "http://127.0.0.1:1", "KILLGATE_TOKEN": "t"})
    assert res.returncode == 1 and f"{pair!r} is not VERSION=WEIGHT" in res.stderr, res.stderr


@pytest.mark.parametrize(("args", "answer"), [
    (("status",), {"instance": "x", "generation": 1, "kills": [], "routes": {"iris": {}}}),
    (("status",), {"instance": "x", "generation": 1, "kills": [], "routes": {
        "iris": {"stable": "v1", "versions": {"v1": {"configured_weight": None}}}}}),
    (("status",), {"instance": "x", "generation": 1, "routes": {}, "kills": [{"scope": "x"}]}),
    (("status",), {"instance": "x", "generation": 1, "routes": {}, "kills": [],
                   "config": {"digest": None}, "instances": {"a": "b"}}),
    (("audit",), {"events": [{"target": "x"}], "next": None}),
])
async def test_an_answer_missing_what_the_table_needs_is_a_clear_error(
        backends, args: tuple[str, ...], answer: dict) -> None:
    from tests.test_cli_http import _lying_api

    port = await backends(_lying_api(answer))
    res = await acli(*args, env={"KILLGATE_ADMIN_URL": f"http://127.0.0.1:{port}",
                                 "KILLGATE_TOKEN": "t"})
    assert res.returncode == 1 and res.stdout == "", res.stdout
    assert "Traceback" not in res.stderr, res.stderr
    assert res.stderr.startswith("killgate: unexpected answer from the admin API"), res.stderr


@pytest.mark.parametrize(("args", "why"), [
    (("--scope", "killgate:raed"), "unknown scope 'killgate:raed'"),
    (("--scope", "killgate:read killgate:kil"), "unknown scope 'killgate:kil'"),
    (("--scope", " "), "--scope is empty"),
    (("--scope", "killgate:read", "--ttl", "0s"), "shorter than a second"),
    (("--scope", "killgate:read", "--ttl", "500ms"), "shorter than a second"),
    (("--scope", "killgate:read", "--subject", " "), "--subject is empty"),
    (("--scope", "killgate:read", "--subject", "ops\x1b[31m"), "control or bidirectional"),
    (("--scope", "killgate:read", "--subject", "ali\u202ece"), "control or bidirectional"),
])
async def test_token_refuses_a_token_the_gateway_would_refuse(args: tuple[str, ...],
                                                              why: str) -> None:
    """It printed a token with a misspelt scope (every call then 403), an expired one
    (--ttl 0s, or 500ms rounded down) or one without a subject, and exited 0."""
    from tests.conftest import SECRET

    argv = ["token", "--subject", "alice", *args]
    res = await acli(*argv, env={"KILLGATE_JWT_SECRET": SECRET})
    assert res.returncode == 1 and res.stdout == "", res.stdout
    assert why in res.stderr, res.stderr


@pytest.mark.parametrize("args", [
    ("kill", "--route", "iris", "--version", "", "--reason", "x"),
    ("unkill", "--route", "iris", "--version", " ", "--reason", "x"),
    ("kill", "--route", "", "--reason", "x"),
    ("rollback", "iris", "--to", "", "--reason", "x"),
])
async def test_an_empty_selector_is_refused_not_widened(backends, args: tuple[str, ...]) -> None:
    """`killgate kill --route iris --version "$V"` with V unset killed the whole route (an
    empty --version read as none); `rollback --to ""` rolled back to the previous stable."""
    from tests.test_cli_http import RECEIPT, _lying_api

    port = await backends(_lying_api({**RECEIPT, "kill": "route:iris", "unkill": "route:iris",
                                      "route": "iris", "action": "rollback"}))
    res = await acli(*args, env={"KILLGATE_ADMIN_URL": f"http://127.0.0.1:{port}",
                                 "KILLGATE_TOKEN": "t"})
    assert res.returncode == 1 and res.stdout == "", res.stdout
    assert "is empty" in res.stderr, res.stderr


async def test_a_token_with_a_trailing_line_break_is_used_and_a_broken_one_never_printed(
        backends) -> None:
    """A token from a secret file ends in a line break: the CLI died with a traceback whose
    last line printed the whole token ('Invalid header value b\\'Bearer ...\\n\\''). It is
    stripped now; a token with a blank or a line break inside is refused without echoing."""
    from aiohttp import web

    seen: list[str | None] = []

    async def handler(req: web.Request) -> web.StreamResponse:
        seen.append(req.headers.get("Authorization"))
        return web.json_response({"instance": "x", "generation": 1, "routes": {}, "kills": []})

    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", handler)
    port = await backends(app)
    env = {"KILLGATE_ADMIN_URL": f"http://127.0.0.1:{port}"}
    res = await acli("status", env={**env, "KILLGATE_TOKEN": "aaa.bbb.secret-sig\n"})
    assert res.returncode == 0, res.stderr
    # (status reads /v1/status, then /v1/fleet for the silent instances: the same token)
    assert seen and set(seen) == {"Bearer aaa.bbb.secret-sig"}
    sent = len(seen)
    for bad in ("aaa.bbb.secret-sig\nX-Evil: 1", "aaa bbb.secret-sig", "aaa.bbb.secret-sig\u20ac"):
        res = await acli("status", env={**env, "KILLGATE_TOKEN": bad})
        assert res.returncode == 1 and "Traceback" not in res.stderr, res.stderr
        assert "secret-sig" not in res.stderr and "holds a blank" in res.stderr, res.stderr
    assert len(seen) == sent


@pytest.mark.parametrize("args", [("drill", "history"), ("drill", "kill", "--route", "iris"),
                                  ("drill", "restore", "d-x"), ("shadow", "report", "iris")])
async def test_drill_and_shadow_refuse_a_broken_token_without_a_traceback(
        args: tuple[str, ...]) -> None:
    res = await acli(*args, env={"KILLGATE_ADMIN_URL": "http://127.0.0.1:1",
                                 "KILLGATE_TOKEN": "aaa.bbb.secret-sig\nX-Evil: 1"})
    assert res.returncode == 1 and "Traceback" not in res.stderr, res.stderr
    assert "secret-sig" not in res.stderr and "holds a blank" in res.stderr, res.stderr


@pytest.mark.parametrize(("url", "why"), [
    ("http://127.0.0.1:1\n", None),  # (a line break around it is dropped: refused, not HTTP)
    ("http://[::1", "is not a URL: Invalid IPv6 URL"),
    ("http://127.0.0.1:99999", "is not a URL: Port out of range"),
    ("127.0.0.1:8081", "is not an http:// or https:// URL"),
    ("http://127.0.0.1 :1", "is not an http:// or https:// URL"),
])
@pytest.mark.parametrize("args", [("status",), ("drill", "history")])
async def test_an_admin_url_that_is_not_one_says_so(url: str, why: str | None,
                                                    args: tuple[str, ...]) -> None:
    """A trailing line break or a broken IPv6 literal in $KILLGATE_ADMIN_URL ended in a
    traceback (and 127.0.0.1:99999 was 'connection refused')."""
    res = await acli(*args, env={"KILLGATE_ADMIN_URL": url, "KILLGATE_TOKEN": "t"})
    assert res.returncode == 1 and "Traceback" not in res.stderr, res.stderr
    assert (why or "cannot reach the admin API at http://127.0.0.1:1:") in res.stderr, \
        res.stderr
