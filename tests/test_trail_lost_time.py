"""The time a lost audit trail is said at is one stamp: the re-seed event's, everywhere.

The re-seeding instance stamped the loss (`store.audit.trail_lost.time`) as it found it,
and its commit stamped the re-seed event a moment later; every other process reads the
event's time (heardloss.py): a millisecond apart in a clean-clone CI
(tests/test_trail_lost_start.py). The re-seeder now says the time it wrote into the event.

Real redis-server flushed with FLUSHALL, an in-process gateway. Between the two stamps the
re-seed writes its `audit_trail_lost` log line: a log sink that blocks for a moment (a full
stderr pipe) makes the gap between them certain rather than a matter of luck.
"""

from __future__ import annotations

import logging
import time
from pathlib import Path

from tests.backends import echo_app
from tests.conftest import RedisServer, running_gateway, two_versions, wait_until, write_config
from tests.staterig import redis_state
from tests.test_keyed_audit import events_in
from tests.test_killswitch import kill


class _SlowSink(logging.Handler):
    """A log sink that blocks a few milliseconds on the loss's line (a full pipe)."""

    def emit(self, record: logging.LogRecord) -> None:
        if record.getMessage() == "audit_trail_lost":
            time.sleep(0.005)


async def test_the_reseeder_says_the_loss_at_the_time_in_its_event(
        tmp_path: Path, backends, redis_server: RedisServer, session) -> None:
    p = await backends(echo_app("v1"))
    cfg = write_config(tmp_path, two_versions(p, p), state=redis_state(redis_server, tmp_path))
    sink, logger = _SlowSink(), logging.getLogger("killgate.state")
    logger.addHandler(sink)
    try:
        async with running_gateway(cfg) as g:
            await kill(session, g.admin, scope="route", route="iris")  # (a head to anchor)
            redis_server.cmd("FLUSHALL")
            sync = g.gw.sync
            await wait_until(lambda: (sync.trail_lost or {}).get("reseeded_by") is not None,
                             10, what="the re-seed to say the loss")
            said = dict(sync.trail_lost or {})
            reseeds = [e for e in events_in(redis_server)
                       if e.get("action") == "state.reseed" and e.get("trail_lost") is True]
            assert len(reseeds) == 1, reseeds
            assert said["reseeded_by"] == reseeds[0]["source"] == "test"
            assert said["anchored_head"] == reseeds[0]["anchored_head"]
            assert said["time"] == reseeds[0]["time"], (said, reseeds[0])
    finally:
        logger.removeHandler(sink)
