"""RELIABILITY row 51: someone with write access to Redis but without the signing key.

Real redis-server, real `killgate serve` processes. Forged SET+PUBLISH, PUBLISH-only and
forged acks change no enforced kill on any instance and no receipt; each is detected,
counted and shown in /v1/status and /metrics. Key rotation: a document signed with the
previous key is accepted only while that key is configured.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import time
from pathlib import Path
from typing import Any

from aiohttp import ClientSession

from gateway.state.signing import Key, Keyring
from tests.backends import echo_app
from tests.conftest import (
    STATE_KEY,
    RedisServer,
    running_gateway,
    signed_ack,
    two_versions,
    wait_until,
    write_config,
)
from tests.test_killswitch import (
    auth,
    fixed_ports_config,
    kill,
    redis_state,
    status_of,
    unkill,
)

ATTACKER_KEY = "the-attackers-own-key-0123456789-abcdef"


def stored_doc(redis: RedisServer, prefix: str = "kgtest") -> dict[str, Any]:
    raw = redis.cmd("GET", f"{prefix}:state")
    assert raw.startswith("KGS1 "), raw[:40]
    return dict(json.loads(raw.split("\n", 1)[1]))


def sealed(doc: dict[str, Any], key: str, prefix: str = "kgtest") -> str:
    """A document signed the way killgate signs, with `key` (not necessarily ours)."""
    return Keyring(Key.of(key.encode()), context=prefix).seal(
        b"state", json.dumps(doc).encode()).decode()


def plant(redis: RedisServer, doc: dict[str, Any], key: str = STATE_KEY) -> str:
    """Another writer's commit, as the store's script makes it: `doc` signed with `key`,
    stored with its generation, and published. The signed value."""
    value = sealed(doc, key)
    redis.cmd("SET", "kgtest:state", value)
    redis.cmd("SET", "kgtest:gen", str(doc["generation"]))
    redis.cmd("PUBLISH", "kgtest:events", value)
    return value


async def admin_json(session: ClientSession, admin: str, path: str) -> dict[str, Any]:
    async with session.get(admin + path, headers=auth()) as r:
        assert r.status == 200, await r.text()
        return dict(await r.json())


async def metric(session: ClientSession, admin: str, series: str) -> float:
    async with session.get(admin + "/metrics") as r:
        for line in (await r.text()).splitlines():
            if line.startswith(series + " "):
                return float(line.split()[-1])
    return 0.0


async def stays_killed(session: ClientSession, urls: list[str], seconds: float = 2.0) -> None:
    """Poll every instance's data plane for `seconds`: every answer is `killed`."""
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        got = await asyncio.gather(*(status_of(session, u) for u in urls))
        assert got == [(503, "killed")] * len(urls), got
        await asyncio.sleep(0.02)


async def _fleet(tmp_path: Path, backends, redis_server, gateway_procs, names=("a", "b"),  # type: ignore[no-untyped-def]
                 lease: str = "2s"):
    p1 = await backends(echo_app("v1"))
    procs = []
    for name in names:
        state = redis_state(redis_server, tmp_path, name).replace(
            "instance_lease: 2s", f"instance_lease: {lease}")
        cfg = fixed_ports_config(tmp_path, two_versions(p1, p1, 100, 0), state, name)
        procs.append(gateway_procs(cfg))
    for p in procs:
        await asyncio.to_thread(p.wait_ready)
    await wait_until(lambda: redis_server.cmd("HLEN", "kgtest:instances") == str(len(names)),
                     10, what="every instance registered")
    return procs


async def test_forged_set_and_publish_lift_no_kill(tmp_path: Path, backends, redis_server,
                                                   gateway_procs, session) -> None:
    procs = await _fleet(tmp_path, backends, redis_server, gateway_procs)
    res = await kill(session, procs[0].admin, scope="route", route="iris")
    assert res["applied"]["acked"] == 2
    gen = res["generation"]
    genuine = stored_doc(redis_server)
    assert "route:iris" in genuine["kills"]
    urls = [p.url for p in procs]
    for n, (how, key) in enumerate((("unsigned", None), ("attacker's key", ATTACKER_KEY))):
        forged = {**genuine, "generation": gen + 50 + n, "kills": {}}
        value = json.dumps(forged) if key is None else sealed(forged, key)
        redis_server.cmd("SET", "kgtest:state", value)
        redis_server.cmd("SET", "kgtest:gen", str(gen + 50 + n))
        redis_server.cmd("PUBLISH", "kgtest:events", value)
        await stays_killed(session, urls)
        # the store holds killgate's own signed state again, the kill in it (re-seeded)
        await wait_until(lambda: "route:iris" in stored_doc(redis_server)["kills"], 5,
                         what=f"the store to be repaired after the {how} forgery")
    for p in procs:
        st = await admin_json(session, p.admin, "/v1/status")
        ver = st["store"]["verification"]
        assert ver["signed"] and ver["key_id"]
        assert ver["unverified"].get("push", 0) >= 2, ver
        assert ver["unverified_total"] >= 2 and ver["last_unverified"]["problem"]
        assert st["kills"] and st["kills"][0]["scope"] == "route"
        assert await metric(session, p.admin,
                            'killgate_state_unverified_total{kind="push"}') >= 2
    # only an unkill through the API lifts it, on every instance
    await unkill(session, procs[1].admin, scope="route", route="iris")
    for p in procs:
        assert (await status_of(session, p.url))[0] == 200


async def test_forged_publish_only_lifts_no_kill(tmp_path: Path, backends, redis_server,
                                                 gateway_procs, session) -> None:
    procs = await _fleet(tmp_path, backends, redis_server, gateway_procs)
    before = stored_doc(redis_server)  # a genuine, signed document without the kill
    before_raw = redis_server.cmd("GET", "kgtest:state")
    res = await kill(session, procs[0].admin, scope="route", route="iris")
    gen = res["generation"]
    after = stored_doc(redis_server)
    urls = [p.url for p in procs]
    forgeries = [
        json.dumps({**after, "generation": gen + 100, "kills": {}}),  # unsigned
        sealed({**after, "generation": gen + 101, "kills": {}}, ATTACKER_KEY),  # other key
        # our own signature on other content: the body edited after signing
        before_raw.split("\n", 1)[0] + "\n" + json.dumps({**before, "generation": gen + 102}),
        before_raw,  # a genuine document replayed: older than what every instance holds
        "{not json",
    ]
    subscribed = f":{len(procs)}\r\n"
    for value in forgeries:
        # (a push reaches only the subscribers there at that moment: on a loaded machine an
        # instance may be re-subscribing, so each forgery is sent until every instance got it;
        # the same forgery twice only counts twice. A CI run under load saw one instance
        # count none)
        while True:
            await wait_until(lambda: redis_server.cmd("PUBSUB", "NUMSUB", "kgtest:events")
                             .endswith(subscribed), 10, what="every instance subscribed")
            if redis_server.cmd("PUBLISH", "kgtest:events", value) == str(len(procs)):
                break
    await stays_killed(session, urls)
    assert "route:iris" in stored_doc(redis_server)["kills"]
    for p in procs:
        st = await admin_json(session, p.admin, "/v1/status")
        assert st["generation"] == gen
        assert st["store"]["verification"]["unverified"].get("push", 0) >= 4
        assert await metric(session, p.admin,
                            'killgate_state_unverified_total{kind="push"}') >= 4


async def test_forged_acks_count_in_no_receipt(tmp_path: Path, backends, redis_server,
                                               gateway_procs, session) -> None:
    """Instance b is frozen (SIGSTOP), so it applies nothing. Acks forged in its name, and
    a heartbeat of an instance that does not exist, must not make the receipt of a kill
    say b (or a ghost) enforces it."""
    # b stays live (within its lease) for the whole test although it is frozen: with a 2 s
    # lease, a loaded machine could take that long from the freeze to the kill's receipt,
    # and b would drop out of the fleet instead of being pending
    a, b = await _fleet(tmp_path, backends, redis_server, gateway_procs, lease="30s")
    st_b = await admin_json(session, b.admin, "/v1/status")
    name_b = st_b["instance"]
    os.kill(b.proc.pid, signal.SIGSTOP)
    stop = asyncio.Event()

    async def forge() -> None:
        now = int(time.time() * 1000)
        while not stop.is_set():
            for inst in (name_b, "ghost"):
                redis_server.cmd("PUBLISH", "kgtest:acks", f"- - 999999 {now} - {inst}")
                redis_server.cmd("PUBLISH", "kgtest:acks",
                                 signed_ack("kgtest", inst, 999999, ATTACKER_KEY))
            redis_server.cmd("HSET", "kgtest:instances", "ghost",
                             f"{int(time.time() * 1000)} - - 999999 {now} - ghost")
            await asyncio.sleep(0.02)

    task = asyncio.create_task(forge())
    try:
        async with session.post(f"{a.admin}/v1/kill?wait=1s", headers=auth(),
                                json={"scope": "route", "route": "iris",
                                      "reason": "bad"}) as r:
            receipt = await r.json()
            assert r.status == 200, receipt
        applied = receipt["applied"]
        assert name_b in applied["pending"], applied
        assert applied["acked"] == applied["instances"] - 1 == 1, applied
        st = await admin_json(session, a.admin, "/v1/status")
        assert "ghost" not in st["instances"]
        ver = st["store"]["verification"]["unverified"]
        assert ver.get("ack", 0) >= 2 and ver.get("heartbeat", 0) >= 1, ver
        assert await metric(session, a.admin, 'killgate_state_unverified_total{kind="ack"}') >= 2
    finally:
        stop.set()
        await task
        os.kill(b.proc.pid, signal.SIGCONT)
    # b wakes, applies the kill and acks it itself
    async def b_killed() -> bool:
        return await status_of(session, b.url) == (503, "killed")

    await wait_until(b_killed, 10, 0.05, "b to apply the kill after waking")


async def test_old_key_is_accepted_only_during_the_rotation_overlap(
        tmp_path: Path, backends, redis_server: RedisServer, session, monkeypatch) -> None:
    """Overlap = while `previous_signing_key_*` names the old key: a document signed with
    it is verified (and counted as such). Without it, the same document is refused."""
    new_key = "the-new-state-key-0123456789-abcdefghij"
    monkeypatch.setenv("KILLGATE_NEW_KEY", new_key)
    p1 = await backends(echo_app("v1"))
    overlap = redis_state(redis_server, tmp_path, extra=(
        "  previous_signing_key_env: KILLGATE_TEST_STATE_KEY\n")).replace(
        "signing_key_env: KILLGATE_TEST_STATE_KEY", "signing_key_env: KILLGATE_NEW_KEY", 1)
    cfg = write_config(tmp_path, two_versions(p1, p1, 100, 0), state=overlap)
    async with running_gateway(cfg, "rotating") as g:
        doc = stored_doc(redis_server)
        gen = g.gw.holder.doc.generation
        # an instance still on the old key writes a kill (restrictive: applied from the push)
        killed = {**doc, "generation": gen + 1, "kills": {"route:iris": {
            "scope": "route", "route": "iris", "version": None, "actor": "old", "reason": "r",
            "time": "t", "generation": gen + 1, "abort_inflight": True}}}
        old = sealed(killed, STATE_KEY)
        redis_server.cmd("SET", "kgtest:state", old)
        redis_server.cmd("SET", "kgtest:gen", str(gen + 1))
        redis_server.cmd("PUBLISH", "kgtest:events", old)
        await wait_until(lambda: g.gw.holder.doc.generation == gen + 1, 5,
                         what="the old-key document to be applied during the overlap")
        assert (await status_of(session, g.url)) == (503, "killed")
        ver = g.gw.sync.status()["verification"]
        assert ver["previous_key_id"] == Key.of(STATE_KEY.encode()).kid
        assert ver["accepted_with_previous_key"].get("push", 0) >= 1
        # our own writes are signed with the new key
        await unkill(session, g.admin, scope="route", route="iris")
        assert redis_server.cmd("GET", "kgtest:state").startswith(
            f"KGS1 {Key.of(new_key.encode()).kid} ")
    # the overlap ends: the previous key is no longer configured
    ended = overlap.replace("  previous_signing_key_env: KILLGATE_TEST_STATE_KEY\n", "")
    cfg = write_config(tmp_path, two_versions(p1, p1, 100, 0), state=ended)
    async with running_gateway(cfg, "rotated") as g:
        gen = g.gw.holder.doc.generation
        relaxed = {**stored_doc(redis_server), "generation": gen + 1,
                   "kills": {"global": killed["kills"]["route:iris"] | {
                       "scope": "global", "route": None}}}
        old = sealed(relaxed, STATE_KEY)
        refused = g.gw.metrics.get("killgate_state_unverified_total", ("push",))
        redis_server.cmd("PUBLISH", "kgtest:events", old)
        await wait_until(lambda: g.gw.metrics.get("killgate_state_unverified_total",
                                                  ("push",)) > refused, 5,
                         what="the old-key document to be refused")
        assert "unknown key id" in g.gw.sync.status()["verification"]["last_unverified"][
            "problem"]
        assert g.gw.holder.doc.generation == gen and not g.gw.holder.doc.kills
        assert (await status_of(session, g.url))[0] == 200


async def test_unverified_snapshot_file_gives_its_kills_only(tmp_path: Path, backends,
                                                             session) -> None:
    """The snapshot is signed too: an edited one (a MAC that does not match) is refused but
    for its kills, the same trade as a pre-signing file: a forger who can write the state
    folder can only ADD kills (a denial of service; it could as well delete the file), never
    lift one, move weights or rewrite history. Said in /v1/status (local store, keyed)."""
    p1 = await backends(echo_app("v1"))
    state = (f"state:\n  backend: local\n  path: {tmp_path}/store.json\n"
             f"  snapshot_path: {tmp_path}/snap.json\n  poll_interval: 50ms\n"
             f"  signing_key_env: KILLGATE_TEST_STATE_KEY\n")
    cfg = write_config(tmp_path, two_versions(p1, p1, 100, 0), state=state)
    async with running_gateway(cfg) as g:
        await kill(session, g.admin, scope="route", route="iris")
        snap = tmp_path / "snap.json"
        await wait_until(lambda: snap.exists() and b"route:iris" in snap.read_bytes(), 5,
                         what="the snapshot")
    assert (snap.stat().st_mode & 0o777) == 0o600
    assert (tmp_path / "store.json").read_bytes().startswith(b"KGS1 ")
    head, body = snap.read_bytes().split(b"\n", 1)
    forged = json.loads(body)
    kill_doc = forged["kills"].pop("route:iris")  # the forger lifts the real kill...
    forged["kills"]["version:iris:v2"] = {**kill_doc, "scope": "version", "version": "v2"}
    forged["overrides"] = {"iris": {  # ...moves traffic
        "stable": "v2", "weights": {"v1": 0, "v2": 100}, "actor": "mallory", "reason": "x",
        "time": kill_doc["time"], "kind": "weights"}}
    forged["generation"] = 10**9  # ...and pins a generation the fleet never passes
    snap.write_bytes(head + b"\n" + json.dumps(forged).encode())
    (tmp_path / "store.json").unlink()  # the store lost its state too: only the file is left
    async with running_gateway(cfg) as g:
        doc = g.gw.holder.doc
        assert set(doc.kills) == {"version:iris:v2"}  # its kill kept, and only that
        assert not doc.overrides and doc.generation < 10**9
        assert g.gw.sync.status()["verification"]["unverified"].get("snapshot") == 1
        why = g.gw.sync.snapshot.status()["kills_only"]
        assert why is not None and "does not match its content" in why, why


async def test_a_push_that_would_relax_is_only_a_hint(tmp_path: Path, backends,
                                                      redis_server: RedisServer, session) -> None:
    """Even correctly signed (say, replayed, or during a rotation with a leaked old key),
    a pushed document that lifts a kill is applied only if the store, re-read and
    verified, says so; one that only adds a kill is applied from the push at once."""
    p1 = await backends(echo_app("v1"))
    cfg = write_config(tmp_path, two_versions(p1, p1, 100, 0),
                       state=redis_state(redis_server, tmp_path, poll="10s"))  # pushes only
    async with running_gateway(cfg) as g:
        await kill(session, g.admin, scope="route", route="iris")
        doc = stored_doc(redis_server)
        gen = g.gw.holder.doc.generation
        loads = []
        real_load = g.gw.sync.store.load

        async def counted(**kw: Any) -> Any:
            loads.append(1)
            return await real_load(**kw)

        g.gw.sync.store.load = counted  # type: ignore[method-assign]
        lifted = sealed({**doc, "generation": gen + 1, "kills": {}}, STATE_KEY)
        redis_server.cmd("PUBLISH", "kgtest:events", lifted)
        await wait_until(lambda: loads, 5, what="the store to be re-read")
        await stays_killed(session, [g.url], 0.5)
        assert g.gw.holder.doc.generation == gen
        more = {**doc, "generation": gen + 1, "kills": {**doc["kills"], "global": {
            **doc["kills"]["route:iris"], "scope": "global", "route": None}}}
        n = len(loads)
        redis_server.cmd("PUBLISH", "kgtest:events", sealed(more, STATE_KEY))
        await wait_until(lambda: "global" in g.gw.holder.doc.kills, 5, what="the added kill")
        assert len(loads) == n  # applied from the push itself


async def test_migration_from_unsigned_state_keeps_only_its_kills(
        tmp_path: Path, backends, redis_server: RedisServer, session) -> None:
    """A store written before state signing (a plain JSON document): the first instance
    with a key keeps its kills (they only stop traffic), not its overrides; once it has
    seen signed state, an unsigned document's kills are not taken either."""
    p1 = await backends(echo_app("v1"))
    flag = {"scope": "route", "route": "iris", "version": None, "actor": "old", "reason": "r",
            "time": "t", "generation": 7, "abort_inflight": True}
    legacy = {"generation": 7, "epoch": "old", "kills": {"route:iris": flag},
              "overrides": {"iris": {"stable": "v2", "weights": {"v1": 0, "v2": 100},
                                     "actor": "old", "reason": "r", "time": "t",
                                     "kind": "weights"}},
              "history": {}, "identities": {}, "progress": {}}
    redis_server.cmd("SET", "kgtest:state", json.dumps(legacy))
    redis_server.cmd("SET", "kgtest:gen", "7")
    cfg = write_config(tmp_path, two_versions(p1, p1, 100, 0),
                       state=redis_state(redis_server, tmp_path))
    async with running_gateway(cfg) as g:
        assert set(g.gw.holder.doc.kills) == {"route:iris"}
        assert g.gw.holder.doc.overrides == {}  # not trusted: the config governs
        assert "route:iris" in stored_doc(redis_server)["kills"]  # now signed
        assert g.gw.sync.status()["verification"]["unverified"]["state"] >= 1
        assert not g.gw.sync.migrating
        gen = g.gw.holder.doc.generation
        redis_server.cmd("SET", "kgtest:state", json.dumps(
            {**legacy, "generation": gen + 5, "kills": {"global": {**flag, "scope": "global",
                                                                   "route": None}}}))
        redis_server.cmd("SET", "kgtest:gen", str(gen + 5))
        await wait_until(lambda: redis_server.cmd("GET", "kgtest:state").startswith("KGS1 "),
                         5, what="the store to be re-seeded")
        assert "global" not in g.gw.holder.doc.kills
        assert "global" not in stored_doc(redis_server)["kills"]


async def test_a_forger_who_keeps_writing_cannot_flood_the_audit_trail(
        tmp_path: Path, backends, redis_server: RedisServer, session) -> None:
    """Someone rewrites the state key with a forged document every few milliseconds: every
    instance keeps its verified state and the kill; its repairs of the store (each one an
    audited re-seed) back off instead of following every forgery."""
    p1 = await backends(echo_app("v1"))
    cfg = write_config(tmp_path, two_versions(p1, p1, 100, 0),
                       state=redis_state(redis_server, tmp_path))
    async with running_gateway(cfg) as g:
        await kill(session, g.admin, scope="route", route="iris")
        genuine = stored_doc(redis_server)
        reseeds = g.gw.metrics.get("killgate_state_reseeds_total")
        end = time.monotonic() + 3.0  # (a fixed window: what is counted is what happens in it)
        n = 0
        while time.monotonic() < end:
            n += 1
            redis_server.cmd("SET", "kgtest:state", json.dumps({**genuine, "kills": {}}))
            redis_server.cmd("SET", "kgtest:gen", str(10_000 + n))
            await asyncio.sleep(0.01)
        assert n > 50
        assert g.gw.metrics.get("killgate_state_reseeds_total") - reseeds <= 6
        assert g.gw.metrics.get("killgate_state_unverified_total", ("state",)) >= 10
        await stays_killed(session, [g.url], 0.2)
