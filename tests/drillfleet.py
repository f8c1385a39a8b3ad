"""The drill tests' fleet: three `killgate serve` processes sharing a real redis-server,
in front of two model servers in their own processes (tests/proc_backend.py).

`fleet` (`fleet_fixture`): the module-scoped fixture (routes iris, its drill route
iris-drill by header, and broken, on a dead port); `token`: an admin token (the drill and
read scopes by default); `fleet_state`/`settled_state`: what every instance enforces (a
test's `before` once they agree on one generation); `audit`/`every_change_is_audited`: the
trail against the state. A test module takes the fleet (its own, module-scoped) by
importing `fleet_fixture`.
"""

from __future__ import annotations

import asyncio
import json
import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import suppress
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from aiohttp import ClientSession

from tests.conftest import (
    ROOT,
    SECRET,
    STATE_KEY,
    STATE_KEY_ENV,
    GatewayProcess,
    RedisServer,
    admin_token,
    die_with_parent,
    free_port,
    wait_until_sync,
    write_config,
)

__all__ = ["Fleet", "audit", "every_change_is_audited", "fleet_fixture", "fleet_state",
           "settled_state", "token"]


def token(scope: str = "killgate:drill killgate:read", sub: str = "dana") -> str:
    return admin_token(scope, sub, 3600)


@dataclass
class Fleet:
    redis: RedisServer
    gateways: list[GatewayProcess]
    tmp: Path

    @property
    def admin(self) -> str:
        return self.gateways[0].admin

    @property
    def urls(self) -> list[str]:
        return [g.url for g in self.gateways]


def _routes(p1: int, p2: int) -> str:
    versions = (f'  versions:\n    - {{name: v1, url: "http://127.0.0.1:{p1}", weight: 50}}\n'
                f'    - {{name: v2, url: "http://127.0.0.1:{p2}", weight: 50}}\n')
    dead = free_port()
    return ("- name: iris\n  match: {path_prefix: /v2/models/iris}\n  stable: v1\n"
            "  allow_pin: true\n" + versions
            + "- name: iris-drill\n  match: {path_prefix: /v2/models/iris, header: "
              "{x-killgate-drill-route: '1'}}\n  drill_for: iris\n  stable: v1\n"
              "  allow_pin: true\n" + versions
            + "- name: broken\n  match: {path_prefix: /broken}\n  stable: v1\n  versions:\n"
              f'    - {{name: v1, url: "http://127.0.0.1:{dead}", weight: 100}}\n')


@pytest.fixture(scope="module", name="fleet")
def fleet_fixture(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Fleet]:
    tmp = tmp_path_factory.mktemp("drills")
    env = {"KILLGATE_TEST_SECRET": SECRET, STATE_KEY_ENV: STATE_KEY}
    redis = RedisServer(tmp)
    redis.start()
    ports = [free_port(), free_port()]
    backends = [subprocess.Popen([sys.executable, "-m", "tests.proc_backend", str(p), v],
                                 cwd=str(ROOT), preexec_fn=die_with_parent,
                                 stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
                for p, v in zip(ports, ("v1", "v2"), strict=True)]
    gateways: list[GatewayProcess] = []
    try:
        # (the model servers listening before the gateways start: a gateway forked ready in
        # 0.4 s met a backend process still importing, its first requests' connects were
        # refused and the version was ejected for 30 s: every drill of the module then
        # stopped with "requests already fail over before the injection")
        for p in ports:
            wait_until_sync(lambda p=p: _listening(p), 15, what=f"the backend on {p}")
        for name in "abc":
            state = (f"state:\n  backend: redis\n  url: {redis.url}\n  prefix: kgdrill\n"
                     f"  snapshot_path: {tmp}/snap-{name}.json\n  poll_interval: 100ms\n"
                     "  heartbeat_interval: 200ms\n  instance_lease: 2s\n"
                     f"  command_timeout: 300ms\n  signing_key_env: {STATE_KEY_ENV}\n")
            os.environ.setdefault("KILLGATE_TEST_SECRET", SECRET)  # (for `check` in here)
            os.environ.setdefault(STATE_KEY_ENV, STATE_KEY)
            cfg = write_config(tmp, _routes(*ports), state=state, name=f"{name}.yaml",
                               listen=f"127.0.0.1:{free_port()}",
                               admin=f"127.0.0.1:{free_port()}")
            gateways.append(GatewayProcess(cfg, env=env))
        for g in gateways:
            g.wait_ready()
        f = Fleet(redis, gateways, tmp)
        wait_until_sync(lambda: len(_published(f)) == 3, 15,
                        what="three instances publishing their addresses")
        yield f
    finally:
        for g in gateways:
            with suppress(Exception):
                g.stop()
        for b in backends:
            b.kill()
            b.wait(5)
        redis.kill()


def _listening(port: int) -> bool:
    try:
        socket.create_connection(("127.0.0.1", port), timeout=1).close()
        return True
    except OSError:
        return False


def _published(f: Fleet) -> list[str]:
    import urllib.request

    req = urllib.request.Request(f.admin + "/v1/status",
                                 headers={"Authorization": f"Bearer {token()}"})
    with urllib.request.urlopen(req, timeout=2) as r:
        return [i["data"] for i in json.loads(r.read())["instances"].values() if "data" in i]


async def _statuses(s: ClientSession, f: Fleet) -> list[dict[str, Any]]:
    out = []
    for g in f.gateways:
        async with s.get(g.admin + "/v1/status",
                         headers={"Authorization": f"Bearer {token()}"}) as r:
            out.append(await r.json())
    return out


def _enforced(st: dict[str, Any]) -> dict[str, Any]:
    return {
        "kills": sorted(k["scope"] + str(k["route"]) + str(k["version"]) for k in st["kills"]),
        "routes": {n: {"stable": r["stable"], "latched": r["latched"],
                       "override": r["override"],
                       "weights": {v: x["effective_weight"] for v, x in r["versions"].items()}}
                   for n, r in st["routes"].items()}}


async def fleet_state(s: ClientSession, f: Fleet) -> list[dict[str, Any]]:
    """What every instance enforces: kills, and per route its latch, stable and weights."""
    return [_enforced(st) for st in await _statuses(s, f)]


async def settled_state(s: ClientSession, f: Fleet, within: float = 30.0) -> list[dict[str, Any]]:
    """`fleet_state` once every instance holds one generation: a test's `before`. The
    fleet is the module's; an instance still catching up from an earlier test (a store
    pause it reconnects after) would otherwise make that test's `before` a mix of two
    generations, and its own end, compared against it, fail too (CI: one failure in
    test_drill_gameday cascaded so into the next test)."""
    deadline = time.monotonic() + within
    while True:
        sts = await _statuses(s, f)
        gens = [st["generation"] for st in sts]
        if len(set(gens)) == 1:
            return [_enforced(st) for st in sts]
        if time.monotonic() > deadline:
            pytest.fail(f"the module's fleet never agreed on one generation in {within:g} s "
                        f"(each instance's: {gens}): an instance is stuck behind the store, "
                        "likely since an earlier test in the module")
        await asyncio.sleep(0.05)


async def audit(s: ClientSession, f: Fleet, limit: int = 200) -> list[dict[str, Any]]:
    async with s.get(f.admin + f"/v1/audit?limit={limit}",
                     headers={"Authorization": f"Bearer {token()}"}) as r:
        return list((await r.json())["events"])


async def every_change_is_audited(s: ClientSession, f: Fleet) -> None:
    """Nothing is killed or latched without an audit event that says who did it, and why
    (for a drill's change: its id)."""
    events = await audit(s, f, 1000)
    async with s.get(f.admin + "/v1/status",
                     headers={"Authorization": f"Bearer {token()}"}) as r:
        st = await r.json()
    for k in st["kills"]:
        assert any(e["action"] == "kill" and (e.get("after") or {}).get("time") == k["time"]
                   for e in events), k
    for name, r in st["routes"].items():
        if r["latched"]:
            assert any(e["target"].get("route") == name and e["action"] in
                       ("rollback", "promote", "weights") for e in events), name
