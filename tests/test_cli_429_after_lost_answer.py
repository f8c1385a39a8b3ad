"""A write's resend refused 429 too_many_attempts says nothing of the try before it: with
`--workers N` any worker answers the admin API, and one that has not seen the token
refuses the resend before checking it, while the first try (its answer lost) may have
been applied by another (revlast review of f2ff24c)."""

from __future__ import annotations

import asyncio

import pytest
from aiohttp import web

from tests.backends import fake_admin
from tests.test_cli import acli

pytestmark = pytest.mark.timeout(60)


async def test_a_429_after_a_lost_answer_does_not_say_nothing_was_done(backends) -> None:
    """The first send got no answer within --timeout (it may have been applied: a kill in
    force, or an unkill that lifted one); the resend met a 429 before its token was
    checked. The CLI said 'nothing was done' and, the 429 lasting past --timeout, exited 1
    with the 429 alone: the operator read the kill (or the unkill) as not done."""
    sent: list[str] = []

    async def handler(req: web.Request) -> web.StreamResponse:
        sent.append(req.headers.get("Idempotency-Key", ""))
        if len(sent) == 1:
            await asyncio.sleep(30)  # applied, say; the answer never comes in time
        return web.json_response(
            {"error": {"type": "too_many_attempts",
                       "message": "too many token checks from this address; a token used "
                                  "before is still accepted, a new one after 1s"}},
            status=429, headers={"Retry-After": "1"})

    env = await fake_admin(backends, handler)
    res = await acli("kill", "--global", "--reason", "x", "--timeout", "1.5", env=env)
    assert res.returncode == 1, res
    assert len(sent) >= 3 and len(set(sent)) == 1, sent  # waited out once, the same key
    assert "429 too_many_attempts" in res.stderr, res.stderr
    assert "(nothing was done)" not in res.stderr, res.stderr
    assert "may have been applied" in res.stderr, res.stderr
