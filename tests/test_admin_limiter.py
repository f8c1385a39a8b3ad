"""The token-check budget (admin/limiter.py) and its order in the admin API: a token
verified before is never refused, however many bad tokens the same address sends
(RELIABILITY row 54)."""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import jwt
from aiohttp import ClientSession

from gateway.admin.limiter import TokenBucket
from gateway.admin.tokens import mint
from tests.backends import echo_app
from tests.conftest import SECRET, running_gateway, two_versions, wait_until, write_config

ISS, AUD = "killgate", "killgate-admin"


def bad_token() -> str:
    """A well-formed token signed with the wrong key: each one new (no cache can help)."""
    now = int(time.time())
    return jwt.encode({"sub": "mallory", "scope": "killgate:admin", "iat": now,
                       "exp": now + 60, "iss": ISS, "aud": AUD, "jti": uuid.uuid4().hex},
                      "another-secret-that-is-32-bytes-long!!", algorithm="HS256")


def test_bucket_allows_a_burst_then_its_rate() -> None:
    now = [100.0]
    b = TokenBucket(rate=2.0, burst=3, clock=lambda: now[0])
    assert [b.take("a") for _ in range(3)] == [0.0, 0.0, 0.0]
    wait = b.take("a")
    assert 0.49 < wait <= 0.5  # one token comes back every 1/rate s
    assert b.take("b") == 0.0  # another address has its own bucket
    now[0] += 0.5
    assert b.take("a") == 0.0 and b.take("a") > 0
    now[0] += 60  # refilled to the burst, not beyond
    assert [b.take("a") for _ in range(4)][-1] > 0
    err = b.refusal(0.2)
    assert err.status == 429 and err.headers == {"Retry-After": "1"}


def test_bucket_memory_is_bounded() -> None:
    b = TokenBucket(rate=1.0, burst=1, clock=lambda: 0.0, max_keys=100)
    for i in range(10_000):
        b.take(f"10.0.{i // 256}.{i % 256}")
    assert len(b._buckets) == 100


async def test_a_known_token_passes_while_its_address_is_limited(tmp_path: Path,
                                                                  backends) -> None:
    p = await backends(echo_app("v1"))
    cfg = write_config(tmp_path, two_versions(p, p))
    cfg.write_text(cfg.read_text().replace("  auth:\n", "  auth_check_rate: 2\n"
                                           "  auth_check_burst: 5\n  auth:\n", 1))
    async with running_gateway(cfg) as g, ClientSession() as s:
        known = mint(SECRET, "ops", "killgate:admin", 600, ISS, AUD)

        async def call(tok: str, method: str = "GET", path: str = "/v1/status",
                       body: dict | None = None) -> tuple[int, str | None]:
            async with s.request(method, g.admin + path, json=body,
                                 headers={"Authorization": f"Bearer {tok}"}) as r:
                return r.status, r.headers.get("Retry-After")

        assert (await call(known))[0] == 200  # verified once: cached from now on
        codes = [(await call(bad_token()))[0] for _ in range(12)]
        # the burst's checks answer 401 (the first one used by `known`), the rest 429
        assert codes[:4] == [401] * 4 and set(codes[4:]) == {429}
        status, retry = await call(bad_token())
        assert status == 429 and retry == "1"
        # while the address is limited, the known token is not refused: a kill goes through
        status, _ = await call(known, "POST", "/v1/kill", {"scope": "global", "reason": "x"})
        assert status == 200 and "global" in g.gw.holder.doc.kills
        # a new valid token waits for the bucket like any other unknown token, then passes
        fresh = mint(SECRET, "ops2", "killgate:admin", 600, ISS, AUD)
        assert await call(fresh) == (429, "1")
        answers: list[int] = []

        async def accepted() -> bool:
            answers.append((await call(fresh))[0])
            return answers[-1] == 200

        await wait_until(accepted, 5, 0.25, "the new token to be checked and accepted")
        assert set(answers[:-1]) <= {429}
        assert g.gw.metrics.get("killgate_auth_failures_total", ("429",)) >= 9


async def test_a_valid_kill_succeeds_during_a_flood_of_bad_tokens(tmp_path: Path,
                                                                  backends) -> None:
    """Row 54 with the default budget: 50 bad tokens a second from one address, and an
    operator on the same address killing with a token never used before: no refusal."""
    p = await backends(echo_app("v1"))
    cfg = write_config(tmp_path, two_versions(p, p))
    async with running_gateway(cfg) as g, ClientSession() as s:
        stop = asyncio.Event()
        flood: list[int] = []

        async def flooder() -> None:
            while not stop.is_set():
                t0 = time.monotonic()
                async with s.get(g.admin + "/v1/status",
                                 headers={"Authorization": f"Bearer {bad_token()}"}) as r:
                    flood.append(r.status)
                await asyncio.sleep(max(0.0, 0.02 - (time.monotonic() - t0)))  # 50/s

        task = asyncio.create_task(flooder())
        try:
            await wait_until(lambda: len(flood) >= 50, 10, 0.05, "a second of flood")
            kills = []
            for i, scope in enumerate(("global", "route")):
                tok = mint(SECRET, f"operator{i}", "killgate:kill", 600, ISS, AUD)
                body = {"scope": scope, "reason": "flood drill"} | (
                    {"route": "iris"} if scope == "route" else {})
                async with s.post(g.admin + "/v1/kill", json=body,
                                  headers={"Authorization": f"Bearer {tok}"}) as r:
                    kills.append(r.status)
                n = len(flood)
                await wait_until(lambda n=n: len(flood) >= n + 25, 10, 0.05, "more flood")
        finally:
            stop.set()
            await task
        assert kills == [200, 200]
        assert set(flood) == {401}  # 50/s is within one address's budget: all were checked
        assert set(g.gw.holder.doc.kills) == {"global", "route:iris"}


Call = Callable[..., Awaitable[int]]


@asynccontextmanager
async def _small_budget(tmp_path: Path, backends: Any, rate: float = 0.5,
                        scoped: str = "") -> AsyncIterator[Call]:
    """A gateway whose token checks are budgeted at 3 now and `rate` a second per address,
    behind a trusted proxy (`scoped`: its admin.auth.scoped_keys lines, if any);
    `call(token, client, session=None)`: GET /v1/status as `client` (the socket's own
    address for "" or with another session), its status."""
    p = await backends(echo_app("v1"))
    cfg = write_config(tmp_path, two_versions(p, p))
    cfg.write_text(cfg.read_text().replace(
        "  auth:\n", f"  auth_check_rate: {rate}\n  auth_check_burst: 3\n"
        "  trusted_proxies: [127.0.0.1/32]\n  auth:\n", 1).replace(
        "    hs256_secret_env: KILLGATE_TEST_SECRET\n",
        "    hs256_secret_env: KILLGATE_TEST_SECRET\n" + scoped, 1))
    async with running_gateway(cfg) as g, ClientSession() as s:
        async def call(tok: str, client: str, session: ClientSession | None = None) -> int:
            headers = {"Authorization": f"Bearer {tok}"} | (
                {"X-Forwarded-For": client} if client else {})
            async with (session or s).get(g.admin + "/v1/status", headers=headers) as r:
                return r.status

        yield call


async def test_one_address_refused_by_its_own_budget_leaves_others_theirs(tmp_path: Path,
                                                                          backends) -> None:
    """The budget for all addresses together bounds the work a spray from many addresses
    causes. Attempts refused by their own address's budget cause no work: they once spent
    it all the same, so one address sending junk tokens fast enough (ten times its own
    rate, without ever being checked) made every other address's new token wait: an
    operator signing in to the console during an incident got 429s."""
    async with _small_budget(tmp_path, backends) as call:
        flood = [await call(bad_token(), "198.51.100.7") for _ in range(60)]
        assert flood.count(401) == 3 and flood.count(429) == 57  # its own budget: 3
        fresh = mint(SECRET, "oncall", "killgate:read", 600, ISS, AUD)
        assert await call(fresh, "203.0.113.9") == 200  # another address: its own budget


async def test_the_addresses_of_one_ipv6_network_share_one_budget(tmp_path: Path,
                                                                 backends) -> None:
    """A client with an IPv6 /64 (the least a site gets) has 2^64 addresses: a budget per
    address let it spend the all-addresses budget alone, one fresh address per attempt,
    and every other address's new token then waited."""
    async with _small_budget(tmp_path, backends) as call:
        flood = [await call(bad_token(), f"2001:db8:7:1::{i:x}") for i in range(60)]
        assert flood.count(401) == 3 and flood.count(429) == 57  # one network, one budget
        fresh = mint(SECRET, "oncall", "killgate:read", 600, ISS, AUD)
        assert await call(fresh, "203.0.113.9") == 200
        assert await call(mint(SECRET, "v6", "killgate:read", 600, ISS, AUD),
                          "2001:db8:7:2::1") == 200  # another /64: its own


async def test_the_cli_waits_out_a_429_and_the_kill_gets_through(tmp_path: Path,
                                                                 backends) -> None:
    """A flood of junk tokens spends the token-check budget: an operator's new token got
    429 `too_many_attempts`, and `killgate kill` failed at its first try (nothing was
    done: the token was never checked). The CLI now waits the Retry-After, says so on
    stderr, and sends the same call again within its --timeout."""
    from tests.test_cli import acli

    p = await backends(echo_app("v1"))
    cfg = write_config(tmp_path, two_versions(p, p))
    # (a token every 4 s: the CLI's own start, over a second on a loaded host, must not
    # outlast the refill and find the budget back before its first try)
    cfg.write_text(cfg.read_text().replace("  auth:\n", "  auth_check_rate: 0.25\n"
                                           "  auth_check_burst: 2\n  auth:\n", 1))
    async with running_gateway(cfg) as g, ClientSession() as s:
        for _ in range(6):
            async with s.get(g.admin + "/v1/status",
                             headers={"Authorization": f"Bearer {bad_token()}"}) as r:
                await r.read()
        assert r.status == 429
        fresh = mint(SECRET, "oncall", "killgate:admin", 600, ISS, AUD)
        res = await acli("kill", "--global", "--reason", "incident",
                         env={"KILLGATE_ADMIN_URL": g.admin, "KILLGATE_TOKEN": fresh})
        assert res.returncode == 0, res
        assert "too_many_attempts" in res.stderr and "trying again in" in res.stderr, res
        assert "global" in g.gw.holder.doc.kills


def test_standing_lets_one_check_per_address_skip_the_shared_budget() -> None:
    """admin/standing.py: an address whose last check failed (or is in flight) spends the
    shared budget; one that passed, or is new while there is room, does not; a new one
    when the table is full spends the reserve (tests/test_admin_standing.py)."""
    from gateway.admin.standing import FREE, RESERVE, SHARED, Standing

    now = [0.0]
    st = Standing(ttl=60, max_failed=2, clock=lambda: now[0])
    assert st.how("a", "a") == FREE and st.how("a", "a") == SHARED  # one in flight
    st.failed("a", "a")
    assert st.how("a", "a") == SHARED
    st.passed("a")  # (an operator's token from that address verified)
    assert st.how("a", "a") == FREE
    st.failed("a", "a")
    assert st.how("b", "b") == FREE
    st.failed("b", "b")
    assert st.how("c", "c") == RESERVE  # the table is full: new addresses, the reserve
    st.failed("c", "c")
    assert st.how("c", "c") == SHARED  # (and once failed, the shared budget)
    st.passed("ok")
    assert st.how("ok", "ok") == FREE  # one that passed before: as before
    now[0] = 61.0  # forgotten after the ttl
    assert st.how("a", "a") == FREE and st.how("c", "c") == FREE
    st.unmark("a")  # (that check ended with no verdict on its token: as if never made)
    assert st.how("a", "a") == FREE


async def test_a_spread_flood_of_junk_tokens_leaves_operators_new_tokens_checked(
        tmp_path: Path, backends) -> None:
    """A flood of junk tokens from many addresses, each within its own budget, spent the
    budget for all addresses together (ten times one address's), and every new valid
    token, from any other address, got 429 while the flood lasted: whoever reached the
    admin port locked operators out during an incident. Now only addresses whose last
    check failed spend that budget: the flood (ten 127.0.0.x sockets and ten IPv6 /64s
    behind the trusted proxy) still gets 429, and operators' new tokens from other
    addresses are checked and pass."""
    from aiohttp import TCPConnector

    async with _small_budget(tmp_path, backends, rate=0.05) as call:
        sessions = [ClientSession(connector=TCPConnector(local_addr=(f"127.0.0.{i}", 0)))
                    for i in range(10, 21)]
        try:
            async def junk(i: int) -> int:
                if i < 10:  # a socket of its own
                    return await call(bad_token(), "", sessions[i])
                return await call(bad_token(), f"2001:db8:{i}::1")  # a /64 of its own

            flood = [c for _ in range(3) for c in await asyncio.gather(
                *(junk(i) for i in range(20)))]
            # 20 addresses x 3 attempts, each within its own budget (3): 20 checked as
            # new addresses, then the shared budget (30 at most) for those that failed
            assert flood.count(429) >= 10 and set(flood) == {401, 429}, flood
            new = mint(SECRET, "oncall", "killgate:admin", 600, ISS, AUD)
            assert await call(new, "", sessions[10]) == 200  # 127.0.0.20: never flooded
            assert await call(mint(SECRET, "oncall2", "killgate:read", 600, ISS, AUD),
                              "2001:db8:ffff::7") == 200
            assert await call(bad_token(), "", sessions[0]) == 429  # the flood: still 429
        finally:
            for s in sessions:
                await s.close()


async def test_a_check_that_ends_without_a_verdict_leaves_no_failure_behind(
        tmp_path: Path, backends) -> None:
    """admin/standing.py marks an address failed while its check is in flight. A check
    that ended otherwise than with 401 left that mark for 10 minutes: a scoped key's holder
    whose token claimed a scope beyond its key (403: its signature was good), or a token
    of a scoped key whose secret the gateway lacks (503: nothing was checked). That
    address then spent the shared budget, and during a flood of junk tokens the operator's
    new valid token from it got 429. Now the first counts as passed, the second as no
    check at all."""
    secret = "drills-secret-0123456789-abcdefghijklmnop"
    (tmp_path / "drills.secret").write_text(secret + "\n")
    (tmp_path / "drills.secret").chmod(0o600)
    scoped = ("    scoped_keys:\n      - name: drills\n        hs256_secret_file: drills.secret\n"
              "        max_scopes: [killgate:read]\n      - name: absent\n"
              "        hs256_secret_env: KILLGATE_TEST_NEVER_SET_SECRET\n"
              "        max_scopes: [killgate:read]\n")
    async with _small_budget(tmp_path, backends, rate=0.05, scoped=scoped) as call:
        now = int(time.time())
        claims = {"sub": "cron", "scope": "killgate:admin", "iat": now, "exp": now + 60,
                  "iss": ISS, "aud": AUD}
        beyond = jwt.encode(claims, secret, algorithm="HS256", headers={"kid": "drills"})
        assert await call(beyond, "198.51.100.1") == 403
        unset = jwt.encode(claims, secret, algorithm="HS256", headers={"kid": "absent"})
        assert await call(unset, "198.51.100.2") == 503
        # a flood from 40 addresses spends the shared budget (30): then 429 for them
        flood = await asyncio.gather(*(call(bad_token(), f"203.0.113.{i}") for i in range(40)))
        assert set(flood) == {401}, flood
        assert await call(bad_token(), "203.0.113.1") == 429
        for client in ("198.51.100.1", "198.51.100.2"):
            fresh = mint(SECRET, f"oncall-{client}", "killgate:read", 600, ISS, AUD)
            assert await call(fresh, client) == 200, client


async def test_an_expired_genuine_token_buys_no_checks_past_the_budgets(tmp_path: Path,
                                                                        backends) -> None:
    """admin/standing.py takes an expired token (its signature good) for no failure, so
    its checks never spent the shared budget: one old genuine token (from a log, a CI
    history), sent from many addresses, bought each address's whole budget of signature
    checks, past the shared bound that the junk-token flood still meets. A genuine token
    found expired is now refused again from a cache, with no check and no budget spent
    (as a valid one is), whichever address sends it."""
    async with _small_budget(tmp_path, backends, rate=0.05) as call:
        old = mint(SECRET, "oncall", "killgate:read", -120, ISS, AUD)  # expired 2 min ago
        now = int(time.time())
        aged = jwt.encode({"sub": "oncall", "scope": "killgate:read", "iat": now - 10 * 86400,
                           "exp": now + 60, "iss": ISS, "aud": AUD}, SECRET, algorithm="HS256")
        for tok in (old, aged):  # (past its exp; past admin.auth.max_token_age)
            got = [await call(tok, "198.51.100.7") for _ in range(8)]
            got += [await call(tok, f"203.0.113.{i}") for i in range(8)]
            assert got == [401] * 16, got  # (the first checked, the rest from the cache)
        # the address's own budget (3) is untouched: a new token from it is checked
        assert await call(mint(SECRET, "oncall", "killgate:read", 600, ISS, AUD),
                          "198.51.100.7") == 200
