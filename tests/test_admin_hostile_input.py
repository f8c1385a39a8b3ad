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


async def _pages(g, session, cursors: list[str]) -> dict[str, tuple[int, dict]]:
    """Two audit events, then GET /v1/audit?limit=1&before= for each cursor ('next': the
    newest page's `next`, as the store gave it out)."""
    from tests.test_killswitch import kill, unkill

    await kill(session, g.admin, scope="route", route="iris")
    await unkill(session, g.admin, scope="route", route="iris")
    tok = admin_token("killgate:read", "ops", 600)
    out = {}
    status, _, body = await exchange(g.gw.admin_addr[1], request(
        "GET", "/v1/audit?limit=1", None, {"Authorization": f"Bearer {tok}"}))
    first = json.loads(body)
    assert status == 200 and len(first["events"]) == 1 and first["next"], first
    for name in cursors:
        before = {"next": first["next"]}.get(name, name)
        status, _, body = await exchange(g.gw.admin_addr[1], request(
            "GET", f"/v1/audit?limit=1&before={before}", None,
            {"Authorization": f"Bearer {tok}"}))
        out[name] = status, json.loads(body)
    return out


def _refused(answer: tuple[int, dict]) -> str:
    status, body = answer
    assert status == 400 and body["error"]["type"] == "bad_cursor", answer
    message: str = body["error"]["message"]
    assert "the `next` of the previous page of GET /v1/audit" in message, message
    return message


async def test_an_audit_cursor_this_redis_store_never_gives_out_is_a_400(
        tmp_path: Path, backends, redis_server, session) -> None:
    """`GET /v1/audit?before=` with a cursor the redis store never gives out (an event id,
    as a local store's cursors are, or a stream id beyond 64 bits) was an empty page: a
    script paging the trail stopped after page 1 without an error (before that, redis'
    refusal of the 64-bit ones was a 503). It is 400 `bad_cursor`, saying what a cursor is;
    a well-formed stream id before every event stays an empty page."""
    from tests.redisha import redis_state_yaml

    p = await backends(echo_app("v1"))
    cfg = write_config(tmp_path, two_versions(p, p), state=redis_state_yaml(
        redis_server.url, f"{tmp_path}/snap.json", signing_key_env="KILLGATE_TEST_STATE_KEY"))
    wrong = ["99999999999999999999-0", "18446744073709551616-0", "0-18446744073709551616",
             "0123456789abcdef0123456789abcdef"]
    async with running_gateway(cfg) as g:
        pages = await _pages(g, session, ["next", "0-0", "1-0", *wrong])
    status, body = pages["next"]
    assert status == 200 and len(body["events"]) == 1 and body["next"] is not None, body
    for past_the_start in ("0-0", "1-0"):
        assert pages[past_the_start][0] == 200, pages[past_the_start]
        assert pages[past_the_start][1]["events"] == [] and pages[past_the_start][1]["next"] is None
    for cursor in wrong:
        assert "redis stream ids" in _refused(pages[cursor])


async def test_an_audit_cursor_this_local_store_never_gives_out_is_a_400(
        tmp_path: Path, backends, session) -> None:
    """The local store's cursors are its events' ids: a redis stream id, or an id of no
    event of its trail, was an empty page too; now 400 `bad_cursor`. The oldest event's
    own id (nothing before it) is an empty page."""
    p = await backends(echo_app("v1"))
    cfg = write_config(tmp_path, two_versions(p, p))
    async with running_gateway(cfg) as g:
        pages = await _pages(g, session, ["next", "1733400000000-0",
                                          "0123456789abcdef0123456789abcdef"])
        status, body = pages["next"]
        assert status == 200 and len(body["events"]) == 1, body
        # a line that is no event (an edit, a torn write) is an entry with a cursor of its
        # own (line-N), which the API refused as a cursor (400): the paging stopped there
        trail = tmp_path / "store.json.audit.jsonl"
        lines = trail.read_bytes().splitlines(keepends=True)
        trail.write_bytes(b"".join([lines[0], b"[]\n", *lines[1:]]))
        seen = []
        while body["next"] is not None:  # (to the oldest event: the config's record)
            body = await _pages_after(g, body["next"])
            seen += [e.get("action") or e["id"] for e in body["events"]]
        assert seen == ["line-2", "config.record"], seen
        last = await _pages_after(g, body["events"][-1]["id"])
    assert last["events"] == [] and last["next"] is None, last
    assert "cursors are its events' ids" in _refused(pages["1733400000000-0"])
    assert "is none" in _refused(pages["0123456789abcdef0123456789abcdef"])


async def _pages_after(g, before: str) -> dict:
    tok = admin_token("killgate:read", "ops", 600)
    status, _, body = await exchange(g.gw.admin_addr[1], request(
        "GET", f"/v1/audit?limit=1&before={before}", None, {"Authorization": f"Bearer {tok}"}))
    assert status == 200, body
    return json.loads(body)


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
