"""`killgate drill ...` arguments and output (cli/drill.py, cli/drillpast.py): every command's --help, bad
input refused before anything is touched (exit 2), the history table and its trend."""

from __future__ import annotations

import asyncio
import http.server
import json
import os
import subprocess
import threading
import time
from pathlib import Path
from typing import Any

import pytest

from gateway.admin.tokens import mint
from gateway.cli.drillpast import history_rows, trend
from gateway.cli.main import main
from tests import cli_fork
from tests.backends import echo_app
from tests.conftest import ROOT, SECRET, free_port, two_versions, write_config
from tests.test_cli import acli

COMMANDS = ["kill", "rollback", "failover", "store-loss", "run", "restore", "history"]


@pytest.mark.parametrize("cmd", [None, *COMMANDS])
def test_every_drill_command_has_help(cmd: str | None, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as e:
        main(["drill", *([cmd] if cmd else []), "--help"])
    assert e.value.code == 0
    out = capsys.readouterr().out
    assert "usage: killgate drill" in out
    if cmd in ("kill", "failover", "rollback", "store-loss"):
        assert "--route" in out and "--instances" in out and "--production" in out
    if cmd in ("kill", "failover", "rollback", "store-loss", "run"):
        # an example to copy, and what the exit status means (a cron job's or CI step's
        # only reading of a drill): kill alone had an example, none said the exit status
        # (revnewuser10)
        assert f"examples:\n  killgate drill {cmd} " in out, out
        assert "exit status: 0 passed, 1 failed" in out and "3 skipped" in out, out


@pytest.mark.parametrize(("argv", "message"), [
    (["kill", "--route", "r", "--rate", "-3"], "rate: Input should be greater than 0"),
    (["kill", "--route", "r", "--scope", "version"], "scope 'version' needs 'version'"),
    (["kill", "--route", "r", "--instances", "10.0.0.1:8080"], "is not an http(s) URL"),
    # (a port that is no port: the drill opened, every request failed, it aborted having
    # touched the fleet; it is refused before anything is, as README's exit 2 says)
    (["kill", "--route", "r", "--instances", "http://10.0.0.1:99999"],
     "'http://10.0.0.1:99999': must be an http:// or https:// URL whose port is a number"),
    (["store-loss", "--route", "r", "--hold", "5m"], "at most 60s"),
])
def test_bad_arguments_exit_2_before_any_call(argv: list[str], message: str,
                                              capsys: pytest.CaptureFixture[str]) -> None:
    rc = main(["drill", *argv, "--admin", f"http://127.0.0.1:{free_port()}"])
    assert rc == 2
    assert message in capsys.readouterr().err


def test_a_bad_duration_is_a_usage_error(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as e:
        main(["drill", "kill", "--route", "r", "--hold", "5"])
    assert e.value.code == 2
    assert "is not a duration" in capsys.readouterr().err


def test_plan_file_problems_exit_2(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["drill", "run", str(tmp_path / "missing.yaml")]) == 2
    assert "No such file" in capsys.readouterr().err
    plan = tmp_path / "plan.yaml"
    plan.write_text("kind: kill\nroute: r\nhold: forever\n")
    assert main(["drill", "run", str(plan)]) == 2
    assert "plan.yaml: hold:" in capsys.readouterr().err


def test_an_unreachable_admin_api_is_exit_1_with_the_address() -> None:
    port = free_port()
    # (forked from a process that imported the CLI: tests/cli_fork.py)
    p = cli_fork.run(["drill", "kill", "--route", "r", "--admin", f"http://127.0.0.1:{port}",
                      "--token", "t"], dict(os.environ), str(ROOT), 30)
    assert p.returncode == 1
    assert f"127.0.0.1:{port}" in p.stderr and "Traceback" not in p.stderr
    # the reason as a person reads it, not an exception object's repr
    assert p.stderr.strip().endswith("Connection refused"), p.stderr
    assert "ClientConnectorError" not in p.stderr and "ConnectionKey" not in p.stderr


class _NotKillgate(http.server.BaseHTTPRequestHandler):
    """Something else on the admin address: a web page."""

    def do_GET(self) -> None:  # a web page; under /json/, some other JSON API
        json_api = self.path.startswith("/json/")
        body = b'{"hello": "world"}' if json_api else b"<html>hello</html>"
        self.send_response(200)
        self.send_header("content-type", "application/json" if json_api else "text/html")
        self.send_header("content-length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: object) -> None:
        pass


def test_an_admin_url_that_is_not_killgates_says_so() -> None:
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _NotKillgate)
    th = threading.Thread(target=server.serve_forever, daemon=True)
    th.start()
    try:
        url = f"http://127.0.0.1:{server.server_address[1]}"
        t0 = time.monotonic()
        p = cli_fork.run(["drill", "history", "--admin", url, "--token", "t"],
                         dict(os.environ), str(ROOT), 30)
        q = cli_fork.run(["drill", "history", "--admin", url + "/json", "--token", "t"],
                         dict(os.environ), str(ROOT), 30)
    finally:
        server.shutdown()
        server.server_close()
    assert p.returncode == 1 and p.stdout == ""
    assert f"the admin API at {url} answered 200 with something that is not JSON" in p.stderr
    assert "cannot reach" not in p.stderr and time.monotonic() - t0 < 20
    # JSON of another shape: said so, no traceback
    assert q.returncode == 1 and q.stdout == "" and "Traceback" not in q.stderr
    assert "unexpected answer from the admin API: no 'open'" in q.stderr, q.stderr


def test_a_bad_history_limit_names_the_range(capsys: pytest.CaptureFixture[str]) -> None:
    for bad in ("0", "201", "x"):
        with pytest.raises(SystemExit) as e:
            main(["drill", "history", "--limit", bad])
        assert e.value.code == 2
        err = capsys.readouterr().err
        assert f"argument --limit: {bad!r} is not a whole number from 1 to 200" in err
        assert len(err) < 400, err  # (not the 200 choices one by one)


async def test_a_drill_refused_before_it_opens_reports_every_contract_field(
        tmp_path: Path, backends: Any, gateway_procs: Any) -> None:
    """A drill on a production route without --production never opens (exit 2, aborted);
    its --json report still has every field of CONTRACT §5.4, and nothing changed."""
    port = await backends(echo_app("v1"))
    cfg = write_config(tmp_path, two_versions(port, port), listen=f"127.0.0.1:{free_port()}",
                       admin=f"127.0.0.1:{free_port()}")
    g = gateway_procs(cfg)
    await asyncio.to_thread(g.wait_ready)
    tok = mint(SECRET, "ops", "killgate:admin", 600, "killgate", "killgate-admin")
    before = await acli("status", "--json", "--admin", g.admin, "--token", tok)
    where = ("--admin", g.admin, "--token", tok, "--instances", g.url)
    res = await acli("drill", "kill", "--route", "iris", "--version", "v2", "--json", *where,
                     "--out", str(tmp_path / "out"))
    assert res.returncode == 2, res.stderr
    report = json.loads(res.stdout)
    contract = {"id", "kind", "verdict", "route", "version", "instances", "time_to_kill_ms",
                "leaks", "errors", "restored", "started", "finished"}
    assert contract <= report.keys(), contract - report.keys()
    assert report["verdict"] == "aborted" and "--production" in report["reasons"][0]
    # (and how to declare the drill route it names: a new user's pass found "or declare a
    # drill route" said nothing of how)
    assert report["reasons"][0].endswith("or declare a drill route (drill_for: iris, its "
                                         "versions, a match only drills send: README \"Run "
                                         "your first drill\")"), report["reasons"]
    assert report["time_to_kill_ms"] == {"p50": None, "p99": None, "max": None}
    assert (report["instances"], report["leaks"], report["errors"]) == ([], 0, 0)
    assert not (tmp_path / "out").exists()  # (no drill, no files)
    # the human form says why, without an empty table
    human = await acli("drill", "kill", "--route", "iris", "--version", "v2", *where,
                       "--out", str(tmp_path / "out"))
    assert human.returncode == 2 and "**ABORTED**" in human.stdout
    assert "--production" in human.stdout and "| instance |" not in human.stdout
    # an id shaped like a path is one drill id that does not exist, nothing else
    for ident in ("../../kill", "d-1/../../../unkill"):
        res = await acli("drill", "restore", ident, "--admin", g.admin, "--token", tok)
        assert res.returncode == 1, res.stderr
        assert f"no drill {ident}: not open, and not among the last drills ended" in res.stderr
    after = await acli("status", "--json", "--admin", g.admin, "--token", tok)
    assert json.loads(after.stdout)["generation"] == json.loads(before.stdout)["generation"]
    assert json.loads(after.stdout)["kills"] == []
    assert g.stop() == 0


def test_history_rows_and_trend() -> None:
    def ended(drill: str, verdict: str, ms: float | None) -> dict:
        summary = {"time_to_kill_ms": {"p50": 1, "p99": 2, "max": ms}, "leaks": 0, "errors": 0}
        return {"time": f"2025-01-0{drill[-1]}T00:00:00Z", "actor": "dana",
                "target": {"drill": drill, "kind": "kill", "route": "iris-drill"},
                "after": {"verdict": verdict, "summary": summary}}

    newest_first = [ended("d-3", "passed", 40.0), ended("d-2", "failed", 2500.0),
                    ended("d-1", "passed", 55.5)]
    rows = history_rows(newest_first)
    assert len(rows) == 4 and "d-3" in rows[1] and "failed" in rows[2] and "dana" in rows[1]
    assert trend(newest_first) == [
        "kill on iris-drill: 2/3 passed; slowest instance (ms): 55.5 → 2500 → 40"]


def test_a_rollback_drill_given_version_says_to_use_to(
        capsys: pytest.CaptureFixture[str]) -> None:
    """`--version` (every other kind's) was taken by the top-level parser: 'unrecognized
    arguments: --version v2' under the program's usage, nothing about `--to` (the new-user
    walkthrough)."""
    with pytest.raises(SystemExit) as ended:
        main(["drill", "rollback", "--route", "iris-drill", "--version", "v2"])
    assert ended.value.code == 2
    err = capsys.readouterr().err
    assert "killgate drill rollback: error:" in err and "--to VERSION" in err


def test_history_shows_a_dash_for_a_drill_that_measured_nothing() -> None:
    """A drill stopped before its injection records {"p50": null, ...}: the history showed
    'None' in the measure column (game day), where every other column says '-'."""
    e = {"time": "2025-01-01T00:00:00Z", "actor": "dana",
         "target": {"drill": "d-1", "kind": "kill", "route": "iris-drill"},
         "after": {"verdict": "aborted", "summary": {
             "time_to_kill_ms": {"p50": None, "p99": None, "max": None}, "leaks": 0,
             "errors": 0}}}
    row = history_rows([e])[1]
    assert "None" not in row and row.split()[5] == "-", row


@pytest.mark.parametrize("url", ["redis://:hunter/2secret@127.0.0.1:6379/0",
                                 "redis+sentinel://:hunter/2secret@127.0.0.1:26379/m/0",
                                 "rediss://u:hunter?2secret@127.0.0.1:6379/0"])
async def test_a_store_url_that_cannot_be_read_never_shows_its_password(url: str) -> None:
    """A password holding '/' or '?' (base64 makes them) written into --store unencoded:
    the URL parser read the password's start as the port, and the drill printed it as the
    reason it was skipped ('Port could not be cast to integer value as 'hunter''), in its
    report on stdout and in the report files."""
    from gateway.errors import StoreUnavailable
    from gateway.state.pause import check_store, pause_store

    why = await check_store(url, "kg", ["a"])
    assert why is not None and "hunter" not in why and "percent-encode" in why, why
    with pytest.raises(StoreUnavailable) as e:
        await pause_store(url, 1)
    assert "hunter" not in str(e.value) and "percent-encode" in str(e.value), e.value


PASSWORD = "Hq7/Zx?Kp#Wm@Rt"  # every character that ends a URL's user information early
ENCODED = "Hq7%2FZx%3FKp%23Wm%40Rt"


def _quotes_password(text: str) -> bool:
    return any(part in text for part in ("Hq7", "Zx", "Kp", "Wm", "Rt"))


async def test_a_store_url_is_read_as_state_url_is(tmp_path: Path) -> None:
    """--store was read by a parser of its own: a unix:// URL whose password holds '/', '?',
    '#' or '@' unencoded was taken for a socket path made of the password's end, and the
    drill said only 'No such file or directory'. It is now read as state.url is: that URL is
    refused saying to percent-encode (quoting none of it); percent-encoded, the password is
    read whole, over TCP and over the socket, and the pause stops that redis."""
    from gateway.errors import StoreUnavailable
    from gateway.state.pause import check_store, pause_store
    from tests.test_state_urls import _redis

    sock, port = tmp_path / "r.sock", free_port()
    server = _redis(["--port", str(port), "--bind", "127.0.0.1", "--unixsocket", str(sock),
                     "--requirepass", PASSWORD, "--save", "", "--appendonly", "no"], port,
                    password=PASSWORD)
    cli = ["redis-cli", "-s", str(sock), "--no-auth-warning", "-a", PASSWORD]
    try:
        for args in (["SET", "kg:state", "x"], ["HSET", "kg:instances", "a", "1"]):
            await asyncio.to_thread(subprocess.run, [*cli, *args], check=True,
                                    capture_output=True, timeout=5)
        tcp = f"redis://:{ENCODED}@127.0.0.1:{port}/0"
        unix = f"unix://:{ENCODED}@{sock}?db=0"
        assert await check_store(tcp, "kg", ["a"]) is None
        assert await check_store(unix, "kg", ["a"]) is None
        await pause_store(unix, 0.6)
        t0 = time.monotonic()
        await asyncio.to_thread(subprocess.run, [*cli, "PING"], check=True,
                                capture_output=True, timeout=5)
        assert time.monotonic() - t0 > 0.3  # this redis was paused
        wrong = f"unix://:{ENCODED}x@{sock}"
        why = await check_store(wrong, "kg", ["a"])
        assert why is not None and "WRONGPASS" in why and not _quotes_password(why), why
        for url in (f"unix://:{PASSWORD}@{sock}", f"redis://:{PASSWORD}@127.0.0.1:{port}/0",
                    f"rediss://u:{PASSWORD}@127.0.0.1:{port}/0"):
            why = await check_store(url, "kg", ["a"])
            assert why is not None and "percent-encode" in why, (url, why)
            assert not _quotes_password(why), why
            with pytest.raises(StoreUnavailable) as e:
                await pause_store(url, 1)
            assert "percent-encode" in str(e.value) and not _quotes_password(str(e.value))
    finally:
        server.terminate()
        server.wait(10)
