"""A firing alert acted on once, fleet-wide: its episode's claim in the state store.

Owns what `AlertReceiver` (alerts.py) keeps in the store's idempotency records per alert:
the episode's key (fingerprint + startsAt, per mode), its claim held briefly (`PENDING`)
while its action is done (a receiver that dies meanwhile blocks nobody for long; a claim a
failed request of this process left is taken over), what an earlier claim means for a
resend (`deferred` while pending, `duplicate` once done), the claim remembered for the
dedupe window once done or released when nothing was applied, and the budget of new
episodes one instance acts on (`Budget`: what they leave in the store and the audit trail
stays bounded).
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import time
from collections.abc import Callable
from typing import Any, Protocol

from gateway.domain.alerting import Alert
from gateway.errors import StateError
from gateway.log import event
from gateway.tokenbucket import TokenBucket

__all__ = ["NEW_BURST", "NEW_PER_HOUR", "PENDING", "Budget", "Claims", "episode", "held",
           "keep", "release", "take"]

log = logging.getLogger("killgate.alerts")

#: how long a claimed episode stays claimed before its action is done: a receiver that
#: died meanwhile (SIGKILL, OOM) holds Alertmanager's retry off for this long, not a week
PENDING = 60.0
#: new firing episodes acted on per instance: a burst, then a steady rate per hour
NEW_BURST = 100
NEW_PER_HOUR = 100.0


class Claims(Protocol):
    """Fleet-wide once-only keys (the state store's idempotency records)."""

    async def idem_claim(self, key: str, record: dict[str, Any], ttl: float) -> dict[str, Any] | None: ...

    async def idem_release(self, key: str) -> None: ...

    async def idem_set(self, key: str, record: dict[str, Any], ttl: float) -> None: ...


class Budget:
    """`burst` new episodes at once, refilled at `per_hour` (a clock handed in)."""

    def __init__(self, burst: int, per_hour: float,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self._bucket = TokenBucket(per_hour / 3600.0, burst, clock, max_keys=1)

    def take(self) -> bool:
        return self._bucket.take("*") == 0.0


def episode(alert: Alert, mode: str) -> str:
    """One firing episode of one alert (a later firing has a new startsAt), per mode."""
    raw = f"alertmanager\n{mode}\n{alert.fingerprint}\n{alert.starts_at}"
    return "alert:" + hashlib.sha256(raw.encode()).hexdigest()


async def take(claims: Claims, key: str, claim: dict[str, Any],
               ttl: float) -> dict[str, Any] | None:
    """Claim the episode as pending for `ttl` seconds: None when this request holds it now,
    else the earlier claim (`held` says what it means). `claim["owner"]` names this process."""
    earlier = await claims.idem_claim(key, {**claim, "state": "pending"}, ttl)
    if earlier is not None and earlier.get("state") == "pending" \
            and earlier.get("owner") == claim["owner"]:
        # this process's claim, and none of its requests applies it (the receiver's
        # `_applying`): one that failed left it (a store that timed out took the claim
        # late, or could not release it). Nobody acts on it: taken over, not waited out
        await claims.idem_set(key, {**claim, "state": "pending"}, ttl)
        return None
    return earlier


def held(earlier: dict[str, Any]) -> tuple[str, str]:
    """The outcome and message of an alert whose episode another request claimed."""
    if earlier.get("state") == "pending":
        # claimed, not applied (yet): its request may still fail, or its instance be
        # dying. A 200 here would end Alertmanager's retries until repeat_interval.
        return "deferred", (f"this firing alert is being applied by another request (since "
                            f"{earlier.get('time')}): not acted on here; Alertmanager's "
                            "retry will find it done, or act")
    return "duplicate", (f"this firing alert was handled at {earlier.get('time')}; nothing "
                         "changes")


async def keep(claims: Claims, key: str, claim: dict[str, Any], window: float,
               pending: float, fingerprint: str) -> None:
    """The episode's action is done: remembered for the dedupe `window` (logged if not:
    a resend after `pending` seconds may then act again)."""
    try:
        await claims.idem_set(key, {**claim, "state": "done"}, window)
    except StateError as exc:
        event(log, "alert_claim_not_kept", logging.WARNING, fingerprint=fingerprint,
              error=str(exc), why=f"a resend after {pending:g}s may act again")


async def release(claims: Claims, key: str) -> None:
    """Nothing was applied: the claim goes, so Alertmanager's retry may act."""
    with contextlib.suppress(StateError):
        await claims.idem_release(key)
