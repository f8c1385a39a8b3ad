"""Open (review revrot5, not fixed): an older genuine `since:<id>` record replayed into
`<prefix>:keys` by someone without a key undoes a finished rotation's done mark. After A to
B (all three steps: step 3 marks `done:A` in B's retirement times, review revrot4), the
forger deletes the key order and writes back the retirement times B's step-2 instances
signed before step 3 (no `done:A`); a step-1 instance of rotating back (B, previous A) then
takes itself for step 2 (retiredkeys._rotated_from_previous's write-back: A is in its list
and in the times, not marked done), the very confusion test_rotation_order_lost.py fixed
for a deleted or overwritten record. Every record under `<prefix>:keys` is replayable; a
done mark needs an anchor a replay cannot roll back (the signed state document).

Real redis-server, a real gateway (the code of `killgate serve`) for each step's document,
bare RedisStores for the instances that only connect.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from gateway.state.signing import Key
from tests.conftest import RedisServer, running_gateway, wait_until
from tests.rotationrig import A_ENV, B_ENV, rotation
from tests.staterig import connected
from tests.test_killswitch import kill

pytestmark = pytest.mark.timeout(40)

@pytest.mark.xfail(strict=True, reason="open: a replayed since:<id> record undoes a "
                   "finished rotation's done mark (module docstring)")
async def test_a_replayed_retirement_record_does_not_make_step_1_of_rotating_back_step_2(
        tmp_path: Path, backends, session, redis_server: RedisServer,
        monkeypatch: pytest.MonkeyPatch) -> None:
    rot = await rotation(tmp_path, redis_server, backends, monkeypatch)
    a, b = rot.a, rot.b
    field = "order:" + ":".join(sorted((a.kid, b.kid)))
    cfg = rot.cfg

    async def connect(current: Key, previous: Key | None = None) -> bool:
        return (await connected(redis_server, current, previous)).step2

    async with running_gateway(cfg("s0", A_ENV), "gw-a") as g0:  # (the fleet's: A's)
        await kill(session, g0.admin, scope="route", route="iris")
    # rotation 1 (A to B): step 1, step 2 (the times the forger keeps), step 3 (done)
    assert not await connect(a, b)
    async with running_gateway(cfg("b2", B_ENV, A_ENV), "gw-b2") as g:
        await wait_until(lambda: g.gw.sync.synced_once, 5, what="step 2 synced")
    before_done = redis_server.cmd("HGET", "kgtest:keys", f"since:{b.kid}")
    await connect(b)
    # the forger: the order deleted, the retirement times from before step 3 put back
    redis_server.cmd("HDEL", "kgtest:keys", field)
    redis_server.cmd("HSET", "kgtest:keys", f"since:{b.kid}", before_done)
    # rotation 2 (B back to A): a step-1 instance is no step-2 one
    assert not await connect(b, a)
