"""Alerts that act while the state store is slow, lost, short of replicas, or its audit
trail cannot be written (control/alerts.py), with a real redis-server behind a forwarder or
the file store: a notification answered 503 is retried by Alertmanager, and that retry
must act as soon as the store answers again; the answer never says nothing changed when
its first alerts acted."""

from __future__ import annotations

import subprocess
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from gateway.errors import StoreConflict
from tests.backends import echo_app
from tests.conftest import RedisServer, running_gateway, two_versions, wait_until, write_config
from tests.faultproxy import Forwarder, redis_state_via
from tests.staterig import redis_state
from tests.test_alerting import payload
from tests.test_alerts import _post, _versions


def _claims(redis: RedisServer) -> list[str]:
    out = subprocess.run(["redis-cli", "-u", redis.url, "--scan", "--pattern", "kgao*idem*"],
                         capture_output=True, text=True, timeout=10, check=True).stdout
    return out.split()


@pytest.mark.timeout(60)
async def test_a_claim_left_by_a_timed_out_request_does_not_hold_off_the_retry(
        tmp_path: Path, backends, session, redis_server: RedisServer, fwd: Forwarder) -> None:
    """Before: the store was slow while an alert was being claimed; the request timed out
    (503, right) but its claim landed after it, and every retry of Alertmanager then
    answered 503 `too_many_alerts` ("being applied by another request") for a minute,
    though no request was applying it: the kill came a minute late. The process that made
    the claim knows that no request of its own holds it any more: it takes it over."""
    p1, p2 = await backends(echo_app("v1")), await backends(echo_app("v2"))
    cfg = write_config(tmp_path, two_versions(p1, p2, 50, 50),
                       state=redis_state_via(fwd, tmp_path, "kgao"),
                       extra="alerts:\n  alertmanager: {}\n")
    firing = payload(killgate_action="kill", route="iris", version="v2")
    async with running_gateway(cfg) as g:
        # (the claims' own handling, no local kill to fall back on: test_alerts_local_kill)
        g.gw.alert_receiver.local = None
        # (an alert refused, with nothing changed, loads the claim's script into redis: a
        # late EVALSHA of an unknown script would not claim anything)
        refused = payload(killgate_action="rollback", route="iris", version="v1")
        refused["alerts"][0]["fingerprint"] = "0000000000000001"
        status, answer = await _post(session, g.admin, refused)
        assert status == 200 and answer["actions"][0]["outcome"] == "refused", answer
        fwd.latency = 1.0  # over state.command_timeout (0.5 s): the claim arrives late
        status, answer = await _post(session, g.admin, firing)
        fwd.latency = 0.0
        assert status == 503 and answer["error"]["type"] == "state_store_unavailable", answer
        await wait_until(lambda: _claims(redis_server), 10, 0.05,
                         what="the timed-out request's claim landing in the store")
        status, answer = await _post(session, g.admin, firing)  # Alertmanager's retry
        assert status == 200, answer
        assert answer["actions"][0]["outcome"] == "acted", answer
        assert await _versions(session, g.url) == {"v1"}
        status, answer = await _post(session, g.admin, firing)
        assert status == 200 and answer["actions"][0]["outcome"] == "duplicate", answer


class _FaultAtSecondClaim:
    """The receiver's claims, with `fault` done just before the second alert of a
    notification is claimed (the first one already acted): the real redis-server killed,
    the local audit file made unwritable."""

    def __init__(self, inner: Any, fault: Callable[[], None]) -> None:
        self.inner, self.fault, self.calls = inner, fault, 0

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)

    async def idem_claim(self, *a: Any) -> Any:
        self.calls += 1
        if self.calls == 2:
            self.fault()
        return await self.inner.idem_claim(*a)


@pytest.mark.timeout(60)
async def test_a_store_lost_mid_notification_does_not_say_nothing_changed(
        tmp_path: Path, backends, session, redis_server: RedisServer, fwd: Forwarder) -> None:
    """Before: the answer to a notification whose second alert met a dead store said "the
    state store cannot be reached, nothing was changed", though its first alert had killed
    v2: whoever read Alertmanager's log took the canary for alive."""
    p1, p2 = await backends(echo_app("v1")), await backends(echo_app("v2"))
    cfg = write_config(tmp_path, two_versions(p1, p2, 50, 50),
                       state=redis_state_via(fwd, tmp_path, "kgao"),
                       extra="alerts:\n  alertmanager: {}\n")
    body = payload(killgate_action="kill", route="iris", version="v2")
    first = body["alerts"][0]
    body["alerts"] = [first, {**first, "fingerprint": "0000000000000002",
                              "labels": {**first["labels"], "version": "v1"}},
                      {**first, "fingerprint": "0000000000000003"}]
    async with running_gateway(cfg) as g:
        rx = g.gw.alert_receiver
        rx.local = None  # (the claims' own handling, no local kill to fall back on: test_alerts_local_kill)
        rx.claims = _FaultAtSecondClaim(rx.claims, redis_server.kill)
        status, answer = await _post(session, g.admin, body)
        assert status == 503 and answer["error"]["type"] == "state_store_unavailable", answer
        message = answer["error"]["message"]
        assert "nothing was changed" not in message, message
        assert "1 alert(s) of this notification acted on before it are in force" in message
        assert "the 1 after it were not acted on" in message
        assert await _versions(session, g.url) == {"v1"}  # (the first one's kill holds)
        redis_server.start()


@pytest.mark.timeout(30)
async def test_a_kill_not_yet_on_a_replica_does_not_stop_the_alerts_after_it(
        tmp_path: Path, backends, session, redis_server: RedisServer, fwd: Forwarder) -> None:
    """With state.min_replicas and no replica attached (one lost, or after a failover until
    one rejoins), every write answers 503 not_durable: in force, not yet on a replica. The
    webhook raised it from the first alert of a notification, so the alerts after it were
    never looked at; Alertmanager's retry met the same at the first alert (its kill
    confirmed again, still on no replica), and for as long as no replica was there the
    others' kills were never made. Each alert is acted on, and the 503 names them."""
    p1, p2 = await backends(echo_app("v1")), await backends(echo_app("v2"))
    cfg = write_config(tmp_path, two_versions(p1, p2, 50, 50),
                       state=redis_state_via(fwd, tmp_path, "kgnd", min_replicas="1",
                                             replica_timeout="100ms"),
                       extra="alerts:\n  alertmanager: {}\n")
    body = payload(killgate_action="kill", route="iris", version="v2")
    first = body["alerts"][0]
    body["alerts"] = [first, {**first, "fingerprint": "0000000000000002",
                              "labels": {**first["labels"], "version": "v1"}}]
    async with running_gateway(cfg) as g:
        for attempt in range(2):  # (Alertmanager's retry: the same answer, nothing lost)
            status, answer = await _post(session, g.admin, body)
            assert status == 503 and answer["error"]["type"] == "not_durable", answer
            message = answer["error"]["message"]
            assert "2 of the 2 alerts" in message, (attempt, message)
            kills = {k.version for k in g.gw.holder.doc.kills.values()}
            assert kills == {"v1", "v2"}, (attempt, kills)


def _audit_lost(audit: Path) -> Callable[[], None]:
    """The local store's audit file made unwritable (a folder in its place: a full or
    read-only disk, as root writes anywhere)."""
    def fault() -> None:
        audit.rename(audit.with_name("moved.jsonl"))
        audit.mkdir()
    return fault


@pytest.mark.timeout(30)
async def test_an_audit_trail_lost_mid_notification_does_not_say_nothing_was_applied(
        tmp_path: Path, backends, session) -> None:
    """As with a store lost mid-notification: the answer said "the audit trail cannot be
    written, so the action was not applied" though the notification's first alert had
    killed v2 (whoever read Alertmanager's log took the canary for alive)."""
    p1, p2 = await backends(echo_app("v1")), await backends(echo_app("v2"))
    cfg = write_config(tmp_path, two_versions(p1, p2, 50, 50),
                       extra="alerts:\n  alertmanager: {}\n")
    body = payload(killgate_action="kill", route="iris", version="v2")
    first = body["alerts"][0]
    body["alerts"] = [first, {**first, "fingerprint": "0000000000000002",
                              "labels": {**first["labels"], "version": "v1"}},
                      {**first, "fingerprint": "0000000000000003"}]
    async with running_gateway(cfg) as g:
        rx = g.gw.alert_receiver
        rx.claims = _FaultAtSecondClaim(
            rx.claims, _audit_lost(tmp_path / "store.json.audit.jsonl"))
        status, answer = await _post(session, g.admin, body)
        assert status == 503 and answer["error"]["type"] == "audit_unavailable", answer
        message = answer["error"]["message"]
        assert "not applied" not in message, message
        assert "1 alert(s) of this notification acted on before it are in force" in message
        assert "the 1 after it were not acted on" in message
        assert {k.version for k in g.gw.holder.doc.kills.values()} == {"v2"}


class _LosesRacesAtSecondWrite:
    """The receiver's writer, whose second write (the second alert's kill) loses every
    race to other writes landing at once, as `Writes.write` says after its ten tries
    (StoreConflict "the state kept changing; try again": 3 instances under a burst of
    admin writes lose ~1 % of them so)."""

    def __init__(self, inner: Any) -> None:
        self.inner, self.calls = inner, 0

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)

    async def write(self, *a: Any) -> Any:
        self.calls += 1
        if self.calls == 2:
            raise StoreConflict("the state kept changing; try again")
        return await self.inner.write(*a)


@pytest.mark.timeout(30)
async def test_an_alert_whose_kill_lost_every_race_is_answered_so_alertmanager_retries(
        tmp_path: Path, backends, session, redis_server: RedisServer) -> None:
    """Found by review revaudit5: a notification whose second alert's kill lost every race
    to other instances' writes was answered 409 `conflict`; Alertmanager retries only a
    5xx, so that kill, and every alert after it in the notification, was dropped until the
    group's repeat_interval (hours). It is a 503 now, naming what was and was not acted
    on, and Alertmanager's retry makes the kill."""
    p1, p2, p3 = (await backends(echo_app("v1")), await backends(echo_app("v2")),
                  await backends(echo_app("v3")))
    routes = two_versions(p1, p2, 50, 50).replace(
        '            - {name: v2', f'            - {{name: v3, url: "http://127.0.0.1:{p3}", '
        'weight: 0}\n            - {name: v2')
    cfg = write_config(tmp_path, routes, state=redis_state(redis_server, tmp_path, "a"),
                       extra="alerts:\n  alertmanager: {}\n")
    body = payload(killgate_action="kill", route="iris", version="v2")
    first = body["alerts"][0]
    body["alerts"] = [first, {**first, "fingerprint": "0000000000000002",
                              "labels": {**first["labels"], "version": "v3"}},
                      {**first, "fingerprint": "0000000000000003",
                       "labels": {**first["labels"], "version": "v1"}}]
    async with running_gateway(cfg) as g:
        rx = g.gw.alert_receiver
        rx.writer = _LosesRacesAtSecondWrite(rx.writer)
        status, answer = await _post(session, g.admin, body)
        assert status == 503 and answer["error"]["type"] == "conflict", answer
        message = answer["error"]["message"]
        assert "1 alert(s) of this notification acted on before it are in force" in message
        assert "this one and the 1 after it were not acted on" in message
        assert {k.version for k in g.gw.holder.doc.kills.values()} == {"v2"}
        status, answer = await _post(session, g.admin, body)  # Alertmanager's retry
        assert status == 200, answer
        assert [a["outcome"] for a in answer["actions"]] == ["duplicate", "acted", "acted"]
        assert {k.version for k in g.gw.holder.doc.kills.values()} == {"v1", "v2", "v3"}
