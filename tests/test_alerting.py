"""domain/alerting.py: Alertmanager payloads parsed, mapped to actions, applied (no loop)."""

from __future__ import annotations

import copy
from typing import Any

import pytest

from gateway.config_telemetry import AlertmanagerConfig
from gateway.configfile import parse_config_text
from gateway.domain import alerting
from gateway.domain.alerting import BadPayload
from gateway.domain.statedoc import Change, HistoryEntry, StateDoc, apply_change
from gateway.errors import ConflictingState

CONFIG = parse_config_text("""
routes:
  - name: iris
    match: {path_prefix: /v2/models/iris}
    stable: v1
    versions:
      - {name: v1, url: "http://127.0.0.1:9101", weight: 90}
      - {name: v2, url: "http://127.0.0.1:9102", weight: 10}
  - name: chat
    match: {path_prefix: /chat}
    stable: a
    versions:
      - {name: a, url: "http://127.0.0.1:9103"}
""")


def payload(status: str = "firing", **labels: str) -> dict[str, Any]:
    """What Alertmanager 0.25 sends (webhook_config, version 4)."""
    lab = {"alertname": "KillgateCanaryErrorRate", "severity": "page", **labels}
    return {
        "receiver": "killgate", "status": status, "version": "4",
        "groupKey": '{}:{alertname="KillgateCanaryErrorRate"}', "truncatedAlerts": 0,
        "groupLabels": {"alertname": "KillgateCanaryErrorRate"}, "commonLabels": lab,
        "commonAnnotations": {}, "externalURL": "http://am.example:9093",
        "alerts": [{"status": status, "labels": lab,
                    "annotations": {"summary": "v2 errors 40% vs stable 0%"},
                    "startsAt": "2024-05-01T10:00:00.000Z",
                    "endsAt": "0001-01-01T00:00:00Z",
                    "generatorURL": "http://prom.example:9090/graph?g0.expr=x",
                    "fingerprint": "3f1c2b9a8d7e6f50"}],
    }


def test_parse_reads_alertmanagers_payload() -> None:
    note = alerting.parse(payload(killgate_action="kill", route="iris", version="v2"))
    assert note.receiver == "killgate" and note.status == "firing"
    (a,) = note.alerts
    assert a.fingerprint == "3f1c2b9a8d7e6f50" and a.starts_at == "2024-05-01T10:00:00.000Z"
    assert a.labels["version"] == "v2" and a.generator_url.startswith("http://prom")


def _broken(path: str, value: Any) -> dict[str, Any]:
    body = payload(killgate_action="kill", route="iris")
    target: Any = body
    keys = path.split(".")
    for k in keys[:-1]:
        target = target[int(k)] if k.isdigit() else target[k]
    last = keys[-1]
    if value is KeyError:
        del target[last]
    else:
        target[int(last) if last.isdigit() else last] = value
    return body


@pytest.mark.parametrize("body,message", [
    ([], "must be an Alertmanager webhook payload"),
    ("firing", "must be an Alertmanager webhook payload"),
    (_broken("version", "3"), 'version must be "4"'),
    (_broken("version", KeyError), 'version must be "4"'),
    (_broken("receiver", ""), "receiver must be a non-empty string"),
    (_broken("status", "pending"), 'status must be "firing" or "resolved"'),
    (_broken("alerts", []), "alerts must be a non-empty list"),
    (_broken("alerts", {"a": 1}), "alerts must be a non-empty list"),
    (_broken("alerts", [{}] * 1001), "more than 1000 alerts"),
    (_broken("alerts.0", "x"), "alerts[0] must be an object"),
    (_broken("alerts.0.status", None), 'alerts[0].status must be "firing" or "resolved"'),
    (_broken("alerts.0.fingerprint", KeyError), "alerts[0].fingerprint must be a non-empty"),
    (_broken("alerts.0.fingerprint", 7), "alerts[0].fingerprint must be a non-empty"),
    (_broken("alerts.0.fingerprint", "x" * 65), "alerts[0].fingerprint is longer than 64"),
    (_broken("alerts.0.startsAt", KeyError), "alerts[0].startsAt must be a non-empty"),
    (_broken("alerts.0.labels", ["a"]), "alerts[0].labels must be an object of strings"),
    (_broken("alerts.0.labels", {"route": 1}), "alerts[0].labels.route must be a string"),
    (_broken("alerts.0.annotations", {"s": ["x"]}), "alerts[0].annotations.s must be a string"),
    (_broken("alerts.0.generatorURL", 7), "alerts[0].generatorURL must be a string"),
    (_broken("groupKey", {}), "groupKey must be a string"),
    (_broken("receiver", "r" * 5000), "receiver is longer than 4096"),
])
def test_parse_refuses_with_a_message(body: Any, message: str) -> None:
    with pytest.raises(BadPayload) as err:
        alerting.parse(body)
    assert message in str(err.value)



def test_parse_bounds_peoples_text_instead_of_refusing_the_notification() -> None:
    """Alertmanager does not retry a 4xx: refusing a notification because one alert has a
    long description, many labels or a receiver named in another script would lose every
    kill in it. Such text is kept, bounded: cut values end in a marker, killgate's own
    labels are never the ones dropped, and a receiver is escaped to printable ASCII."""
    body = payload(killgate_action="kill", route="iris", version="v2")
    first = body["alerts"][0]
    first["labels"] = {**{f"pod_label_{i}": "x" for i in range(80)}, **first["labels"]}
    first["annotations"] = {"description": "d" * 9000, "k" * 300: "v"}
    first["generatorURL"] = "http://prom/" + "g" * 9000
    body["groupKey"] = "{}:" + "k" * 9000
    body["receiver"] = "équipe-ml\nnuit"
    note = alerting.parse(body)
    (a,) = note.alerts
    assert len(a.labels) == alerting.MAX_LABELS
    assert (a.labels["killgate_action"], a.labels["route"], a.labels["version"]) == (
        "kill", "iris", "v2")
    d = a.annotations["description"]
    assert len(d) == alerting.MAX_VALUE and d.endswith("…[cut]") and d.startswith("ddd")
    assert len(a.generator_url) == len(note.group_key) == alerting.MAX_VALUE
    assert max(len(k) for k in a.annotations) == 256
    assert note.receiver == "\\xe9quipe-ml\\x0anuit" and note.receiver.isprintable()
    assert alerting.intent(a, AM, CONFIG).action == "kill"
    assert len(alerting.parse(_broken("receiver", "r" * 300)).receiver) == 128


AM = AlertmanagerConfig()


def _intent(cfg: AlertmanagerConfig = AM, status: str = "firing",
            **labels: str) -> alerting.Intent:
    (a,) = alerting.parse(payload(status, **labels)).alerts
    return alerting.intent(a, cfg, CONFIG)


def test_intent_maps_only_what_the_labels_say() -> None:
    i = _intent(killgate_action="kill", route="iris", version="v2")
    assert (i.action, i.outcome, i.target) == ("kill", "act", {"scope": "version",
                                                               "route": "iris", "version": "v2"})
    i = _intent(killgate_action="kill", route="iris")
    assert i.target == {"scope": "route", "route": "iris"}
    i = _intent(killgate_action="rollback", route="iris", version="v2")
    assert (i.action, i.target) == ("rollback", {"scope": "route", "route": "iris",
                                                 "version": "v2"})


@pytest.mark.parametrize("labels,cfg,outcome,message", [
    ({}, AM, "ignored", "no killgate_action label"),
    ({"killgate_action": "restart", "route": "iris"}, AM, "unmapped", "is not kill or rollback"),
    ({"killgate_action": "kill"}, AM, "unmapped", "needs a route label"),
    ({"killgate_action": "rollback", "route": "iriss"}, AM, "unmapped",
     "no route named 'iriss'"),
    ({"killgate_action": "rollback", "route": "iris", "version": "v9"}, AM, "unmapped",
     "has no version 'v9'"),
    ({"killgate_action": "kill", "route": "iris", "version": "v 9"}, AM, "unmapped",
     "not a name a config could give"),
    ({"killgate_action": "kill", "route": "i/ris"}, AM, "unmapped",
     "not a name a config could give"),
    ({"killgate_action": "rollback", "route": "iris"}, AlertmanagerConfig(actions=["kill"]),
     "unmapped", "does not allow 'rollback'"),
    ({"killgate_action": "kill", "route": "chat"}, AlertmanagerConfig(routes=["iris"]),
     "unmapped", "does not include 'chat'"),
])
def test_intent_never_guesses(labels: dict[str, str], cfg: AlertmanagerConfig, outcome: str,
                              message: str) -> None:
    i = _intent(cfg, **labels)
    assert (i.action, i.outcome) == ("none", outcome)
    assert message in i.message


@pytest.mark.parametrize(("labels", "target", "missing"), [
    ({"route": "iris", "version": "v9"}, {"scope": "version", "route": "iris", "version": "v9"},
     "route 'iris' has no version 'v9'"),
    ({"route": "embed"}, {"scope": "route", "route": "embed"}, "no route named 'embed'"),
])
def test_a_kill_of_a_name_this_config_lacks_is_made(labels: dict[str, str],
                                                    target: dict[str, str],
                                                    missing: str) -> None:
    """A config still rolling out: the rule's series came from an instance that routes v9
    (or `embed`), the notification reached one whose file has it not yet. Answered
    `unmapped` (200), Alertmanager never sent it again and the kill was lost fleet-wide;
    it is the fleet's kill, made here, in force wherever the name is routed (and shown
    NOT ROUTED here)."""
    i = _intent(killgate_action="kill", **labels)
    assert (i.action, i.outcome, i.target) == ("kill", "act", target)
    assert missing in i.message and "in force wherever it is routed" in i.message


def test_resolved_never_acts() -> None:
    i = _intent(status="resolved", killgate_action="kill", route="iris", version="v2")
    assert (i.action, i.outcome) == ("none", "resolved")
    assert "never lifts a kill" in i.message


def _then(doc: StateDoc, ch: Change | None) -> StateDoc:
    assert ch is not None
    return apply_change(doc, ch)


def test_kill_is_idempotent() -> None:
    doc = StateDoc(generation=4)
    new = _then(doc, alerting.kill(doc, "iris", "v2", "alertmanager/k", "why", "t"))
    flag = new.kills["version:iris:v2"]
    assert (flag.scope, flag.actor, flag.generation, flag.abort_inflight) == (
        "version", "alertmanager/k", 5, True)
    assert alerting.kill(new, "iris", "v2", "alertmanager/other", "again", "t2") is None
    assert "route:iris" in _then(new, alerting.kill(new, "iris", None, "a", "r", "t")).kills


def test_rollback_moves_off_the_bad_version() -> None:
    rc = CONFIG.route("iris")
    assert rc is not None
    doc = StateDoc(generation=1)
    # the canary is bad: the stable takes everything
    new = _then(doc, alerting.rollback(doc, rc, "v2", "alertmanager/k", "why", "t"))
    ov = new.overrides["iris"]
    assert ov.stable == "v1" and ov.weights == {"v1": 100.0, "v2": 0.0}
    assert alerting.rollback(new, rc, "v2", "alertmanager/k", "again", "t") is None
    # the stable is bad: its predecessor takes over
    hist = {"iris": (HistoryEntry("v2", "t0", "x", "r", "u", None, 0),
                     HistoryEntry("v1", "t1", "x", "r", "u", None, 1))}
    doc = StateDoc(generation=2, history=copy.deepcopy(hist))
    assert _then(doc, alerting.rollback(doc, rc, "v1", "a", "r", "t")).overrides[
        "iris"].stable == "v2"
    # nowhere to go: refused (a conflict: the admin layer answers 409), nothing changed
    with pytest.raises(ConflictingState):
        alerting.rollback(StateDoc(generation=1), rc, None, "a", "r", "t")


def test_an_alert_never_rolls_a_rolled_back_route_onto_the_version_it_left() -> None:
    """After a rollback from v2 to v1, the 'previous stable' of v1 is v2: an alert saying
    the stable v1 is bad rolled the route straight back onto v2, the version a person (or
    an alert) had just rolled it off; two such alerts flapped it between the two."""
    from gateway.domain import overrides

    rc = CONFIG.route("iris")
    assert rc is not None
    doc = StateDoc(generation=1)
    doc = _then(doc, overrides.promote(doc, rc, "v2", "alice", "ship v2", "t1"))
    doc = _then(doc, overrides.rollback(doc, rc, "v1", "bob", "v2 is bad", "t2"))
    assert doc.previous_stable("iris", "v1").stable == "v2"  # what it would have picked
    with pytest.raises(ConflictingState) as e:
        alerting.rollback(doc, rc, "v1", "alertmanager/k", "v1 slow", "t3")
    assert "rolled back to 'v1' by bob" in e.value.message and "'v2'" in e.value.message
    with pytest.raises(ConflictingState):
        alerting.rollback(doc, rc, None, "alertmanager/k", "route bad", "t3")
    # the version it left is named bad: already done, nothing changes
    assert alerting.rollback(doc, rc, "v2", "alertmanager/k", "v2 bad", "t3") is None


@pytest.mark.parametrize("receiver", ["équipe-ml", "r" * 200])
def test_the_openapi_document_admits_every_receiver_parse_takes(receiver: str) -> None:
    """The API's own document must not refuse what the webhook accepts (an OpenAPI-checking
    proxy or client would drop the notification the server would have acted on)."""
    import re

    from gateway.admin.openapi_paths import alertmanager

    alerting.parse({"version": "4", "receiver": receiver, "status": "firing",
                    "alerts": [{"status": "firing", "fingerprint": "f", "startsAt": "t"}]})
    schema = alertmanager()["requestBody"]["content"]["application/json"]["schema"]
    rx = schema["properties"]["receiver"]
    assert len(receiver) <= rx.get("maxLength", len(receiver))
    assert "pattern" not in rx or re.search(rx["pattern"], receiver)
