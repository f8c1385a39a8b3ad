"""Active health checks and passive outlier detection, feeding the routing snapshot.

Owns one prober task per distinct backend health URL in this process (versions that
share a backend share its prober; the workers of one process share the results) and the
`VersionHealth` records; each check's HTTP request is probeclient.py's. It is the
data plane's `Observer`: every exchange's outcome lands here. Whenever the set of
versions that cannot serve changes, it hands a new frozenset to `TableHolder`.
Passive ejection never takes out the last serving version of a route (Envoy's
max_ejection_percent); active checks may, and then the route answers with its fallback.
"""

from __future__ import annotations

import asyncio
import logging
import random
from collections.abc import Callable, Mapping

from gateway.config import Config, HealthConfig
from gateway.control.probeclient import ProbeClient
from gateway.control.table import TableHolder
from gateway.domain.health import OutlierPolicy, VersionHealth
from gateway.log import event
from gateway.telemetry.metrics import Metrics

__all__ = ["HealthMonitor"]

log = logging.getLogger("killgate.health")

Key = tuple[str, str]  # (route, version)
ProbeKey = tuple[str, str, float, float]  # (url, path, interval, timeout)
Kept = dict[Key, tuple[VersionHealth, bool, bool]]  # record, active, healthy_by_probe


class HealthMonitor:
    def __init__(self, holder: TableHolder, metrics: Metrics,
                 clock: Callable[[], float] | None = None) -> None:
        self.holder = holder
        self.metrics = metrics
        self.policies: dict[str, OutlierPolicy | None] = {}  # route -> policy (None: off)
        self.records: dict[Key, VersionHealth] = {}
        self._probe_users: dict[ProbeKey, list[tuple[Key, HealthConfig]]] = {}
        self._tasks: dict[ProbeKey, asyncio.Task[None]] = {}
        self.client = ProbeClient()  # (one session for every prober of the process)
        self._readmit: asyncio.TimerHandle | None = None
        self._clock = clock
        self._published: frozenset[Key] = frozenset()
        # (while `configure` checks new backends, the running table still routes by the old
        # config: what it held out of it that the new one drops or replaces, kept out)
        self._parting: frozenset[Key] = frozenset()
        self._parting_ejected: frozenset[Key] = frozenset()
        # versions whose failure streak may not be 0 (any other's is): an "ok" for another
        # version, the common case, costs one set lookup
        self._streaking: set[Key] = set()

    def now(self) -> float:
        return self._clock() if self._clock else asyncio.get_running_loop().time()

    # ------------------------------------------------------------------ lifecycle

    async def start(self) -> None:
        self.client.open()
        await self.configure(self.holder.loaded.config, first_round=True)

    async def stop(self) -> None:
        for t in self._tasks.values():
            t.cancel()
        await asyncio.gather(*self._tasks.values(), return_exceptions=True)
        self._tasks.clear()
        if self._readmit is not None:
            self._readmit.cancel()
        await self.client.close()

    def kept(self) -> Kept:
        """The version records as they are, for `configure(old, kept)` after a reload
        refused once `configure(new)` ran: the records it drops or replaces (ejections,
        check streaks) come back as they were, not made afresh."""
        return {k: (rec, rec.active, rec.healthy_by_probe) for k, rec in self.records.items()}

    async def configure(self, cfg: Config, first_round: bool = False,
                        kept: Kept | None = None) -> None:
        """(Re)build probers for a config: unchanged backends keep their state and task;
        new ones get one probe round (bounded by their timeout) before they serve.
        `kept` (`kept()`, taken under `cfg`): the records to go back to, published at once
        (before any await: the table still routes by `cfg`)."""
        if kept is not None:
            back: dict[Key, VersionHealth] = {}
            for k, (record, active, by_probe) in kept.items():
                if active and not record.active:  # (its checks were turned off meanwhile)
                    record.healthy_by_probe = by_probe
                back[k] = record
            self.records = back
            self._publish()
        users: dict[ProbeKey, list[tuple[Key, HealthConfig]]] = {}
        wanted: set[Key] = set()
        now = self.now()
        before = {k: (rec.url, rec.healthy_by_probe) for k, rec in self.records.items()
                  if not rec.serving(now)}
        self.policies = {rc.name: OutlierPolicy(
            rc.outlier.consecutive_gateway_failures, rc.outlier.consecutive_5xx,
            rc.outlier.base_ejection, rc.outlier.max_ejection) if rc.outlier.enabled else None
            for rc in cfg.routes}
        for rc in cfg.routes:
            for v in rc.versions:
                key = (rc.name, v.name)
                wanted.add(key)
                rec = self.records.get(key)
                if rec is None or rec.url != v.url:
                    rec = self.records[key] = VersionHealth(url=v.url)
                rec.active = rc.health is not None
                if rc.health is None:
                    rec.healthy_by_probe = True
                    continue
                h = rc.health
                users.setdefault((v.url, h.path, h.interval, h.timeout), []).append((key, h))
        for key in list(self.records):
            if key not in wanted:
                del self.records[key]
        for pk in list(self._tasks):
            if pk not in users:
                self._tasks.pop(pk).cancel()
        self._probe_users = users
        parting = frozenset(k for k, (url, _) in before.items()
                            if (rec := self.records.get(k)) is None or rec.url != url
                            or rec.serving(now))
        self._parting = parting
        self._parting_ejected = frozenset(k for k in parting if before[k][1])
        for pk, keyed in users.items():
            if pk in self._tasks:  # a running prober: a version new to it (a reload added
                self._adopt(keyed)  # it) starts with what its checks say, not optimistic
        new = [pk for pk in users if pk not in self._tasks]
        if new:
            await asyncio.wait([asyncio.ensure_future(self._probe_round(pk, True))
                                for pk in new],
                               timeout=max(pk[3] for pk in new) + 0.5)
            for pk in new:
                self._tasks[pk] = asyncio.create_task(self._probe_loop(pk),
                                                      name=f"probe {pk[0]}{pk[1]}")
        self._parting = self._parting_ejected = frozenset()  # (the new table goes live next)
        self._publish()
        if first_round and users:
            event(log, "phase", phase="health", probers=len(users),
                  unhealthy=sorted(f"{r}/{v}" for r, v in self._published))

    def _adopt(self, keyed: list[tuple[Key, HealthConfig]]) -> None:
        """Records of one prober's versions never checked yet take the check state of one
        that was (the same backend, path and settings: the same checks)."""
        recs = [r for r in (self.records.get(k) for k, _ in keyed) if r is not None]
        known = next((r for r in recs if r.probed), None)
        if known is None:
            return
        for rec in recs:
            if not rec.probed:
                rec.probed = True
                rec.healthy_by_probe = known.healthy_by_probe
                rec.probe_ok_streak = known.probe_ok_streak
                rec.probe_fail_streak = known.probe_fail_streak
                rec.last_probe_error = known.last_probe_error

    # ------------------------------------------------------------------ active checks

    async def _probe_loop(self, pk: ProbeKey) -> None:
        interval = pk[2]
        while True:
            await asyncio.sleep(interval * random.uniform(0.85, 1.15))
            await self._probe_round(pk)

    async def _probe_round(self, pk: ProbeKey, first: bool = False) -> None:
        """One check of a backend for its versions. `first`: the round a new prober makes
        before its backend serves, which decides alone for a version never checked."""
        url, path, _, timeout = pk
        ok, err = await self.client.check(url + path, timeout)
        now = self.now()
        changed = False
        for key, h in self._probe_users.get(pk, []):
            rec = self.records.get(key)
            if rec is None:
                continue
            if rec.first_probe(ok, now, err) if first and not rec.probed else \
                    rec.probe(ok, now, h.healthy_threshold, h.unhealthy_threshold, err):
                changed = True
                event(log, "health_changed", logging.WARNING if not ok else logging.INFO,
                      route=key[0], version=key[1], healthy=ok, error=err)
        if changed:
            self._publish()

    # ------------------------------------------------------------------ passive (Observer)

    def outcome(self, route: str, version: str, kind: str, latency: float) -> None:
        if kind == "overflow":
            return  # our own queue's limit, not the backend's failure (nor a success)
        key = (route, version)
        if kind == "ok" and key not in self._streaking:
            return  # (no streak to end)
        rec = self.records.get(key)
        if rec is None:
            self._streaking.discard(key)  # (a record made for it later starts at 0)
            return
        policy = self.policies.get(route)
        if policy is None:
            return  # outlier detection is off for this route
        if kind == "ok":
            rec.traffic(kind, 0.0, policy)
            self._streaking.discard(key)
            return
        self._streaking.add(key)
        now = self.now()
        if not self._others_serving(route, version, now):
            # Never eject the last version that serves: count, but do not trip.
            rec.gateway_fail_streak = rec.fivexx_streak = 0
            return
        if rec.traffic(kind, now, policy):
            self.metrics.inc("killgate_upstream_ejections_total", (route, version, kind),
                             label_names=("route", "version", "kind"))
            event(log, "version_ejected", logging.WARNING, route=route, version=version,
                  cause=kind, seconds=round(rec.ejected_until - now, 1), ejections=rec.ejections)
            self._publish()

    def served(self, batch: Mapping[Key, list[float]], now: float) -> None:
        """"ok" exchanges, a batch at a time (`wiring.dataplane.Outcomes`, which hands them
        over before any other outcome): each ends its version's failure streaks."""
        if self._streaking:
            for route, version in batch:
                self.outcome(route, version, "ok", 0.0)

    def batched_by(self, flush: Callable[[], None]) -> None:
        return None  # (nothing read here counts "ok" exchanges: streaks are read on failures)

    def _others_serving(self, route: str, version: str, now: float) -> bool:
        """Whether a version of `route` other than `version` can serve: healthy and not
        ejected, and one the routing table would send clients to (not killed, not the
        route's shadow, which never answers a client)."""
        plan = self.holder.table.by_name.get(route)
        return any(r == route and v != version and rec.serving(now)
                   and (plan is None or plan.can_serve(v))
                   for (r, v), rec in self.records.items())

    # ------------------------------------------------------------------ publishing

    def _publish(self) -> None:
        now = self.now()
        out = frozenset(k for k, rec in self.records.items() if not rec.serving(now))
        ejected = frozenset(k for k in out if self.records[k].healthy_by_probe)
        if self._parting:  # (see __init__)
            ejected = (ejected - self._parting) | self._parting_ejected
            out |= self._parting
        # afresh: a version a reload removed leaves the series (not its last value forever)
        self.metrics.clear("killgate_upstream_health")
        for (r, v), rec in self.records.items():
            self.metrics.set("killgate_upstream_health", 1 if rec.serving(now) else 0, (r, v),
                             label_names=("route", "version"))
        self._published = out
        self.holder.set_unhealthy(out, ejected)
        # re-admit ejected versions when their time is up
        if self._readmit is not None:
            self._readmit.cancel()
            self._readmit = None
        pending = [rec.ejected_until for rec in self.records.values() if rec.ejected_until > now]
        if pending:
            loop = asyncio.get_running_loop()
            self._readmit = loop.call_at(min(pending) + 0.001, self._publish)

    def ejections(self, route: str, version: str, seconds: float) -> int:
        """How often outlier detection ejected (route, version) in the last `seconds`."""
        rec = self.records.get((route, version))
        return 0 if rec is None else rec.ejections_since(self.now() - seconds)

    def status(self) -> dict[Key, dict[str, object]]:
        now = self.now()
        return {k: {"healthy": rec.serving(now), "probe_healthy": rec.healthy_by_probe,
                    "ejected_for_s": round(max(0.0, rec.ejected_until - now), 1),
                    "ejected_cause": rec.ejected_cause if rec.ejected_until > now else None,
                    "ejections": rec.ejections, "last_probe_error": rec.last_probe_error}
                for k, rec in self.records.items()}
