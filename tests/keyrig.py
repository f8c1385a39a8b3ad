"""The two-key rig the signing-key tests share: X, whose state key comes from another
variable (its Secret, to be regenerated), and F, the fleet's, on one real redis-server.

`keyed`: a redis `state:` section signed with the key in another variable (and a previous
one). `x_and_f`: the two configs (X in tmp/a, F in tmp/b; snapshots snapshot-a/-b.json).
`snapshots_then_flush`: both running, F sets weights (unless `weights=False`), X kills iris,
both snapshot files hold the kill; then Redis is flushed: what a key regenerated while the
store lost its data starts from. `stored`: the store's document as text; `left_alone`: it
stays the same for a while (X writes nothing over F's). `forged_store`: a document no
instance can verify in the store, and the section of an instance facing it.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable
from pathlib import Path

from aiohttp import ClientSession

from tests.conftest import STATE_KEY_ENV, RedisServer, running_gateway, wait_until, write_config
from tests.staterig import redis_state
from tests.test_killswitch import auth, kill

__all__ = ["OTHER_KEY_ENV", "forged_store", "keyed", "left_alone", "snapshots_then_flush", "stored",
           "x_and_f"]

OTHER_KEY_ENV = "KILLGATE_OTHER_STATE_KEY"  # X's key: the fleet's until a test changes it
#: a config of `routes` in a folder, with a `state:` section, named for its instance
MakeConfig = Callable[[Path, str, str], Path]


def keyed(redis: RedisServer, tmp: Path, name: str, current: str,
          previous: str | None = None) -> str:
    """`redis_state` signed with the key in `current` (and `previous` as the previous)."""
    extra = f"  previous_signing_key_env: {previous}\n" if previous else ""
    return redis_state(redis, tmp, name, extra=extra).replace(
        f"signing_key_env: {STATE_KEY_ENV}", f"signing_key_env: {current}")


def x_and_f(tmp: Path, redis: RedisServer, routes: str, x_key_env: str = OTHER_KEY_ENV,
            make: MakeConfig | None = None) -> tuple[Path, Path]:
    """X's config (its key in `x_key_env`) and F's (the tests' key); `make` writes one
    (default: write_config)."""
    for d in ("a", "b"):
        (tmp / d).mkdir()
    if make is None:
        def make(folder: Path, state: str, name: str) -> Path:
            return write_config(folder, routes, state=state)
    return (make(tmp / "a", keyed(redis, tmp, "a", x_key_env), "x"),
            make(tmp / "b", redis_state(redis, tmp, "b"), "f"))


async def snapshots_then_flush(session: ClientSession, redis: RedisServer, tmp: Path,
                               cfg_x: Path, cfg_f: Path, weights: bool = True) -> None:
    """X and F up (X's variable must hold the fleet's key): F's weights set, X's kill made,
    both in both snapshots; both stopped, Redis flushed."""
    snaps = (tmp / "snapshot-a.json", tmp / "snapshot-b.json")
    async with running_gateway(cfg_x, "gw-x") as x, running_gateway(cfg_f, "gw-f") as f:
        if weights:
            async with session.put(f"{f.admin}/v1/routes/iris/weights",
                                   headers=auth("killgate:rollout"),
                                   json={"weights": {"v1": 50, "v2": 50}, "reason": "x"}) as r:
                assert r.status == 200, await r.text()
        await kill(session, x.admin, scope="route", route="iris")
        await wait_until(lambda: all(s.exists() and b"route:iris" in s.read_bytes()
                                     for s in snaps), 5, what="both snapshots")
    redis.cmd("FLUSHALL")


def stored(redis: RedisServer) -> str:
    """The store's state document as stored ("" when there is none), its JSON body written
    again as json.dumps writes it (the store's is compact: `"overrides": {}` here reads the
    same whichever form an instance stored)."""
    raw = redis.cmd("GET", "kgtest:state") or ""
    head, nl, body = raw.partition("\n")
    try:
        return head + nl + json.dumps(json.loads(body), ensure_ascii=False) if nl else raw
    except ValueError:
        return raw


async def left_alone(redis: RedisServer, doc: str, seconds: float = 1.5) -> None:
    """The store keeps `doc` for `seconds` (15 polls of an instance at 100 ms)."""
    loop = asyncio.get_running_loop()
    t0 = loop.time()
    while loop.time() - t0 < seconds:
        assert stored(redis) == doc, "X wrote over F's document"
        await asyncio.sleep(0.05)


def forged_store(redis: RedisServer, tmp: Path, extra: str = "") -> str:
    """A forged document in the store (another key's: what an instance cannot verify), and
    the `state:` section of an instance facing it: start_timeout 300ms, and `extra`."""
    from tests.test_forgery import ATTACKER_KEY, plant

    plant(redis, {"generation": 7, "epoch": "forged", "kills": {}}, ATTACKER_KEY)
    return redis_state(redis, tmp, "a", extra=extra + "  start_timeout: 300ms\n")
