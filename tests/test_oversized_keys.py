"""The generation and audit head keys are read on every poll: whoever can write to redis
must not make that a read of hundreds of megabytes (README, Trust: no instance is stalled
with oversized values).

The document is refused unread over 16 MiB, but its two unsigned companions were read
whole: one SET of a 150 MB `<prefix>:audit:head` made every instance read it at every poll
(its value is never the head it expects, so it does not stop), on the loop the data plane
runs on: requests stalled for half a second, again and again, until some write replaced
the key. Values longer than a generation or a head can be are now never sent: the scripts
answer a marker instead, a poll then reads the document once, and the next commit (a
re-seed for the generation key) replaces them.
"""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import pytest

from tests.backends import echo_app
from tests.conftest import RedisServer, running_gateway, two_versions, wait_until, write_config
from tests.test_attacks_state import _set_raw, post, stored_kills
from tests.test_keyed_audit import H
from tests.test_killswitch import redis_state, status_of

pytestmark = pytest.mark.timeout(120)

SIZE = 150 * 1024 * 1024


@pytest.mark.parametrize("key", ["kgtest:audit:head", "kgtest:gen"])
async def test_a_huge_generation_or_head_key_is_never_read(
        key: str, tmp_path: Path, backends, session, redis_server: RedisServer) -> None:
    p = await backends(echo_app("v1"))
    cfg = write_config(tmp_path, two_versions(p, p, 100, 0),
                       state=redis_state(redis_server, tmp_path, command_timeout="3s"))
    async with running_gateway(cfg) as g:
        await wait_until(lambda: g.gw.sync.synced_once, 5, what="the first sync")
        await asyncio.to_thread(_set_raw, redis_server, key, b"7" * SIZE)
        gen, head = await g.gw.sync.store.poll()
        assert len(gen or "") < 200 and len(head or "") < 200
        worst = 0.0
        end = time.monotonic() + 3.0
        while time.monotonic() < end:
            t0 = time.perf_counter()
            assert (await status_of(session, g.url))[0] == 200
            worst = max(worst, time.perf_counter() - t0)
            await asyncio.sleep(0.01)
        assert worst < 0.25, worst
        # kills still work, and the commit replaces the key
        await post(session, g.admin, "/v1/kill", scope="route", route="iris")
        assert "route:iris" in stored_kills(redis_server)
        await wait_until(lambda: int(redis_server.cmd("STRLEN", key)) < 200, 5,
                         what=f"{key} replaced")
        assert (await status_of(session, g.url)) == (503, "killed")


async def test_a_huge_heartbeat_dated_in_the_future_is_read_once(
        tmp_path: Path, backends, session, redis_server: RedisServer) -> None:
    """The heartbeat hash is read whole (`/v1/status`, the console, a receipt still pending
    after 50 ms). A forged entry dated in the future was never dropped as stale: one HSET
    of 150 MB made every such call read and check it on the loop the data plane runs on,
    for good (5 s each here). The script stamps the server's time: an entry dated in the
    future is a forgery, dropped like a stale one."""
    p = await backends(echo_app("v1"))
    cfg = write_config(tmp_path, two_versions(p, p, 100, 0),
                       state=redis_state(redis_server, tmp_path, command_timeout="30s"))
    async with running_gateway(cfg) as g:
        await wait_until(lambda: g.gw.sync.synced_once, 5, what="the first sync")
        future = str(int(time.time() * 1000) + 10 ** 9).encode()
        await asyncio.to_thread(_set_raw_hash, redis_server, "kgtest:instances", b"forged",
                                future + b" " + b"7" * SIZE)
        store = g.gw.sync.store
        await store.fleet(30.0)  # (read once, and dropped: slow on a loaded machine)
        assert redis_server.cmd("HEXISTS", "kgtest:instances", "forged") == "0"
        t0 = time.perf_counter()
        assert g.gw.sync.instance in await store.fleet(5.0)
        assert time.perf_counter() - t0 < 2.0  # (the forged entry read again: 5 s)


def _set_raw_hash(redis: RedisServer, key: str, field: bytes, value: bytes) -> None:
    import socket

    args = [b"HSET", key.encode(), field, value]
    payload = f"*{len(args)}\r\n".encode() + b"".join(
        f"${len(a)}\r\n".encode() + a + b"\r\n" for a in args)
    with socket.create_connection(("127.0.0.1", redis.port), timeout=10) as s:
        s.sendall(payload)
        s.recv(100)


@pytest.mark.timeout(30)
@pytest.mark.parametrize("seen", [b"9" * 400, b"9" * 5000])
async def test_a_heartbeat_dated_past_any_number_is_dropped_not_a_500(
        seen: bytes, tmp_path: Path, backends, session, redis_server: RedisServer) -> None:
    """A forged heartbeat whose server time is a number of 400 digits (no float holds it:
    OverflowError) or 5,000 (over Python's int-parsing limit: ValueError) raised out of the
    heartbeat hash's read: /v1/status answered 500 and a kill whose receipt asks who is live
    answered 500 although it was in force, for good (the entry was never removed)."""
    p = await backends(echo_app("v1"))
    cfg = write_config(tmp_path, two_versions(p, p, 100, 0),
                       state=redis_state(redis_server, tmp_path))
    async with running_gateway(cfg) as g:
        await wait_until(lambda: g.gw.sync.synced_once, 5, what="the first sync")
        redis_server.cmd("HSET", "kgtest:instances", "forged", (seen + b" x").decode())
        async with session.get(g.admin + "/v1/status", headers=H) as r:
            assert r.status == 200, await r.text()
        assert redis_server.cmd("HEXISTS", "kgtest:instances", "forged") == "0"
        redis_server.cmd("HSET", "kgtest:instances", "forged", (seen + b" x").decode())
        assert g.gw.sync.instance in await g.gw.sync.store.fleet(5.0)
        assert redis_server.cmd("HEXISTS", "kgtest:instances", "forged") == "0"


@pytest.mark.timeout(30)
async def test_addresses_of_no_instance_are_read_once(
        tmp_path: Path, backends, session, redis_server: RedisServer) -> None:
    """The addresses hash (`<prefix>:instances:urls`, what drills reach instances by) is read
    whole with the heartbeats (/v1/status, the console, a receipt still pending after 50 ms),
    and an entry is removed only with its instance's heartbeat: one forged for a name that
    has none stayed for good (150 MB: every such call 0.4-1 s, the data plane stalled 0.1 s
    each time). An entry without a heartbeat is removed at the first read that sees it; a
    live instance keeps its own."""
    p = await backends(echo_app("v1"))
    cfg = write_config(tmp_path, two_versions(p, p, 100, 0),
                       state=redis_state(redis_server, tmp_path, command_timeout="5s"))
    async with running_gateway(cfg) as g:
        await wait_until(lambda: g.gw.sync.synced_once, 5, what="the first sync")
        await asyncio.to_thread(_set_raw_hash, redis_server, "kgtest:instances:urls",
                                b"orphan", b"7" * (16 * 1024 * 1024))
        store = g.gw.sync.store
        me = g.gw.sync.instance
        # (its addresses with the admin URL: the heartbeats sent while the gateway starts,
        # before its listeners are bound, publish an entry without them, replaced at the
        # first heartbeat after, up to a heartbeat interval later, more on a loaded machine;
        # a read in between is right to answer what is stored)
        await wait_until(lambda: '"admin":' in redis_server.cmd(
            "HGET", "kgtest:instances:urls", me), 5, what="this instance's addresses")
        fleet = await store.fleet(5.0)
        assert redis_server.cmd("HEXISTS", "kgtest:instances:urls", "orphan") == "0"
        assert "admin" in fleet[me], fleet
        assert redis_server.cmd("HEXISTS", "kgtest:instances:urls", me) == "1"


@pytest.mark.timeout(30)
async def test_refused_counts_are_read_once(
        tmp_path: Path, backends, session, redis_server: RedisServer) -> None:
    """A counts hash (`<prefix>:stats:<route>`: canary analysis every tick, the console's
    traffic view) is read whole and each entry's MAC checked on the loop the data plane runs
    on; a forged entry was never removed (the review before left this open): one of 8 MB
    naming the real key id cost a MAC of 8 MB at every read, for good, and one of 150 MB
    more. A refused entry (forged, or over 16 MiB: not verified) is removed once read; a
    genuine one stays."""
    p = await backends(echo_app("v1"))
    cfg = write_config(tmp_path, two_versions(p, p, 100, 0),
                       state=redis_state(redis_server, tmp_path, command_timeout="5s"))
    async with running_gateway(cfg) as g:
        await wait_until(lambda: g.gw.sync.synced_once, 5, what="the first sync")
        store = g.gw.sync.store
        kid = redis_server.cmd("GET", "kgtest:state").split(" ", 2)[1]
        await store.put_stats("iris", "me", {"t": 1})
        forged = f"KGS1 {kid} {'0' * 64}\n{{}}".encode() + b" " * (8 * 1024 * 1024)
        await asyncio.to_thread(_set_raw_hash, redis_server, "kgtest:stats:iris", b"f", forged)
        await asyncio.to_thread(_set_raw_hash, redis_server, "kgtest:stats:iris", b"huge",
                                b"7" * (17 * 1024 * 1024))
        assert await store.get_stats("iris") == [{"t": 1}]
        assert redis_server.cmd("HLEN", "kgtest:stats:iris") == "1"
        assert redis_server.cmd("HEXISTS", "kgtest:stats:iris", "me") == "1"
        assert g.gw.sync.tamper.counts.get("stats") == 2
        assert await store.get_stats("iris") == [{"t": 1}]
        assert g.gw.sync.tamper.counts.get("stats") == 2
