"""A lone instance that seeded a flushed store from a state it could not verify is vouched
for by another instance's write on that state (state/vouching.py `_written_by_another`).

Its key is not known to be the fleet's, so it is marked (`unverified_origin`) until it
verifies a document of an epoch another instance made descending from its own (a re-seed
merging its document), or an operator vouches. On a flushed store the fleet's other
instances, holding the same key, verify its document and adopt it: they never re-seed,
and it stayed marked for good (impdrill8 item 3: "a wrong-key-marked instance given the
right key"). Now every write id names its writer's host and snapshot file (a tag); a
verified document of an epoch it created naming a write by another tag is another holder
of its key writing on its state, which vouches as such a re-seed does. Its own writes do
not (nor its sibling workers', nor its earlier processes': one tag). Heartbeats would not
do (README, Trust: one of its own earlier process is fresh for a lease after it died).
Real redis-server, real `killgate serve` processes.
"""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest
from aiohttp import ClientSession

from tests.backends import echo_app
from tests.conftest import RedisServer, two_versions, wait_until
from tests.staterig import redis_state
from tests.test_killswitch import fixed_ports_config, kill
from tests.test_state_vouch import post, snapshot_body, unverifiable_snapshot
from tests.test_vouch_replay import draft, make
from tests.test_vouch_replay import kill as kill_doc

pytestmark = pytest.mark.timeout(90)


async def test_another_instances_write_vouches_for_a_lone_seeder(
        tmp_path: Path, backends, session: ClientSession, redis_server: RedisServer,
        gateway_procs) -> None:
    p = await backends(echo_app("v1"))
    routes = two_versions(p, p, 100, 0)
    snap = tmp_path / "snapshot-x.json"
    unverifiable_snapshot(snap)
    (tmp_path / "x").mkdir()
    (tmp_path / "y").mkdir()
    x = gateway_procs(fixed_ports_config(tmp_path / "x", routes,
                                         redis_state(redis_server, tmp_path, "x"), "x"))
    await asyncio.to_thread(x.wait_ready)
    await wait_until(lambda: "route:iris" in (redis_server.cmd("GET", "kgtest:state") or ""),
                     10, what="X seeding the empty store")
    await wait_until(lambda: (snapshot_body(snap) or {}).get("unverified_origin"), 10,
                     what="its snapshot, marked")

    # its own write vouches for nothing
    await kill(session, x.admin, scope="version", route="iris", version="v2")
    gen = redis_server.cmd("GET", "kgtest:gen")
    await wait_until(lambda: (b := snapshot_body(snap)) is not None
                     and b.get("generation") == int(gen), 10, what="X's write in its snapshot")
    assert "unverified_origin" in (snapshot_body(snap) or {})
    # another instance (its own snapshot file: another tag) adopts X's document and writes
    y = gateway_procs(fixed_ports_config(tmp_path / "y", routes,
                                         redis_state(redis_server, tmp_path, "y"), "y"))
    await asyncio.to_thread(y.wait_ready)
    assert "route:iris" in redis_server.cmd("GET", "kgtest:state")  # (adopted, not re-seeded)
    await kill(session, y.admin, scope="global", reason="y writes")
    await wait_until(lambda: (b := snapshot_body(snap)) is not None
                     and "unverified_origin" not in b, 10, what="X's snapshot unmarked")
    status, body = await post(session, x.admin, {"reason": "not needed"})
    assert status == 409 and body["error"]["type"] == "nothing_to_vouch", body


async def test_writes_a_reseed_carries_over_do_not_vouch(
        redis_server: RedisServer, tmp_path: Path) -> None:
    """A re-seed merges the writes of what it merged: a genuine old document put back into
    the store (test_vouch_replay.py) holding a write of F's carries it into X's own epoch.
    Only writes past what X held when it created that epoch count: still marked."""
    x, f = make(redis_server, tmp_path, "x"), make(redis_server, tmp_path, "f")
    await x.start()
    await f.start()
    await f.write(kill_doc("third"), draft)  # (F's write, in the document put back below)
    old = (redis_server.cmd("GET", "kgvouch:state"), redis_server.cmd("GET", "kgvouch:gen"))
    await x.stop()
    await f.stop()
    unverifiable_snapshot(tmp_path / "snap-x.json")  # (X's key rolled back)
    redis_server.cmd("FLUSHALL")
    x = make(redis_server, tmp_path, "x")
    try:
        await x.start()
        await wait_until(lambda: redis_server.cmd("GET", "kgvouch:state"), 5, what="X's seed")
        assert x._unvouched() is not None
        seeds = x.metrics.get("killgate_state_reseeds_total")
        redis_server.cmd("SET", "kgvouch:state", old[0])
        redis_server.cmd("SET", "kgvouch:gen", old[1])
        await wait_until(lambda: x.metrics.get("killgate_state_reseeds_total") > seeds, 5,
                         what="X re-seeding over the older document")
        await wait_until(lambda: any(w.endswith(f._sibling_tag()) for w in x.holder.doc.writes),
                         5, what="F's write carried into X's epoch")
        assert x.holder.doc.epoch.startswith(x._sibling_tag())
        await x.write(kill_doc("fourth"), draft)  # (X's own write on it: still nobody else's)
        assert x._unvouched() is not None, "a write carried over by a re-seed vouched for X"
    finally:
        await x.stop()
