"""A drill run with a token that expires before its restore is due is refused before it
opens. It opened, killed, held, then its restore was refused (401: the token had expired)
and it printed RESTORE FAILED: the drill's kill stayed in force until the fleet closed the
drill past its deadline (minutes: the windows plus 300 s, plus auto_restore_after), and
`killgate drill restore ID`, run with the same token as told, was refused too. On a
production drill that is a kill of what users are served by. Real `killgate serve`
processes on a real redis (tests/drillfleet.py's rig)."""

from __future__ import annotations

import asyncio
import json
import os

import pytest
from aiohttp import ClientSession

from tests import cli_fork, cli_fork_serve
from tests.conftest import ROOT, admin_token
from tests.drillfleet import Fleet, fleet_fixture, fleet_state, settled_state, token  # noqa: F401

pytestmark = pytest.mark.timeout(120)


async def test_a_token_that_expires_before_the_restore_is_refused_up_front(
        fleet: Fleet, session: ClientSession, tmp_path) -> None:
    before = await settled_state(session, fleet)
    # (the CLI fork server started first, if this process has none yet: the token's 2 s
    # are the drill's own, not the server's imports)
    await asyncio.to_thread(cli_fork_serve.started)
    short = admin_token("killgate:drill killgate:read", "dana", 2)
    try:
        # (forked from a process that imported the CLI, tests/cli_fork.py: the token's 2 s
        # are not spent on an interpreter's imports)
        res = await asyncio.to_thread(cli_fork.run, [
            "drill", "kill", "--route", "iris-drill", "--version", "v2", "--rate", "20",
            "--steady", "1s", "--hold", "36s", "--settle", "1s", "--json", "--out",
            str(tmp_path), "--admin", fleet.admin, "--token", short],
            dict(os.environ), str(ROOT), 60)
        report = json.loads(res.stdout)
        assert res.returncode == 2, (report, res.stderr)
        assert report["id"] is None and report["verdict"] == "aborted", report
        assert "token" in report["reasons"][0] and "expires" in report["reasons"][0], report
        assert await fleet_state(session, fleet) == before
    finally:  # (before the fix: the drill it left open, restored with a live token)
        hdr = {"Authorization": f"Bearer {token()}"}
        async with session.get(fleet.admin + "/v1/drills", headers=hdr) as r:
            left = (await r.json())["open"]
        for d in left:
            for step in ("restore", "end"):
                async with session.post(f"{fleet.admin}/v1/drills/{d['id']}/{step}?wait=2s",
                                        json={"reason": "test cleanup",
                                              **({"verdict": "aborted"} if step == "end"
                                                 else {})}, headers=hdr) as r:
                    assert r.status == 200, await r.text()
