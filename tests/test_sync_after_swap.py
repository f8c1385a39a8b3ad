"""What an instance does after it swaps in a new state, and when (gateway/state/sync.py).

A push wakes every instance and Redis at once; what can wait waits until that burst has
passed: the ack (ACK_AFTER) and the `state_applied` line (LOG_AFTER). The swap itself
happens in the loop turn that read the push, and the receipt still counts every instance.
Two `Sync`s in this process on our own redis-server; a third connection listens to the
acks channel as any instance does.
"""

from __future__ import annotations

import asyncio
import logging
import time
from pathlib import Path

import pytest

from gateway.configfile import LoadedConfig
from gateway.control.table import TableHolder
from gateway.domain.audit import AuditDraft
from gateway.domain.statedoc import Change, KillFlag, StateDoc
from gateway.state import make_sync
from gateway.state.appliedlog import LOG_AFTER, AppliedLog
from gateway.state.resp import connect, parse_endpoint
from gateway.state.sync import ACK_AFTER, Sync
from gateway.telemetry.metrics import Metrics
from tests.conftest import RedisServer, wait_until
from tests.staterig import redis_section, sync_config


def loaded(redis: RedisServer, tmp: Path, name: str) -> LoadedConfig:
    # heartbeats far apart: the only ack in the window is the one after the swap
    return sync_config(redis_section(redis.url, "kgafter", f"{tmp}/snap-{name}.json",
                                     heartbeat_interval="30s", instance_lease="120s"),
                       tmp / f"{name}.yaml")


def kill_iris(cur: StateDoc) -> Change:
    return Change(kills={"route:iris": KillFlag("route", "iris", None, "alice", "r", "t", 0)})


def draft(cur: StateDoc, new: StateDoc) -> AuditDraft:
    return AuditDraft("alice", "kill", {"scope": "route", "route": "iris"}, "r")


async def test_a_pushed_kill_is_in_force_before_its_ack_and_its_log_line(
        redis_server: RedisServer, tmp_path: Path,
        caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="killgate.state")
    holders: dict[str, TableHolder] = {}
    syncs: dict[str, Sync] = {}
    for name in ("a", "b"):
        cfg = loaded(redis_server, tmp_path, name)
        holders[name] = TableHolder(cfg, state_unknown=True)
        syncs[name] = make_sync(cfg, holders[name], Metrics(), f"inst-{name}")
    swapped: list[tuple[float, float]] = []  # b's swap: (monotonic, wall)
    holders["b"].listen(lambda old, new: swapped.append((time.monotonic(), time.time()))
                        if new.by_name["iris"].killed else None)
    acks: list[tuple[float, bytes]] = []
    probe = await connect(parse_endpoint(redis_server.url), 2.0,
                          on_message=lambda _ch, data: acks.append((time.monotonic(), data)))
    try:
        for s in syncs.values():
            await s.start()
        await probe.call("SUBSCRIBE", "kgafter:acks", timeout=2.0)
        new, ev = await syncs["a"].write(kill_iris, draft)
        assert ev is not None
        gen = new.generation
        await wait_until(lambda: swapped, 5.0, what="the kill in force on b")
        swap_at, swap_wall = swapped[0]
        receipt = await syncs["a"].receipt(gen, 5.0)
        assert receipt["applied"]["acked"] == receipt["applied"]["instances"] == 2, receipt

        # b's ack of this generation (a heartbeat record: kid mac generation wall config
        # instance) left only once the burst had passed, and the receipt counted it
        from_b = [t for t, data in acks
                  if data.split(b" ")[5:6] == [b"inst-b"] and int(data.split(b" ")[2]) >= gen]
        assert from_b, acks
        # (loop timers may fire up to a millisecond early: half the delay is the bound)
        assert from_b[0] - swap_at >= ACK_AFTER / 2, (from_b[0] - swap_at, ACK_AFTER)

        # b's state_applied line says when the swap happened, and was written later
        def line() -> logging.LogRecord | None:
            return next((r for r in caplog.records if r.getMessage() == "state_applied"
                         and r.kg_fields["generation"] == gen  # type: ignore[attr-defined]
                         and abs(r.kg_fields["applied_at"] - swap_wall) < 0.05), None)  # type: ignore[attr-defined]

        await wait_until(lambda: line() is not None, 5.0, what="b's state_applied line")
        rec = line()
        assert rec is not None
        fields = rec.kg_fields  # type: ignore[attr-defined]
        assert fields["kills"] == ["route:iris"]
        # (after the ack: not in the burst, and not ahead of the ack either)
        assert rec.created - fields["applied_at"] >= ACK_AFTER / 2
        assert rec.created - swap_wall <= LOG_AFTER + 1.0
    finally:
        await probe.aclose()
        for s in syncs.values():
            await s.stop()


async def test_lines_not_yet_written_are_written_at_stop(
        redis_server: RedisServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
        caplog: pytest.LogCaptureFixture) -> None:
    """A swap just before the instance stops still gets its line (here its ack, and so
    the line, would come later than `stop` waits for side tasks)."""
    monkeypatch.setattr("gateway.state.appliedlog.LOG_AFTER", 60.0)  # never by the timer here
    monkeypatch.setattr("gateway.state.sync.ACK_AFTER", 60.0)
    caplog.set_level(logging.INFO, logger="killgate.state")
    cfg = loaded(redis_server, tmp_path, "a")
    sync = make_sync(cfg, TableHolder(cfg, state_unknown=True), Metrics(), "inst-a")
    await sync.start()
    try:
        new, _ = await sync.write(kill_iris, draft)
        await asyncio.sleep(0.05)
        assert not [r for r in caplog.records if r.getMessage() == "state_applied"
                    and r.kg_fields["generation"] == new.generation]  # type: ignore[attr-defined]
    finally:
        await sync.stop()
        for task in list(sync._side_tasks):  # the ack still asleep
            task.cancel()
    assert [r for r in caplog.records if r.getMessage() == "state_applied"
            and r.kg_fields["generation"] == new.generation]  # type: ignore[attr-defined]


async def test_an_earlier_swaps_ack_writes_only_the_lines_up_to_its_generation(
        caplog: pytest.LogCaptureFixture) -> None:
    """The ack of an earlier swap (its 2 ms sleep ending just after a newer swap) wrote the
    newer swap's line too, in the newer swap's burst (a CI run's flake of the test above:
    0.2 ms after the swap). It writes its own; the newer one waits for its own ack, or for
    LOG_AFTER after its own swap, not after the older one's."""
    caplog.set_level(logging.INFO, logger="killgate.state")
    log = AppliedLog()
    loop = asyncio.get_running_loop()

    def written() -> list[int]:
        return [r.kg_fields["generation"] for r in caplog.records  # type: ignore[attr-defined]
                if r.getMessage() == "state_applied"]

    log.later(1, [], time.time())
    await asyncio.sleep(LOG_AFTER * 0.6)
    log.later(2, ["route:iris"], time.time())
    second_at = loop.time()
    log.flush(1)  # the first swap's ack
    assert written() == [1]
    await wait_until(lambda: written() == [1, 2], 5.0, 0.0005, "the second line, by its timer")
    assert loop.time() - second_at >= LOG_AFTER * 0.8  # its own deadline, not the first's
    log.later(3, [], time.time())
    log.flush()  # at stop: everything
    assert written() == [1, 2, 3]
