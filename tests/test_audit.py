"""The audit trail: hash chain, tamper detection, refusing actions it cannot record,
idempotent retries, and log-injection-safe reasons."""

from __future__ import annotations

import asyncio
import json
import subprocess
from pathlib import Path

import pytest
from aiohttp import ClientSession

from gateway.domain.audit import GENESIS, AuditDraft, event_hash, seal
from gateway.domain.auditverify import verify_chain
from tests.backends import echo_app
from tests.conftest import (
    admin_token,
    bearer,
    running_gateway,
    two_versions,
    wait_until,
    write_config,
)
from tests.faultproxy import redis_state_via
from tests.test_cli import cli
from tests.test_killswitch import redis_state

TOKEN = admin_token("killgate:admin", "alice", 3 * 3600)
H = {"Authorization": f"Bearer {TOKEN}"}


def test_hash_is_the_documented_canonical_sha256() -> None:
    import hashlib

    ev = seal({"id": "1", "time": "t", "reason": "é"}, GENESIS)
    body = {k: v for k, v in ev.items() if k != "hash"}
    raw = json.dumps(body, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    assert ev["hash"] == hashlib.sha256(raw.encode()).hexdigest() == event_hash(ev)


def test_an_entry_that_is_no_object_is_a_break_not_a_crash() -> None:
    """(an answer from something other than this API, a list where an event belongs)"""
    first = seal(AuditDraft("a", "kill", {}, "r").as_event(), GENESIS)
    _, brk = verify_chain([first, [], "x"])  # type: ignore[list-item]
    assert brk is not None and (brk.index, brk.event_id) == (1, "#1"), brk
    assert "not an audit event" in brk.problem


def test_control_characters_are_escaped() -> None:
    ev = AuditDraft("al\nice", "kill", {}, "line1\r\nFAKE EVENT\x1b[31m").as_event()
    assert "\n" not in ev["reason"] and "\r" not in ev["reason"] and "\x1b" not in ev["reason"]
    assert ev["reason"] == "line1\\r\\nFAKE EVENT\\x1b[31m" and ev["actor"] == "al\\nice"


async def _actions(session: ClientSession, admin: str) -> None:
    calls = [
        ("POST", "/v1/kill", {"scope": "route", "route": "iris", "reason": "bad\nline"}),
        ("POST", "/v1/unkill", {"scope": "route", "route": "iris", "reason": "ok"}),
        ("PUT", "/v1/routes/iris/weights", {"weights": {"v1": 50, "v2": 50}, "reason": "shift"}),
        ("POST", "/v1/routes/iris/promote", {"version": "v2", "reason": "ship"}),
        ("POST", "/v1/routes/iris/rollback", {"reason": "back"}),
        ("POST", "/v1/routes/iris/release", {"reason": "file"}),
        ("POST", "/v1/kill", {"scope": "version", "route": "iris", "version": "v2",
                              "reason": "again"}),
    ]
    for method, path, body in calls:
        async with session.request(method, admin + path, json=body, headers=H) as r:
            assert r.status == 200, await r.text()


def _verify(admin: str) -> subprocess.CompletedProcess[str]:
    return cli("audit", "verify", "--admin", admin, "--token", TOKEN)


@pytest.mark.parametrize("backend", ["local", "redis"])
async def test_chain_verifies_and_every_tampering_is_caught(tmp_path: Path, backends, session,
                                                            request, backend: str) -> None:
    p = await backends(echo_app("v1"))
    redis = request.getfixturevalue("redis_server") if backend == "redis" else None
    state = redis_state(redis, tmp_path) if redis else None
    cfg = write_config(tmp_path, two_versions(p, p), state=state)
    async with running_gateway(cfg) as g:
        await _actions(session, g.admin)
        res = await asyncio.to_thread(_verify, g.admin)
        assert res.returncode == 0, res.stdout + res.stderr
        events = await g.gw.sync.store.audit_events()
        actions = [e["action"] for e in events]
        assert actions[-7:] == ["kill", "unkill", "weights", "promote", "rollback", "release",
                                "kill"]
        assert verify_chain(events)[1] is None
        # every kind of tampering, on the stored events themselves
        for how in ("edit", "delete", "reorder", "insert", "truncate"):
            await _tamper(g.gw.sync.store, tmp_path, redis, how)
            res = await asyncio.to_thread(_verify, g.admin)
            assert res.returncode == 1, (how, res.stdout)
            assert "BROKEN at event #" in res.stderr
            await _restore(g.gw.sync.store, tmp_path, redis, events)
            assert (await asyncio.to_thread(_verify, g.admin)).returncode == 0, how


async def _tamper(store, tmp: Path, redis, how: str) -> None:  # type: ignore[no-untyped-def]
    events = await store.audit_events()
    i = len(events) - 3
    if how == "edit":
        events[i] = {**events[i], "reason": "nothing to see"}
    elif how == "delete":
        del events[i]
    elif how == "reorder":
        events[i], events[i + 1] = events[i + 1], events[i]
    elif how == "truncate":  # a valid chain, two events short of the recorded head
        del events[-2:]
    else:
        events.insert(i, seal({"id": "forged", "action": "kill"}, events[i - 1]["hash"]))
    await _write_events(store, tmp, redis, events)


async def _restore(store, tmp: Path, redis, events: list[dict]) -> None:  # type: ignore[no-untyped-def]
    await _write_events(store, tmp, redis, events)


async def _write_events(store, tmp: Path, redis, events: list[dict]) -> None:  # type: ignore[no-untyped-def]
    if redis is None:
        store.audit_path.write_text("".join(json.dumps(e, ensure_ascii=False) + "\n"
                                            for e in events))
        return
    redis.cmd("DEL", "kgtest:audit")
    for e in events:
        redis.cmd("XADD", "kgtest:audit", "*", "e", json.dumps(e, ensure_ascii=False))


async def test_readonly_redis_refuses_the_kill_and_changes_nothing(tmp_path: Path, backends,
                                                                   session, redis_server) -> None:
    p = await backends(echo_app("v1"))
    cfg = write_config(tmp_path, two_versions(p, p), state=redis_state(redis_server, tmp_path))
    async with running_gateway(cfg) as g:
        gen = g.gw.holder.doc.generation
        redis_server.cmd("REPLICAOF", "127.0.0.1", "1")  # a replica: every write is READONLY
        try:
            async with session.post(g.admin + "/v1/kill", headers=H,
                                    json={"scope": "global", "reason": "x"}) as r:
                assert r.status == 503
                assert (await r.json())["error"]["type"] == "audit_unavailable"
        finally:
            redis_server.cmd("REPLICAOF", "NO", "ONE")
        assert g.gw.holder.doc.generation == gen and g.gw.holder.doc.kills == {}
        assert "global" not in redis_server.cmd("GET", "kgtest:state")
        async with session.get(g.url + "/v2/models/iris/x") as r:
            assert r.status == 200


async def test_unwritable_audit_file_refuses_the_kill(tmp_path: Path, backends, session) -> None:
    p = await backends(echo_app("v1"))
    cfg = write_config(tmp_path, two_versions(p, p))
    async with running_gateway(cfg) as g:
        audit = g.gw.sync.store.audit_path
        audit.unlink(missing_ok=True)
        audit.mkdir()  # cannot be opened for appending (even by root)
        before = (tmp_path / "store.json").read_bytes()
        async with session.post(g.admin + "/v1/kill", headers=H,
                                json={"scope": "global", "reason": "x"}) as r:
            assert r.status == 503
        assert (tmp_path / "store.json").read_bytes() == before
        assert g.gw.holder.doc.kills == {}


async def test_retried_write_with_the_same_idempotency_key_acts_once(tmp_path: Path, backends,
                                                                     session) -> None:
    p = await backends(echo_app("v1"))
    cfg = write_config(tmp_path, two_versions(p, p))
    async with running_gateway(cfg) as g:
        n0 = len(await g.gw.sync.store.audit_events())
        body = {"scope": "route", "route": "iris", "reason": "retry me"}
        hdr = {**H, "Idempotency-Key": "k-123"}
        answers = []
        for _ in range(3):
            async with session.post(g.admin + "/v1/kill", headers=hdr, json=body) as r:
                assert r.status == 200
                answers.append(await r.json())
        assert len({a["generation"] for a in answers}) == 1
        # one action record plus one replay record per retry (RELIABILITY row 47)
        new = (await g.gw.sync.store.audit_events())[n0:]
        assert [e["action"] for e in new] == ["kill", "replay", "replay"]
        assert all(e["target"] == {"method": "POST", "path": "/v1/kill",
                                   "generation": answers[0]["generation"],
                                   "audit_id": new[0]["id"]} and e["actor"] == "alice"
                   for e in new[1:])
        assert len(g.gw.holder.doc.kills) == 1
        async with session.post(g.admin + "/v1/kill", headers=hdr,
                                json={**body, "reason": "different"}) as r:
            assert r.status == 409
            assert (await r.json())["error"]["type"] == "idempotency_key_reused"


async def test_a_repeated_kill_changes_nothing(tmp_path: Path, backends, session) -> None:
    """A retry after `outcome_unknown`, or a second operator, without an Idempotency-Key:
    the kill stays as first made (who, when, why), no new generation, no second event."""
    p = await backends(echo_app("v1"))
    cfg = write_config(tmp_path, two_versions(p, p))
    bob = bearer("killgate:kill", "bob", 600)
    async with running_gateway(cfg) as g:
        n0 = len(await g.gw.sync.store.audit_events())
        answers = []
        for hdr, reason in ((H, "first"), (H, "first"), (bob, "me too")):
            async with session.post(g.admin + "/v1/kill", headers=hdr,
                                    json={"scope": "route", "route": "iris",
                                          "reason": reason}) as r:
                assert r.status == 200, await r.text()
                answers.append(await r.json())
        assert [a["changed"] for a in answers] == [True, False, False]
        assert len({a["generation"] for a in answers}) == 1
        assert [e["action"] for e in (await g.gw.sync.store.audit_events())[n0:]] == ["kill"]
        flag = g.gw.holder.doc.kills["route:iris"]
        assert (flag.actor, flag.reason) == ("alice", "first")


async def test_instances_behind_the_store_act_on_the_store_not_their_copy(
        tmp_path: Path, backends, session, fwd) -> None:
    """Two instances whose subscriptions have gone deaf (muted half-open links; their
    polls are a minute away): B has not heard of A's kill when asked to lift it, and A has
    not heard of B's unkill when asked to kill again. Each must act on the store's state:
    the unkill is made, not refused as "not killed", and the kill is made, not answered
    "already in force" while nothing is killed."""
    p = await backends(echo_app("v1"))
    cfgs = []
    for name in ("a", "b"):
        (tmp_path / name).mkdir()
        state = redis_state_via(fwd, tmp_path / name, "kgbehind", poll_interval="60s",
                                heartbeat_interval="20s", instance_lease="2m",
                                max_staleness="2m")
        cfgs.append(write_config(tmp_path / name, two_versions(p, p), state=state))
    body = {"scope": "route", "route": "iris", "reason": "bad"}
    async with running_gateway(cfgs[0], "a") as a, running_gateway(cfgs[1], "b") as b:
        subs = lambda: [ln for ln in fwd.links if b"SUBSCRIBE" in ln.head]  # noqa: E731
        await wait_until(lambda: len(subs()) == 2, 5, what="both subscriptions")
        for link in subs():
            link.muted = True
        async with session.post(a.admin + "/v1/kill?wait=0s", headers=H, json=body) as r:
            assert r.status == 200 and (await r.json())["changed"] is True
        assert "route:iris" not in b.gw.holder.doc.kills  # B is behind
        async with session.post(b.admin + "/v1/unkill?wait=0s", headers=H, json=body) as r:
            assert r.status == 200, await r.text()
        assert "route:iris" in a.gw.holder.doc.kills  # A is behind
        async with session.post(a.admin + "/v1/kill?wait=0s", headers=H, json=body) as r:
            assert r.status == 200 and (await r.json())["changed"] is True
        doc = (await a.gw.sync.store.load()).doc
        assert doc is not None and "route:iris" in doc.kills


@pytest.mark.parametrize("backend", ["redis", "local"])
async def test_audit_is_mirrored_to_a_jsonl_file(tmp_path: Path, backends, session,
                                                request: pytest.FixtureRequest,
                                                backend: str) -> None:
    p = await backends(echo_app("v1"))
    mirror = tmp_path / "audit-mirror.jsonl"
    if backend == "redis":
        redis_server = request.getfixturevalue("redis_server")
        state = redis_state(redis_server, tmp_path, extra=f"  audit_mirror: {mirror}\n")
    else:  # the local store's cursor is a byte offset into its own audit file
        state = (f"state:\n  backend: local\n  path: {tmp_path}/store.json\n"
                 f"  poll_interval: 50ms\n  audit_mirror: {mirror}\n")
    cfg = write_config(tmp_path, two_versions(p, p), state=state)
    async with running_gateway(cfg) as g:
        await _actions(session, g.admin)
        stored = await g.gw.sync.store.audit_events()

        def mirrored() -> list[dict]:
            if not mirror.exists():
                return []
            return [json.loads(line) for line in mirror.read_text().splitlines()]

        from tests.conftest import wait_until

        await wait_until(lambda: len(mirrored()) == len(stored), 5, what="the mirror")
    assert mirrored() == stored and verify_chain(mirrored())[1] is None
    # A restart resumes where the file ends, even when the cursor lags behind it (a stop
    # between appending a batch and saving the cursor): nothing is copied twice.
    mirror.with_name(mirror.name + ".cursor").unlink(missing_ok=True)  # (may not be saved yet)
    async with running_gateway(cfg) as g:
        async with session.post(g.admin + "/v1/kill", headers=H,
                                json={"scope": "global", "reason": "after restart"}) as r:
            assert r.status == 200
        await wait_until(lambda: len(mirrored()) == len(stored) + 1, 5, what="one more")
    assert verify_chain(mirrored())[1] is None
