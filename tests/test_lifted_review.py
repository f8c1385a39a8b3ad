"""The unkills a document records (`lifted`), reviewed (hostile review, 2026-12-04).

One in-process instance, a, on a real redis-server; the test plays the store's other
writers (signed documents written with the state key, made with apply_change). What
failed before its fix is said in each test.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from gateway.domain.statedoc import Change, KillFlag, StateDoc, apply_change
from gateway.domain.writeids import MAX_LIFTED
from tests.backends import echo_app
from tests.conftest import RedisServer, running_gateway, wait_until, write_config
from tests.staterig import store_on
from tests.test_branches_review import routes
from tests.test_forgery import plant, stored_doc
from tests.test_killswitch import kill, redis_state

pytestmark = pytest.mark.timeout(60)


def _flag(n: int) -> KillFlag:
    return KillFlag("version", "iris", f"v{n}", "bob", "bad", "2026-12-04T00:00:00Z", 0)


def _many_kills_lifted(doc: StateDoc, keys: int) -> StateDoc:
    """`keys` version kills made and lifted, one after the other (two writes each)."""
    for n in range(keys):
        doc = apply_change(doc, Change(kills={f"version:iris:v{n}": _flag(n)}))
        doc = apply_change(doc, Change(kills={f"version:iris:v{n}": None}))
    return doc


async def backed_up_before_an_unkill(session: Any, admin: str,
                                     redis_server: RedisServer) -> tuple[Any, Any]:
    """Kill routes other and iris, copy the store's document and generation (a backup),
    then unkill iris: the backup holds a kill lifted since."""
    from tests.test_killswitch import unkill

    await kill(session, admin, wait="0s", scope="route", route="other")
    await kill(session, admin, wait="0s", scope="route", route="iris")
    backup = redis_server.cmd("GET", "kgtest:state"), redis_server.cmd("GET", "kgtest:gen")
    await unkill(session, admin, wait="0s", scope="route", route="iris")
    return backup


def test_the_newest_lift_is_kept_whatever_the_age_of_the_kill_it_lifted() -> None:
    """`lifted` kept the MAX_LIFTED keys whose lifted flags were newest (by the kill's
    generation), not the newest lifts: a kill made long ago (a global kill in force for
    weeks) and lifted now was the first dropped, its unkill forgotten at once."""
    doc = apply_change(StateDoc(epoch="e"), Change(kills={"global": KillFlag(
        "global", None, None, "bob", "bad", "2026-12-04T00:00:00Z", 0)}))
    doc = _many_kills_lifted(doc, MAX_LIFTED)
    doc = apply_change(doc, Change(kills={"global": None}))  # the newest lift
    assert doc.lifted.get("global") == 1
    assert len(doc.lifted) == MAX_LIFTED
    # survives the document's JSON form (the store's, the snapshot's)
    assert StateDoc.from_json(doc.to_json()).lifted.get("global") == 1


async def test_far_behind_an_unkill_of_an_old_kill_after_many_others_is_adopted(
        tmp_path: Path, backends, redis_server: RedisServer, session) -> None:
    """a kills iris (G) and hears nothing while the fleet kills and lifts MAX_LIFTED
    version kills and then lifts iris too (a real unkill, the newest). The store's
    document dropped iris's lift first (its flag was the oldest), so a, far behind,
    merged the document: the unkill came back, re-seeded into the store for everyone."""
    p1 = await backends(echo_app("v1"))
    state = redis_state(redis_server, tmp_path, "a", poll="60s")
    cfg = write_config(tmp_path, routes(p1), state=state)
    async with running_gateway(cfg) as g:
        await kill(session, g.admin, scope="route", route="iris")
        held = g.gw.holder.doc
        far = _many_kills_lifted(held, MAX_LIFTED)
        far = apply_change(far, Change(kills={"route:iris": None}))
        plant(redis_server, far.to_json())
        await wait_until(lambda: g.gw.holder.doc.generation >= far.generation, 10,
                         what="a to take the document")
        assert g.gw.holder.doc.generation == far.generation, "a merged a real unkill"
        assert "route:iris" not in g.gw.holder.doc.kills


async def test_a_store_restored_to_before_an_unkill_is_reseeded_without_the_kill(
        tmp_path: Path, backends, redis_server: RedisServer, session) -> None:
    """Redis restarts from its last RDB file (or a backup, or someone replays the old
    document): the store is back to a document from before an unkill. a, which made the
    unkill, re-seeds the store from what it holds, and the re-seed kept every kill either
    side held: the kill lifted since came back, for every instance. a's document names
    the restored document's write (it descends from it): everything the restored document
    holds and a's lacks was lifted since, by an unkill; the re-seed keeps a's kills."""
    p1 = await backends(echo_app("v1"))
    cfg = write_config(tmp_path, routes(p1), state=redis_state(redis_server, tmp_path, "a"))
    async with running_gateway(cfg) as g:
        backup, backup_gen = await backed_up_before_an_unkill(session, g.admin, redis_server)
        gen = g.gw.holder.doc.generation
        redis_server.cmd("SET", "kgtest:state", backup)
        redis_server.cmd("SET", "kgtest:gen", backup_gen)
        await wait_until(lambda: g.gw.holder.doc.generation > gen, 5,
                         what="a to re-seed the restored store")
        assert set(g.gw.holder.doc.kills) == {"route:other"}
        assert set(stored_doc(redis_server)["kills"]) == {"route:other"}


async def test_a_kill_after_an_audit_only_event_loads_nothing_first(
        tmp_path: Path, backends, redis_server: RedisServer, session) -> None:
    """An event without a state change (a denied attempt, an approval asked for, a config
    reload: `append_audit`, by any instance) re-commits the document at its generation
    with a new audit head; an instance verifies its push but holds on to its copy (same
    generation). The next kill through it, guessed on that copy, took the newer head for
    a write on another branch at its base's generation and loaded the store first: one
    more round trip on the kill path after every such event. The head's document names
    our base's write: nothing to look at."""
    from gateway.domain.audit import AuditDraft

    p1 = await backends(echo_app("v1"))
    state = redis_state(redis_server, tmp_path, "a", poll="60s")
    cfg = write_config(tmp_path, routes(p1), state=state)
    other = store_on(redis_server, "kgtest")
    await other.open()
    try:
        async with running_gateway(cfg) as g:
            store = g.gw.sync.store
            loads: list[int] = []
            load = store.load

            async def counted(*args: object, **kw: object) -> object:
                loads.append(1)
                return await load(*args, **kw)

            store.load = counted
            await kill(session, g.admin, wait="0s", scope="route", route="other")
            assert not loads
            got = await other.load()  # b's append_audit
            assert got.doc is not None
            await other.commit(got.token, got.doc, AuditDraft("bob", "denied", {}, "r"))
            seq = got.doc.audit_seq + 1
            await wait_until(lambda: store._head_at[1] == seq, 5, what="a to hear of it")
            await kill(session, g.admin, wait="0s", scope="route", route="iris")
            assert not loads, "the kill loaded the store first"
            assert "route:iris" in stored_doc(redis_server)["kills"]
    finally:
        await other.close()


async def test_an_audit_only_event_pushed_costs_the_poll_no_load(
        tmp_path: Path, backends, redis_server: RedisServer, session) -> None:
    """The poll compares the audit head key too (a write at our generation on another
    branch, its push lost). An event without a state change moves that key, and its push
    (our document, our write, a new head) was verified and judged already: every instance
    still read the whole document again at its next poll, once per such event."""
    from gateway.domain.audit import AuditDraft

    p1 = await backends(echo_app("v1"))
    cfg = write_config(tmp_path, routes(p1), state=redis_state(redis_server, tmp_path, "a"))
    other = store_on(redis_server, "kgtest")
    await other.open()
    try:
        async with running_gateway(cfg) as g:
            sync = g.gw.sync
            await kill(session, g.admin, wait="0s", scope="route", route="other")
            loads: list[int] = []
            load, pushed = sync.store.load, sync._pushed
            heard: set[str | None] = set()  # the audit heads of the documents pushed to it

            def heard_push(item: Any) -> None:
                pushed(item)
                heard.add(getattr(item, "audit_head", None))

            async def counted(*args: Any, **kw: Any) -> Any:
                # a read of a document whose push was taken already (on a loaded host the
                # poll may come before the push: that read is needed, and not counted)
                known = set(heard)
                got = await load(*args, **kw)
                if got.doc is not None and got.doc.audit_head in known:
                    loads.append(1)
                return got

            sync.store.load = counted
            sync.store.listen(heard_push)
            for _ in range(3):
                got = await other.load()  # b's append_audit
                assert got.doc is not None
                await other.commit(got.token, got.doc, AuditDraft("bob", "denied", {}, "r"))
                t = sync.last_ok
                assert t is not None
                await wait_until(lambda t=t: sync.last_ok > t + 0.3, 5, what="a few polls")
            assert not loads, f"{len(loads)} loads"
    finally:
        await other.close()


@pytest.mark.parametrize("after", [0, 5])
async def test_far_behind_a_branch_that_lifted_its_own_kill_of_the_key_does_not_lift_ours(
        tmp_path: Path, backends, redis_server: RedisServer, session, after: int) -> None:
    """a kills iris (G) and hears nothing while the store, a promoted replica that never
    had G, is written on 40 times; among those writes someone killed iris (at G, or
    `after` writes later, on that branch) and lifted it again. The document named iris
    lifted at G or later (`lifted` names a generation, not a kill): a took it for the
    unkill of its own kill and adopted it; the kill it held was gone from the store and
    from a, though no unkill of it was ever made (xfail strict until flags named their
    write, `lifted_writes`)."""
    p1 = await backends(echo_app("v1"))
    state = redis_state(redis_server, tmp_path, "a", poll="60s")
    cfg = write_config(tmp_path, routes(p1), state=state)
    async with running_gateway(cfg) as g:
        before = StateDoc.from_json(stored_doc(redis_server))
        await kill(session, g.admin, scope="route", route="iris")
        held = g.gw.holder.doc
        fork = before
        for n in range(after):
            fork = apply_change(fork, Change(identities={"b": {"w": {"n": n}}}))
        flag = KillFlag("route", "iris", None, "bob", "drill", "2026-12-04T00:00:00Z", 0)
        fork = apply_change(fork, Change(kills={"route:iris": flag}))  # on the branch
        assert fork.generation == held.generation + after
        fork = apply_change(fork, Change(kills={"route:iris": None}))
        assert fork.lifted["route:iris"] >= held.kills["route:iris"].generation
        for n in range(40):
            fork = apply_change(fork, Change(identities={"b": {"v": {"n": n}}}))
        plant(redis_server, fork.to_json())
        await wait_until(lambda: g.gw.holder.doc.generation >= fork.generation, 5,
                         what="a to take or merge the branch")
        assert "route:iris" in g.gw.holder.doc.kills
        await wait_until(lambda: "route:iris" in StateDoc.from_json(
            stored_doc(redis_server)).kills, 5, what="the kill back in the store")
