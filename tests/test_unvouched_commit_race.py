"""An instance whose state is not known to be the fleet's (X: a kills-only snapshot, its
key not the fleet's) never writes over a document it cannot verify, also not when that
document lands between its write's load and its commit (impwrongkey item 1).

X seeded the flushed store; its write loads X's own document at generation G; the fleet's
re-seed (F, the fleet's key) lands at the same generation G; X commits. The commit compared
only the unsigned generation key ("G" both times), so X's kill replaced the fleet's
document it never verified, answered as done. The commit of such an instance now compares
the stored document it decided on (its sha1, as the optimistic path's `based` does): X
reloads, cannot verify F's, and refuses (503 StoreUnverifiable), F's document untouched.

Real redis-server; X and F are two `Sync`s (make_sync, as `killgate serve` builds them)
with different keys; the test holds X between its load and its commit while F commits.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from gateway.control.table import TableHolder
from gateway.domain.audit import AuditDraft
from gateway.domain.statedoc import Change, KillFlag, StateDoc
from gateway.errors import StoreUnverifiable
from gateway.state import make_sync
from gateway.state.reseedmerge import new_epoch
from gateway.state.sync import Sync
from gateway.telemetry.metrics import Metrics
from tests.conftest import STATE_KEY, RedisServer, wait_until
from tests.staterig import redis_section, sync_config

pytestmark = pytest.mark.timeout(30)

X_KEY = "x" * 64


def kill(route: str) -> Any:
    def change(cur: StateDoc) -> Change:
        return Change(kills={f"route:{route}": KillFlag("route", route, None, "alice", "r",
                                                         "t", 0)})
    return change


def draft(cur: StateDoc, new: StateDoc) -> AuditDraft:
    return AuditDraft("alice", "kill", {"scope": "route", "route": "iris"}, "r")


def make(redis: RedisServer, tmp: Path, name: str, env: str) -> Sync:
    state = redis_section(redis.url, "kgrace", f"{tmp}/snap-{name}.json",
                          poll_interval="60s", heartbeat_interval="200ms", max_staleness="120s",
                          instance_lease="120s").replace("KILLGATE_TEST_STATE_KEY", env)
    cfg = sync_config(state, tmp / f"{name}.yaml")
    return make_sync(cfg, TableHolder(cfg, state_unknown=True), Metrics(), f"inst-{name}")


async def test_an_unvouched_write_never_lands_over_a_reseed_at_its_generation(
        redis_server: RedisServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # X's snapshot holds a kill, signed with the fleet's key; then X's key is regenerated
    # and Redis flushed: X reads its snapshot's kills only, and seeds the empty store
    monkeypatch.setenv("KG_X_KEY", STATE_KEY)
    x = make(redis_server, tmp_path, "x", "KG_X_KEY")
    await x.start()
    await x.write(kill("iris"), draft)
    await x.stop()
    redis_server.cmd("FLUSHALL")
    monkeypatch.setenv("KG_X_KEY", X_KEY)
    x = make(redis_server, tmp_path, "x", "KG_X_KEY")
    f = make(redis_server, tmp_path, "f", "KILLGATE_TEST_STATE_KEY")
    try:
        await x.start()
        await wait_until(lambda: redis_server.cmd("GET", "kgrace:state"), 5, what="X's seed")
        assert x._unvouched() is not None, "X's state is not known to be the fleet's"
        store: Any = x.store
        real_load = store.load
        raced: list[int] = []
        fleet_at: list[int] = []

        async def load(*a: Any, **kw: Any) -> Any:
            got = await real_load(*a, **kw)
            if not raced and got.doc is not None:
                # the fleet's re-seed lands at the generation X just read
                gen = fleet_at[-1] if fleet_at else got.doc.generation
                raced.append(gen)
                fleet = StateDoc(generation=gen, epoch=new_epoch(), kills={})
                await f.store.commit(got.token, fleet, AuditDraft(
                    "killgate/auto", "state.reseed", {"store": "redis"}, "the fleet's"))
            return got

        store.load = load
        mine = (redis_server.cmd("GET", "kgrace:state"), redis_server.cmd("GET", "kgrace:gen"))
        with pytest.raises(StoreUnverifiable):
            await x.write(kill("other"), draft)
        assert raced
        fleets = redis_server.cmd("GET", "kgrace:state")
        got = await f.store.load()
        assert got.doc is not None and got.doc.generation == raced[0], got  # (F's, intact)
        assert "route:other" not in fleets
        assert redis_server.cmd("GET", "kgrace:gen") == str(raced[0])
        # nor does an operator's vouch write over it (item 3: its key is not the fleet's)
        with pytest.raises(StoreUnverifiable):
            await x.vouch(AuditDraft("alice", "state.vouch", {"instance": "inst-x"}, "sure"))
        assert redis_server.cmd("GET", "kgrace:state") == fleets
        assert x._unvouched() is not None
        # an audit event without a state change (append_audit) the same way: X's own
        # document put back, the fleet's re-seed landing between its load and its commit
        redis_server.cmd("SET", "kgrace:state", mine[0])
        redis_server.cmd("SET", "kgrace:gen", mine[1])
        raced.clear()
        assert await x.append_audit(AuditDraft("alice", "denied", {}, "r")) is None
        assert raced
        got = await f.store.load()
        assert got.doc is not None and got.doc.generation == raced[0], got  # (F's)
        # and its re-seed of a document it verifies (here: whose generation key disagrees)
        held = x.holder.doc.generation
        redis_server.cmd("SET", "kgrace:state", mine[0])
        redis_server.cmd("SET", "kgrace:gen", str(held + 5))
        raced.clear()
        fleet_at.append(held + 5)  # (the fleet's re-seed lands at the key's generation)
        await x._full_sync()
        assert raced
        got = await f.store.load()
        assert got.doc is not None and got.doc.generation == held + 5, got  # (F's)
    finally:
        await x.stop()
        await f.store.close()
