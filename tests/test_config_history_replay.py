"""Someone who can write to redis (without the signing key) puts back what the fleet's config
occurrence was read from at start, and every instance restarts: the same config change made
again within the claims' hour must still be audited (one `config.reload` event per change,
control/confighistory.py, occurrence.py).

Real redis-server, a real `killgate serve` process (the fleet), restarted as a deploy would.
Before: a start joined the occurrence a signed `config:head` record named (kept 30 days);
that record written back, the restarted fleet rejoined an occurrence it had left, the
change made again was taken for the earlier one (its claim still held) and no event was
written. Now the occurrence is read from the trail, back from the head the signed state
anchors; a genuine old event appended past it is not taken for the newest; and a claim
counts only once the event it names is on that chain (a store put back to an earlier
genuine state keeps the claims made since, not their events).
"""

from __future__ import annotations

import asyncio
import re
import signal
from collections.abc import Callable
from contextlib import suppress
from pathlib import Path

import pytest
from aiohttp import ClientSession

from tests.backends import echo_app
from tests.conftest import RedisServer, free_port, wait_until, write_config
from tests.test_kill_after_routing_reload import _route
from tests.test_killswitch import auth, redis_state

pytestmark = pytest.mark.timeout(60)

HEAD = "kgtest:idem:config:head"


class _Fleet:
    """One `killgate serve` instance (the whole fleet) running `cfg`, A or B."""

    def __init__(self, tmp: Path, redis: RedisServer, procs: Callable[..., object],
                 session: ClientSession, p1: int, p2: int) -> None:
        self.redis, self.procs, self.session = redis, procs, session
        ports = {"listen": f"127.0.0.1:{free_port()}", "admin": f"127.0.0.1:{free_port()}"}
        state = redis_state(redis, tmp)
        self.a = write_config(tmp, _route("iris", {"v1": (p1, 100), "v2": (p2, 0)}),
                              state=state, name="a.yaml", **ports).read_bytes()
        self.b = write_config(tmp, _route("iris", {"v2": (p2, 100), "v1": (p1, 0)}),
                              state=state, name="b.yaml", **ports).read_bytes()
        self.cfg = tmp / "killgate.yaml"
        self.cfg.write_bytes(self.a)
        self.cfg.chmod(0o600)
        self.proc: object = None

    async def start(self) -> None:
        self.proc = self.procs(self.cfg)
        await asyncio.to_thread(self.proc.wait_ready)  # type: ignore[attr-defined]

    async def restart(self) -> None:
        await asyncio.to_thread(self.proc.stop)  # type: ignore[attr-defined]
        await self.start()

    async def reloads(self) -> list[str]:
        admin = self.proc.admin  # type: ignore[attr-defined]
        async with self.session.get(f"{admin}/v1/audit?limit=200", headers=auth()) as r:
            events = (await r.json())["events"]
        return [e["after"]["digest"] for e in reversed(events) if e["action"] == "config.reload"]

    async def deploy(self, raw: bytes) -> None:
        """Change the file; wait until the change's event is written, or (when none comes:
        the bug) until the instance runs the file and its audit step is surely over."""
        before = len(await self.reloads())
        self.cfg.write_bytes(raw)
        self.proc.signal(signal.SIGHUP)  # type: ignore[attr-defined]

        async def audited() -> bool:
            return len(await self.reloads()) > before

        with suppress(AssertionError):  # (asserted by the caller, with what the trail holds)
            await wait_until(audited, 5, interval=0.05, what="the change's audit event")


@pytest.fixture
async def fleet(tmp_path: Path, backends, redis_server: RedisServer, gateway_procs,
                session: ClientSession) -> _Fleet:
    p1, p2 = await backends(echo_app("v1")), await backends(echo_app("v2"))
    f = _Fleet(tmp_path, redis_server, gateway_procs, session, p1, p2)
    await f.start()
    return f


async def test_a_replayed_config_head_suppresses_no_reload_event(
        fleet: _Fleet, redis_server: RedisServer) -> None:
    """The attacker keeps the signed record of the fleet's first occurrence of A (written
    at its start), the fleet changes A -> B -> A, the record is written back, the fleet
    restarts and changes A -> B again within the hour: that change is in the trail."""
    old = redis_server.cmd("GET", HEAD)  # ("" once nothing writes it: replayed as absent)
    await fleet.deploy(fleet.b)
    await fleet.deploy(fleet.a)
    assert len(await fleet.reloads()) == 2
    if old:
        redis_server.cmd("SET", HEAD, old, "PX", str(30 * 86400 * 1000))
    else:
        redis_server.cmd("DEL", HEAD)
    await fleet.restart()
    await fleet.deploy(fleet.b)
    seen = await fleet.reloads()
    assert len(seen) == 3 and seen[0] == seen[2] != seen[1], seen  # (before: 2 events)


async def test_a_genuine_old_event_appended_to_the_trail_is_not_taken_for_the_newest(
        fleet: _Fleet, redis_server: RedisServer) -> None:
    """A -> B -> A -> B -> A, then a copy of the second event (it brought A, with the
    occurrence the third change left) appended to the stream, and a restart: the occurrence
    is not joined from it (it does not continue the anchored head), so A -> B is audited."""
    for raw in (fleet.b, fleet.a, fleet.b, fleet.a):
        await fleet.deploy(raw)
    assert len(await fleet.reloads()) == 4
    entries = redis_server.cmd("XRANGE", "kgtest:audit", "-", "+")
    reload_events = [line for line in entries.split("\r\n") if '"config.reload"' in line]
    assert len(reload_events) == 4, entries[:400]
    redis_server.cmd("XADD", "kgtest:audit", "*", "e", reload_events[1])
    await fleet.restart()
    await fleet.deploy(fleet.b)
    seen = await fleet.reloads()  # (the trail as the API shows it: the copy in it)
    assert len(seen) == 6 and seen[4] == seen[1] and seen[5] == seen[0], seen


async def test_a_store_rolled_back_to_an_older_genuine_state_and_trail_loses_no_event(
        fleet: _Fleet, redis_server: RedisServer) -> None:
    """The attacker saves the genuine document (and the trail's end) after A -> B -> A, the
    fleet changes A -> B -> A again, the store is put back to the saved point (document,
    generation and head keys; the newer events deleted) and the fleet restarts: from its
    snapshot it re-seeds the store, and the occurrence is not joined from the saved point's
    newest event (the third change's claim would take A -> B for it)."""
    for raw in (fleet.b, fleet.a):
        await fleet.deploy(raw)
    keys = ("kgtest:state", "kgtest:gen", "kgtest:audit:head")
    saved = {k: redis_server.cmd("GET", k) for k in keys}
    last = re.findall(r"\d+-\d+", redis_server.cmd("XREVRANGE", "kgtest:audit", "+", "-",
                                                   "COUNT", "1"))[0]
    for raw in (fleet.b, fleet.a):
        await fleet.deploy(raw)
    assert len(await fleet.reloads()) == 4
    await asyncio.to_thread(fleet.proc.stop)  # type: ignore[attr-defined]
    for k, v in saved.items():
        redis_server.cmd("SET", k, v)
    newer = re.findall(r"\d+-\d+", redis_server.cmd("XRANGE", "kgtest:audit", f"({last}",
                                                    "+"))
    assert newer
    redis_server.cmd("XDEL", "kgtest:audit", *newer)
    await fleet.start()
    await fleet.deploy(fleet.b)
    seen = await fleet.reloads()
    assert len(seen) == 3 and seen[-1] == seen[0], seen

