"""Hostile input on the admin API, found in the issue-13 review: numbers beyond a float's
range, token subjects that are not printable text. Each is a 4xx, never a 5xx or a
traceback, and changes nothing."""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time
from pathlib import Path

import jwt
import pytest

from tests.backends import echo_app
from tests.conftest import (
    SECRET,
    admin_token,
    running_gateway,
    two_versions,
    wait_until,
    write_config,
)
from tests.rawhttp import _head, error_type, exchange, request

pytestmark = pytest.mark.timeout(60)

HUGE = b"1" + b"0" * 400  # a JSON integer no float holds


def _errors(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [r.getMessage() for r in caplog.records
            if r.levelno >= logging.ERROR or r.exc_info]


def _token(**claims: object) -> str:
    now = int(time.time())
    base = {"iat": now, "exp": now + 600, "iss": "killgate", "aud": "killgate-admin",
            "scope": "killgate:admin", "sub": "ops"}
    return jwt.encode({**base, **claims}, SECRET, algorithm="HS256")


@pytest.mark.parametrize("approvals", ["", "approvals:\n  weights: 2\n"])
async def test_a_weight_beyond_a_floats_range_is_a_400(
        tmp_path: Path, backends, caplog: pytest.LogCaptureFixture, approvals: str) -> None:
    """`{"v1": 1000...0}` (400 digits) was a 500 with a traceback (OverflowError in the
    finiteness check), directly and when the write is gated for approval."""
    p = await backends(echo_app("v1"))
    cfg = write_config(tmp_path, two_versions(p, p), extra=approvals)
    tok = admin_token("killgate:admin", "ops", 600)
    async with running_gateway(cfg) as g:
        gen = g.gw.holder.doc.generation
        status, _, body = await exchange(g.gw.admin_addr[1], request(
            "PUT", "/v1/routes/iris/weights",
            b'{"weights": {"v1": ' + HUGE + b', "v2": 1}, "reason": "x"}',
            {"Authorization": f"Bearer {tok}"}))
        assert status == 400 and error_type(body) == "bad_request", body
        assert b"v1" in body
        assert g.gw.holder.doc.generation == gen and not g.gw.holder.doc.overrides
        assert not g.gw.holder.doc.approvals
    assert _errors(caplog) == []


@pytest.mark.parametrize("claim", ["exp", "nbf"])
async def test_a_token_time_beyond_a_floats_range_is_a_401(
        tmp_path: Path, backends, caplog: pytest.LogCaptureFixture, claim: str) -> None:
    """A signed token whose `exp` (or `nbf`) is an integer no float holds was a 500 with a
    traceback (OverflowError in the finiteness check of the claims)."""
    p = await backends(echo_app("v1"))
    cfg = write_config(tmp_path, two_versions(p, p))
    value = 10 ** 400 if claim == "exp" else -(10 ** 400)
    async with running_gateway(cfg) as g:
        status, _, body = await exchange(g.gw.admin_addr[1], request(
            "GET", "/v1/status", None, {"Authorization": f"Bearer {_token(**{claim: value})}"}))
        assert status == 401 and error_type(body) == "invalid_token", body
    assert _errors(caplog) == []


@pytest.mark.parametrize("sub", ["\ud800", "ops\x1b[1A\x1b[2K\rbob", "a\x00b", "ali\u202ece",
                                 "bob\nkillgate: approved"])
async def test_a_subject_that_is_not_printable_text_is_a_401(
        tmp_path: Path, backends, caplog: pytest.LogCaptureFixture, sub: str) -> None:
    """The token's `sub` names the actor of kills and approvals in /v1/status, the audit
    trail and the CLI's tables. One holding a lone surrogate made a kill a 503
    `audit_unavailable` with an ERROR line (it cannot be written as UTF-8); one holding
    control characters was stored raw as a kill's actor and an approval's requester,
    where `killgate approve` printed it to the approver's terminal (cursor moves that
    rewrite the line saying what is approved). Both are a 401 now, and change nothing."""
    p = await backends(echo_app("v1"))
    cfg = write_config(tmp_path, two_versions(p, p))
    async with running_gateway(cfg) as g:
        gen = g.gw.holder.doc.generation
        events = len(await g.gw.sync.store.audit_events())
        status, _, body = await exchange(g.gw.admin_addr[1], request(
            "POST", "/v1/kill", b'{"scope": "global", "reason": "x"}',
            {"Authorization": f"Bearer {_token(sub=sub)}"}))
        assert status == 401 and error_type(body) == "invalid_token", body
        assert g.gw.holder.doc.generation == gen and not g.gw.holder.doc.kills
        # (the refusal's tally is the only event: no kill, no approval)
        actions = {e["action"] for e in (await g.gw.sync.store.audit_events())[events:]}
        assert actions <= {"authn_fail"}
    assert _errors(caplog) == []


async def test_a_subject_in_any_script_is_accepted(tmp_path: Path, backends) -> None:
    p = await backends(echo_app("v1"))
    cfg = write_config(tmp_path, two_versions(p, p))
    async with running_gateway(cfg) as g:
        status, _, body = await exchange(g.gw.admin_addr[1], request(
            "POST", "/v1/kill", b'{"scope": "global", "reason": "x"}',
            {"Authorization": f"Bearer {_token(sub='José Müller <ops@例え.jp>')}"}))
        assert status == 200, body
        assert g.gw.holder.doc.kills["global"].actor == "José Müller <ops@例え.jp>"


async def test_a_body_that_never_arrives_is_a_408(tmp_path: Path, backends) -> None:
    """Any valid token (a dashboard's `killgate:read` may call approve and decline) could
    send a write's head and then dribble, or never send, its body: the handler waited on
    it for ever, holding one of the listener's `max_connections` (the data plane's
    `server.body_timeout` did not apply to the admin port). Now the body has
    `server.body_timeout` to arrive, then the answer is a 408 and nothing changes."""
    p = await backends(echo_app("v1"))
    cfg = write_config(tmp_path, two_versions(p, p),
                       extra="server:\n  body_timeout: 500ms\n")
    cases = [("killgate:read", "/v1/approvals/ap-0123456789abcdef/approve"),
             ("killgate:kill", "/v1/kill")]
    async with running_gateway(cfg) as g:
        gen = g.gw.holder.doc.generation
        for scope, path in cases:
            reader, writer = await asyncio.open_connection("127.0.0.1", g.gw.admin_addr[1])
            try:
                writer.write((f"POST {path} HTTP/1.1\r\nHost: 127.0.0.1\r\n"
                              f"Authorization: Bearer {admin_token(scope, 'ops', 600)}\r\n"
                              "Content-Type: application/json\r\nContent-Length: 100\r\n\r\n"
                              '{"scope": ').encode())
                await writer.drain()
                started = time.monotonic()
                status, _ = await _head(reader, 10)
                assert status == 408, (path, status)
                assert time.monotonic() - started < 5
            finally:
                writer.close()
        assert g.gw.holder.doc.generation == gen and not g.gw.holder.doc.kills


@pytest.mark.parametrize("before", ["99999999999999999999-0", "18446744073709551616-0",
                                    "0-18446744073709551616", "0-0"])
async def test_an_audit_cursor_redis_refuses_is_an_empty_page(
        tmp_path: Path, backends, redis_server, before: str) -> None:
    """`GET /v1/audit?before=` with a stream id in the grammar but beyond 64 bits (or 0-0,
    before which nothing is) was a 503 `state_store_unavailable` ("the state store cannot
    be reached") from redis' refusal: a wrong page asked of a store in good health. Like
    any cursor that names no event, it is an empty page."""
    from tests.redisha import redis_state_yaml

    p = await backends(echo_app("v1"))
    cfg = write_config(tmp_path, two_versions(p, p), state=redis_state_yaml(
        redis_server.url, f"{tmp_path}/snap.json", signing_key_env="KILLGATE_TEST_STATE_KEY"))
    tok = admin_token("killgate:read", "ops", 600)
    async with running_gateway(cfg) as g:
        status, _, body = await exchange(g.gw.admin_addr[1], request(
            "GET", f"/v1/audit?before={before}", None, {"Authorization": f"Bearer {tok}"}))
        assert status == 200, body
        assert json.loads(body)["events"] == [] and json.loads(body)["next"] is None


@pytest.mark.parametrize(("payload", "says"), [
    (b'{"scope": "global", "reason": "x",}', b"not valid JSON: Expecting property name "
                                              b"enclosed in double quotes at line 1 column 35"),
    (b'{"scope": "global"\n "reason": "x"}', b"line 2 column 2"),
    (b'{"scope": "global", "reason": NaN}', b"NaN is not a JSON number"),
    (b'{"scope": "global", "reason": ' + b"1" * 5000 + b"}", b"too many digits"),
])
async def test_json_that_does_not_parse_says_where(tmp_path: Path, backends, payload: bytes,
                                                   says: bytes) -> None:
    """A tired operator's curl with a trailing comma got `the body must be a JSON object`
    (it was one, nearly): the answer now says what the parser found, and where."""
    p = await backends(echo_app("v1"))
    cfg = write_config(tmp_path, two_versions(p, p))
    tok = admin_token("killgate:kill", "ops", 600)
    async with running_gateway(cfg) as g:
        status, _, body = await exchange(g.gw.admin_addr[1], request(
            "POST", "/v1/kill", payload, {"Authorization": f"Bearer {tok}"}))
        assert status == 400 and says in body, body
        assert not g.gw.holder.doc.kills


async def test_a_body_with_a_byte_order_mark_is_read(tmp_path: Path, backends) -> None:
    """Some clients (Windows PowerShell's UTF-8) put a BOM before the JSON; RFC 8259 lets
    a parser ignore it, and a kill sent so was a 400 `the body must be a JSON object`."""
    p = await backends(echo_app("v1"))
    cfg = write_config(tmp_path, two_versions(p, p))
    tok = admin_token("killgate:kill", "ops", 600)
    async with running_gateway(cfg) as g:
        status, _, body = await exchange(g.gw.admin_addr[1], request(
            "POST", "/v1/kill", b'\xef\xbb\xbf{"scope": "global", "reason": "x"}',
            {"Authorization": f"Bearer {tok}"}))
        assert status == 200, body
        assert "global" in g.gw.holder.doc.kills


@pytest.mark.parametrize("how", ["half_close", "close", "reset"])
async def test_a_caller_gone_mid_body_is_no_error_line(
        tmp_path: Path, backends, caplog: pytest.LogCaptureFixture, how: str) -> None:
    """A caller that sends a write's head and part of its body, then closes (or resets)
    the connection, left an ERROR `admin_internal_error` with a ConnectionResetError
    traceback per connection: a log an attacker with any valid token could fill, and a
    page for whoever watches ERRORs. It is the caller's doing: answered as bad input (when
    anyone is left to read it), nothing logged above DEBUG, nothing changed."""
    p = await backends(echo_app("v1"))
    cfg = write_config(tmp_path, two_versions(p, p))
    tok = admin_token("killgate:kill", "ops", 600)
    async with running_gateway(cfg) as g:
        reader, writer = await asyncio.open_connection("127.0.0.1", g.gw.admin_addr[1])
        try:
            writer.write((f"POST /v1/kill HTTP/1.1\r\nHost: 127.0.0.1\r\n"
                          f"Authorization: Bearer {tok}\r\nContent-Type: application/json\r\n"
                          'Content-Length: 100\r\n\r\n{"scope"').encode())
            await writer.drain()
            server = g.gw._admin_runner.server
            await wait_until(lambda: any(c._request_in_progress for c in server._connections),
                             what="the handler reading the body")
            if how == "half_close":
                writer.write_eof()
                await asyncio.wait_for(reader.read(), 5)
            elif how == "reset":
                writer.transport.abort()
        finally:
            writer.close()
            with contextlib.suppress(ConnectionError):
                await writer.wait_closed()
        await wait_until(lambda: not server._connections, what="the connection closed")
        for _ in range(5):  # (the handler's failure surfaces a loop turn or two later)
            await asyncio.sleep(0)
        assert not g.gw.holder.doc.kills
    assert _errors(caplog) == []
