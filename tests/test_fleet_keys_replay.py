"""An instance's key ids in `GET /v1/fleet` are those of its live heartbeat, not of an older
record of it put back (found by review revtrail).

The key ids a heartbeat carries (the one the instance signs with, then its previous one:
what says when a key rotation's step 2 and step 3 are safe) were signed with its addresses
alone (`<prefix>:instances:urls`), bound to nothing of the heartbeat: whoever can write to
redis, without a key, could put back an older record of a live instance, and the fleet
view said the key ids it held then. Say an instance at step 1 (signing A, trusting B) is
rolled back to step 0 (A alone): its step-1 record put back says it holds B, the new key's
`trusted` reads `live`, and step 2 (every write signed with B) goes ahead while it cannot
verify one. Now each record names the heartbeat it was written with (`beat`: its signed
time and place, written in the same script) and key ids are read only from the record of
the heartbeat read; another instance's view of it says none (`null`) until it beats again.

Real redis-server, real gateways (the code of `killgate serve`).
"""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import pytest

from gateway.state.beatorder import beat_current
from tests.conftest import RedisServer, bearer, running_gateway, wait_until
from tests.rotationrig import A_ENV, B_ENV, rotation

pytestmark = pytest.mark.timeout(40)

URLS = "kgtest:instances:urls"


def test_a_record_names_the_heartbeat_read_or_a_later_one() -> None:
    """A heartbeat landing between the fleet read's two reads (heartbeats, then addresses)
    wrote a record of a later place: its key ids are read (no `null` flicker); an older
    place's, or another start's before, are not."""
    read = "1000.900.abcd1234.5.100"
    assert beat_current(read, read)
    assert beat_current("1200.900.abcd1234.6.300", read)  # (written since)
    assert beat_current("5000.4900.ffff0000.0.0", read)  # (a restart since)
    assert not beat_current("800.900.abcd1234.4.0", read)  # (put back)
    assert not beat_current("900.800.abcd1234.9.0", read)  # (an earlier start's)
    assert not beat_current(None, read) and not beat_current(read, None)
    assert not beat_current(["x"], read) and not beat_current("junk", read)


async def test_an_older_record_of_a_live_instance_put_back_does_not_say_its_key_ids(
        tmp_path: Path, backends, session, redis_server: RedisServer,
        monkeypatch: pytest.MonkeyPatch) -> None:
    rot = await rotation(tmp_path, redis_server, backends, monkeypatch)
    a, b = rot.a, rot.b
    cfg = rot.cfg

    auth = bearer("killgate:read")

    async def rows(admin: str) -> dict[str, dict]:
        async with session.get(admin + "/v1/fleet", headers=auth) as r:
            assert r.status == 200
            return {row["instance"]: row for row in (await r.json())["instances"]}

    async with running_gateway(cfg("x1", A_ENV, B_ENV), "gw-x") as x:  # (step 1)
        await wait_until(lambda: redis_server.cmd("HGET", URLS, "gw-x") != "", 5,
                         what="its record")
        step1 = redis_server.cmd("HGET", URLS, "gw-x")
        assert (await rows(x.admin))["gw-x"]["key_ids"] == [a.kid, b.kid]
    async with running_gateway(cfg("x0", A_ENV), "gw-x") as x, \
            running_gateway(cfg("y0", A_ENV), "gw-y") as y:  # (x rolled back to step 0)
        async def says_step_0() -> bool:
            return (await rows(y.admin)).get("gw-x", {}).get("key_ids") == [a.kid]

        await wait_until(says_step_0, 10, 0.05, "y to read x's step-0 record")
        stop = time.monotonic() + 1.5

        def put_back() -> None:  # (again and again: x's heartbeat writes its own)
            while time.monotonic() < stop:
                redis_server.cmd("HSET", URLS, "gw-x", step1)

        replay = asyncio.create_task(asyncio.to_thread(put_back))
        said = []
        while not replay.done():
            for admin in (x.admin, y.admin):
                said.append((await rows(admin)).get("gw-x", {}).get("key_ids"))
        await replay
        assert said and all(b.kid not in (k or ()) for k in said), said
        await wait_until(says_step_0, 10, 0.05, "x's own record again")
