"""The config file's trace in the replicated state: version identities, stables, reloads.

Owns the identity check (a version name must not point at a changed artifact), the record
of unseen identities and stables (best effort), one audit event per fleet-wide reload, and
the warning when a config stops routing to a killed name (removed or renamed: the kill then
stops nothing, README "Trust"). Writes through the state sync; never touches the routing
table.

One event per fleet-wide change: the instances making a change (old digest -> new digest)
share a claim keyed on it and on the *occurrence* of the old file they leave, so an earlier
change of the same two files (a revert, then a re-deploy) is another key, and is audited
again. An occurrence is a token every instance that made the same change derives alike: the
hash of the claim key of the change that brought the file (occurrence.py), recorded in the
change's event (`after.occurrence`); a start joins the occurrence the trail's newest
`config.reload` event recorded when it runs that file, or else derives a new one from it
(the fleet changed files by restarts). No clock decides it: the claims' times used to, and a
clock stepped back (or one ahead when the earlier claim was made) took a re-deploy for the
earlier change, and its `config.reload` event was lost. No record outside the trail decides
it either (occurrence.py: a signed `config:head` key, put back, did the same). A claim
names the event written for it, and a sibling takes the change as recorded only once that
event is on the trail's chain: a store put back to an earlier state (document and trail)
keeps the claims made since, and a change made again was taken for one whose event was gone.

The audit runs behind the reload (one task after another, in the order of the changes):
waiting for a sibling's event (up to CLAIM_WAIT command timeouts: a claim of the previous
release, which names none; a sibling that died after claiming) held the reload's lock, so
the next reload, a revert of a bad file included, waited that long (`stop` bounds what a
shutdown waits for it).

A store that does not answer (or answers it cannot say) does not drop the event: the change
is kept (`Pending`: its draft, made at the reload, with its digests and the time of the
change, `after.changed_at`; its claim record, the same on every try) and tried again with
back-off until the store answers, in turn (a reload made meanwhile is recorded after it),
while `/v1/status` lists it (`config.audit_pending`). A commit whose answer was lost
(StoreOutcomeUnknown: it may have landed) names the event it sent: the next try looks for it
on the trail's chain first, and writes it only if it is not there (an event written once,
not twice; so is one written whose claim could not be updated). At most PENDING_MAX changes
wait so; one more is logged (`config_reload_audit_dropped`) and not recorded.
"""

from __future__ import annotations

import asyncio
import logging
import secrets
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from gateway.configfile import LoadedConfig
from gateway.control.occurrence import fleet_head, in_trail, newest_reload, occurrence_of
from gateway.domain.audit import AuditDraft, utc_now
from gateway.domain.configrecord import record_config
from gateway.domain.diff import config_dict, diff_configs
from gateway.domain.killreach import kills_routed_around
from gateway.domain.kills import unrouted, unrouted_since
from gateway.domain.reloadcheck import facts_from_doc, reload_problems
from gateway.domain.rolledoff import held_moved
from gateway.domain.routetable import RouteTable
from gateway.domain.statedoc import Change, StateDoc
from gateway.errors import AuditError, ConfigError, Problem, StateError, StoreOutcomeUnknown
from gateway.log import event
from gateway.state.sync import Sync
from gateway.tasks import cancel

__all__ = ["ConfigHistory"]

log = logging.getLogger("killgate")

#: how long a change's claim is kept (a sibling making the same change later than that
#: records it again)
CLAIM_TTL = 3600.0
#: how often a sibling's claim is read again until it names its event, and for how many
#: command timeouts at most (its event is a load and a commit, retried on conflicts; on a
#: loaded host a shorter wait recorded a change its sibling was still recording)
CLAIM_POLL = 0.05
CLAIM_WAIT = 20
#: the pause before a change's audit is tried again after the store failed it, doubled on
#: each failure up to RETRY_MAX (seconds)
RETRY_FIRST = 0.2
RETRY_MAX = 10.0
#: changes whose audit waits for the store, at most (in memory: each holds its draft)
PENDING_MAX = 64


@dataclass
class Pending:
    """A change whose audit is not yet recorded (module doc): what is written, once."""

    key: str  # the claim key (the change and the occurrence it left)
    draft: AuditDraft  # made at the reload: its digests, the time of the change
    mine: dict[str, Any]  # this instance's claim record (the same on every try)
    wait: float  # how long a sibling's claim is waited for (`ConfigHistory._claim`)
    tries: int = 0  # failed so far
    error: str = ""  # the last failure
    #: the hash of an event sent whose commit may have landed (its answer lost), or that
    #: landed but whose claim could not be updated: looked for before writing again
    sent: str | None = None

    def status(self) -> dict[str, Any]:
        after = self.draft.after if isinstance(self.draft.after, dict) else {}
        return {"from": (self.draft.before or {}).get("digest"), "to": after.get("digest"),
                "changed_at": after.get("changed_at"), "tries": self.tries,
                "error": self.error, "event_sent": self.sent}


def start_token(digest: str, head: dict[str, Any] | None) -> str:
    """The occurrence a start on `digest` joins: the fleet's newest (`head`: occurrence.py's
    `fleet_head`) when it is this file; else a new one, the same for every instance
    starting so from that head. Pure."""
    if head is not None and head.get("digest") == digest and isinstance(head.get("token"), str):
        return str(head["token"])
    prev = head or {}
    return occurrence_of(f"start:{prev.get('digest', '')}:{prev.get('token', '')}:{digest}")


class ConfigHistory:
    def __init__(self, sync: Sync, doc: Callable[[], StateDoc], instance: str) -> None:
        self.sync = sync
        self.doc = doc  # the document in force (the holder's)
        self.instance = instance
        #: the occurrence of the config this instance runs (module doc); until `begin` reads
        #: the fleet's, one of its own: a change out of it is at worst audited twice
        self.token = secrets.token_hex(16)
        self.since = time.time()  # when the config this instance runs went live here
        #: the audits of changes not yet recorded (the newest waits for the one before it)
        self._audits: set[asyncio.Task[None]] = set()
        self._last: asyncio.Task[None] | None = None
        self._pending: list[Pending] = []  # (in the order of the changes)

    def pending(self) -> list[dict[str, Any]]:
        """The changes whose audit event is not yet recorded, oldest first (`/v1/status`
        `config.audit_pending`)."""
        return [p.status() for p in self._pending]

    async def begin(self, loaded: LoadedConfig) -> None:
        """Join the fleet's occurrence of the file this instance starts on (module doc)."""
        try:
            if not self.sync.synced_once:  # (not waited for again: the start waited already)
                raise StateError("the store did not answer at start")
            reload, start = await asyncio.wait_for(newest_reload(self.sync.store),
                                                   loaded.config.state.command_timeout * 6)
        except (StateError, TimeoutError) as exc:
            event(log, "config_occurrence_unknown", logging.WARNING,
                  error=str(exc) or "timeout", action="the next config change is audited "
                  "by this instance even if another one audited it too")
            return
        self.token = start_token(loaded.digest, fleet_head(reload, start))

    def check(self, loaded: LoadedConfig, running: LoadedConfig | None = None) -> None:
        """A version name whose artifact changed against the recorded history is refused,
        and so is a file without a version a latched runtime override serves; and, for a
        reload from `running`, one dropping (or renaming) a route an override latches, or
        giving a running version another artifact (recorded or not: droppedlatch.py)."""
        problems = reload_problems(
            facts_from_doc(self.doc(), None if running is None else running.config.routes),
            list(loaded.config.routes))
        if problems:
            raise ConfigError([Problem(path, msg) for path, msg in problems])

    async def record(self, loaded: LoadedConfig) -> None:
        """Record unseen version identities and the file's stable in the route history."""
        routes = list(loaded.config.routes)

        def change(cur: StateDoc) -> Change | None:
            return record_config(cur, routes, loaded.digest, utc_now())

        def describe(cur: StateDoc, new: StateDoc) -> AuditDraft:
            return AuditDraft("killgate/config", "config.record", {"config": loaded.digest},
                              "versions and stables seen in the config file",
                              None, {"routes": sorted(new.history)}, "", self.instance)

        try:
            await asyncio.wait_for(self.sync.write(change, describe),
                                   loaded.config.state.command_timeout * 6)
        except (StateError, AuditError, TimeoutError) as exc:
            event(log, "config_record_skipped", logging.WARNING, error=str(exc) or "timeout")

    def warn_unrouted(self, old: LoadedConfig | None, new: LoadedConfig) -> list[str]:
        """Log the kills `new` no longer routes to (at start: every one), and return them."""
        doc = self.doc()
        keys = unrouted(doc, new.config.routes)
        if old is not None:
            keys -= unrouted(doc, old.config.routes)
        if keys:
            event(log, "kills_unrouted", logging.WARNING, kills=",".join(sorted(keys)),
                  action="the config names no such route or version: traffic under another "
                  "name is served; each kill is in force again if its name comes back")
        return sorted(keys)

    def warn_routed_around(self, old: LoadedConfig, new: LoadedConfig) -> list[dict[str, Any]]:
        """Log the kills in force whose traffic `new` may serve under their kept name (a
        route it adds that can take a killed route's requests, a killed version's backend
        under another name: domain/killreach.py, as `killgate diff` says before a merge),
        and return them."""
        kills = [{"scope": f.scope, "route": f.route, "version": f.version, "actor": f.actor,
                  "reason": f.reason} for f in self.doc().kills.values()]
        around = kills_routed_around(kills, config_dict(old.config)["routes"],
                                     config_dict(new.config)["routes"])
        for k in around:
            event(log, "kill_routed_around", logging.WARNING, kill=k["kill"], how=k["how"],
                  action="the kill stays in force on its name, but this config may serve "
                  "requests it stopped: kill the new name too, or change the config back")
        return around

    def kills_changed(self, old: RouteTable, new: RouteTable) -> None:
        """The table holder's listener: kills that arrive naming a route or version this
        instance's config lacks (made on an instance whose config has it, a rolling deploy
        of a rename; or the first state an instance gets after a start without the store)
        are warned as a reload's are. A config change is `warn_unrouted`'s."""
        if old.doc.kills is new.doc.kills or old.doc.kills == new.doc.kills:
            return
        by_name = new.by_name
        keys = unrouted_since(old.doc, new.doc, lambda name: p.config if (
            p := by_name.get(name)) is not None else None)
        if keys:
            event(log, "kills_unrouted", logging.WARNING, kills=",".join(sorted(keys)),
                  action="this config names no such route or version: the kill stops "
                  "nothing here; it is in force here once the name is in the config")

    async def reloaded(self, old: LoadedConfig, new: LoadedConfig) -> list[str]:
        """One audit event per fleet-wide config change (old digest -> new digest, from the
        occurrence of `old` this instance ran: module doc). Returns the reload's warnings
        (each logged): a version a latched rollback serves moved to another url
        (`rolledoff.held_moved`), a kill in force whose traffic the file may serve under
        its kept name (`warn_routed_around`: only a log line before, while the kill still
        read as routed and in force in status)."""
        key = f"config:{old.digest}:{new.digest}:{self.token}"
        self.token, self.since = occurrence_of(key), time.time()  # (before any await: the switch)
        changed_at = utc_now()
        gone = self.warn_unrouted(old, new)
        around = self.warn_routed_around(old, new)
        moved = held_moved(self.doc(), old.config.routes, new.config.routes)
        for warning in moved:
            event(log, "rollback_target_moved", logging.WARNING, warning=warning)
        draft = AuditDraft("killgate/config", "config.reload", {"config": new.digest},
                           "the config file changed", {"digest": old.digest},
                           {"digest": new.digest, "occurrence": self.token,
                            "changed_at": changed_at, "changes": summarize_changes(old, new),
                            **({"kills_unrouted": gone} if gone else {}),
                            **({"kills_routed_around": around} if around else {})},
                           "", self.instance)
        self._queue(Pending(key, draft, {"instance": self.instance, "time": self.since},
                            new.config.state.command_timeout * CLAIM_WAIT))
        return moved + [f"the {k['kill']} kill ({k['by']}: {k['reason']!r}) stays in force on "
                        f"its name, but this config may serve requests it stopped: "
                        f"{'; '.join(k['how'])}; kill the new name too, or change the config "
                        "back" for k in around]

    def _queue(self, p: Pending) -> None:
        """Record `p` once the changes before it are (the trail keeps their order)."""
        if len(self._pending) >= PENDING_MAX:
            event(log, "config_reload_audit_dropped", logging.ERROR, config=p.draft.target[
                "config"], pending=len(self._pending), action="the state store has not "
                "answered for the changes before it: this change is in no audit event; "
                "`killgate status` lists the ones still waiting")
            return
        self._pending.append(p)
        task = asyncio.get_running_loop().create_task(self._in_turn(self._last, p),
                                                      name="config-reload-audit")
        self._audits.add(task)
        task.add_done_callback(self._audits.discard)
        self._last = task

    async def stop(self, timeout: float) -> None:
        """Wait (up to `timeout`) for the audits not yet recorded, then cancel what is
        left, said in the log (a sibling holding the change's claim records it, if alive)."""
        if not self._audits:
            return
        _, pending = await asyncio.wait(set(self._audits), timeout=timeout)
        if pending:
            event(log, "config_reload_audit_abandoned", logging.WARNING, changes=len(pending),
                  action="the instance stopped before recording its config change; audit "
                  "verify and the trail show whether a sibling recorded it")
        await cancel(self._audits)

    async def _in_turn(self, before: asyncio.Task[None] | None, p: Pending) -> None:
        """`_audit`, once the change before it is recorded (the trail keeps their order)."""
        try:
            if before is not None:
                await asyncio.wait({before})
            await self._audit(p)
        except Exception as exc:  # noqa: BLE001 - no caller to raise to: said in the log
            event(log, "config_reload_audit_failed", logging.ERROR, error=repr(exc))
        finally:
            self._pending.remove(p)

    async def _audit(self, p: Pending) -> None:
        """Record `p`, tried again with back-off while the store fails it (module doc)."""
        pause = RETRY_FIRST
        while True:
            try:
                await self._record(p)
                if p.tries:
                    event(log, "config_reload_audit_recorded", config=p.draft.target["config"],
                          tries=p.tries + 1)
                return
            except StoreOutcomeUnknown as exc:
                sent = exc.event.get("hash") if isinstance(exc.event, dict) else None
                p.sent = sent if isinstance(sent, str) else p.sent
                p.error = str(exc)
            except (StateError, AuditError) as exc:
                p.error = str(exc)
            p.tries += 1
            event(log, "config_reload_audit_pending", logging.WARNING,
                  config=p.draft.target["config"], tries=p.tries, error=p.error,
                  retry_in=round(pause, 3), action="the change's audit event is written once "
                  "the state store answers (`killgate status`: config.audit_pending)")
            await asyncio.sleep(pause)
            pause = min(pause * 2, RETRY_MAX)

    async def _record(self, p: Pending) -> None:
        """One try: claim the change, write its event (unless a try before landed it), and
        name the event in the claim."""
        if not await self._claim(p.key, p.mine, p.wait):
            return  # another instance making the same change recorded it
        store = self.sync.store
        if p.sent is None or not await in_trail(store, p.sent):
            # (lost races: append_audit's own rule, state/contention.py, up to 2 s of them;
            # five tries without a pause left a fleet's reload unrecorded: tests/
            # test_reload_audit_conflict.py)
            ev = await self.sync.append_audit(p.draft)
            if ev is None:
                raise StateError("the state store holds no state this instance can verify")
            if not isinstance(ev.get("hash"), str):
                return
            p.sent = ev["hash"]
        await store.idem_take(p.key, p.mine, {**p.mine, "event": p.sent}, CLAIM_TTL)

    async def _claim(self, key: str, mine: dict[str, Any], wait: float) -> bool:
        """Whether this instance records the change `key`: it claims it; or the claim held
        names no event within `wait` (its instance died, or could not write it), or one the
        trail does not hold (a store put back to an earlier state lost it): then it is
        recorded here too (at worst twice, never lost). Taken over by a sibling first (its
        claim there now: its own wait ended as ours did), it waits for that one's event: each
        instance past the wait recorded the change, one event per instance (waited for up to
        twice `wait` more: a claim taken over and over is recorded here all the same)."""
        store = self.sync.store
        loop = asyncio.get_running_loop()
        deadline = loop.time() + wait
        last = deadline + 2 * wait  # (the takeovers waited for: never past this)
        claim = await store.idem_claim(key, mine, CLAIM_TTL)
        if claim == mine:
            return True  # (ours, made by a try before that failed after it)
        while claim is not None:
            named = claim.get("event")
            if isinstance(named, str) and await in_trail(store, named):
                return False
            if isinstance(named, str) or loop.time() >= deadline:
                try:
                    if await store.idem_take(key, claim, mine, CLAIM_TTL):
                        return True
                except StateError:
                    return True  # (recorded here: at worst twice)
                if loop.time() >= last:
                    return True  # (taken over and over: recorded here, never lost)
                deadline = min(loop.time() + wait, last)  # (another took it: its event next)
            await asyncio.sleep(CLAIM_POLL)  # (its instance is writing the event)
            claim = await store.idem_claim(key, mine, CLAIM_TTL)
        return True


def summarize_changes(old: LoadedConfig, new: LoadedConfig) -> dict[str, Any]:
    """Per route: added/removed routes and versions, weight and setting changes."""
    return diff_configs(config_dict(old.config), config_dict(new.config))
