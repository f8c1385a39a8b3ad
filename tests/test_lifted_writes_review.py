"""Which kill an unkill lifted, by the write that made its flag (`lifted_writes`), reviewed
(hostile review, 2026-12-04): a re-seed asks it too. One in-process instance, a, on a real
redis-server; the test plays the store's other writers, as tests/test_lifted_review.py."""

from __future__ import annotations

from pathlib import Path

import pytest

from gateway.domain.statedoc import Change, KillFlag, StateDoc, apply_change
from gateway.state.reseedmerge import merge_restrictive
from tests.backends import echo_app
from tests.conftest import RedisServer, running_gateway, wait_until, write_config
from tests.test_branches_review import routes
from tests.test_forgery import plant, stored_doc
from tests.test_killswitch import redis_state
from tests.test_lifted_review import backed_up_before_an_unkill

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
        backup, backup_gen = await backed_up_before_an_unkill(session, g.admin, redis_server)
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


def test_a_flag_named_lifted_was_lifted_on_that_history_random_histories() -> None:
    """Random histories of one store forking (a promoted replica, a restored backup):
    kills, unkills, drill kills injected, taken over and restored, abort upgrades, runs
    of other writes, re-seeds of any two documents. Each document carries, beside it, the
    flag writes lifted or taken over in its history (the truth). Wherever a document
    lacks a kill an earlier one holds and names that flag lifted (`_names_lifted`: what
    `lifts_unrecorded` and the re-seed read), the truth names it too. (The same check on
    `lifted`'s generations alone finds thousands of documents that do not.)"""
    import random

    from gateway.domain import drills, kills
    from gateway.domain.branches import _names_lifted
    from gateway.domain.statedoc import DrillRecord
    from gateway.errors import DomainError

    keys = [("route", "iris", None), ("route", "rose", None), ("global", None, None)]
    wrong = []
    for seed in range(150):
        rnd = random.Random(seed)
        docs: list[tuple[StateDoc, frozenset[str]]] = [(StateDoc(epoch="e"), frozenset())]
        for _ in range(rnd.randint(20, 120)):
            d, lifted = rnd.choice(docs[-8:] if rnd.random() < 0.8 else docs)
            scope, route, _v = rnd.choice(keys)
            key = "global" if scope == "global" else f"route:{route}"
            op = rnd.random()
            try:
                if op < 0.3:
                    ch = kills.kill(d, scope, route, None, "a", "x", T,  # type: ignore[arg-type]
                                    abort_inflight=rnd.random() < 0.5)
                    if ch is None:
                        continue
                    new = apply_change(d, ch)
                    if key in d.kills and new.kills[key].write != d.kills[key].write:
                        lifted |= {d.kills[key].write}  # (a drill's kill taken over)
                elif op < 0.5:
                    if key not in d.kills:
                        continue
                    new = apply_change(d, Change(kills={key: None}))
                    lifted |= {d.kills[key].write}
                elif op < 0.58:
                    if d.drills or key in d.kills:
                        continue
                    rec = DrillRecord("d1", "kill", route or "iris", None, "a", T, 0.0, {})
                    new = apply_change(d, Change(drills={"d1": rec}))
                    new = apply_change(new, drills.inject_kill(new, "d1", scope, "a", "x", T))
                elif op < 0.63:
                    if "d1" not in d.drills:
                        continue
                    ch, _ = drills.restore(d, "d1", {}, "a", T)
                    new = apply_change(d, ch)
                    lifted |= {d.kills[k].write for k, f in ch.kills.items() if f is None}
                    new = apply_change(new, Change(drills={"d1": None}))
                elif op < 0.8:
                    new = _far(d, rnd.randint(1, 40))
                else:
                    other, also = rnd.choice(docs)
                    new, lifted = merge_restrictive(other, d), lifted | also
            except DomainError:
                continue
            docs.append((new, lifted))
        wrong += [(seed, key) for held, _ in docs for doc, lifted in docs
                  if doc.generation > held.generation
                  for key, flag in held.kills.items()
                  if key not in doc.kills and _names_lifted(doc, key, flag)
                  and flag.write not in lifted]
    assert not wrong, wrong[:5]
