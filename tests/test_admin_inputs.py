"""Bad input on every admin endpoint: a 4xx with a JSON error, never a 5xx, and nothing
changed (RELIABILITY row 50; issue 12 item 6)."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import pytest

from tests.backends import echo_app
from tests.conftest import admin_token, running_gateway, two_versions, write_config
from tests.rawhttp import error_type, exchange, request

DEEP = b'{"scope": "global", "reason": "x", "route": ' + b"[" * 5000 + b"]" * 5000 + b"}"


def _cases(tok: str) -> dict[str, tuple[bytes, int]]:
    auth = {"Authorization": f"Bearer {tok}"}
    kill = b'{"scope": "global", "reason": "%s"}'
    return {
        # bodies: bad Unicode, bad JSON, deep JSON, odd numbers, wrong shapes
        "lone surrogate in reason": (request("POST", "/v1/kill", kill % b"\\ud800", auth), 400),
        "lone low surrogate in a key": (request(
            "POST", "/v1/kill", b'{"scope": "global", "reason": "x", "\\udc00": 1}', auth), 400),
        "surrogate in a weight name": (request(
            "PUT", "/v1/routes/iris/weights",
            b'{"weights": {"\\ud83d": 1}, "reason": "x"}', auth), 400),
        "invalid utf-8 in the body": (request("POST", "/v1/kill", kill % b"\xff\xfe", auth), 400),
        "overlong utf-8": (request("POST", "/v1/kill", kill % b"\xc0\xaf", auth), 400),
        "deep json": (request("POST", "/v1/kill", DEEP, auth), 400),
        "deep weights": (request("PUT", "/v1/routes/iris/weights",
                                 b'{"weights": {"v1": ' + b'{"a": ' * 20 + b"1" + b"}" * 20
                                 + b'}, "reason": "x"}', auth), 400),
        "NaN weight": (request("PUT", "/v1/routes/iris/weights",
                               b'{"weights": {"v1": NaN}, "reason": "x"}', auth), 400),
        "Infinity weight": (request("PUT", "/v1/routes/iris/weights",
                                    b'{"weights": {"v1": Infinity}, "reason": "x"}', auth), 400),
        "huge weight": (request("PUT", "/v1/routes/iris/weights",
                                b'{"weights": {"v1": 1e999}, "reason": "x"}', auth), 400),
        "array body": (request("POST", "/v1/kill", b"[]", auth), 400),
        "null body": (request("POST", "/v1/kill", b"null", auth), 400),
        "empty body": (request("POST", "/v1/kill", b"", auth), 400),
        "truncated json": (request("POST", "/v1/kill", b'{"scope": "glo', auth), 400),
        "unknown field": (request("POST", "/v1/kill",
                                  b'{"scope": "global", "reason": "x", "evil": 1}', auth), 400),
        "reason not a string": (request("POST", "/v1/kill",
                                        b'{"scope": "global", "reason": 7}', auth), 400),
        "reason blank": (request("POST", "/v1/kill", b'{"scope": "global", "reason": " "}',
                                 auth), 400),
        "reason too long": (request("POST", "/v1/kill", kill % (b"r" * 2000), auth), 400),
        "scope wrong type": (request("POST", "/v1/kill", b'{"scope": ["global"], "reason": "x"}',
                                     auth), 400),
        "abort_inflight a string": (request(
            "POST", "/v1/kill", b'{"scope": "global", "reason": "x", "abort_inflight": "no"}',
            auth), 400),
        "version a number": (request("POST", "/v1/routes/iris/promote",
                                     b'{"version": 2, "reason": "x"}', auth), 400),
        "to a list": (request("POST", "/v1/routes/iris/rollback",
                              b'{"to": ["v1"], "reason": "x"}', auth), 400),
        "weights a list": (request("PUT", "/v1/routes/iris/weights",
                                   b'{"weights": [1], "reason": "x"}', auth), 400),
        "duplicate keys last wins but types checked": (request(
            "POST", "/v1/kill", b'{"scope": "global", "scope": 1, "reason": "x"}', auth), 400),
        # headers
        "x-request-id latin-1 bytes": (request("POST", "/v1/kill", kill % b"x", auth,
                                               raw_headers=b"x-request-id: \xff\xfe\x80\r\n"),
                                       400),
        "x-request-id with a control character": (request(
            "POST", "/v1/kill", kill % b"x", auth, raw_headers=b"x-request-id: a\x01b\r\n"), 400),
        "x-request-id too long": (request("POST", "/v1/kill", kill % b"x",
                                          {**auth, "x-request-id": "r" * 300}), 400),
        "two x-request-ids": (request("POST", "/v1/kill", kill % b"x",
                                      [*auth.items(), ("x-request-id", "a"),
                                       ("x-request-id", "b")]), 400),
        "idempotency key with utf-8": (request("POST", "/v1/kill", kill % b"x", auth,
                                               raw_headers=b"Idempotency-Key: \xc3\xa9\r\n"), 400),
        "authorization with high bytes": (request(
            "GET", "/v1/status", raw_headers=b"Authorization: Bearer \xff\xfe.\x80.\x81\r\n"), 401),
        "authorization of control bytes": (request(
            "GET", "/v1/status", raw_headers=b"Authorization: Bearer a\x01.b.c\r\n"), 400),
        # query values
        "limit not a number": (request("GET", "/v1/audit?limit=abc", None, auth), 400),
        "limit negative": (request("GET", "/v1/audit?limit=-1", None, auth), 400),
        "limit zero": (request("GET", "/v1/audit?limit=0", None, auth), 400),
        "limit huge": (request("GET", "/v1/audit?limit=99999999999999999999", None, auth), 400),
        "limit with unicode digits": (request("GET", "/v1/audit?limit=%D9%A3", None, auth), 400),
        "limit twice": (request("GET", "/v1/audit?limit=1&limit=2", None, auth), 400),
        "before of bad bytes": (request("GET", "/v1/audit?before=%ff%fe", None, auth), 400),
        "before a path": (request("GET", "/v1/audit?before=../../x", None, auth), 400),
        "before a stream range trick": (request("GET", "/v1/audit?before=-", None, auth), 400),
        "before too long": (request("GET", "/v1/audit?before=" + "a" * 200, None, auth), 400),
        "wait not a duration": (request("POST", "/v1/kill?wait=soon", kill % b"x", auth), 400),
        "wait too long": (request("POST", "/v1/kill?wait=10h", kill % b"x", auth), 400),
        "wait of bad bytes": (request("POST", "/v1/kill?wait=%ff", kill % b"x", auth), 400),
        "wait surrogate escape": (request("POST", "/v1/kill?wait=%ED%A0%80", kill % b"x", auth),
                                  400),
        # paths and methods
        "route of bad bytes": (request("POST", "/v1/routes/%ff/rollback", b'{"reason": "x"}',
                                       auth), 404),
        "route with a NUL": (request("POST", "/v1/routes/%00/promote",
                                     b'{"version": "v1", "reason": "x"}', auth), 404),
        "route unknown": (request("POST", "/v1/routes/nope/release", b'{"reason": "x"}', auth),
                          404),
        "version unknown": (request("POST", "/v1/routes/iris/promote",
                                    b'{"version": "v9", "reason": "x"}', auth), 404),
        "wrong method": (request("DELETE", "/v1/kill", None, auth), 405),
        "unknown endpoint": (request("GET", "/v1/nothing", None, auth), 404),
        "body too large": (request("POST", "/v1/kill", b'{"reason": "' + b"a" * 70_000 + b'"}',
                                   auth), 413),
    }


async def test_bad_input_is_a_4xx_and_changes_nothing(tmp_path: Path, backends) -> None:
    p = await backends(echo_app("v1"))
    cfg = write_config(tmp_path, two_versions(p, p))
    tok = admin_token("killgate:admin", "ops", 600)
    async with running_gateway(cfg) as g:
        port = g.gw.admin_addr[1]
        before = g.gw.holder.doc
        events = len(await g.gw.sync.store.audit_events())
        results = {}
        for name, (payload, expected) in _cases(tok).items():
            status, headers, body = await exchange(port, payload)
            results[name] = (status, expected, error_type(body),
                             headers.get("content-type", "").split(";")[0])
        wrong = {k: v for k, v in results.items() if v[0] != v[1]}
        assert wrong == {}, json.dumps(wrong, indent=1)
        assert all(v[2] for v in results.values()), results  # a JSON error with a type
        assert {v[3] for v in results.values()} == {"application/json"}
        after = g.gw.holder.doc
        assert after.generation == before.generation and after.kills == {}
        assert after.overrides == before.overrides
        actions = [e["action"] for e in (await g.gw.sync.store.audit_events())[events:]]
        assert set(actions) <= {"authn_fail"}, actions  # only the two bad tokens' tallies


@pytest.mark.parametrize("rid", ["abc-123", "r" * 128, "!~"])
async def test_a_good_request_id_is_kept(tmp_path: Path, backends, rid: str) -> None:
    p = await backends(echo_app("v1"))
    cfg = write_config(tmp_path, two_versions(p, p))
    tok = admin_token("killgate:admin", "ops", 600)
    async with running_gateway(cfg) as g:
        status, _, _ = await exchange(g.gw.admin_addr[1], request(
            "POST", "/v1/kill", b'{"scope": "global", "reason": "x"}',
            {"Authorization": f"Bearer {tok}", "x-request-id": rid}))
        assert status == 200
        ev = (await g.gw.sync.store.audit_events())[-1]
        assert ev["action"] == "kill" and ev["request_id"] == rid


async def test_text_that_would_reorder_a_screen_is_escaped(tmp_path: Path, backends) -> None:
    """A reason (any person's text) holding bidirectional controls would turn around what
    follows it in the console, a CLI table or a terminal: they are escaped like CR and LF."""
    p = await backends(echo_app("v1"))
    cfg = write_config(tmp_path, two_versions(p, p))
    tok = admin_token("killgate:admin", "ops", 600)
    reason = "rollout \u202eelbats\u202c by \u2067bob\u2069 \u200fok"
    async with running_gateway(cfg) as g:
        status, _, body = await exchange(g.gw.admin_addr[1], request(
            "POST", "/v1/kill", json.dumps({"scope": "global", "reason": reason}).encode(),
            {"Authorization": f"Bearer {tok}"}))
        assert status == 200, body
        shown = "rollout \\u202eelbats\\u202c by \\u2067bob\\u2069 \\u200fok"
        assert g.gw.holder.doc.kills["global"].reason == shown
        ev = (await g.gw.sync.store.audit_events())[-1]
        assert ev["action"] == "kill" and ev["reason"] == shown


@pytest.mark.parametrize("path", ["/v1/kill", "/v1/alerts/alertmanager",
                                  "/v1/routes/iris/rollback"])
async def test_a_body_that_is_not_what_its_content_encoding_says_is_a_400(
        path: str, tmp_path: Path, backends, caplog: pytest.LogCaptureFixture) -> None:
    """`Content-Encoding: gzip` over bytes that are not gzip: a 400 naming the body, nothing
    changed, and no ERROR line or traceback (it was a 500 and two of them)."""
    p = await backends(echo_app("v1"))
    cfg = write_config(tmp_path, two_versions(p, p), extra="alerts:\n  alertmanager: {}\n")
    tok = admin_token("killgate:admin", "ops", 600)
    async with running_gateway(cfg) as g:
        gen = g.gw.holder.doc.generation
        status, _, body = await exchange(g.gw.admin_addr[1], request(
            "POST", path, b'{"scope": "global", "reason": "x"}',
            {"Authorization": f"Bearer {tok}", "Content-Encoding": "gzip"}))
        assert status == 400 and error_type(body) == "bad_request", body
        assert b"Content-Encoding" in body
        assert g.gw.holder.doc.generation == gen and not g.gw.holder.doc.kills
    assert [r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR] == []
