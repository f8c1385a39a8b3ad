"""Which kill an unkill lifted, by the write that made its flag (`lifted_writes`), reviewed
(hostile review, 2026-12-04): a re-seed asks it too. One in-process instance, a, on a real
redis-server; the test plays the store's other writers, as tests/test_lifted_review.py."""

from __future__ import annotations

from pathlib import Path

import pytest

from gateway.domain.statedoc import Change, KillFlag, StateDoc, apply_change
from gateway.state.store import merge_restrictive
from tests.backends import echo_app
from tests.conftest import RedisServer, running_gateway, wait_until, write_config
from tests.test_branches_review import routes
from tests.test_forgery import plant, stored_doc
from tests.test_killswitch import kill, redis_state, unkill

pytestmark = pytest.mark.timeout(60)

T = "2026-12-04T00:00:00Z"


def _far(doc: StateDoc, n: int = 40) -> StateDoc:
    for i in range(n):
        doc = apply_change(doc, Change(identities={"b": {"v": {"n": i}}}))
    return doc


def test_a_reseed_keeps_lifted_a_kill_the_newer_side_names_lifted() -> None:
    """The older side holds a kill whose flag the newer side names lifted (its unkill
    is 32 writes or more back: `descends` cannot tell): the re-seed kept it, the kill came
    back; a kill the newer side never named is kept, as before."""
    old = apply_change(StateDoc(epoch="e"), Change(kills={
        "route:iris": KillFlag("route", "iris", None, "bob", "bad", T, 0),
        "route:other": KillFlag("route", "other", None, "bob", "bad", T, 0)}))
    new = _far(apply_change(old, Change(kills={"route:iris": None})))
    for store, mine in ((old, new), (new, old)):
        merged = merge_restrictive(store, mine)
        assert set(merged.kills) == {"route:other"}, (store is old, set(merged.kills))
    # a branch that killed and lifted iris itself names another flag: ours is kept
    branch = _far(apply_change(apply_change(StateDoc(epoch="e"), Change(kills={
        "route:iris": KillFlag("route", "iris", None, "eve", "x", T, 0)})),
        Change(kills={"route:iris": None})))
    assert "route:iris" in merge_restrictive(branch, old).kills


async def test_a_store_restored_far_behind_an_unkill_is_reseeded_without_the_kill(
        tmp_path: Path, backends, redis_server: RedisServer, session) -> None:
    """Redis restored from a backup (or an old document replayed) from before an unkill
    and 32 writes or more behind the document a holds: a re-seeds the store, and the
    re-seed kept every kill the backup held: the kill lifted since was back in force for
    every instance, though a's document names the very flag lifted (and an instance far
    behind holding it adopts a's document for that: `lifts_unrecorded`)."""
    p1 = await backends(echo_app("v1"))
    cfg = write_config(tmp_path, routes(p1), state=redis_state(redis_server, tmp_path, "a"))
    async with running_gateway(cfg) as g:
        await kill(session, g.admin, wait="0s", scope="route", route="other")
        await kill(session, g.admin, wait="0s", scope="route", route="iris")
        backup, backup_gen = (redis_server.cmd("GET", "kgtest:state"),
                              redis_server.cmd("GET", "kgtest:gen"))
        await unkill(session, g.admin, wait="0s", scope="route", route="iris")
        far = _far(g.gw.holder.doc)  # (the fleet's writes since)
        plant(redis_server, far.to_json())
        await wait_until(lambda: g.gw.holder.doc.generation == far.generation, 10,
                         what="a to take the fleet's writes")
        redis_server.cmd("SET", "kgtest:state", backup)
        redis_server.cmd("SET", "kgtest:gen", backup_gen)
        await wait_until(lambda: g.gw.holder.doc.generation > far.generation, 10,
                         what="a to re-seed the restored store")
        assert set(g.gw.holder.doc.kills) == {"route:other"}
        assert set(stored_doc(redis_server)["kills"]) == {"route:other"}


@pytest.mark.xfail(strict=True, reason="open: lifted_writes keeps the newest "
                   "MAX_LIFTS_PER_KEY flags of a key; an older flag's unkill is forgotten, "
                   "and a branch that killed and lifted the key as often cannot be told from "
                   "it (see the review's report)")
def test_far_behind_an_unkill_followed_by_more_lifts_of_the_key_is_adopted() -> None:
    """a holds iris's kill and hears nothing (a snapshot, 32 writes or more behind) while
    the fleet lifts it and then kills and lifts iris MAX_LIFTS_PER_KEY more times (an
    alert that fires and is lifted again and again). The fleet's document descends from
    the unkill of a's very flag, but names only the newest four: a merges it, and the
    kill lifted long ago is back in force for every instance (before d962b1f the
    generation in `lifted` named it, and a adopted the document)."""
    from gateway.domain.branches import lifts_unrecorded
    from gateway.domain.writeids import MAX_LIFTS_PER_KEY

    def flag() -> KillFlag:
        return KillFlag("route", "iris", None, "alertmanager/x", "fired", T, 0)

    held = apply_change(StateDoc(epoch="e"), Change(kills={"route:iris": flag()}))
    doc = apply_change(held, Change(kills={"route:iris": None}))
    for _ in range(MAX_LIFTS_PER_KEY):
        doc = apply_change(doc, Change(kills={"route:iris": flag()}))
        doc = apply_change(doc, Change(kills={"route:iris": None}))
    assert not lifts_unrecorded(held, _far(doc))
