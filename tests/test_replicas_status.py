"""With `state.min_replicas: 1`, a primary that lost its replica (a Sentinel failover: the
promoted one has none until the old master rejoins) answers every kill 503 not_durable; an
SRE must see it before a kill fails (found by revnewuser10 in a real failover, where
`killgate status` said "reachable" only). Each instance asks the primary for its replicas
in sync with its heartbeat (state/redisreplicas.py: INFO replication, ROLE for a user
without INFO): /v1/status `store.replicas`, `killgate_state_replicas`, `killgate status`'s
store line NOT DURABLE, cleared when the replica is back; a redis user that may run
neither is "unknown", logged once, never a failed heartbeat. Real primary and replica,
in-process gateways, the real CLI.
"""

from __future__ import annotations

import logging
import re
from pathlib import Path
from typing import Any

import pytest

from gateway.cli.statusstore import replicas_line, store_reach
from gateway.state.redisreplicas import from_info, from_role
from tests.backends import echo_app
from tests.conftest import (
    RedisServer,
    admin_token,
    running_gateway,
    two_versions,
    wait_until,
    write_config,
)
from tests.staterig import redis_section
from tests.test_cli import acli
from tests.test_replicas import _info, attach_replica

pytestmark = pytest.mark.timeout(120)

NOT_DURABLE = ("reachable, NOT DURABLE: the primary has 0 of 1 replicas (min_replicas): kills "
               "are in force but answered 503 not_durable; bring a replica back")


def _section(url: str, prefix: str, tmp_path: Path) -> str:
    return redis_section(url, prefix, tmp_path / f"{prefix}.json", poll_interval="100ms",
                         heartbeat_interval="200ms", command_timeout="1s",
                         min_replicas="1", replica_timeout="600ms")


def _gauges(g: Any) -> dict[str, float]:
    """killgate_state_*replicas as a scrape shows them (absent: not in the dict)."""
    out = {}
    for line in g.gw.metrics.render().splitlines():
        name, _, value = line.partition(" ")
        if name in ("killgate_state_replicas", "killgate_state_min_replicas"):
            out[name] = float(value)
    return out


async def _status_text(env: dict[str, str]) -> str:
    res = await acli("status", env=env)
    assert res.returncode == 0, res.stderr
    return res.stdout


async def test_a_primary_without_its_replica_is_said_not_durable_until_it_is_back(
        tmp_path: Path, backends: Any, redis_server: RedisServer, second_redis: RedisServer,
        caplog: pytest.LogCaptureFixture) -> None:
    primary, replica = redis_server, second_redis
    await attach_replica(primary, replica)
    p = await backends(echo_app("v1"))
    cfg = write_config(tmp_path, two_versions(p, p, 100, 0),
                       state=_section(primary.url, "kgdur", tmp_path))
    caplog.set_level(logging.INFO, "killgate.state")
    async with running_gateway(cfg) as g:
        sync = g.gw.sync
        env = {"KILLGATE_ADMIN_URL": g.admin, "KILLGATE_TOKEN": admin_token("killgate:read")}
        await wait_until(lambda: sync.status()["replicas"] == {"connected": 1, "required": 1},
                         10, what="the replica counted")
        assert _gauges(g) == {"killgate_state_replicas": 1, "killgate_state_min_replicas": 1}
        out = await _status_text(env)
        assert "NOT DURABLE" not in out and "store redis reachable," in out, out

        # the replica leaves (what a failover leaves the promoted primary with)
        replica.cmd("REPLICAOF", "NO", "ONE")
        await wait_until(lambda: _info(primary, "connected_slaves") == "0", 10,
                         what="the replica to detach")
        await wait_until(lambda: sync.status()["replicas"] == {"connected": 0, "required": 1},
                         5, what="the lost replica said (within a few heartbeats)")
        assert sync.status()["replicas_unknown"] is None
        assert _gauges(g)["killgate_state_replicas"] == 0
        out = await _status_text(env)
        assert NOT_DURABLE in out.splitlines()[0], out
        said = [r for r in caplog.records if r.getMessage() == "state_store_not_durable"]
        assert len(said) == 1, said

        # back: cleared
        await attach_replica(primary, replica)
        await wait_until(lambda: sync.status()["replicas"] == {"connected": 1, "required": 1},
                         10, what="the replica counted again")
        assert _gauges(g)["killgate_state_replicas"] == 1
        out = await _status_text(env)
        assert "NOT DURABLE" not in out, out
        assert [r for r in caplog.records if r.getMessage() == "state_store_durable"]

        # a replica stopped outright: the same
        replica.kill()
        await wait_until(lambda: sync.status()["replicas"] == {"connected": 0, "required": 1},
                         10, what="the stopped replica said")
        assert NOT_DURABLE in (await _status_text(env)).splitlines()[0]

        # the primary gone too: no count (3 heartbeats on), not a stale 0 that pages as
        # "not durable" (KillgateStateStoreDisconnected says the outage)
        primary.kill()
        await wait_until(lambda: "last asked" in (sync.status()["replicas_unknown"] or ""),
                         10, what="the count unknown once the store is gone")
        assert sync.status()["replicas"] is None
        assert _gauges(g) == {"killgate_state_min_replicas": 1}


async def test_a_redis_user_without_info_nor_role_says_unknown_once(
        tmp_path: Path, backends: Any, redis_server: RedisServer, second_redis: RedisServer,
        caplog: pytest.LogCaptureFixture) -> None:
    primary, replica = redis_server, second_redis
    await attach_replica(primary, replica)
    # (a user that may run ROLE but not INFO is counted by ROLE)
    primary.cmd("ACL", "SETUSER", "norole", "on", ">norole-pw", "~*", "&*", "+@all", "-info")
    primary.cmd("ACL", "SETUSER", "blind", "on", ">blind-pw", "~*", "&*", "+@all", "-info",
                "-role")
    p = await backends(echo_app("v1"))
    url = primary.url.replace("redis://", "redis://norole:norole-pw@")
    cfg = write_config(tmp_path, two_versions(p, p, 100, 0),
                       state=_section(url, "kgrole", tmp_path), name="role.yaml")
    async with running_gateway(cfg) as g:
        await wait_until(lambda: g.gw.sync.status()["replicas"] == {"connected": 1,
                                                                    "required": 1},
                         10, what="the replica counted by ROLE")

    caplog.set_level(logging.INFO, "killgate.state")
    url = primary.url.replace("redis://", "redis://blind:blind-pw@")
    cfg = write_config(tmp_path, two_versions(p, p, 100, 0),
                       state=_section(url, "kgblind", tmp_path), name="blind.yaml")
    async with running_gateway(cfg) as g:
        sync = g.gw.sync
        env = {"KILLGATE_ADMIN_URL": g.admin, "KILLGATE_TOKEN": admin_token("killgate:read")}
        await wait_until(lambda: sync.status()["replicas_unknown"] is not None
                         and "NOPERM" in sync.status()["replicas_unknown"], 10,
                         what="the replicas said unknown")
        beats = sync.peers.last_beat
        await wait_until(lambda: sync.peers.last_beat > beats + 1.0, 5,
                         what="more heartbeats (5 or so)")
        st = sync.status()
        assert st["replicas"] is None and st["connected"] is True, st
        assert "neither INFO nor ROLE" in st["replicas_unknown"], st
        assert st["last_error"] is None, st  # (no heartbeat failed)
        assert _gauges(g) == {"killgate_state_min_replicas": 1}  # (no count: no alert)
        out = await _status_text(env)
        assert "store redis reachable," in out and "NOT DURABLE" not in out, out
        assert "STORE REPLICAS UNKNOWN (state.min_replicas)" in out, out
        said = [r for r in caplog.records if r.getMessage() == "state_store_replicas_unknown"]
        assert len(said) == 1, said  # (once, not per heartbeat)
        # nor asked at each heartbeat: redis counted one refusal of each command (ACL LOG
        # counts a refusal repeated within 60 s on one entry)
        refused = dict((obj, int(n)) for n, obj in re.findall(
            r"count\r\n:(\d+)\r\n(?:(?!count\r\n).)*?object\r\n\$\d+\r\n(\w+)",
            primary.cmd("ACL", "LOG"), re.S))
        assert refused == {"info": 1, "role": 1}, refused


def test_the_replies_are_read_as_redis_gives_them() -> None:
    """INFO replication: online and acked within 10 s counts; a replica mid-sync or silent
    does not; a node that is a replica is not a count. ROLE: the replicas listed."""
    info = (b"# Replication\r\nrole:master\r\nconnected_slaves:3\r\n"
            b"slave0:ip=10.0.0.2,port=6379,state=online,offset=9,lag=0\r\n"
            b"slave1:ip=10.0.0.3,port=6379,state=wait_bgsave,offset=0,lag=0\r\n"
            b"slave2:ip=10.0.0.4,port=6379,state=online,offset=9,lag=31\r\n"
            b"master_repl_offset:9\r\n")
    assert from_info(info).connected == 1
    assert from_info(b"role:master\r\nconnected_slaves:0\r\n").connected == 0
    got = from_info(b"role:slave\r\nmaster_host:10.0.0.1\r\n")
    assert got.connected is None and "role:slave" in (got.why or "")
    assert from_info(b"OK").connected is None
    assert from_role([b"master", 9, [[b"10.0.0.2", b"6379", b"9"]]]).connected == 1
    assert from_role([b"slave", b"10.0.0.1", 6379, b"connected", 9]).connected is None
    assert from_role(b"master").connected is None


def test_the_store_line_says_not_durable_only_on_a_count_below_min_replicas() -> None:
    base = {"backend": "redis", "connected": True}
    assert store_reach({**base, "replicas": {"connected": 1, "required": 1}}) == "reachable"
    assert store_reach({**base, "replicas": None}) == "reachable"
    assert store_reach({**base, "replicas": {"connected": 1, "required": 2}}) == \
        NOT_DURABLE.replace("0 of 1", "1 of 2")
    # (a document of another shape: no words made up from it)
    assert store_reach({**base, "replicas": {"connected": "0", "required": 1}}) == "reachable"
    unknown = {**base, "replicas": None, "replicas_unknown": "NOPERM ..."}
    assert "STORE REPLICAS UNKNOWN (state.min_replicas): NOPERM ..." in (
        replicas_line(unknown) or "")
    assert replicas_line({**unknown, "connected": False}) is None  # (UNREACHABLE says it)
    assert replicas_line(base) is None
