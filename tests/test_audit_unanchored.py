"""Audit events past the anchored head: appended by someone who can write to Redis.

Every event a gateway writes is committed with the signed state document that anchors it
(`audit_head`), in one script. Someone who can write to Redis but holds no key can still
XADD a well-formed event after the newest one: its hash is right (anyone can compute it)
and its `prev_hash` links to the anchored head. Without the audit key (the console, and
`killgate audit verify` run without one) the links and hashes all check out and the
anchored head is in the trail: the forgery passed as verified, naming any actor and
action. It is past the anchor, and that is what gives it away.
"""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

import pytest
from aiohttp import ClientSession

from gateway.domain.audit import seal
from tests.backends import echo_app
from tests.conftest import RedisServer, running_gateway, two_versions, write_config
from tests.test_keyed_audit import KEY, H, events_in, verify
from tests.test_killswitch import redis_state

pytestmark = pytest.mark.timeout(60)


async def _kill_unkill(s: ClientSession, admin: str, reason: str) -> None:
    for path in ("/v1/kill", "/v1/unkill"):
        async with s.post(admin + path, headers=H, json={
                "scope": "route", "route": "iris", "reason": reason}) as r:
            assert r.status == 200, await r.text()


def _forge_after_head(redis: RedisServer) -> dict[str, Any]:
    last = events_in(redis)[-1]
    forged = {k: v for k, v in last.items() if k not in ("hash", "mac", "kid", "prev_hash")}
    forged.update(id="f" * 32, actor="bob", action="unkill",
                  reason="approved by the CTO on the phone")
    ev = seal(forged, last["hash"])  # no key: no MAC
    redis.cmd("XADD", "kgtest:audit", "*", "e", json.dumps(ev, ensure_ascii=False))
    return ev


async def test_an_event_appended_past_the_anchored_head_is_a_break(
        tmp_path: Path, backends, session, redis_server: RedisServer) -> None:
    p = await backends(echo_app("v1"))
    cfg = write_config(tmp_path, two_versions(p, p), state=redis_state(redis_server, tmp_path))
    async with running_gateway(cfg) as g:
        await _kill_unkill(session, g.admin, "r")
        res = await asyncio.to_thread(verify, g.admin)
        assert res.returncode == 0, res.stderr
        forged = _forge_after_head(redis_server)
        async with session.get(g.admin + "/v1/audit?limit=5", headers=H) as r:
            page = await r.json()
        assert page["events"][0]["id"] == forged["id"]
        assert page["head"] == forged["prev_hash"]  # the signed document's, as ever
        for extra in ((), KEY):  # without the audit key too
            res = await asyncio.to_thread(verify, g.admin, *extra)
            assert res.returncode == 1, (extra, res.stdout)
            assert "BROKEN" in res.stderr and forged["id"] in res.stderr, res.stderr
            if not extra:
                assert "past the head" in res.stderr, res.stderr


@pytest.mark.parametrize("backend", ["redis", "local"])
async def test_the_audit_page_and_its_head_agree_while_writes_go_on(
        tmp_path: Path, backends, session, redis_server: RedisServer, backend: str) -> None:
    """No false alarm: the head is read before the page, and a write landing between the
    two reads must not leave the page's newest event past the head it answers with."""
    p = await backends(echo_app("v1"))
    state = redis_state(redis_server, tmp_path) if backend == "redis" else None
    cfg = write_config(tmp_path, two_versions(p, p), state=state)
    async with running_gateway(cfg) as g, ClientSession() as writer:
        stop = asyncio.Event()

        async def writes() -> None:
            n = 0
            while not stop.is_set():
                await _kill_unkill(writer, g.admin, f"w{n}")
                n += 1

        task = asyncio.create_task(writes())
        try:
            for _ in range(150):
                async with session.get(g.admin + "/v1/audit?limit=3", headers=H) as r:
                    page = await r.json()
                if page["events"]:
                    assert page["events"][0]["hash"] == page["head"], page
        finally:
            stop.set()
            await task
        res = await asyncio.to_thread(verify, g.admin, *(KEY if backend == "redis" else ()))
        assert res.returncode == 0, res.stderr
