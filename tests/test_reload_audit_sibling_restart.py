"""A `serve --workers 2` worker restarted by the group while its sibling runs, both holding
a config change whose audit waits for the store (revleft9, control/reloadkept.py): the start
takes over the LIVE sibling's file (renamed, its changes in the restarted worker's own file,
then removed). The sibling holds its changes in memory only until its list next changes:
the hostile question is whether one is then on disk nowhere. A second change while the
store is still out, then the whole group SIGKILLed: the next start records each change's
`config.reload` event at least once and at most twice, and leaves no file behind.

Real redis-server killed and started; a real `killgate serve --workers 2`; a worker and
then the group SIGKILLed."""

from __future__ import annotations

import asyncio
import os
import signal
from pathlib import Path
from typing import Any

import pytest

from gateway.configfile import load_config
from tests.backends import echo_app
from tests.conftest import RedisServer, free_port, wait_until, write_config
from tests.staterig import redis_state
from tests.test_kill_after_routing_reload import _route
from tests.test_reload_audit_unjoined import reload_events

pytestmark = pytest.mark.timeout(150)


async def test_a_live_siblings_taken_file_loses_no_change_through_a_group_sigkill(
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
    own = [tmp_path / f"snapshot-a.json.reload-audits.w{i}" for i in range(2)]

    def kept() -> list[str]:
        return sorted(p.name for p in tmp_path.glob("snapshot-a.json.reload-audits*"))

    def events(to: str) -> list[dict[str, Any]]:
        return [e for e in reload_events(redis_server, "kgtest") if e["after"]["digest"] == to]

    group = gateway_procs(cfg, workers=2)
    await asyncio.to_thread(group.wait_ready, 60.0, 2)
    await wait_until(lambda: redis_server.cmd("HLEN", "kgtest:instances") == "2", 15,
                     what="both workers registered")
    # 1. the store out; a change each worker keeps on disk
    redis_server.kill()
    cfg.write_bytes(files[1].read_bytes())
    group.signal(signal.SIGHUP)
    await wait_until(lambda: all(p.exists() for p in own), 15, what="both workers' files")
    # 2. one worker SIGKILLed: the group restarts it, its start takes over its sibling's
    first = group.listening()
    assert len(first) == 2, first
    victim = max(first)
    os.kill(victim, signal.SIGKILL)
    await wait_until(lambda: len(group.listening()) == 3, 60, what="the worker restarted")
    await wait_until(lambda: sum(p.exists() for p in own) == 1 and not any(
        ".adopt." in n for n in kept()), 15, what="the sibling's file taken over")
    # 3. a second change while the store is still out: both workers make it
    taker = next(p for p in own if p.exists())
    before = taker.stat().st_ino
    cfg.write_bytes(files[2].read_bytes())
    group.signal(signal.SIGHUP)

    def rewritten() -> bool:  # (atomic_write: a new file, a new inode)
        try:
            return all(p.exists() for p in own) and taker.stat().st_ino != before
        except FileNotFoundError:
            return False

    await wait_until(rewritten, 15, what="both workers' files written with the second change")
    # 4. the whole group SIGKILLed before the store answers; the store back; a start
    os.killpg(group.proc.pid, signal.SIGKILL)
    await asyncio.to_thread(group.stop)
    redis_server.start()
    again = gateway_procs(cfg, workers=2)
    await asyncio.to_thread(again.wait_ready, 60.0, 2)
    await wait_until(lambda: events(digests[1]) and events(digests[2]) and not kept(), 60,
                     interval=0.1, what="both changes recorded, no file left")
    await asyncio.to_thread(again.stop)
    assert 1 <= len(events(digests[1])) <= 2, events(digests[1])
    assert 1 <= len(events(digests[2])) <= 2, events(digests[2])
