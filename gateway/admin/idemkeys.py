"""An Idempotency-Key as admin/writes.py uses it: the key's identity (per subject) and the
request's fingerprint (method, path and decoded body), and the one audit record of a
retry answered from the first attempt's result."""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import logging
from collections.abc import Awaitable, Callable
from typing import Any

from aiohttp import web

from gateway.admin.inputs import decoded_body
from gateway.admin.ports import Idempotency
from gateway.domain.audit import AuditDraft
from gateway.errors import ApiError, AuditError, StateError
from gateway.log import event

__all__ = ["audit_replay", "ended", "key_of", "settle_later"]

log = logging.getLogger("killgate.admin")


async def key_of(request: web.Request, subject: str) -> tuple[str | None, str]:
    """(ident, fingerprint) of a request's Idempotency-Key; (None, "") without one; 400
    for a repeated or malformed key."""
    keys = request.headers.getall("Idempotency-Key", [])
    if not keys:
        return None, ""
    key = keys[0]
    if (len(keys) > 1 or not 1 <= len(key) <= 128 or not key.isprintable()
            or not key.isascii()):
        raise ApiError(400, "bad_request",
                       "Idempotency-Key must be one value of 1-128 printable ASCII characters")
    body = await decoded_body(request)  # (not as sent: gzip's header holds a time)
    fingerprint = hashlib.sha256(
        request.method.encode() + b" " + request.path.encode("utf-8", "replace")
        + b"\n" + body).hexdigest()
    ident = hashlib.sha256(f"{subject}\n{key}".encode()).hexdigest()
    return ident, fingerprint


async def audit_replay(audit: Callable[[AuditDraft], Awaitable[None]], request: web.Request,
                       subject: str, resp: web.Response, request_id: str, source: str,
                       trace_id: str) -> None:
    """One replay record per answered retry: the action itself was recorded once.
    Best effort: the replay changed nothing, so a store that cannot take the record
    does not turn the answer into an error."""
    first = json.loads(resp.text or "{}")
    draft = AuditDraft(subject, "replay",
                       {"method": request.method, "path": request.path[:256],
                        "generation": first.get("generation"),
                        "audit_id": first.get("audit_id")},
                       "a retry with the same Idempotency-Key: answered with the first "
                       "result, nothing applied again", request_id=request_id,
                       source=source, trace_id=trace_id)
    try:
        await audit(draft)
    except (StateError, AuditError) as exc:
        event(log, "replay_audit_failed", logging.WARNING, error=str(exc))


#: how often `settle_later` tries the store again
SETTLE_RETRY_S = 0.5


async def settle_later(idem: Idempotency, ident: str, record: dict[str, Any], keep: float,
                       lease: float) -> None:
    """Record a write's `unknown` key (admin/writes.py `_unknown`) the store did not take
    (away: a failover, likely what lost the commit's answer too), tried again every
    SETTLE_RETRY_S until the claim's lease ends: after that a retry may hold the key, and
    the record (compare-and-set on the claim's holder) could no longer land. Without it the
    claim lapsed and a later retry ran the write fresh, though the first may have landed
    (an unkill's retry then answered 409 not_killed, a kill's made a second kill event)."""
    loop = asyncio.get_running_loop()
    end = loop.time() + lease
    while (left := end - loop.time()) > 0:
        await asyncio.sleep(min(SETTLE_RETRY_S, left))
        try:
            kept = await asyncio.wait_for(idem.idem_settle(ident, record, keep),
                                          max(0.05, end - loop.time()))
        except (StateError, TimeoutError):
            continue
        event(log, "idempotency_unknown_recorded" if kept else "idempotency_claim_lost",
              logging.INFO if kept else logging.WARNING, at="unknown")
        return
    event(log, "idempotency_unknown_not_recorded", logging.WARNING, lease=lease,
          action="the store was away for the claim's lease: a retry with the key runs "
                 "the write again; check `killgate audit` before retrying")


async def ended(over: asyncio.Event, renew: asyncio.Task[None] | None) -> None:
    """A write's claim renewal (admin/writes.py), ended: waited for (a renewal in
    flight lands first)."""
    over.set()
    if renew is not None:
        with contextlib.suppress(Exception):
            await asyncio.shield(renew)
