"""A `serve --workers 2` group's reload made while the store does not answer (revreload): each
worker makes the change and keeps its audit waiting; the group is stopped before the store
answers, started again after: the change is recorded once, not once per worker (each worker
keeps the waiting changes in its own file beside the snapshot, control/reloadkept.py, and
each start takes the others' over and queues them again: one claim, one event). And a
change the group waited out while it ran is one event too. Real redis-server stopped and
started; a real `killgate serve --workers 2`."""

from __future__ import annotations

import asyncio
import signal
from pathlib import Path
from typing import Any

import pytest
from aiohttp import ClientSession

from gateway.configfile import load_config
from tests.backends import echo_app
from tests.conftest import RedisServer, free_port, wait_until, write_config
from tests.staterig import redis_state
from tests.test_kill_after_routing_reload import _route
from tests.test_killswitch import auth
from tests.test_reload_audit_unjoined import reload_events

pytestmark = pytest.mark.timeout(120)


async def test_a_groups_waiting_audit_is_one_event_through_a_restart(
        tmp_path: Path, backends: Any, redis_server: RedisServer, gateway_procs: Any) -> None:
    p1, p2 = await backends(echo_app("v1")), await backends(echo_app("v2"))
    ports = {"listen": f"127.0.0.1:{free_port()}", "admin": f"127.0.0.1:{free_port()}"}
    state = redis_state(redis_server, tmp_path, command_timeout="200ms")
    files = [write_config(tmp_path, _route("iris", {"v1": (p1, 100 - w), "v2": (p2, w)}),
                          state=state, name=f"{w}.yaml", **ports) for w in (0, 10, 20)]
    digests = [load_config(f).digest for f in files]
    cfg = tmp_path / "killgate.yaml"
    cfg.write_bytes(files[0].read_bytes())
    cfg.chmod(0o600)

    def kept() -> bool:  # (each worker's own file: `.reload-audits.w<i>`)
        return any(tmp_path.glob("snapshot-a.json.reload-audits*"))

    def events(to: str) -> list[dict[str, Any]]:
        return [e for e in reload_events(redis_server, "kgtest") if e["after"]["digest"] == to]

    group = gateway_procs(cfg, workers=2)
    await asyncio.to_thread(group.wait_ready, 60.0, 2)
    await wait_until(lambda: redis_server.cmd("HLEN", "kgtest:instances") == "2", 15,
                     what="both workers registered")
    # 1. waited out while the group runs
    redis_server.kill()
    cfg.write_bytes(files[1].read_bytes())
    group.signal(signal.SIGHUP)
    await wait_until(kept, 15, what="the change kept, its audit waiting")
    redis_server.start()
    await wait_until(lambda: events(digests[1]) and not kept(), 30, interval=0.1,
                     what="the first change recorded")
    # 2. waiting when the group stops
    redis_server.kill()
    cfg.write_bytes(files[2].read_bytes())
    group.signal(signal.SIGHUP)
    await wait_until(kept, 15, what="the second change kept, its audit waiting")
    assert await asyncio.to_thread(group.stop) == 0, group.output()
    redis_server.start()
    again = gateway_procs(cfg, workers=2)
    await asyncio.to_thread(again.wait_ready, 60.0, 2)
    await wait_until(lambda: events(digests[2]) and not kept(), 30, interval=0.1,
                     what="the second change recorded after the restart")
    done: set[str] = set()  # (workers whose queue is empty: their claims all ended)

    async def both_done() -> bool:
        async with ClientSession() as fresh, fresh.get(again.admin + "/v1/status",
                                                       headers=auth()) as r:
            body = await r.json()
        if body["config"]["digest"] == digests[2] and not body["config"]["audit_pending"]:
            done.add(body["instance"])
        return len(done) == 2

    await wait_until(both_done, 30, interval=0.05, what="both workers' audits to end")
    assert len(events(digests[1])) <= 1  # (the store came back empty: the first is gone)
    assert len(events(digests[2])) == 1, events(digests[2])
