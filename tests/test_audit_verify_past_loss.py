"""`killgate audit verify` after the store lost its trail still checks every event after the
loss.

Found trying the README as a new user: redis restarted without persistence (the README's
"Redis restarted empty" case) made the trail start with the re-seed, and from then on
`audit verify` stopped at event #0 ("the events before it were lost") and checked nothing
after it: "links and hashes checked: 0 of 1" on a trail of four. Deleting or editing a kill
made after the loss gave the very same output, so the trail was tamper-evident no more for
as long as the loss stood (for good, without retention). Now the loss is still a break
(exit 1, said first), the events after it are checked as any trail's, and a break among
them is named as the one to act on.
"""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

from tests.backends import echo_app
from tests.conftest import RedisServer, running_gateway, two_versions, wait_until, write_config
from tests.test_keyed_audit import KEY, actions, events_in, rewrite, verify
from tests.test_killswitch import redis_state


async def test_verify_checks_the_trail_after_a_loss(tmp_path: Path, backends, session,
                                                    redis_server: RedisServer) -> None:
    p = await backends(echo_app("v1"))
    cfg = write_config(tmp_path, two_versions(p, p), state=redis_state(redis_server, tmp_path))
    async with running_gateway(cfg) as g:
        await actions(session, g.admin, 1)
        redis_server.cmd("FLUSHALL")
        await wait_until(lambda: redis_server.cmd("EXISTS", "kgtest:state") == "1", 10,
                         what="the re-seed")
        await actions(session, g.admin, 2)  # the re-seed, then kill, unkill, kill, unkill
        genuine = events_in(redis_server)
        assert len(genuine) == 5 and genuine[0]["action"] == "state.reseed"

        res = await asyncio.to_thread(verify, g.admin, *KEY, "--json")
        assert res.returncode == 1, res.stdout
        report = json.loads(res.stdout)
        # the loss is the break, and every event after it was checked whole
        assert report["break"]["index"] == 0 and "were lost" in report["break"]["problem"]
        assert report["events"] == 5 and report["hashes_checked"] == 5, report
        assert report["macs_checked"] == 5, report
        res = await asyncio.to_thread(verify, g.admin, *KEY)
        assert res.returncode == 1 and "were lost" in res.stderr, res.stderr
        assert "links and hashes checked: 5 of 5" in res.stderr, res.stderr
        assert "after it intact" in res.stderr, res.stderr

        # a kill made after the loss deleted, or edited: named, not hidden behind the loss
        edited = [*genuine[:3], {**genuine[3], "reason": "routine"}, *genuine[4:]]
        cases = {"delete": ([*genuine[:2], *genuine[3:]], 2, "prev_hash does not match"),
                 "edit": (edited, 3, "hash does not match")}
        for how, (tampered, at, problem) in cases.items():
            rewrite(redis_server, tampered)
            res = await asyncio.to_thread(verify, g.admin, *KEY)
            assert res.returncode == 1, (how, res.stdout)
            assert f"BROKEN at event #{at}" in res.stderr and problem in res.stderr, \
                (how, res.stderr)
            assert "were lost" in res.stderr, (how, res.stderr)  # the loss still said
            res = await asyncio.to_thread(verify, g.admin, *KEY, "--json")
            report = json.loads(res.stdout)
            assert report["break"]["index"] == at and report["lost"]["index"] == 0, \
                (how, report)
        rewrite(redis_server, genuine)


async def test_verify_says_the_reseeds_record_was_deleted(tmp_path: Path, backends, session,
                                                          redis_server: RedisServer) -> None:
    """(found by review revsync) The re-seed's own record deleted after a loss: the trail
    then starts at a kill, after an event it does not hold, and verify said "the events
    before it were lost (a flushed or truncated store)", the words of the loss the fleet
    had reported, though after a flush the trail starts at the re-seed: it now says events
    were deleted from the trail's start, the re-seed's record among what it may be."""
    p = await backends(echo_app("v1"))
    cfg = write_config(tmp_path, two_versions(p, p), state=redis_state(redis_server, tmp_path))
    async with running_gateway(cfg) as g:
        await actions(session, g.admin, 1)
        redis_server.cmd("FLUSHALL")
        await wait_until(lambda: redis_server.cmd("EXISTS", "kgtest:state") == "1", 10,
                         what="the re-seed")
        await actions(session, g.admin, 1)  # the re-seed, then kill, unkill
        genuine = events_in(redis_server)
        assert len(genuine) == 3 and genuine[0]["action"] == "state.reseed", genuine
        rewrite(redis_server, genuine[1:])
        res = await asyncio.to_thread(verify, g.admin, *KEY)
        assert res.returncode == 1, res.stdout
        assert "BROKEN at event #0" in res.stderr, res.stderr
        assert "flushed or truncated" not in res.stderr, res.stderr
        assert "no re-seed" in res.stderr and "deleted from the trail's start" in res.stderr, \
            res.stderr
        assert "the 1 event(s) after it intact" in res.stderr, res.stderr  # (checked on)
        rewrite(redis_server, genuine)  # the genuine trail: the loss, in its words
        res = await asyncio.to_thread(verify, g.admin, *KEY)
        assert res.returncode == 1 and "were lost (a flushed or truncated store)" \
            in res.stderr, res.stderr
