"""POST /v1/alerts/alertmanager (control/alerts.py) on a real gateway over HTTP."""

from __future__ import annotations

import asyncio
import copy
from pathlib import Path
from typing import Any

import pytest
from aiohttp import ClientSession

from gateway.control.alertclaims import Budget
from gateway.errors import StoreUnavailable
from tests.backends import echo_app
from tests.conftest import bearer, running_gateway, two_versions, wait_until, write_config
from tests.test_alerting import payload

PATH = "/v1/alerts/alertmanager"
INFER = "/v2/models/iris/infer"


ALERT = bearer("killgate:alert", "am", 10800)
READ = bearer("killgate:read", "am", 10800)


async def _gateway_cfg(tmp: Path, backends: Any, alerts: str = "alerts:\n  alertmanager: {}\n",
                       w2: float = 50) -> Path:
    p1, p2 = await backends(echo_app("v1")), await backends(echo_app("v2"))
    return write_config(tmp, two_versions(p1, p2, 100 - w2, w2), extra=alerts)


async def _post(session: ClientSession, admin: str, body: Any,
                headers: dict[str, str] = ALERT) -> tuple[int, Any]:
    kw: dict[str, Any] = {"data": body} if isinstance(body, str | bytes) else {"json": body}
    # Alertmanager's own header, also on the raw bodies
    headers = {**headers, "Content-Type": "application/json"}
    async with session.post(admin + PATH, headers=headers, **kw) as r:
        return r.status, await r.json()


async def _audit(session: ClientSession, admin: str) -> list[dict[str, Any]]:
    async with session.get(admin + "/v1/audit?limit=1000", headers=READ) as r:
        return list((await r.json())["events"])


async def _state(session: ClientSession, admin: str) -> tuple[int, list[Any], int]:
    async with session.get(admin + "/v1/status", headers=READ) as r:
        st = await r.json()
    return st["generation"], st["kills"], len(await _audit(session, admin))


async def _versions(session: ClientSession, url: str, n: int = 40) -> set[str]:
    seen = set()
    for _ in range(n):
        async with session.post(url + INFER, json={}) as r:
            seen.add(r.headers.get("x-killgate-version", ""))
    return seen


async def test_a_firing_alert_kills_the_version_and_the_audit_names_it(
        tmp_path: Path, backends, session) -> None:
    cfg = await _gateway_cfg(tmp_path, backends)
    async with running_gateway(cfg) as g:
        assert await _versions(session, g.url) == {"v1", "v2"}
        status, body = await _post(session, g.admin,
                                   payload(killgate_action="kill", route="iris", version="v2"))
        assert status == 200, body
        (act,) = body["actions"]
        assert act["action"] == "kill" and act["outcome"] == "acted" and not act["dry_run"]
        assert act["target"] == {"scope": "version", "route": "iris", "version": "v2"}
        assert act["fingerprint"] == "3f1c2b9a8d7e6f50" and act["generation"] > 0
        assert act["applied"]["acked"] == act["applied"]["instances"] == 1
        assert await _versions(session, g.url) == {"v1"}
        ev = next(e for e in await _audit(session, g.admin) if e["action"] == "kill")
        assert ev["actor"] == "alertmanager/killgate" and ev["id"] == act["audit_id"]
        assert ev["evidence"]["caller"] == "am"  # the token's subject (the payload names
        # the receiver, so whoever holds an alert token chooses the actor's second half)
        alert = ev["evidence"]["alert"]
        assert alert["labels"]["alertname"] == "KillgateCanaryErrorRate"
        assert alert["annotations"]["summary"] == "v2 errors 40% vs stable 0%"
        assert alert["generatorURL"] == "http://prom.example:9090/graph?g0.expr=x"
        assert "v2 errors 40%" in ev["reason"]
        async with session.get(g.admin + "/v1/status", headers=READ) as r:
            (kill,) = (await r.json())["kills"]
        assert kill["actor"] == "alertmanager/killgate"
        assert g.gw.metrics.get("killgate_alertmanager_alerts_total", ("acted",)) == 1



async def test_one_alerts_long_text_or_many_labels_do_not_lose_the_kill(
        tmp_path: Path, backends, session) -> None:
    """Alertmanager never retries a 4xx, so a notification is not refused for people's
    text: a long runbook annotation and 80 pod labels on one alert, another alert beside
    it, a receiver named in French: the kill is made and the audit keeps the text, cut."""
    cfg = await _gateway_cfg(tmp_path, backends)
    body = payload(killgate_action="kill", route="iris", version="v2")
    first = body["alerts"][0]
    first["labels"] = {**{f"pod_label_{i}": "x" for i in range(80)}, **first["labels"]}
    first["annotations"] = {**first["annotations"], "runbook": "step " * 2000}
    other = {**first, "fingerprint": "0000000000000001", "labels": {"alertname": "Other"}}
    body["alerts"].append(other)
    body["receiver"] = "équipe-ml"
    async with running_gateway(cfg) as g:
        status, answer = await _post(session, g.admin, body)
        assert status == 200, answer
        assert [a["outcome"] for a in answer["actions"]] == ["acted", "ignored"]
        assert await _versions(session, g.url) == {"v1"}
        ev = next(e for e in await _audit(session, g.admin) if e["action"] == "kill")
        assert ev["actor"] == "alertmanager/\\xe9quipe-ml"
        runbook = ev["evidence"]["alert"]["annotations"]["runbook"]
        assert runbook.startswith("step step") and runbook.endswith("…[cut]")
        assert len(ev["evidence"]["alert"]["labels"]) == 64


async def test_alerts_alertmanager_left_out_are_counted_and_logged(
        tmp_path: Path, backends, session, caplog: pytest.LogCaptureFixture) -> None:
    """`truncatedAlerts` (Alertmanager's max_alerts): alerts killgate never sees, so
    nothing acts on them; they must not pass unnoticed. The alerts delivered still act."""
    cfg = await _gateway_cfg(tmp_path, backends)
    body = {**payload(killgate_action="kill", route="iris", version="v2"),
            "truncatedAlerts": 3}
    async with running_gateway(cfg) as g:
        status, answer = await _post(session, g.admin, body)
        assert status == 200, answer
        assert [a["outcome"] for a in answer["actions"]] == ["acted"]
        assert g.gw.metrics.get("killgate_alertmanager_alerts_total", ("truncated",)) == 3
        status, answer = await _post(session, g.admin, {**body, "truncatedAlerts": 10**400})
        assert status == 200, answer  # (a count no float holds: bounded, not a 500)
        assert g.gw.metrics.get("killgate_alertmanager_alerts_total", ("truncated",)) == 3 + 10**9
        line = next(r for r in caplog.records if "alerts_truncated" in r.getMessage())
        assert line.levelname == "WARNING" and line.kg_fields["truncated"] == 3
        for odd in (0, -1, True, "3", None):  # not a count: nothing is counted
            status, answer = await _post(session, g.admin, {**body, "truncatedAlerts": odd})
            assert status == 200 and answer["actions"][0]["outcome"] == "duplicate"
        assert g.gw.metrics.get("killgate_alertmanager_alerts_total", ("truncated",)) == 3 + 10**9


async def test_fifty_resends_then_resolved_make_one_kill(tmp_path: Path, backends,
                                                         session) -> None:
    """RELIABILITY row 58: the same firing alert 50 times, then `resolved`: one kill, one
    audit event, and the kill stays."""
    cfg = await _gateway_cfg(tmp_path, backends)
    async with running_gateway(cfg) as g:
        gen0, _, audit0 = await _state(session, g.admin)
        firing = payload(killgate_action="kill", route="iris", version="v2")
        outcomes = []
        for _ in range(50):
            status, body = await _post(session, g.admin, firing)
            assert status == 200
            outcomes.append(body["actions"][0]["outcome"])
        assert outcomes == ["acted"] + ["duplicate"] * 49
        status, body = await _post(session, g.admin, payload(
            "resolved", killgate_action="kill", route="iris", version="v2"))
        assert status == 200 and body["actions"][0]["outcome"] == "resolved"
        assert body["actions"][0]["action"] == "none"
        gen, kills, audit = await _state(session, g.admin)
        assert gen == gen0 + 1 and audit == audit0 + 1
        assert [k["version"] for k in kills] == ["v2"]
        assert await _versions(session, g.url) == {"v1"}
        # a new firing episode (new startsAt) after a person's unkill acts again, once
        again = copy.deepcopy(firing)
        again["alerts"][0]["startsAt"] = "2024-05-02T10:00:00.000Z"
        async with session.post(g.admin + "/v1/unkill", headers=bearer("killgate:kill", "am", 10800),
                                json={"scope": "version", "route": "iris", "version": "v2",
                                      "reason": "fixed"}) as r:
            assert r.status == 200
        assert (await _post(session, g.admin, firing))[1]["actions"][0]["outcome"] == "duplicate"
        assert (await _post(session, g.admin, again))[1]["actions"][0]["outcome"] == "acted"


@pytest.mark.parametrize("body", [
    "{not json", b"\xff\xfe", "[]", '"firing"',
    {"version": "4", "receiver": "k", "status": "firing"},
    {**payload(killgate_action="kill", route="iris"), "version": 4},
    {**payload(killgate_action="kill", route="iris"), "alerts": [{"status": "firing"}]},
])
async def test_malformed_payloads_are_400_and_change_nothing(tmp_path: Path, backends, session,
                                                             body: Any) -> None:
    cfg = await _gateway_cfg(tmp_path, backends)
    async with running_gateway(cfg) as g:
        before = await _state(session, g.admin)
        status, answer = await _post(session, g.admin, body)
        assert status == 400, answer
        assert answer["error"]["type"] == "bad_request" and answer["error"]["message"]
        assert await _state(session, g.admin) == before


async def test_unknown_mappings_are_answered_counted_and_ignored(tmp_path: Path, backends,
                                                                 session) -> None:
    cfg = await _gateway_cfg(tmp_path, backends)
    async with running_gateway(cfg) as g:
        before = await _state(session, g.admin)
        body = payload(killgate_action="kill", route="iris")
        first = body["alerts"][0]
        body["alerts"] = [
            {**first, "fingerprint": "a1", "labels": {"alertname": "Other"}},
            {**first, "fingerprint": "a2", "labels": {"killgate_action": "explode",
                                                      "route": "iris"}},
            {**first, "fingerprint": "a3", "labels": {"killgate_action": "rollback",
                                                      "route": "nope"}},
            {**first, "fingerprint": "a4", "labels": {"killgate_action": "kill",
                                                      "route": "iris", "version": "v 7"}},
            {**first, "fingerprint": "a5", "labels": {"killgate_action": "kill"}},
        ]
        status, answer = await _post(session, g.admin, body)
        assert status == 200
        got = [(a["fingerprint"], a["action"], a["outcome"]) for a in answer["actions"]]
        assert got == [("a1", "none", "ignored"), ("a2", "none", "unmapped"),
                       ("a3", "none", "unmapped"), ("a4", "none", "unmapped"),
                       ("a5", "none", "unmapped")]
        assert "no route named 'nope'" in answer["actions"][2]["message"]
        assert await _state(session, g.admin) == before
        assert g.gw.metrics.get("killgate_alertmanager_alerts_total", ("unmapped",)) == 4
        assert g.gw.metrics.get("killgate_alertmanager_alerts_total", ("ignored",)) == 1


async def test_scope_killgate_alert_is_needed_and_allows_nothing_else(
        tmp_path: Path, backends, session) -> None:
    cfg = await _gateway_cfg(tmp_path, backends)
    firing = payload(killgate_action="kill", route="iris", version="v2")
    async with running_gateway(cfg) as g:
        before = await _state(session, g.admin)
        for headers, code in ((READ, 403), (bearer("killgate:kill killgate:rollout", "am", 10800), 403),
                              ({}, 401), ({"Authorization": "Bearer nope"}, 401)):
            status, answer = await _post(session, g.admin, firing, headers)
            assert status == code, answer
        assert (await _state(session, g.admin))[:2] == before[:2]  # (denials are audited)
        # the alert scope opens this endpoint only
        async with session.post(g.admin + "/v1/kill", headers=ALERT,
                                json={"scope": "global", "reason": "x"}) as r:
            assert r.status == 403
        async with session.get(g.admin + "/v1/status", headers=ALERT) as r:
            assert r.status == 403
        assert (await _post(session, g.admin, firing, bearer("killgate:admin", "am", 10800)))[0] == 200


async def test_observe_mode_records_what_it_would_do(tmp_path: Path, backends,
                                                     session) -> None:
    cfg = await _gateway_cfg(tmp_path, backends,
                             alerts="alerts:\n  alertmanager: {mode: observe}\n")
    async with running_gateway(cfg) as g:
        gen0, _, audit0 = await _state(session, g.admin)
        firing = payload(killgate_action="kill", route="iris", version="v2")
        status, body = await _post(session, g.admin, firing)
        (act,) = body["actions"]
        assert status == 200 and act["dry_run"] and act["outcome"] == "dry_run"
        assert act["action"] == "kill" and "would kill version v2" in act["message"]
        assert (await _post(session, g.admin, firing))[1]["actions"][0]["outcome"] == "duplicate"
        gen, kills, audit = await _state(session, g.admin)
        assert (gen, kills, audit) == (gen0, [], audit0 + 1)
        ev = (await _audit(session, g.admin))[0]
        assert ev["action"] == "alert.observe.kill" and ev["would_change"] is True
        assert ev["actor"] == "alertmanager/killgate" and ev["evidence"]["alert"]["labels"]
        assert await _versions(session, g.url) == {"v1", "v2"}


async def test_rollback_alert_moves_the_route_to_its_stable(tmp_path: Path, backends,
                                                            session) -> None:
    cfg = await _gateway_cfg(tmp_path, backends)
    async with running_gateway(cfg) as g:
        body = payload(killgate_action="rollback", route="iris", version="v2")
        status, answer = await _post(session, g.admin, body)
        assert status == 200 and answer["actions"][0]["outcome"] == "acted"
        assert await _versions(session, g.url) == {"v1"}
        async with session.get(g.admin + "/v1/status", headers=READ) as r:
            route = (await r.json())["routes"]["iris"]
        assert route["latched"] and route["override"]["actor"] == "alertmanager/killgate"
        # a rollback with nowhere to go is refused per alert, changing nothing
        stale = payload(killgate_action="rollback", route="iris")
        stale["alerts"][0]["fingerprint"] = "ffff"
        before = await _state(session, g.admin)
        status, answer = await _post(session, g.admin, stale)
        assert status == 200 and answer["actions"][0]["outcome"] == "refused", answer
        assert await _state(session, g.admin) == before


async def test_not_enabled_is_404(tmp_path: Path, backends, session) -> None:
    cfg = await _gateway_cfg(tmp_path, backends, alerts="")
    async with running_gateway(cfg) as g:
        status, answer = await _post(session, g.admin,
                                     payload(killgate_action="kill", route="iris"))
        assert status == 404 and answer["error"]["type"] == "not_enabled"
        assert "alerts.alertmanager" in answer["error"]["message"]


async def test_an_oversized_notification_is_413_and_changes_nothing(tmp_path: Path, backends,
                                                                    session) -> None:
    """Beyond admin.max_body_size (64 KiB): the README's receiver sets max_alerts: 20."""
    cfg = await _gateway_cfg(tmp_path, backends)
    async with running_gateway(cfg) as g:
        before = await _state(session, g.admin)
        body = payload(killgate_action="kill", route="iris", version="v2")
        body["alerts"][0]["annotations"]["description"] = "x" * 4000
        body["alerts"] = [dict(body["alerts"][0], fingerprint=f"f{i}") for i in range(20)]
        status, answer = await _post(session, g.admin, body)
        assert status == 413 and answer["error"]["type"] == "body_too_large", answer
        assert await _state(session, g.admin) == before


class _LostStore:
    """The receiver's writer and claims as they are when the store goes away right after
    an alert was claimed: the write and the release both fail (as a receiver killed
    between the two leaves it: claimed, not applied)."""

    def __init__(self, inner: Any) -> None:
        self.inner = inner

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)

    async def write(self, *a: Any) -> Any:
        raise StoreUnavailable("lost")

    async def idem_release(self, key: str) -> None:
        raise StoreUnavailable("lost")


async def test_an_alert_claimed_but_never_applied_acts_on_a_later_retry(
        tmp_path: Path, backends, session) -> None:
    """Before: the claim was kept for the whole dedupe window (a week), so every retry of
    that firing alert answered `duplicate` and the canary was never killed."""
    cfg = await _gateway_cfg(tmp_path, backends)
    async with running_gateway(cfg) as g:
        rx = g.gw.alert_receiver
        rx.local = None  # (the claims' own handling, no local kill to fall back on: test_alerts_local_kill)
        writer, claims = rx.writer, rx.claims
        rx.writer, rx.claims = _LostStore(writer), _LostStore(claims)
        rx.pending = 0.5
        firing = payload(killgate_action="kill", route="iris", version="v2")
        status, answer = await _post(session, g.admin, firing)
        assert status == 503, answer
        rx.writer, rx.claims = writer, claims

        async def retried() -> bool:
            status, answer = await _post(session, g.admin, firing)
            if status == 503:  # still claimed (for `pending`): retried again, not lost
                assert answer["error"]["type"] == "too_many_alerts", answer
                return False
            assert status == 200, answer
            return bool(answer["actions"][0]["outcome"] == "acted")

        await wait_until(retried, timeout=10, interval=0.1, what="the retry to act")
        assert await _versions(session, g.url) == {"v1"}
        # once acted, the episode is remembered for the dedupe window, not just briefly
        await asyncio.sleep(0.6)
        assert (await _post(session, g.admin, firing))[1]["actions"][0]["outcome"] == \
            "duplicate"


class _Dying:
    """The receiver's writer as it is on an instance that dies while it applies an alert
    (SIGKILL, OOM): the write starts, the episode is claimed, and nothing is applied."""

    def __init__(self, inner: Any) -> None:
        self.inner = inner
        self.entered = asyncio.Event()
        self.die = asyncio.Event()

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)

    async def write(self, *a: Any) -> Any:
        self.entered.set()
        await self.die.wait()
        raise StoreUnavailable("the instance died")


async def test_a_retry_while_another_request_applies_the_alert_is_503_not_duplicate(
        tmp_path: Path, backends, session) -> None:
    """Before: a retry that came while the episode was claimed but not yet applied (its
    instance dying, or slow) answered 200 `duplicate`; Alertmanager took that as delivered
    and did not retry, and the kill was lost until its repeat_interval (4h)."""
    cfg = await _gateway_cfg(tmp_path, backends)
    async with running_gateway(cfg) as g:
        rx = g.gw.alert_receiver
        rx.local = None  # (the claims' own handling, no local kill to fall back on: test_alerts_local_kill)
        real, dying = rx.writer, _Dying(rx.writer)
        rx.writer = dying
        firing = payload(killgate_action="kill", route="iris", version="v2")
        first = asyncio.create_task(_post(session, g.admin, firing))
        await asyncio.wait_for(dying.entered.wait(), 10)
        rx.writer = real
        status, answer = await _post(session, g.admin, firing)  # Alertmanager's retry
        assert status == 503 and answer["error"]["type"] == "too_many_alerts", answer
        assert "being applied" in answer["error"]["message"]
        dying.die.set()
        assert (await asyncio.wait_for(first, 10))[0] == 503
        status, answer = await _post(session, g.admin, firing)  # the next retry acts
        assert status == 200 and answer["actions"][0]["outcome"] == "acted", answer
        assert await _versions(session, g.url) == {"v1"}
        status, answer = await _post(session, g.admin, firing)
        assert status == 200 and answer["actions"][0]["outcome"] == "duplicate", answer


@pytest.mark.parametrize("mode", ["act", "observe"])
async def test_new_firing_alerts_are_rate_bounded_and_deferred_with_503(
        tmp_path: Path, backends, session, mode: str) -> None:
    """An alert token sending ever new fingerprints left a week-long record in the store
    for each (and, in observe mode, an audit event each), without bound."""
    cfg = await _gateway_cfg(tmp_path, backends,
                             alerts=f"alerts:\n  alertmanager: {{mode: {mode}}}\n")
    async with running_gateway(cfg) as g:
        rx = g.gw.alert_receiver
        clock = [0.0]
        rx.budget = Budget(3, 3600.0, clock=lambda: clock[0])  # 3 at once, 1 a second
        audit0 = len(await _audit(session, g.admin))
        body = payload(killgate_action="kill", route="iris", version="v2")
        body["alerts"] = [dict(body["alerts"][0], fingerprint=f"f{i}") for i in range(5)]
        status, answer = await _post(session, g.admin, body)
        assert status == 503 and answer["error"]["type"] == "too_many_alerts", answer
        assert "2 of 5 alerts" in answer["error"]["message"]
        audit1 = len(await _audit(session, g.admin))
        assert audit1 - audit0 == (1 if mode == "act" else 3)
        assert g.gw.metrics.get("killgate_alertmanager_alerts_total", ("deferred",)) == 2
        # Alertmanager retries: the three handled are duplicates, the rest act once refilled
        clock[0] += 2.0
        status, answer = await _post(session, g.admin, body)
        assert status == 200, answer
        assert [a["outcome"] for a in answer["actions"]] == ["duplicate"] * 3 + (
            ["unchanged"] * 2 if mode == "act" else ["dry_run"] * 2)
