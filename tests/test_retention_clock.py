"""Audit retention's `max_age` against a trimming instance whose clock runs ahead, with
real stores (redis-server, the local files): only events old by the store's clock (redis
TIME) or, on the local store, by the trail's own newest event go; before, everything but
the newest 100 went (the cut was `now - max_age` by the trimming instance's clock alone).
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import pytest

from gateway.domain import audit
from gateway.domain.retention import Retention, TrimWindow, age_clock
from tests.backends import echo_app
from tests.conftest import running_gateway, two_versions, write_config
from tests.test_audit_retention import KEY_ENV, _fill
from tests.test_killswitch import redis_state

pytestmark = pytest.mark.timeout(30)

AHEAD = 2 * 86400.0  # the trimming instance's clock: two days ahead
AGE = "  audit_retention: {max_age: 1h, interval: 1h}\n"


def _state(tmp: Path, redis: Any) -> str:
    if redis is not None:
        return redis_state(redis, tmp, extra=AGE)
    return (f"state:\n  backend: local\n  path: {tmp}/store.json\n  poll_interval: 50ms\n"
            f"  snapshot_path: {tmp}/snapshot.json\n  signing_key_env: {KEY_ENV}\n" + AGE)


@pytest.mark.parametrize("backend", ["local", "redis"])
async def test_an_instance_clock_ahead_trims_only_events_old_by_the_store(
        tmp_path: Path, backends, request: pytest.FixtureRequest,
        monkeypatch: pytest.MonkeyPatch, backend: str) -> None:
    p = await backends(echo_app("v1"))
    redis = request.getfixturevalue("redis_server") if backend == "redis" else None
    cfg = write_config(tmp_path, two_versions(p, p), state=_state(tmp_path, redis))
    real = audit.utc_now
    two_hours_ago = time.strftime("%Y-%m-%dT%H:%M:%S.000Z", time.gmtime(time.time() - 7200))
    # the events of the start and 30 more dated two hours ago (written then), 125 now
    monkeypatch.setattr(audit, "utc_now", lambda: two_hours_ago)
    async with running_gateway(cfg) as g:
        await _fill(g, 30)
        store = g.gw.sync.store
        old = len(await store.audit_events())
        monkeypatch.setattr(audit, "utc_now", real)
        await _fill(g, 125)
        n = len(await store.audit_events())
        retention = g.gw.sync.retention
        retention.clock = lambda: time.time() + AHEAD
        assert await retention.look() == 1
        events = await store.audit_events()
        ck = events[-1]
        assert ck["action"] == "audit.trim"
        # only the old ones: by the instance's clock alone, all but the newest 100
        assert ck["after"]["removed"] == old, (old, n, ck["after"])
        assert len(events) == n - old + 1
        assert all(e["time"] > two_hours_ago for e in events)
        # and a look right after removes nothing more (the checkpoint it wrote is dated
        # by the clock ahead: never the measure of the trail's age on the local store)
        assert await retention.look() == 0
        assert len(await store.audit_events()) == n - old + 1


def _ev(t: float, action: str = "kill") -> dict[str, Any]:
    return {"action": action, "time": time.strftime("%Y-%m-%dT%H:%M:%S.000Z", time.gmtime(t))}


def test_the_age_is_measured_by_the_earliest_clock_the_trim_can_read() -> None:
    now = 1_800_000_000.0
    trail = [_ev(now - 7200), _ev(now - 60), _ev(now + AHEAD, "audit.trim")]
    whole = TrimWindow(3, trail, trail[-1], trail[-1], [], "h", 3)
    # no store clock: the newest event that is no checkpoint
    assert age_clock(whole, now + AHEAD) == now - 60
    assert age_clock(whole, now - 600) == now - 600  # (a clock behind: itself)
    # a store clock (redis TIME): the earlier of it and the instance's
    part = TrimWindow(500, trail[:1], trail[-1], None, [], "h", clock=now)
    assert age_clock(part, now + AHEAD) == now
    # (and whether to read the trail: by the earlier clock too, state/retention.py)
    assert Retention(max_age=3600.0).due(500, trail[0], now)
    assert not Retention(max_age=3600.0).due(500, trail[0], now - 3600)


async def test_a_clock_ahead_does_not_make_every_look_due_on_the_local_store(
        tmp_path: Path, backends, monkeypatch: pytest.MonkeyPatch) -> None:
    """Whether a look reads (parses, verifies) the local trail is judged by the clock its
    age is measured by, the trail's newest event: by the instance's clock alone, one two
    days ahead found every look due (the oldest event "two days old"), read and verified
    the whole file at each, and removed nothing (the decision's age is by the trail).
    Found by review (impleft item 4); failed before: the decision was read, not "not due"."""
    p = await backends(echo_app("v1"))
    cfg = write_config(tmp_path, two_versions(p, p), state=_state(tmp_path, None))
    async with running_gateway(cfg) as g:
        await _fill(g, 120)
        retention = g.gw.sync.retention
        retention.clock = lambda: time.time() + AHEAD
        decision, ev = await retention.trim_once()
        assert ev is None and decision.why == "not due", decision
