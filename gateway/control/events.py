"""Outgoing events: every kill, unkill, rollback, promote, automatic rollback and
alert-driven action, POSTed to the configured webhooks — signed, retried, never blocking.

Owns the aiohttp client session for webhooks (the third outbound user, after upstream and
probes) and the event's JSON shape (`payload`, documented in the README). `EventSink.
committed` is called by `Sync` after each audited state change: it only queues (a full
queue drops the event and counts it); a worker delivers in the background with
exponential backoff. Each body is signed: `x-killgate-signature: t=<unix>,v1=<hex>`, the
HMAC-SHA256 of `<t>.<body>` under the webhook's secret. Failures are logged and counted,
never raised.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import json
import logging
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import aiohttp

from gateway import filemodes
from gateway.config import Config
from gateway.domain.audit import utc_now
from gateway.domain.statedoc import StateDoc
from gateway.log import event
from gateway.telemetry.metrics import Metrics

__all__ = ["SCHEMA", "EventSink", "payload", "sign"]

log = logging.getLogger("killgate.events")

SCHEMA = "killgate.event/v1"
# audit actions that are sent (the rest: config records, progress steps, replays...)
SENT = frozenset({"kill", "unkill", "rollback", "promote", "weights", "release",
                  "auto_rollback", "progressive.promote", "drill.start", "drill.restore",
                  "drill.end", "audit.mirror_refused"})  # (an alarm, not an audited change: state/mirror.py)
CONCURRENCY = 8
MIN_SECRET = 32  # bytes: a shorter webhook secret counts as none (nothing is sent)


def _trigger(actor: str) -> str:
    if actor.startswith("alertmanager/"):
        return "alert"
    if actor.startswith("killgate/"):
        return "automatic"
    return "person"


def payload(ev: dict[str, Any], generation: int, instance: str) -> dict[str, Any]:
    """The one event shape (fields may be added, never renamed or removed)."""
    target = ev.get("target") or {}
    return {
        "schema": SCHEMA,
        "event": f"killgate.{ev['action']}",
        "id": ev["id"],  # the audit event's id: receivers dedupe retries on it
        "time": ev["time"],
        "action": ev["action"],
        "trigger": _trigger(ev["actor"]),
        "actor": ev["actor"],
        "target": target,
        "route": target.get("route"),
        "version": target.get("version"),
        "reason": ev["reason"],
        "generation": generation,
        "instance": instance,  # the one that made the change
        "request_id": ev.get("request_id", ""),
        "before": ev.get("before"),
        "after": ev.get("after"),
        "evidence": ev.get("evidence"),
        "audit_id": ev["id"],
        "audit_hash": ev.get("hash"),
        # the recovery drill that made this change (a rehearsal, not an incident), or None
        "drill": ev.get("drill"),
        # how a gated change got past the two-person rule (admin/approvals.py): skipped
        # with killgate:breakglass, or applied by its approvers ({"id", "approved_by", ...})
        "break_glass": ev.get("break_glass") is True,
        "approval": ev.get("approval"),
    }


def sign(secret: bytes, body: bytes, now: int) -> str:
    mac = hmac.new(secret, b"%d." % now + body, hashlib.sha256).hexdigest()
    return f"t={now},v1={mac}"


class _Target:
    __slots__ = ("secret", "url")

    def __init__(self, url: str, secret: bytes | None) -> None:
        self.url = url
        self.secret = secret


class EventSink:
    def __init__(self, metrics: Metrics, config: Callable[[], Config],
                 resolve: Callable[[str], Path], instance: str) -> None:
        self.metrics = metrics
        self.config = config
        self.resolve = resolve
        self.instance = instance
        self._queue: asyncio.Queue[tuple[dict[str, Any], list[_Target]]] | None = None
        self._worker: asyncio.Task[None] | None = None
        self._tasks: set[asyncio.Task[None]] = set()
        self._session: aiohttp.ClientSession | None = None
        self._slots = asyncio.Semaphore(CONCURRENCY)

    # ------------------------------------------------------------------ lifecycle

    async def start(self) -> None:
        for result in ("delivered", "failed", "dropped"):  # at 0: the first failure shows
            self.metrics.inc("killgate_event_deliveries_total", (result,), by=0,
                             label_names=("result",))
        self._queue = asyncio.Queue(self.config().events.queue)
        self._worker = asyncio.create_task(self._run(), name="events")
        self.check_secrets()

    def check_secrets(self, *_: object) -> None:
        """Log each webhook whose signing secret cannot be read: at start, and after each
        reload (`Gateway.config_applied`: one that added such a webhook said nothing until
        the first event to it, a kill say, was not sent)."""
        for i, hook in enumerate(self.config().events.webhooks):
            if self._secret(hook.secret_env, hook.secret_file) is None:
                event(log, "event_webhook_without_secret", logging.ERROR, index=i,
                      webhook=hook.url, fix=f"set the variable or file the config names to a "
                      f"secret of at least {MIN_SECRET} bytes (events to this webhook are not "
                      "sent unsigned)")

    async def stop(self, grace: float = 2.0) -> None:
        """Deliveries under way get `grace` seconds, then everything is cancelled."""
        if self._tasks:
            await asyncio.wait(set(self._tasks), timeout=grace)
        for t in [*self._tasks, *([self._worker] if self._worker else [])]:
            t.cancel()
        await asyncio.gather(*self._tasks, *([self._worker] if self._worker else []),
                             return_exceptions=True)
        self._worker = None
        if self._session is not None:
            await self._session.close()
            self._session = None

    # ------------------------------------------------------------------ queueing

    def committed(self, ev: dict[str, Any], doc: StateDoc) -> None:
        """An audited change was committed (called by Sync): queue its event. Never blocks,
        never raises."""
        if ev.get("action") not in SENT or self._queue is None:
            return
        targets = self._targets(ev)
        if not targets:
            return
        body = payload(ev, doc.generation, self.instance)
        try:
            self._queue.put_nowait((body, targets))
        except asyncio.QueueFull:
            self.metrics.inc("killgate_event_deliveries_total", ("dropped",),
                             label_names=("result",), by=len(targets))
            event(log, "event_dropped", logging.WARNING, event=body["event"], id=body["id"],
                  why="events.queue is full")

    def mirror_refused(self, alarm: dict[str, Any], doc: StateDoc) -> None:
        """The audit mirror refused to continue (state/mirror.py's alarm): an event of
        its own, `audit.mirror_refused`, told like a committed change."""
        self.committed({
            "id": uuid.uuid4().hex, "time": utc_now(), "action": "audit.mirror_refused",
            "actor": "killgate/auto", "target": {"mirror": alarm.get("path")},
            "reason": str(alarm.get("problem", "")), "after": alarm}, doc)

    def _targets(self, ev: dict[str, Any]) -> list[_Target]:
        cfg = self.config()
        trigger = _trigger(str(ev.get("actor", "")))
        out = []
        for hook in cfg.events.webhooks:
            kinds = hook.events
            if kinds is not None and ev["action"] not in kinds and not (
                    trigger == "alert" and "alert" in kinds):
                continue
            out.append(_Target(hook.url, self._secret(hook.secret_env, hook.secret_file)
                               or b""))
        if ev["action"] == "auto_rollback":  # the route's own analysis webhook (unsigned)
            rc = cfg.route(str((ev.get("target") or {}).get("route")))
            if rc is not None and rc.analysis is not None and rc.analysis.webhook_url:
                out.append(_Target(rc.analysis.webhook_url, None))
        return out

    def _secret(self, env: str | None, file: str | None) -> bytes | None:
        """The key: the variable's value (UTF-8, as is) or the file's bytes without the
        white space around them; None when missing or shorter than MIN_SECRET bytes."""
        raw = b""
        if env is not None:
            try:
                raw = filemodes.key_env(env).encode()
            except ValueError:
                return None
        elif file is not None:
            try:
                raw = filemodes.read_key_file(self.resolve(file)).strip()
            except OSError:
                return None
        return raw if len(raw) >= MIN_SECRET else None

    # ------------------------------------------------------------------ delivery

    async def _run(self) -> None:
        assert self._queue is not None
        while True:
            body, targets = await self._queue.get()
            data = json.dumps(body, separators=(",", ":"), ensure_ascii=False).encode()
            for target in targets:
                await self._slots.acquire()
                task = asyncio.create_task(self._deliver(target, body, data))
                self._tasks.add(task)
                task.add_done_callback(self._done)

    def _done(self, task: asyncio.Task[None]) -> None:
        self._tasks.discard(task)
        self._slots.release()

    async def _deliver(self, target: _Target, body: dict[str, Any], data: bytes) -> None:
        cfg = self.config().events
        if target.secret == b"":
            self.metrics.inc("killgate_event_deliveries_total", ("failed",),
                             label_names=("result",))
            event(log, "event_not_sent", logging.ERROR, webhook=target.url, event=body["event"],
                  why=f"the webhook's secret is not set (or shorter than {MIN_SECRET} bytes)")
            return
        if self._session is None:
            self._session = aiohttp.ClientSession(
                headers={"user-agent": "killgate-events/1", "content-type": "application/json"})
        delivery = uuid.uuid4().hex
        why = ""
        for attempt in range(cfg.attempts):
            headers = {"x-killgate-event": body["event"], "x-killgate-delivery": delivery}
            if target.secret is not None:
                headers["x-killgate-signature"] = sign(target.secret, data, int(time.time()))
            try:
                async with self._session.post(
                        target.url, data=data, headers=headers,
                        timeout=aiohttp.ClientTimeout(total=cfg.timeout)) as r:
                    if 200 <= r.status < 300:
                        self.metrics.inc("killgate_event_deliveries_total", ("delivered",),
                                         label_names=("result",))
                        event(log, "event_delivered", webhook=target.url, event=body["event"],
                              id=body["id"], attempt=attempt + 1)
                        return
                    why = f"HTTP {r.status}"
                    if 400 <= r.status < 500 and r.status not in (408, 425, 429):
                        break  # the receiver refuses this event: retrying will not help
            except (aiohttp.ClientError, TimeoutError, OSError) as exc:
                why = type(exc).__name__
            if attempt + 1 < cfg.attempts:
                event(log, "event_retry", logging.WARNING, webhook=target.url, event=body["event"],
                      attempt=attempt + 1, error=why)
                await asyncio.sleep(cfg.backoff * 2 ** attempt)
        self.metrics.inc("killgate_event_deliveries_total", ("failed",), label_names=("result",))
        event(log, "event_failed", logging.ERROR, webhook=target.url, event=body["event"],
              id=body["id"], error=why)

    async def drained(self, timeout: float) -> bool:
        """Whether every queued event was delivered (or given up) within `timeout` (tests)."""
        deadline = time.monotonic() + timeout
        while (self._queue is not None and not self._queue.empty()) or self._tasks:
            if time.monotonic() > deadline:
                return False
            await asyncio.sleep(0.01)
        return True

