"""The drill CLI names its report files after the drill id the admin API answers, and puts
that id in every later URL. Whatever answers on the admin address (a wrong
KILLGATE_ADMIN_URL, a plain-HTTP hop someone controls) chose where the CLI wrote: an id of
`../../x` or `/abs/x` put `x.json`, `x.md` and the picture outside `--out`. The CLI now
takes only an id of the server's grammar (1-64 letters, digits and '-'), and says so."""

from __future__ import annotations

import http.server
import json
import os
import threading
from pathlib import Path

import pytest

from tests import cli_fork
from tests.backends import fake_admin, hang
from tests.conftest import ROOT, free_port
from tests.test_cli_http import _lying_api

pytestmark = pytest.mark.timeout(60)


def _hostile(drill_id: str) -> type[http.server.BaseHTTPRequestHandler]:
    class Admin(http.server.BaseHTTPRequestHandler):
        """Answers like killgate's admin API, with a drill id of its choosing."""

        def _answer(self, doc: object) -> None:
            body = json.dumps(doc).encode()
            self.send_response(200)
            self.send_header("content-type", "application/json")
            self.send_header("content-length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def do_GET(self) -> None:
            if self.path.startswith("/v1/status"):
                self._answer({"routes": {"r": {"versions": ["v1", "v2"], "stable": "v1"}},
                              "instances": {}})
            elif self.path.startswith("/v1/config"):
                self._answer({"config": {"routes": [{"name": "r", "drill_for": "p",
                                                     "match": {"path_prefix": "/r"}}]}})
            else:
                self._answer({})

        def do_POST(self) -> None:
            self.rfile.read(int(self.headers.get("content-length") or 0))
            self._answer({"drill": drill_id, "generation": 1,
                          "applied": {"instances": 1, "acked": 1, "pending": []}})

        def log_message(self, *args: object) -> None:
            pass

    return Admin


@pytest.mark.parametrize("name", ["../../escaped", "ABS"])
def test_a_drill_id_that_is_a_path_writes_nothing_outside_out(tmp_path: Path,
                                                              name: str) -> None:
    target = tmp_path / "elsewhere" / "escaped"
    target.parent.mkdir()
    drill_id = str(target) if name == "ABS" else name
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _hostile(drill_id))
    th = threading.Thread(target=server.serve_forever, daemon=True)
    th.start()
    out = tmp_path / "a" / "b" / "out"
    try:
        # (forked from a process that imported the CLI: tests/cli_fork.py)
        p = cli_fork.run(
            ["drill", "kill", "--route", "r", "--version",
             "v2", "--admin", f"http://127.0.0.1:{server.server_address[1]}", "--token", "t",
             "--instances", f"http://127.0.0.1:{free_port()}", "--steady", "200ms",
             "--hold", "200ms", "--settle", "200ms", "--out", str(out)],
            dict(os.environ), str(ROOT), 45)
    finally:
        server.shutdown()
        server.server_close()
    written = sorted(str(f.relative_to(tmp_path)) for f in tmp_path.rglob("*") if f.is_file())
    assert all(f.startswith("a/b/out/") for f in written), written
    assert p.returncode == 1, p.stderr
    assert "drill id" in p.stderr and "Traceback" not in p.stderr, p.stderr


ESC = "\x1b[2J\x1b[1A\rdrill passed"


async def test_drill_output_cannot_drive_the_terminal(backends) -> None:
    """`drill history` printed the actor, route and drill id of each drill as the API sent
    them, and every drill command printed the API's error message raw on stderr: escape
    sequences in them cleared the screen and rewrote the operator's lines (the admin CLI
    escapes these; the drill CLI did not). Now they are shown escaped."""
    from tests.test_cli import acli

    event = {"time": "2026-12-05T00:00:00Z", "actor": "mallory" + ESC,
             "target": {"drill": "dr-1" + ESC, "kind": "kill", "route": "iris" + ESC},
             "after": {"verdict": "passed", "summary": {}}}
    opened = {"id": "dr-2", "kind": "kill", "route": "iris", "actor": "eve" + ESC,
              "started": "2026-12-05T00:00:00Z"}
    env = await fake_admin(backends, _lying_api({"open": [opened], "history": [event]}))
    res = await acli("drill", "history", env=env)
    assert res.returncode == 0, res
    assert "mallory" in res.stdout and "eve" in res.stdout, res.stdout
    assert "\x1b" not in res.stdout + res.stderr and "\r" not in res.stdout, repr(res.stdout)
    env = await fake_admin(backends, _lying_api(
        {"error": {"type": "conflict" + ESC, "message": "no" + ESC}}, status=409))
    res = await acli("drill", "restore", "dr-1", "--reason", "x", env=env)
    assert res.returncode == 1 and "409 conflict" in res.stderr, res
    assert "\x1b" not in res.stderr + res.stdout, repr(res.stderr)


async def test_a_drill_history_of_the_wrong_shape_is_no_traceback(backends) -> None:
    """A history entry whose target is not an object (or a measure not a number): an
    AttributeError / ValueError traceback; now exit 1 naming the answer."""
    from tests.test_cli import acli

    for event in ({"target": "x"}, {"target": {"kind": "k", "route": "r"},
                                    "after": {"summary": {"time_to_kill_ms": {"max": "z"}}}}):
        env = await fake_admin(backends, _lying_api({"open": [], "history": [event]}))
        res = await acli("drill", "history", env=env)
        assert res.returncode == 1 and "Traceback" not in res.stderr, res.stderr
        assert "unexpected answer from the admin API" in res.stderr, res.stderr


async def test_a_huge_or_bottomless_answer_to_a_drill_is_no_traceback(backends) -> None:
    """The drill client read an answer whole (aiohttp's json()): an endless one filled the
    memory for up to 35 s; one nested 100 000 deep raised RecursionError, a traceback. Now
    over 32 MiB is refused unread and the nesting is 'not JSON'."""
    from aiohttp import web

    from tests.test_cli import acli

    async def endless(req: web.Request) -> web.StreamResponse:
        resp = web.StreamResponse(status=200, headers={"content-type": "application/json"})
        await resp.prepare(req)
        for _ in range(48):
            await resp.write(b"x" * (1 << 20))
        return resp

    env = await fake_admin(backends, endless)
    res = await acli("drill", "history", env=env)
    assert res.returncode == 1 and "over 32 MiB: not read" in res.stderr, res.stderr
    env = await fake_admin(backends, _lying_api("[" * 100_000))
    res = await acli("drill", "history", env=env)
    assert res.returncode == 1 and "Traceback" not in res.stderr, res.stderr
    assert "not JSON" in res.stderr, res.stderr


async def test_drill_commands_keep_their_timeout(backends) -> None:
    """The drill commands take --timeout (and $KILLGATE_TIMEOUT) as every admin command does,
    but waited a fixed 35 s for each answer all the same: `drill history --timeout 1`
    against a hung admin listener sat there for 35 s. Now --timeout is each try's."""
    import time

    from tests.test_cli import acli

    env = await fake_admin(backends, hang)
    t0 = time.monotonic()
    res = await acli("drill", "history", "--timeout", "0.5", env=env)
    assert time.monotonic() - t0 < 5, res
    assert res.returncode == 1 and "no answer in time" in res.stderr, res.stderr
    t0 = time.monotonic()
    res = await acli("drill", "history", env={**env, "KILLGATE_TIMEOUT": "0.5"})
    assert time.monotonic() - t0 < 5 and res.returncode == 1, res
