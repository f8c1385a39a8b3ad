"""Alertmanager notifications as killgate actions: parsing, mapping, the state changes.

Pure: no I/O. `parse` validates an Alertmanager webhook payload (version 4) and returns
a `Notification` or raises `BadPayload` with a message a person can act on; `intent`
maps one alert to what killgate would do (kill a version or a route, roll a route back,
or nothing, and why), from its labels `killgate_action`, `route` and `version` only —
nothing is guessed; `kill` and `rollback` are the state changes (idempotent: a second
identical alert changes nothing). A resolved alert never maps to an action.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Literal

from gateway.config import Config, RouteConfig
from gateway.config_telemetry import AlertmanagerConfig
from gateway.domain import drills, kills, overrides
from gateway.domain.audit import clean_text
from gateway.domain.overrides import effective_stable
from gateway.domain.rolledoff import previous_stable
from gateway.domain.statedoc import Change, StateDoc, kill_key
from gateway.errors import ConflictingState

__all__ = ["Alert", "BadPayload", "Intent", "Notification", "intent", "kill", "parse",
           "reason", "rollback", "touched"]

MAX_ALERTS = 1000
MAX_LABELS = 64
MAX_VALUE = 4096
_PRINTABLE = re.compile(r"^[\x20-\x7e]+$")
_NAME = re.compile(r"[A-Za-z0-9_.\-]{1,64}")  # a route's or version's name (config_routes)
#: new kills an alert may make of names this instance's config lacks, while that many are
#: in force (`kill`)
MAX_UNROUTED = 64
_CUT = "…[cut]"  # ends a value cut to its bound
_OWN = ("alertname", "killgate_action", "route", "version")  # labels killgate reads


class BadPayload(ValueError):
    """The body is not an Alertmanager webhook notification we can read."""


@dataclass(frozen=True, slots=True)
class Alert:
    status: str  # firing | resolved
    labels: dict[str, str]
    annotations: dict[str, str]
    fingerprint: str
    starts_at: str
    ends_at: str
    generator_url: str


@dataclass(frozen=True, slots=True)
class Notification:
    receiver: str
    status: str
    group_key: str
    external_url: str
    alerts: tuple[Alert, ...]
    #: alerts of the group Alertmanager left out (its `max_alerts`): never seen here
    truncated: int = 0


def _str(d: Mapping[str, Any], key: str, where: str, required: bool = True,
         limit: int = MAX_VALUE) -> str:
    """A string field; refused when longer than `limit` (fields a person never writes)."""
    v = d.get(key)
    if v is None and not required:
        return ""
    if not isinstance(v, str) or (required and not v):
        raise BadPayload(f"{where}{key} must be a non-empty string")
    if len(v) > limit:
        raise BadPayload(f"{where}{key} is longer than {limit} characters")
    return v


def _text(d: Mapping[str, Any], key: str, where: str, limit: int = MAX_VALUE) -> str:
    """A free-form string field (a URL, a group key): cut to `limit`, never refused for
    its length, so one long field cannot cost the other alerts of a notification."""
    v = d.get(key)
    if v is None:
        return ""
    if not isinstance(v, str):
        raise BadPayload(f"{where}{key} must be a string")
    return _cut(v, limit)


def _cut(v: str, limit: int) -> str:
    return v if len(v) <= limit else v[:limit - len(_CUT)] + _CUT


def _strmap(d: Mapping[str, Any], key: str, where: str) -> dict[str, str]:
    """Labels or annotations. A wrong type is refused; sizes are bounded instead: values cut
    to MAX_VALUE characters, names to 256, and at most MAX_LABELS entries kept (killgate's own
    labels first). Alertmanager does not retry a 4xx, so refusing a whole notification for
    one alert's long description or many labels would lose every other alert in it."""
    v = d.get(key, {})
    if v is None:
        return {}
    if not isinstance(v, dict):
        raise BadPayload(f"{where}{key} must be an object of strings")
    for k, x in v.items():
        if not isinstance(x, str):
            raise BadPayload(f"{where}{key}.{str(k)[:64]} must be a string")
    names = [k for k in _OWN if k in v] + [k for k in v if k not in _OWN]
    return {_cut(k, 256): _cut(v[k], MAX_VALUE) for k in names[:MAX_LABELS]}


def parse(body: Any) -> Notification:
    """An Alertmanager webhook payload (version 4), checked; extra fields are ignored. What
    Alertmanager itself never sends (a wrong type, a missing field, a long fingerprint) is
    refused; long or unusual text from people's rules is bounded and kept."""
    if not isinstance(body, dict):
        raise BadPayload("the body must be an Alertmanager webhook payload (a JSON object)")
    version = body.get("version")
    if version != "4":
        raise BadPayload(f"version must be \"4\" (Alertmanager's webhook format), not "
                         f"{str(version)[:16]!r}")
    # a receiver's name is anyone's text: escaped to printable ASCII (it names the audit
    # actor), not refused
    receiver = _str(body, "receiver", "", limit=MAX_VALUE)
    if not _PRINTABLE.match(receiver):
        receiver = receiver.encode("ascii", "backslashreplace").decode("ascii")
        receiver = "".join(c if " " <= c <= "~" else f"\\x{ord(c):02x}" for c in receiver)
    receiver = _cut(receiver, 128)
    status = body.get("status")
    if status not in ("firing", "resolved"):
        raise BadPayload("status must be \"firing\" or \"resolved\"")
    raw = body.get("alerts")
    if not isinstance(raw, list) or not raw:
        raise BadPayload("alerts must be a non-empty list")
    if len(raw) > MAX_ALERTS:
        raise BadPayload(f"more than {MAX_ALERTS} alerts in one notification")
    alerts = []
    for i, a in enumerate(raw):
        where = f"alerts[{i}]."
        if not isinstance(a, dict):
            raise BadPayload(f"alerts[{i}] must be an object")
        st = a.get("status")
        if st not in ("firing", "resolved"):
            raise BadPayload(f"{where}status must be \"firing\" or \"resolved\"")
        fp = _str(a, "fingerprint", where, limit=64)
        if not _PRINTABLE.match(fp):
            raise BadPayload(f"{where}fingerprint must be printable ASCII")
        alerts.append(Alert(st, _strmap(a, "labels", where), _strmap(a, "annotations", where),
                            fp, _str(a, "startsAt", where, limit=64),
                            _str(a, "endsAt", where, required=False, limit=64),
                            _text(a, "generatorURL", where)))
    cut = body.get("truncatedAlerts")
    truncated = (min(cut, 10**9) if isinstance(cut, int) and not isinstance(cut, bool)
                 and cut > 0 else 0)  # (bounded: a float counter cannot add 10**400)
    return Notification(receiver, status, _text(body, "groupKey", ""),
                        _text(body, "externalURL", ""), tuple(alerts), truncated)


@dataclass(frozen=True, slots=True)
class Intent:
    """What one alert asks for. `action` "none" carries `outcome` saying why not."""

    action: str  # kill | rollback | none
    outcome: str  # act | resolved | ignored | unmapped
    message: str
    route: str | None = None
    version: str | None = None

    @property
    def target(self) -> dict[str, Any] | None:
        if self.route is None:
            return None
        scope = "version" if self.action == "kill" and self.version else "route"
        if self.action == "rollback":
            scope = "route"
        out: dict[str, Any] = {"scope": scope, "route": self.route}
        if self.version is not None:
            out["version"] = self.version
        return out


def _none(outcome: str, message: str, route: str | None = None,
          version: str | None = None) -> Intent:
    return Intent("none", outcome, message, route, version)


def intent(alert: Alert, cfg: AlertmanagerConfig, config: Config) -> Intent:
    """What killgate does for `alert` (see the module docstring)."""
    action = alert.labels.get("killgate_action")
    if action is None:
        return _none("ignored", "no killgate_action label: nothing to do")
    if action not in ("kill", "rollback"):
        return _none("unmapped", f"killgate_action {action[:64]!r} is not kill or rollback")
    if alert.status == "resolved":
        return _none("resolved", "a resolved alert never lifts a kill or undoes a rollback; a "
                                 "person does (killgate unkill / release)")
    if action not in cfg.actions:
        return _none("unmapped", f"alerts.alertmanager.actions does not allow {action!r}")
    route = alert.labels.get("route")
    if not route:
        return _none("unmapped", f"killgate_action {action} needs a route label")
    rc = config.route(route)
    version = alert.labels.get("version") or None
    if cfg.routes is not None and route not in cfg.routes:
        return _none("unmapped", f"alerts.alertmanager.routes does not include "
                                 f"{route[:64]!r}", route if rc is not None else None)
    missing = (f"no route named {route[:64]!r}" if rc is None else
               f"route {route!r} has no version {version[:64]!r}"
               if version is not None and rc.version(version) is None else None)
    if action == "kill":
        what = f"version {version} of route {route}" if version else f"route {route}"
        if missing is None:
            return Intent("kill", "act", f"kill {what}", route, version)
        # a name this instance's config lacks (a config still rolling out, where the
        # series the rule read came from an instance that has it): the kill is the
        # fleet's, in force wherever the name is routed; never lost for want of it here
        if _NAME.fullmatch(route) and (version is None or _NAME.fullmatch(version)):
            return Intent("kill", "act", f"kill {what} ({missing} in this instance's "
                                         "config: in force wherever it is routed)",
                          route, version)
        return _none("unmapped", f"{missing}, and it is not a name a config could give")
    if missing is not None:
        return _none("unmapped", missing, route if rc is not None else None)
    return Intent("rollback", "act", f"roll route {route} back", route, version)


def kill(doc: StateDoc, route: str, version: str | None, actor: str, reason: str,
         now: str, config: Config | None = None) -> Change | None:
    """A route or version kill (abort_inflight), or None when already in force
    (`domain.kills.kill`, the rule every kill follows). With `config`: a new kill of a
    name it lacks is refused (ConflictingState) once MAX_UNROUTED such kills are in force:
    any name a config could give is accepted, so without a bound a rule's high-cardinality
    label, or anyone holding killgate:alert, grew the document every instance reads
    towards the size it is refused at (then no write, a kill included, goes through)."""
    scope: Literal["route", "version"] = "version" if version else "route"
    rc = config.route(route) if config is not None else None
    if config is not None and kill_key(scope, route, version) not in doc.kills and (
            rc is None or (version is not None and rc.version(version) is None)):
        gone = kills.unrouted(doc, config.routes)
        if len(gone) >= MAX_UNROUTED:
            raise ConflictingState("too_many_unrouted", (
                f"{len(gone)} kills in force name a route or version this instance's "
                f"config lacks (at most {MAX_UNROUTED} made by alerts): killgate status "
                "lists them NOT ROUTED; lift those no config will route (killgate unkill), "
                "or kill this one by hand where it is routed"))
    return kills.kill(doc, scope, route, version, actor, reason, now)


def rollback(doc: StateDoc, rc: RouteConfig, bad: str | None, actor: str, reason: str,
             now: str) -> Change | None:
    """Move a route off a bad version: when `bad` is a canary (not the stable), the stable
    takes 100%; otherwise (or with no `bad`), the previous stable does — never on a route
    that was rolled back (its previous stable is the version it left). None when that is
    already in force. Raises ConflictingState when there is nowhere to go."""
    stable = effective_stable(doc, rc)
    to = stable if bad is not None and bad != stable else None
    ov = doc.overrides.get(rc.name)
    if to is None:
        left = doc.previous_stable(rc.name, stable)
        prev = previous_stable(doc, rc, stable)  # (never a version a rollback took off)
        # (one the config lacks: overrides.rollback refuses, saying so)
        to = prev.stable if prev is not None and rc.version(prev.stable) else None
        if ov is not None and ov.kind == "rollback" and left is not None:
            # the previous stable of a route rolled back is the version it was rolled off
            raise ConflictingState(
                "rolled_back", f"route {rc.name!r} was rolled back to {stable!r} by "
                f"{ov.actor}: an alert does not roll it on from there (the version it left "
                f"is {left.stable!r}) "
                "(a person decides what comes next)")
    if to is not None and ov is not None and ov.stable == to and \
            all(w == 0 for v, w in ov.weights.items() if v != to) and \
            not drills.holds_override(doc, rc.name):
        return None  # already rolled back to it (a drill's rollback is taken over)
    return overrides.rollback(doc, rc, to, actor, reason, now)


def reason(alert: Alert) -> str:
    """The audit reason of an alert's action: its name and summary."""
    name = alert.labels.get("alertname", "unnamed alert")
    text = alert.annotations.get("summary") or alert.annotations.get("description") or ""
    return clean_text(f"alert {name} firing" + (f": {text}" if text else ""), 1024)


def touched(doc: StateDoc, want: Intent) -> dict[str, Any] | None:
    """The part of the state an alert's action touches, for the audit event."""
    assert want.route is not None
    if want.action == "kill":
        flag = doc.kills.get(kill_key("version" if want.version else "route", want.route,
                                      want.version))
        return flag.public() if flag is not None else None
    ov = doc.overrides.get(want.route)
    return None if ov is None else {"stable": ov.stable, "weights": dict(ov.weights),
                                    "kind": ov.kind}
