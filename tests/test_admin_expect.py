"""`Expect` on the admin listener (impleft8, item 2). aiohttp runs a route's expect handler
before any middleware: it wrote `100 Continue` before admin/front.py looked at the head's
size or its Host (a client told to send its body to a listener about to refuse it 421 or
431), and answered any other expectation with its own plain-text 417, the one admin
answer not in the API's error shape. Every route of ours now has admin/expect.py's
handler: the head's size and Host first (the same answers as front.py's), then a JSON 417
(`expectation_failed`) for anything but `100-continue`, whose `100 Continue` is written
last. A path no route matches (404, 405) keeps aiohttp's own (admin/expect.py says why).

A real gateway's admin listener, raw HTTP/1.1 over a socket: the head sent alone, what
comes back before the body is sent read as it comes."""

from __future__ import annotations

import asyncio
import json
import re
from pathlib import Path
from typing import Any

import pytest

from tests.backends import echo_app
from tests.conftest import bearer, running_gateway, two_versions, write_config

pytestmark = pytest.mark.timeout(60)

KILL = json.dumps({"scope": "version", "route": "iris", "version": "v2",
                   "reason": "expect"}).encode()


async def _answer(reader: asyncio.StreamReader) -> tuple[int, dict[str, str], bytes]:
    """One answer: its status, fields (lower-case names), body (Content-Length's)."""
    head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 10)
    lines = head.decode("latin-1").split("\r\n")
    fields = {k.strip().lower(): v.strip() for k, _, v in
              (ln.partition(":") for ln in lines[1:] if ln)}
    body = await asyncio.wait_for(reader.readexactly(int(fields.get("content-length", 0))), 10)
    return int(lines[0].split()[1]), fields, body


async def _expecting(port: int, method: str, path: str, expect: str,
                     headers: dict[str, str] | None = None, body: bytes = b""
                     ) -> list[tuple[int, dict[str, str], bytes]]:
    """The head sent alone with `Expect: expect`; the first answer read; when it is a 100,
    the body sent and the final answer read too. Every answer, in order."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        head = {"Host": f"127.0.0.1:{port}", "Expect": expect, **(headers or {}),
                "Content-Length": str(len(body)), "Content-Type": "application/json"}
        writer.write(f"{method} {path} HTTP/1.1\r\n".encode() + b"".join(
            f"{k}: {v}\r\n".encode() for k, v in head.items()) + b"\r\n")
        await writer.drain()
        got = [await _answer(reader)]
        if got[0][0] == 100:
            writer.write(body)
            await writer.drain()
            got.append(await _answer(reader))
        return got
    finally:
        writer.close()


def _shape(answer: tuple[int, dict[str, str], bytes], status: int, type_: str) -> None:
    got, fields, body = answer
    assert got == status, answer
    assert fields["content-type"].startswith("application/json"), answer
    assert json.loads(body)["error"]["type"] == type_, answer


async def test_an_expectation_is_judged_after_the_head_and_host_checks_in_the_api_shape(
        tmp_path: Path, backends: Any) -> None:
    p = await backends(echo_app("v1"))
    async with running_gateway(write_config(tmp_path, two_versions(p, p))) as g:
        port = g.gw.admin_addr[1]
        kill = bearer("killgate:kill")
        # a Host it does not answer to: 421 at once, no 100 asking for the body first
        [answer] = await _expecting(port, "POST", "/v1/kill", "100-continue",
                                    {**kill, "Host": "evil.example"}, KILL)
        _shape(answer, 421, "host_not_allowed")
        # a head over the cap: 431 at once
        big = {f"X-Pad-{i}": "p" * 4000 for i in range(9)}
        [answer] = await _expecting(port, "POST", "/v1/kill", "100-continue",
                                    {**kill, **big}, KILL)
        _shape(answer, 431, "headers_too_large")
        # any other expectation: 417 in the API's shape, on a read and on a write
        for method, path in (("GET", "/v1/status"), ("POST", "/v1/kill")):
            [answer] = await _expecting(port, method, path, "something-else", kill)
            _shape(answer, 417, "expectation_failed")
            assert "something-else" in json.loads(answer[2])["error"]["message"]
        assert not g.gw.holder.doc.kills
        # 100-continue, all well: the 100, then the body taken and the kill made
        cont, final = await _expecting(port, "POST", "/v1/kill", "100-Continue", kill, KILL)
        assert cont[0] == 100 and final[0] == 200, (cont, final)
        assert g.gw.holder.doc.kills


async def test_every_route_answers_an_expectation_it_cannot_meet_in_the_api_shape(
        tmp_path: Path, backends: Any) -> None:
    """Each route the admin app has (a route added later without the handler is caught
    here): `Expect: nope` is a JSON 417."""
    p = await backends(echo_app("v1"))
    async with running_gateway(write_config(tmp_path, two_versions(p, p))) as g:
        port = g.gw.admin_addr[1]
        app = g.gw._admin_runner.app
        seen = 0
        for route in app.router.routes():
            if route.method in ("HEAD", "*"):
                continue
            info = route.resource.get_info() if route.resource is not None else {}
            path = info.get("path") or re.sub(r"\{[^}]*\}", "x", info.get("formatter", ""))
            [answer] = await _expecting(port, route.method, path, "nope")
            _shape(answer, 417, "expectation_failed")
            seen += 1
        assert seen >= 30, seen


async def test_a_body_over_the_cap_is_refused_before_the_100(
        tmp_path: Path, backends: Any) -> None:
    """`Expect: 100-continue` exists so that a client learns, before it sends a body, that
    the body would be refused: one whose Content-Length is over `admin.max_body_size` was
    answered `100 Continue`, the client sent it whole, and only then came the 413 (found by
    revtoday46). Now the 413 comes at once, in the API's shape, and the body is never
    asked for; a body within the cap still gets its 100 and is taken."""
    p = await backends(echo_app("v1"))
    cap = 64 * 1024  # (admin.max_body_size's default)
    async with running_gateway(write_config(tmp_path, two_versions(p, p))) as g:
        port = g.gw.admin_addr[1]
        kill = bearer("killgate:kill")
        big = KILL[:-1] + b', "pad": "' + b"p" * cap + b'"}'
        [answer] = await _expecting(port, "POST", "/v1/kill", "100-continue", kill, big)
        _shape(answer, 413, "body_too_large")
        assert answer[1].get("connection") == "close", answer  # (the body never comes)
        assert not g.gw.holder.doc.kills
        cont, final = await _expecting(port, "POST", "/v1/kill", "100-continue", kill, KILL)
        assert cont[0] == 100 and final[0] == 200, (cont, final)
