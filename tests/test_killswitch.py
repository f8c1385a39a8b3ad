"""The kill switch against a real redis-server that the tests start, kill, freeze and restart."""

from __future__ import annotations

import asyncio
import json
import statistics
import time
from collections import Counter
from pathlib import Path

import aiohttp
import pytest
from aiohttp import ClientSession

from tests.backends import echo_app, sse_app
from tests.conftest import (
    STATE_KEY,
    RedisServer,
    admin_token,
    free_port,
    running_gateway,
    two_versions,
    wait_until,
    write_config,
)
from tests.staterig import redis_state

INFER = "/v2/models/iris/infer"


def token(scope: str = "killgate:kill killgate:read", sub: str = "alice") -> str:
    return admin_token(scope, sub, 600)


def auth(scope: str = "killgate:kill killgate:read") -> dict[str, str]:
    return {"Authorization": f"Bearer {token(scope)}"}


def fixed_ports_config(tmp: Path, routes: str, state: str, name: str) -> Path:
    return write_config(tmp, routes, state=state, listen=f"127.0.0.1:{free_port()}",
                        admin=f"127.0.0.1:{free_port()}", name=f"{name}.yaml")


async def kill(session: ClientSession, admin: str, wait: str = "2s", **body: object) -> dict:
    body.setdefault("reason", "bad model")
    async with session.post(f"{admin}/v1/kill?wait={wait}", json=body, headers=auth()) as r:
        data = await r.json()
        assert r.status == 200, data
        return data


async def unkill(session: ClientSession, admin: str, wait: str = "5s", **body: object) -> dict:
    body.setdefault("reason", "fixed")
    async with session.post(f"{admin}/v1/unkill?wait={wait}", json=body, headers=auth()) as r:
        data = await r.json()
        assert r.status == 200, data
        return data


async def status_of(session: ClientSession, url: str) -> tuple[int, str]:
    async with session.get(url + INFER) as r:
        await r.read()
        return r.status, r.headers.get("x-killgate-decision", "")


# --------------------------------------------------------------------------- many processes


async def test_kill_reaches_three_processes_and_four_workers(tmp_path: Path, backends,
                                                             redis_server, gateway_procs,
                                                             session) -> None:
    p1 = await backends(echo_app("v1"))
    routes = two_versions(p1, p1, 100, 0)
    procs = []
    for name, workers in (("a", 1), ("b", 1), ("c", 2)):
        cfg = fixed_ports_config(tmp_path, routes, redis_state(redis_server, tmp_path, name), name)
        procs.append(gateway_procs(cfg, workers=workers))
    for p in procs:
        await asyncio.to_thread(p.wait_ready)
    # every worker has announced itself before we measure the receipt
    await wait_until(lambda: redis_server.cmd("HLEN", "kgtest:instances") == "4", 10,
                     what="4 instances registered")
    # warm connections to every process, so the measurement below is not connection setup
    for p in procs:
        assert (await status_of(session, p.url))[0] == 200
    res = await kill(session, procs[0].admin, scope="route", route="iris")
    answered = time.monotonic()
    first = await asyncio.gather(*(status_of(session, p.url) for p in procs))
    rejected_within = time.monotonic() - answered
    assert first == [(503, "killed")] * 3
    # every instance acked before the answer (below), so each rejects from that moment on
    # (one that had not would answer 200 above); this bounds our own three round trips,
    # generously for a 2-vCPU machine running seven processes of this test and more
    assert rejected_within < 1.0, rejected_within
    assert res["applied"]["instances"] == 4 and res["applied"]["acked"] == 4, res
    assert res["applied"]["pending"] == []
    # each worker of c too: fresh connections spread over both
    for p in procs:
        for _ in range(6):
            async with ClientSession() as fresh:
                assert await status_of(fresh, p.url) == (503, "killed")
    res = await unkill(session, procs[2].admin, scope="route", route="iris")
    assert res["applied"]["acked"] == 4
    for p in procs:
        assert (await status_of(session, p.url))[0] == 200
    for p in procs:
        assert p.stop() == 0, p.output()


# --------------------------------------------------------------------------- in-process pairs


async def test_lost_pubsub_messages_are_caught_by_the_poll(tmp_path: Path, backends,
                                                           redis_server, session) -> None:
    p1 = await backends(echo_app("v1"))
    routes = two_versions(p1, p1, 100, 0)
    cfg_a = write_config(tmp_path, routes, state=redis_state(redis_server, tmp_path, "a"),
                         name="a.yaml")
    cfg_b = write_config(tmp_path, routes, state=redis_state(redis_server, tmp_path, "b"),
                         name="b.yaml")
    poll = 0.1
    lags = []
    async with running_gateway(cfg_a, "a") as a, running_gateway(cfg_b, "b") as b:
        for i in range(40):  # (each a lost message: 40 polls' worth of lags)
            killing = i % 2 == 0
            redis_server.cmd("CLIENT", "KILL", "TYPE", "pubsub")
            t0 = time.monotonic()
            path = "/v1/kill" if killing else "/v1/unkill"
            async with session.post(f"{a.admin}{path}?wait=0s", headers=auth(),
                                    json={"scope": "route", "route": "iris",
                                          "reason": f"trial {i}"}) as r:
                assert r.status == 200, await r.text()
            await wait_until(lambda k=killing: ("route:iris" in b.gw.holder.doc.kills) == k,
                             2.0, 0.001, "b to apply the change")
            lags.append(time.monotonic() - t0)
    # The poll, not luck, delivers: typically within one interval; a loaded CI machine may
    # delay a poll tick, so the worst case gets a generous bound (without the poll the
    # change never arrives and wait_until fails at 2 s).
    assert sorted(lags)[len(lags) // 2] <= poll + 0.1, sorted(lags)
    assert max(lags) <= poll + 1.5, sorted(lags)[-5:]  # (a CI run under load: 0.89 s once)


async def test_duplicates_and_reordering_are_harmless(tmp_path: Path) -> None:
    from gateway.configfile import load_config
    from gateway.control.table import TableHolder
    from gateway.domain.statedoc import KillFlag, StateDoc

    cfg = write_config(tmp_path, two_versions(1, 2))
    holder = TableHolder(load_config(cfg))
    flag = KillFlag("route", "iris", None, "a", "r", "t", 1)
    killed = StateDoc(generation=1, kills={"route:iris": flag})
    lifted = StateDoc(generation=2)
    assert holder.apply_doc(lifted) and not holder.apply_doc(killed)  # older: ignored
    assert holder.doc.kills == {}
    assert not holder.apply_doc(lifted)  # duplicate
    assert holder.apply_doc(StateDoc(generation=3, kills={"route:iris": flag}))
    assert holder.table.by_name["iris"].killed == "route"


async def test_alternating_writers_commit_in_one_round_trip(redis_server: RedisServer) -> None:
    """An operator's calls land on whichever instance the load balancer picks. Each
    instance learns the audit head from the documents pushed to it, so its commit is one
    script call; guessing its own last head would be refused and retried every time."""
    from gateway.domain.audit import AuditDraft
    from gateway.domain.auditverify import verify_chain
    from gateway.domain.statedoc import KillFlag, StateDoc
    from gateway.state.redis import RedisStore
    from gateway.state.resp import connect, parse_endpoint
    from gateway.state.signing import Key, Keyring

    keys = Keyring(Key.of(STATE_KEY.encode()))
    stores = [RedisStore(redis_server.url, "kgtest", 1.0, keys=keys) for _ in range(2)]
    seen: list[list[int]] = [[], []]
    for store, got in zip(stores, seen, strict=True):
        store.listen(lambda item, got=got: got.append(getattr(item, "generation", -1)))
        await store.open()
    probe = await connect(parse_endpoint(redis_server.url), 2.0)
    try:
        flag = KillFlag("route", "iris", None, "alice", "bad", "t", 1)
        for gen in range(1, 7):
            if gen == 2:  # the first commit may guess the genesis head; count from here
                await probe.call("CONFIG", "RESETSTAT", timeout=2.0)
            writer = stores[gen % 2]
            doc = StateDoc(generation=gen, kills={"route:iris": flag} if gen % 2 else {})
            draft = AuditDraft("alice", "kill" if gen % 2 else "unkill", {"route": "iris"}, "r")
            await writer.commit(str(gen - 1) if gen > 1 else None, doc, draft)
            # the other instance hears of it before the next call reaches it
            await wait_until(lambda gen=gen: all(gen in s for s in seen), 5.0,
                             what=f"generation {gen} pushed to both stores")
        stats = (await probe.call("INFO", "commandstats", timeout=2.0)).decode()
        evals = sum(int(line.split("calls=")[1].split(",")[0]) for line in stats.splitlines()
                    if line.startswith(("cmdstat_evalsha:", "cmdstat_eval:")))
        assert evals == 5, stats  # generations 2..6: one call each
        checked, broken = verify_chain(await stores[0].audit_events())
        assert (checked, broken) == (6, None)
    finally:
        await probe.aclose()
        for store in stores:
            await store.close()


async def test_a_commit_is_enforced_from_its_answer_and_its_echo_is_not_reopened(
        redis_server: RedisServer) -> None:
    """The committing instance is handed the document as stored (audit head and position
    set) in the loop turn that read the script's answer, before `commit` returns, and
    only when the script stored it; its own push coming back is that same document, not
    verified and decoded again. Another instance opens the push once, and re-reading the
    same bytes from the store (an unkill's check) does not open them again."""
    from gateway.domain.audit import AuditDraft
    from gateway.domain.statedoc import KillFlag, StateDoc
    from gateway.errors import StoreConflict
    from gateway.state.redis import RedisStore
    from gateway.state.signing import Key, Keyring

    keys = Keyring(Key.of(STATE_KEY.encode()))
    stores = [RedisStore(redis_server.url, "kgtest", 1.0, keys=keys) for _ in range(2)]
    pushed: list[list[object]] = [[], []]
    opened: list[list[bytes]] = [[], []]
    for store, got, seen in zip(stores, pushed, opened, strict=True):
        store.listen(got.append)
        real = store.keys.open
        store.keys.open = (  # type: ignore[method-assign]
            lambda kind, raw, real=real, seen=seen: (seen.append(raw), real(kind, raw))[1])
        await store.open()
    mine, other = stores
    try:
        flag = KillFlag("route", "iris", None, "alice", "bad", "t", 1)
        doc = StateDoc(generation=1, kills={"route:iris": flag})
        told: list[tuple[StateDoc, bool]] = []
        returned = False
        ev = await mine.commit(None, doc, AuditDraft("alice", "kill", {"route": "iris"}, "r"),
                               on_stored=lambda d: told.append((d, returned)))
        returned = True
        assert ev is not None and len(told) == 1
        stored, after_return = told[0]
        assert not after_return
        assert (stored.audit_head, stored.audit_seq) == (ev["hash"], 1)
        assert stored.with_changes(audit_head="", audit_seq=0) == doc
        await wait_until(lambda: pushed[0] and pushed[1], 5.0, what="the push on both")
        assert pushed[0] == [stored] and pushed[0][0] is stored  # the echo: not reopened
        assert opened[0] == []
        assert pushed[1] == [stored] and len(opened[1]) == 1  # the other one checks it
        loaded = await other.load()
        assert loaded.trusted and loaded.doc is pushed[1][0] and len(opened[1]) == 1
        assert (await mine.load()).doc == stored and len(opened[0]) == 1  # a store read
        # a commit the script refuses is not handed over
        with pytest.raises(StoreConflict):
            await mine.commit("7", StateDoc(generation=8), None,
                              on_stored=lambda d: told.append((d, True)))
        assert len(told) == 1
    finally:
        for store in stores:
            await store.close()


@pytest.mark.parametrize("how", ["restart", "flushall"])
async def test_store_emptied_keeps_the_kill_and_reseeds(tmp_path: Path, backends, redis_server,
                                                        session, how: str) -> None:
    p1 = await backends(echo_app("v1"))
    # (a re-seed whose reply comes after the command timeout landed, but is not counted:
    # the instance cannot tell it did it; 300 ms is not much on a loaded machine)
    cfg = write_config(tmp_path, two_versions(p1, p1, 100, 0),
                       state=redis_state(redis_server, tmp_path, command_timeout="2s"))
    async with running_gateway(cfg) as g:
        await kill(session, g.admin, scope="route", route="iris")
        served = Counter()
        stop = asyncio.Event()

        async def load() -> None:
            while not stop.is_set():
                code, decision = await status_of(session, g.url)
                served[(code, decision)] += 1
                await asyncio.sleep(0.002)

        task = asyncio.create_task(load())
        await wait_until(lambda: sum(served.values()) > 20, 5, what="load to start")
        if how == "restart":
            redis_server.restart()
        else:
            redis_server.cmd("FLUSHALL")
        await wait_until(lambda: "route:iris" in redis_server.cmd("GET", "kgtest:state"), 10,
                         what="the kill to be re-seeded into redis")
        await wait_until(lambda: g.gw.sync.connected, 5, what="reconnect")
        n = sum(served.values())
        await wait_until(lambda: sum(served.values()) > n + 20, 5, what="more load")
        stop.set()
        await task
        assert set(served) == {(503, "killed")}, served  # not one request reached the backend
        assert "state.reseed" in redis_server.cmd("XRANGE", "kgtest:audit", "-", "+")
        assert g.gw.metrics.get("killgate_state_reseeds_total") >= 1
        # the kill is in redis again, and only an explicit unkill lifts it
        await unkill(session, g.admin, scope="route", route="iris")
        assert (await status_of(session, g.url))[0] == 200


async def test_corrupt_or_unsigned_document_in_redis_keeps_the_kill_and_is_repaired(
        tmp_path: Path, backends, redis_server, session) -> None:
    """A state key overwritten with something that is not a signed state document (a list,
    a hand-written document lifting the kill, a kill flag of the wrong shape, a push that
    is not JSON): the instance refuses it, keeps enforcing what it knew, says why in its
    status and metrics, and re-seeds the store with its own signed state. A hand-written
    document never lifts a kill: only an unkill through the API does."""
    from gateway.state.signing import Key

    p1 = await backends(echo_app("v1"))
    cfg = write_config(tmp_path, two_versions(p1, p1, 100, 0),
                       state=redis_state(redis_server, tmp_path))
    async with running_gateway(cfg) as g:
        applied = await kill(session, g.admin, scope="route", route="iris")
        gen = applied["generation"]
        stored = redis_server.cmd("GET", "kgtest:state")
        good = json.loads(stored.split("\n", 1)[1])
        bad_flag = {**good, "generation": gen + 1,
                    "kills": {"route:iris": {"scope": "everything", "route": ["iris"]}}}
        lifted = {**good, "generation": gen + 1, "kills": {}}
        for corrupt, problem in (("[1, 2]", "carries no signature"),
                                 (json.dumps(lifted), "carries no signature"),
                                 ("KGS1 00000000 " + "0" * 64 + "\n" + json.dumps(bad_flag),
                                  "unknown key id")):
            # a push it cannot read, refused before the document is written: the status
            # names the last refusal of any kind, and that must be the document's below
            pushes = g.gw.metrics.get("killgate_state_unverified_total", ("push",))
            receivers = [redis_server.cmd("PUBLISH", "kgtest:events", "{not json")]

            def push_refused(pushes: float = pushes, receivers: list[str] = receivers) -> bool:
                if g.gw.metrics.get("killgate_state_unverified_total", ("push",)) > pushes:
                    return True
                if receivers[-1] == "0":  # published while it was not subscribed (it
                    # reconnects after a command timed out on a loaded machine): pub/sub
                    # keeps nothing for later, so again
                    receivers.append(redis_server.cmd("PUBLISH", "kgtest:events", "{not json"))
                return False

            await wait_until(push_refused, 10, 0.02, what="the unreadable push to be refused")
            refused = g.gw.metrics.get("killgate_state_unverified_total", ("state",))
            redis_server.cmd("SET", "kgtest:state", corrupt)
            redis_server.cmd("SET", "kgtest:gen", str(gen + 1))
            await wait_until(lambda refused=refused: g.gw.metrics.get(
                "killgate_state_unverified_total", ("state",)) > refused, 5,
                what=f"the corrupt document ({problem}) to be refused")
            assert problem in g.gw.sync.status()["verification"]["last_unverified"]["problem"]
            for _ in range(5):
                assert await status_of(session, g.url) == (503, "killed")
            # re-seeded: the store holds our signed state again, the kill in it
            ours = f"KGS1 {Key.of(STATE_KEY.encode()).kid} "
            await wait_until(lambda ours=ours: redis_server.cmd("GET", "kgtest:state")
                             .startswith(ours), 5, what="the store to be re-seeded")
            assert "route:iris" in redis_server.cmd("GET", "kgtest:state")
            # the next corrupt document must be newer than the re-seeded one, which the
            # instance holds once it has taken it (read before that, the holder's older
            # generation + 1 could equal the store's: nothing to load, nothing refused)
            gen = int(redis_server.cmd("GET", "kgtest:gen"))
            await wait_until(lambda gen=gen: g.gw.holder.doc.generation >= gen, 5,
                             what="the re-seeded document to be held")
        assert g.gw.metrics.get("killgate_state_unverified_total", ("push",)) >= 3
        assert g.gw.metrics.get("killgate_state_reseeds_total") >= 3
        await unkill(session, g.admin, scope="route", route="iris")
        assert (await status_of(session, g.url))[0] == 200


async def test_frozen_redis_does_not_slow_requests(tmp_path: Path, backends, redis_server,
                                                   gateway_procs) -> None:
    p1 = await backends(echo_app("v1"))
    # a long command timeout, so a request that waited on redis would stand far out of noise
    cfg = fixed_ports_config(tmp_path, two_versions(p1, p1, 100, 0),
                             redis_state(redis_server, tmp_path, command_timeout="3s"), "a")
    gw = gateway_procs(cfg)
    await asyncio.to_thread(gw.wait_ready)

    async def measure(seconds: float) -> list[float]:
        lat: list[float] = []
        end = time.monotonic() + seconds
        conn = aiohttp.TCPConnector(limit=8)
        async with ClientSession(connector=conn) as s:
            async def worker() -> None:
                while time.monotonic() < end:
                    t0 = time.perf_counter()
                    async with s.get(gw.url + INFER) as r:
                        await r.read()
                        assert r.status == 200
                    lat.append(time.perf_counter() - t0)

            await asyncio.gather(*(worker() for _ in range(8)))
        return sorted(lat)

    base = await measure(2.0)  # (thousands of requests: a p99 of its own)
    redis_server.freeze()
    try:
        frozen = await measure(5.0)
    finally:
        redis_server.thaw()
    p99 = lambda xs: xs[int(len(xs) * 0.99)]  # noqa: E731
    # "beyond noise": a request that waited on redis would take >= 3 s (command timeout);
    # the sync loop hogging the loop while redis is frozen would move the p99. The margin
    # is a loaded 2-core machine's: 8 s of measurements there differ by a few 100 ms.
    assert max(frozen) < 1.5, max(frozen)
    assert p99(frozen) < p99(base) + 0.5, (p99(base), p99(frozen))
    assert statistics.median(frozen) < 0.05
    assert gw.stop() == 0, gw.output()


async def test_redis_down_at_start_enforces_the_snapshot(tmp_path: Path, backends, redis_server,
                                                         session) -> None:
    p1 = await backends(echo_app("v1"))
    cfg = write_config(tmp_path, two_versions(p1, p1, 100, 0),
                       state=redis_state(redis_server, tmp_path))
    async with running_gateway(cfg) as g:
        await kill(session, g.admin, scope="route", route="iris")
        await wait_until(lambda: (tmp_path / "snapshot-a.json").exists()
                         and "route:iris" in (tmp_path / "snapshot-a.json").read_text(), 5)
    redis_server.kill()
    async with running_gateway(cfg) as g:
        assert g.gw.ready and not g.gw.sync.connected
        assert (await status_of(session, g.url))[0] == 503  # the very first request
        async with session.get(g.admin + "/readyz") as r:
            assert r.status == 200
            assert (await r.json())["state"]["from_snapshot"] is True


async def test_not_ready_without_snapshot_or_sync(tmp_path: Path, backends, redis_server,
                                                  session) -> None:
    p1 = await backends(echo_app("v1"))
    cfg = write_config(tmp_path, two_versions(p1, p1, 100, 0),
                       state=redis_state(redis_server, tmp_path))
    redis_server.kill()
    async with running_gateway(cfg) as g:
        async with session.get(g.admin + "/readyz") as r:
            assert r.status == 503
        redis_server.start()
        await wait_until(lambda: g.gw.ready, 10, what="ready after the first sync")


async def test_last_known_raises_the_stale_alarm_and_keeps_serving(
        tmp_path: Path, backends, redis_server, session) -> None:
    """RELIABILITY row 14: Redis dies; the last-known state keeps serving, and past
    max_staleness the alarm is up (gauge, status, log) until a sync succeeds again."""
    p1 = await backends(echo_app("v1"))
    state = redis_state(redis_server, tmp_path, extra="  max_staleness: 1s\n")
    cfg = write_config(tmp_path, two_versions(p1, p1, 100, 0), state=state)
    async with running_gateway(cfg) as g:
        assert g.gw.metrics.get("killgate_state_stale") == 0
        redis_server.kill()
        last_ok = g.gw.sync.last_ok
        assert last_ok is not None
        await wait_until(lambda: g.gw.metrics.get("killgate_state_stale") == 1, 5,
                         what="the stale alarm")
        assert time.monotonic() - last_ok >= 1.0
        async with session.get(g.admin + "/v1/status", headers=auth()) as r:
            store = (await r.json())["store"]
        assert store["stale"] is True and store["fail_closed"] is False
        assert (await status_of(session, g.url))[0] == 200  # last_known: still serving
        redis_server.start()
        await wait_until(lambda: g.gw.metrics.get("killgate_state_stale") == 0, 10,
                         what="the alarm to clear")
        assert g.gw.sync.status()["stale"] is False


async def test_fail_closed_after_max_staleness(tmp_path: Path, backends, redis_server,
                                               session) -> None:
    p1 = await backends(echo_app("v1"))
    state = redis_state(redis_server, tmp_path,
                        extra="  on_unavailable: fail_closed\n  max_staleness: 1s\n")
    cfg = write_config(tmp_path, two_versions(p1, p1, 100, 0), state=state)
    async with running_gateway(cfg) as g:
        assert (await status_of(session, g.url))[0] == 200
        redis_server.kill()
        last_ok = g.gw.sync.last_ok  # staleness counts from the last good sync
        assert last_ok is not None
        await wait_until(lambda: g.gw.holder.fail_closed, 5, what="fail_closed to trip")
        assert time.monotonic() - last_ok >= 1.0
        async with session.get(g.url + INFER) as r:
            assert r.status == 503
            assert (await r.json())["error"] == {
                "type": "killed", "scope": "global", "message": "this model route is disabled"}
        redis_server.start()
        await wait_until(lambda: not g.gw.holder.fail_closed, 10, what="recovery")
        assert (await status_of(session, g.url))[0] == 200
        assert g.gw.sync.staleness() < 1.0
        # the trip and the recovery are audited once the store answers again
        await wait_until(lambda: "fail_closed.clear" in redis_server.cmd(
            "XRANGE", "kgtest:audit", "-", "+"), 5, what="audit events")


async def test_sse_on_a_killed_version_gets_the_error_event(tmp_path: Path, backends,
                                                            redis_server, session) -> None:
    p1 = await backends(sse_app("v1", events=100, interval=0.05))
    # (v2 answers at once: on p1, the failover request below read a 5 s stream too)
    p2 = await backends(echo_app("v2"))
    cfg = write_config(tmp_path, two_versions(p1, p2, 100, 0),
                       state=redis_state(redis_server, tmp_path))
    async with running_gateway(cfg) as g:
        async with session.get(g.url + "/v2/models/iris/stream") as r:
            got = []
            first = await r.content.readuntil(b"\n\n")
            # (a gateway that started without the kill state answers 503 state_unknown)
            assert r.status == 200 and first.startswith(b"data: "), (r.status, first)
            got.append(first)
            res = await kill(session, g.admin, scope="version", route="iris", version="v1")
            receipt_at = time.monotonic()
            rest = await asyncio.wait_for(r.content.read(), 5)
            closed_at = time.monotonic()
        events = [e for e in rest.decode().split("\n\n") if e]
        assert events[-1].startswith("event: killgate.error")
        assert json.loads(events[-1].split("data: ", 1)[1]) == {
            "type": "killed", "route": "iris", "version": "v1"}
        # cut at the kill (the stream itself runs 5 s more); what is measured is reading
        # what had arrived, so the bound is for a loaded machine's scheduling
        assert closed_at - receipt_at < 1.0, closed_at - receipt_at
        assert res["applied"]["acked"] == 1
        # the killed version gets no new traffic: v2 takes its share
        async with session.get(g.url + INFER) as r:
            await r.read()
            assert (r.headers["x-killgate-version"], r.headers["x-killgate-decision"]) == (
                "v2", "failover")


async def test_keep_inflight_lets_the_stream_finish(tmp_path: Path, backends, redis_server,
                                                    session) -> None:
    p1 = await backends(sse_app("v1", events=6, interval=0.05))
    cfg = write_config(tmp_path, two_versions(p1, p1, 100, 0),
                       state=redis_state(redis_server, tmp_path))
    async with running_gateway(cfg) as g:
        async with session.get(g.url + "/v2/models/iris/stream") as r:
            await r.content.readuntil(b"\n\n")
            await kill(session, g.admin, scope="global", abort_inflight=False)
            rest = await asyncio.wait_for(r.content.read(), 5)
        assert rest.endswith(b"data: [DONE]\n\n")


async def test_a_kept_stream_is_cut_when_the_kill_is_repeated_with_abort(
        tmp_path: Path, backends, redis_server, session) -> None:
    """A kill made with keep-inflight, repeated without it: the running stream is cut then,
    the kill keeps its first actor and reason, and the upgrade is one audited change."""
    p1 = await backends(sse_app("v1", events=100, interval=0.05))
    cfg = write_config(tmp_path, two_versions(p1, p1, 100, 0),
                       state=redis_state(redis_server, tmp_path))
    async with running_gateway(cfg) as g:
        async with session.get(g.url + "/v2/models/iris/stream") as r:
            head = await r.content.readuntil(b"\n\n")
            assert r.status == 200 and head.startswith(b"data: "), (r.status, head)
            first = await kill(session, g.admin, scope="global", abort_inflight=False,
                               reason="keep them")
            await r.content.readuntil(b"\n\n")  # still streaming
            second = await kill(session, g.admin, scope="global", reason="now cut them")
            rest = await asyncio.wait_for(r.content.read(), 5)
        assert b"event: killgate.error" in rest and not rest.endswith(b"[DONE]\n\n")
        assert first["changed"] and second["changed"]
        assert second["generation"] == first["generation"] + 1
        flag = g.gw.holder.doc.kills["global"]
        assert (flag.reason, flag.abort_inflight) == ("keep them", True)
        again = await kill(session, g.admin, scope="global", reason="and again")
        assert again["changed"] is False and again["generation"] == second["generation"]


# --------------------------------------------------------------------------- the API's edges


async def test_kill_api_refuses_without_proper_token(tmp_path: Path, backends, session) -> None:
    p1 = await backends(echo_app("v1"))
    cfg = write_config(tmp_path, two_versions(p1, p1, 100, 0))
    async with running_gateway(cfg) as g:
        body = {"scope": "global", "reason": "x"}
        async with session.post(g.admin + "/v1/kill", json=body) as r:
            assert r.status == 401
        async with session.post(g.admin + "/v1/kill", json=body,
                                headers=auth("killgate:read")) as r:
            assert r.status == 403
        for bad, status in (({"scope": "route", "reason": "x"}, 400),
                            ({"scope": "route", "route": "nope", "reason": "x"}, 404),
                            ({"scope": "version", "route": "iris", "version": "v9",
                              "reason": "x"}, 404),
                            ({"scope": "global"}, 400),
                            ({"scope": "global", "reason": "  "}, 400),
                            ({"scope": "global", "reason": "x", "abort_inflight": "yes"}, 400)):
            async with session.post(g.admin + "/v1/kill", json=bad, headers=auth()) as r:
                assert r.status == status, (bad, await r.text())
        async with session.post(g.admin + "/v1/unkill", json=body, headers=auth()) as r:
            assert r.status == 409
        assert g.gw.holder.doc.kills == {}  # nothing changed
        assert (await status_of(session, g.url))[0] == 200


async def test_local_store_kill_across_two_workers_survives_restart(tmp_path: Path, backends,
                                                                    gateway_procs,
                                                                    session) -> None:
    p1 = await backends(echo_app("v1"))
    cfg = write_config(tmp_path, two_versions(p1, p1, 100, 0),
                       listen=f"127.0.0.1:{free_port()}", admin=f"127.0.0.1:{free_port()}")
    gw = gateway_procs(cfg, workers=2)
    await asyncio.to_thread(gw.wait_ready)
    await wait_until(lambda: len(list((tmp_path).glob("store.json.instances/*.json"))) == 2, 10,
                     what="both workers registered")
    res = await kill(session, gw.admin, scope="route", route="iris")
    assert res["applied"] == {**res["applied"], "instances": 2, "acked": 2}
    for _ in range(8):
        async with ClientSession() as fresh:
            assert await status_of(fresh, gw.url) == (503, "killed")
    assert gw.stop() == 0, gw.output()
    gw2 = gateway_procs(cfg, workers=2)
    await asyncio.to_thread(gw2.wait_ready)
    await wait_until(lambda: len(list((tmp_path).glob("store.json.instances/*.json"))) == 2, 10,
                     what="both workers registered again")
    for _ in range(8):
        async with ClientSession() as fresh:
            assert await status_of(fresh, gw2.url) == (503, "killed")
    res = await unkill(session, gw2.admin, scope="route", route="iris")
    assert res["applied"] == {**res["applied"], "instances": 2, "acked": 2}
    for _ in range(8):
        async with ClientSession() as fresh:
            assert (await status_of(fresh, gw2.url))[0] == 200
    assert gw2.stop() == 0, gw2.output()


async def test_the_config_file_still_moves_traffic_while_redis_is_down(
        tmp_path: Path, backends, redis_server, session) -> None:
    """The runbook's fallback when no kill can be made (Redis down): set the bad version's
    weight to 0 in the file; the reload applies without the store."""
    p1, p2 = await backends(echo_app("v1")), await backends(echo_app("v2"))
    cfg = write_config(tmp_path, two_versions(p1, p2, 50, 50),
                       state=redis_state(redis_server, tmp_path))
    async with running_gateway(cfg) as g:
        redis_server.kill()
        await wait_until(lambda: not g.gw.sync.connected, 10, what="the store to be missed")
        text = cfg.read_text()
        tmp = cfg.with_suffix(".tmp")
        tmp.write_text(text.replace("weight: 50}", "weight: 100}", 1)
                       .replace("weight: 50}", "weight: 0}"))
        tmp.replace(cfg)
        await wait_until(lambda: g.gw.holder.table.by_name["iris"].effective_weights()["v2"]
                         == 0, 10, what="the new weights in force")
        seen = Counter()
        for _ in range(50):
            async with session.get(g.url + INFER) as r:
                seen[(r.status, r.headers["x-killgate-version"])] += 1
        assert seen == {(200, "v1"): 50}
