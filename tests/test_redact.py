"""Redaction (gateway/redact.py; RELIABILITY row 55): no secret of the config in any API
answer, log line or CLI output, checked by grepping all of them for each secret."""

from __future__ import annotations

import asyncio
import json
import logging
import os
import sys
import textwrap
import time
from pathlib import Path

import pytest
from aiohttp import ClientSession

from gateway import redact
from gateway.log import _JsonFormatter, _TextFormatter, event
from tests.backends import echo_app
from tests.conftest import (
    SECRET,
    STATE_KEY,
    STATE_KEY_ENV,
    admin_token,
    free_port,
    two_versions,
    wait_until,
    write_config,
)
from tests.test_cli import acli
from tests.test_state_urls import _redis


@pytest.mark.parametrize(("given", "hide", "shown"), [
    ("redis://:pw@127.0.0.1:6379/0", False, "redis://***@127.0.0.1:6379/0"),
    # a raw `@` in the password (urllib, and so the store client, splits at the last one)
    ("redis://:p@ss@127.0.0.1:6379/0", False, "redis://***@127.0.0.1:6379/0"),
    ("redis://user:s@cr@t@h:1/0?x=@", False, "redis://***@h:1/0?x=@"),
    ("https://u:p@w@hooks.example.com/services/T0", True, "https://***@hooks.example.com/***"),
    ("rediss://u:pw@h:1/0?password=pw&ssl_cert_reqs=none", False,
     "rediss://***@h:1/0?password=***&ssl_cert_reqs=none"),
    ("redis+sentinel://:pw@h1:26379,h2:26379/main", False,
     "redis+sentinel://***@h1:26379,h2:26379/main"),
    ("unix:///run/redis.sock?password=pw&db=1", False, "unix:///run/redis.sock?password=***&db=1"),
    ("https://hooks.example.com/services/T0/B0/XX?token=t", True, "https://hooks.example.com/***"),
    ("https://hooks.example.com", True, "https://hooks.example.com"),
    ("http://10.0.0.1:8000/v2", False, "http://10.0.0.1:8000/v2"),
])
def test_url(given: str, hide: bool, shown: str) -> None:
    assert redact.url(given, hide) == shown


def test_free_text_is_redacted_in_linear_time() -> None:
    """Text runs through `redact.text` in every log line, /v1/status (kill and history
    reasons, 1 KiB each) and /v1/config. A run of `a.a.a...` before a URL made the URL
    pattern try a scheme from every position to the run's end: 16 KB took 1.2 s of the
    event loop, 1 KiB ~2 ms per reason of a status document."""
    text = "a." * 32 * 1024 + " see https://u:pw@h.example/x"
    start = time.process_time()
    out = redact.text(text)
    assert time.process_time() - start < 0.5
    assert out.endswith("see https://***@h.example/x") and "pw" not in out
    assert redact.text("scheme+x.y-z://u:pw@h/p") == "scheme+x.y-z://***@h/p"


def test_tree_by_key_names() -> None:
    given = {
        "state": {"url": "redis://:pw@h/0", "signing_key_env": "KG_KEY",
                  "audit_key_file": "/run/key"},
        "admin": {"auth": {"jwks_url": "https://idp.example.com/tenant/keys?x=1",
                           "hs256_secret_env": "KG_SECRET", "max_token_age": 60}},
        "routes": [{"analysis": {"webhook_url": "https://h/p/q"},
                    "fallback": {"headers": {"Authorization": "Bearer t", "X-Api-Key": "k",
                                             "content-type": "application/json"}},
                    "versions": [{"url": "http://h:1/v2"}]}],
        "events": {"webhooks": [{"url": "https://h/secret/path", "secret_env": "EV"}]},
        "password": "", "last_error": "cannot reach redis://:pw@h:1/0 (refused)",
    }
    assert redact.tree(given) == {
        "state": {"url": "redis://***@h/0", "signing_key_env": "KG_KEY",
                  "audit_key_file": "/run/key"},
        "admin": {"auth": {"jwks_url": "https://idp.example.com/***",
                           "hs256_secret_env": "KG_SECRET", "max_token_age": 60}},
        "routes": [{"analysis": {"webhook_url": "https://h/***"},
                    "fallback": {"headers": {"Authorization": "***", "X-Api-Key": "***",
                                             "content-type": "application/json"}},
                    "versions": [{"url": "http://h:1/v2"}]}],
        "events": {"webhooks": [{"url": "https://h/***", "secret_env": "EV"}]},
        "password": "", "last_error": "cannot reach redis://***@h:1/0 (refused)",
    }


@pytest.mark.parametrize("formatter", [_JsonFormatter(), _TextFormatter()])
def test_log_fields_are_redacted(formatter: logging.Formatter) -> None:
    records: list[logging.LogRecord] = []

    class Keep(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            records.append(record)

    logger = logging.getLogger("killgate.test_redact")
    logger.addHandler(Keep())
    logger.setLevel(logging.INFO)
    event(logger, "alert_retry", logging.WARNING, webhook="https://h/HOOKPATH?t=HOOKQ",
          error="redis://:REDISPW@h:1/0 refused", password="PWFIELD")
    line = formatter.format(records[0])
    for secret in ("HOOKPATH", "HOOKQ", "REDISPW", "PWFIELD"):
        assert secret not in line
    assert "https://h/***" in line and "redis://***@h:1/0" in line


SECRETS = {
    "redis password": "REDISPW-7f3a",
    "webhook path": "HOOKPATH-91ce",
    "webhook query": "HOOKQUERY-55d0",
    "event webhook path": "EVENTPATH-2b8e",
    "event signing secret": "EVENTSECRET-0123456789-abcdefghijklmnop",
    "admin token secret": SECRET,
    "new webhook path": "NEWHOOK-a7b3",
    "state signing key": STATE_KEY,
}


def _config(tmp: Path, redis_port: int, backend: int, hook: str) -> str:
    s = SECRETS
    routes = two_versions(backend, backend, extra=textwrap.dedent(f"""\
        analysis:
          webhook_url: "https://hooks.example.com/{hook}?token={s['webhook query']}"
        """))
    text = write_config(
        tmp, routes, listen=f"127.0.0.1:{free_port()}", admin=f"127.0.0.1:{free_port()}",
        state=textwrap.dedent(f"""\
            state:
              backend: redis
              url: "redis://:{s['redis password']}@127.0.0.1:{redis_port}/0"
              signing_key_env: {STATE_KEY_ENV}
              snapshot_path: {tmp}/snapshot.json
              poll_interval: 50ms
              max_staleness: 1s
            """),
        extra=textwrap.dedent(f"""\
            events:
              webhooks:
                - url: "http://127.0.0.1:1/hooks/{s['event webhook path']}"
                  secret_env: KG_EVENT_SECRET
            log: {{format: json, level: debug}}
            """)).read_text()
    return text


async def test_no_secret_in_any_answer_log_or_cli_output(tmp_path: Path, backends,
                                                         gateway_procs) -> None:
    port = free_port()
    redis = _redis(["--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly",
                    "no", "--requirepass", SECRETS["redis password"]], port,
                   password=SECRETS["redis password"])
    try:
        backend = await backends(echo_app("v1"))
        cfg_path = tmp_path / "killgate.yaml"
        cfg_path.write_text(_config(tmp_path, port, backend, SECRETS["webhook path"]))
        env = {"KG_EVENT_SECRET": SECRETS["event signing secret"]}
        gw = gateway_procs(cfg_path, env=env)
        await asyncio.to_thread(gw.wait_ready)
        tok = admin_token("killgate:read killgate:kill", "reader", 600)
        auth = {"Authorization": f"Bearer {tok}"}
        seen: dict[str, str] = {}
        async with ClientSession() as s:
            async with s.post(gw.admin + "/v1/kill", headers=auth,
                              json={"scope": "route", "route": "iris", "reason": "drill"}) as r:
                assert r.status == 200
                seen["kill answer"] = await r.text()
            # a reload that changes the webhook: its audit event summarises the change
            other = tmp_path / "other.yaml"
            other.write_text(_config(tmp_path, port, backend, SECRETS["new webhook path"]))
            other.replace(cfg_path)

            async def reloaded() -> bool:
                async with s.get(gw.admin + "/v1/audit", headers=auth) as r:
                    return "config.reload" in await r.text()

            await wait_until(reloaded, 15, 0.1, "the reload's audit event")
            other = tmp_path / "first.yaml"  # the file as it was: a diff to show
            other.write_text(_config(tmp_path, port, backend, SECRETS["webhook path"]))
            for path in ("/v1/config", "/v1/status", "/v1/audit", "/readyz", "/metrics",
                         "/openapi.json"):
                async with s.get(gw.admin + path, headers=auth) as r:
                    assert r.status == 200, path
                    seen[path] = await r.text()
            cli_env = {**os.environ, "KILLGATE_ADMIN_URL": gw.admin, "KILLGATE_TOKEN": tok,
                       **env}
            runs = [["status"], ["status", "--json"], ["audit"], ["audit", "--json"],
                    ["diff", str(other)], ["diff", "--json", str(other)],
                    ["diff", str(other), "--against", str(tmp_path / "killgate.yaml")],
                    ["check", str(other)]]
            for args in runs:
                res = await acli(*args, env=cli_env)
                assert res.returncode in (0, 2), (args, res.stderr)
                seen["killgate " + " ".join(args)] = res.stdout + res.stderr
            # the store goes away: its error shows in status and logs, without the password
            redis.kill()
            redis.wait(5)

            async def disconnected() -> bool:
                async with s.get(gw.admin + "/v1/status", headers=auth) as r:
                    body = await r.json()
                    if body["store"]["connected"] is False and body["store"]["last_error"]:
                        seen["status while the store is down"] = json.dumps(body)
                        return True
                    return False

            await wait_until(disconnected, 15, 0.1, "the store to be missed")
        assert gw.stop() == 0
        seen["gateway log"] = gw.output()
        assert '"event": "config_reloaded"' in seen["gateway log"]  # (the log was read)
        leaks = {(where, name) for where, out in seen.items()
                 for name, secret in SECRETS.items() if secret in out}
        assert leaks == set()
        # and what was shown instead
        assert "redis://***@127.0.0.1" in seen["/v1/config"]
        assert "https://hooks.example.com/***" in seen["/v1/config"]
        assert "http://127.0.0.1:1/***" in seen["/v1/config"]
    finally:
        if redis.poll() is None:
            redis.kill()
            redis.wait(5)


def test_text_log_escapes_every_control_character() -> None:
    """A message with a carriage return or a terminal escape but no newline was written
    raw in the text format (only a newline turned escaping on): `\\r` let it overwrite
    the line it was on, ESC sequences recoloured or cleared the operator's terminal."""
    logger = logging.getLogger("killgate.test_redact.controls")
    record = logger.makeRecord(logger.name, logging.WARNING, __file__, 1,
                               "model\rFORGED ok\x1b[2J\x9b1m\tend", (), None)
    line = _TextFormatter().format(record)
    assert not any(ord(c) < 0x20 or 0x7F <= ord(c) < 0xA0 for c in line), repr(line)
    assert "model\\rFORGED ok\\x1b[2J\\x9b1m\\tend" in line


def test_text_log_escapes_what_splits_or_reorders_a_line() -> None:
    """U+2028/U+2029 end a line for str.splitlines (a shipper reading the log in Python):
    a client's text with one started a line of its own; bidi controls (U+202E) showed a
    line on a terminal other than what it holds. Message and traceback alike."""
    logger = logging.getLogger("killgate.test_redact.unicode")
    try:
        raise ValueError("bad\u2028FORGED line\u202edesrever")
    except ValueError as exc:
        record = logger.makeRecord(logger.name, logging.WARNING, __file__, 1,
                                   "a\u2029FORGED\u2066x", (), (type(exc), exc, None))
    line = _TextFormatter().format(record)
    assert len(line.splitlines()) == len(line.split("\n")), repr(line)
    assert not any(c in line for c in "\u2028\u2029\u202e\u2066"), repr(line)
    assert "a\\u2029FORGED\\u2066x" in line and "bad\\u2028FORGED" in line, line


@pytest.mark.parametrize(("said", "shown"), [
    ("Transient error HTTPConnectionPool(host='h', port=1): Max retries exceeded with url: "
     "/v1/traces?api-key=S3 (Caused by NewConnectionError(...))",
     "Transient error HTTPConnectionPool(host='h', port=1): Max retries exceeded with url: "
     "/v1/traces?api-key=*** (Caused by NewConnectionError(...))"),
    ("reason: Invalid leading whitespace, reserved character(s), or return character(s) in "
     "header value: 'Bearer\rS3'", "reason: Invalid leading whitespace, reserved "
     "character(s), or return character(s) in header value: 'Bearer\r***'"),
    ("Invalid header value char:\n\n    b'authorization: Bearer S3.\\x01'\n     ^",
     "Invalid header value char:\n\n    b'authorization: ***'\n     ^"),
    ('http://h:1 "POST /v1/traces?token=S3&x=1 HTTP/1.1" 500 16',
     'http://h:1 "POST /v1/traces?token=***&x=1 HTTP/1.1" 500 16'),
    ("redis://:S3@host:6379/0 failed", "redis://***@host:6379/0 failed"),
    ("{'password': 'S3', 'user': 'bob'}", "{'password': '***', 'user': 'bob'}"),
    ("cookie: a=S3; b=S3", "cookie: ***"),
    ("x-api-key=S3, next=1", "x-api-key=***, next=1"),
    ("Error 111 connecting to 127.0.0.1:6379. Connection refused.",
     "Error 111 connecting to 127.0.0.1:6379. Connection refused."),
    ("key_file=/etc/k.pem loaded", "key_file=/etc/k.pem loaded"),
])
def test_free_text_of_other_libraries_is_redacted(said: str, shown: str) -> None:
    assert redact.message(said) == shown


@pytest.mark.parametrize("formatter", [_JsonFormatter(), _TextFormatter()])
def test_a_traceback_and_a_library_message_are_redacted(formatter: logging.Formatter) -> None:
    try:
        raise ValueError("cannot reach redis://:S3CRET@h:6379/0 (authorization: Bearer S3CRET)")
    except ValueError:
        record = logging.LogRecord("urllib3", logging.ERROR, __file__, 1,
                                   "url: /v1/traces?api_key=%s", ("S3CRET",), sys.exc_info())
    out = formatter.format(record)
    assert "S3CRET" not in out and "api_key=***" in out and "redis://***@h" in out


@pytest.mark.parametrize("text", ["a" * 32 * 1024 + ":", "a" * 32 * 1024 + "=\n",
                                  ("k" * 100 + ": ") * 300])
def test_other_libraries_text_is_redacted_in_linear_time(text: str) -> None:
    """`redact.message` runs on every other library's log line and every traceback, on the
    thread that logs (the event loop's, mostly): a long run of word characters before a `:`
    with nothing after it made the name-value pattern retry from each position in the run
    (32 KB: 19 s)."""
    start = time.process_time()
    redact.message(text)
    assert time.process_time() - start < 0.5
    assert redact.message("id=1 mypassword=S3") == "id=1 mypassword=***"
