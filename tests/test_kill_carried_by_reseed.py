"""A kill asked for while the store holds a flag a re-seed carried over is written anew,
never confirmed as "already in force" (found by tests/test_chaos_kills.py, seed 31).

Instance c lifts a kill; redis restarts empty before instance a hears of it; a re-seeds the
store with what it holds, the lifted kill included (the restrictive merge: a kill comes
back once, the safe direction). An operator now kills that key on a: the flag is there,
so the kill answered 200 `"changed": false`. Then c merges the store with its own
document, which names that flag lifted by the write that made it, and drops it (rightly:
it is the lifted one): the kill the operator was told is in force was gone, on every
instance, with no unkill after it.
"""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

import pytest

from gateway.domain.statedoc import Change, StateDoc, apply_change
from gateway.state.signing import Key, Keyring
from gateway.state.snapshot import SnapshotFile
from tests.backends import echo_app
from tests.conftest import (
    STATE_KEY,
    RedisServer,
    running_gateway,
    two_versions,
    wait_until,
    write_config,
)
from tests.test_attacks_state import post, stored_kills
from tests.test_forgery import stored_doc
from tests.test_killswitch import redis_state

pytestmark = pytest.mark.timeout(60)

KEY = "version:iris:v2"


async def configs(tmp_path: Path, backends: Any, redis_server: RedisServer,
                  extra_a: str = "") -> tuple[Path, Path]:
    """Instances a (with `extra_a`) and c on one store, serving route iris (v1, v2)."""
    p = await backends(echo_app("v1"))
    routes = two_versions(p, p)
    return (write_config(tmp_path, routes, state=redis_state(redis_server, tmp_path, "a"),
                         extra=extra_a, name="a.yaml"),
            write_config(tmp_path, routes, state=redis_state(redis_server, tmp_path, "c"),
                         name="c.yaml"))


async def carry_a_lifted_kill(tmp_path: Path, session: Any, redis_server: RedisServer,
                              a: Any) -> None:
    """v2 killed through a; c lifted it (c's snapshot: the unkill of that flag, c stopped)
    and redis lost everything before a heard of it; a re-seeds the store, carrying the
    lifted kill, and holds that re-seed."""
    await post(session, a.admin, "/v1/kill", scope="version", route="iris", version="v2")
    killed = StateDoc.from_json(stored_doc(redis_server))
    lifted = apply_change(killed, Change(kills={KEY: None}))
    snap = SnapshotFile(tmp_path / "snapshot-c.json",
                        Keyring(Key.of(STATE_KEY.encode())).bound("kgtest"))
    await snap.write(lifted)
    redis_server.cmd("FLUSHALL")
    await wait_until(lambda: KEY in stored_kills(redis_server), 10, 0.02,
                     "a's re-seed (it carries the lifted kill)")
    reseeded = int(redis_server.cmd("GET", "kgtest:gen"))
    await wait_until(lambda: a.gw.holder.doc.generation == reseeded, 5, 0.02,
                     "a holding its re-seed")


async def c_merges_and_the_kill_stays(cfg_c: Path, redis_server: RedisServer,
                                      a: Any) -> None:
    """c comes back and merges what the store holds with its own document (which names
    the carried flag lifted): v2's kill is still in the store, on a and on c."""
    async with running_gateway(cfg_c, "c") as c:
        def settled() -> bool:
            gen = int(redis_server.cmd("GET", "kgtest:gen"))
            return (a.gw.holder.doc.generation == gen == c.gw.holder.doc.generation
                    and not a.gw.sync._resync and not c.gw.sync._resync)

        await wait_until(settled, 10, 0.02, "a, c and the store to agree")
        await asyncio.sleep(0.3)  # (a few polls: nothing moves any more)
        assert settled()
        assert KEY in stored_kills(redis_server), json.dumps(stored_doc(redis_server))[:600]
        assert KEY in a.gw.holder.doc.kills
        assert KEY in c.gw.holder.doc.kills


async def test_a_kill_on_a_flag_a_reseed_carried_over_survives_the_merge_that_drops_it(
        tmp_path: Path, backends, session, redis_server: RedisServer) -> None:
    cfg_a, cfg_c = await configs(tmp_path, backends, redis_server)
    async with running_gateway(cfg_a, "a") as a:
        await carry_a_lifted_kill(tmp_path, session, redis_server, a)
        # the operator kills v2 on a: answered 200, the kill in force
        await post(session, a.admin, "/v1/kill", scope="version", route="iris", version="v2",
                   reason="v2 is bad again")
        await c_merges_and_the_kill_stays(cfg_c, redis_server, a)
