"""A firing alert's kill while the state store cannot commit it: taken as a local kill.

Owns that one decision of `AlertReceiver` and the alert's answer for it. An alert's kill is
the 3 a.m. case the emergency local kill exists for (`POST /v1/kill?local=1`,
`state.localmerge`), and nobody is awake to send it by hand: when the store cannot be
reached (`StoreUnavailable`, never `outcome_unknown`, which may be in force, nor a store
that answers with a document it cannot verify) a firing alert mapped to a kill, in `act`
mode, is journaled and enforced on this instance at once (unless its kill through the
store would change nothing: `domain.kills.in_force`, the rule `kill --local` follows; a
flag a re-seed carried or a drill holds is taken over), in the alert's name
(`alertmanager/<receiver>`, its summary as the reason), and merged into the store as a
kill like any other when it answers. The alert's answer says `outcome: "local"`, and the
notification is answered 200 so Alertmanager does not retry it into the outage; what the
alert did is kept in the signed journal (the alert's evidence with it, bounded), logged
`alert_local_kill`, and audited at the merge, its event carrying that evidence as a kill
through the store's does. Kills only: a rollback still waits for the store (503, retried). A resolved alert
never lifts anything, a local kill included (`domain.alerting.intent`).
"""

from __future__ import annotations

import logging
from typing import Any, Protocol

from gateway.domain import kills
from gateway.domain.alerting import Intent
from gateway.domain.statedoc import StateDoc, kill_key
from gateway.errors import StoreOutcomeUnknown, StoreUnavailable, StoreUnverifiable
from gateway.log import event

__all__ = ["LocalKiller", "applies", "take"]

log = logging.getLogger("killgate.alerts")


class LocalKiller(Protocol):
    """What a local kill needs of `state.localmerge.LocalKillKeeper`."""

    async def take(self, scope: str, route: str | None, version: str | None, actor: str,
                   reason: str, abort_inflight: bool,
                   evidence: dict[str, Any] | None = None) -> tuple[dict[str, Any], bool]: ...


def applies(exc: BaseException, want: Intent, dry: bool, local: LocalKiller | None) -> bool:
    """Whether the store's failure `exc` at the alert wanting `want` is taken locally."""
    return (isinstance(exc, StoreUnavailable)
            and not isinstance(exc, (StoreOutcomeUnknown, StoreUnverifiable))
            and want.action == "kill" and not dry and local is not None)


async def take(local: LocalKiller, doc: StateDoc, entry: dict[str, Any], want: Intent,
               actor: str, reason: str, why: str, receiver: str,
               evidence: dict[str, Any] | None = None,
               confirmed: bool = True) -> dict[str, Any]:
    """The alert's kill journaled and enforced here, with the alert as `evidence` (its
    merged audit event carries it, as a kill through the store's does); `entry` (its
    answer) says so. `confirmed`: `doc` was confirmed by the store recently (Sync's
    `confirmed`); a copy that was not (an instance cut off from the store) may hold a kill
    lifted since, and never answers 'already killed' (found by review revmerge41: the
    alert was answered unchanged, nothing kept, and the unkill applied when the store
    answered). Raises OSError or ValueError when it cannot be journaled (nothing
    enforced)."""
    target = want.target or {}
    scope, route, version = target["scope"], target.get("route"), target.get("version")
    key = kill_key(scope, route, version)
    # (in force from the store as the alert's kill through it would leave it: domain/kills)
    if confirmed and kills.in_force(doc, scope, route, version) is not None:
        entry.update(outcome="unchanged", local=False, message=f"{key} is already killed "
                     f"(the state store cannot be reached: {why})")
        return entry
    kept, new = await local.take(scope, route, version, actor, reason, True, evidence)
    entry.update(outcome="local", local=True, id=kept["id"], changed=new,
                 message=f"LOCAL kill of {key} on this instance only: the state store cannot "
                         f"be reached ({why}); enforced here and by its --workers group, NOT "
                         "by other instances until it is merged into the store when it "
                         "answers (audited then)")
    event(log, "alert_local_kill", logging.WARNING, receiver=receiver,
          fingerprint=entry["fingerprint"], kill=key, id=kept["id"], new=new, why=why)
    return entry
