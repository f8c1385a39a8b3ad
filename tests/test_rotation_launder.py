"""An old document replayed to an instance at a key rotation's step 2 that holds no state
of its own (found by review revrot5): one signed with the retired key, written back into
Redis by someone without a key, was re-signed with the new key by such an instance as the
rotation's routine re-sign (audited "key rotation step 2", not counted as a re-seed), its
event chained after the replayed document's head, a fork in the audit trail: the replay
was laundered, and after step 3, which refuses the old key's documents, it still stood.
The stored document always anchors the trail's newest event (every commit and trim writes
both in one script), so a document the trail moved past is behind: not re-signed.

Real redis-server, real gateways (the code of `killgate serve`).
"""

from __future__ import annotations

from pathlib import Path

import pytest

from gateway.domain.auditverify import verify_chain
from tests.conftest import (
    RedisServer,
    running_gateway,
    wait_until,
)
from tests.rotationrig import A_ENV, B_ENV, rotation
from tests.staterig import connected
from tests.test_killswitch import kill

pytestmark = pytest.mark.timeout(40)


async def test_an_old_keys_document_replayed_to_a_stateless_step_2_instance_is_not_re_signed(
        tmp_path: Path, backends, session, redis_server: RedisServer,
        monkeypatch: pytest.MonkeyPatch) -> None:
    rot = await rotation(tmp_path, redis_server, backends, monkeypatch)
    a, b = rot.a, rot.b
    cfg = rot.cfg

    async with running_gateway(cfg("s0", A_ENV), "gw-a") as g0:
        await kill(session, g0.admin, scope="version", route="iris", version="v2")
        old = redis_server.cmd("GET", "kgtest:state"), redis_server.cmd("GET", "kgtest:gen")
        await kill(session, g0.admin, scope="route", route="iris")
    await connected(redis_server, a, b)  # (step 1)
    async with running_gateway(cfg("b2", B_ENV, A_ENV), "gw-b2") as g2:  # (re-signs)
        await wait_until(lambda: g2.gw.sync.synced_once, 5, what="step 2 synced")
    assert redis_server.cmd("GET", "kgtest:state").startswith(f"KGS1 {b.kid} ")
    trail = redis_server.cmd("XLEN", "kgtest:audit")
    # the replay, while no instance that remembers the newer state runs
    redis_server.cmd("SET", "kgtest:state", old[0])
    redis_server.cmd("SET", "kgtest:gen", old[1])
    async with running_gateway(cfg("x2", B_ENV, A_ENV), "gw-x2") as x:  # (no snapshot)
        await wait_until(lambda: x.gw.sync.synced_once, 5, what="the stateless one synced")
        _, brk = verify_chain(await x.gw.sync.store.audit_events())
        assert brk is None, brk  # (laundered, its event forked the trail)
        # not laundered: the replayed bytes stay as they were, signed with the old key,
        # and no event continues the replayed document's head
        assert redis_server.cmd("GET", "kgtest:state") == old[0]
        assert redis_server.cmd("XLEN", "kgtest:audit") == trail


_LAST_ID = "return redis.call('XREVRANGE', KEYS[1], '+', '-', 'COUNT', 1)[1][1]"
_CUT_AFTER = ("local r = redis.call('XRANGE', KEYS[1], '(' .. ARGV[1], '+') "
              "for _, e in ipairs(r) do redis.call('XDEL', KEYS[1], e[1]) end return #r")


@pytest.mark.xfail(strict=True, reason=(
    "a stateless instance cannot tell this store from one whose newest document the replay "
    "is: nothing the store holds survives a writer without a key; README Trust says so"))
async def test_a_replay_with_the_trail_cut_back_to_its_head_is_not_re_signed_either(
        tmp_path: Path, backends, session, redis_server: RedisServer,
        monkeypatch: pytest.MonkeyPatch) -> None:
    """The same replay, and the events the trail holds past the replayed document's head
    deleted (XDEL: anyone who can write to redis), the head key set back to it: the trail
    then ends at the replay's head, as it would had the replay been the fleet's newest
    (review revtrail). Proved, not fixed: the stateless step-2 instance re-signs the
    replay with the new key, its event continues the replay's head, so `audit verify`
    (with both keys: every link, hash and MAC) says intact, and a step-3 instance holds
    the replay: the route kill made after it is lifted. The check only stops a replay
    whose writer leaves the trail alone; what a writer who also cuts the trail can do is
    the stateless row of README's Trust table, which this makes outlive the rotation."""
    rot = await rotation(tmp_path, redis_server, backends, monkeypatch)
    a, b = rot.a, rot.b
    cfg = rot.cfg

    async with running_gateway(cfg("s0", A_ENV), "gw-a") as g0:
        await kill(session, g0.admin, scope="version", route="iris", version="v2")
        old = [redis_server.cmd("GET", k) for k in ("kgtest:state", "kgtest:gen",
                                                    "kgtest:audit:head")]
        cut = redis_server.cmd("EVAL", _LAST_ID, "1", "kgtest:audit")
        await kill(session, g0.admin, scope="route", route="iris")
    await connected(redis_server, a, b)  # (step 1)
    async with running_gateway(cfg("b2", B_ENV, A_ENV), "gw-b2") as g2:  # (re-signs)
        await wait_until(lambda: g2.gw.sync.synced_once, 5, what="step 2 synced")
    assert redis_server.cmd("GET", "kgtest:state").startswith(f"KGS1 {b.kid} ")
    # the replay, its trail cut back to its head, while no instance that remembers runs
    for k, v in zip(("kgtest:state", "kgtest:gen", "kgtest:audit:head"), old, strict=True):
        redis_server.cmd("SET", k, v)
    assert int(redis_server.cmd("EVAL", _CUT_AFTER, "1", "kgtest:audit", cut)) >= 2
    trail = redis_server.cmd("XLEN", "kgtest:audit")
    async with running_gateway(cfg("x2", B_ENV, A_ENV), "gw-x2") as x:  # (no snapshot)
        await wait_until(lambda: x.gw.sync.synced_once, 5, what="the stateless one synced")
        assert redis_server.cmd("GET", "kgtest:state") == old[0]  # (not laundered)
        assert redis_server.cmd("XLEN", "kgtest:audit") == trail
