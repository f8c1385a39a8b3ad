"""Health of each version: active checks with hysteresis and passive outlier detection.

Pure: no I/O, time passed in. Owns the transition rules (Envoy's model):
- active: `unhealthy_threshold` consecutive failed probes mark a version unhealthy,
  `healthy_threshold` consecutive passes mark it healthy again (one flap changes nothing);
- passive: consecutive failures seen on real traffic eject a version for
  `base_ejection * n` (n = how many times it has been ejected, capped), counted separately
  for "could not reach" (connect errors, timeouts, stalls) and "answered 5xx"; with active
  checks, `healthy_threshold` passes after the ejection re-admit it sooner.
A version serves when it is healthy by its probes (or has none) and is not ejected.
Policy when every version of a route is out: nothing is forced back in; the route answers
with its fallback (decision `fallback`), since sending traffic to a known-bad backend is
what the operator deployed killgate to avoid.
"""

from __future__ import annotations

from dataclasses import dataclass, field

__all__ = ["OutlierPolicy", "VersionHealth"]


@dataclass(frozen=True, slots=True)
class OutlierPolicy:
    consecutive_gateway_failures: int = 5
    consecutive_5xx: int = 5
    base_ejection: float = 30.0
    max_ejection: float = 300.0


@dataclass(slots=True)
class VersionHealth:
    """The health record of one (route, version). Mutated only by its owner (HealthBook)."""

    url: str = ""                   # the backend this record is about
    active: bool = False            # has active checks
    healthy_by_probe: bool = True   # optimistic until the first round says otherwise
    probed: bool = False            # a check has been recorded (`probe` or `first_probe`)
    probe_ok_streak: int = 0
    probe_fail_streak: int = 0
    gateway_fail_streak: int = 0
    fivexx_streak: int = 0
    ejections: int = 0
    ejected_until: float = 0.0
    ejected_cause: str = ""         # the kind of answer that ejected it last ('5xx', 'not_ready', ...)
    last_probe_error: str | None = None
    transitions: list[tuple[float, str]] = field(default_factory=list)

    def serving(self, now: float) -> bool:
        return self.healthy_by_probe and now >= self.ejected_until

    def first_probe(self, ok: bool, now: float, error: str | None = None) -> bool:
        """Record a new backend's first check, made before it serves: it decides at once
        (no threshold), as Envoy's new hosts wait for a first pass. True when it changed."""
        self.probed = True
        self.last_probe_error = None if ok else error
        self.probe_ok_streak, self.probe_fail_streak = (1, 0) if ok else (0, 1)
        if ok == self.healthy_by_probe:
            return False
        self.healthy_by_probe = ok
        self._note(now, "healthy" if ok else "unhealthy")
        return True

    def probe(self, ok: bool, now: float, healthy_threshold: int, unhealthy_threshold: int,
              error: str | None = None) -> bool:
        """Record one active check; returns True when the healthy flag changed."""
        self.probed = True
        self.last_probe_error = None if ok else error
        if ok:
            self.probe_ok_streak += 1
            self.probe_fail_streak = 0
            if not self.healthy_by_probe and self.probe_ok_streak >= healthy_threshold:
                self.healthy_by_probe = True
                self.ejected_until = 0.0  # passing checks re-admit an ejected version too
                self._note(now, "healthy")
                return True
            if self.ejected_until > now and self.probe_ok_streak >= healthy_threshold:
                # ejected by real traffic, and checked healthy that often since (its streak
                # starts again at the ejection): re-admitted, as Envoy's checks uneject
                self.ejected_until = 0.0
                self._note(now, "readmitted")
                return True
        else:
            self.probe_fail_streak += 1
            self.probe_ok_streak = 0
            if self.healthy_by_probe and self.probe_fail_streak >= unhealthy_threshold:
                self.healthy_by_probe = False
                self._note(now, "unhealthy")
                return True
        return False

    def traffic(self, kind: str, now: float, policy: OutlierPolicy) -> bool:
        """Record one real exchange ('ok', '5xx', 'connect', 'error'); True if newly ejected."""
        if kind == "ok":
            self.gateway_fail_streak = 0
            self.fivexx_streak = 0
            return False
        if not self.healthy_by_probe:
            return False  # already out by its checks
        if kind == "5xx":
            self.fivexx_streak += 1
            tripped = self.fivexx_streak >= policy.consecutive_5xx
        else:
            self.gateway_fail_streak += 1
            tripped = self.gateway_fail_streak >= policy.consecutive_gateway_failures
        if not tripped or now < self.ejected_until:
            return False
        self.ejections += 1
        self.ejected_until = now + min(policy.base_ejection * self.ejections, policy.max_ejection)
        self.ejected_cause = kind
        self.probe_ok_streak = 0  # (checks that pass from now on re-admit it: `probe`)
        self.gateway_fail_streak = 0
        self.fivexx_streak = 0
        self._note(now, f"ejected ({kind})")
        return True

    def ejections_since(self, t: float) -> int:
        return sum(1 for when, what in self.transitions if when >= t and what.startswith("ejected"))

    def _note(self, now: float, what: str) -> None:
        self.transitions.append((now, what))
        del self.transitions[:-20]
