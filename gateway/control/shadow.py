"""Shadow results across the fleet: publish this process's counts, read everyone's.

Owns the shadow loop of this process: every `INTERVAL`, each route's `Tally` (kept by
`dataplane/shadow.py`'s mirror) goes to the state store when it changed (and at least every
`REPUBLISH`, a heartbeat), under the stats key `shadow~<route>`; routes whose shadow is
gated (`analysis.min_shadow_agreement`) also read the fleet's and keep the merge, so the
gate (`refusal`, `gate`) is a synchronous in-memory check. `report()` reads the fleet fresh
for GET /v1/routes/{route}/shadow and `killgate shadow report`. Counts are those of
instances heard from in the last `FRESH` seconds, for the shadow settings in force here.
What a blob holds and how old it is: control/shadowblobs.py.
"""

from __future__ import annotations

import asyncio
import logging
import math
import time
from collections.abc import Callable
from typing import Any, Protocol

from gateway.config import Config, RouteConfig
from gateway.control.shadowblobs import blob_age, bounded, records_key, stats_key
from gateway.domain.promotiongate import gate, gate_counts, other_status, promotion_refusal
from gateway.domain.shadowreport import merge, report
from gateway.domain.shadowstats import Tally
from gateway.domain.statedoc import Change, StateDoc, apply_change
from gateway.domain.verdict import spec_for
from gateway.errors import StateError
from gateway.log import event
from gateway.tasks import cancel

__all__ = ["FRESH", "ShadowResults"]

log = logging.getLogger("killgate.shadow")
INTERVAL = 1.0
REPUBLISH = 5.0
FRESH = 20.0
#: an instance silent this long is gone (a restart has a new name): its counts leave the store
FORGET = 600.0
class StatsStore(Protocol):
    async def put_stats(self, route: str, instance: str, blob: dict[str, Any]) -> None: ...

    async def get_stats(self, route: str) -> list[dict[str, Any]]: ...

    async def drop_stats(self, route: str, instances: list[str]) -> None: ...


class Tallies(Protocol):
    """Where this process's counts are kept (the mirror)."""

    @property
    def tallies(self) -> dict[str, Tally]: ...


class ShadowResults:
    def __init__(self, local: Tallies, store: StatsStore, instance: str,
                 config: Callable[[], Config], clock: Callable[[], float] = time.time,
                 interval: float = INTERVAL) -> None:
        self.local = local
        self.store = store
        self.instance = instance
        self.config = config
        self.clock = clock
        self.interval = interval
        self.fleet: dict[str, Tally] = {}  # route -> the fleet's counts (gated routes)
        self._published: dict[str, tuple[int, str, float]] = {}  # changes, spec, when
        #: route -> instance -> (the `t` its blob said, when we take it written and when we
        #: read it, by our clock): freshness is judged on our clock, so that another instance's clock ahead
        #: of ours keeps no counts of a gone instance, nor one behind ours drops a live one
        self._heard: dict[str, dict[str, tuple[float, float, float]]] = {}
        self._task: asyncio.Task[None] | None = None

    # ------------------------------------------------------------------ lifecycle

    async def start(self) -> None:
        self._task = asyncio.create_task(self._loop(), name="shadow-results")

    async def stop(self) -> None:
        await cancel(self._task)
        self._task = None

    async def _loop(self) -> None:
        while True:
            for rc in self.config().routes:
                if rc.shadow is None:
                    continue
                try:
                    await self.publish(rc)
                    if rc.analysis is not None and rc.analysis.min_shadow_agreement is not None:
                        await self.refresh(rc)
                except StateError as exc:
                    event(log, "shadow_results_unavailable", logging.DEBUG, route=rc.name,
                          error=str(exc))
                except Exception as exc:  # noqa: BLE001 - one route's bad turn ends no loop
                    event(log, "shadow_results_failed", logging.WARNING, route=rc.name,
                          error=f"{type(exc).__name__}: {exc}")
            await asyncio.sleep(self.interval)

    # ------------------------------------------------------------------ the store

    async def publish(self, rc: RouteConfig, force: bool = False, changed: bool = False) -> None:
        """This process's counts to the store: when they changed, or (the heartbeat) when
        the last publish is REPUBLISH old; `force`: always; `changed`: when they changed,
        or the last publish is at risk of no longer counting (half of FRESH)."""
        t = self.local.tallies.get(rc.name)
        if t is None:
            return
        if rc.shadow is not None:  # (records made under other redaction leave first)
            t.keep_for(rc.shadow.disagreements)
        now = self.clock()
        last = self._published.get(rc.name)
        if not force and last is not None and last[:2] == (t.changes, t.spec) \
                and now - last[2] < (FRESH / 2 if changed else REPUBLISH):
            return
        # (what the blob holds is marked published: a copy recorded while the store writes
        # it changes the tally again, and is in the next publish, not lost until the
        # heartbeat)
        published = (t.changes, t.spec, now)
        blob = bounded(t.to_json())
        # the counts (with no records: an instance of an older version reads them as a
        # tally that kept none), then the records apart, read by reports only
        await self.store.put_stats(stats_key(rc.name), self.instance, {
            "instance": self.instance, "t": now, "records_apart": True,
            "tally": {**blob, "records": [], "disagreements": []}})
        await self.store.put_stats(records_key(rc.name), self.instance, {
            "instance": self.instance, "t": now, "records": blob["records"],
            "disagreements": blob["disagreements"]})
        self._published[rc.name] = published

    async def _records(self, rc: RouteConfig) -> dict[str, dict[str, Any]]:
        """Each instance's kept records published apart from its counts (by instance)."""
        out: dict[str, dict[str, Any]] = {}
        for blob in await self.store.get_stats(records_key(rc.name)):
            if isinstance(blob.get("instance"), str):
                out[blob["instance"]] = blob
        return out

    async def _fleet(self, rc: RouteConfig, records: bool = False) -> tuple[Tally, int]:
        """The fleet's counts for the shadow settings in force, and how many instances;
        `records`: with the kept disagreement records (a report's; the gate's needs none).
        A blob of an older version, records and counts in one, is read whole."""
        assert rc.shadow is not None
        kept = await self._records(rc) if records else {}
        spec = spec_for(rc)
        now = self.clock()
        tallies = []
        gone: list[str] = []
        before = self._heard.get(rc.name, {})
        heard: dict[str, tuple[float, float, float]] = {}
        for blob in await self.store.get_stats(stats_key(rc.name)):
            try:
                t = float(blob["t"])
                if not math.isfinite(t):
                    raise ValueError("no time")
                name = str(blob.get("instance"))
                age, same = blob_age(t, before.get(name), now, heard, name)
                if age > FRESH:
                    # (gone only once read unchanged again: a live instance, whatever its
                    # clock, republishes every 5 s)
                    if age > FORGET and same and name != self.instance:
                        gone.append(name)
                    continue
                tj = blob["tally"]
                apart = kept.get(name)
                if blob.get("records_apart") is True and apart is not None:
                    tj = {**tj, "records": apart.get("records", []),
                          "disagreements": apart.get("disagreements", [])}
                tallies.append(Tally.from_json(tj))
            except (KeyError, TypeError, ValueError):
                event(log, "shadow_counts_unreadable", logging.WARNING, route=rc.name)
        self._heard[rc.name] = heard
        # (records without counts: an instance of an older version dropped the counts of
        # one gone, and not its records; counts are always written before records)
        orphans = [n for n in kept if n not in heard and n != self.instance]
        if gone or orphans:
            try:
                await self.store.drop_stats(stats_key(rc.name), gone)
                await self.store.drop_stats(records_key(rc.name), gone + orphans)
            except StateError as exc:
                event(log, "shadow_counts_prune_failed", logging.WARNING, route=rc.name,
                      error=str(exc))
        tallies = [t for t in tallies if t.version == rc.shadow.version and t.spec == spec]
        return merge(rc.shadow.version, spec, tallies), len(tallies)

    async def refresh(self, rc: RouteConfig) -> Tally:
        fleet, _ = await self._fleet(rc)
        self.fleet[rc.name] = fleet
        return fleet

    async def report(self, rc: RouteConfig, limit: int = 20) -> dict[str, Any]:
        """GET /v1/routes/{route}/shadow: the fleet's results (raises StateError)."""
        sh = rc.shadow
        assert sh is not None
        # (what changed since the last publish, so the report holds it; a read that finds
        # nothing new writes nothing: a reader must not make the store take the blob, with
        # its kept bodies, as often as it asks)
        await self.publish(rc, changed=True)
        fleet, instances = await self._fleet(rc, records=True)
        if rc.analysis is not None and rc.analysis.min_shadow_agreement is not None:
            self.fleet[rc.name] = fleet
        out = report(rc.name, fleet, sh.compare_for(rc.protocol).kind, sh.sample, instances,
                     limit)
        if rc.analysis is not None and rc.analysis.min_shadow_agreement is not None:
            why = gate(rc, fleet)
            # (failed copies count as compared; only of requests the primary answered 2xx)
            counted, agreed, failed = gate_counts(fleet)
            out["gate"] = {"min_agreement": rc.analysis.min_shadow_agreement,
                           "min_compared": rc.analysis.min_shadow_compared,
                           "compared": counted, "agreed": agreed,
                           "failures": sum(failed.values()),
                           "other_status": other_status(fleet),
                           "older_instances": fleet.older,
                           "agreement": round(agreed / counted, 6) if counted else None,
                           "open": why is None, "reason": why}
        return out

    # ------------------------------------------------------------------ the gate

    def gate(self, rc: RouteConfig) -> str | None:
        """Why the route's shadow may not get traffic now (None: it may). The fleet's counts
        merged at the last refresh count only when they are of `rc`'s shadow version and
        settings: a reload since (another version, another comparison) starts from none,
        also while the store cannot be read and the merge is not refreshed."""
        fleet = self.fleet.get(rc.name)
        sh = rc.shadow
        if fleet is not None and sh is not None and \
                (fleet.version != sh.version or fleet.spec != spec_for(rc)):
            fleet = None
        return gate(rc, fleet)

    async def gate_for(self, rc: RouteConfig) -> Callable[[StateDoc, Change], str | None] | None:
        """For a write to `rc` (promote, weights, rollback): a check of the change that says
        why it is refused (it would give the shadow traffic while the fleet's agreement is
        below the gate), read fresh from the store now. None: the route's shadow is not
        gated."""
        if rc.shadow is None or rc.analysis is None or rc.analysis.min_shadow_agreement is None:
            return None
        fleet = await self.refresh(rc)

        def check(cur: StateDoc, change: Change) -> str | None:
            return promotion_refusal(rc, cur, apply_change(cur, change), fleet)

        return check
