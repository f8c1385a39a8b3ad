"""An alert that asks killgate to act and is not acted on (control/alerts.py, the shipped
KillgateAlertNotActed): the person paged by the acting alert must learn that nothing was
killed. The rule itself is unit-tested with promtool (killgate-rules.test.yml)."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest
from prometheus_client.parser import text_string_to_metric_families

from gateway.domain.alerting import MAX_UNROUTED
from tests.conftest import bearer, running_gateway
from tests.test_alerting import payload
from tests.test_alerts import READ, _gateway_cfg, _post


async def _outcomes(session, admin: str) -> dict[str, float]:
    async with session.get(admin + "/metrics") as r:
        text = await r.text()
    return {s.labels["outcome"]: s.value for f in text_string_to_metric_families(text)
            if f.name == "killgate_alertmanager_alerts" for s in f.samples
            if s.name == "killgate_alertmanager_alerts_total"}


async def test_an_alert_not_acted_on_is_counted_from_zero_and_logged_as_a_warning(
        tmp_path: Path, backends, session, caplog: pytest.LogCaptureFixture) -> None:
    """Before: the kill a rule asked for on a version this instance's config lacks (a
    rename, a config still rolling out) was answered 200 `unmapped` and logged at INFO
    (unseen at `log.level: warning`); its series first appeared at 1, so increase()
    never saw it, and no shipped alert watched it: the on-call paged by the acting alert
    had no way to learn that nothing was killed."""
    cfg = await _gateway_cfg(tmp_path, backends)
    async with running_gateway(cfg) as g:
        start = await _outcomes(session, g.admin)
        assert start.get("unmapped") == 0.0 and start.get("refused") == 0.0, start
        caplog.clear()
        status, answer = await _post(session, g.admin, payload(
            killgate_action="rollback", route="iris", version="v3"))
        assert status == 200 and answer["actions"][0]["outcome"] == "unmapped", answer
        assert (await _outcomes(session, g.admin))["unmapped"] == 1.0
        (line,) = [r for r in caplog.records if r.getMessage() == "alert_ignored"]
        assert line.levelno == logging.WARNING
        assert line.kg_fields["outcome"] == "unmapped"  # type: ignore[attr-defined]
        assert "no version 'v3'" in line.kg_fields["why"]  # type: ignore[attr-defined]
        # an alert without killgate_action asks for nothing: not a warning
        caplog.clear()
        status, answer = await _post(session, g.admin, {**payload(), "alerts": [
            {**payload()["alerts"][0], "fingerprint": "0000000000000002"}]})
        assert status == 200 and answer["actions"][0]["outcome"] == "ignored", answer
        assert not [r for r in caplog.records if r.getMessage() == "alert_ignored"
                    and r.levelno >= logging.WARNING]


async def test_notifications_refused_unread_are_counted_from_zero(
        tmp_path: Path, backends, session) -> None:
    """Before: Alertmanager posting with an expired token (its renewal cron broken) or a
    token without killgate:alert had every notification refused, and with it every kill
    monitoring asked for; killgate's only trace was a count of all admin auth failures,
    watched by no shipped alert. KillgateAlertsRefused watches these (promtool test)."""
    from tests.conftest import admin_token, bearer

    cfg = await _gateway_cfg(tmp_path, backends)
    firing = payload(killgate_action="kill", route="iris", version="v2")
    async with running_gateway(cfg) as g:
        start = await _outcomes(session, g.admin)
        assert start.get("denied") == start.get("malformed") == start.get("too_large") == 0.0, start
        expired = admin_token("killgate:alert", "alertmanager", -3600)  # (past the leeway)
        for headers, code in (({"Authorization": f"Bearer {expired}"}, 401),
                              (bearer("killgate:read", "alertmanager"), 403)):
            status, answer = await _post(session, g.admin, firing, headers)
            assert status == code, answer
        for bad in ({"version": "4"}, "{not json"):
            status, answer = await _post(session, g.admin, bad)
            assert status == 400, answer
        big = payload(killgate_action="kill", route="iris", version="v2")
        big["alerts"][0]["annotations"]["description"] = "x" * 70_000
        status, answer = await _post(session, g.admin, big)
        assert status == 413, answer
        outcomes = await _outcomes(session, g.admin)
        assert (outcomes["denied"], outcomes["malformed"], outcomes["too_large"]) == \
            (2.0, 2.0, 1.0), outcomes


async def test_a_notification_to_an_instance_without_alerts_enabled_is_counted(
        tmp_path: Path, backends, session) -> None:
    """Before: Alertmanager posting to an instance whose config has no alerts.alertmanager
    (a config that dropped it, a pod on an older file) got 404 for every notification, and
    killgate counted nothing: every kill monitoring asked for was lost unseen."""
    cfg = await _gateway_cfg(tmp_path, backends, alerts="")
    async with running_gateway(cfg) as g:
        assert (await _outcomes(session, g.admin)).get("not_enabled") == 0.0
        status, answer = await _post(session, g.admin,
                                     payload(killgate_action="kill", route="iris"))
        assert status == 404 and answer["error"]["type"] == "not_enabled", answer
        assert (await _outcomes(session, g.admin))["not_enabled"] == 1.0


async def test_a_kill_of_a_version_this_config_lacks_is_made_and_shown_not_routed(
        tmp_path: Path, backends, session) -> None:
    """A config still rolling out: the kill of v3 reaches an instance whose file has no v3
    yet. It was answered 200 `unmapped`, which Alertmanager never sends again: the kill
    was lost on every instance, those routing v3 included. It is now made, audited, and
    this instance shows it NOT ROUTED (`routed: false`) until its config has v3."""
    cfg = await _gateway_cfg(tmp_path, backends)
    async with running_gateway(cfg) as g:
        status, answer = await _post(session, g.admin, payload(
            killgate_action="kill", route="iris", version="v3"))
        assert status == 200, answer
        (act,) = answer["actions"]
        assert (act["action"], act["outcome"]) == ("kill", "acted"), act
        assert "in force wherever it is routed" in act["message"]
        assert "version:iris:v3" in g.gw.holder.doc.kills
        async with session.get(g.admin + "/v1/status", headers=READ) as r:
            kills = (await r.json())["kills"]
        assert [(k["version"], k["routed"]) for k in kills] == [("v3", False)], kills
        assert (await _outcomes(session, g.admin))["unmapped"] == 0.0


@pytest.mark.parametrize("target", [{"scope": "route", "route": "iris-next"},
                                    {"scope": "version", "route": "iris", "version": "v3"}])
async def test_a_kill_an_alert_made_of_a_name_this_config_lacks_can_be_lifted(
        tmp_path: Path, backends, session, target: dict[str, str]) -> None:
    """An alert's kill of a name no config here routes (a rule's typo, a route never
    deployed, an attacker holding killgate:alert) is made, in force wherever the name
    appears; an unkill of it was answered 404 unknown_route/unknown_version on every
    instance whose config lacks the name: the kill could not be lifted, and would stop
    the route the day it is deployed. It is lifted as any kill is, and audited."""
    cfg = await _gateway_cfg(tmp_path, backends)
    labels = {k: v for k, v in target.items() if k != "scope"}
    async with running_gateway(cfg) as g:
        status, answer = await _post(session, g.admin, payload(killgate_action="kill",
                                                               **labels))
        assert status == 200 and answer["actions"][0]["outcome"] == "acted", answer
        key = ":".join([target["scope"], *labels.values()])
        assert key in g.gw.holder.doc.kills
        async with session.post(g.admin + "/v1/unkill", headers=bearer("killgate:kill"),
                                json={**target, "reason": "typo in the rule"}) as r:
            assert r.status == 200, await r.text()
        assert key not in g.gw.holder.doc.kills
        # a name neither configured nor killed is still unknown (404), not 409
        async with session.post(g.admin + "/v1/unkill", headers=bearer("killgate:kill"),
                                json={**target, "reason": "again"}) as r:
            assert r.status == 404, await r.text()


async def test_kills_alerts_make_of_names_no_config_here_has_are_bounded(
        tmp_path: Path, backends, session) -> None:
    """Any name a config could give is killed (e8b1a69), so a rule's high-cardinality label,
    or anyone holding killgate:alert, added a kill per new name to the document every
    instance reads, towards the size it is refused at. Once MAX_UNROUTED such kills are in
    force, a new one is refused (logged, counted, KillgateAlertNotActed pages); a kill of a
    routed name is still made."""
    cfg = await _gateway_cfg(tmp_path, backends)
    body = payload(killgate_action="kill", route="x")
    first = body["alerts"][0]
    body["alerts"] = [{**first, "fingerprint": f"{i:016x}",
                       "labels": {**first["labels"], "route": f"ghost-{i}"}}
                      for i in range(MAX_UNROUTED + 2)]
    body["alerts"].append({**first, "fingerprint": "f" * 16,
                           "labels": {**first["labels"], "route": "iris", "version": "v2"}})
    async with running_gateway(cfg) as g:
        status, answer = await _post(session, g.admin, body)
        assert status == 200, answer
        outcomes = [a["outcome"] for a in answer["actions"]]
        assert outcomes == ["acted"] * MAX_UNROUTED + ["refused"] * 2 + ["acted"], outcomes
        assert "NOT ROUTED" in answer["actions"][-2]["message"], answer["actions"][-2]
        assert len(g.gw.holder.doc.kills) == MAX_UNROUTED + 1
        assert "version:iris:v2" in g.gw.holder.doc.kills
        assert (await _outcomes(session, g.admin))["refused"] == 2.0


async def test_diff_names_the_kills_a_file_puts_in_force(tmp_path: Path, backends,
                                                         session) -> None:
    """An alert killed route `embed`, which this instance's config lacks (NOT ROUTED). A
    file that adds the route puts the kill in force the moment it is live, and `killgate
    diff` said nothing of it: the new route went live killed, a pre-made kill stopping it."""
    import json

    from tests.conftest import admin_token, free_port, two_versions, write_config
    from tests.test_cli import acli

    cfg = await _gateway_cfg(tmp_path, backends)
    p = free_port()
    adds = write_config(tmp_path, two_versions(p, p) + two_versions(
        p, p, name="embed", prefix="/v1/embeddings"), name="adds.yaml",
        extra="alerts:\n  alertmanager: {}\n")
    async with running_gateway(cfg) as g:
        status, answer = await _post(session, g.admin, payload(killgate_action="kill",
                                                                route="embed"))
        assert status == 200 and answer["actions"][0]["outcome"] == "acted", answer
        env = {"KILLGATE_ADMIN_URL": g.admin, "KILLGATE_TOKEN": admin_token("killgate:read")}
        res = await acli("diff", str(adds), env=env)
        assert res.returncode == 2, (res.stdout, res.stderr)
        assert "KILLS THIS FILE PUTS IN FORCE" in res.stdout and "route:embed" in res.stdout
        res = await acli("diff", str(adds), "--json", env=env)
        assert [k["kill"] for k in json.loads(res.stdout)["kills_put_in_force"]] == [
            "route:embed"], res.stdout
        same = await acli("diff", str(cfg), "--json", env=env)
        assert "kills_put_in_force" not in json.loads(same.stdout), same.stdout
