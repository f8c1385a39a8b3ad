"""Idempotency records across a signing key rotation (impleft9 item 3: "records stored under
a retired key are used without the check the current key's get"). They are not: a record
under the previous key (steps 1 and 2, the key still held) is answered from only after the
same checks as one under the current key (its MAC, and its signed expiry: one put back
after it expired is refused); one under a key retired (step 3: not held) can be verified by
no one here and is never answered from: refused (counted `retired`), replaced by the claim,
and the retry runs the write. What they do not get is the heartbeats' "written after the
retirement" judgement (retiredkeys.after_retirement: tampering, not `retired`): one
written under the retired key now (`late`) is counted `retired` as a left-over is, for
an idempotency record carries no store stamp to judge it by (left alone: see the helper's
report; a pod still on the old key is named by its heartbeat, counted as tampering).
Real redis-server, a real gateway writing the fleet's document under the old key, bare
stores at each step of the rotation.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import pytest

from gateway.state.redis import RedisStore
from gateway.state.signing import Key
from tests.backends import echo_app
from tests.conftest import STATE_KEY, RedisServer, running_gateway, two_versions, write_config
from tests.staterig import store_on
from tests.test_killswitch import kill, redis_state

pytestmark = pytest.mark.timeout(40)

NEW = "n" * 64
ANSWER = {"fingerprint": "f", "holder": "h", "status": 200, "response": {"changed": True}}


async def test_idempotency_records_of_the_old_key_are_checked_as_the_current_keys(
        tmp_path: Path, backends, session, redis_server: RedisServer) -> None:
    p = await backends(echo_app("v1"))
    old_key, new_key = Key.of(STATE_KEY.encode()), Key.of(NEW.encode())
    (tmp_path / "s0").mkdir()
    cfg = write_config(tmp_path / "s0", two_versions(p, p, 100, 0),
                       state=redis_state(redis_server, tmp_path, "s0"))
    async with running_gateway(cfg, "gw-before") as g0:  # (the document: the old key's)
        await kill(session, g0.admin, scope="route", route="iris")

    got: list[tuple[str, str, str]] = []

    async def opened(current: Key, previous: Key | None = None) -> RedisStore:
        store = store_on(redis_server, "kgtest", current=current, previous=previous)
        store.on_unverified = (  # type: ignore[method-assign]
            lambda kind, why, which, cause="other": got.append((kind, cause or "", why)))
        await store.open()
        return store

    old = await opened(old_key)
    await old.idem_set("kept", ANSWER, 3600)
    old.clock = lambda: time.time() - 7200  # type: ignore[method-assign]
    await old.idem_set("put-back", ANSWER, 3600)  # (signed expired an hour ago, still there)
    old.clock = time.time  # type: ignore[method-assign]
    mine: dict[str, Any] = {"fingerprint": "f", "holder": "retry"}
    try:
        await (await opened(old_key, new_key)).close()  # step 1
        step2 = await opened(new_key, old_key)
        try:
            assert await step2.idem_claim("kept", mine, 15) == ANSWER  # (answered from)
            assert await step2.idem_claim("put-back", mine, 15) is None  # (refused)
            # (each verified with the previous key, said so; the second then refused for its
            # signed expiry, as one under the current key is)
            assert [w for k, _, w in got if k == "idempotency"] == [
                "", "", "a record past its signed expiry (put back after it expired)"], got
        finally:
            await step2.close()
        got.clear()
        step3 = await opened(new_key)
        try:
            assert step3.keys.retired == {old_key.kid}
            await old.idem_set("late", ANSWER, 3600)  # (a pod still on the old key, now)
            assert await step3.idem_claim("kept", mine, 15) is None  # (never answered from)
            assert await step3.idem_claim("late", mine, 15) is None
            assert [c for k, c, _ in got if k == "idempotency"] == ["retired", "retired"], got
            for key in ("kept", "late"):  # (the retry holds the key now: it runs the write)
                assert await step3.idem_claim(key, {**mine, "holder": "x"}, 15) == mine
        finally:
            await step3.close()
    finally:
        await old.close()
