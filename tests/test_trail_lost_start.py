"""A process that starts after a re-seed says the trail loss the fleet says (review revsync).

Every instance that applied the re-seed said AUDIT TRAIL LOST (heardloss.py), but only on
an epoch change it lived through: a process started after it (an instance restarted on its
snapshot, a new one, a worker its `--workers` group replaced) held the re-seed's epoch
already, or no state at all, and never read the trail: `killgate status` said the loss or
not depending on which process answered, as before heardloss.py. It now reads back from
the head of the first document it syncs, as a late reader does.

Real `killgate serve` processes on a real redis-server flushed with FLUSHALL.
"""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from tests.backends import echo_app
from tests.conftest import RedisServer, free_port, wait_until, write_config
from tests.drillrig import routes
from tests.test_revops_fleet import _state
from tests.test_trail_lost_fleet import ADMIN, _status

pytestmark = pytest.mark.timeout(120)


def _lost(st: dict[str, Any] | None) -> dict[str, Any] | None:
    got = ((st or {}).get("store") or {}).get("audit", {}).get("trail_lost")
    return got if isinstance(got, dict) else None


async def test_a_process_started_after_the_reseed_says_the_loss(
        tmp_path: Path, backends, redis_server: RedisServer, gateway_procs,
        session: aiohttp.ClientSession) -> None:
    p1, p2 = await backends(echo_app("v1")), await backends(echo_app("v2"))
    configs = {}
    for name in ("a", "b", "c"):
        (tmp_path / name).mkdir()
        configs[name] = write_config(
            tmp_path / name, routes(p1, p2), state=_state(redis_server, tmp_path / name),
            listen=f"127.0.0.1:{free_port()}", admin=f"127.0.0.1:{free_port()}")
    a, b = gateway_procs(configs["a"]), gateway_procs(configs["b"])
    await asyncio.gather(asyncio.to_thread(a.wait_ready), asyncio.to_thread(b.wait_ready))
    async with session.post(f"{a.admin}/v1/kill", json={"scope": "global", "reason": "INC-9"},
                            headers={"authorization": f"Bearer {ADMIN}"}) as r:
        assert r.status == 200, await r.text()

    async def both_hold_it() -> bool:
        heads = {((await _status(p.admin) or {}).get("store") or {}).get(
            "audit", {}).get("anchored_head") for p in (a, b)}
        return len(heads) == 1 and None not in heads

    await wait_until(both_hold_it, 20, 0.05, "both hold the kill")
    redis_server.cmd("FLUSHALL")

    async def both_say_it() -> bool:
        said = [_lost(await _status(p.admin)) for p in (a, b)]
        return all(s and s.get("reseeded_by") for s in said)

    await wait_until(both_say_it, 20, 0.05, "both to say the loss")
    told = _lost(await _status(a.admin))
    assert told is not None
    # b restarts on its snapshot (the re-seed's epoch), and c starts with no state at all
    await asyncio.to_thread(b.stop)
    b2, c = gateway_procs(configs["b"]), gateway_procs(configs["c"])
    await asyncio.gather(asyncio.to_thread(b2.wait_ready), asyncio.to_thread(c.wait_ready))

    async def the_new_ones_say_it() -> bool:
        said = [_lost(await _status(p.admin)) for p in (b2, c)]
        return all(s and s.get("reseeded_by") for s in said)

    await wait_until(the_new_ones_say_it, 20, 0.05, "the restarted and the new one to say it")
    for p in (b2, c):
        got = _lost(await _status(p.admin))
        assert got is not None
        # (one stamp: the re-seed event's time, which the re-seeder says too; it said the
        # time it found the loss, a millisecond before: tests/test_trail_lost_time.py)
        assert (got["anchored_head"], got["reseeded_by"], got["time"]) == (
            told["anchored_head"], told["reseeded_by"], told["time"]), (got, told)
