"""A rollback past a newer version: an instance of this version restarts from a snapshot
file a newer killgate wrote (its kills, signed with the fleet's key, with a field this
version does not know), while the store holds that newer version's document. Found by
review revmerge36: the snapshot was refused whole as an unreadable (tampered) file, so the
rolled-back instance started holding no kill at all, counted tampering, and when the
operator then took README's way out (delete `<prefix>:state`), every instance re-seeded
the store from what it held, nothing: the fleet's kills silently lifted. Now such a file's
kills are kept (the ones this version reads: a field it does not know can only qualify a
kill, enforced without it the kill stops more traffic, never less), said loudly as a
newer version's (SNAPSHOT KILLS ONLY), not counted as tampering, and re-seeded into the
emptied store. Real redis-server, real gateways."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from tests.backends import echo_app
from tests.conftest import (
    STATE_KEY,
    RedisServer,
    running_gateway,
    two_versions,
    wait_until,
    write_config,
)
from tests.test_forgery import plant, stored_doc
from tests.test_killswitch import auth, kill, redis_state, status_of

pytestmark = pytest.mark.timeout(60)


def _as_newer(doc: dict[str, Any]) -> dict[str, Any]:
    """`doc` as a newer version might write it: a field of its kill flags and a new part
    this version does not know, and a new kind of kill (a scope it does not know: with a
    format past this version's, as the rule across versions has it)."""
    flags = {k: {**v, "until": "2026-12-07T00:00:00Z"} for k, v in doc["kills"].items()}
    flags["model:gpt-small"] = {**next(iter(doc["kills"].values())), "scope": "model",
                                "route": None, "version": None, "model": "gpt-small"}
    return {**doc, "kills": flags, "quarantines": {"iris": {"actor": "alice"}}, "format": 2}


def _reseal_snapshot(path: Path) -> None:
    """The snapshot file as a newer version writes it (same key, same deployment)."""
    from gateway.state.signing import Key, Keyring

    raw = path.read_bytes()
    body = json.loads(raw.partition(b"\n")[2])
    keys = Keyring(Key.of(STATE_KEY.encode()), context="snapshot\x00" + body["prefix"])
    path.write_bytes(keys.seal(b"snapshot", json.dumps(_as_newer(body)).encode()))


async def test_a_rolled_back_instance_keeps_the_kills_of_a_newer_versions_snapshot(
        tmp_path: Path, backends, session, redis_server: RedisServer) -> None:
    p = await backends(echo_app("v1"))
    cfg = write_config(tmp_path, two_versions(p, p, 100, 0),
                       state=redis_state(redis_server, tmp_path,
                                         extra="  start_timeout: 300ms\n"))
    snap = tmp_path / "snapshot-a.json"
    async with running_gateway(cfg) as g:
        await kill(session, g.admin, scope="route", route="iris")
        await wait_until(lambda: snap.exists() and b"route:iris" in snap.read_bytes(), 5,
                         what="the snapshot")
    # the newer version ran meanwhile: its document in the store, its snapshot on disk
    stored = stored_doc(redis_server)
    plant(redis_server, {**_as_newer(stored), "generation": stored["generation"] + 1})
    _reseal_snapshot(snap)
    async with running_gateway(cfg) as g:
        assert set(g.gw.holder.doc.kills) == {"route:iris"}, g.gw.holder.doc.kills
        assert await status_of(session, g.url) == (503, "killed")
        sync = g.gw.sync
        assert sync.tamper.counts == {}, sync.tamper.status()  # (no forgery: verified)
        async with session.get(f"{g.admin}/v1/status", headers=auth()) as r:
            st = await r.json()
        why = st["store"]["snapshot"]["kills_only"]
        assert "newer version of killgate" in why and "model:gpt-small" in why, why
        await wait_until(lambda: "newer version of killgate" in str(sync.last_error), 5,
                         what="the store's newer document judged")
        # README's way out of a rollback: the state key deleted, the store re-seeded from
        # what the instances hold: the kill is in it
        redis_server.cmd("DEL", "kgtest:state", "kgtest:gen")
        await wait_until(lambda: sync.connected, 10, what="the store re-seeded, synced again")
        assert "route:iris" in stored_doc(redis_server)["kills"]
        assert await status_of(session, g.url) == (503, "killed")


async def test_a_rolled_back_instance_keeps_a_newer_versions_latched_rollback(
        tmp_path: Path, backends, session, redis_server: RedisServer) -> None:
    """The newer version's snapshot holds a latched rollback (v2 rolled off after an
    incident, all of iris on v1) and an override that sends traffic to v2. Only the
    rollback is kept (found by review impleft8: every override was dropped, so after
    README's way out of a rollback, the store deleted and re-seeded from what the
    instances hold, the route was back on its file's weights: the rolled-off v2 served
    again); the weights override, which would send traffic to a version, is not."""
    p1, p2 = await backends(echo_app("v1")), await backends(echo_app("v2"))
    routes = two_versions(p1, p2, 50, 50) + two_versions(
        p1, p2, 50, 50, name="rose", prefix="/v2/models/rose")
    cfg = write_config(tmp_path, routes, state=redis_state(
        redis_server, tmp_path, extra="  start_timeout: 300ms\n"))
    snap = tmp_path / "snapshot-a.json"
    async with running_gateway(cfg) as g:
        for method, route, path, body in (
                ("POST", "iris", "rollback", {"to": "v1", "reason": "v2 bad"}),
                ("PUT", "rose", "weights", {"weights": {"v1": 0, "v2": 100}, "reason": "v2"})):
            async with session.request(method, f"{g.admin}/v1/routes/{route}/{path}",
                                       json=body, headers=auth("killgate:rollout")) as r:
                assert r.status == 200, await r.text()
        await kill(session, g.admin, scope="route", route="rose")  # (a kill: kept, as ever)
        await wait_until(lambda: snap.exists() and b"route:rose" in snap.read_bytes(), 5,
                         what="the snapshot")
    stored = stored_doc(redis_server)
    plant(redis_server, {**_as_newer(stored), "generation": stored["generation"] + 1})
    _reseal_snapshot(snap)
    async with running_gateway(cfg) as g:
        assert set(g.gw.holder.doc.overrides) == {"iris"}, g.gw.holder.doc.overrides
        redis_server.cmd("DEL", "kgtest:state", "kgtest:gen")  # (README's way out)
        await wait_until(lambda: g.gw.sync.connected, 10, what="the store re-seeded")
        assert set(stored_doc(redis_server)["overrides"]) == {"iris"}
        served = set()
        for _ in range(24):  # (at 50/50, v2 serves one of them but once in 2**24)
            async with session.get(g.url + "/v2/models/iris/infer") as r:
                served.add((await r.json())["version"])
        assert served == {"v1"}, served


def test_a_newer_versions_snapshot_under_another_key_keeps_its_kills(tmp_path: Path) -> None:
    """The same file signed with a key this instance does not hold (a rollback and a key
    change at once): an untrusted file, whose kills alone are taken, the ones this version
    reads (it was refused whole: no kill)."""
    from gateway.domain.statedoc import KillFlag, StateDoc
    from gateway.state.signing import Key, Keyring
    from gateway.state.snapshot import SnapshotFile

    path = tmp_path / "snap.json"
    flag = KillFlag("route", "iris", None, "alice", "INC-1", "2026-12-06T10:00:00.000Z", 3)
    theirs = SnapshotFile(path, Keyring(Key.of(b"another-state-key-0123456789-abcdefgh"),
                                        context="kgtest"))
    theirs._write(StateDoc(generation=3, kills={"route:iris": flag}))
    body = json.loads(path.read_bytes().partition(b"\n")[2])
    path.write_bytes(theirs.keys.seal(b"snapshot", json.dumps(_as_newer(body)).encode()))
    refused: list[tuple[object, ...]] = []
    ours = SnapshotFile(path, Keyring(Key.of(STATE_KEY.encode()), context="kgtest"),
                        lambda *a: refused.append(a))
    got = ours.read()
    assert got is not None and set(got.kills) == {"route:iris"}, got
    assert ours.kills_only is not None and refused, (ours.kills_only, refused)


def test_which_of_a_newer_versions_overrides_are_kept() -> None:
    """Pure: a latched rollback read whole, all traffic on its stable; not one with a field
    this version does not know, nor one sending traffic elsewhere, nor a promote or a
    weights override (they may send traffic to a version the file does not)."""
    from gateway.state.snapshotbody import newer_rollbacks

    def ov(kind: str, weights: dict[str, float], **more: Any) -> dict[str, Any]:
        return {"stable": "v1", "weights": weights, "actor": "alice", "reason": "r",
                "time": "2026-12-06T10:00:00.000Z", "kind": kind, **more}

    body = {"format": 2, "overrides": {
        "a": ov("rollback", {"v1": 100, "v2": 0}),
        "b": ov("auto_rollback", {"v1": 100.0}),
        "c": ov("rollback", {"v1": 100, "v2": 0}, mirror_to="v2"),  # (not understood)
        "d": ov("rollback", {"v1": 90, "v2": 10}),
        "e": ov("promote", {"v1": 100, "v2": 0}),
        "f": ov("weights", {"v1": 100, "v2": 0}),
        "g": ov("rollback", {"v1": 0, "v2": 0}),
        "h": "not an override"}}
    assert sorted(newer_rollbacks(json.dumps(body).encode())) == ["a", "b"]
    assert newer_rollbacks(b'{"overrides": []}') == {}
