"""state/fleet.py over a real (local) store: what it keeps of instances that left is bounded.

Every instance's ack reaches every other one; with Kubernetes each restart is a new pod
name. The acks and the "last heard" time of every name ever heard were kept for the life
of the process, and every receipt walked them all: a fleet that lives for months behind
rolling deploys and autoscaling keeps tens of thousands of dead names on every instance.
A name not heard of for a lease is dead to receipts already; it is forgotten then too.
"""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from gateway.config import StateConfig
from gateway.control.table import TableHolder
from gateway.state.fleet import Fleet
from gateway.state.local import LocalStore
from gateway.state.store import Ack
from tests.conftest import two_versions, wait_until, write_config

pytestmark = pytest.mark.timeout(30)


async def test_instances_not_heard_of_for_a_lease_are_forgotten(tmp_path: Path) -> None:
    from gateway.configfile import load_config

    holder = TableHolder(load_config(write_config(tmp_path, two_versions(1, 2))),
                         state_unknown=True)
    store = LocalStore(tmp_path / "store.json")
    await store.open()
    cfg = StateConfig(heartbeat_interval="50ms", instance_lease="1s")
    fleet = Fleet(store, holder, cfg, "me", pushes=True)
    fleet.watching_since = time.monotonic() - 10  # (acks arrive as pushes: heard of)
    for i in range(5000):  # pods of deploys gone by
        fleet.note(Ack(f"pod-{i}", 7))
    assert len(await fleet.live()) == 5001  # (all heard of just now: live)
    await wait_until(lambda: time.monotonic() - fleet.heard["pod-0"] > 1.05, 3,
                     what="a lease to pass")
    fleet.note(Ack("pod-new", 8))
    live = await fleet.live()
    assert set(live) == {"me", "pod-new"}
    assert set(fleet.heard) <= {"me", "pod-new"}, len(fleet.heard)
    assert set(fleet.acks) <= {"me", "pod-new"}, len(fleet.acks)
    # one heard of again comes back as any new one does
    fleet.note(Ack("pod-1", 9))
    assert (await fleet.live())["pod-1"] == 9
