"""`POST /v1/audit/trim` and `killgate audit trim [--dry-run]` against real stores
(redis-server, the local files), the in-process gateway's real admin listener and the
real CLI: a trim now, back to the bounds though the trail is not 10% past them (the
periodic look waits for that), recorded by a signed `audit.trim` checkpoint whose actor is
the caller; a dry run that removes nothing; and a clear 4xx, nothing changed, for every
bad input, a trim already running, a trail that does not verify, and retention off.
"""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import pytest
from aiohttp import ClientSession

from tests.backends import echo_app
from tests.conftest import admin_token, running_gateway, two_versions, write_config
from tests.test_audit import TOKEN, H, _write_events
from tests.test_audit_retention import KEY_ENV, _fill, _state, _trim_batches_of_ten, _verify
from tests.test_cli import cli

pytestmark = pytest.mark.timeout(30)

URL = "/v1/audit/trim"


async def _post(session: ClientSession, url: str, body: Any = None,
                headers: dict[str, str] | None = None, **kw: Any) -> tuple[int, dict[str, Any]]:
    async with session.post(url, headers={**H, **(headers or {})},
                            **({"json": body} if body is not None else {}), **kw) as r:
        return r.status, await r.json()


async def _to(g: Any, total: int) -> int:
    """The trail filled to `total` events (the bound is 100: not 10% past it)."""
    n = len(await g.gw.sync.store.audit_events())
    await _fill(g, total - n)
    assert len(await g.gw.sync.store.audit_events()) == total
    return total


@pytest.mark.parametrize("backend", ["local", "redis"])
async def test_a_manual_trim_trims_now_once_per_key_and_a_dry_run_changes_nothing(
        tmp_path: Path, backends, session, request: pytest.FixtureRequest,
        backend: str) -> None:
    p = await backends(echo_app("v1"))
    redis = request.getfixturevalue("redis_server") if backend == "redis" else None
    cfg = write_config(tmp_path, two_versions(p, p), state=_state(tmp_path, redis))
    async with running_gateway(cfg) as g:
        store = g.gw.sync.store
        n = await _to(g, 108)
        assert await g.gw.sync.retention.look() == 0  # (not 10% past: the task waits)
        before = await store.audit_events()
        status, dry = await _post(session, g.admin + URL + "?dry_run=true")
        assert status == 200, dry
        assert dry == {"dry_run": True, "events": n, "would_remove": n - 100, "more": False}
        assert await store.audit_events() == before
        key = {"Idempotency-Key": "trim-1"}
        status, done = await _post(session, g.admin + URL, {"reason": "cut it now"}, key)
        assert status == 200 and done["removed"] == n - 100 and done["events"] == 101, done
        events = await store.audit_events()
        ck = events[-1]
        assert len(events) == 101 and [ck["id"]] == done["checkpoints"]
        assert (ck["action"], ck["actor"]) == ("audit.trim", "alice")
        assert ck["reason"].startswith("cut it now (manual trim; retention: max_events 100")
        # the same key again: the first answer, no second trim
        async with session.post(g.admin + URL, headers={**H, **key},
                                json={"reason": "cut it now"}) as r:
            assert r.status == 200 and r.headers.get("idempotent-replayed") == "true"
            assert await r.json() == done
        assert [e["action"] for e in await store.audit_events()].count("audit.trim") == 1
        # (the trail: the 100 kept, the checkpoint, the retry's replay record)
        assert len(await store.audit_events()) == 102
        res = await asyncio.to_thread(_verify, g.admin)
        assert res.returncode == 0 and f"{n - 100} older event(s)" in res.stdout, res.stdout


async def test_every_bad_call_is_a_clear_4xx_and_changes_nothing(
        tmp_path: Path, backends, session, redis_server) -> None:
    p = await backends(echo_app("v1"))
    cfg = write_config(tmp_path, two_versions(p, p), state=_state(tmp_path, redis_server))
    async with running_gateway(cfg) as g:
        store = g.gw.sync.store
        await _to(g, 108)
        before = await store.audit_events()
        url = g.admin + URL
        read = {"Authorization": f"Bearer {admin_token('killgate:read')}"}
        kill = {"Authorization": f"Bearer {admin_token('killgate:kill')}"}
        for what, (call, (status, kind)) in {
            "no reason": ((url, {}), (400, "bad_request")),
            "empty reason": ((url, {"reason": "  "}), (400, "bad_request")),
            "unknown field": ((url, {"reason": "x", "max_events": 1}), (400, "bad_request")),
            "dry_run=maybe": ((url + "?dry_run=maybe", {"reason": "x"}), (400, "bad_request")),
            "dry_run twice": ((url + "?dry_run=true&dry_run=false", None), (400, "bad_request")),
            "a body no object": ((url, [1]), (400, "bad_request")),
            "a read token": ((url, {"reason": "x"}, read), (403, "forbidden")),
            "a kill token": ((url, {"reason": "x"}, kill), (403, "forbidden")),
        }.items():
            got, body = await _post(session, *call)
            assert (got, body["error"]["type"]) == (status, kind), (what, body)
            assert body["error"]["message"], body
        async with session.post(url, headers=H, data=b"reason=x",
                                params={}) as r:  # (not JSON)
            assert r.status == 415, await r.text()
        async with session.post(url, json={"reason": "x"}) as r:  # (no token)
            assert r.status == 401
        # a trim already running on this instance (its periodic look): 409, then it goes
        async with g.gw.sync.retention.lock:
            status, body = await _post(session, url, {"reason": "x"})
            assert (status, body["error"]["type"]) == (409, "trim_running"), body
            status, body = await _post(session, url + "?dry_run=true")
            assert (status, body["error"]["type"]) == (409, "trim_running"), body
        # an Idempotency-Key used for another body
        k = {"Idempotency-Key": "k1"}
        status, _ = await _post(session, url + "?dry_run=true", None, k)
        assert status == 200
        assert await store.audit_events() == before  # (nothing of the above changed it)
        # a trail that does not verify (events deleted without a checkpoint): 409 with
        # the break named, dry run or not, and the break stays in sight
        broken = before[3:]
        await _write_events(store, tmp_path, redis_server, broken)
        for q in ("?dry_run=true", ""):
            status, body = await _post(session, url + q, {"reason": "x"})
            assert (status, body["error"]["type"]) == (409, "trail_broken"), body
            assert "does not verify" in body["error"]["message"], body
        assert await store.audit_events() == broken


async def test_retention_off_is_a_409_and_the_cli_says_what_to_do(
        tmp_path: Path, backends) -> None:
    p = await backends(echo_app("v1"))
    state = (f"state:\n  backend: local\n  path: {tmp_path}/store.json\n"
             f"  snapshot_path: {tmp_path}/snapshot.json\n  signing_key_env: {KEY_ENV}\n")
    cfg = write_config(tmp_path, two_versions(p, p), state=state)
    async with running_gateway(cfg) as g:
        before = await g.gw.sync.store.audit_events()
        res = await asyncio.to_thread(cli, "audit", "trim", "--reason", "x", "--admin",
                                      g.admin, "--token", TOKEN)
        assert res.returncode == 1 and "409" not in res.stdout, res
        assert "audit retention is off" in res.stderr, res.stderr
        assert await g.gw.sync.store.audit_events() == before


async def test_the_cli_trims_and_dry_runs(tmp_path: Path, backends, redis_server) -> None:
    p = await backends(echo_app("v1"))
    cfg = write_config(tmp_path, two_versions(p, p), state=_state(tmp_path, redis_server))
    async with running_gateway(cfg) as g:
        n = await _to(g, 105)
        opts = ("--admin", g.admin, "--token", TOKEN)

        def run(*args: str) -> Any:
            return asyncio.to_thread(cli, "audit", *args, *opts)

        res = await run("trim")  # (no --reason: refused before any call)
        assert res.returncode == 1 and "needs --reason" in res.stderr, res
        res = await run("--reason", "x")  # (--reason without trim)
        assert res.returncode == 1 and "`killgate audit trim` only" in res.stderr, res
        res = await run("trim", "--dry-run")
        assert res.returncode == 0, res.stderr
        assert f"would remove the oldest {n - 100} of {n} events" in res.stdout, res.stdout
        assert len(await g.gw.sync.store.audit_events()) == n
        res = await run("trim", "--reason", "after lowering max_events")
        assert res.returncode == 0, res.stderr
        assert f"removed the oldest {n - 100} events" in res.stdout, res.stdout
        assert len(await g.gw.sync.store.audit_events()) == 101


def test_audit_help_names_trim_and_its_options() -> None:
    res = cli("audit", "--help")
    assert res.returncode == 0
    for word in ("{verify,trim}", "--dry-run", "--reason", "killgate:admin"):
        assert word in res.stdout, res.stdout


async def test_a_manual_trim_stopped_by_a_break_says_so(
        tmp_path: Path, backends, redis_server, session: ClientSession,
        monkeypatch: pytest.MonkeyPatch) -> None:
    """A manual trim goes batch after batch; one that meets a break past the first batches
    (an event deleted there) removes what verified before it and stops. Its answer said
    `removed: 30` and nothing more (the CLI: 'removed the oldest 30 events', exit 0), as a
    trim back to the bounds: the break, tamper evidence, said only in the gateway's log.
    It now says the trim stopped at a break, naming it, and the CLI exits 1."""
    _trim_batches_of_ten(monkeypatch)
    p = await backends(echo_app("v1"))
    cfg = write_config(tmp_path, two_versions(p, p), state=_state(tmp_path, redis_server))
    async with running_gateway(cfg) as g:
        store = g.gw.sync.store
        await _to(g, 150)
        before = await store.audit_events()
        gone = before[40]
        await _write_events(store, tmp_path, redis_server, before[:40] + before[41:])
        status, done = await _post(session, g.admin + URL, {"reason": "x"})
        assert status == 200 and done["removed"] == 30, done
        assert done.get("broken") is True, done
        assert "does not verify" in done["why"] and "stopped" in done["why"], done
        events = await store.audit_events()
        assert not any(e["id"] == gone["id"] for e in events)
        assert any(e["id"] == before[41]["id"] for e in events)  # (the break stays)
        # the CLI: what was removed, and the break, exit 1
        res = await asyncio.to_thread(cli, "audit", "trim", "--reason", "x", "--admin",
                                      g.admin, "--token", TOKEN)
        assert res.returncode == 1, res
        assert "does not verify" in res.stderr, res.stderr
