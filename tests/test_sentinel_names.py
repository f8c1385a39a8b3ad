"""Sentinels behind one name: a Kubernetes headless Service resolves to every sentinel's
address (the shipped manifests' `redis-sentinel.redis.svc...:26379`). Asked by that name,
the three were one, whichever address the resolver put first: an out-of-date sentinel
there was "more than half" alone, and every instance's five-second check believed it.

Real redis-server and sentinel processes on three loopback addresses and one port; only
the name's resolution is given by the test (no DNS server here): `sentinels.test` resolves
to the three addresses, the out-of-date sentinel's first.
"""

from __future__ import annotations

import asyncio
import socket
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from gateway.state import sentinels as sentinel_module
from gateway.state.resp import parse_endpoint
from gateway.state.sentinels import master_named, sentinel_addresses, to_master
from tests.conftest import free_port, wait_until_sync
from tests.redisha import RedisNode

pytestmark = pytest.mark.timeout(60)

SERVICE = "kgnames"
HOSTS = ("127.0.0.2", "127.0.0.3", "127.0.0.4")  # the stale sentinel's first


def _port_free_on_all() -> int:
    for _ in range(50):
        port = free_port()
        try:
            for host in HOSTS:
                with socket.socket() as s:
                    s.bind((host, port))
        except OSError:
            continue
        return port
    raise AssertionError("no port free on all three loopback addresses")


def _monitor(port: int) -> str:
    return (f"sentinel monitor {SERVICE} 127.0.0.1 {port} 1\n"
            f"sentinel down-after-milliseconds {SERVICE} 600000\n")


def _info(host: str, port: int, family: int = socket.AF_INET) -> tuple[Any, ...]:
    return (family, socket.SOCK_STREAM, 6, "", (host, port))


@pytest.fixture
def nodes(tmp_path: Path) -> Iterator[dict[str, RedisNode]]:
    port = _port_free_on_all()
    n = {"master": RedisNode(tmp_path, "master"),
         "old": RedisNode(tmp_path, "old"),  # a master no longer the service's
         "stale": RedisNode(tmp_path, "stale", sentinel=True, host=HOSTS[0], port=port),
         "good": RedisNode(tmp_path, "good", sentinel=True, host=HOSTS[1], port=port),
         "good2": RedisNode(tmp_path, "good2", sentinel=True, host=HOSTS[2], port=port)}
    try:
        n["master"].start()
        n["old"].start()
        n["stale"].start(_monitor(n["old"].port))
        n["good"].start(_monitor(n["master"].port))
        n["good2"].start(_monitor(n["master"].port))
        for s in ("stale", "good", "good2"):
            wait_until_sync(lambda s=s: any(ln.isdigit() for ln in n[s].cmd(
                "SENTINEL", "get-master-addr-by-name", SERVICE)), 10, what=f"{s} to name one")
        yield n
    finally:
        for node in n.values():
            node.stop()


@pytest.fixture
def resolver(monkeypatch: pytest.MonkeyPatch) -> dict[str, list[tuple[Any, ...]]]:
    table: dict[str, list[tuple[Any, ...]]] = {}

    async def resolve(host: str, port: int) -> list[tuple[Any, ...]]:
        if host not in table:
            raise socket.gaierror(socket.EAI_NONAME, "Name or service not known")
        return [(*i[:4], (i[4][0], port)) for i in table[host]]

    monkeypatch.setattr(sentinel_module, "_resolve", resolve)
    monkeypatch.setattr(sentinel_module, "_expanded", {}, raising=False)
    return table


async def test_a_name_of_three_sentinels_is_three_sentinels(
        nodes: dict[str, RedisNode], resolver: dict[str, list[tuple[Any, ...]]]) -> None:
    port = nodes["stale"].port
    resolver["sentinels.test"] = [_info(h, port) for h in HOSTS]
    ep = parse_endpoint(f"redis+sentinel://sentinels.test:{port}/{SERVICE}/0")
    assert await sentinel_addresses(ep, 2.0) == [(h, port) for h in HOSTS]
    # the five-second check: two of three name the master; the stale one, asked first and
    # by name alone, named the old master and moved every instance there
    assert await master_named(ep, 2.0) == ("127.0.0.1", nodes["master"].port)
    conn = await to_master(ep, 2.0, "kg-test", None)
    try:
        assert conn.address == ("127.0.0.1", nodes["master"].port)
    finally:
        await conn.aclose()


async def test_which_addresses_a_sentinel_name_stands_for(
        resolver: dict[str, list[tuple[Any, ...]]]) -> None:
    resolver["dual.test"] = [_info("fd00::1", 0, socket.AF_INET6), _info("10.0.0.1", 0),
                             _info("fd00::2", 0, socket.AF_INET6), _info("10.0.0.2", 0),
                             _info("fd00::1", 0, socket.AF_INET6)]
    resolver["one.test"] = [_info("10.0.0.9", 0)]
    ep = parse_endpoint("redis+sentinel://dual.test:26379,one.test:26380,10.1.1.1:26381,"
                        "gone.test:26382,10.1.1.1:26381/svc/0")
    # a dual-stack name: the addresses of the family the system connects with first, once
    # each; a single address: the name, as the connection resolves it; an IP as written; a
    # name that does not resolve now is asked as it is (and says why); duplicates once
    assert await sentinel_addresses(ep, 2.0) == [
        ("fd00::1", 26379), ("fd00::2", 26379), ("one.test", 26380), ("10.1.1.1", 26381),
        ("gone.test", 26382)]


async def test_a_name_that_resolves_slowly_still_stands_for_its_sentinels(
        nodes: dict[str, RedisNode], resolver: dict[str, list[tuple[Any, ...]]],
        monkeypatch: pytest.MonkeyPatch) -> None:
    """A resolution that fails or is slow (a lost DNS packet: glibc retries after 5 s) left
    the name as written: one sentinel, whichever address the connect's own resolution put
    first, believed alone as 'more than half' (the stale one here). It stands for the
    addresses it last resolved to."""
    port = nodes["stale"].port
    resolver["sentinels.test"] = [_info(h, port) for h in HOSTS]
    ep = parse_endpoint(f"redis+sentinel://sentinels.test:{port}/{SERVICE}/0")
    assert await sentinel_addresses(ep, 2.0) == [(h, port) for h in HOSTS]
    fast = sentinel_module._resolve

    async def slow(host: str, port: int) -> list[tuple[Any, ...]]:
        if host == "sentinels.test":
            await asyncio.sleep(30)
        return await fast(host, port)

    monkeypatch.setattr(sentinel_module, "_resolve", slow)
    assert await sentinel_addresses(ep, 0.2) == [(h, port) for h in HOSTS]
    assert await master_named(ep, 0.5) == ("127.0.0.1", nodes["master"].port)
    del resolver["sentinels.test"]  # (now it does not resolve at all)
    monkeypatch.setattr(sentinel_module, "_resolve", fast)
    assert await sentinel_addresses(ep, 2.0) == [(h, port) for h in HOSTS]
    # a name that resolves to one address again is the name again
    resolver["sentinels.test"] = [_info(HOSTS[1], port)]
    assert await sentinel_addresses(ep, 2.0) == [("sentinels.test", port)]
    del resolver["sentinels.test"]
    assert await sentinel_addresses(ep, 2.0) == [("sentinels.test", port)]


async def test_a_name_whose_first_family_refuses_is_asked_by_name(
        tmp_path: Path, resolver: dict[str, list[tuple[Any, ...]]]) -> None:
    """A dual-stack name resolves to IPv6 addresses first, and the sentinel listens on IPv4
    only: asked at the IPv6 addresses alone, no sentinel answered and no connection to
    Redis could be made (asked by name, before 78a7b3e, the connect fell back to IPv4)."""
    master = RedisNode(tmp_path, "master")
    sentinel = RedisNode(tmp_path, "sentinel", sentinel=True)  # 127.0.0.1 only
    try:
        master.start()
        sentinel.start(_monitor(master.port))
        wait_until_sync(lambda: any(ln.isdigit() for ln in sentinel.cmd(
            "SENTINEL", "get-master-addr-by-name", SERVICE)), 10, what="the sentinel")
        # (the test's resolution; the connect by name resolves `localhost` for real)
        resolver["localhost"] = [_info(f"::ffff:127.0.0.{n}", 0, socket.AF_INET6)
                                 for n in (9, 10)]
        ep = parse_endpoint(f"redis+sentinel://localhost:{sentinel.port}/{SERVICE}/0")
        assert len(await sentinel_addresses(ep, 2.0)) == 2
        assert await master_named(ep, 2.0) == ("127.0.0.1", master.port)
        conn = await to_master(ep, 2.0, "kg-test", None)
        try:
            assert conn.address == ("127.0.0.1", master.port)
        finally:
            await conn.aclose()
    finally:
        sentinel.stop()
        master.stop()
