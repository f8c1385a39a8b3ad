"""The committer's request before its seal with less machinery (impkill12), answering as
the ordinary path did: admin/front.py's one middleware against the four it replaces
(head size, Host, tracing, errors, composed in their old order), and admin/bodyread.py's
body taken from the stream as it came with its head against `request.read()`. Each
shortcut is compared with its ordinary path over the inputs that matter (a good kill and
its trace id in the audit event, a bad, missing or short-scoped token, a wrong Host, a head
over the cap (with a wrong Host too: the head is refused first), a body over the cap, bad
JSON, another Content-Type, a gzip body, an Idempotency-Key replayed with the same body
and with another, unknown paths and methods, a domain refusal), on a real gateway,
through raw HTTP/1.1 requests sent in one write (head and body together, as a kill's
come)."""

from __future__ import annotations

import asyncio
import functools
import gzip
import json
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web

from gateway.admin import bodyread, inputs
from gateway.admin import tracing as admin_tracing
from gateway.admin.hosts import host_check
from gateway.admin.listenerlimits import head_limit
from gateway.admin.middleware import errors
from gateway.wiring import admin as wiring_admin
from tests.backends import echo_app
from tests.conftest import bearer, running_gateway, two_versions, write_config

pytestmark = pytest.mark.timeout(60)

TRACE = "4bf92f3577b34da6a3ce929d0e0e4736"
KILL = {"scope": "version", "route": "iris", "version": "v2", "reason": "front"}


def four_layers(limits: Any, admin: Any, counters: Any, loopback: bool, spans: Any) -> Any:
    """The ordinary path: the four middlewares admin/front.py replaced, in their order
    (head_limit outermost, then the Host check, tracing, errors), composed as aiohttp
    composes a middleware list."""
    chain = [head_limit(limits), host_check(admin, counters, loopback),
             admin_tracing.middleware(spans), errors]

    @web.middleware
    async def four(request: web.Request, handler: Any) -> web.StreamResponse:
        for m in reversed(chain):
            handler = functools.partial(m, handler=handler)
        return await handler(request)
    four.checks_head = True  # type: ignore[attr-defined]
    return four


async def _send(port: int, method: str, path: str, headers: dict[str, str],
                body: bytes = b"") -> tuple[int, dict[str, str], Any]:
    """One request in one write (its head and body together), its answer read whole."""
    head = {"Host": f"127.0.0.1:{port}", **headers, "Content-Length": str(len(body)),
            "Connection": "close"}
    raw = (f"{method} {path} HTTP/1.1\r\n" + "".join(f"{k}: {v}\r\n" for k, v in head.items())
           + "\r\n").encode() + body
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        writer.write(raw)
        await writer.drain()
        answer = await asyncio.wait_for(reader.read(), 20)
    finally:
        writer.close()
    top, _, rest = answer.partition(b"\r\n\r\n")
    lines = top.decode("latin-1").split("\r\n")
    fields = {k.lower(): v.strip() for k, _, v in (ln.partition(":") for ln in lines[1:])}
    return int(lines[0].split()[1]), fields, json.loads(rest) if rest else None


def _kept(status: int, fields: dict[str, str], body: Any) -> tuple[Any, ...]:
    """What must be equal: the status, the error (type and message) or the success's
    keys and `changed`, and the headers a caller acts on."""
    said = body.get("error") if isinstance(body, dict) and "error" in body else (
        sorted(body) if isinstance(body, dict) else body,
        body.get("changed") if isinstance(body, dict) else None)
    return (status, json.dumps(said, sort_keys=True),
            *(fields.get(h) for h in ("content-type", "connection", "retry-after", "allow",
                                      "x-content-type-options", "cache-control")))


def _config(tmp: Path, port: int) -> Path:
    tmp.mkdir()
    cfg = write_config(tmp, two_versions(port, port))
    # (a body cap small enough for a body over it to come with its head in one write)
    cfg.write_text(cfg.read_text().replace("admin:\n", "admin:\n  max_body_size: 2048\n", 1))
    return cfg


async def _answers(tmp_path: Path, backends: Any) -> tuple[list[tuple[Any, ...]], list[str]]:
    """The answers to every case, and the trace ids of the audit trail's kill events."""
    p = await backends(echo_app("v1"))
    cfg = _config(tmp_path, p)
    admin_hdr = {**bearer("killgate:admin", "alice", 600), "Content-Type": "application/json"}
    kill = json.dumps(KILL).encode()
    pad = {f"X-Pad-{i}": "p" * 7000 for i in range(5)}  # (35 KB of head, each line legal)
    cases: list[tuple[str, str, dict[str, str], bytes]] = [
        ("POST", "/v1/kill?wait=1s", {**admin_hdr, "traceparent":
                                      f"00-{TRACE}-00f067aa0ba902b7-01"}, kill),
        ("POST", "/v1/kill", admin_hdr, kill),  # (already killed: changed false)
        ("POST", "/v1/kill", {**admin_hdr, "Authorization": "Bearer a.b.c"}, kill),
        ("POST", "/v1/kill", {"Content-Type": "application/json"}, kill),
        ("POST", "/v1/kill", {**bearer("killgate:read"), "Content-Type": "application/json"},
         kill),
        ("POST", "/v1/kill", {**admin_hdr, "Host": "evil.example"}, kill),
        ("GET", "/v1/status", {**admin_hdr, "Host": "evil.example"}, b""),
        ("POST", "/v1/kill", {**admin_hdr, **pad}, kill),
        ("POST", "/v1/kill", {**admin_hdr, **pad, "Host": "evil.example"}, kill),
        ("POST", "/v1/kill", admin_hdr, json.dumps({**KILL, "reason": "r" * 3000}).encode()),
        ("POST", "/v1/kill", admin_hdr, b'{"scope": "version",'),
        ("POST", "/v1/kill", admin_hdr, b'[1, 2]'),
        ("POST", "/v1/kill", {**admin_hdr, "Content-Type": "text/plain"}, kill),
        ("POST", "/v1/kill", {**admin_hdr, "Content-Type": "Application/JSON; charset=utf-8"},
         kill),
        ("POST", "/v1/kill", {**admin_hdr, "Content-Encoding": "gzip"}, gzip.compress(kill)),
        ("POST", "/v1/kill", {**admin_hdr, "Content-Encoding": "gzip"}, b"not gzip"),
        ("POST", "/v1/kill", {**admin_hdr, "Idempotency-Key": "k-1"}, kill),
        ("POST", "/v1/kill", {**admin_hdr, "Idempotency-Key": "k-1"}, kill),  # replayed
        ("POST", "/v1/kill", {**admin_hdr, "Idempotency-Key": "k-1"},
         json.dumps({**KILL, "reason": "another"}).encode()),  # the key, another body
        ("POST", "/v1/unkill", admin_hdr, kill),
        ("POST", "/v1/unkill", admin_hdr, kill),  # (not killed: 409)
        ("POST", "/v1/kill", admin_hdr, json.dumps({**KILL, "version": "v9"}).encode()),
        ("POST", "/v1/kill", admin_hdr, json.dumps({**KILL, "extra": 1}).encode()),
        ("POST", "/v1/nope", admin_hdr, kill),
        ("GET", "/v1/kill", admin_hdr, b""),
        ("POST", "/v1/routes/nope/rollback", admin_hdr, b"{}"),
    ]
    out = []
    async with running_gateway(cfg) as g:
        port = g.gw.admin_addr[1]
        for method, path, headers, body in cases:
            out.append(_kept(*await _send(port, method, path, headers, body)))
        events = [e for e in await g.gw.sync.store.audit_events() if e["action"] == "kill"]
    return out, [e.get("trace_id", "") for e in events]


@pytest.fixture
def arrivals(monkeypatch: pytest.MonkeyPatch) -> list[bool]:
    """Whether each body read was taken as it came (admin/bodyread.py's shortcut)."""
    seen: list[bool] = []
    real = bodyread.arrived

    def counted(request: web.Request) -> bytes | None:
        got = real(request)
        seen.append(got is not None)
        return got
    monkeypatch.setattr(inputs, "arrived", counted)
    return seen


async def test_the_one_middleware_answers_as_the_four_did(
        tmp_path: Path, backends: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    shortcut, traces = await _answers(tmp_path / "front", backends)
    monkeypatch.setattr(wiring_admin, "front", four_layers)
    ordinary, traces0 = await _answers(tmp_path / "four", backends)
    assert shortcut == ordinary
    assert traces == traces0 and traces[0] == TRACE
    assert [a[0] for a in shortcut[:9]] == [200, 200, 401, 401, 403, 421, 421, 431, 431]


async def test_a_body_taken_as_it_came_answers_as_one_read(
        tmp_path: Path, backends: Any, monkeypatch: pytest.MonkeyPatch,
        arrivals: list[bool]) -> None:
    shortcut, traces = await _answers(tmp_path / "taken", backends)
    assert sum(arrivals) >= 10  # (the shortcut was taken: every body came with its head)
    monkeypatch.setattr(inputs, "arrived", lambda request: None)  # request.read(), always
    ordinary, traces0 = await _answers(tmp_path / "read", backends)
    assert shortcut == ordinary
    assert traces == traces0
    statuses = [a[0] for a in shortcut]
    assert statuses[9:13] == [413, 400, 400, 415]
    assert statuses[16:19] == [200, 200, 409]  # (the key's fingerprint: the body as sent)


async def test_the_listener_has_one_middleware_of_its_own(
        tmp_path: Path, backends: Any) -> None:
    p = await backends(echo_app("v1"))
    async with running_gateway(write_config(tmp_path, two_versions(p, p))) as g:
        app = g.gw._admin_runner.app  # type: ignore[union-attr]
        names = [getattr(m, "__name__", "") for m in app.middlewares]
    assert names == ["admin_front"]  # (no head_limit added by the runner, no errors layer)
