"""A write whose answer was lost says it may have been applied, never just that it failed:
a proxy in front that gave up on the gateway (502/503/504 not from killgate), and Ctrl-C
while waiting for the receipt (issue-13 review of the CLI, revcli6)."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import time

import pytest
from aiohttp import web

from tests import cli_fork_spawn
from tests.backends import fake_admin
from tests.conftest import ROOT
from tests.test_cli import acli

pytestmark = pytest.mark.timeout(30)

RECEIPT = {"kill": "global", "changed": True, "generation": 3,
           "applied": {"instances": 1, "acked": 1, "elapsed_ms": 1.0, "pending": []}}


async def test_a_proxy_that_gave_up_is_a_write_that_may_have_applied(backends) -> None:
    """Behind an ingress, a kill whose answer took too long came back as the ingress' 504
    page: the CLI said only `504 ... is --admin killgate's admin listener?` and exit 1, so
    the operator took the kill as not done (it was). Now it is sent once more with the same
    Idempotency-Key, and if that fails too says the write may have been applied."""
    keys: list[str] = []

    async def ingress(req: web.Request) -> web.StreamResponse:
        if req.method == "GET":  # (the check for silent instances after a write)
            return web.json_response({"instances": []})
        keys.append(req.headers.get("idempotency-key", ""))
        if len(keys) == 1 or "always" in mode:
            return web.Response(text="<html>504 Gateway Time-out</html>", status=504,
                                content_type="text/html")
        return web.json_response(RECEIPT)

    mode = ["once"]
    env = await fake_admin(backends, ingress)
    res = await acli("kill", "--global", "--reason", "x", env=env)
    assert res.returncode == 0, res
    assert "sending it once more" in res.stderr, res.stderr
    assert len(keys) == 2 and keys[0] == keys[1] != "", keys
    mode.append("always")
    res = await acli("kill", "--global", "--reason", "x", env=env)
    assert res.returncode == 1 and "may have been applied" in res.stderr, res.stderr


@pytest.mark.timeout(150)
async def test_ctrl_c_while_a_write_waits_says_it_may_have_applied(backends) -> None:
    """Ctrl-C while `killgate kill` waited for its receipt exited 130 without a word: the
    operator could not tell the kill was already in the gateway's hands. Now it says so.
    (The answer would come 60 s on: a CLI that waited for it, or for its own 35 s timeout,
    before seeing Ctrl-C fails the 30 s bound; the bounds are generous because a loaded CI
    machine once took more than 10 s here, where a quiet one takes 0.1 s.)"""
    got = asyncio.Event()

    async def slow(req: web.Request) -> web.StreamResponse:
        got.set()
        await asyncio.sleep(60)
        return web.json_response(RECEIPT)

    env = {**os.environ, **await fake_admin(backends, slow)}
    proc = cli_fork_spawn.spawn(["--json", "kill", "--global", "--reason", "x"], env, str(ROOT))
    try:
        await asyncio.wait_for(got.wait(), 30)
        t0 = time.monotonic()
        proc.send_signal(signal.SIGINT)
        out, err = await asyncio.to_thread(proc.communicate, None, 45)
    finally:
        proc.kill()
        proc.wait(5)
        for f in (proc.stdout, proc.stderr):  # (closed by communicate, unless it failed:
            f.close()  # left open, a later test's garbage collection failed on them)
    assert time.monotonic() - t0 < 30
    assert proc.returncode == 130, (proc.returncode, err)
    assert "interrupted (Ctrl-C)" in err and "may have been applied" in err, err
    assert "Traceback" not in err
    assert json.loads(out)["error"]["exit"] == 130


async def test_a_resend_met_by_the_first_try_still_applying_waits_for_it(backends) -> None:
    """A kill whose first try got no answer in --timeout (a slow store) was sent again with
    its Idempotency-Key; the gateway answered 409 `in_progress` (that first try is still
    being applied) and the CLI exited 1 as failed, though the kill was landing. Now it asks
    again with the same key, within --timeout, and prints the receipt."""
    posts: list[str] = []

    async def slow_store(req: web.Request) -> web.StreamResponse:
        if req.method == "GET":
            return web.json_response({"instances": []})
        posts.append(req.headers.get("idempotency-key", ""))
        if len(posts) == 1:
            await asyncio.sleep(5)  # (the first try: no answer within --timeout)
        if len(posts) == 2:
            return web.json_response({"error": {"type": "in_progress", "message": "a request "
                                      "with this Idempotency-Key is still being applied"}},
                                     status=409)
        return web.json_response(RECEIPT)

    env = await fake_admin(backends, slow_store)
    res = await acli("kill", "--global", "--reason", "x", "--timeout", "1", env=env)
    assert res.returncode == 0, res
    assert "killed global" in res.stdout and len(set(posts)) == 1 and len(posts) == 3, (
        posts, res)
