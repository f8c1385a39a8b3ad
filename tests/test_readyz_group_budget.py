"""A flood of drill questions at a group's /readyz proves a bounded number of sibling
entries (review revmerge38 of impdrill8's group answer).

`/readyz?drill=&nonce=` needs no token; a `--workers` worker's answer proves each sibling
(an HMAC each, ~5 µs: ~5 ms an answer for the up to 1024 entries a group that replaced
workers tells of), on the loop the data plane shares, for every question: a flood of
questions with made-up drill ids and nonces cost the worker that much CPU each. Now the
entries one worker proves are budgeted (admin/readyz.ProofBudget): beyond the budget an
answer has no `group` (a drill asks each worker as itself, as before groups). Real
`killgate serve --workers 2` on a real redis-server; its run directory given 1000 more
siblings' files (this test's pid: a process that runs).
"""

from __future__ import annotations

import asyncio
import json
import os
import time
from pathlib import Path

import pytest
from aiohttp import ClientSession

from gateway.admin.readyz import ENTRIES_PER_SECOND, ProofBudget
from tests.backends import echo_app
from tests.conftest import RedisServer, free_port, wait_until, write_config
from tests.drillrig import routes
from tests.test_revops_fleet import _state

pytestmark = pytest.mark.timeout(60)
MORE, ASKS = 1000, 300


def test_the_budget_refills_at_its_rate_and_takes_whole_answers() -> None:
    now = [0.0]
    b = ProofBudget(100, clock=lambda: now[0])
    assert b.take(60) and not b.take(41) and b.take(40) and not b.take(1)
    now[0] = 0.5
    assert b.take(50) and not b.take(1)
    now[0] = 100.0  # (refills to its burst, no more)
    assert not b.take(101) and b.take(100)


async def test_a_flood_of_drill_questions_proves_a_bounded_number_of_entries(
        tmp_path: Path, backends, redis_server: RedisServer, gateway_procs,
        session: ClientSession) -> None:
    run = tmp_path / "run"
    run.mkdir()
    p1, p2 = await backends(echo_app("v1")), await backends(echo_app("v2"))
    g = gateway_procs(write_config(tmp_path, routes(p1, p2),
                                   state=_state(redis_server, tmp_path, instance_lease="20s"),
                                   listen=f"127.0.0.1:{free_port()}",
                                   admin=f"127.0.0.1:{free_port()}"), workers=2,
                      env={"TMPDIR": str(run)})
    await asyncio.to_thread(g.wait_ready)
    (rundir,) = run.glob("killgate-workers-*")
    for i in range(MORE):
        (rundir / f"state-{100 + i}.json").write_text(json.dumps(
            {"instance": f"made-up-{i}", "pid": os.getpid(), "generation": 1, "gone": []}))

    async def ask(i: int) -> bool:
        async with session.get(f"{g.admin}/readyz", params={
                "drill": f"d-flood-{i}", "nonce": f"n{i:020d}"}) as r:
            body = await r.json()
        assert "proof" in body, body
        return len(body.get("group") or ()) > MORE

    # (a worker keeps what it read of the folder for a moment, workerstates.siblings: one
    # that read it just before the files were written answers without them meanwhile,
    # and a flood quicker than that moment told of none, once in a clean-clone CI)
    probes = iter(range(ASKS, ASKS + 10_000))
    await wait_until(lambda: ask(next(probes)), 10, 0.05, "the made-up files read")
    t0 = time.monotonic()
    told = 0
    for at in range(0, ASKS, 10):  # (ten at once)
        told += sum(await asyncio.gather(*(ask(i) for i in range(at, at + 10))))
    took = time.monotonic() - t0
    # (two workers, each its own budget: a burst and what refilled meanwhile, each)
    most = 2 * (ENTRIES_PER_SECOND * (1 + took)) / MORE + 2
    assert 0 < told <= most, (told, most, took)
