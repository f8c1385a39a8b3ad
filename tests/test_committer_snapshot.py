"""A committer's snapshot of the kill it committed (gateway/state/syncpushes.py, snapshot.py).

The committer hands its new document to the snapshot twice: as it applies it (its
`_after_apply`, after ACK_AFTER) and as its own push comes back (the event it carries
judged). The file is written once, and not before ACK_AFTER: written as the push came
back, its fsync ran while every other instance applied the kill (impkilltail, RESULTS
§55). One `Sync` in this process on our own redis-server, its snapshot's writes recorded.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import pytest

from gateway.control.table import TableHolder
from gateway.domain.statedoc import StateDoc
from gateway.state import make_sync
from gateway.state.sync import ACK_AFTER
from gateway.telemetry.metrics import Metrics
from tests.conftest import RedisServer, wait_until
from tests.staterig import redis_section, sync_config
from tests.test_sync_after_swap import draft, kill_iris

pytestmark = pytest.mark.timeout(30)


async def test_a_committed_kill_is_written_once_after_the_burst(
        redis_server: RedisServer, tmp_path: Path) -> None:
    cfg = sync_config(redis_section(redis_server.url, "kgsnap", f"{tmp_path}/snap-a.json",
                                    heartbeat_interval="30s", instance_lease="120s"),
                      tmp_path / "a.yaml")
    holder = TableHolder(cfg, state_unknown=True)
    sync = make_sync(cfg, holder, Metrics(), "inst-a")
    swapped: list[float] = []
    holder.listen(lambda old, new: swapped.append(time.monotonic())
                  if new.by_name["iris"].killed else None)
    writes: list[tuple[float, int]] = []
    snap = sync.snapshot
    write = snap.write

    async def recorded(doc: StateDoc, origin: Any = None) -> bool:
        writes.append((time.monotonic(), doc.generation))
        return await write(doc, origin)

    snap.write = recorded  # type: ignore[method-assign]
    await sync.start()
    try:
        new, ev = await sync.write(kill_iris, draft)
        assert ev is not None and swapped
        gen = new.generation
        await wait_until(lambda: snap.written == gen, 5.0, what="the kill's snapshot")
        # its own push came back (the event judged) and its ack went out: nothing of this
        # generation is left to write
        await wait_until(lambda: sync._judged == ev["hash"], 5.0, what="the push's echo")
    finally:
        await sync.stop()  # (its side tasks waited for, the last snapshot flushed)
    of_gen = [t for t, g in writes if g == gen]
    assert len(of_gen) == 1, writes
    # (loop timers may fire up to a millisecond early: half the delay is the bound)
    assert of_gen[0] - swapped[0] >= ACK_AFTER / 2, (of_gen[0] - swapped[0], ACK_AFTER)


def test_the_same_document_is_told_by_its_write_not_by_every_field() -> None:
    from gateway.state.snapshot import _same

    doc = StateDoc(generation=4, audit_seq=9, audit_head="h9", writes=("4:w",))
    echo = StateDoc.from_json(doc.to_json())  # (the push's copy: equal, another object)
    assert echo is not doc and _same((doc, None), (echo, None))
    assert not _same((doc, None), (echo, {"epoch": "e"}))  # (another origin: written)
    for other in (StateDoc(generation=4, audit_seq=10, audit_head="h10", writes=("4:w",)),
                  StateDoc(generation=4, audit_seq=9, audit_head="h9", writes=("4:x",)),
                  StateDoc(generation=5, audit_seq=9, audit_head="h9", writes=("4:w",))):
        assert not _same((doc, None), (other, None))
    bare = StateDoc(generation=1)  # (no write id: never taken for another object)
    assert _same((bare, None), (bare, None))
    assert not _same((bare, None), (StateDoc(generation=1), None))
