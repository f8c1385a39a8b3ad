"""The config file's trace in the replicated state: version identities, stables, reloads.

Owns the identity check (a version name must not point at a changed artifact), the record
of unseen identities and stables (best effort), one audit event per fleet-wide reload, and
the warning when a config stops routing to a killed name (removed or renamed: the kill then
stops nothing, README "Trust"). Writes through the state sync; never touches the routing
table.

One audit event per fleet-wide change, recorded behind the reload, in turn, through a
store outage: control/reloadaudit.py (how a change is told from an earlier one of the same
two files: the occurrence tokens, occurrence.py).
"""

from __future__ import annotations

import asyncio
import logging
import secrets
import time
from collections.abc import Callable
from typing import Any

from gateway.configfile import LoadedConfig
from gateway.control.occurrence import (
    NotNear,
    change_key,
    fleet_head,
    newest_reload,
    occurrence_of,
)
from gateway.control.reloadaudit import Pending, ReloadAudits
from gateway.control.reloadclaim import CLAIM_WAIT
from gateway.control.reloadkept import KeptChanges, kept_path, slot_of
from gateway.domain.audit import AuditDraft, utc_now
from gateway.domain.configrecord import record_config
from gateway.domain.diff import config_dict, diff_configs
from gateway.domain.killreach import kills_routed_around
from gateway.domain.kills import unrouted, unrouted_since
from gateway.domain.reloadcheck import facts_from_doc, reload_problems
from gateway.domain.rolledoff import held_moved
from gateway.domain.routetable import RouteTable
from gateway.domain.statedoc import Change, StateDoc
from gateway.errors import AuditError, ConfigError, Problem, StateError, StoreUnavailable
from gateway.log import event
from gateway.state.sync import Sync
from gateway.tasks import cancel

__all__ = ["ConfigHistory"]

log = logging.getLogger("killgate")

#: the longest pause between reads of the fleet's config occurrence, an instance that
#: started without the store waiting to join it (seconds)
JOIN_PAUSE_MAX = 10.0


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
        #: (a worker's file its own: reloadkept.py)
        self.audits = ReloadAudits(sync, KeptChanges(
            kept_path(sync.snapshot.path, slot_of(instance)), sync.keys))
        self._join: asyncio.Task[None] | None = None  # (`begin` again, once the store answers)

    def pending(self) -> list[dict[str, Any]]:
        """The changes whose audit event is not yet recorded (reloadaudit.py)."""
        return self.audits.pending()

    def dropped(self) -> dict[str, Any] | None:
        """The changes whose audit was dropped unrecorded (reloadaudit.py)."""
        return self.audits.dropped()

    async def stop(self, timeout: float) -> None:
        """Wait (up to `timeout`) for the audits not yet recorded (reloadaudit.py)."""
        await cancel(self._join)
        await self.audits.stop(timeout)

    async def begin(self, loaded: LoadedConfig) -> None:
        """Join the fleet's occurrence of the file this instance starts on (module doc). The
        store not answering, joined once it does (`_join_later`), unless a reload comes
        first: kept as one of its own, every later change was audited once per instance
        started so (each claim key its own), for as long as it ran (a `serve --workers N`
        group started in an outage: N events a reload)."""
        try:
            if not self.sync.synced_once:  # (not waited for again: the start waited already)
                raise StoreUnavailable("the store did not answer at start")
            await self._joined(loaded)
        except (StateError, TimeoutError) as exc:
            # (a trail read but too long since its last reload, NotNear, is not read again)
            later = isinstance(exc, (StoreUnavailable, TimeoutError)) \
                and not isinstance(exc, NotNear)
            event(log, "config_occurrence_unknown", logging.WARNING,
                  error=str(exc) or "timeout", action=(
                      "joined once the store answers; a config change made before that"
                      if later else "the next config change") + " is audited by this "
                  "instance even if another one audited it too")
            if later:
                self._join = asyncio.get_running_loop().create_task(
                    self._join_later(loaded, loaded.config.state.poll_interval),
                    name="config-occurrence-join")
        # (the changes a stopped process left waiting for the store: reloadkept.py)
        self.audits.resume(self.instance, loaded.config.state.command_timeout * CLAIM_WAIT)

    async def _joined(self, loaded: LoadedConfig) -> bool:
        """The fleet's occurrence of `loaded` read from the trail and taken, unless a reload
        made meanwhile moved this instance on (its change claimed with the token it had)."""
        token = self.token
        reload, start = await asyncio.wait_for(newest_reload(self.sync.store),
                                               loaded.config.state.command_timeout * 6)
        if self.token != token:
            return False
        self.token = start_token(loaded.digest, fleet_head(reload, start))
        return True

    async def _join_later(self, loaded: LoadedConfig, pause: float) -> None:
        """`_joined` once the store has synced, while no reload came since the start; a
        read that fails is tried again with back-off (up to JOIN_PAUSE_MAX), one that finds
        no reload near enough (NotNear) is not."""
        token = self.token
        while self.token == token:
            if self.sync.synced_once:
                try:
                    if await self._joined(loaded):
                        event(log, "config_occurrence_joined", config=loaded.digest)
                    return
                except NotNear:
                    return
                except (StateError, TimeoutError):
                    pause = min(pause * 2, JOIN_PAUSE_MAX)  # (tried again)
            await asyncio.sleep(pause)

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
        key = change_key(old.digest, new.digest, self.token)
        self.token, self.since = occurrence_of(key), time.time()  # (before any await: the switch)
        changed_at = utc_now()
        gone = self.warn_unrouted(old, new)
        around = self.warn_routed_around(old, new)
        moved = held_moved(self.doc(), old.config.routes, new.config.routes)
        for warning in moved:
            event(log, "rollback_target_moved", logging.WARNING, warning=warning)
        self.audits.queue(self.change(key, old, new, gone, around, changed_at,
                                      new.config.state.command_timeout * CLAIM_WAIT))
        return moved + [f"the {k['kill']} kill ({k['by']}: {k['reason']!r}) stays in force on "
                        f"its name, but this config may serve requests it stopped: "
                        f"{'; '.join(k['how'])}; kill the new name too, or change the config "
                        "back" for k in around]

    def change(self, key: str, old: LoadedConfig, new: LoadedConfig, gone: list[str],
               around: list[dict[str, Any]], changed_at: str, wait: float) -> Pending:
        """The change `key`'s audit as it is kept until recorded (reloadaudit.py)."""
        draft = AuditDraft("killgate/config", "config.reload", {"config": new.digest},
                           "the config file changed", {"digest": old.digest},
                           {"digest": new.digest, "occurrence": occurrence_of(key),
                            "changed_at": changed_at, "changes": summarize_changes(old, new),
                            **({"kills_unrouted": gone} if gone else {}),
                            **({"kills_routed_around": around} if around else {})},
                           "", self.instance)
        return Pending(key, draft, {"instance": self.instance, "time": self.since}, wait)


def summarize_changes(old: LoadedConfig, new: LoadedConfig) -> dict[str, Any]:
    """Per route: added/removed routes and versions, weight and setting changes."""
    return diff_configs(config_dict(old.config), config_dict(new.config))
