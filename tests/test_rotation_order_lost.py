"""A key order deleted (or written over) by someone who can write to Redis, between two
rotations between the same keys (A to B, finished; later B back to A), must not make a
step-1 instance of the second rotation take itself for step 2 (found by review revrot4).

Its own signed list of the key ids retired from B names A (the first rotation recorded it),
which, without the order, was taken for proof of step 2 (review revmerge37's write-back):
the step-1 instance (B, previous A) then re-signed the fleet's documents, which step-2
instances sign with A, back with B (an audited `state.reseed`, "key rotation step 2"), the
very thing the key order is there to prevent, and wrote the order the wrong way round, so
no step-2 instance of the second rotation proved itself, recorded B retired or re-signed:
at step 3 the document was left signed with B (every instance without a state of its own
unready) and B's left-overs paged as tampering. A step-3 instance of the first rotation
now also marks it done in its signed retirement times, which the order's write-back reads.

Real redis-server, real gateways (the code of `killgate serve`) for the fleet's document at
each step, bare RedisStores for the instances that only connect.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from gateway.state.signing import Key
from tests.backends import echo_app
from tests.conftest import (
    RedisServer,
    running_gateway,
    two_versions,
    wait_until,
    write_config,
)
from tests.rotationrig import A_ENV, B_ENV, Rotation, rotation
from tests.staterig import connected
from tests.test_killswitch import kill, redis_state

pytestmark = pytest.mark.timeout(40)


@pytest.mark.parametrize("forger", ["HDEL", "HSET", "HDEL-both"])
async def test_a_lost_key_order_does_not_make_step_1_of_rotating_back_sign_it_back(
        forger: str, tmp_path: Path, backends, session, redis_server: RedisServer,
        monkeypatch: pytest.MonkeyPatch) -> None:
    rot = await rotation(tmp_path, redis_server, backends, monkeypatch)
    a, b = rot.a, rot.b
    field = "order:" + ":".join(sorted((a.kid, b.kid)))
    cfg = rot.cfg

    async def connect(current: Key, previous: Key | None = None) -> bool:
        return (await connected(redis_server, current, previous)).step2

    def signer() -> str:
        return redis_server.cmd("GET", "kgtest:state").split(" ", 2)[1]

    async with running_gateway(cfg("s0", A_ENV), "gw-a") as g0:  # (the fleet's: A's)
        await kill(session, g0.admin, scope="route", route="iris")
    # rotation 1 (A to B), all three steps
    assert not await connect(a, b)
    async with running_gateway(cfg("b2", B_ENV, A_ENV), "gw-b2") as g:
        await wait_until(lambda: g.gw.sync.synced_once, 5, what="step 2 synced")
    assert signer() == b.kid
    await connect(b)  # (step 3: marks the rotation done)
    # the forger: the key order deleted, or written over with something that does not verify
    # (or the retirement times with it: no proof of step 2 is left)
    redis_server.cmd(*(("HSET", "kgtest:keys", field, "garbage") if forger == "HSET"
                       else ("HDEL", "kgtest:keys", field)))
    if forger == "HDEL-both":
        redis_server.cmd("HDEL", "kgtest:keys", f"since:{b.kid}")
    # rotation 2 (B back to A): a step-1 instance is no step-2 one
    assert not await connect(b, a)
    async with running_gateway(cfg("a2", A_ENV, B_ENV), "gw-a2") as g2:  # (step 2)
        assert g2.gw.sync.store.step2  # (the order step 1 wrote proves it)
        await kill(session, g2.admin, scope="version", route="iris", version="v2")
        assert signer() == a.kid
        # a step-1 pod restarting while step 2 rolls out: syncs, signs nothing back
        async with running_gateway(cfg("b1", B_ENV, A_ENV), "gw-b1") as g1:
            await wait_until(lambda: g1.gw.sync.synced_once, 5, what="step 1 synced")
            assert not g1.gw.sync.store.step2
            assert "version:iris:v2" in g1.gw.sync.holder.doc.kills
            _, page, _ = await g1.gw.sync.store.audit_newest(1)
            assert page[0]["action"] != "state.reseed", page
            assert signer() == a.kid
    order = json.loads(redis_server.cmd("HGET", "kgtest:keys", field).split("\n", 1)[1])
    assert order == {"from": b.kid, "to": a.kid}, order
    async with running_gateway(cfg("a3", A_ENV), "gw-a3") as g3:  # (step 3)
        sync = g3.gw.sync
        await wait_until(lambda: sync.synced_once, 5, what="step 3 synced")
        assert sync.ready and sync.status()["verification"]["unverified_total"] == 0
        assert sync.store.keys.retired == {b.kid}


async def test_retirement_times_that_do_not_verify_are_not_written_over_at_step_3(
        tmp_path: Path, backends, redis_server: RedisServer) -> None:
    """A step-3 instance marks a finished rotation done beside the retirement time its
    holders recorded; a record that does not verify (a forger's) is never written over:
    doing so dropped the retirement times for good, and with them the tampering count of a
    value of the retired key written long after (retiredkeys.after_retirement)."""
    a, b = Rotation.a, Rotation.b
    p = await backends(echo_app("v1"))
    async with running_gateway(write_config(tmp_path, two_versions(p, p, 100, 0), state=redis_state(
            redis_server, tmp_path, "s0")), "gw-a") as g0:  # (the fleet's document: A's)
        await wait_until(lambda: g0.gw.sync.synced_once, 5, what="synced")
    for step in ((a, b), (b, a), (b, None)):
        await connected(redis_server, *step)
    since = json.loads(redis_server.cmd("HGET", "kgtest:keys", f"since:{b.kid}").split("\n")[1])
    assert set(since) == {a.kid, f"done:{a.kid}"}, since
    redis_server.cmd("HSET", "kgtest:keys", f"since:{b.kid}", "garbage")
    await connected(redis_server, b)  # (step 3)
    assert redis_server.cmd("HGET", "kgtest:keys", f"since:{b.kid}") == "garbage"
