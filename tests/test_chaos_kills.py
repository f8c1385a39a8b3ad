"""Random kills and unkills through three real instances while Redis loses everything and
instances die: no acknowledged kill is ever lost, and none comes back unaudited.

Each step is a kill or an unkill of one of four keys (two routes, a version of each) sent to
a random live instance, or a fault: the redis-server restarted empty (no persistence), or
an instance SIGKILLed and started again from its snapshot file. A kill answered 200 puts the
key in the model, an unkill answered 200 takes it out; a 503 changed nothing (README); a
409 `not_killed` changed nothing either (the store's state did not hold the key at that
moment: a kill acknowledged just before Redis lost everything is back only once the
instance that holds it has reconnected and re-seeded it); anything else leaves the key
unknown until its next acknowledged write. Once the faults stop, every instance must hold
exactly the model's kills for the known keys, and its data plane enforce them. The one
difference allowed is the documented one (README, Trust): a re-seed from a document 32 or
more writes behind keeps a kill lifted since, audited `state.reseed`.
"""

from __future__ import annotations

import asyncio
import os
import random
import signal
from pathlib import Path
from typing import Any

import pytest
from aiohttp import ClientError, ClientSession, ClientTimeout

from tests.backends import echo_app
from tests.conftest import GatewayProcess, RedisServer, bearer, wait_until
from tests.test_killswitch import fixed_ports_config, redis_state

pytestmark = pytest.mark.timeout(240)

#: one history per test by default (each ~4-8 s of three processes); more histories:
#: CHAOS_SEEDS=2,3,4 (38 seeds passed when this test was written)
SEEDS = [int(s) for s in os.environ.get("CHAOS_SEEDS", "1").split(",")]
#: one token for every call: a new token per call is a token check each, and the polls
#: for convergence (every 5 ms, three instances) spent the budget: 429s, read as an
#: instance that did not answer, until the wait ran out (and /v1/audit answered 429 too).
#: Minted at import (collection: with xdist, before every test of the worker runs) and so
#: valid for a day: auth()'s 10 minutes ran out under a long suite or CHAOS_SEEDS=3,...,38,
#: and every call after met 401 (writes read as unknown, status as no answer)
AUTH = bearer("killgate:kill killgate:read", "alice", 24 * 3600)

Key = tuple[str, str, str | None]  # scope, route, version
KEYS: tuple[Key, ...] = (("route", "iris", None), ("version", "iris", "v2"),
                         ("route", "wine", None), ("version", "wine", "w2"))


def _routes(port: int) -> str:
    return "".join(
        f"  - name: {name}\n    match: {{path_prefix: /v2/models/{name}}}\n"
        f"    stable: {a}\n    versions:\n"
        f"      - {{name: {a}, url: \"http://127.0.0.1:{port}\", weight: 50}}\n"
        f"      - {{name: {b}, url: \"http://127.0.0.1:{port}\", weight: 50}}\n"
        for name, a, b in (("iris", "v1", "v2"), ("wine", "w1", "w2")))


def _body(key: Key) -> dict[str, Any]:
    scope, route, version = key
    return {"scope": scope, "route": route, **({"version": version} if version else {}),
            "reason": "chaos"}


async def _write(session: ClientSession, admin: str, op: str, key: Key) -> tuple[int, str]:
    try:
        async with session.post(f"{admin}/v1/{op}?wait=0s", json=_body(key), headers=AUTH,
                                timeout=ClientTimeout(total=5)) as r:
            data = await r.json(content_type=None)
            return r.status, (data.get("error") or {}).get("type", "") if r.status != 200 else ""
    except (ClientError, TimeoutError) as exc:
        return 0, type(exc).__name__


async def _held(session: ClientSession, admin: str) -> set[Key] | None:
    try:
        async with session.get(f"{admin}/v1/status", headers=AUTH) as r:
            if r.status != 200:
                return None
            kills = (await r.json())["kills"]
    except (ClientError, TimeoutError):
        return None
    return {(k["scope"], k["route"], k.get("version")) for k in kills}


async def _status(session: ClientSession, admin: str) -> set[Key]:
    """The kills an instance holds, once its status answers (a status that did not answer
    is not "nothing killed")."""
    answers: list[set[Key]] = []

    async def answered() -> bool:
        got = await _held(session, admin)
        answers.extend([got] if got is not None else [])
        return got is not None

    await wait_until(answered, 10, what="a status answer")
    return answers[-1]


async def _reseed_events(session: ClientSession, admin: str) -> int:
    async with session.get(f"{admin}/v1/audit?limit=1000", headers=AUTH) as r:
        body = await r.json(content_type=None)
        assert r.status == 200, f"/v1/audit answered {r.status}: {body}"  # (not a KeyError)
        return sum(e["action"] == "state.reseed" for e in body["events"])


async def _restart(procs: list[GatewayProcess], configs: list[Path], gateway_procs: Any,
                   i: int) -> None:
    """Instance i SIGKILLed, and started again on its config."""
    procs[i].signal(signal.SIGKILL)
    await asyncio.to_thread(procs[i].proc.wait, 5)
    procs[i] = gateway_procs(configs[i])
    await asyncio.to_thread(procs[i].wait_ready, 30.0)


def _replay(redis: RedisServer, old: tuple[str, str], flush: bool) -> None:
    """Put back an older genuine state document and its generation: replayed by someone
    who can write to redis (flush=False: the audit trail stays), or redis restored from an
    old backup of those keys (flush=True: the trail and everything else lost)."""
    if flush:
        redis.cmd("FLUSHALL")
    redis.cmd("SET", "kgtest:state", old[0])
    redis.cmd("SET", "kgtest:gen", old[1])


@pytest.mark.parametrize("seed", SEEDS)
async def test_random_kills_survive_redis_loss_and_instance_deaths(
        seed: int, tmp_path: Path, backends, redis_server: RedisServer, gateway_procs,
        session: ClientSession) -> None:
    await _chaos(seed, tmp_path, backends, redis_server, gateway_procs, session, replays=False)


@pytest.mark.parametrize("seed", SEEDS)
async def test_random_kills_survive_replayed_and_restored_documents(
        seed: int, tmp_path: Path, backends, redis_server: RedisServer, gateway_procs,
        session: ClientSession) -> None:
    """The same, with three more faults: an older genuine document (and its generation key)
    written back over the store's, as someone who can write to redis replays it; redis
    restored from an old backup of those two keys (everything else lost); and a write that
    meets redis frozen (SIGSTOP for 0.1-1.5 s: answered 503, or 200 once it thaws)."""
    await _chaos(seed, tmp_path, backends, redis_server, gateway_procs, session, replays=True)


async def _chaos(seed: int, tmp_path: Path, backends, redis_server: RedisServer,
                 gateway_procs, session: ClientSession, replays: bool) -> None:
    rnd = random.Random(seed)
    captured: list[tuple[str, str]] = []
    port = await backends(echo_app("any"))
    configs = [fixed_ports_config(tmp_path, _routes(port), redis_state(redis_server, tmp_path, n),
                                  n) for n in "abc"]
    procs: list[GatewayProcess] = [gateway_procs(c) for c in configs]
    for p in procs:
        await asyncio.to_thread(p.wait_ready)
    model: dict[Key, bool] = dict.fromkeys(KEYS, False)
    unknown: set[Key] = set()
    history: list[str] = []
    for step in range(120):
        roll = rnd.random()
        if replays and step % 7 == 3:
            doc, gen = redis_server.cmd("GET", "kgtest:state"), redis_server.cmd("GET", "kgtest:gen")
            if doc and gen:
                captured.append((doc, gen))
        if replays and captured and 0.09 <= roll < 0.15:
            flush = roll >= 0.13
            old = rnd.choice(captured)
            history.append(f"{step}: {'redis restored from a backup' if flush else 'replayed'}"
                           f" generation {old[1]}")
            await asyncio.to_thread(_replay, redis_server, old, flush)
            continue
        if roll < 0.05:
            history.append(f"{step}: redis restarted empty")
            await asyncio.to_thread(redis_server.restart)
            continue
        if roll < 0.09:
            i = rnd.randrange(3)
            history.append(f"{step}: instance {'abc'[i]} SIGKILLed and restarted")
            await _restart(procs, configs, gateway_procs, i)
            continue
        key, op = rnd.choice(KEYS), rnd.choice(("kill", "unkill"))
        i = rnd.randrange(3)
        frozen = replays and 0.15 <= roll < 0.19  # the write meets a frozen redis
        if frozen:
            redis_server.freeze()
            thaw = asyncio.get_running_loop().call_later(rnd.uniform(0.1, 1.5),
                                                         redis_server.thaw)
        try:
            status, why = await _write(session, procs[i].admin, op, key)
        finally:
            if frozen:
                thaw.cancel()
                redis_server.thaw()
        history.append(f"{step}: {op} {key} on {'abc'[i]}{' (redis frozen)' if frozen else ''}"
                       f" -> {status} {why}")
        if status == 200:
            model[key] = op == "kill"
            unknown.discard(key)
        elif status not in (409, 503) or why == "outcome_unknown":
            unknown.add(key)  # (outcome_unknown: "may be in force", README)

    want = {k for k, v in model.items() if v and k not in unknown}
    not_want = {k for k, v in model.items() if not v and k not in unknown}

    async def converged() -> bool:
        for p in procs:
            held = await _held(session, p.admin)
            if held is None or not want <= held or held & not_want:
                return False
        return True

    try:
        await wait_until(converged, 20, what="every instance to hold the model's kills")
    except AssertionError:
        helds = [await _held(session, p.admin) for p in procs]
        lost = [k for k in want if any(h is not None and k not in h for h in helds)]
        assert not lost, f"acknowledged kills lost: {lost}; held {helds}\n" + "\n".join(history)
        back = {k for h in helds if h for k in h & not_want}
        reseeds = await _reseed_events(session, procs[0].admin)
        assert reseeds, (f"lifted kills came back with no state.reseed in the audit: {back}; "
                         f"held {helds}\n" + "\n".join(history))
    for p in procs:  # and the data plane enforces what the status says
        held = await _status(session, p.admin)
        for route in ("iris", "wine"):
            if ("route", route, None) in unknown:
                continue  # (may still move: a write that may have landed, a merge)
            async with session.post(f"{p.url}/v2/models/{route}/infer", json={}) as r:
                await r.read()
                assert (r.status == 503) == (("route", route, None) in held), (route, held)
    if not replays:  # (nobody forged or replayed a byte: no tamper alarm either)
        for p in procs:
            async with session.get(f"{p.admin}/v1/status", headers=AUTH) as r:
                ver = (await r.json())["store"]["verification"]
            assert ver["unverified_total"] == 0, (ver["last_by_cause"], "\n".join(history))
    for p in procs:
        assert p.stop() == 0, p.output()[-3000:]
