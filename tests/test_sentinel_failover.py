"""Redis Sentinel failover, for real (issue 15 item 4; RELIABILITY rows 18-19).

A master, a replica and three sentinels (quorum 2, down-after 500 ms), all real redis-server
processes on loopback; two `killgate serve` processes with a `redis+sentinel://` URL and
`min_replicas: 1`, under load. The master is SIGKILLed while kills are being written. What
must hold:
- kills in force before the failover stay in force on every instance throughout (every
  answer of the load is checked);
- a kill written during the failover is refused with a clear error (503 with a named type)
  or acknowledged (200, which with `min_replicas: 1` means a replica held it): never
  acknowledged and then lost; retried until acknowledged, each is applied exactly once (at
  most one `kill` audit event for it; a kill the store lost comes back by re-seeding);
- the instances reconnect to the promoted replica without a restart (same processes, a
  later kill acknowledged by both);
- the audit chain verifies afterwards (`killgate audit verify`).
"""

from __future__ import annotations

import asyncio
import json
import os
import textwrap
import time
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp import ClientSession

from tests import cli_fork
from tests.backends import echo_app
from tests.conftest import ROOT, free_port, wait_until, write_config
from tests.loadgen import BackgroundLoad
from tests.redisha import SentinelCluster, redis_state_yaml, state_key_env
from tests.test_killswitch import auth, token

TARGETS = [f"k{i}" for i in range(8)]
CLEAR_ERRORS = {"not_durable", "state_store_unavailable", "outcome_unknown"}


def _routes(port: int) -> str:
    out = textwrap.dedent(f"""\
        - name: iris
          match: {{path_prefix: /v2/models/iris}}
          stable: v1
          versions:
            - {{name: v1, url: "http://127.0.0.1:{port}", weight: 50}}
            - {{name: v2, url: "http://127.0.0.1:{port}", weight: 50}}
        - name: ghost
          match: {{path_prefix: /v2/models/ghost}}
          stable: v1
          versions:
            - {{name: v1, url: "http://127.0.0.1:{port}", weight: 100}}
        """)
    for t in TARGETS:
        out += (f"- name: {t}\n  match: {{path_prefix: /v2/models/{t}}}\n  stable: v1\n"
                f"  versions:\n    - {{name: v1, url: \"http://127.0.0.1:{port}\", weight: 100}}\n")
    return out


class Watch(BackgroundLoad):
    """Requests to both instances without pause: `ghost` must answer killed, `iris` only
    from v1 (v2 is killed). Every other answer is a violation."""

    def __init__(self, urls: list[str]) -> None:
        super().__init__()
        self.urls = urls
        self.answers = 0
        self.violations: list[str] = []

    async def _run(self) -> None:
        async with ClientSession(timeout=aiohttp.ClientTimeout(total=5)) as s:
            async def worker(url: str, path: str) -> None:
                while not self._stop.is_set():
                    try:
                        async with s.get(url + path) as r:
                            await r.read()
                            got = (r.status, r.headers.get("x-killgate-decision"),
                                   r.headers.get("x-killgate-version"))
                    except (aiohttp.ClientError, TimeoutError) as exc:
                        got = (-1, repr(exc), None)
                    self.answers += 1
                    ok = (got[:2] == (503, "killed") if "ghost" in path
                          else got[0] == 200 and got[2] == "v1")
                    if not ok:
                        self.violations.append(f"{url}{path}: {got}")
                    await asyncio.sleep(0.002)

            await asyncio.gather(*(worker(u, p) for u in self.urls
                                   for p in ("/v2/models/ghost/x", "/v2/models/iris/x")))


async def _post(s: ClientSession, admin: str, path: str, wait: str = "1s",
                **body: Any) -> tuple[int, dict[str, Any]]:
    body.setdefault("reason", "failover test")
    try:
        async with s.post(f"{admin}{path}?wait={wait}", json=body, headers=auth(),
                          timeout=aiohttp.ClientTimeout(total=10)) as r:
            return r.status, await r.json()
    except (aiohttp.ClientError, TimeoutError) as exc:
        return -1, {"error": {"type": "client", "message": repr(exc)}}


async def _status(s: ClientSession, admin: str) -> dict[str, Any]:
    async with s.get(admin + "/v1/status", headers=auth()) as r:
        assert r.status == 200
        return await r.json()


def _kills(st: dict[str, Any]) -> set[str]:
    out = set()
    for k in st["kills"]:
        if k["scope"] == "route":
            out.add(f"route:{k['route']}")
        elif k["scope"] == "version":
            out.add(f"version:{k['route']}:{k['version']}")
        else:
            out.add("global")
    return out


@pytest.mark.timeout(180)
async def test_sentinel_failover_under_load(tmp_path: Path, backends, gateway_procs) -> None:
    cluster = SentinelCluster(tmp_path, down_after_ms=500, failover_timeout_ms=2000)
    cluster.start()
    try:
        await _scenario(tmp_path, cluster, backends, gateway_procs)
    finally:
        cluster.stop()


async def _scenario(tmp_path: Path, cluster: SentinelCluster, backends, gateway_procs) -> None:
    port = await backends(echo_app("v1"))
    env = state_key_env()
    gws = []
    for name in ("a", "b"):
        state = redis_state_yaml(cluster.url, f"{tmp_path}/snap-{name}.json", "kgfail",
                                 min_replicas="1", replica_timeout="500ms")
        cfg = write_config(tmp_path, _routes(port), state=state,
                           listen=f"127.0.0.1:{free_port()}", admin=f"127.0.0.1:{free_port()}",
                           name=f"{name}.yaml")
        gws.append(gateway_procs(cfg, env=env))
    for g in gws:
        await asyncio.to_thread(g.wait_ready)
    pids = [g.proc.pid for g in gws]
    a, b = gws
    async with ClientSession() as s:
        # kills in force before the failover (acknowledged: a replica holds them)
        for body in ({"scope": "route", "route": "ghost"},
                     {"scope": "version", "route": "iris", "version": "v2"}):
            code, data = await _post(s, a.admin, "/v1/kill", wait="3s", **body)
            assert code == 200 and data["applied"]["acked"] == 2, data
        watch = Watch([g.url for g in gws])
        watch.start()
        await wait_until(lambda: watch.answers > 200, 10, what="load on both instances")

        # the failover, while kills are being written to either instance
        old_master = cluster.master_port()
        assert old_master == cluster.master.port
        outcomes: dict[str, list[tuple[int, dict[str, Any]]]] = {t: [] for t in TARGETS}

        async def writer() -> None:
            for i, t in enumerate(TARGETS):
                g = gws[i % 2]
                outcomes[t].append(await _post(s, g.admin, "/v1/kill", scope="route", route=t))
                await asyncio.sleep(0.4)  # pacing: the writes span the whole failover

        writing = asyncio.ensure_future(writer())
        await asyncio.sleep(0.3)
        t_kill = time.monotonic()
        cluster.master.kill()
        new_master = await asyncio.to_thread(cluster.wait_failover, old_master)
        t_promoted = time.monotonic()
        assert new_master == cluster.replica.port
        await writing

        # every answer during the failover was a 200 or a clear, named 503
        for t, res in outcomes.items():
            code, data = res[0]
            assert code == 200 or (code == 503 and data["error"]["type"] in CLEAR_ERRORS
                                   and len(data["error"]["message"]) > 20), (t, code, data)
        acked = [t for t in TARGETS if outcomes[t][0][0] == 200]

        # the old master comes back (empty, no persistence); the sentinels make it a
        # replica of the new one, so writes can be confirmed again
        cluster.master.start()
        await wait_until(lambda: cluster.replica.info("replication", "connected_slaves") == "1",
                         20, 0.05, "the old master to rejoin as a replica")

        # both instances reconnected by themselves (same processes)
        async def reconnected() -> bool:
            sts = [await _status(s, g.admin) for g in gws]
            return all(st["store"]["connected"] for st in sts)

        await wait_until(reconnected, 20, 0.05, "both instances to reconnect")
        assert [g.proc.pid for g in gws] == pids and all(g.proc.poll() is None for g in gws)

        # acknowledged kills were never lost: in force on both instances, in the new master
        for g in gws:
            st = await _status(s, g.admin)
            assert {f"route:{t}" for t in acked} <= _kills(st), (acked, st["kills"])
        doc = cluster.replica.cmd("GET", "kgfail:state")[1]
        for t in acked:
            assert f"route:{t}" in doc

        # refused kills, retried until acknowledged (idempotent: a kill already in force
        # only waits for a replica to confirm it)
        for i, t in enumerate(TARGETS):
            if t in acked:
                continue
            async def done(t: str = t, g: Any = gws[i % 2]) -> bool:
                code, data = await _post(s, g.admin, "/v1/kill", scope="route", route=t)
                outcomes[t].append((code, data))
                assert code == 200 or (code == 503 and data["error"]["type"] in CLEAR_ERRORS), data
                return code == 200

            await wait_until(done, 20, 0.2, f"the kill of {t} to be acknowledged")

        await watch.stop()
        assert watch.violations == [], watch.violations[:10]
        assert watch.answers > 500

        # a kill after the failover is acknowledged by both instances
        code, data = await _post(s, b.admin, "/v1/kill", wait="5s", scope="route",
                                 route="iris")
        assert code == 200 and data["applied"]["acked"] == 2, data
        code, data = await _post(s, a.admin, "/v1/unkill", wait="5s", scope="route",
                                 route="iris")
        assert code == 200 and data["applied"]["acked"] == 2, data

        # nobody forged anything: no instance refused a store value (a false tamper alarm
        # pages an SRE for a failover)
        for g in gws:
            ver = (await _status(s, g.admin))["store"]["verification"]
            assert ver["unverified_total"] == 0, ver["last_by_cause"]

        # every target killed on both instances, each applied exactly once
        for g in gws:
            assert {f"route:{t}" for t in TARGETS} <= _kills(await _status(s, g.admin))
        async with s.get(a.admin + "/v1/audit?limit=1000", headers=auth()) as r:
            events = (await r.json())["events"]
        reseeded: set[str] = set()
        for e in events:
            if e["action"] == "state.reseed":
                reseeded |= set(e["after"]["kills"])
        for t in TARGETS:
            n = sum(1 for e in events if e["action"] == "kill"
                    and e["target"].get("route") == t and e["target"].get("scope") == "route")
            assert n == 1 or (n == 0 and f"route:{t}" in reseeded), (t, n, outcomes[t])

    res = await asyncio.to_thread(  # (forked: tests/cli_fork.py)
        cli_fork.run, ["audit", "verify"], {
            **os.environ, "KILLGATE_ADMIN_URL": b.admin, "KILLGATE_TOKEN": token("killgate:read")},
        str(ROOT), 30)
    assert res.returncode == 0 and "audit chain ok" in res.stdout, res.stdout + res.stderr
    print(json.dumps({"failover_s": round(t_promoted - t_kill, 2), "acked_during": acked,
                      "first_answers": {t: o[0][1].get("error", {}).get("type", "ok")
                                        for t, o in outcomes.items()}}))
    for g in gws:
        assert g.stop() == 0, g.output()[-3000:]
