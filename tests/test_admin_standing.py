"""Which budget an admin token check spends under a flood of junk tokens (admin/standing.py,
admin/callers.py): the table of failing addresses cannot be filled by one site's IPv6
/48, an operator who never failed gets a new token checked when a botnet has filled it,
and one mistyped token does not put an operator's address on the flood's budget.

Before, 1,024 failing budget keys (IPv6 /64s: a /54 is 1,024 of them) filled the table,
after which every address not in it spent the shared budget the flood had spent: an
operator's new valid token got 429 for as long as the flood went on; and an address whose
last check failed spent the shared budget for 10 minutes, however often it had passed.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from pathlib import Path

import pytest
from aiohttp import ClientSession, TCPConnector

from gateway.admin.callers import budget_key
from gateway.admin.standing import FREE, MAX_FAILED, RESERVE, SHARED, Standing
from gateway.admin.tokens import mint
from tests.conftest import SECRET
from tests.test_admin_limiter import AUD, ISS, _small_budget, bad_token

pytestmark = pytest.mark.timeout(60)


def _token(sub: str) -> str:
    return mint(SECRET, sub, "killgate:read", 600, ISS, AUD)


async def _flood(call: Callable[..., Awaitable[int]], clients: list[str]) -> list[int]:
    """One junk token from each client (behind the trusted proxy), 256 at a time."""
    got: list[int] = []
    for i in range(0, len(clients), 256):
        got += await asyncio.gather(*(call(bad_token(), c) for c in clients[i:i + 256]))
    return got


async def _operator(call: Callable[..., Awaitable[int]], token: str) -> int:
    """A new token from 127.0.0.20: a socket of its own, never seen failing."""
    async with ClientSession(connector=TCPConnector(local_addr=("127.0.0.20", 0))) as s:
        return await call(token, "", s)


async def test_one_ipv6_site_cannot_fill_the_table_of_failures(tmp_path: Path,
                                                              backends) -> None:
    async with _small_budget(tmp_path, backends, rate=0.05) as call:
        # every /64 of a /54: 1,024 budget keys, as many as the table holds
        site = [f"2001:db8:7:{i:x}::1" for i in range(MAX_FAILED)]
        got = await _flood(call, site)
        assert got.count(429) > MAX_FAILED - 64, got.count(429)  # only 16 (+30 shared) checked
        assert await _operator(call, _token("oncall")) == 200
        assert await call(_token("v6"), "2001:db8:8::1") == 200  # another /48


async def test_an_operator_never_seen_failing_gets_in_when_a_botnet_filled_the_table(
        tmp_path: Path, backends) -> None:
    async with _small_budget(tmp_path, backends, rate=0.05) as call:
        bots = [f"10.{i // 250}.{i % 250}.1" for i in range(MAX_FAILED)]
        assert set(await _flood(call, bots)) == {401}  # each one's first check: free
        again = await _flood(call, bots[:64])  # then the shared budget (30), spent
        assert again.count(429) >= 30, again
        assert await _operator(call, _token("oncall")) == 200  # the reserve
        assert await call(bad_token(), "10.0.0.1") == 429  # the flood: still refused


async def test_one_mistyped_token_leaves_an_operator_off_the_floods_budget(
        tmp_path: Path, backends) -> None:
    async with _small_budget(tmp_path, backends, rate=0.05) as call:
        assert await call(_token("oncall"), "198.51.100.7") == 200
        assert await call(bad_token(), "198.51.100.7") == 401  # a typo
        flood = await _flood(call, [f"203.0.113.{i}" for i in range(40)])
        assert set(flood) == {401}, flood
        assert await call(bad_token(), "203.0.113.1") == 429  # the shared budget: spent
        assert await call(_token("oncall-again"), "198.51.100.7") == 200


def test_ipv6_budget_keys_are_64s_grouped_by_48() -> None:
    assert budget_key("2001:db8:7:1::5") == ("2001:db8:7:1::/64", "2001:db8:7::/48")
    assert budget_key("2001:db8:7:ffff:1:2:3:4") == ("2001:db8:7:ffff::/64",
                                                     "2001:db8:7::/48")
    assert budget_key("203.0.113.9") == ("203.0.113.9", "203.0.113.9")
    assert budget_key("::ffff:203.0.113.9") == ("::ffff:203.0.113.9", "::ffff:203.0.113.9")
    assert budget_key("unix") == ("unix", "unix")


def test_a_group_holds_a_bounded_share_of_the_table() -> None:
    st = Standing(max_failed=100, max_per_group=4)
    for i in range(10):
        key = f"2001:db8:7:{i:x}::/64"
        how = st.how(key, "2001:db8:7::/48")
        st.failed(key, "2001:db8:7::/48")
        assert how == (FREE if i < 4 else SHARED), (i, how)
    assert st.how("2001:db8:7:3::/64", "2001:db8:7::/48") == SHARED  # (failed: as before)
    assert st.how("2001:db8:8::/64", "2001:db8:8::/48") == FREE  # another site


def test_suspects_and_the_grace_of_an_address_that_passed() -> None:
    now = [0.0]
    st = Standing(ttl=60, max_failed=1, max_suspects=2, clock=lambda: now[0])
    assert st.how("bot0", "bot0") == FREE
    st.failed("bot0", "bot0")
    for bot in ("bot1", "bot2", "bot3"):  # the table is full
        assert st.how(bot, bot) == RESERVE
        st.failed(bot, bot)
        assert st.how(bot, bot) == SHARED  # failed once: a suspect, off the reserve
    assert st.how("bot1", "bot1") == RESERVE  # (the oldest suspect forgotten: bounded)
    st.passed("op")
    assert st.how("op", "op") == FREE
    for _ in range(3):  # up to three typos in a row: the reserve
        st.failed("op", "op")
        assert st.how("op", "op") == RESERVE
    st.failed("op", "op")
    assert st.how("op", "op") == SHARED  # a fourth: the flood's budget
    st.passed("op")
    assert st.how("op", "op") == FREE
    now[0] = 61.0
    assert st.how("bot2", "bot2") == FREE  # (everything forgotten after the ttl)
