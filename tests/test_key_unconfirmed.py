"""An instance whose key is not the fleet's, having seeded a fresh store first, says so
(impwrongkey item 2).

X starts with another key and no snapshot on an empty (flushed) store: it seeds it, with
nothing in the store to tell it its key is wrong and nothing to vouch for it. The fleet's
F1 and F2 (their snapshots) re-seed over its document, which they cannot verify, and
heartbeat. What X hears are their heartbeats on the acks channel, refused with its key:
`/v1/status` now says `store.key_unconfirmed` (`killgate status`: KEY UNCONFIRMED) while
refused heartbeats come and none of another instance verifies; F1 and F2, each hearing the
other's verify, say nothing though X's are refused. A signal, not a readiness rule
(keyconfirm.py: two instances on two keys would each be "unconfirmed"). Without it X's
status named nothing (its refused acks only counted in store.verification).

Real redis-server, in-process gateways (the same code as `killgate serve`).
"""

from __future__ import annotations

from pathlib import Path

import pytest

from gateway.cli.statuswarn import store_warnings
from tests.backends import echo_app
from tests.conftest import RedisServer, running_gateway, two_versions, wait_until, write_config
from tests.test_killswitch import kill, redis_state

pytestmark = pytest.mark.timeout(30)


async def test_an_instance_whose_key_no_other_heartbeat_confirms_says_so(
        tmp_path: Path, backends, session, redis_server: RedisServer,
        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("KG_X_KEY", "x" * 64)
    p = await backends(echo_app("v1"))

    def cfg(name: str, env: str = "KILLGATE_TEST_STATE_KEY") -> Path:
        (tmp_path / name).mkdir()
        state = redis_state(redis_server, tmp_path, name)
        return write_config(tmp_path / name, two_versions(p, p, 100, 0),
                            state=state.replace("KILLGATE_TEST_STATE_KEY", env))

    cf1, cf2, cx = cfg("f1"), cfg("f2"), cfg("x", "KG_X_KEY")
    async with running_gateway(cf1, "gw-f1") as f1, running_gateway(cf2, "gw-f2") as f2:
        await kill(session, f1.admin, scope="route", route="iris")
        snaps = [tmp_path / f"snapshot-{n}.json" for n in ("f1", "f2")]
        await wait_until(lambda: all(s.exists() and b"route:iris" in s.read_bytes()
                                     for s in snaps), 5, what="the fleet's snapshots")
    redis_server.cmd("FLUSHALL")
    async with running_gateway(cx, "gw-x") as x:
        await wait_until(lambda: x.gw.sync.synced_once, 5, what="X seeding the empty store")
        assert x.gw.sync.key_unconfirmed() is None  # (alone: nothing says otherwise)
        async with running_gateway(cf1, "gw-f1") as f1, running_gateway(cf2, "gw-f2") as f2:
            why = await wait_until(lambda: x.gw.sync.status()["key_unconfirmed"], 5,
                                   what="X's key said unconfirmed")
            assert "signing_key_env" in why, why
            line = next(w for w in store_warnings({"store": {**x.gw.sync.status(),
                                                             "unverifiable": None}})
                        if w.startswith("KEY UNCONFIRMED"))
            assert "fleet's" in line, line
            # the fleet's instances hear each other: confirmed, though X's heartbeats are
            # refused all the while
            await wait_until(lambda: f1.gw.sync.peers.heard.get("gw-f2")
                             and f2.gw.sync.peers.heard.get("gw-f1"), 5, what="F1, F2 heard")
            await wait_until(lambda: all(f.gw.sync.tamper.at.get("ack/unknown_key_id")
                                         for f in (f1, f2)), 5, what="X's acks refused")
            for f in (f1, f2):
                assert f.gw.sync.status()["key_unconfirmed"] is None


async def test_a_wrong_key_workers_group_is_not_confirmed_by_its_own_workers(
        tmp_path: Path, backends, session, redis_server: RedisServer,
        monkeypatch: pytest.MonkeyPatch) -> None:
    """X as a `serve --workers 2` group (its workers' fleet names share the group's tag,
    serving.instance_id): each worker verifies its sibling's heartbeats (one key, whatever
    it is), which confirmed X's key to itself: a wrong-key pod with --workers said nothing.
    Found by review (revmerge33): key_unconfirmed is None for both workers without the fix."""
    monkeypatch.setenv("KG_X_KEY", "x" * 64)
    p = await backends(echo_app("v1"))

    def cfg(name: str, env: str = "KILLGATE_TEST_STATE_KEY") -> Path:
        (tmp_path / name).mkdir()
        state = redis_state(redis_server, tmp_path, name)
        return write_config(tmp_path / name, two_versions(p, p, 100, 0),
                            state=state.replace("KILLGATE_TEST_STATE_KEY", env))

    cf1, cf2, cx = cfg("f1"), cfg("f2"), cfg("x", "KG_X_KEY")
    async with running_gateway(cf1, "gw-f1") as f1:
        await kill(session, f1.admin, scope="route", route="iris")
        snap = tmp_path / "snapshot-f1.json"
        await wait_until(lambda: snap.exists() and b"route:iris" in snap.read_bytes(), 5,
                         what="the fleet's snapshot")
    redis_server.cmd("FLUSHALL")
    w0, w1 = "xhost-4101-a1b2c3-w0", "xhost-4102-a1b2c3-w1"
    async with running_gateway(cx, w0) as x0, running_gateway(cx, w1) as x1:
        await wait_until(lambda: x0.gw.sync.peers.heard.get(w1)
                         and x1.gw.sync.peers.heard.get(w0), 5, what="X's workers heard")
        async with running_gateway(cf1, "gw-f1"), running_gateway(cf2, "gw-f2"):
            for x in (x0, x1):
                why = await wait_until(lambda x=x: x.gw.sync.status()["key_unconfirmed"], 5,
                                       what="each X worker's key said unconfirmed")
                assert "signing_key_env" in why, why


def test_workers_of_one_group_carry_its_tag_and_are_told_from_other_instances(
        monkeypatch: pytest.MonkeyPatch) -> None:
    from gateway.serving import instance_id
    from gateway.state.keyconfirm import sibling_workers
    from gateway.workerlink import GROUP_ENV

    monkeypatch.setenv(GROUP_ENV, "a1b2c3")
    w = instance_id(1)
    assert w.endswith("-a1b2c3-w1"), w
    assert "a1b2c3" not in instance_id(None)  # (one alone: a tag of its own)
    assert sibling_workers(w, "otherhost-1-a1b2c3-w0") is False  # (another host)
    host = w.rsplit("-", 3)[0]
    assert sibling_workers(w, f"{host}-77-a1b2c3-w0")
    assert not sibling_workers(w, f"{host}-77-ffffff-w0")  # (another group on the host)
    assert not sibling_workers(f"{host}-1-a1b2c3", f"{host}-2-a1b2c3")  # (no workers)
    monkeypatch.setenv(GROUP_ENV, "not hex")
    assert "not hex" not in instance_id(1)
