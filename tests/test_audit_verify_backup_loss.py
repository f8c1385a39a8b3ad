"""`killgate audit verify` checks the events after a loss inside the trail too (found by
review revmerge41 of revnewuser3's past-loss check).

The past-loss check covered a trail that *starts* with a loss (redis restarted empty). A
store put back from an older backup keeps its older events, and the re-seed continues its
trail in the middle, naming the head it had anchored, which the store no longer holds.
There `verify_trail` stopped at the re-seed: a kill deleted or edited after it gave the
very same report as the loss alone, for as long as the loss stood (for good without
retention). Now the loss is still a break (exit 1), every event after it is checked, and a
break among them is named first (`lost` in --json gives the loss's index).

Real `killgate serve` on a real redis-server; the backup is COPY of its keys.
"""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

from tests.backends import echo_app
from tests.conftest import RedisServer, running_gateway, two_versions, wait_until, write_config
from tests.test_keyed_audit import KEY, actions, events_in, rewrite, verify
from tests.test_killswitch import redis_state

KEYS = ("kgtest:state", "kgtest:gen", "kgtest:audit", "kgtest:audit:head")


def _copy(redis: RedisServer, src: str, dst: str) -> None:
    for k in KEYS:
        if redis.cmd("EXISTS", src + k) == "1":
            redis.cmd("COPY", src + k, dst + k, "REPLACE")


async def test_verify_checks_the_trail_after_a_loss_inside_it(
        tmp_path: Path, backends, session, redis_server: RedisServer) -> None:
    p = await backends(echo_app("v1"))
    cfg = write_config(tmp_path, two_versions(p, p), state=redis_state(redis_server, tmp_path))
    async with running_gateway(cfg) as g:
        await actions(session, g.admin, 1)  # kill, unkill
        _copy(redis_server, "", "bak:")  # the backup
        await actions(session, g.admin, 1)  # two more, then the backup put back
        _copy(redis_server, "bak:", "")
        await wait_until(lambda: any(e["action"] == "state.reseed"
                                     for e in events_in(redis_server)), 10, what="re-seed")
        await actions(session, g.admin, 2)
        genuine = events_in(redis_server)
        at = next(i for i, e in enumerate(genuine) if e["action"] == "state.reseed")
        n = len(genuine)
        assert n == at + 5 and genuine[at - 1]["action"] == "unkill", \
            [e["action"] for e in genuine]

        res = await asyncio.to_thread(verify, g.admin, *KEY, "--json")
        assert res.returncode == 1, res.stdout
        report = json.loads(res.stdout)
        assert report["break"]["index"] == at, report
        assert report["lost"] is not None and report["lost"]["index"] == at, report
        assert report["hashes_checked"] == n and report["macs_checked"] == n, report
        res = await asyncio.to_thread(verify, g.admin, *KEY)
        assert res.returncode == 1 and f"BROKEN at event #{at}" in res.stderr, res.stderr
        assert "after it intact" in res.stderr, res.stderr

        # a kill made after the loss deleted, or edited: named, not hidden behind the loss
        k = at + 2  # (the first unkill after the re-seed)
        edited = [*genuine[:k], {**genuine[k], "reason": "routine"}, *genuine[k + 1:]]
        cases = {"delete": ([*genuine[:k], *genuine[k + 1:]], k, "prev_hash does not match"),
                 "edit": (edited, k, "hash does not match")}
        for how, (tampered, brk, problem) in cases.items():
            rewrite(redis_server, tampered)
            res = await asyncio.to_thread(verify, g.admin, *KEY)
            assert res.returncode == 1, (how, res.stdout)
            assert f"BROKEN at event #{brk}" in res.stderr and problem in res.stderr, \
                (how, res.stderr)
            assert f"at event #{at}" in res.stderr, (how, res.stderr)  # the loss still said
            res = await asyncio.to_thread(verify, g.admin, *KEY, "--json")
            report = json.loads(res.stdout)
            assert report["break"]["index"] == brk and report["lost"]["index"] == at, \
                (how, report)
        rewrite(redis_server, genuine)
