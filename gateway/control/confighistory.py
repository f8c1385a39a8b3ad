"""The config file's trace in the replicated state: version identities, stables, reloads.

Owns the identity check (a version name must not point at a changed artifact), the record
of unseen identities and stables (best effort), one audit event per fleet-wide reload, and
the warning when a config stops routing to a killed name (removed or renamed: the kill then
stops nothing, README "Trust"). Writes through the state sync; never touches the routing
table.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from typing import Any

from gateway.configfile import LoadedConfig
from gateway.control.reload import summarize_changes
from gateway.domain.audit import AuditDraft, utc_now
from gateway.domain.diff import config_dict
from gateway.domain.killreach import kills_routed_around
from gateway.domain.kills import unrouted
from gateway.domain.overrides import record_config
from gateway.domain.reloadcheck import facts_from_doc, reload_problems
from gateway.domain.rolledoff import held_moved
from gateway.domain.routetable import RouteTable
from gateway.domain.statedoc import Change, StateDoc
from gateway.errors import AuditError, ConfigError, Problem, StateError
from gateway.log import event
from gateway.state.sync import Sync

__all__ = ["ConfigHistory"]

log = logging.getLogger("killgate")

#: slots per (old, new) transition for one hour: a revert and re-deploy cycle takes the next
SLOTS = 8
#: how much earlier than our own switch to the old file another instance's claim of the same
#: change may look (wall clocks of a fleet differ a little)
CLOCK_SLACK = 1.0


class ConfigHistory:
    def __init__(self, sync: Sync, doc: Callable[[], StateDoc], instance: str) -> None:
        self.sync = sync
        self.doc = doc  # the document in force (the holder's)
        self.instance = instance
        self.since = time.time()  # when the config this instance runs went live here

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
        routes = [plan.config for plan in new.routes]
        keys = unrouted(new.doc, routes) - unrouted(old.doc, routes)
        if keys:
            event(log, "kills_unrouted", logging.WARNING, kills=",".join(sorted(keys)),
                  action="this config names no such route or version: the kill stops "
                  "nothing here; it is in force here once the name is in the config")

    async def reloaded(self, old: LoadedConfig, new: LoadedConfig) -> list[str]:
        """One audit event per fleet-wide config change (old digest -> new digest). The
        instances making the same change share it through a claim; a claim of the same
        transition made before this instance itself switched to `old` is an earlier change
        (a revert, then a re-deploy): it is audited again, in the next slot. Returns the
        reload's warnings (each logged): a version a latched rollback serves moved to
        another url (`rolledoff.held_moved`), a kill in force whose traffic the file may
        serve under its kept name (`warn_routed_around`: only a log line before, while the
        kill still read as routed and in force in status)."""
        since, self.since = self.since, time.time()
        gone = self.warn_unrouted(old, new)
        around = self.warn_routed_around(old, new)
        moved = held_moved(self.doc(), old.config.routes, new.config.routes)
        for warning in moved:
            event(log, "rollback_target_moved", logging.WARNING, warning=warning)
        await self._audit(old, new, since, gone, around)
        return moved + [f"the {k['kill']} kill ({k['by']}: {k['reason']!r}) stays in force on "
                        f"its name, but this config may serve requests it stopped: "
                        f"{'; '.join(k['how'])}; kill the new name too, or change the config "
                        "back" for k in around]

    async def _audit(self, old: LoadedConfig, new: LoadedConfig, since: float,
                     gone: list[str], around: list[dict[str, Any]]) -> None:
        try:
            for slot in range(SLOTS):
                claim = await self.sync.store.idem_claim(
                    f"config:{old.digest}:{new.digest}:{slot}",
                    {"instance": self.instance, "time": self.since}, 3600)
                if claim is None:
                    break  # ours: record it
                t = claim.get("time")
                if not isinstance(t, int | float) or t >= since - CLOCK_SLACK:
                    return  # another instance already recorded this change
            draft = AuditDraft("killgate/config", "config.reload", {"config": new.digest},
                               "the config file changed", {"digest": old.digest},
                               {"digest": new.digest, "changes": summarize_changes(old, new),
                                **({"kills_unrouted": gone} if gone else {}),
                                **({"kills_routed_around": around} if around else {})},
                               "", self.instance)
            await self.sync.append_audit(draft)
        except (StateError, AuditError) as exc:
            event(log, "config_reload_audit_failed", logging.WARNING, error=str(exc))
