"""A redis backup restored at the same generation, only events that change no state (a
reload's, an idempotent retry's record, an approval step's) lost since it was taken (real
redis-server: SAVE, the dump file copied aside and put back, redis restarted on it; real
gateways; the real CLI). Before, nothing was re-seeded: the store's document was the one
this instance held, so the next event continued the newer head this instance knew, `audit
verify` said BROKEN and retention refused the break for good (`audit_trim_refused` every
hour, the trail growing without bound). A store document of this instance's generation and
write, with fewer events than this instance saw (`audit_seq`), is now behind, as an older
generation is: re-seeded, the re-seed continuing the store's trail and naming the head it
lost (`anchored_head`), which `audit verify` reports and retention trims once past its
bounds. The reverse, a store AHEAD at the same generation (another instance's newer events
that change no state), is continued, never re-seeded.
"""

from __future__ import annotations

import asyncio
import shutil
from pathlib import Path
from typing import Any

import pytest

from gateway.cli.statuswarn import store_warnings
from gateway.domain.audit import AuditDraft
from tests.backends import echo_app
from tests.conftest import RedisServer, running_gateway, two_versions, wait_until, write_config
from tests.test_audit import H
from tests.test_audit_retention import RETAIN, _fill
from tests.test_keyed_audit import KEY, events_in, verify
from tests.test_killswitch import redis_state

pytestmark = pytest.mark.timeout(30)


def _cfg(tmp: Path, p: Any, redis: RedisServer, name: str = "a") -> Path:
    (tmp / name).mkdir(exist_ok=True)
    return write_config(tmp / name, two_versions(p, p), state=redis_state(
        redis, tmp, name=name, extra=RETAIN % "1h"))


async def _kill(session: Any, admin: str, **body: Any) -> None:
    body = {"reason": "r", **(body or {"scope": "route", "route": "iris"})}
    async with session.post(admin + "/v1/kill", headers=H, json=body) as r:
        assert r.status == 200, await r.text()


def _backup(redis: RedisServer, to: Path) -> None:
    assert redis.cmd("SAVE") == "OK"
    shutil.copyfile(redis.workdir / "dump.rdb", to)


def _restore(redis: RedisServer, backup: Path) -> None:
    redis.kill()
    shutil.copyfile(backup, redis.workdir / "dump.rdb")
    redis.start()


@pytest.mark.parametrize("since", ["events only", "a kill too"])
async def test_a_backup_restored_behind_is_reseeded_and_trimmed(
        tmp_path: Path, backends, session, redis_server: RedisServer, since: str) -> None:
    """(`a kill too`: a generation older than this instance's, the re-seed of a running
    instance continued its own head, not the store's: a break retention refused as well)"""
    p = await backends(echo_app("v1"))
    async with running_gateway(_cfg(tmp_path, p, redis_server)) as g:
        store = g.gw.sync.store
        keyed = {**H, "Idempotency-Key": "k"}
        async with session.post(g.admin + "/v1/kill", headers=keyed,
                                json={"scope": "route", "route": "iris", "reason": "r"}) as r:
            assert r.status == 200, await r.text()
        _backup(redis_server, tmp_path / "backup.rdb")
        kept = events_in(redis_server)[-1]
        if since == "a kill too":
            await _kill(session, g.admin, scope="global")
        gen = g.gw.holder.doc.generation
        async with session.post(g.admin + "/v1/kill", headers=keyed,
                                json={"scope": "route", "route": "iris", "reason": "r"}) as r:
            assert r.status == 200 and r.headers.get("idempotent-replayed") == "true"
        await _fill(g, 2)  # (events that change no state: the generation stays)
        assert g.gw.holder.doc.generation == gen
        lost = (await store.audit_events())[-1]
        _restore(redis_server, tmp_path / "backup.rdb")
        assert events_in(redis_server)[-1] == kept  # (the restored trail's end)

        def reseeded() -> list[dict[str, Any]]:
            events = events_in(redis_server)
            return events if events[-1]["action"] == "state.reseed" else []

        events = await wait_until(reseeded, 5, what="the re-seed of a store behind")
        reseed = events[-1]
        # it continues the store's trail, and names what the store lost
        assert reseed["prev_hash"] == kept["hash"] and reseed["anchored_head"] == lost["hash"]
        await wait_until(lambda: g.gw.holder.doc.generation == gen + 1, 5,
                         what="the re-seed applied")
        assert ("global" in g.gw.holder.doc.kills) is (since == "a kill too")  # (kept)
        st = {"store": g.gw.sync.status()}  # (said: /v1/status, killgate status, a metric)
        assert st["store"]["audit"]["trail_lost"]["anchored_head"] == lost["hash"]
        assert any(w.startswith("AUDIT TRAIL LOST") for w in store_warnings(st))
        assert g.gw.metrics.get("killgate_audit_trail_lost_total") == 1
        res = await asyncio.to_thread(verify, g.admin, *KEY)
        assert res.returncode == 1 and "not in the trail before it" in res.stderr, res
        assert lost["hash"][:16] in res.stderr, res.stderr  # (the head lost, named)
        await _kill(session, g.admin, scope="version", route="iris", version="v2")
        assert (await store.audit_events())[-1]["prev_hash"] == reseed["hash"]
        await _fill(g, 99)  # (with the kill, 100 after the re-seed: it is past the bound)
        async with session.post(g.admin + "/v1/audit/trim", headers=H,
                                json={"reason": "after the restore"}) as r:
            done = await r.json()
            assert r.status == 200 and done["removed"] == len(events), done
        ck = (await store.audit_events())[-1]
        assert ck["after"]["starts_after"]["lost_before"] == lost["hash"], ck["after"]
        res = await asyncio.to_thread(verify, g.admin, *KEY)
        assert res.returncode == 0, res.stdout + res.stderr


async def test_a_store_ahead_at_the_same_generation_is_continued_not_reseeded(
        tmp_path: Path, backends, session, redis_server: RedisServer) -> None:
    """Another instance appended events that change no state while this one was stopped
    (its snapshot: the generation, fewer events), and while it runs: this instance takes
    the store's newer trail and continues it."""
    p = await backends(echo_app("v1"))
    a_cfg, b_cfg = _cfg(tmp_path, p, redis_server, "a"), _cfg(tmp_path, p, redis_server, "b")
    async with running_gateway(b_cfg, "b") as b:
        async with running_gateway(a_cfg, "a") as a:
            await _kill(session, a.admin)
            await wait_until(lambda: b.gw.holder.doc.generation == a.gw.holder.doc.generation,
                             5, what="b to apply a's kill")
            await _fill(b, 2)
            head = (await b.gw.sync.store.audit_events())[-1]["hash"]
            await wait_until(lambda: head.encode() in (tmp_path / "snapshot-a.json")
                             .read_bytes(), 5, what="a to snapshot b's events")
        await _fill(b, 2)  # (a stopped: its snapshot is behind the store)
        ahead = (await b.gw.sync.store.audit_events())[-1]["hash"]
        async with running_gateway(a_cfg, "a") as a:
            await a.gw.sync.append_audit(AuditDraft(actor="alice", action="reload",
                                                    target={}, reason="after"))
            await _fill(b, 1)
            await _kill(session, a.admin, scope="global")
            events = await a.gw.sync.store.audit_events()
            assert not [e for e in events if e["action"] == "state.reseed"], events
            assert events[-4]["hash"] == ahead and events[-3]["prev_hash"] == ahead
            res = await asyncio.to_thread(verify, a.admin, *KEY)
            assert res.returncode == 0, res.stdout + res.stderr
