"""A re-seed whose commit lost (StoreConflict: another instance re-seeded first, or the
store moved since the read) no longer keeps the epoch it drew among the instance's own
(found by review): no document of it exists, and kept it took a place in OWN_EPOCHS and in
the snapshot's `unverified_origin` epochs, pushing out epochs the instance did write. Real
redis-server, an in-process gateway (the code of `killgate serve`)."""

from __future__ import annotations

from pathlib import Path

import pytest

from gateway.domain.statedoc import StateDoc
from gateway.state.signing import Key, Keyring
from gateway.state.snapshot import SnapshotFile
from gateway.state.store import Loaded
from tests.backends import echo_app
from tests.conftest import RedisServer, running_gateway, two_versions, wait_until, write_config
from tests.test_killswitch import redis_state
from tests.test_snapshot import FLAG

pytestmark = pytest.mark.timeout(20)


async def test_the_epoch_of_a_reseed_that_lost_is_not_kept_as_its_own(
        tmp_path: Path, backends, redis_server: RedisServer) -> None:
    p = await backends(echo_app("v1"))
    cfg = write_config(tmp_path, two_versions(p, p, 100, 0),
                       state=redis_state(redis_server, tmp_path, "a"))
    # (its snapshot signed with a key it does not hold: kills only, its state not known
    # to be the fleet's; it seeds the empty store, an epoch of its own)
    await SnapshotFile(tmp_path / "snapshot-a.json", Keyring(Key.of(b"o" * 32), context="x")
                       ).write(StateDoc(generation=3, epoch="e", kills={"version:iris:v2": FLAG}))
    async with running_gateway(cfg, "gw-a") as g:
        sync = g.gw.sync
        await wait_until(lambda: sync.synced_once, 5, what="synced")
        stored = (await sync.store.load()).doc
        assert stored is not None and not sync._seen_fleet
        own, reseeds = list(sync._own_epochs), g.gw.metrics.get("killgate_state_reseeds_total")
        assert stored.epoch in own
        # a read that saw the store empty, committed after the store holds a document:
        # the commit loses (StoreConflict)
        await sync._reseed(Loaded(None, None), stored)
        assert list(sync._own_epochs) == own
        again = (await sync.store.load()).doc
        assert again is not None and again.epoch == stored.epoch
        assert g.gw.metrics.get("killgate_state_reseeds_total") == reseeds
