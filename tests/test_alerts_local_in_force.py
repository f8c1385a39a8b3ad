"""An alert's kill in a store outage: taken locally unless a kill through the store would
change nothing (domain/kills.in_force, the rule `kill --local` follows too).

control/alertlocal.py answered a firing alert "already killed, nothing kept" whenever the
snapshot held a flag at its key that no drill held (admin/localkill.in_force, the near-copy
for `POST /v1/kill?local=1`, followed the kill rule). They differed on two flags:

* one a re-seed carried over (`kills.carried`): it may be a kill another instance lifted
  before redis lost everything, and that instance's merge drops it. The alert was answered
  200 `unchanged` (Alertmanager does not resend it soon), nothing journaled: when the store
  came back and the lifting instance merged, the kill the alert asked for was gone on every
  instance while the alert still fired. Through the store the same alert writes a flag anew.
* one that does not cut in-flight answers: through the store the alert (always
  abort_inflight) upgrades it; locally it did nothing.

Real redis-server stopped and started, real gateways, Alertmanager's payload over HTTP.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from aiohttp import ClientSession

from tests.backends import echo_app
from tests.conftest import RedisServer, running_gateway, two_versions, wait_until, write_config
from tests.faultproxy import Forwarder, redis_state_via
from tests.staterig import redis_state
from tests.test_alerting import payload
from tests.test_alerts import READ, _post
from tests.test_attacks_state import post, stored_kills
from tests.test_keyed_audit import H
from tests.test_kill_carried_by_reseed import (
    KEY,
    c_merges_and_the_kill_stays,
    carry_a_lifted_kill,
    configs,
)

pytestmark = pytest.mark.timeout(60)

FIRING = payload(killgate_action="kill", route="iris", version="v2")
ALERTS = "alerts:\n  alertmanager: {}\n"


async def _local_kills(session: ClientSession, admin: str) -> list[dict[str, Any]]:
    async with session.get(admin + "/v1/status", headers=READ) as r:
        return list((await r.json())["store"]["local_kills"]["kills"])


async def test_an_alert_for_a_kill_the_store_holds_takes_no_local_kill_one_upgraded_does(
        tmp_path: Path, backends: Any, session: ClientSession,
        redis_server: RedisServer) -> None:
    cfg, _ = await configs(tmp_path, backends, redis_server, ALERTS)
    async with running_gateway(cfg, "a") as a:
        await post(session, a.admin, "/v1/kill", scope="version", route="iris", version="v2")
        await post(session, a.admin, "/v1/kill", scope="route", route="iris",
                   abort_inflight=False)
        redis_server.kill()
        # v2's kill is in force from the store, as the alert would make it: nothing kept
        status, answer = await _post(session, a.admin, FIRING)
        assert status == 200, answer
        (act,) = answer["actions"]
        assert act["outcome"] == "unchanged" and act["local"] is False, act
        assert f"{KEY} is already killed" in act["message"], act
        assert await _local_kills(session, a.admin) == []
        # the route's kill does not cut in-flight answers, which the alert's kill (through
        # the store, an upgrade) would: taken locally, as it would be merged
        route = payload(killgate_action="kill", route="iris")
        route["alerts"][0]["fingerprint"] = "0000000000000007"
        status, answer = await _post(session, a.admin, route)
        assert status == 200, answer
        (act,) = answer["actions"]
        assert act["outcome"] == "local" and act["changed"] is True, act
        (kept,) = await _local_kills(session, a.admin)
        assert kept["kill"] == "route:iris" and kept["abort_inflight"] is True, kept


async def test_an_alerts_kill_on_a_flag_a_reseed_carried_is_taken_locally_and_survives(
        tmp_path: Path, backends: Any, session: ClientSession,
        redis_server: RedisServer) -> None:
    """The carried flag as in test_kill_carried_by_reseed (c lifted v2's kill, redis lost
    everything before a heard of it, a re-seeded it back); then the store goes away and the
    alert for v2 fires on a. Before: `unchanged`, and c's merge later dropped the flag: v2
    served again on every instance, the alert still firing."""
    cfg_a, cfg_c = await configs(tmp_path, backends, redis_server, ALERTS)
    async with running_gateway(cfg_a, "a") as a:
        await carry_a_lifted_kill(tmp_path, session, redis_server, a)
        redis_server.kill()
        status, answer = await _post(session, a.admin, FIRING)
        assert status == 200, answer
        (act,) = answer["actions"]
        assert act["outcome"] == "local" and act["local"] is True, act  # was "unchanged"
        (kept,) = await _local_kills(session, a.admin)
        assert kept["kill"] == KEY and kept["actor"] == "alertmanager/killgate", kept

        redis_server.start()  # (empty: a re-seeds, then merges the alert's kill anew)
        await wait_until(lambda: KEY in stored_kills(redis_server)
                         and stored_kills(redis_server)[KEY]["actor"]
                         == "alertmanager/killgate", 10, 0.05,
                         "the alert's kill merged into the store as a flag of its own")
        await c_merges_and_the_kill_stays(cfg_c, redis_server, a)


async def test_an_alert_at_an_instance_cut_off_before_an_unkill_takes_the_kill_locally(
        tmp_path: Path, backends: Any, session: ClientSession, redis_server: RedisServer,
        fwd: Forwarder) -> None:
    """(found by review revmerge41 of impinforce) b is cut off from redis (a partition), and
    a lifts v2's kill meanwhile. An alert asking b to kill v2 was answered 200 `unchanged`
    ('already killed') from b's copy, which nobody had confirmed since the cut: nothing was
    kept, Alertmanager did not resend, and when b reached redis again it applied the unkill:
    v2 served while the alert fired, on every instance. A copy not confirmed for two polls
    and a command's wait (1 s at least) no longer says a kill is in force: the kill is
    taken locally and merged (a kill that is in force after all merges as no change)."""
    p = await backends(echo_app("v1"))
    routes = two_versions(p, p)
    (tmp_path / "b").mkdir()
    cfg_a = write_config(tmp_path, routes, state=redis_state(redis_server, tmp_path, "a"),
                         name="a.yaml")
    cfg_b = write_config(tmp_path / "b", routes, extra=ALERTS,
                         state=redis_state_via(fwd, tmp_path / "b", "kgtest",
                                               command_timeout="300ms"))
    async with running_gateway(cfg_a, "a") as a, running_gateway(cfg_b, "b") as b:
        await post(session, a.admin, "/v1/kill", scope="version", route="iris", version="v2")

        await wait_until(lambda: KEY in stored_kills(redis_server), 10, 0.05, "the kill")
        await wait_until(lambda: b.gw.holder.doc.kills.get(KEY) is not None, 10, 0.05,
                         "b holds the kill")
        fwd.point(None)  # b cut off from redis
        await post(session, a.admin, "/v1/unkill", scope="version", route="iris",
                   version="v2")
        assert KEY not in stored_kills(redis_server)
        assert b.gw.holder.doc.kills.get(KEY) is not None  # (b never heard of the unkill)
        await wait_until(lambda: not b.gw.sync.confirmed(), 10, 0.05,
                         "b's copy no longer confirmed (1 s without the store)")
        status, answer = await _post(session, b.admin, FIRING)
        assert status == 200, answer
        (act,) = answer["actions"]
        assert act["outcome"] == "local" and act["local"] is True, act
        (kept,) = await _local_kills(session, b.admin)
        assert kept["kill"] == KEY, kept
        # `kill --local` follows the same rule: the journal's entry, not b's stale copy
        async with session.post(b.admin + "/v1/kill?local=1", headers=H, json={
                "scope": "version", "route": "iris", "version": "v2",
                "reason": "INC-9"}) as r:
            said = await r.json()
        assert r.status == 202 and said["local"] is True and said["id"] == kept["id"], said
        fwd.point(redis_server.port)  # b reaches redis again: the kill is merged
        await wait_until(lambda: KEY in stored_kills(redis_server), 15, 0.05,
                         "the alert's kill merged into the store")


async def test_an_alert_at_an_instance_started_cut_off_takes_the_kill_locally(
        tmp_path: Path, backends: Any, session: ClientSession, redis_server: RedisServer,
        fwd: Forwarder) -> None:
    """(found by review revsync) b starts on its snapshot while cut off from redis, after a
    lifted v2's kill that the snapshot still holds. `Sync.confirmed` measured its window
    from the process's start when the store had never answered: with a poll interval of
    10 s (a window of 20.3 s) b's snapshot, which no store confirmed, counted as confirmed
    for the first 18 s it served, and the alert was answered 'already killed', nothing kept:
    once b reached redis it applied the unkill, and v2 served while the alert fired. A copy
    the store never confirmed to this process is not confirmed."""
    p = await backends(echo_app("v1"))
    routes = two_versions(p, p)
    (tmp_path / "b").mkdir()
    cfg_a = write_config(tmp_path, routes, state=redis_state(redis_server, tmp_path, "a"),
                         name="a.yaml")
    cfg_b = write_config(tmp_path / "b", routes, extra=ALERTS,
                         state=redis_state_via(fwd, tmp_path / "b", "kgtest",
                                               command_timeout="300ms", poll_interval="10s",
                                               instance_lease="20s", max_staleness="20s"))
    async with running_gateway(cfg_a, "a") as a:
        async with running_gateway(cfg_b, "b") as b:
            await post(session, a.admin, "/v1/kill", scope="version", route="iris",
                       version="v2")
            await wait_until(lambda: b.gw.holder.doc.kills.get(KEY) is not None, 10, 0.05,
                             "b holds the kill")
        # (b stopped: its snapshot holds the kill) a lifts it; b starts cut off from redis
        await post(session, a.admin, "/v1/unkill", scope="version", route="iris",
                   version="v2")
        assert KEY not in stored_kills(redis_server)
        fwd.point(None)
        async with running_gateway(cfg_b, "b") as b:
            assert b.gw.holder.doc.kills.get(KEY) is not None  # (from its snapshot)
            assert not b.gw.sync.synced_once
            assert not b.gw.sync.confirmed()
            status, answer = await _post(session, b.admin, FIRING)
            assert status == 200, answer
            (act,) = answer["actions"]
            assert act["outcome"] == "local" and act["local"] is True, act  # was "unchanged"
            fwd.point(redis_server.port)  # b reaches redis again: the kill is merged
            await wait_until(lambda: KEY in stored_kills(redis_server), 30, 0.05,
                             "the alert's kill merged into the store")
