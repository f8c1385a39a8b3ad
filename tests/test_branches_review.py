"""Branches of the state history, reviewed (hostile review of write ids, 2026-12-04).

One in-process instance, a, on a real redis-server; the test plays the store's other
writers (signed documents written with the state key, their pushes lost). What failed
before its fix is said in each test.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from gateway.domain.statedoc import Change, KillFlag, StateDoc, apply_change
from tests.backends import echo_app
from tests.conftest import (
    STATE_KEY,
    RedisServer,
    running_gateway,
    two_versions,
    wait_until,
    write_config,
)
from tests.test_forgery import admin_json, plant, sealed, stored_doc
from tests.test_killswitch import kill, redis_state

pytestmark = pytest.mark.timeout(30)

OTHER = KillFlag("route", "other", None, "bob", "bad", "2026-12-04T00:00:00Z", 0)


def routes(p1: int) -> str:
    return two_versions(p1, p1, 100, 0) + two_versions(p1, p1, 100, 0, name="other",
                                                        prefix="/v2/models/other")


async def test_a_write_on_another_branch_at_our_generation_is_found_by_the_poll(
        tmp_path: Path, backends, redis_server: RedisServer, session) -> None:
    """a kills iris (generation G). The promoted replica missed it, and b wrote G on it
    (its own event: the audit head key moved); b's push never reached a. The poll
    compared only the generation number, equal: a never looked, held iris alone while
    the store (and every instance that loads it, a new one say) had lost it, for good.
    The poll looks when the audit head key is not the one a verified document named."""
    p1 = await backends(echo_app("v1"))
    cfg = write_config(tmp_path, routes(p1), state=redis_state(redis_server, tmp_path, "a"))
    async with running_gateway(cfg) as g:
        before = stored_doc(redis_server)
        gen = int((await kill(session, g.admin, scope="route", route="iris"))["generation"])
        b = apply_change(StateDoc.from_json(before), Change(kills={"route:other": OTHER}))
        assert b.generation == gen
        b_event = "b0" * 32  # b's audit event (its hash) is the head now
        redis_server.cmd("SET", "kgtest:state",
                         sealed({**b.to_json(), "audit_head": b_event}, STATE_KEY))
        redis_server.cmd("SET", "kgtest:audit:head", b_event)
        await wait_until(lambda: "route:iris" in stored_doc(redis_server)["kills"], 5,
                         what="a to merge b's write (iris back in the store)")
        stored = stored_doc(redis_server)
        assert {"route:iris", "route:other"} <= stored["kills"].keys(), sorted(stored["kills"])
        await wait_until(lambda: "route:other" in g.gw.holder.doc.kills, 5,
                         what="b's kill on a")


async def test_a_local_commit_never_replaces_a_write_on_another_branch(
        tmp_path: Path, backends, session) -> None:
    """The local store (a file the workers of one host share) compared only the
    generation too: a kills iris (G); the file is restored from a backup at G-1 and b, a
    worker that never saw G, kills `other` on it (G). a's next write, guessed on its own G
    before a poll (here 60 s apart), replaced b's document, and b's kill left the file.
    The commit, under the file lock, refuses a document at our base's generation that
    names another write (as the redis commit does): the write merges it first."""
    p1 = await backends(echo_app("v1"))
    store = tmp_path / "store.json"
    state = (f"state:\n  backend: local\n  path: {store}\n"
             f"  snapshot_path: {tmp_path}/snap.json\n  poll_interval: 60s\n"
             f"  max_staleness: 2m\n  instance_lease: 2m\n"
             f"  signing_key_env: KILLGATE_TEST_STATE_KEY\n")
    cfg = write_config(tmp_path, routes(p1), state=state)
    async with running_gateway(cfg) as g:
        before = g.gw.holder.doc
        gen = int((await kill(session, g.admin, scope="route", route="iris"))["generation"])
        b = apply_change(before, Change(kills={"route:other": OTHER}))
        assert b.generation == gen
        store.write_text(sealed({**b.to_json(), "audit_head": "b0" * 32}, STATE_KEY,
                                prefix="local"))
        await kill(session, g.admin, scope="version", route="iris", version="v2")
        raw = store.read_text()
        kills: dict[str, Any] = __import__("json").loads(raw.split("\n", 1)[1])["kills"]
        assert {"route:iris", "route:other", "version:iris:v2"} <= kills.keys(), sorted(kills)


async def test_the_poll_reads_no_document_while_nothing_changes(
        tmp_path: Path, backends, redis_server: RedisServer, session) -> None:
    """What the audit head in the poll costs: nothing while the store holds the document
    a holds (its own write included); one read after another instance's audit event."""
    p1 = await backends(echo_app("v1"))
    cfg = write_config(tmp_path, routes(p1), state=redis_state(redis_server, tmp_path, "a"))
    async with running_gateway(cfg) as g:
        await kill(session, g.admin, scope="route", route="iris")
        sync: Any = g.gw.sync
        store: Any = sync.store
        real, loads = store.load, []

        async def counted(*a: Any, **kw: Any) -> Any:
            loads.append(1)
            return await real(*a, **kw)

        store.load = counted
        polls: set[float] = set()

        def polled(n: int) -> bool:
            polls.add(sync.last_ok)
            return len(polls) > n

        await wait_until(lambda: polled(5), 5, what="five polls")
        assert loads == []
        head = redis_server.cmd("GET", "kgtest:audit:head")
        redis_server.cmd("SET", "kgtest:audit:head", "c0" * 32)  # (an event of another's)
        await wait_until(lambda: polled(10), 5, what="five polls more")
        assert len(loads) == 1, loads
        redis_server.cmd("SET", "kgtest:audit:head", head)


async def test_a_fork_right_after_a_document_without_write_ids_is_merged(
        tmp_path: Path, backends, redis_server: RedisServer, session) -> None:
    """During a rolling upgrade the newest document was written by the version before
    write ids (none kept). a kills iris on it (G: a's document names one write, G's);
    the promoted replica missed it and b writes G and G+1 on it, naming only its own. Both
    windows start at G, which `descends` took for "cannot tell" (it asked for an entry
    older than ours): same epoch, so b's G+1 was adopted, lifting the kill. A window is cut
    by whole generations, so one that starts at our generation still holds every write
    there: it names another write at G, another branch, merged."""
    p1 = await backends(echo_app("v1"))
    cfg = write_config(tmp_path, routes(p1), state=redis_state(redis_server, tmp_path, "a"))
    async with running_gateway(cfg) as g:
        cur = stored_doc(redis_server)
        legacy = {k: v for k, v in cur.items() if k != "writes"}  # as older code writes it
        legacy["generation"] = cur["generation"] + 1
        for k, v in (("kgtest:state", sealed(legacy, STATE_KEY)),
                     ("kgtest:gen", str(legacy["generation"]))):
            redis_server.cmd("SET", k, v)
        redis_server.cmd("PUBLISH", "kgtest:events", sealed(legacy, STATE_KEY))
        await wait_until(lambda: g.gw.holder.doc.generation == legacy["generation"], 5,
                         what="a to adopt the older version's document")
        gen = int((await kill(session, g.admin, scope="route", route="iris"))["generation"])
        assert g.gw.holder.doc.writes == (g.gw.holder.doc.writes[-1],)
        lifted: list[int] = []
        g.gw.holder.listen(lambda _old, new: lifted.append(new.doc.generation)
                           if "route:iris" not in new.doc.kills else None)
        doc = StateDoc.from_json(legacy)
        for _ in range(2):  # b's two writes on the promoted replica
            doc = apply_change(doc, Change(identities={"b": {"v": {"n": doc.generation}}}))
            raw = sealed(doc.to_json(), STATE_KEY)
            redis_server.cmd("SET", "kgtest:state", raw)
            redis_server.cmd("SET", "kgtest:gen", str(doc.generation))
            redis_server.cmd("PUBLISH", "kgtest:events", raw)
        await wait_until(lambda: lifted or int(redis_server.cmd("GET", "kgtest:gen")) > gen + 1,
                         5, what="a to re-seed or adopt")
        assert not lifted, f"the kill was lifted on a at generation {lifted}"
        assert "route:iris" in stored_doc(redis_server)["kills"]



async def test_a_write_on_a_document_without_ids_never_replaces_another_write(
        tmp_path: Path, backends, redis_server: RedisServer, session) -> None:
    """During a rolling upgrade a holds L, written by the version before write ids (G).
    The replica promoted holds the G-1 before it, and b kills `other` there (G, its push
    lost). a's next write, guessed on L, compared only the generation number, equal: the
    commit refused to replace another write only when our base named one of its own, so
    b's kill left the store (and b, unable to tell, then adopted a's write). A stored
    document whose own write our write does not name is another write, whatever our base
    named: the write merges it first, and b's kill stays."""
    p1 = await backends(echo_app("v1"))
    state = redis_state(redis_server, tmp_path, "a", poll="60s")
    cfg = write_config(tmp_path, routes(p1), state=state)
    async with running_gateway(cfg) as g:
        before = stored_doc(redis_server)
        legacy = {k: v for k, v in before.items() if k != "writes"}  # as older code writes it
        legacy["generation"] = before["generation"] + 1
        raw = sealed(legacy, STATE_KEY)
        redis_server.cmd("SET", "kgtest:state", raw)
        redis_server.cmd("SET", "kgtest:gen", str(legacy["generation"]))
        redis_server.cmd("PUBLISH", "kgtest:events", raw)
        await wait_until(lambda: g.gw.holder.doc.generation == legacy["generation"], 5,
                         what="a to adopt the older version's document")
        b = apply_change(StateDoc.from_json(before), Change(kills={"route:other": OTHER}),
                         legacy["generation"])
        redis_server.cmd("SET", "kgtest:state",
                         sealed({**b.to_json(), "audit_head": "b0" * 32}, STATE_KEY))
        redis_server.cmd("SET", "kgtest:audit:head", "b0" * 32)
        await kill(session, g.admin, scope="route", route="iris")
        stored = stored_doc(redis_server)
        assert {"route:iris", "route:other"} <= stored["kills"].keys(), sorted(stored["kills"])


async def test_reading_the_audit_trail_does_not_let_a_write_replace_another_branch(
        tmp_path: Path, backends, redis_server: RedisServer, session) -> None:
    """a kills iris (G); b kills `other` at G on the promoted replica (its own event at
    the same position: the head key names it), its push lost. An operator reads the audit
    trail through a: the load verifies b's document and makes its head a's guess of the
    head. a's next write, guessed on its own G, then met no audit conflict, the one thing
    that made the commit look at the stored document: it replaced b's, and b's kill left
    the store. A commit whose base is not the document that named the guessed head looks
    first."""
    p1 = await backends(echo_app("v1"))
    state = redis_state(redis_server, tmp_path, "a", poll="60s")
    cfg = write_config(tmp_path, routes(p1), state=state)
    async with running_gateway(cfg) as g:
        before = stored_doc(redis_server)
        gen = int((await kill(session, g.admin, scope="route", route="iris"))["generation"])
        b = apply_change(StateDoc.from_json(before), Change(kills={"route:other": OTHER}))
        assert b.generation == gen
        b_event = "b0" * 32
        redis_server.cmd("SET", "kgtest:state", sealed(
            {**b.to_json(), "audit_head": b_event, "audit_seq": before["audit_seq"] + 1},
            STATE_KEY))
        redis_server.cmd("SET", "kgtest:audit:head", b_event)
        page = await admin_json(session, g.admin, "/v1/audit")
        assert page["head"] == b_event
        await kill(session, g.admin, scope="version", route="iris", version="v2")
        stored = stored_doc(redis_server)
        assert {"route:iris", "route:other", "version:iris:v2"} <= stored["kills"].keys(), \
            sorted(stored["kills"])


async def test_two_instances_holding_the_kill_merge_a_lost_branch_once(
        tmp_path: Path, backends, redis_server: RedisServer, session) -> None:
    """No storm: a and b both hold iris (G); c's write at G on the promoted replica (it
    killed `other`, its push lost) is found by both polls. One merge wins, the other
    instance adopts it (it names the write each holds), and nothing is re-seeded again."""
    p1 = await backends(echo_app("v1"))
    cfg_a = write_config(tmp_path, routes(p1), state=redis_state(redis_server, tmp_path, "a"),
                         name="a.yaml")
    cfg_b = write_config(tmp_path, routes(p1), state=redis_state(redis_server, tmp_path, "b"),
                         name="b.yaml")
    async with running_gateway(cfg_a, "a") as a, running_gateway(cfg_b, "b") as b:
        before = stored_doc(redis_server)
        gen = int((await kill(session, a.admin, scope="route", route="iris"))["generation"])
        await wait_until(lambda: b.gw.holder.doc.generation == gen, 5, what="b at G")
        c = apply_change(StateDoc.from_json(before), Change(kills={"route:other": OTHER}))
        redis_server.cmd("SET", "kgtest:state", sealed(
            {**c.to_json(), "audit_head": "c0" * 32, "audit_seq": before["audit_seq"] + 1},
            STATE_KEY))
        redis_server.cmd("SET", "kgtest:audit:head", "c0" * 32)
        both = (a.gw, b.gw)
        await wait_until(lambda: all({"route:iris", "route:other"} <= gw.holder.doc.kills.keys()
                                     for gw in both), 5, what="the merge on both")
        reseeds = sum(gw.metrics.get("killgate_state_reseeds_total") for gw in both)
        polls: set[float] = set()

        def polled() -> bool:
            polls.add(b.gw.sync.last_ok)
            return len(polls) > 10

        await wait_until(polled, 5, what="ten polls more")
        assert sum(gw.metrics.get("killgate_state_reseeds_total") for gw in both) == reseeds
        assert a.gw.holder.doc.generation == b.gw.holder.doc.generation
        assert {"route:iris", "route:other"} <= stored_doc(redis_server)["kills"].keys()


def _far_ahead(doc: StateDoc, writes: int) -> StateDoc:
    for n in range(writes):
        doc = apply_change(doc, Change(identities={"b": {"v": {"n": n}}}))
    return doc


@pytest.mark.parametrize("history", ["another branch", "an unkill"])
async def test_far_behind_a_document_without_the_kill_lifts_it_only_if_it_names_its_unkill(
        tmp_path: Path, backends, redis_server: RedisServer, session, history: str) -> None:
    """a kills iris (G) and then hears nothing while the store moves 40 writes on (more
    than the 32 a document names). Write ids cannot tell a successor from another branch
    then, and a document of a's epoch was adopted: on another branch (a promoted replica
    that missed the kill, written on since) that lifted the kill without an unkill. A
    document names the newest kill each unkill lifted (`lifted`): one that does not name
    a's is merged (the kill stays); after a real unkill it is adopted (the kill is lifted)."""
    p1 = await backends(echo_app("v1"))
    state = redis_state(redis_server, tmp_path, "a", poll="60s")
    cfg = write_config(tmp_path, routes(p1), state=state)
    async with running_gateway(cfg) as g:
        before = StateDoc.from_json(stored_doc(redis_server))
        await kill(session, g.admin, scope="route", route="iris")
        held = g.gw.holder.doc
        # an unkill, or the replica promoted, which never had the kill
        base = (apply_change(held, Change(kills={"route:iris": None}))
                if history == "an unkill" else before)
        far = _far_ahead(base, 40)
        assert far.epoch == held.epoch and far.generation > held.generation + 32
        plant(redis_server, far.to_json())
        if history == "an unkill":
            await wait_until(lambda: g.gw.holder.doc.generation == far.generation, 5,
                             what="a to adopt the document")
            assert "route:iris" not in g.gw.holder.doc.kills
        else:
            await wait_until(lambda: g.gw.holder.doc.generation > far.generation, 5,
                             what="a to merge the document")
            assert "route:iris" in g.gw.holder.doc.kills
            assert "route:iris" in stored_doc(redis_server)["kills"]
