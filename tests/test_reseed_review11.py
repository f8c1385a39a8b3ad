"""The re-seed rules of the ninth and tenth reviews, reviewed again (eleventh review).

One in-process instance on a real redis-server; the test plays the store's other writers.
- A fresh store: the instance starts generation 0 itself and holds the empty document
  (epoch "", generation 0) until it reads it back: that is no other instance's re-seed at
  its generation, and must not be merged (an audited `state.reseed`, a WARNING and
  `killgate_state_reseeds_total` on every first start of a deployment, for nothing).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from tests.backends import echo_app
from tests.conftest import RedisServer, running_gateway, two_versions, wait_until, write_config
from tests.test_keyed_audit import events_in
from tests.test_killswitch import kill, redis_state, status_of, unkill

pytestmark = pytest.mark.timeout(30)


async def test_a_fresh_store_is_not_reseeded(
        tmp_path: Path, backends, redis_server: RedisServer, session) -> None:
    p1 = await backends(echo_app("v1"))
    cfg = write_config(tmp_path, two_versions(p1, p1, 100, 0),
                       state=redis_state(redis_server, tmp_path, "a"))
    async with running_gateway(cfg) as g:
        sync: Any = g.gw.sync
        polls: set[float] = set()

        def polled() -> bool:  # five polls (each one ends in `_touch`)
            polls.add(sync.last_ok)
            return len(polls) > 5

        await wait_until(polled, 5, what="five polls")
        assert g.gw.metrics.get("killgate_state_reseeds_total") == 0
        assert [e["action"] for e in events_in(redis_server)
                if e["action"] == "state.reseed"] == []


async def test_a_replayed_genuine_document_brings_back_a_kill_lifted_since(
        tmp_path: Path, backends, redis_server: RedisServer, session) -> None:
    """Documented limit (README "Trust"), and what holds: whoever can write to Redis (no
    key) puts back a genuine document saved while a kill was in force, after its unkill.
    The instance holds a newer one and re-seeds the store with the union of the kills both
    know (it cannot tell a replay from a store restored from a backup, nor a kill lifted
    since from one made on a branch it never saw): the lifted kill is in force again, on
    every instance, audited `state.reseed`; repeated, at most once per 30 s per instance.
    Nothing is lifted, and an unkill through the API lifts it again."""
    p1 = await backends(echo_app("v1"))
    cfg = write_config(tmp_path, two_versions(p1, p1, 100, 0),
                       state=redis_state(redis_server, tmp_path, "a"))
    async with running_gateway(cfg) as g:
        await kill(session, g.admin, scope="route", route="iris")
        saved = {k: redis_server.cmd("GET", k) for k in ("kgtest:state", "kgtest:gen")}
        await unkill(session, g.admin, scope="route", route="iris")
        assert await status_of(session, g.url) == (200, "weighted")
        reseeds = g.gw.metrics.get("killgate_state_reseeds_total")
        for k, v in saved.items():
            redis_server.cmd("SET", k, v)
        await wait_until(lambda: g.gw.metrics.get("killgate_state_reseeds_total") > reseeds,
                         5, what="the re-seed")
        await wait_until(lambda: "route:iris" in g.gw.holder.doc.kills, 5,
                         what="the kill back on a")
        assert events_in(redis_server)[-1]["action"] == "state.reseed"
        await unkill(session, g.admin, scope="route", route="iris")
        assert await status_of(session, g.url) == (200, "weighted")
