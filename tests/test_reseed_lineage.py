"""A re-seed by an instance that missed a kill must not lose that kill (ninth review).

Real redis-server, real `killgate serve` processes. Instance b is frozen (SIGSTOP: a long
pause, a VM migration) with its subscription cut, so it misses a kill made through a; a is
frozen in turn; then the store is spoiled, and b, thawed first, re-seeds it from what it
knows. The kill must be in force on every instance afterwards:
- the attacker (write access to Redis, no key) rewrote only the generation key: the store
  still held the kill in a verified document, which b's re-seed threw away;
- the store was flushed (or restarted empty): b's re-seed is a new document at the very
  generation a holds with the kill, so neither a's poll nor a's pushes ever told them apart,
  and b's next write lifted the kill on a too.
"""

from __future__ import annotations

import asyncio
import signal
from pathlib import Path

from tests.conftest import RedisServer, wait_until
from tests.test_forgery import _fleet, stored_doc
from tests.test_killswitch import kill, status_of


async def _b_misses_a_kill(redis: RedisServer, procs, session) -> int:  # type: ignore[no-untyped-def]
    """Freeze b with its subscription cut, kill the route through a, freeze a; the kill's
    generation."""
    a, b = procs
    b.signal(signal.SIGSTOP)
    redis.cmd("CLIENT", "KILL", "TYPE", "pubsub")  # b's too; a subscribes again at once
    await wait_until(lambda: redis.cmd("PUBSUB", "NUMSUB", "kgtest:events").endswith(":1\r\n"),
                     5, what="a subscribed again (b frozen)")
    res = await kill(session, a.admin, wait="0s", scope="route", route="iris")
    a.signal(signal.SIGSTOP)
    return int(res["generation"])


async def _killed_everywhere(procs, session, seconds: float = 4.0) -> None:  # type: ignore[no-untyped-def]
    async def every() -> bool:
        got = await asyncio.gather(*(status_of(session, p.url) for p in procs))
        return all(g == (503, "killed") for g in got)

    end = asyncio.get_running_loop().time() + seconds
    while not await every():
        assert asyncio.get_running_loop().time() < end, \
            [await status_of(session, p.url) for p in procs]
        await asyncio.sleep(0.05)


async def test_a_reseed_over_a_rewritten_generation_key_keeps_the_stored_kill(
        tmp_path: Path, backends, redis_server: RedisServer, gateway_procs, session) -> None:
    procs = await _fleet(tmp_path, backends, redis_server, gateway_procs, lease="30s")
    a, b = procs
    gen = await _b_misses_a_kill(redis_server, procs, session)
    assert "route:iris" in stored_doc(redis_server)["kills"]
    redis_server.cmd("SET", "kgtest:gen", "not-a-number")  # the attacker
    b.signal(signal.SIGCONT)
    await wait_until(lambda: redis_server.cmd("GET", "kgtest:gen").isdigit(), 5,
                     what="b to re-seed the store")
    assert "route:iris" in stored_doc(redis_server)["kills"]  # the verified kill is kept
    a.signal(signal.SIGCONT)
    await _killed_everywhere(procs, session)
    assert stored_doc(redis_server)["generation"] > gen


async def test_a_reseed_at_the_generation_another_instance_holds_does_not_lose_its_kill(
        tmp_path: Path, backends, redis_server: RedisServer, gateway_procs, session) -> None:
    procs = await _fleet(tmp_path, backends, redis_server, gateway_procs, lease="30s")
    a, b = procs
    gen = await _b_misses_a_kill(redis_server, procs, session)
    redis_server.cmd("FLUSHALL")  # or a restart without persistence
    b.signal(signal.SIGCONT)
    await wait_until(lambda: redis_server.cmd("GET", "kgtest:gen") != "", 5,
                     what="b to re-seed the store")
    a.signal(signal.SIGCONT)
    # a holds the kill at `gen`; b re-seeded without it, at `gen` too: they must converge
    # on the kill (a re-seeds the union), not stay apart until b's next write lifts it on a
    await _killed_everywhere(procs, session)
    doc = stored_doc(redis_server)
    assert "route:iris" in doc["kills"] and doc["generation"] > gen
    # and a write through b keeps it
    res = await kill(session, b.admin, scope="version", route="iris", version="v2")
    assert "route:iris" in stored_doc(redis_server)["kills"], res
    await _killed_everywhere(procs, session, 1.0)


async def test_a_generation_key_of_another_type_does_not_keep_a_kill_from_an_instance(
        tmp_path: Path, backends, redis_server: RedisServer, gateway_procs, session) -> None:
    """The attacker keeps the generation key a hash (GET fails: the poll dropped the
    connection, so the instance missed pushes while it reconnected, and its full sync then
    refused the store's verified document, the key disagreeing). A kill made meanwhile is
    in force on every instance within a few polls all the same."""
    procs = await _fleet(tmp_path, backends, redis_server, gateway_procs, lease="30s")

    async def spoil() -> None:
        while True:
            await asyncio.to_thread(redis_server.cmd, "EVAL",
                                    "redis.call('DEL', KEYS[1]); "
                                    "redis.call('HSET', KEYS[1], 'x', '1')", "1", "kgtest:gen")
            await asyncio.sleep(0.005)

    task = asyncio.create_task(spoil())
    try:
        await asyncio.sleep(1.0)  # every instance has repaired once and backs off
        res = await kill(session, procs[0].admin, wait="0s", scope="route", route="iris")
        assert res["changed"]
        await _killed_everywhere(procs, session, 3.0)
    finally:
        task.cancel()


async def test_a_write_on_a_colliding_reseed_does_not_lift_the_kill_it_lacks(
        tmp_path: Path, backends, redis_server: RedisServer, gateway_procs, session) -> None:
    """As above, with a third instance c that also missed the kill: it adopts b's re-seed
    (newer than what it holds) and writes on it before a has merged. a hears both: the
    re-seed at its own generation, then c's document, newer and without the kill. That
    one comes from the lineage a just saw collide with its own: a merges it too, it never
    takes it for an unkill."""
    await _c_writes_on_the_collision(tmp_path, backends, redis_server, gateway_procs, session,
                                     a_hears_it=True)


async def test_an_instance_that_slept_through_the_collision_merges_the_lineage_it_lacks(
        tmp_path: Path, backends, redis_server: RedisServer, gateway_procs, session) -> None:
    """As above, but a's subscription is cut while it sleeps: it hears neither the re-seed
    nor c's write, and on reconnecting finds c's document, newer than its own, of another
    epoch and without its kill. That epoch's lineage says it branched off before the
    generation a holds: a merges it (a re-seed), it never adopts it as an unkill."""
    await _c_writes_on_the_collision(tmp_path, backends, redis_server, gateway_procs, session,
                                     a_hears_it=False)


async def _c_writes_on_the_collision(tmp_path: Path, backends, redis_server: RedisServer,
                                     gateway_procs, session, a_hears_it: bool) -> None:
    """a holds a kill b missed; the store is flushed while a and c sleep; b re-seeds it at
    a's generation; c wakes and writes on b's re-seed; a wakes (its subscription kept, or
    cut while it slept): the kill holds everywhere and comes back into the store."""
    procs = await _fleet(tmp_path, backends, redis_server, gateway_procs, ("a", "b", "c"),
                         lease="30s")
    a, b, c = procs
    c.signal(signal.SIGSTOP)
    gen = await _b_misses_a_kill(redis_server, [a, b], session)
    if not a_hears_it:
        redis_server.cmd("CLIENT", "KILL", "TYPE", "pubsub")  # a's (b's and c's were cut)
    redis_server.cmd("FLUSHALL")
    b.signal(signal.SIGCONT)
    await wait_until(lambda: redis_server.cmd("GET", "kgtest:gen") == str(gen), 5,
                     what="b to re-seed the store at a's generation")
    c.signal(signal.SIGCONT)
    subscribed = ":3\r\n" if a_hears_it else ":2\r\n"
    await wait_until(lambda: redis_server.cmd("PUBSUB", "NUMSUB", "kgtest:events")
                     .endswith(subscribed), 5, what="c subscribed again")
    await kill(session, c.admin, wait="0s", scope="version", route="iris", version="v2")
    assert "route:iris" not in stored_doc(redis_server)["kills"]
    a.signal(signal.SIGCONT)
    await _killed_everywhere(procs, session)
    assert "route:iris" in stored_doc(redis_server)["kills"]
