"""A drill's restore waits out a 429 too_many_attempts as the admin CLI does (f2ff24c):
with `--workers N` any worker answers the admin API, and one that has not seen the drill's
token refuses it unchecked during a flood of junk tokens (revlast review)."""

from __future__ import annotations

import pytest
from aiohttp import web

from tests.test_cli import acli

pytestmark = pytest.mark.timeout(60)


async def test_drill_restore_waits_out_a_429(backends) -> None:
    """`killgate drill restore` retried a 503 and an unreachable API for 30 s, but failed
    at the first 429 too_many_attempts: the drill's kill stayed in force, traffic stopped,
    until drills.auto_restore_after (the drill run's own restore is the same call)."""
    seen: list[str] = []
    state = {"route": "iris", "killed": False}

    async def handler(req: web.Request) -> web.StreamResponse:
        seen.append(req.path)
        if req.path.endswith("/restore") and seen.count(req.path) == 1:
            return web.json_response(
                {"error": {"type": "too_many_attempts",
                           "message": "too many token checks from this address; a token "
                                      "used before is still accepted, a new one after 1s"}},
                status=429, headers={"Retry-After": "1"})
        if req.path.endswith("/restore"):
            return web.json_response({"undone": [{"kill": "route:iris"}], "before": state,
                                      "state": state, "applied": {"pending": []}})
        return web.json_response({"ended": True})

    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", handler)
    port = await backends(app)
    env = {"KILLGATE_ADMIN_URL": f"http://127.0.0.1:{port}", "KILLGATE_TOKEN": "tok.en.x"}
    res = await acli("drill", "restore", "d-0123456789abcdef", "--reason", "r", env=env)
    assert res.returncode == 0, res
    assert "restored" in res.stdout and "NOT restored" not in res.stdout, res
    assert seen.count("/v1/drills/d-0123456789abcdef/restore") == 2, seen
    assert "too_many_attempts" in res.stderr or "429" in res.stderr, res.stderr
