"""A stream filled with large forged entries (someone who can write to redis, without the
key: XADD of 1000 entries of 64 KiB; real redis-server, a real gateway) costs the loop the
data plane runs on little: before, every page of 200 was read and parsed at once, 50-100 ms
on the loop per page (measured: loop thread CPU ~130 ms for the five pages a sibling's
claim check reads at each config reload, worst gap between two 1 ms ticks 70-120 ms), and
the console's audit page and the drill history read the same way. A page now sends at most
1 MiB of entries (state/redisaudit.py's PAGE), and no entry over 4 MiB; a page cut short is
followed by its cursor. What is checked: the loop thread's CPU time for each page (robust
on a loaded host, where the wall-clock gaps are noise: measured 2-4 ms a page, 67 pages;
before, ~20 ms a page of six, 50-150 ms wall here), the pages' answers (every entry
once, in order), and an entry over the limit shown as unparseable (a break `audit
verify` names), never sent. And redis's own CPU time for a page (INFO cpu: its process's
rusage, robust on a loaded host too): a page read its whole range into the script before
the budget cut it (measured: ~40 ms a page of 200 of 64 KiB entries that sent 16, ~450 ms
a page of audit_events' 1000; every instance's commands wait meanwhile), now ~3 ms.
"""

from __future__ import annotations

import asyncio
import json
import time
from pathlib import Path
from typing import Any

import pytest

from gateway.control.occurrence import NEAR, PAGE, in_trail
from gateway.state import redisaudit
from tests.backends import echo_app
from tests.conftest import RedisServer, running_gateway, two_versions, write_config
from tests.test_attacks_state import post
from tests.test_killswitch import redis_state

pytestmark = pytest.mark.timeout(60)

_FILL = ("for i = 1, tonumber(ARGV[2]) do redis.call('XADD', KEYS[1], '*', 'e', ARGV[1]) end "
         "return 1")


async def _on_the_loop(coro: Any) -> tuple[Any, float, float]:
    """`coro`'s result, the CPU time the loop's thread spent meanwhile and the longest gap
    between two 1 ms ticks of the loop (said, not asserted: a loaded host adds its own)."""
    worst, done = 0.0, False

    async def tick() -> None:
        nonlocal worst
        last = time.perf_counter()
        while not done:
            await asyncio.sleep(0.001)
            now = time.perf_counter()
            worst, last = max(worst, now - last), now

    ticker = asyncio.create_task(tick())
    cpu = time.thread_time()
    try:
        res = await coro
    finally:
        cpu = time.thread_time() - cpu
        done = True
        await ticker
    return res, cpu, worst


def _redis_cpu(redis_server: RedisServer) -> float:
    """The CPU time redis-server's process has used (INFO cpu: user and system)."""
    info = dict(line.split(":", 1) for line in redis_server.cmd("INFO", "cpu").split()
                if ":" in line)
    return float(info["used_cpu_user"]) + float(info["used_cpu_sys"])


@pytest.mark.parametrize(("size", "n"), [(64 * 1024, NEAR), (1024 * 1024, 40)])
async def test_a_trail_of_large_forged_entries_is_read_in_bounded_pages(
        tmp_path: Path, backends, session, redis_server: RedisServer, size: int,
        n: int) -> None:
    p = await backends(echo_app("v1"))
    cfg = write_config(tmp_path, two_versions(p, p), state=redis_state(
        redis_server, tmp_path, command_timeout="2s"))
    async with running_gateway(cfg) as g:
        await post(session, g.admin, "/v1/kill", scope="route", route="iris")
        store = g.gw.sync.store
        genuine = (await store.audit_events())[-1]
        forged = json.dumps({"id": "forged", "pad": "a" * size})
        redis_server.cmd("EVAL", _FILL, "1", "kgtest:audit", forged, str(n))
        # a sibling's claim names an event this trail does not hold: read back NEAR entries
        found, cpu, worst = await _on_the_loop(in_trail(store, "f" * 64))
        print(f"\nwalk of {n} forged entries of {size} bytes: loop thread CPU "
              f"{cpu * 1000:.0f} ms, "
              f"worst gap {worst * 1000:.0f} ms")
        assert found is False
        # page by page (the walk's PAGE of 200, as the console's and drills' reads): each
        # within its bytes, the loop's CPU for each small; following cursors reads every
        # entry once, in order
        pages: list[float] = []
        served = _redis_cpu(redis_server)

        async def timed(read: Any) -> Any:
            cpu = time.thread_time()
            got = await read
            pages.append(time.thread_time() - cpu)
            return got

        head, page, nxt = await timed(store.audit_newest(PAGE))
        first, ids = len(page), [e["id"] for e in page]
        while nxt is not None:
            page, nxt = await timed(store.audit_page(PAGE, nxt))
            ids += [e["id"] for e in page]
        served = (_redis_cpu(redis_server) - served) / len(pages)
        print(f"{len(pages)} pages, the loop's CPU for the largest {max(pages) * 1000:.1f} ms, "
              f"redis's CPU a page {served * 1000:.1f} ms")
        assert max(pages) < 0.01, pages  # (before: ~20 ms a page of 64 KiB entries)
        assert served < 0.015, served  # (before: ~40 ms a page of 64 KiB entries)
        assert 0 < first < 20 and head == genuine["hash"]  # (the head the state anchors)
        assert ids == [e["id"] for e in reversed(await store.audit_events())]
        # an entry over the limit of an event is not sent at all: shown as such
        redis_server.cmd("EVAL", _FILL, "1", "kgtest:audit", "x" * (redisaudit.ENTRY_BYTES + 1), "1")
        _, page, _ = await store.audit_newest(5)
        assert "over the" in page[0]["unparseable"] and len(page[0]["unparseable"]) < 200
