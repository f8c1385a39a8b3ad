"""Sentinel discovery when the first sentinel asked is out of date.

After a failover the sentinels learn the new master from each other (hello messages, every
2 s), and one cut off from the others keeps naming the old master for as long as the cut
lasts. Redis's client guidelines: a client asks the sentinels in turn and checks ROLE on the
node it was given; a node that is not a master, or that does not answer, sends it on to the
next sentinel, not back to the first. Real redis-server and sentinel processes: a master, its
replica, a sentinel that names the replica as the master (as a stale one names a demoted
master), and one that names the master.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from pathlib import Path

import pytest

from gateway.state.resp import connect, parse_endpoint
from tests.conftest import wait_until_sync
from tests.redisha import RedisNode

pytestmark = pytest.mark.timeout(60)

SERVICE = "kgstale"


def _monitor(port: int) -> str:
    # never failed over during the test: only what each sentinel names matters here
    return (f"sentinel monitor {SERVICE} 127.0.0.1 {port} 1\n"
            f"sentinel down-after-milliseconds {SERVICE} 600000\n")


@pytest.fixture
def nodes(tmp_path: Path) -> Iterator[dict[str, RedisNode]]:
    n = {"master": RedisNode(tmp_path, "master"), "replica": RedisNode(tmp_path, "replica"),
         "old": RedisNode(tmp_path, "old"),  # a master no longer the service's
         "stale": RedisNode(tmp_path, "stale", sentinel=True),
         "stale-old": RedisNode(tmp_path, "stale-old", sentinel=True),
         "good": RedisNode(tmp_path, "good", sentinel=True),
         "good2": RedisNode(tmp_path, "good2", sentinel=True)}
    try:
        n["master"].start()
        n["replica"].start(f"replicaof 127.0.0.1 {n['master'].port}\n")
        wait_until_sync(lambda: n["replica"].info("replication", "master_link_status") == "up",
                        10, what="the replica to sync")
        n["old"].start()
        n["stale"].start(_monitor(n["replica"].port))
        n["stale-old"].start(_monitor(n["old"].port))
        n["good"].start(_monitor(n["master"].port))
        n["good2"].start(_monitor(n["master"].port))
        yield n
    finally:
        for node in n.values():
            node.stop()


def _named(sentinel: RedisNode) -> int:
    lines = sentinel.cmd("SENTINEL", "get-master-addr-by-name", SERVICE)
    return int([ln for ln in lines if ln.isdigit()][-1])


async def test_a_stale_first_sentinel_does_not_hide_the_master(
        nodes: dict[str, RedisNode]) -> None:
    assert _named(nodes["stale"]) == nodes["replica"].port  # what the test is about
    url = (f"redis+sentinel://127.0.0.1:{nodes['stale'].port},"
           f"127.0.0.1:{nodes['good'].port}/{SERVICE}/0")
    conn = await connect(parse_endpoint(url), 1.0)
    try:
        role = await conn.call("ROLE", timeout=1.0)
        assert role[0] == b"master"
        assert await conn.call("SET", "kgstale:x", "1", timeout=1.0) == b"OK"
    finally:
        await conn.aclose()


async def test_a_first_sentinel_naming_a_dead_node_does_not_hide_the_master(
        nodes: dict[str, RedisNode]) -> None:
    """The stale sentinel names a node that is gone (the old master, crashed)."""
    nodes["replica"].kill()
    url = (f"redis+sentinel://127.0.0.1:{nodes['stale'].port},"
           f"127.0.0.1:{nodes['good'].port}/{SERVICE}/0")
    conn = await asyncio.wait_for(connect(parse_endpoint(url), 1.0), 10)
    try:
        assert (await conn.call("ROLE", timeout=1.0))[0] == b"master"
    finally:
        await conn.aclose()


async def test_a_stale_sentinel_naming_an_old_master_is_not_believed_over_the_others(
        nodes: dict[str, RedisNode]) -> None:
    """The node the stale sentinel names still says it is a master (a master the others
    replaced while it was cut off from them): the node most sentinels name wins."""
    url = "redis+sentinel://" + ",".join(
        f"127.0.0.1:{nodes[n].port}" for n in ("stale-old", "good", "good2")) + f"/{SERVICE}/0"
    conn = await connect(parse_endpoint(url), 1.0)
    try:
        assert await conn.call("SET", "kgstale:which", "x", timeout=1.0) == b"OK"
    finally:
        await conn.aclose()
    assert nodes["master"].cmd("GET", "kgstale:which")[-2] == "x"
    assert nodes["old"].cmd("EXISTS", "kgstale:which")[0] == ":0"


async def test_no_sentinel_naming_a_master_is_still_an_error(
        nodes: dict[str, RedisNode]) -> None:
    url = f"redis+sentinel://127.0.0.1:{nodes['stale'].port}/{SERVICE}/0"
    with pytest.raises(ConnectionError, match="not a master"):
        await connect(parse_endpoint(url), 1.0)


@pytest.fixture
def guarded(tmp_path: Path) -> Iterator[dict[str, RedisNode]]:
    """A master that needs a password, watched by a sentinel that needs none (Sentinel's
    own `requirepass` is optional and apart from the master's: `sentinel auth-pass`)."""
    n = {"master": RedisNode(tmp_path, "gmaster"),
         "sentinel": RedisNode(tmp_path, "gsentinel", sentinel=True)}
    try:
        n["master"].start()
        n["sentinel"].start(_monitor(n["master"].port))
        assert n["sentinel"].cmd("SENTINEL", "SET", SERVICE, "auth-pass", "pw")[0] == "+OK"
        assert n["master"].cmd("CONFIG", "SET", "requirepass", "pw")[0] == "+OK"
        yield n
    finally:
        for node in n.values():
            node.stop()


async def test_a_password_for_the_master_is_not_forced_on_sentinels_that_need_none(
        guarded: dict[str, RedisNode]) -> None:
    """`redis+sentinel://:pw@...` authenticates to the master; a sentinel without a
    password refuses AUTH ("called without any password configured"), and every connect
    failed: the sentinels are then asked without it."""
    url = f"redis+sentinel://:pw@127.0.0.1:{guarded['sentinel'].port}/{SERVICE}/0"
    conn = await connect(parse_endpoint(url), 1.0)
    try:
        assert (await conn.call("ROLE", timeout=1.0))[0] == b"master"
    finally:
        await conn.aclose()
