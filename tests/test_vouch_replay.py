"""A genuine old document put back into the store does not vouch for an instance whose
state is not known to be the fleet's (impwrongkey item 4).

X's key was rolled back to one the fleet used before (its snapshot, written since with the
other key, no longer verifies: its kills only), and Redis was flushed: X seeds the store,
marked (`unverified_origin`). Whoever can write to Redis puts back a document the fleet
signed with X's key before: of an epoch X did not create, it verifies, and it cleared the
mark, after which X re-seeded over every document of the fleet it cannot verify (its
weights, overrides and history wiped at each repair). Now only a document that descends
from an epoch X created while marked vouches (a re-seed by another instance that verified
X's): F, on X's key and with newer state, re-seeds over X's document and X is vouched.

Real redis-server; X and F are `Sync`s built as `killgate serve` builds them.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from gateway.control.table import TableHolder
from gateway.domain.audit import AuditDraft
from gateway.domain.statedoc import Change, KillFlag, StateDoc
from gateway.state import make_sync
from gateway.state.sync import Sync
from gateway.state.vouching import SIBLING_TAG
from gateway.telemetry.metrics import Metrics
from tests.conftest import RedisServer, wait_until
from tests.staterig import redis_section, sync_config

pytestmark = pytest.mark.timeout(30)


def kill(route: str) -> Any:
    def change(cur: StateDoc) -> Change:
        return Change(kills={f"route:{route}": KillFlag("route", route, None, "alice", "r",
                                                         "t", 0)})
    return change


def unkill(route: str) -> Any:
    return lambda cur: Change(kills={f"route:{route}": None})


def draft(cur: StateDoc, new: StateDoc) -> AuditDraft:
    return AuditDraft("alice", "kill", {"scope": "route", "route": "iris"}, "r")


def make(redis: RedisServer, tmp: Path, name: str) -> Sync:
    state = redis_section(redis.url, "kgvouch", f"{tmp}/snap-{name}.json",
                          poll_interval="100ms", heartbeat_interval="200ms")
    cfg = sync_config(state, tmp / f"{name}.yaml")
    return make_sync(cfg, TableHolder(cfg, state_unknown=True), Metrics(), f"inst-{name}")


def unverifiable_snapshot(path: Path) -> None:
    """What X's key no longer verifies (here: unsigned, as written before state signing)."""
    flag = KillFlag("route", "iris", None, "alice", "bad", "2026-12-04T00:00:00Z", 0)
    path.write_text(json.dumps(StateDoc(generation=3, kills={"route:iris": flag}).to_json()))
    path.chmod(0o600)


async def test_an_old_document_put_back_does_not_vouch_but_a_reseed_over_ours_does(
        redis_server: RedisServer, tmp_path: Path) -> None:
    # before: X and F on the same key; an early document of theirs is kept (the replay)
    x, f = make(redis_server, tmp_path, "x"), make(redis_server, tmp_path, "f")
    await x.start()
    await f.start()
    await x.write(kill("other"), draft)
    old = (redis_server.cmd("GET", "kgvouch:state"), redis_server.cmd("GET", "kgvouch:gen"))
    for _ in range(4):  # (F's state moves on: newer than anything X seeds below)
        await f.write(kill("iris"), draft)
        await f.write(unkill("iris"), draft)
    await x.stop()
    await f.stop()
    unverifiable_snapshot(tmp_path / "snap-x.json")  # (X's key rolled back)
    redis_server.cmd("FLUSHALL")
    x = make(redis_server, tmp_path, "x")
    f = make(redis_server, tmp_path, "f")
    try:
        await x.start()
        assert x.snapshot.kills_only is not None
        await wait_until(lambda: redis_server.cmd("GET", "kgvouch:state"), 5, what="X's seed")
        assert x._unvouched() is not None
        seeds = x.metrics.get("killgate_state_reseeds_total")
        # the replay: a genuine document of X's key, older than X's seed, of another epoch
        redis_server.cmd("SET", "kgvouch:state", old[0])
        redis_server.cmd("SET", "kgvouch:gen", old[1])
        await wait_until(lambda: x.metrics.get("killgate_state_reseeds_total") > seeds, 5,
                         what="X re-seeding over the older document")
        assert x._unvouched() is not None, "a replayed old document vouched for X"
        stored = json.loads(redis_server.cmd("GET", "kgvouch:state").partition("\n")[2])
        assert stored["epoch"][:SIBLING_TAG] == x._sibling_tag()  # (a marked re-seed)
        # F, the same key, newer state: re-seeds over X's document, merging it (its
        # lineage names X's epoch): X is vouched
        await f.start()
        await wait_until(lambda: x._unvouched() is None, 5, what="F's re-seed vouching for X")
        assert x.holder.doc.lineage and any(
            e.startswith(x._sibling_tag()) for e in x.holder.doc.lineage)
    finally:
        await x.stop()
        await f.stop()
