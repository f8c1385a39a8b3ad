"""An instance whose pushes are cut while its reads of the store verify (PushesCut: a redis
ACL user whose channel access is removed while it runs) says so precisely: /v1/status
`store.pushes: "cut"`, killgate_state_pushes_cut 1 and killgate_state_store_connected 1
(the store answers), `killgate status` "PUSHES CUT: reading the store every 100 ms", never
UNREACHABLE. Its writes are answered as what they did (the commit's PUBLISH, refused by
the ACL, failed the script after the document was stored: a kill in force answered 503
audit_unavailable, "not applied"), and it still merges an emergency local kill its
journal holds (the store was read and verified). A store it cannot read at all is
UNREACHABLE again, the gauge 0. Before, the store was UNREACHABLE and the gauge 0
(KillgateStateStoreDisconnected sent the SRE to a healthy Redis), and a local kill waited
for `connected`, which an ACL without the channels never gives back. Real redis-server,
in-process gateways, the real CLI.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from gateway.control.drillfleet import store_refusal
from gateway.state.localkills import LocalEntry, LocalKills, journal_path
from gateway.state.signing import Key, Keyring
from tests.backends import echo_app
from tests.conftest import (
    STATE_KEY,
    RedisServer,
    admin_token,
    running_gateway,
    two_versions,
    wait_until,
    write_config,
)
from tests.staterig import redis_section
from tests.test_cli import acli
from tests.test_killswitch import redis_state

pytestmark = pytest.mark.timeout(120)


async def test_pushes_cut_is_said_not_unreachable_and_local_kills_still_merge(
        tmp_path: Path, backends: Any, redis_server: RedisServer) -> None:
    p1 = await backends(echo_app("v1"))
    routes = two_versions(p1, p1, 100, 0)
    redis_server.cmd("ACL", "SETUSER", "watcher", "on", ">watcher-pw", "~*", "&*", "+@all")
    url = redis_server.url.replace("redis://", "redis://watcher:watcher-pw@")
    snap_a = tmp_path / "snapshot-a.json"
    state_a = redis_section(url, "kgtest", snap_a, poll_interval="100ms",
                            heartbeat_interval="200ms", instance_lease="2s",
                            command_timeout="300ms", max_staleness="1s")
    cfg_a = write_config(tmp_path, routes, state=state_a, name="a.yaml")
    cfg_b = write_config(tmp_path, routes, state=redis_state(redis_server, tmp_path, "b"),
                         name="b.yaml")
    async with running_gateway(cfg_b, "b") as b, running_gateway(cfg_a, "a") as a:
        sync = a.gw.sync
        env = {"KILLGATE_ADMIN_URL": a.admin, "KILLGATE_TOKEN": admin_token("killgate:read")}
        assert sync.status()["pushes"] == "live"
        redis_server.cmd("ACL", "SETUSER", "watcher", "resetchannels")  # (a's pushes: cut)
        await wait_until(lambda: sync.status()["pushes"] == "cut", 10,
                         what="a's pushes said cut")
        st = sync.status()
        assert st["connected"] is False and "could not subscribe" in st["last_error"], st
        await wait_until(lambda: a.gw.metrics.get("killgate_state_pushes_cut") == 1, 5,
                         what="the pushes-cut gauge")
        assert a.gw.metrics.get("killgate_state_store_connected") == 1
        res = await acli("status", env=env)
        assert res.returncode == 0, res.stderr
        first = res.stdout.splitlines()[0]
        assert "reachable, PUSHES CUT: reading the store every 100 ms" in first, res.stdout
        assert "UNREACHABLE" not in res.stdout, res.stdout
        # a's writes are answered as what they did: the commit's PUBLISH, refused by the
        # ACL, no longer fails the script after it stored the document (a kill stored
        # was answered 503 state_store_unavailable, "not in force")
        res = await acli("kill", "--route", "iris", "--version", "v1", "--reason", "r",
                         "--wait", "0s", env={**env, "KILLGATE_TOKEN": admin_token(
                             "killgate:kill killgate:read")})
        # (exit 4: `--wait 0s` ran out before b acked, as it may)
        assert res.returncode in (0, 4) and "killed version:iris:v1" in res.stdout, res
        await wait_until(lambda: "version:iris:v1" in b.gw.sync.holder.doc.kills, 10,
                         what="b to enforce the kill made through a")

        # an emergency local kill in a's journal (as a sibling worker of its group writes
        # it): merged into the store though a's pushes stay cut, so b enforces it
        keys = Keyring(Key.of(STATE_KEY.encode()), context="kgtest")
        LocalKills(journal_path(snap_a), keys).add(LocalEntry.new(
            "version", "iris", "v2", "alice", "v2 answers garbage", "2026-12-06T00:00:00Z",
            "a", sync.holder.doc.generation, True))
        await wait_until(lambda: "version:iris:v2" in b.gw.sync.holder.doc.kills, 15,
                         what="the local kill merged into the store, its pushes cut")
        await wait_until(lambda: not sync.status()["local_kills"]["kills"], 15,
                         what="the merged kill dropped from a's journal")
        assert sync.status()["pushes"] == "cut"

        # a store it cannot read: UNREACHABLE, the gauge 0
        redis_server.cmd("ACL", "SETUSER", "watcher", "-@all")
        await wait_until(lambda: sync.status()["pushes"] is None, 10,
                         what="a's store unreadable")
        await wait_until(lambda: a.gw.metrics.get("killgate_state_store_connected") == 0, 5,
                         what="the connected gauge 0")
        assert a.gw.metrics.get("killgate_state_pushes_cut") == 0
        res = await acli("status", env=env)
        assert "UNREACHABLE" in res.stdout.splitlines()[0], res.stdout
        redis_server.cmd("ACL", "SETUSER", "watcher", "+@all", "&*")
        await wait_until(lambda: sync.status()["pushes"] == "live", 15, what="live again")


def test_a_drill_through_an_instance_whose_pushes_are_cut_is_refused_in_those_words() -> None:
    """Not "cannot reach the state store" (it reads it): its subscription is named."""
    status = {"instance": "a", "store": {"backend": "redis", "connected": False,
                                         "pushes": "cut",
                                         "last_error": "could not subscribe: NOPERM"}}
    why = store_refusal(status) or ""
    assert "subscription to the store's pushes is refused or cut" in why, why
    assert "cannot reach" not in why and "NOPERM" in why, why
    status["store"]["pushes"] = None
    assert "cannot reach the state store" in (store_refusal(status) or "")
