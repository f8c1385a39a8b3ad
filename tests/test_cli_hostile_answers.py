"""What the admin client prints of an answer's text is escaped, and a host name the
resolver cannot encode is a clear error (issue-13 review of cli/http.py, cli/approvals.py)."""

from __future__ import annotations

import pytest
from aiohttp import web

from tests.backends import fake_admin, hang
from tests.test_cli import acli
from tests.test_cli_http import _lying_api

pytestmark = pytest.mark.timeout(60)

ESC = "\x1b[1A\x1b[2K\rkillgate: approved weights iris (v1=1)"


async def test_an_error_message_cannot_drive_the_terminal(backends) -> None:
    """The API's error message echoes text from the state (a kill's actor in
    `kill_replaced`, a subject in `already_approved`): printed as it came, escape
    sequences in it moved the cursor and rewrote what the operator read."""
    env = await fake_admin(backends, _lying_api(
        {"error": {"type": "kill_replaced\x1b[31m",
                   "message": "the kill in force (" + ESC + ")"}}, status=409))
    res = await acli("unkill", "--global", "--reason", "r", env=env)
    assert res.returncode == 1, res
    assert "409 kill_replaced" in res.stderr, res.stderr
    assert "\x1b" not in res.stderr + res.stdout and "\r" not in res.stderr, repr(res.stderr)
    assert "\\x1b[1A" in res.stderr  # shown, escaped


async def test_an_approval_listing_cannot_drive_the_terminal(backends) -> None:
    """`killgate approvals` / `approve` print who asked, why and who approved: none of it
    may move the approver's cursor over the line that says what the change is."""
    item = {"id": "ap-0123456789abcdef", "action": "unkill", "gate": "unkill_global",
            "target": {"scope": "global", "route": None, "version": None}, "args": {},
            "reason": "r" + ESC, "requested_by": "mallory" + ESC, "needs": 2,
            "approved_by": ["mallory" + ESC], "created": "2026-12-05T00:00:00.000Z",
            "expires": "2026-12-05T00:15:00.000Z" + ESC, "hash": "0" * 64}

    async def handler(req: web.Request) -> web.StreamResponse:
        if req.method == "GET":
            return web.json_response({"approvals": [item]})
        return web.json_response({"error": {"type": "forbidden", "message": "no"}},
                                 status=403)

    env = await fake_admin(backends, handler)
    res = await acli("approvals", env=env)
    assert res.returncode == 0, res
    assert "mallory" in res.stdout and "\x1b" not in res.stdout, repr(res.stdout)
    res = await acli("approve", "ap-0123456789abcdef", env=env)
    assert res.returncode == 1, res
    assert "approving ap-0123456789abcdef: unkill global" in res.stdout
    assert "\x1b" not in res.stdout + res.stderr, repr(res.stdout)


@pytest.mark.parametrize("url", ["http://a..b:8081", "http://" + "x" * 64 + ".example:8081"])
async def test_a_host_name_that_cannot_be_encoded_is_a_clear_error(url: str) -> None:
    """urllib's IDNA encoding of the host raised a UnicodeError: a traceback, not a message."""
    res = await acli("status", env={"KILLGATE_ADMIN_URL": url, "KILLGATE_TOKEN": "tok.en.x"})
    assert res.returncode == 1, res
    assert "Traceback" not in res.stderr, res.stderr
    assert "killgate: cannot reach the admin API" in res.stderr, res.stderr


async def test_a_write_that_got_no_answer_may_have_been_applied(backends) -> None:
    """A kill whose two tries both got no answer in --timeout said only `cannot reach the
    admin API`: the operator takes it as not done, though the gateway may well have taken
    it (it was sent, twice). Now it says the write may have been applied and how to check.
    A refused connection (nothing was sent) says nothing of the kind."""
    import socket

    env = await fake_admin(backends, hang)
    res = await acli("kill", "--global", "--reason", "x", "--timeout", "0.5", env=env)
    assert res.returncode == 1, res
    assert "no answer within 0.5s" in res.stderr and "may have been applied" in res.stderr
    res = await acli("status", "--timeout", "0.5", env=env)
    assert res.returncode == 1 and "may have been applied" not in res.stderr
    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        closed = s.getsockname()[1]
    res = await acli("kill", "--global", "--reason", "x",
                     env={**env, "KILLGATE_ADMIN_URL": f"http://127.0.0.1:{closed}"})
    assert res.returncode == 1 and "Connection refused" in res.stderr, res.stderr
    assert "may have been applied" not in res.stderr


async def test_audit_verify_prints_a_forged_event_escaped(tmp_path) -> None:
    """`killgate audit verify` names the event where the chain breaks by the event's own
    `id` (and quotes its `prev_hash`): text whoever forged the event chose. Printed as it
    came, `\\r` and escape sequences in it overwrote the BROKEN line with one saying `ok`
    (the exit code stayed 1; the human reading it saw ok)."""
    import json as _json

    from gateway.domain.audit import GENESIS, event_hash

    ok = "\r\x1b[2Kaudit mirror ok: 2 event(s)\x1b[8m"
    first = {"id": "a" * 32, "time": "2026-12-05T00:00:00.000Z", "actor": "ops",
             "action": "kill", "target": {}, "reason": "x", "prev_hash": GENESIS}
    first["hash"] = event_hash(first)
    forged = {**first, "id": ok, "prev_hash": "f" * 64}
    forged["hash"] = event_hash(forged)
    mirror = tmp_path / "mirror.jsonl"
    mirror.write_text("".join(_json.dumps(e) + "\n" for e in (first, forged)))
    res = await acli("audit", "verify", "--mirror", str(mirror))
    assert res.returncode == 1, res
    assert "BROKEN at event #1" in res.stderr, res.stderr
    assert "\x1b" not in res.stderr + res.stdout and "\r" not in res.stderr, repr(res.stderr)


async def test_pending_instances_that_are_not_names_are_no_traceback(backends) -> None:
    """A receipt whose `pending` list holds a number (or an escape sequence) crashed the
    receipt line with a TypeError traceback after the write was done (or drove the
    terminal): the names are printed as text, escaped."""
    receipt = {"generation": 3, "applied": {"instances": 3, "acked": 1, "elapsed_ms": 1.0,
                                            "pending": [7, "b\x1b[2K"]}}
    env = await fake_admin(backends, _lying_api({**receipt, "kill": "global", "changed": True}))
    res = await acli("kill", "--global", "--reason", "x", env=env)
    assert res.returncode == 4, res
    assert "NOT YET by: 7, b\\x1b[2K" in res.stdout, res.stdout
    assert "Traceback" not in res.stderr


async def test_the_status_header_cannot_drive_the_terminal(backends) -> None:
    """`killgate status` escaped its tables' cells but printed its first lines (the
    instance, the store, a failed reload's error, which quotes the config file) as they
    came."""
    status = {"instance": "gw-1\x1b[2J", "generation": 3, "kills": [], "routes": {},
              "store": {"backend": "redis\x1b[31m"},
              "config": {"digest": "sha256:ab", "last_error": "routes[0].name: 'x\x1b[8m'"}}
    port = await backends(_lying_api(status))
    res = await acli("status", env={"KILLGATE_ADMIN_URL": f"http://127.0.0.1:{port}",
                                    "KILLGATE_TOKEN": "tok.en.x"})
    assert res.returncode == 0, res
    assert "LAST RELOAD FAILED" in res.stdout and "\x1b" not in res.stdout, repr(res.stdout)


async def test_a_refused_certificate_is_not_a_write_that_may_have_been_applied(
        tmp_path) -> None:
    """An https admin URL whose certificate the CLI does not trust: the request never
    left, so the message must not say the write may have been applied."""
    import asyncio
    import ssl

    from tests.test_state_urls import _certs

    cert, key, _ = _certs(tmp_path)
    ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ctx.load_cert_chain(cert, key)

    async def answer(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writer.close()

    server = await asyncio.start_server(answer, "127.0.0.1", 0, ssl=ctx)
    try:
        port = server.sockets[0].getsockname()[1]
        res = await acli("kill", "--global", "--reason", "x",
                         env={"KILLGATE_ADMIN_URL": f"https://127.0.0.1:{port}",
                              "KILLGATE_TOKEN": "tok.en.x"})
    finally:
        server.close()
        await server.wait_closed()
    assert res.returncode == 1, res
    assert "CERTIFICATE_VERIFY_FAILED" in res.stderr, res.stderr
    assert "may have been applied" not in res.stderr, res.stderr
    # (nothing left, and a second try would meet the same certificate: not sent again;
    # and the message says how to trust the right one: revcli6)
    assert "sending it once more" not in res.stderr, res.stderr
    assert "SSL_CERT_FILE=" in res.stderr, res.stderr


@pytest.mark.parametrize("status", [200, 400])
async def test_an_answer_nested_past_the_stack_is_no_traceback(backends, status: int) -> None:
    """`[[[[...` 100 000 deep (valid JSON, or nearly): json.loads raised RecursionError, not
    ValueError, and the CLI died with a traceback instead of naming the answer."""
    env = await fake_admin(backends, _lying_api("[" * 100_000, status=status))
    res = await acli("status", env=env)
    assert res.returncode == 1 and "Traceback" not in res.stderr, res.stderr
    assert ("not JSON it can read" if status == 200 else "not a killgate error") in res.stderr



@pytest.mark.parametrize("events", [[], [{"id": "x"}]])
async def test_audit_verify_ends_when_the_pages_do_not(backends, events: list) -> None:
    """`audit verify` read pages until one had no `next`: an admin endpoint (broken, or not
    killgate) that always answered the same `next` held it forever, its memory growing with
    every page. Now a page that repeats, or says there is more with nothing in it, ends it
    (exit 1, the trail not called intact)."""
    env = await fake_admin(backends, _lying_api({"events": events, "next": "cursor-1",
                                                 "head": None}))
    res = await acli("audit", "verify", env=env)
    assert res.returncode == 1, res
    assert "audit pages do not end" in res.stderr, res.stderr


async def test_an_unkill_reading_kills_that_are_not_a_list_is_no_traceback(backends) -> None:
    """`unkill` first reads the kill in force from /v1/status: a `kills` that was a number
    (an answer not killgate's, or broken) was iterated, a TypeError traceback, and the unkill
    never sent. Now such a status is not used (the unkill goes as without a read token)."""
    async def handler(req: web.Request) -> web.StreamResponse:
        if req.method == "GET":
            return web.json_response({"kills": 5, "instances": []})
        return web.json_response({"error": {"type": "not_killed", "message": "none"}},
                                 status=409)

    env = await fake_admin(backends, handler)
    res = await acli("unkill", "--global", "--reason", "r", env=env)
    assert res.returncode == 1 and "Traceback" not in res.stderr, res.stderr
    assert "409 not_killed" in res.stderr, res.stderr


@pytest.mark.parametrize("report", [{"copies": [1]}, {"latency_ms": {"primary": {"p50": "x"}}},
                                    {"disagreements": ["x"]}])
async def test_a_shadow_report_of_the_wrong_shape_is_no_traceback(backends, report) -> None:
    """`shadow report` drew its text from whatever came: `copies` a list, a latency a
    string, a disagreement not an object gave an AttributeError / TypeError traceback.
    Now exit 1, 'unexpected answer from the admin API' (revcli6); but a kept disagreement
    of another shape (a record the store holds as another version wrote it) is shown as
    it is, the report whole (revshadow5, test_cli_shadow.py: merged together, this case
    expected both)."""
    env = await fake_admin(backends, _lying_api(report))
    res = await acli("shadow", "report", "iris", env=env)
    assert "Traceback" not in res.stderr, res.stderr
    if "disagreements" in report:
        assert res.returncode == 0 and "x" in res.stdout.splitlines()[-1], res
        return
    assert res.returncode == 1, res.stderr
    assert "unexpected answer from the admin API" in res.stderr, res.stderr
