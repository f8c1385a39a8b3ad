"""A failover that the sentinels make while this instance still reaches the old master.

The sentinels lose the master (a partition between them and it, not between it and the
gateway) and promote the replica. They cannot tell the old master to step down, so it
still says it is a master, answers every read and takes every write: an instance connected
to it polls "successfully", heartbeats, and never reconnects. Kills written on the new master
never reach it, its staleness alarm never fires, and once its heartbeat lease runs out on
the new master the receipts stop counting it: a kill reads as applied everywhere while this
instance serves the killed route. The instance must follow what the sentinels name.

The partition, with real processes only: what the sentinels send and a gateway never does
(PING, INFO, REPLICAOF) is denied on the master by an ACL change, so its PING answers stop
counting for them (NOPERM) and their order to step down fails, while the gateway's commands
and the replication link go on as before.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from aiohttp import ClientSession

from tests.backends import echo_app
from tests.conftest import running_gateway, two_versions, wait_until, wait_until_sync, write_config
from tests.redisha import SENTINEL_PERIODS, STATE_KEY_ENV, RedisNode, redis_state_yaml
from tests.test_killswitch import auth, status_of

pytestmark = pytest.mark.timeout(120)

SERVICE = "kgpart"


class Cluster:
    def __init__(self, tmp: Path) -> None:
        self.master = RedisNode(tmp, "master")
        self.replica = RedisNode(tmp, "replica")
        self.sentinels = [RedisNode(tmp, f"sentinel{i}", sentinel=True) for i in range(3)]

    @property
    def url(self) -> str:
        return ("redis+sentinel://" + ",".join(f"127.0.0.1:{s.port}" for s in self.sentinels)
                + f"/{SERVICE}/0")

    def named(self) -> set[int]:
        out = set()
        for s in self.sentinels:
            lines = s.cmd("SENTINEL", "get-master-addr-by-name", SERVICE)
            out.add(int([ln for ln in lines if ln.isdigit()][-1]))
        return out

    def start(self) -> None:
        self.master.start()
        self.replica.start(f"replicaof 127.0.0.1 {self.master.port}\n")
        wait_until_sync(lambda: self.replica.info("replication", "master_link_status") == "up",
                        10, what="the replica to sync")
        for s in self.sentinels:
            s.start(f"sentinel monitor {SERVICE} 127.0.0.1 {self.master.port} 2\n"
                    f"sentinel down-after-milliseconds {SERVICE} 500\n"
                    f"sentinel failover-timeout {SERVICE} 3000\n")
            s.cmd("SENTINEL", "DEBUG", *SENTINEL_PERIODS)

        def aware() -> bool:
            return all("slaves=1,sentinels=3" in s.info("sentinel", "master0")
                       for s in self.sentinels)

        wait_until_sync(aware, 20, 0.05, "the sentinels to see the replica and each other")

    def cut_sentinels_off_the_master(self) -> None:
        assert self.master.cmd("ACL", "SETUSER", "default", "-ping", "-info", "-replicaof",
                               "-slaveof")[0] == "+OK"

    def master_role(self) -> str:
        return self.master.cmd("ROLE")[2]

    def stop(self) -> None:
        for n in [*self.sentinels, self.replica, self.master]:
            n.stop()


@pytest.fixture
def cluster(tmp_path: Path) -> Iterator[Cluster]:
    c = Cluster(tmp_path)
    try:
        c.start()
        yield c
    finally:
        c.stop()


async def test_an_instance_follows_the_sentinels_off_a_master_they_lost(
        tmp_path: Path, backends, cluster: Cluster, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(STATE_KEY_ENV, "k" * 64)
    p = await backends(echo_app("v1"))
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()

    def cfg(name: str) -> Path:
        return write_config(tmp_path / name, two_versions(p, p, 100, 0),
                            state=redis_state_yaml(cluster.url, str(tmp_path / name / "snap.json"),
                                                   prefix="kgpart"))

    async with running_gateway(cfg("a"), "gw-a") as a, ClientSession() as s:
        assert (await status_of(s, a.url))[0] == 200
        cluster.cut_sentinels_off_the_master()
        await wait_until(lambda: cluster.named() == {cluster.replica.port}, 30, 0.1,
                         "the sentinels to promote the replica")
        assert cluster.master_role() == "master"  # never told

        async with running_gateway(cfg("b"), "gw-b") as b:  # on the new master
            async with s.post(b.admin + "/v1/kill?wait=1s", headers=auth(),
                              json={"scope": "route", "route": "iris",
                                    "reason": "partition"}) as r:
                assert r.status == 200, await r.text()
            assert (await status_of(s, b.url))[0] == 503

            async def a_enforces() -> bool:
                return (await status_of(s, a.url))[0] == 503

            await wait_until(a_enforces, 20, 0.1, "the instance on the old master to "
                                                  "follow the sentinels and enforce the kill")


def test_sentinels_cut_off_leave_the_master_answering(cluster: Cluster) -> None:
    """The rig: the cut reaches the sentinels only."""
    cluster.cut_sentinels_off_the_master()
    assert cluster.master.cmd("SET", "x", "1")[0] == "+OK"
    wait_until_sync(lambda: cluster.named() == {cluster.replica.port}, 30, 0.1, "a failover")
    assert cluster.master_role() == "master"
    assert cluster.master.cmd("SET", "x", "2")[0] == "+OK"
