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
