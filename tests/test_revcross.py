"""A second hostile read of the day's merged reviews (revcross). Each failed before its fix."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
from pathlib import Path

import pytest

from tests.backends import echo_app
from tests.conftest import free_port, running_gateway, two_versions, write_config
from tests.test_cli import acli
from tests.test_killswitch import token

pytestmark = pytest.mark.timeout(90)


async def test_drill_restore_errors_are_json_on_stdout(tmp_path: Path, backends) -> None:
    """`--json` gives `{"error": ...}` on stdout on every failure (README); `killgate drill
    restore` printed nothing there (its message on stderr only), so a runbook step that
    restores a drill and reads the JSON got nothing to parse when the id was wrong or the
    token could not restore."""
    p = await backends(echo_app("v1"))
    cfg = write_config(tmp_path, two_versions(p, p))
    async with running_gateway(cfg) as g:
        for tok, said in ((token("killgate:admin"), "no drill nope"),
                          (token("killgate:read"), "403")):
            env = {"KILLGATE_ADMIN_URL": g.admin, "KILLGATE_TOKEN": tok}
            res = await acli("--json", "drill", "restore", "nope", env=env)
            assert res.returncode == 1, (res.stdout, res.stderr)
            assert said in res.stderr, res.stderr
            err = json.loads(res.stdout)["error"]
            assert err["exit"] == 1 and said in err["message"], err


async def test_a_gzip_write_retried_with_its_key_is_answered_as_the_first(tmp_path: Path,
                                                                            backends) -> None:
    """A write retried with its Idempotency-Key gets the first one's answer (README). Since
    the admin listener stopped decoding bodies (auto_decompress off), the key's fingerprint
    was taken over the bytes as sent: gzip puts its time in its header, so the same kill
    gzipped again a second later (Python's gzip.compress, any client compressing afresh)
    was refused 409 idempotency_key_reused 'used for a different request'. The
    fingerprint is the decoded body's again; a different body is still refused."""
    import gzip

    from aiohttp import ClientSession

    p = await backends(echo_app("v1"))
    cfg = write_config(tmp_path, two_versions(p, p))
    body = json.dumps({"scope": "version", "route": "iris", "version": "v2",
                       "reason": "bad v2"}).encode()
    headers = {"Authorization": f"Bearer {token('killgate:admin')}",
               "Content-Type": "application/json", "Content-Encoding": "gzip",
               "Idempotency-Key": "k-1"}
    async with running_gateway(cfg) as g, ClientSession() as s:
        answers = []
        for mtime in (1, 2):
            async with s.post(g.admin + "/v1/kill", headers=headers,
                              data=gzip.compress(body, mtime=mtime)) as r:
                answers.append((r.status, await r.json()))
        assert answers[0][0] == 200 and answers[1] == answers[0], answers
        other = gzip.compress(body.replace(b"bad v2", b"worse"), mtime=3)
        async with s.post(g.admin + "/v1/kill", headers=headers, data=other) as r:
            assert r.status == 409, await r.text()
            assert (await r.json())["error"]["type"] == "idempotency_key_reused"


async def test_after_a_write_a_refused_silent_check_never_says_nothing_was_done(
        tmp_path: Path, backends, capsys: pytest.CaptureFixture[str]) -> None:
    """After a write's receipt the CLI asks GET /v1/fleet for silent instances. With
    `serve --workers N` (the admin port shared) that call may reach a worker that has not
    seen the token yet, whose token-check budget a flood of junk tokens spent: it was
    refused 429 and the CLI printed 'trying again in Ns (nothing was done)' under the
    receipt of a kill that WAS done, and waited the Retry-After before exiting. The check
    is best effort: refused, it says it could not be made and where to look, and waits
    for nothing. (The worker that has not seen the token is made here by asking the check
    with a token the gateway has not seen, once a flood spent its budget: which worker of
    a group a connection reaches is the kernel's choice, so a two-worker run found the
    case about 1 time in 4, and up to 48 CLI runs took over a minute.)"""
    import argparse
    import time

    from gateway.cli.client import warn_silent
    from tests.conftest import admin_token
    from tests.test_admin_limiter import bad_token

    p = await backends(echo_app("v1"))
    cfg = write_config(tmp_path, two_versions(p, p))
    # a Retry-After of 10 s: a check that waited it out is told from one that did not
    cfg.write_text(cfg.read_text().replace("  auth:\n", "  auth_check_rate: 0.1\n"
                                           "  auth_check_burst: 1\n  auth:\n", 1))
    from aiohttp import ClientSession

    async with running_gateway(cfg) as g, ClientSession() as s:
        for _ in range(3):  # the flood: spends the budget of token checks
            async with s.get(g.admin + "/v1/status",
                             headers={"Authorization": f"Bearer {bad_token()}"}) as r:
                await r.read()
        assert r.status == 429 and r.headers["Retry-After"] == "10"
        args = argparse.Namespace(admin=g.admin, timeout=30.0, json=False,
                                  token=admin_token("killgate:admin", "ops", 600))
        receipt = {"generation": 2, "applied": {"acked": 1, "instances": 1, "pending": []}}
        t0 = time.monotonic()
        await asyncio.to_thread(warn_silent, args, receipt)
        took = time.monotonic() - t0
    out = capsys.readouterr()
    assert "could not check" in out.err and "the write above is done" in out.err, out.err
    assert "nothing was done" not in out.err + out.out, out
    assert took < 8, f"the refused check waited {took:.1f} s (its Retry-After)"


async def test_a_bad_span_export_timeout_logs_no_traceback(tmp_path: Path, backends,
                                                           gateway_procs) -> None:
    """OTEL_BSP_SCHEDULE_DELAY was taken out of the SDK's hands for this (revtrace); its
    sibling OTEL_BSP_EXPORT_TIMEOUT was not: a value that is not an integer ('30s') made
    the SDK's batch processor log a traceback at every start with tracing on. It is read
    like the other OTEL_* values: ignored with an otel_env_ignored warning naming it."""
    from tests.otlp_collector import Collector
    from tests.rawhttp import exchange
    from tests.test_tracing import INFER, telemetry

    c = await Collector().start()
    try:
        p1 = await backends(echo_app("v1"))
        data = free_port()
        cfg = write_config(tmp_path, two_versions(p1, p1, 100, 0), listen=f"127.0.0.1:{data}",
                           admin=f"127.0.0.1:{free_port()}", extra=telemetry(c.url))
        gw = gateway_procs(cfg, env={"OTEL_BSP_EXPORT_TIMEOUT": "30s"})
        await asyncio.to_thread(gw.wait_ready)
        status, _, _ = await exchange(data, b"GET " + INFER.encode()
                                      + b" HTTP/1.1\r\nhost: a\r\n\r\n")
        assert status == 200
        # (stopped from a thread: the collector answers the last export from this loop,
        # which a stop run on it held, and the gateway waited out both exports' 5 s)
        assert await asyncio.to_thread(gw.stop) == 0
    finally:
        await c.stop()
    out = gw.output()
    assert "Traceback" not in out, out
    assert "otel_env_ignored" in out and "OTEL_BSP_EXPORT_TIMEOUT" in out, out
    assert "tracing_off" not in out, out


async def test_drill_restore_says_at_once_that_it_is_retrying() -> None:
    """`killgate drill restore` retries for 75 s (a store outage must not stop a restore),
    and said nothing meanwhile: against an admin URL nobody answers (a typo, the default
    port) the operator undoing a drill's kill stared at nothing for 75 s. The first retry
    is now said on stderr, with why and for how long."""
    import os
    import time

    from tests.conftest import free_port

    env = {**os.environ, "KILLGATE_ADMIN_URL": f"http://127.0.0.1:{free_port()}",
           "PYTHONUNBUFFERED": "1"}
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "gateway", "drill", "restore", "d-1", env=env,
        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        started = time.monotonic()
        assert proc.stderr is not None
        line = await asyncio.wait_for(proc.stderr.readline(), 15)
        assert b"cannot reach the admin API" in line and b"trying again for up to 75s" in line, line
        assert time.monotonic() - started < 15
    finally:
        proc.kill()
        await proc.wait()


async def test_a_kill_of_a_name_this_config_lacks_can_be_lifted(tmp_path: Path, backends,
                                                                session) -> None:
    """Since e8b1a69 an alert's kill of a route or version this instance's config lacks is
    made (the fleet's kill, shown NOT ROUTED here, KillgateKillNotRouted paging). The unkill
    refused the same names 404 unknown_version 'route iris has no version v3': the kill
    could be lifted only through an instance whose config has the name, and by none when
    no config has it (a rule with a mistyped label, a version the fleet rolled back out
    of its files): a page that cannot be cleared, and a kill waiting for the day the name
    is routed. An unkill of such a name lifts the kill in force; of a name with no kill,
    it is the unknown name it was (404)."""
    from tests.test_alerting import payload
    from tests.test_alerts import _gateway_cfg, _post

    cfg = await _gateway_cfg(tmp_path, backends)
    async with running_gateway(cfg) as g:
        status, answer = await _post(session, g.admin, payload(
            killgate_action="kill", route="iris", version="v3"))
        assert status == 200 and answer["actions"][0]["outcome"] == "acted", answer
        assert "version:iris:v3" in g.gw.holder.doc.kills
        env = {"KILLGATE_ADMIN_URL": g.admin, "KILLGATE_TOKEN": token("killgate:admin")}
        res = await acli("unkill", "--route", "iris", "--version", "v3", "--reason", "rolled back",
                         env=env)
        assert res.returncode == 0, (res.stdout, res.stderr)
        assert "version:iris:v3" not in g.gw.holder.doc.kills
        res = await acli("unkill", "--route", "iris", "--version", "v3", "--reason", "again",
                         env=env)
        # (no kill of the name in force any more: the config's answer for a name it lacks)
        assert res.returncode == 1 and "404 unknown_version" in res.stderr, res.stderr
        res = await acli("kill", "--route", "iris", "--version", "v3", "--reason", "x", env=env)
        assert res.returncode == 1 and "404 unknown_version" in res.stderr, res.stderr
