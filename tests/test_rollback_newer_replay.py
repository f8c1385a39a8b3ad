"""A newer version's document replayed after the fleet rolled back past that version and
re-seeded (README, Upgrading: the state key deleted). Found by review revmerge36: every
document a newer version wrote was refused for good, whatever its generation, so whoever
can write to redis (no key needed: the document is genuine, kept from before the rollback)
put one back once and every kill through every instance answered 503
state_from_newer_version, and the fleet stayed unsynced (on_unavailable past max_staleness),
until an operator found it and deleted it again. A newer version's document older than the
verified one an instance holds (the re-seed's is as old: the generation key was left) is
no newer writer's current state but a replay: repaired as
any older document (a re-seed, audited), not counted as tampering; one newer than what it
holds is still refused (tests/test_upgrade_newer_state.py). Real redis-server, a real
gateway."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest
from aiohttp import ClientSession

from gateway.cli.admin import _status_text
from tests.backends import echo_app
from tests.conftest import RedisServer, bearer, running_gateway, two_versions, wait_until, write_config
from tests.staterig import redis_state
from tests.test_forgery import STATE_KEY, plant, sealed, stored_doc
from tests.test_killswitch import kill

pytestmark = pytest.mark.timeout(30)


async def _kill(session: ClientSession, admin: str, reason: str) -> tuple[int, str]:
    async with session.post(admin + "/v1/kill", headers=bearer("killgate:kill"),
                            json={"scope": "global", "reason": reason}) as r:
        body = await r.json()
        return r.status, body.get("error", {}).get("type", "")


async def test_a_newer_versions_document_replayed_after_a_rollback_is_repaired(
        tmp_path: Path, backends, redis_server: RedisServer, session: ClientSession) -> None:
    p = await backends(echo_app("v1"))
    cfg = write_config(tmp_path, two_versions(p, p), state=redis_state(redis_server, tmp_path))
    async with running_gateway(cfg) as g:
        sync = g.gw.sync
        await kill(session, g.admin, scope="version", route="iris", version="v2")
        doc = stored_doc(redis_server)
        newer = {**doc, "generation": doc["generation"] + 1, "quarantines": {"iris": {}}}
        value = await asyncio.to_thread(plant, redis_server, newer)  # (the newer version's)
        await wait_until(lambda: "newer version of killgate" in str(sync.last_error), 5,
                         what="the newer document refused")
        assert await _kill(session, g.admin, "INC-1") == (503, "state_from_newer_version")
        # said as a newer version's, not as a key problem (`killgate status` said "store
        # UNVERIFIABLE (check state.signing_key_env)" on every old instance mid-upgrade)
        async with session.get(g.admin + "/v1/status", headers=bearer("killgate:read")) as r:
            st = await r.json()
        assert st["store"]["newer_version"] is True and st["store"]["answering"], st["store"]
        out = _status_text(st)  # (what `killgate status` prints of that answer)
        assert "HOLDS A NEWER VERSION'S STATE" in out and "signing_key_env" not in out, out
        # rolled back: the state key deleted, the store re-seeded from what the instance holds
        redis_server.cmd("DEL", "kgtest:state")
        await wait_until(lambda: sync.connected and sync.last_error is None, 10,
                         what="the store re-seeded")
        # (at the newer document's generation: the generation key still said it)
        assert g.gw.holder.doc.generation >= newer["generation"]
        counted = dict(sync.tamper.counts)  # (the deleted key itself: 'gen set, state missing')
        await kill(session, g.admin, scope="route", route="iris")  # (the fleet goes on)
        assert g.gw.holder.doc.generation > newer["generation"]
        # the newer version's document put back (no key needed: it is genuine)
        redis_server.cmd("SET", "kgtest:state", value)
        redis_server.cmd("SET", "kgtest:gen", str(newer["generation"]))
        redis_server.cmd("PUBLISH", "kgtest:events", value)
        # the sync loop repairs it (a re-seed, as for any older document), and a kill
        # through this instance is written, never 503
        await wait_until(lambda: "quarantines" not in stored_doc(redis_server), 5,
                         what="the replay repaired")
        assert await _kill(session, g.admin, "INC-2") == (200, "")
        stored = stored_doc(redis_server)
        assert "quarantines" not in stored and "global" in stored["kills"], stored
        assert {"version:iris:v2", "route:iris"} <= set(stored["kills"]), stored
        await wait_until(lambda: sync.connected and stored_doc(redis_server)["generation"]
                         == g.gw.holder.doc.generation, 5, what="synced on its own document")
        assert sync.tamper.counts == counted, sync.tamper.status()  # (genuine: a replay)
        async with session.get(g.admin + "/v1/status", headers=bearer("killgate:read")) as r:
            assert (await r.json())["store"]["newer_version"] is False


async def test_a_newer_document_replayed_at_the_held_generation_is_judged_from_its_push(
        tmp_path: Path, backends, redis_server: RedisServer, session: ClientSession) -> None:
    """A newer version's genuine document put back at the generation the key already says
    (the key left as it is, the document pushed): the poll compares the generation and head
    keys alone, and the push was dropped unreported, so it sat in the store, unrepaired and
    unsaid, until the next write (an instance started meanwhile without a snapshot was not
    ready on it). The push now has the next poll judge the store: the replay is repaired
    (review impleft8); one newer than held is refused, loudly, as ever."""
    p = await backends(echo_app("v1"))
    cfg = write_config(tmp_path, two_versions(p, p), state=redis_state(redis_server, tmp_path))
    async with running_gateway(cfg) as g:
        sync = g.gw.sync
        await kill(session, g.admin, scope="version", route="iris", version="v2")
        doc = stored_doc(redis_server)
        gen = doc["generation"]
        value = sealed({**doc, "quarantines": {"iris": {}}}, STATE_KEY)  # (a newer version's)
        redis_server.cmd("SET", "kgtest:state", value)  # (kgtest:gen left: it says `gen`)
        redis_server.cmd("PUBLISH", "kgtest:events", value)
        await wait_until(lambda: "quarantines" not in stored_doc(redis_server), 5,
                         what="the replay at the held generation repaired")
        stored = stored_doc(redis_server)
        assert stored["generation"] > gen and "version:iris:v2" in stored["kills"], stored
        await wait_until(lambda: sync.connected and stored_doc(redis_server)["generation"]
                         == g.gw.holder.doc.generation, 5, what="synced on its own document")
        assert not sync.tamper.counts, sync.tamper.status()  # (genuine: a replay)
        # said as what happened: written over (it said "nor written over", review impleft8)
        _, page, _ = await sync.store.audit_newest(8)
        problems = [e["before"]["problem"] for e in page if e["action"] == "state.reseed"]
        for said in problems:
            assert "a replay" in str(said) and "nor written over" not in str(said), said
        assert problems, page
        # and, repaired, the store's error is no longer said (it kept the replay's for good:
        # tests/test_store_error_healed.py); the audited re-seed above keeps what it was
        await wait_until(lambda: sync.last_error is None, 2, what="no store error once healed")
        # one newer than what it holds, pushed the same way: refused (never written over)
        ahead = {**stored, "generation": stored["generation"] + 1, "quarantines": {}}
        value = sealed(ahead, STATE_KEY)
        redis_server.cmd("SET", "kgtest:state", value)
        redis_server.cmd("PUBLISH", "kgtest:events", value)
        await wait_until(lambda: sync.newer_version and not sync.connected, 5,
                         what="the newer document refused")
        assert "quarantines" in stored_doc(redis_server)


def test_which_newer_versions_documents_are_replays() -> None:
    """Pure: one no newer than the document a trusted instance holds is a replay; one newer,
    or met by an instance not known to hold the fleet's state, or holding none, is not."""
    from gateway.domain.statedoc import StateDoc
    from gateway.state.refuseddoc import replayed_newer
    from gateway.state.store import Loaded

    def newer(gen: int) -> Loaded:
        return Loaded(None, str(gen), "newer", newer=True, newer_generation=gen)

    assert replayed_newer(newer(3), StateDoc(generation=3), True)
    assert replayed_newer(newer(2), StateDoc(generation=3), True)
    assert not replayed_newer(newer(4), StateDoc(generation=3), True)
    assert not replayed_newer(newer(3), StateDoc(generation=3), False)
    assert not replayed_newer(newer(0), StateDoc(generation=0), True)
    assert not replayed_newer(Loaded(None, "3", "refused"), StateDoc(generation=3), True)
