"""admin/jwks.py's refetch rule, driven with a key source and a clock of the test's own (the
real JWKS endpoint, rotation and outage: test_admin_auth.py). Each case costs no wait."""

from __future__ import annotations

import asyncio
import threading
from typing import Any

import pytest

from gateway.admin.jwks import EMPTY_REFETCH, JwksKeys
from gateway.errors import Unauthenticated
from tests.conftest import wait_until

REFRESH, FLOOR = 300.0, 30.0


class Source:
    """The endpoint: the keys it serves, whether it answers, how often it was read."""

    def __init__(self, keys: dict[str, Any]) -> None:
        self.keys = dict(keys)
        self.up = True
        self.fetches = 0
        self.gate: threading.Event | None = None  # set: a fetch waits for it

    async def __call__(self) -> dict[str, Any]:
        self.fetches += 1
        if self.gate is not None:
            assert await asyncio.to_thread(self.gate.wait, 5), \
                "the test never let the fetch finish"
        if not self.up:
            raise OSError("connection refused")
        return dict(self.keys)


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def keys(source: Source, clock: Clock) -> JwksKeys:
    return JwksKeys(source, REFRESH, FLOOR, clock=clock)


async def test_an_unknown_kid_refetches_at_most_once_per_floor() -> None:
    source, clock = Source({"k1": "key-1"}), Clock()
    jwks = keys(source, clock)
    assert await jwks.key("k1") == "key-1" and source.fetches == 1
    for kid in ("x1", "x2", "x3"):  # a flood of new kids: no fetch each
        with pytest.raises(Unauthenticated):
            await jwks.key(kid)
    assert source.fetches == 1
    source.keys["k2"] = "key-2"  # rotated in at the IdP
    clock.now += FLOOR
    assert await jwks.key("k2") == "key-2" and source.fetches == 2
    assert await jwks.key("k1") == "key-1" and source.fetches == 2  # known: no fetch


async def test_a_set_older_than_the_refresh_interval_is_read_again() -> None:
    source, clock = Source({"k1": "key-1"}), Clock()
    jwks = keys(source, clock)
    await jwks.key("k1")
    del source.keys["k1"]  # removed at the IdP: it stops verifying at the next refresh
    clock.now += REFRESH - 1
    assert await jwks.key("k1") == "key-1"
    clock.now += 2
    with pytest.raises(Unauthenticated):
        await jwks.key("k1")
    assert source.fetches == 2


async def test_the_last_good_set_stays_while_the_endpoint_is_down() -> None:
    source, clock = Source({"k1": "key-1"}), Clock()
    jwks = keys(source, clock)
    await jwks.key("k1")
    source.up = False
    clock.now += REFRESH + 1
    assert await jwks.key("k1") == "key-1" and source.fetches == 2
    assert await jwks.key("k1") == "key-1" and source.fetches == 2  # (not once a token)


async def test_without_any_set_an_unknown_kid_refetches_once_per_second() -> None:
    source, clock = Source({"k1": "key-1"}), Clock()
    source.up = False  # down since start
    jwks = keys(source, clock)
    with pytest.raises(Unauthenticated):
        await jwks.key("k1")
    with pytest.raises(Unauthenticated):
        await jwks.key("k2")
    assert source.fetches == 1
    source.up = True
    clock.now += EMPTY_REFETCH  # (not the 30 s floor: nothing could verify meanwhile)
    assert await jwks.key("k1") == "key-1" and source.fetches == 2


async def test_tokens_with_an_unknown_kid_wait_for_the_fetch_in_flight() -> None:
    source, clock = Source({"k1": "key-1"}), Clock()
    source.gate = threading.Event()
    jwks = keys(source, clock)
    first = asyncio.ensure_future(jwks.key("k1"))
    await wait_until(lambda: source.fetches, what="the fetch in its thread")
    others = [asyncio.ensure_future(jwks.key("k1")) for _ in range(5)]
    await asyncio.sleep(0)
    source.gate.set()
    assert await asyncio.wait_for(asyncio.gather(first, *others), 5) == ["key-1"] * 6
    assert source.fetches == 1


async def test_a_token_without_a_kid_is_refused_without_a_fetch() -> None:
    source, clock = Source({"k1": "key-1"}), Clock()
    with pytest.raises(Unauthenticated):
        await keys(source, clock).key(None)
    assert source.fetches == 0
