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
from gateway.state.redis import RedisStore
from gateway.state.signing import Keyring
from tests.conftest import (
    RedisServer,
    running_gateway,
    wait_until,
)
from tests.rotationrig import A_ENV, B_ENV, rotation
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
    step1 = RedisStore(redis_server.url, "kgtest", 1.0, keys=Keyring(a, b, "kgtest"))
    await step1.open()
    await step1.close()
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
