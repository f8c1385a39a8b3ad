"""After a signing key rotation completes (step 3: the old key removed), what the fleet
genuinely wrote under the old key and is still in the store is refused as ever, but counted
as `retired`, apart from tampering (found by review revfalse2, a stop-38 residual: every
instance counted such values as `unknown_key_id` in store.verification.unverified_total and
killgate_state_unverified_total, which the shipped alert KillgateStateUnverified pages on,
and `killgate status` said UNVERIFIED ... treat it as TAMPERING: a routine rotation paged
someone). Left-overs of a rolling restart: the counts (`<prefix>:stats:*`) of pods replaced
while the fleet signed with the old key, and the heartbeat of one that crashed.

How an instance knows a key id was the fleet's: an instance holding a previous key (steps 1
and 2) records it in `<prefix>:keys`, under its own key id and signed with its own key, so
that only a holder of the key the fleet signs with after the rotation can name a retired one
(a forger can name a retired key id in a value, as any: it is refused, and counted as
retired). A value naming a key id nobody recorded, or with a wrong signature, still counts
as tampering.

Real redis-server, in-process gateways (the code of `killgate serve`), a bare RedisStore
signing with the old key for the left-overs.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from gateway.cli.statuswarn import store_warnings
from gateway.control.traffic import STATS_KEY
from gateway.state.redis import RedisStore
from gateway.state.signing import Key, Keyring
from tests.backends import echo_app
from tests.conftest import (
    STATE_KEY,
    RedisServer,
    running_gateway,
    two_versions,
    wait_until,
    write_config,
)
from tests.rotationrig import keys_config
from tests.staterig import connected, store_on
from tests.test_killswitch import kill, redis_state

pytestmark = pytest.mark.timeout(40)

NEW = "n" * 64


async def test_values_of_a_retired_key_are_counted_apart_from_tampering(
        tmp_path: Path, backends, session, redis_server: RedisServer,
        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("KG_NEW_KEY", NEW)
    p = await backends(echo_app("v1"))

    def cfg(name: str, signing: str) -> Path:
        return keys_config(tmp_path, redis_server, p, name, signing)

    # (the fleet's document, signed with the old key: what step 2 finds)
    async with running_gateway(cfg("s0", "signing_key_env: KILLGATE_TEST_STATE_KEY"),
                               "gw-before") as g0:
        await wait_until(lambda: g0.gw.sync.synced_once, 5, what="the old key's document")
        assert await g0.gw.sync.store._call("EXISTS", "kgtest:state") == 1
    old = store_on(redis_server, "kgtest")
    await old.open()
    try:
        for route in (STATS_KEY, "iris"):  # (its counts: not the left-overs counted)
            await old._call("HDEL", f"kgtest:stats:{route}", "gw-before")
        # before the rotation: a pod replaced since left its counts; one crashed
        await old.put_stats(STATS_KEY, "gone-pod", {"instance": "gone-pod", "t": 1.0})
        await old.put_stats("iris", "gone-pod", {"instance": "gone-pod", "t": 1.0})
        await old.heartbeat("crashed-pod", 0, "sha256:x")
    finally:
        await old.close()
    # (step 1: writes the key order)
    await connected(redis_server, Key.of(STATE_KEY.encode()), Key.of(NEW.encode()))
    step2 = cfg("s2", "signing_key_env: KG_NEW_KEY\n"
                      "  previous_signing_key_env: KILLGATE_TEST_STATE_KEY")
    async with running_gateway(step2, "gw-step2") as g2:
        await kill(session, g2.admin, scope="route", route="iris")  # (re-signs the state)
        assert g2.gw.sync.status()["verification"]["unverified_total"] == 0
    step3 = cfg("s3", "signing_key_env: KG_NEW_KEY")
    async with running_gateway(step3, "gw-step3") as g3:
        sync = g3.gw.sync
        await wait_until(lambda: sync.synced_once, 5, what="step 3 synced")
        store = sync.store
        for route in (STATS_KEY, "iris"):  # (the console's traffic view; canary analysis)
            assert all(b.get("instance") != "gone-pod" for b in await store.get_stats(route))
        assert "crashed-pod" not in await sync.peers.members()
        ver = sync.status()["verification"]
        assert ver["unverified_total"] == 0, ver
        assert ver["retired_key"] == {"stats": 2, "heartbeat": 1}, ver
        assert ver["retired_key_ids"] == [Key.of(STATE_KEY.encode()).kid], ver
        assert sync.key_unconfirmed() is None
        lines = store_warnings({"store": sync.status()})
        assert not any(w.startswith("UNVERIFIED") for w in lines), lines
        line = next(w for w in lines if w.startswith("RETIRED KEY"))
        assert "3 value(s)" in line and "rotation" in line, line
        # tampering still counts as tampering: a wrong signature under the new key, and a
        # key id nobody recorded
        forged = await store._call("HGET", f"kgtest:stats:{STATS_KEY}", "gw-step3")
        if forged is None:
            await store.put_stats(STATS_KEY, "gw-step3", {"instance": "gw-step3", "t": 2.0})
            forged = await store._call("HGET", f"kgtest:stats:{STATS_KEY}", "gw-step3")
        head, _, body = forged.partition(b"\n")
        magic, kid, mac = head.split(b" ")
        await store._call("HSET", f"kgtest:stats:{STATS_KEY}", "x",
                          b" ".join([magic, kid, b"0" * len(mac)]) + b"\n" + body)
        await store._call("HSET", f"kgtest:stats:{STATS_KEY}", "y",
                          b" ".join([magic, b"deadbeef", mac]) + b"\n" + body)
        await store.get_stats(STATS_KEY)
        ver = sync.status()["verification"]
        assert ver["unverified_total"] == 2, ver
        assert ver["by_cause"] == {"bad_signature": 1, "unknown_key_id": 1}, ver
        # a live value signed with the retired key (an instance still signing with it, a
        # replay, or someone holding it) is no left-over: an ack pushed now is tampering
        late = store_on(redis_server, "kgtest")
        await late.open()
        try:
            await late.heartbeat("late-pod", 0, "sha256:x")
            await wait_until(lambda: sync.status()["verification"]["unverified"].get("ack"),
                             5, what="the retired key's ack refused as tampering")
        finally:
            await late.close()
        last = sync.status()["verification"]["last_by_cause"]["unknown_key_id"]
        assert last["kind"] == "ack" and "retired" in last["problem"], last


async def test_step_one_retires_no_key_and_step_two_retires_the_old_one(
        tmp_path: Path, backends, session, redis_server: RedisServer,
        monkeypatch: pytest.MonkeyPatch) -> None:
    """Step 1 (the new key as the previous one) recorded the NEW key as retired from the
    old one (found by review): an instance still on the old key alone then took every
    value of the new key, live documents too, for a left-over of a key the fleet retired,
    counted apart from tampering. A previous key is recorded only when the fleet's
    document is signed with it (step 2)."""
    monkeypatch.setenv("KG_NEW_KEY", NEW)
    p = await backends(echo_app("v1"))
    old_key, new_key = Key.of(STATE_KEY.encode()), Key.of(NEW.encode())
    (tmp_path / "s0").mkdir()
    cfg = write_config(tmp_path / "s0", two_versions(p, p, 100, 0),
                       state=redis_state(redis_server, tmp_path, "s0"))
    async with running_gateway(cfg, "gw-before") as g0:  # (the document: the old key's)
        await kill(session, g0.admin, scope="route", route="iris")

    async def connect(current: Key, previous: Key | None = None) -> set[str]:
        return (await connected(redis_server, current, previous)).keys.retired

    await connect(old_key, new_key)  # step 1
    assert await connect(old_key) == set()  # (an instance not yet at step 1)
    await connect(new_key, old_key)  # step 2: the document is still the old key's
    assert await connect(new_key) == {old_key.kid}  # step 3
    assert await connect(old_key) == set()


async def test_a_step_one_instance_after_the_re_sign_records_nothing(
        tmp_path: Path, backends, session, redis_server: RedisServer,
        monkeypatch: pytest.MonkeyPatch) -> None:
    """An instance at step 1 (the old key, the new one as previous) connecting after a
    step-2 instance re-signed the document finds it signed with its previous key, as a
    step-2 instance does: it recorded the NEW key as retired from the old one (found by
    review improt2), read by an instance on the old key alone (a rollback past step 1),
    which then counted every live value of the new key as a left-over of the rotation, not
    tampering. The key order written at step 1 tells the two steps apart."""
    monkeypatch.setenv("KG_NEW_KEY", NEW)
    p = await backends(echo_app("v1"))
    old_key, new_key = Key.of(STATE_KEY.encode()), Key.of(NEW.encode())

    def cfg(name: str, signing: str) -> Path:
        return keys_config(tmp_path, redis_server, p, name, signing)

    async def connect(current: Key, previous: Key | None = None) -> set[str]:
        return (await connected(redis_server, current, previous)).keys.retired

    async with running_gateway(cfg("s0", "signing_key_env: KILLGATE_TEST_STATE_KEY"),
                               "gw-before") as g0:
        await kill(session, g0.admin, scope="route", route="iris")
    await connect(old_key, new_key)  # step 1 (writes the key order)
    step2 = cfg("s2", "signing_key_env: KG_NEW_KEY\n"
                      "  previous_signing_key_env: KILLGATE_TEST_STATE_KEY")
    async with running_gateway(step2, "gw-step2") as g2:
        await kill(session, g2.admin, scope="version", route="iris", version="v2")  # (re-signs it)
    assert await connect(new_key) == {old_key.kid}  # (step 2 retired the old key)
    await connect(old_key, new_key)  # a step-1 instance late: the document is the new key's
    assert await connect(old_key) == set()
    assert redis_server.cmd("HEXISTS", "kgtest:keys", old_key.kid) == "0"
    # (without the order, as on a store that lost it, step 2 records nothing either)
    redis_server.cmd("DEL", "kgtest:keys")
    assert await connect(new_key, old_key) == set()
    assert await connect(new_key) == set()


async def test_a_retired_keys_heartbeat_written_long_after_the_retirement_is_tampering(
        tmp_path: Path, backends, session, redis_server: RedisServer) -> None:
    """A value naming a retired key id was counted as `retired` (a warning) whenever it was
    written (found by review improt2): a forger with write access to Redis, or a pod rolled
    back to the old key after step 3, had its heartbeats taken for left-overs of the
    rotation. The fleet now records when it retired a key (the store's clock, moved on by
    each step-2 instance that starts); a heartbeat the store stamped more than
    AFTER_RETIREMENT after that counts as tampering. One dated before it still counts as
    retired (the stamp is not signed with a key we hold)."""
    import json
    import time

    from gateway.state.retiredkeys import AFTER_RETIREMENT

    p = await backends(echo_app("v1"))
    old_key, new_key = Key.of(STATE_KEY.encode()), Key.of(NEW.encode())
    (tmp_path / "s0").mkdir()
    cfg = write_config(tmp_path / "s0", two_versions(p, p, 100, 0),
                       state=redis_state(redis_server, tmp_path, "s0"))
    async with running_gateway(cfg, "gw-before") as g0:  # (the document: the old key's)
        await kill(session, g0.admin, scope="route", route="iris")

    async def opened(current: Key, previous: Key | None = None) -> RedisStore:
        store = store_on(redis_server, "kgtest", current=current, previous=previous)
        await store.open()
        return store

    old = await opened(old_key)
    await old.heartbeat("gone-pod", 0, "sha256:x")  # (a pod stopped before step 2)
    await old.put_stats("iris", "gone-pod", {"instance": "gone-pod", "t": 1.0})
    for step in ((old_key, new_key), (new_key, old_key)):  # steps 1 and 2
        await (await opened(*step)).close()
    since = json.loads(redis_server.cmd("HGET", "kgtest:keys", f"since:{new_key.kid}")
                       .split("\n", 1)[1])
    assert abs(since[old_key.kid] - time.time()) < 5, since  # (step 2 recorded when)
    # (the retirement dated back, so that both heartbeats are still live by their leases)
    now = time.time()
    redis_server.cmd("HSET", "kgtest:keys", f"since:{new_key.kid}", Keyring(
        new_key, None, "kgtest").seal(f"retiredsince:{new_key.kid}".encode(), json.dumps(
            {old_key.kid: now - AFTER_RETIREMENT - 20}).encode()).decode())
    gone = redis_server.cmd("HGET", "kgtest:instances", "gone-pod")
    redis_server.cmd("HSET", "kgtest:instances", "gone-pod",
                     f"{int((now - 40) * 1000)} {gone.split(' ', 1)[1]}")
    await old.heartbeat("late-pod", 0, "sha256:x")  # (still signing with the old key, now)
    step3 = await opened(new_key)
    got: list[tuple[str, str, str]] = []
    step3.on_unverified = (  # type: ignore[method-assign]
        lambda kind, why, which, cause="other": got.append((kind, cause, why)))
    try:
        assert step3.keys.retired == {old_key.kid}
        await step3.fleet(5.0)
        causes = sorted((cause, "after the fleet retired it" in why)
                        for kind, cause, why in got if kind == "heartbeat")
        assert causes == [("retired", False), ("unknown_key_id", True)], got
        # which instance, and KEY UNCONFIRMED's clock (as its pushed ack): a live instance
        # on the old key, not a left-over (review impleft8: neither was said)
        assert any("'late-pod'" in why for _, cause, why in got if cause == "unknown_key_id")
        assert step3.other_key_at is not None
        # counts carry no store stamp: a left-over is one that never changes; written again
        # under the retired key, they are no left-over
        assert await step3.get_stats("iris") == []
        await step3.get_stats("iris")
        assert [c for k, c, _ in got if k == "stats"] == ["retired"], got
        await old.put_stats("iris", "gone-pod", {"instance": "gone-pod", "t": 2.0})
        await step3.get_stats("iris")
        stats = [(c, "written again" in w) for k, c, w in got if k == "stats"]
        assert stats == [("retired", False), ("unknown_key_id", True)], got
    finally:
        await step3.close()
        await old.close()


async def test_a_key_order_deleted_after_the_re_sign_is_written_back_the_right_way(
        tmp_path: Path, backends, session, redis_server: RedisServer,
        monkeypatch: pytest.MonkeyPatch) -> None:
    """Found by review revmerge37: a forger with write access deleted `order:<id>:<id>`
    after a step-2 instance re-signed the document; the next step-2 instance to start took
    the document signed with its current key for step 1 and wrote the order REVERSED
    (signed, so the whole fleet trusted it): no later step-2 instance moved the retirement
    time on (a rolling restart's last step-1 heartbeats counted as tampering), and a step-1
    instance recorded the NEW key as retired from the old one (the bug 779c446 fixed).
    The step-2 instance's own signed list of retired key ids proves the order."""
    import json

    monkeypatch.setenv("KG_NEW_KEY", NEW)
    p = await backends(echo_app("v1"))
    old_key, new_key = Key.of(STATE_KEY.encode()), Key.of(NEW.encode())
    (tmp_path / "s2").mkdir()
    step2 = write_config(tmp_path / "s2", two_versions(p, p, 100, 0), state=redis_state(
        redis_server, tmp_path, "s2").replace(
            "signing_key_env: KILLGATE_TEST_STATE_KEY",
            "signing_key_env: KG_NEW_KEY\n  previous_signing_key_env: KILLGATE_TEST_STATE_KEY"))

    async def connect(current: Key, previous: Key | None = None) -> set[str]:
        return (await connected(redis_server, current, previous)).keys.retired

    def since() -> float:
        raw = redis_server.cmd("HGET", "kgtest:keys", f"since:{new_key.kid}")
        return float(json.loads(raw.split("\n", 1)[1])[old_key.kid])

    field = "order:" + ":".join(sorted((old_key.kid, new_key.kid)))
    (tmp_path / "s0").mkdir()
    async with running_gateway(write_config(tmp_path / "s0", two_versions(p, p, 100, 0),
                                            state=redis_state(redis_server, tmp_path, "s0")),
                               "gw-before") as g0:
        await kill(session, g0.admin, scope="route", route="iris")
    await connect(old_key, new_key)  # step 1 (writes the key order)
    async with running_gateway(step2, "gw-step2") as g2:  # (records the retirement)
        await kill(session, g2.admin, scope="version", route="iris", version="v2")  # (re-signs)
    # (the retirement dated back: the step-2 pods that started before, minutes ago)
    first = since() - 200
    redis_server.cmd("HSET", "kgtest:keys", f"since:{new_key.kid}", Keyring(
        new_key, None, "kgtest").seal(f"retiredsince:{new_key.kid}".encode(), json.dumps(
            {old_key.kid: first}).encode()).decode())
    redis_server.cmd("HDEL", "kgtest:keys", field)  # (the forger)
    await connect(new_key, old_key)  # a step-2 pod of the rolling restart, starting now
    order = json.loads(redis_server.cmd("HGET", "kgtest:keys", field).split("\n", 1)[1])
    assert order == {"from": old_key.kid, "to": new_key.kid}, order
    assert since() >= first + 200  # (moved on by the step-2 start, as every one)
    # (the same for one written over with something that does not verify: counted once
    # per reader as tampering, and written back)
    redis_server.cmd("HSET", "kgtest:keys", field, "garbage")
    await connect(new_key, old_key)
    order = json.loads(redis_server.cmd("HGET", "kgtest:keys", field).split("\n", 1)[1])
    assert order == {"from": old_key.kid, "to": new_key.kid}, order
    await connect(old_key, new_key)  # a step-1 pod still running, reconnecting
    assert redis_server.cmd("HEXISTS", "kgtest:keys", old_key.kid) == "0"
    assert await connect(old_key) == set()  # (a rollback past step 1: nothing retired)
    assert await connect(new_key) == {old_key.kid}  # (step 3)


async def test_step_three_before_the_re_sign_says_so_not_that_the_key_is_wrong(
        tmp_path: Path, backends, session, redis_server: RedisServer,
        monkeypatch: pytest.MonkeyPatch) -> None:
    """Found by review revmerge37: a rotation whose step 2 saw no write (a quiet fleet)
    left the fleet's document signed with the old key; a step-3 pod (no snapshot) could
    not verify it and stayed unready, telling the operator to check and fix its
    state.signing_key, which was the fleet's: the way out is a write through a step-2
    instance, or step 2 again. The refusal is still counted (a state document of a
    retired key may be an old one put back)."""
    monkeypatch.setenv("KG_NEW_KEY", NEW)
    p = await backends(echo_app("v1"))
    old_key, new_key = Key.of(STATE_KEY.encode()), Key.of(NEW.encode())

    def cfg(name: str, signing: str) -> Path:
        return keys_config(tmp_path, redis_server, p, name, signing)

    async with running_gateway(cfg("s0", "signing_key_env: KILLGATE_TEST_STATE_KEY"),
                               "gw-before") as g0:
        await kill(session, g0.admin, scope="route", route="iris")
    for step in ((old_key, new_key), (new_key, old_key)):  # steps 1 and 2, no write
        await connected(redis_server, *step)
    async with running_gateway(cfg("s3", "signing_key_env: KG_NEW_KEY"), "gw-step3") as g3:
        sync = g3.gw.sync
        await wait_until(lambda: sync.unverifiable, 5, what="the old key's document refused")
        said = str(sync.unverifiable)
        assert "was not re-signed" in said and "Make a write" in said, said
        assert "Fix it" not in said and "the fleet's key?" not in said, said
        await wait_until(lambda: "was not re-signed" in str(sync.last_error), 5,
                         what="the sync loop's error says it too")
        assert "the fleet's?" not in str(sync.last_error), sync.last_error
        async with session.get(g3.admin + "/readyz") as r:
            assert r.status == 503
        assert sync.status()["verification"]["by_cause"].get("unknown_key_id"), \
            sync.status()["verification"]
        # the way out it names: a write through a step-2 instance re-signs the document
        step2 = cfg("s2", "signing_key_env: KG_NEW_KEY\n"
                          "  previous_signing_key_env: KILLGATE_TEST_STATE_KEY")
        async with running_gateway(step2, "gw-step2") as g2:
            await kill(session, g2.admin, scope="version", route="iris", version="v2")
        await wait_until(lambda: sync.connected and sync.unverifiable is None, 10,
                         what="step 3 verifies the re-signed document")


async def test_only_a_step_two_start_moves_the_retirement_time_not_a_reconnect(
        tmp_path: Path, backends, session, redis_server: RedisServer) -> None:
    """Found by review revmerge37: every reconnect of a step-2 instance moved since:<id>
    on, so whoever can kill client connections (CLIENT KILL) kept it new while any
    instance was left at step 2, and values of the retired key written at any time
    counted only as `retired`. A reconnect is no start."""
    import json

    p = await backends(echo_app("v1"))
    old_key, new_key = Key.of(STATE_KEY.encode()), Key.of(NEW.encode())
    (tmp_path / "s0").mkdir()
    async with running_gateway(write_config(tmp_path / "s0", two_versions(p, p, 100, 0),
                                            state=redis_state(redis_server, tmp_path, "s0")),
                               "gw-before") as g0:
        await kill(session, g0.admin, scope="route", route="iris")

    def opened(current: Key, previous: Key | None = None) -> RedisStore:
        return store_on(redis_server, "kgtest", current=current, previous=previous)

    def backdate() -> float:
        at = 1_000_000.0
        redis_server.cmd("HSET", "kgtest:keys", f"since:{new_key.kid}", Keyring(
            new_key, None, "kgtest").seal(f"retiredsince:{new_key.kid}".encode(), json.dumps(
                {old_key.kid: at}).encode()).decode())
        return at

    def since() -> float:
        raw = redis_server.cmd("HGET", "kgtest:keys", f"since:{new_key.kid}")
        return float(json.loads(raw.split("\n", 1)[1])[old_key.kid])

    step1 = opened(old_key, new_key)
    await step1.open()
    await step1.close()
    step2 = opened(new_key, old_key)
    await step2.open()  # (its start: moves it on)
    try:
        at = backdate()
        await step2.reset()
        await step2.open()  # (a reconnect)
        assert since() == at
    finally:
        await step2.close()
    other = opened(new_key, old_key)  # (another step-2 instance starting)
    await other.open()
    await other.close()
    assert since() > at
