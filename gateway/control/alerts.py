"""Alerts that act: Alertmanager notifications turned into kills and rollbacks.

Owns `AlertReceiver`, the logic behind `POST /v1/alerts/alertmanager` (the admin handler
only authenticates and hands the body over), and its answer. Per alert: map it
(`domain.alerting`), claim its firing episode in the state store so a resend or a second
receiver changes nothing (`control.alertclaims`: the claim, its dedupe window, the budget
of new episodes), then apply the change with its audit event (actor
`alertmanager/<receiver>`, the alert as evidence) through `Sync.write` — or, in `observe`
mode, record what it would have done (both in `control.alertactions`) — and wait once
per notification for the propagation receipt of its last change (logged, and in the
answer). A resolved alert never lifts anything. A kill the store cannot commit is taken
as a local kill on this instance (`control.alertlocal`), answered 200. Bad payloads raise ApiError(400) before
anything changes; alerts not acted on yet (over the budget, being applied elsewhere, a
lost race, a store gone mid-notification) are answered with a 503 that Alertmanager
retries, naming what was acted on.
"""

from __future__ import annotations

import logging
import secrets
from collections.abc import Callable
from typing import Any

from gateway import redact
from gateway.config import Config
from gateway.config_telemetry import AlertmanagerConfig
from gateway.control import alertlocal
from gateway.control.alertactions import Call, Writer, act, change_for, observe
from gateway.control.alertclaims import (
    NEW_BURST,
    NEW_PER_HOUR,
    PENDING,
    Budget,
    Claims,
    episode,
    held,
    keep,
    release,
    take,
)
from gateway.domain import alerting
from gateway.domain.alerting import Alert, BadPayload, Intent, Notification
from gateway.domain.audit import clean_text, utc_now
from gateway.domain.statedoc import StateDoc
from gateway.errors import (
    ApiError,
    AuditError,
    DomainError,
    NotDurable,
    StoreBusy,
    StoreConflict,
    StoreOutcomeUnknown,
    StoreUnavailable,
    StoreUnverifiable,
)
from gateway.log import event
from gateway.telemetry.metrics import Metrics

__all__ = ["AlertReceiver"]

log = logging.getLogger("killgate.alerts")


class AlertReceiver:
    def __init__(self, writer: Writer, claims: Claims, config: Callable[[], Config],
                 doc: Callable[[], StateDoc], metrics: Metrics) -> None:
        self.writer = writer
        self.claims = claims
        self.config = config
        self.doc = doc
        self.metrics = metrics
        self.pending = PENDING
        self.budget = Budget(NEW_BURST, NEW_PER_HOUR)
        self._owner = secrets.token_hex(8)  # names this process in its claims
        self._applying: set[str] = set()  # episodes a request of this process applies now
        #: emergency local kills (alertlocal.py); None: an alert's kill waits for the store
        self.local: alertlocal.LocalKiller | None = None

    @property
    def settings(self) -> AlertmanagerConfig | None:
        return self.config().alerts.alertmanager

    async def receive(self, body: Any, request_id: str, peer: str, trace_id: str = "",
                      caller: str = "") -> dict[str, Any]:
        """The answer to one notification: one entry per alert, in order. `trace_id`: the
        notification's trace, recorded in each audit event; `caller`: the subject of the
        token that posted it (the audit actor is the receiver the payload names)."""
        call = Call(request_id, peer, trace_id, caller)
        cfg = self.settings
        if cfg is None:  # (counted: an Alertmanager posting here gets no alert acted on)
            self.metrics.inc("killgate_alertmanager_alerts_total", ("not_enabled",),
                             label_names=("outcome",))
            raise ApiError(404, "not_enabled", "alerts from Alertmanager are not enabled "
                                               "here (config: alerts.alertmanager)")
        try:
            note = alerting.parse(body)
        except BadPayload as exc:
            self.metrics.inc("killgate_alertmanager_alerts_total", ("malformed",),
                             label_names=("outcome",))
            raise ApiError(400, "bad_request", f"not an Alertmanager notification: {exc}") \
                from None
        if note.truncated:  # never delivered: nothing here can act on them
            self.metrics.inc("killgate_alertmanager_alerts_total", ("truncated",),
                             by=note.truncated, label_names=("outcome",))
            event(log, "alerts_truncated", logging.WARNING, receiver=note.receiver,
                  truncated=note.truncated, received=len(note.alerts),
                  group=note.group_key, why="Alertmanager's max_alerts left these alerts "
                  "out of the notification: raise it, or group by more labels")
        config = self.config()
        actions: list[dict[str, Any]] = []
        for i, alert in enumerate(note.alerts):
            want = alerting.intent(alert, cfg, config)
            try:
                entry = await self._one(note, alert, want, cfg, config, call)
            except (StoreUnavailable, AuditError, StoreConflict) as exc:
                raise _partly(exc, actions, len(note.alerts) - i - 1) from None
            self.metrics.inc("killgate_alertmanager_alerts_total", (entry["outcome"],),
                             label_names=("outcome",))
            actions.append(entry)
        await self._receipt(note, actions, cfg.wait)
        deferred = sum(a["outcome"] == "deferred" for a in actions)
        if deferred:
            event(log, "alerts_deferred", logging.WARNING, receiver=note.receiver,
                  deferred=deferred, acted=len(actions) - deferred)
            raise ApiError(503, "too_many_alerts", f"{deferred} of {len(actions)} alerts are "
                           f"not acted on yet: new firing alerts beyond what one instance "
                           f"acts on ({NEW_BURST} at once, {NEW_PER_HOUR:g} an hour), or "
                           "being applied by another request; the others were (a retry "
                           "answers them `duplicate`)")
        shaky = sum(a.get("durable") is False for a in actions)
        if shaky:  # (each alert was acted on: one such kill does not hold up the next)
            raise ApiError(503, "not_durable", f"{shaky} of the {len(actions)} alerts are in "
                           "force but on fewer redis replicas than state.min_replicas (a "
                           "failover now could lose them): Alertmanager's retry confirms "
                           "them once a replica holds them; check `INFO replication` "
                           "(connected_slaves) on the primary", headers={"Retry-After": "1"})
        return {"receiver": note.receiver, "status": note.status, "mode": cfg.mode,
                "actions": actions}

    async def _receipt(self, note: Notification, actions: list[dict[str, Any]],
                       wait: float) -> None:
        """One wait for the whole notification: until every instance has applied the last
        change it made (or `wait` runs out); logged, and added to each applied entry."""
        applied = [a for a in actions if a["outcome"] in ("acted", "unchanged")
                   and a["generation"] is not None]  # (None: not through the store)
        if not applied:
            return
        receipt = await self.writer.receipt(max(a["generation"] for a in applied), wait)
        for a in applied:
            a["applied"] = receipt["applied"]
        r = receipt["applied"]
        event(log, "alert_receipt", receiver=note.receiver, generation=receipt["generation"],
              acked=r["acked"], instances=r["instances"], pending=r["pending"],
              elapsed_ms=r["elapsed_ms"])

    async def _one(self, note: Notification, alert: Alert, want: Intent,
                   cfg: AlertmanagerConfig, config: Config, call: Call) -> dict[str, Any]:
        dry = cfg.mode == "observe"
        entry: dict[str, Any] = {"fingerprint": alert.fingerprint, "alertname":
                                 alert.labels.get("alertname"), "status": alert.status,
                                 "action": want.action, "target": want.target,
                                 "generation": None, "dry_run": dry, "outcome": want.outcome,
                                 "message": want.message}
        if want.action == "none":  # "unmapped": it asked for an action and gets none
            event(log, "alert_ignored", logging.WARNING if want.outcome == "unmapped" else
                  logging.INFO, receiver=note.receiver, fingerprint=alert.fingerprint,
                  alertname=entry["alertname"], outcome=want.outcome, why=want.message)
            return entry
        key = episode(alert, cfg.mode)
        if key in self._applying:
            entry.update(outcome="deferred", message="this firing alert is being applied by "
                         "another request: not acted on here; Alertmanager's retry will find "
                         "it done, or act")
            return entry
        self._applying.add(key)
        try:
            return await self._claimed(note, alert, want, cfg, config, call, entry, key)
        except StoreUnavailable as exc:  # (an alert's kill: taken locally, alertlocal.py)
            if not alertlocal.applies(exc, want, cfg.mode == "observe", self.local):
                raise
            return await self._local(note, alert, want, entry, exc, call)
        finally:
            self._applying.discard(key)

    async def _local(self, note: Notification, alert: Alert, want: Intent,
                     entry: dict[str, Any], exc: StoreUnavailable,
                     call: Call) -> dict[str, Any]:
        """The alert's kill taken locally, the store having failed with `exc`."""
        assert self.local is not None
        if not self.budget.take():
            entry.update(outcome="deferred", message="too many new firing alerts on this "
                         "instance: not acted on yet (Alertmanager's retry will)")
            return entry
        actor = "alertmanager/" + clean_text(note.receiver, 128)
        try:
            return await alertlocal.take(self.local, self.doc(), entry, want, actor,
                                         redact.text(alerting.reason(alert)), str(exc),
                                         note.receiver, _evidence(note, alert, call),
                                         self.writer.confirmed())
        except (OSError, ValueError) as lost:  # (not journaled: nothing enforced)
            event(log, "alert_local_kill_not_kept", logging.ERROR, receiver=note.receiver,
                  fingerprint=alert.fingerprint, why=str(lost))
            raise exc from lost

    async def _claimed(self, note: Notification, alert: Alert, want: Intent,
                       cfg: AlertmanagerConfig, config: Config, call: Call,
                       entry: dict[str, Any], key: str) -> dict[str, Any]:
        """`_one` for an episode no other request of this process is applying."""
        dry = cfg.mode == "observe"
        claim = {"time": utc_now(), "receiver": note.receiver, "owner": self._owner}
        earlier = await take(self.claims, key, claim, min(self.pending, cfg.dedupe_window))
        if earlier is not None:
            outcome, message = held(earlier)
            entry.update(outcome=outcome, message=message)
            return entry
        if not self.budget.take():
            await release(self.claims, key)
            entry.update(outcome="deferred", message="too many new firing alerts on this "
                         "instance: not acted on yet (Alertmanager's retry will)")
            return entry
        actor = "alertmanager/" + clean_text(note.receiver, 128)
        reason = redact.text(alerting.reason(alert))
        change = change_for(want, config, actor, reason)
        evidence = _evidence(note, alert, call)
        try:
            if dry:
                done = await observe(self.writer, self.doc, entry, want, change, actor, reason,
                                     evidence, call)
            else:
                done = await act(self.writer, entry, want, change, actor, reason, evidence, call)
        except NotDurable as exc:  # in force, on fewer replicas than state.min_replicas
            await release(self.claims, key)  # (a retry confirms it again, as a person's would)
            entry.update(outcome="acted", generation=exc.generation, durable=False,
                         message=f"in force (generation {exc.generation}), not yet on "
                                 "state.min_replicas replica(s): a retry confirms it")
            event(log, "alert_not_durable", logging.WARNING, receiver=note.receiver,
                  fingerprint=alert.fingerprint, generation=exc.generation)
            return entry
        except (ApiError, DomainError) as exc:  # refused by the change (no previous stable, ...)
            await release(self.claims, key)
            entry.update(outcome="refused", message=exc.message)
            event(log, "alert_refused", logging.WARNING, receiver=note.receiver,
                  fingerprint=alert.fingerprint, why=exc.message)
            return entry
        except BaseException:
            await release(self.claims, key)  # not applied: Alertmanager's retry may act
            raise
        await keep(self.claims, key, claim, cfg.dedupe_window, self.pending, alert.fingerprint)
        return done


def _evidence(note: Notification, alert: Alert, call: Call) -> dict[str, Any]:
    """What an alert's audit event carries of it (a local kill's journal entry too).
    Redacted: the audit trail, its mirror and the outgoing events keep it for good, and a
    URL's userinfo or a ?token= in a runbook annotation is nobody's to read."""
    return redact.tree({"alert": {"fingerprint": alert.fingerprint, "status": alert.status,
                                  "startsAt": alert.starts_at, "labels": alert.labels,
                                  "annotations": alert.annotations,
                                  "generatorURL": alert.generator_url},
                        "groupKey": note.group_key, "externalURL": note.external_url,
                        "caller": call.caller})  # the token that posted it (subject)


def _partly(exc: StoreUnavailable | AuditError | StoreConflict, actions: list[dict[str, Any]],
            after: int) -> Exception:
    """The store (or the audit trail) went away at an alert: the answer must not say
    "nothing was changed" when alerts before it in the notification were acted on. A
    change that lost every race (StoreConflict) is a 503: Alertmanager retries only a 5xx
    (a 409 dropped the kill, and the alerts after it, until the repeat_interval)."""
    acted = sum(a["outcome"] in ("acted", "local") for a in actions)
    if isinstance(exc, StoreConflict):
        before = (f"the {acted} alert(s) of this notification acted on before it are in "
                  "force (a retry answers them `duplicate`); " if acted else "")
        return ApiError(503, "conflict", f"{exc} (other writes landed at once): {before}this "
                        f"one and the {after} after it were not acted on; a retry acts on them")
    if not acted or isinstance(exc, StoreOutcomeUnknown):
        return exc
    kind, why = (("audit_unavailable", f"the audit trail cannot be written ({exc})")
                 if isinstance(exc, AuditError) else (exc.type, str(exc))
                 if isinstance(exc, StoreBusy) else
                 ("state_store_unavailable", str(exc) if isinstance(exc, StoreUnverifiable)
                  else f"the state store cannot be reached ({exc})"))
    return ApiError(503, kind, f"{why}: the {acted} alert(s) of this notification acted on "
                    f"before it are in force (a retry answers them `duplicate`); this one "
                    f"and the {after} after it were not acted on")
