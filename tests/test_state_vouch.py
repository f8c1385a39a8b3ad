"""`killgate state vouch` / POST /v1/state/vouch (impwrongkey item 3).

A lone `--workers 2` group starts on a snapshot it cannot verify (its kills only) and
seeds the flushed store: its state is "not known to be the fleet's", and no other instance
will ever re-seed over its document, so it stayed marked for good, across restarts too
(`unverified_origin` in its snapshot): every write through it took the slow path and a
document it cannot verify would never be repaired. An operator now vouches for it: an
audited write (`state.vouch`) of a new epoch that both workers take as vouching, the
snapshot then written without the mark, a restart reading it clean. Bad input changes
nothing: no reason, a token without killgate:admin, an unknown field, and vouching again
(409 `nothing_to_vouch`, exit 1).

Real redis-server, a real `killgate serve --workers 2`, the real CLI.
"""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

import pytest
from aiohttp import ClientSession, TCPConnector

from gateway.domain.statedoc import KillFlag, StateDoc
from gateway.state.keyconfirm import sibling_workers
from tests.backends import echo_app
from tests.conftest import RedisServer, two_versions, wait_until
from tests.test_cli import acli
from tests.test_killswitch import auth, fixed_ports_config, redis_state, token

pytestmark = pytest.mark.timeout(90)


def unverifiable_snapshot(path: Path) -> None:
    """A snapshot no key verifies (written before state signing): its kills only."""
    flag = KillFlag("route", "iris", None, "alice", "bad", "2026-12-04T00:00:00Z", 0)
    path.write_text(json.dumps(StateDoc(generation=3, kills={"route:iris": flag}).to_json()))
    path.chmod(0o600)


def snapshot_body(path: Path) -> dict[str, Any] | None:
    raw = path.read_bytes()
    if not raw.startswith(b"KGS1 "):
        return None  # (not yet rewritten, signed)
    body: dict[str, Any] = json.loads(raw.partition(b"\n")[2])
    return body


async def post(session: ClientSession, admin: str, body: Any,
               scope: str = "killgate:admin") -> tuple[int, dict[str, Any]]:
    async with session.post(f"{admin}/v1/state/vouch", json=body, headers=auth(scope)) as r:
        return r.status, await r.json()


async def on_worker(admin: str, instance: str) -> ClientSession:
    """A session whose one connection reached the worker named `instance` (the workers
    share the admin port: a connection lands on one of them and stays there)."""
    async def attempt() -> ClientSession | None:
        s = ClientSession(connector=TCPConnector(limit=1))
        async with s.get(f"{admin}/v1/status", headers=auth()) as r:
            if (await r.json())["instance"] == instance:
                return s
        await s.close()
        return None

    found: ClientSession = await wait_until(attempt, 10, what=f"a connection to {instance}")
    return found


async def test_an_operator_vouches_for_a_lone_group_that_seeded_the_store(
        tmp_path: Path, backends, session: ClientSession, redis_server: RedisServer,
        gateway_procs) -> None:
    p = await backends(echo_app("v1"))
    (tmp_path / "x").mkdir()
    snap = tmp_path / "snapshot-x.json"
    unverifiable_snapshot(snap)
    cfg = fixed_ports_config(tmp_path / "x", two_versions(p, p, 100, 0),
                             redis_state(redis_server, tmp_path, "x"), "x")
    g = gateway_procs(cfg, workers=2)
    await asyncio.to_thread(g.wait_ready)
    await wait_until(lambda: "route:iris" in (redis_server.cmd("GET", "kgtest:state") or ""),
                     10, what="the group seeding the empty store")
    await wait_until(lambda: (snapshot_body(snap) or {}).get("unverified_origin"), 10,
                     what="its snapshot, marked")
    # (the workers' fleet names carry their group's tag: each knows the other for a
    # sibling, whose heartbeat confirms nothing of its key: test_key_unconfirmed.py)
    def heartbeats() -> list[str]:  # (an array's raw reply: its bulk strings' lines)
        raw = redis_server.cmd("HKEYS", "kgtest:instances")
        return [ln for ln in raw.split("\r\n") if ln and ln[0] not in "*$"]

    names = await wait_until(lambda: len(n := heartbeats()) == 2 and n, 10,
                             what="both workers' heartbeats")
    assert sibling_workers(*names), names

    def stored() -> tuple[str, str]:
        return redis_server.cmd("GET", "kgtest:state"), redis_server.cmd("GET", "kgtest:gen")

    before = stored()
    env = {"KILLGATE_ADMIN_URL": g.admin, "KILLGATE_TOKEN": token("killgate:admin")}
    # bad input: nothing changes
    out = await acli("state", "vouch", env=env)
    assert out.returncode == 1 and "--reason" in out.stderr, out
    status, body = await post(session, g.admin, {"reason": "ok"}, "killgate:kill killgate:read")
    assert status == 403, body
    status, body = await post(session, g.admin, {"reason": "ok", "force": True})
    assert status == 400, body
    status, body = await post(session, g.admin, {})
    assert status == 400, body
    assert stored() == before

    out = await acli("state", "vouch", "--reason", "key checked against the vault", env=env)
    assert out.returncode == 0, out
    assert out.stdout.startswith("vouched for ") and "was: " in out.stdout, out.stdout
    assert stored() != before
    async with session.get(f"{g.admin}/v1/audit?limit=5", headers=auth()) as r:
        events = (await r.json())["events"]
    ev = next(e for e in events if e["action"] == "state.vouch")
    assert ev["actor"] == "alice" and ev["reason"] == "key checked against the vault", ev
    await wait_until(lambda: (b := snapshot_body(snap)) is not None
                     and "unverified_origin" not in b, 10, what="the snapshot without the mark")
    # both workers are vouched for (the other one by the document): asked again, each on a
    # connection of its own, each says there is nothing to vouch for (a worker still marked
    # would write; one session's keep-alive connection asked only one worker)
    after = stored()
    for name in names:
        on = await on_worker(g.admin, name)
        try:
            status, body = await post(on, g.admin, {"reason": "again"})
        finally:
            await on.close()
        assert status == 409 and body["error"]["type"] == "nothing_to_vouch", (name, body)
    assert stored() == after
    # a restart reads the snapshot unmarked
    assert g.stop() == 0
    g = gateway_procs(cfg, workers=2)
    await asyncio.to_thread(g.wait_ready)
    async with session.get(f"{g.admin}/v1/status", headers=auth()) as r:
        assert (await r.json())["store"]["snapshot"]["unverified_origin"] is None
    assert "snapshot_unverified_origin" not in g.output()
    # (no false alarm from the vouch nor the restart: nothing refused, nothing unconfirmed)
    async with session.get(f"{g.admin}/v1/status", headers=auth()) as r:
        store = (await r.json())["store"]
    assert store["verification"]["unverified_total"] == 0, store["verification"]
    assert store["key_unconfirmed"] is None, store
    assert "state_unverified" not in g.output()
    gen = stored()[1]  # (a restart may append an event of its own: the generation stays)
    out = await acli("state", "vouch", "--reason", "again", env=env)
    assert out.returncode == 1 and "nothing_to_vouch" in out.stderr, out
    assert stored()[1] == gen
    async with session.get(f"{g.admin}/v1/audit?limit=20", headers=auth()) as r:
        events = (await r.json())["events"]
    assert [e["action"] for e in events].count("state.vouch") == 1, events


@pytest.mark.timeout(240)  # (up to 6 starts of a two-worker group)
async def test_a_vouch_reaches_the_worker_that_lost_the_race_to_seed(
        tmp_path: Path, backends, redis_server: RedisServer, gateway_procs) -> None:
    """Both workers of the group load the flushed store before either seeds it: each
    re-seeds, one commit wins and the other's epoch never lands. The worker that lost held
    that epoch for its own, so the vouch through the winner (naming the store's epochs: the
    winner's) did not vouch for it: still marked, it vouched a second time when asked, and
    its snapshot writes of the vouch's document put `unverified_origin` back into the file
    the other worker had just written without it (a restart then read it marked: the
    intermittent failure of the test above, the vouch and the loser's writes racing)."""
    p = await backends(echo_app("v1"))
    snap = tmp_path / "snapshot-x.json"
    # the race is the set-up, not what is proved: a worker that read the empty store only
    # once the other's seed had reached it (the seed's push applied first) re-seeds
    # nothing; seen 1 start in ~6 on an idle host. Run again, from an empty store
    for attempt in range(6):
        g = await _both_reseed(tmp_path / f"x{attempt}", snap, p, redis_server, gateway_procs)
        if g is not None:
            break
    else:
        raise AssertionError("6 starts of the group, and never both workers re-seeding")
    ours = ClientSession()
    try:
        async with ours.get(f"{g.admin}/v1/audit?limit=20", headers=auth()) as r:
            events = (await r.json())["events"]
        (winner,) = [e["source"] for e in events if e["action"] == "state.reseed"]
        raw = redis_server.cmd("HKEYS", "kgtest:instances")
        names = [ln for ln in raw.split("\r\n") if ln and ln[0] not in "*$"]
        (loser,) = [n for n in names if n != winner]
    finally:
        await ours.close()
    on_winner = await on_worker(g.admin, winner)
    try:
        status, body = await post(on_winner, g.admin, {"reason": "key checked"})
        assert status == 200 and body["instance"] == winner, body
    finally:
        await on_winner.close()
    await wait_until(lambda: (b := snapshot_body(snap)) is not None and b["generation"]
                     >= body["generation"] and "unverified_origin" not in b, 10,
                     what="the vouch's snapshot, unmarked")
    for name in (loser, winner):  # each worker, asked on a connection of its own
        on = await on_worker(g.admin, name)
        try:
            status, again = await post(on, g.admin, {"reason": "again"})
        finally:
            await on.close()
        assert status == 409 and again["error"]["type"] == "nothing_to_vouch", (name, again)
    assert g.stop() == 0
    # what a restart reads: unmarked, whichever worker wrote it last
    last = snapshot_body(snap)
    assert last is not None and "unverified_origin" not in last, last


def test_a_bare_state_command_names_the_subcommand_it_lacks() -> None:
    """`killgate state` alone said "the following arguments are required: action", a word
    its usage line never shows: it names `vouch`, the one it takes."""
    from tests.test_cli import cli

    res = cli("state")
    assert res.returncode == 2, res.stderr
    assert res.stderr.strip().splitlines()[-1].endswith(
        "the following arguments are required: vouch"), res.stderr
    assert "killgate state [-h]" in res.stderr and " vouch" in res.stderr, res.stderr


async def _both_reseed(folder: Path, snap: Path, p: int, redis_server: RedisServer,
                       gateway_procs: Any) -> Any:
    """A two-worker group started on an unverifiable snapshot with both workers' loads
    of the empty store held until both are in: the group once both re-seeded it, else
    None (stopped, the store emptied again)."""
    await asyncio.to_thread(folder.mkdir)
    unverifiable_snapshot(snap)
    # (each worker's load waits, held, well within its command timeout: one per worker)
    cfg = fixed_ports_config(folder, two_versions(p, p, 100, 0),
                             redis_state(redis_server, folder.parent, "x",
                                         command_timeout="5s"), "x")

    def loads_waiting() -> bool:  # (a load is a Lua script: held by a pause of writes)
        raw = redis_server.cmd("CLIENT", "LIST")
        return sum(" flags=b " in ln and "cmd=evalsha" in ln for ln in raw.splitlines()) == 2

    # (the wait is a two-worker group's start: wait_ready's 60 s. Under two CPU hogs at
    # load 10-12 each worker's first command reached redis 7-12 s after the start, two
    # fresh interpreters importing the gateway, within 0.5 s of each other: the 15 s this
    # waited failed under load. The pause outlasts the wait, or a late load is not held.)
    redis_server.cmd("CLIENT", "PAUSE", "65000", "WRITE")
    try:
        g = gateway_procs(cfg, workers=2)
        await wait_until(loads_waiting, 60, what="both workers' loads of the store, held")
    finally:
        redis_server.cmd("CLIENT", "UNPAUSE")
    await asyncio.to_thread(g.wait_ready, 60.0, 2)
    await wait_until(lambda: "route:iris" in (redis_server.cmd("GET", "kgtest:state") or ""),
                     10, what="the group seeding the empty store")
    try:  # (the race, run: both started, so both have re-seeded or never will)
        await wait_until(lambda: g.output().count('state_store_reseed why="empty"') == 2, 3,
                         what="both workers re-seeding the empty store")
        return g
    except AssertionError:
        await asyncio.to_thread(g.stop)
        redis_server.cmd("FLUSHALL")
        return None
