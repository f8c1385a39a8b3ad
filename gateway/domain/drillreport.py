"""What a drill measured, and its verdict: pure analysis of the drill's own requests.

Owns the definitions (times in ms from the API call, per instance): time to kill = first
answer showing the kill; time to failover = first answer from another version through
failover; time to rollback = from the call until every answer comes from the target;
leaks = answers showing the old state to requests sent after the receipt said every
instance applied the change and answered before the restore was asked for (a later answer
may rightly show the restored state); errors = no answer, or >= 500 other than
`killed`; time to restore = first answer showing the state from before. No I/O;
observations and marks are passed in. The verdict on these measures is drillverdict.py's,
the human summary of a report drillsummary.py's.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

from gateway.domain.drillplan import Plan

__all__ = ["Marks", "Obs", "Restoring", "analyse", "is_error", "other_route", "percentiles",
           "shows_before", "shows_injection", "steady_problems", "unrestored"]


@dataclass(frozen=True, slots=True)
class Obs:
    """One drill request: seconds since the drill began; status 0 = no answer."""

    instance: str
    sent: float
    recv: float
    status: int
    version: str | None
    decision: str | None
    route: str | None = None  # the route that answered (x-killgate-route)


@dataclass(slots=True)
class Marks:
    steady: tuple[float, float] | None = None
    inject_sent: float | None = None
    inject_done: float | None = None
    outage: tuple[float, float] | None = None
    restore_sent: float | None = None
    restore_done: float | None = None
    end: float | None = None
    extra: dict[str, float] = field(default_factory=dict)


def percentiles(values: Iterable[float | None]) -> dict[str, float | None]:
    """Nearest-rank p50, p99 and max (None when there is nothing to rank). A None value
    is an instance that never got there: slower than any time, so a rank it takes is
    None (not measured), never the next smaller number."""
    xs = sorted(math.inf if v is None else v for v in values)
    if not xs:
        return {"p50": None, "p99": None, "max": None}

    def rank(q: float) -> float | None:
        x = xs[max(0, math.ceil(q * len(xs)) - 1)]
        return None if math.isinf(x) else round(x, 1)

    return {"p50": rank(0.5), "p99": rank(0.99), "max": rank(1.0)}


def is_error(o: Obs) -> bool:
    return o.status == 0 or (o.status >= 500 and o.decision != "killed")


def shows_injection(plan: Plan, to: str | None, o: Obs) -> bool:
    if o.status == 0:
        return False
    if plan.kind == "rollback":
        return o.version == to and o.status < 500
    if plan.kind == "failover":
        return o.decision == "failover" and o.version not in (None, plan.version)
    if plan.kill_scope == "version":
        return o.decision in ("failover", "killed") and o.version != plan.version
    return o.decision == "killed"


def shows_before(plan: Plan, to: str | None, o: Obs) -> bool:
    """The answer could only come from the state before the injection (a leak after it)."""
    if o.status == 0:
        return False
    if plan.kind == "rollback":
        return o.version is not None and o.version != to
    if plan.kind == "failover" or plan.kill_scope == "version":
        return o.version == plan.version
    return o.decision != "killed" and o.status < 500


def _ms(t: float | None, since: float | None) -> float | None:
    return None if t is None or since is None else round((t - since) * 1000, 1)


def _by_instance(obs: Sequence[Obs]) -> dict[str, list[Obs]]:
    out: dict[str, list[Obs]] = {}
    for o in sorted(obs, key=lambda o: o.sent):
        out.setdefault(o.instance, []).append(o)
    return out


def _time_to(plan: Plan, to: str | None, mine: list[Obs], m: Marks) -> float | None:
    t0 = m.inject_sent
    if t0 is None:
        return None
    end = m.restore_sent if m.restore_sent is not None else math.inf
    window = [o for o in mine if t0 <= o.sent < end and o.status != 0]
    if plan.kind == "rollback":
        last_old = max((i for i, o in enumerate(window) if not shows_injection(plan, to, o)),
                       default=-1)
        after = window[last_old + 1:]
        return _ms(after[0].recv, t0) if after else None
    first = next((o for o in window if shows_injection(plan, to, o)), None)
    return _ms(first.recv, t0) if first else None


def _time_to_restore(plan: Plan, to: str | None, mine: list[Obs], m: Marks) -> float | None:
    if m.restore_sent is None:
        return None
    first = next((o for o in mine if o.sent >= m.restore_sent and shows_before(plan, to, o)),
                 None)
    return _ms(first.recv, m.restore_sent) if first else None


def unrestored(plan: Plan, to: str | None, obs: Sequence[Obs], m: Marks) -> list[str]:
    """The instances that answered during the drill and have not yet shown an answer from
    before it since the restore was asked for."""
    if m.restore_sent is None:
        return []
    return Restoring(plan, to, m.restore_sent).left(obs)


class Restoring:
    """unrestored(), kept up to date while answers come in (the settle asks every 50 ms):
    each answer is looked at once, never the whole drill's again, since the wait runs on
    the loop the probe traffic it measures runs on."""

    def __init__(self, plan: Plan, to: str | None, restore_sent: float) -> None:
        self.plan, self.to, self.since = plan, to, restore_sent
        self.seen = 0  # answers looked at (the list only grows)
        self.answered: set[str] = set()
        self.back: set[str] = set()

    def left(self, obs: Sequence[Obs]) -> list[str]:
        for o in obs[self.seen:]:
            self.answered.add(o.instance)
            if o.sent >= self.since and shows_before(self.plan, self.to, o):
                self.back.add(o.instance)
        self.seen = len(obs)
        return sorted(self.answered - self.back)


def analyse(plan: Plan, to: str | None, obs: Sequence[Obs], m: Marks) -> dict[str, Any]:
    """The report's measured part: per instance and over instances."""
    rows: list[dict[str, Any]] = []
    t_leak = m.inject_done if m.inject_done is not None else math.inf
    t_end = m.restore_sent if m.restore_sent is not None else math.inf
    t_inj = m.inject_sent if m.inject_sent is not None else math.inf
    for inst, mine in _by_instance(obs).items():
        steady = [o for o in mine if m.steady and m.steady[0] <= o.sent < m.steady[1]]
        # how often the answer that shows the change comes by: the version drilled (or,
        # for a rollback, the versions it moves away from)
        hit = ((lambda o: o.version not in (None, to)) if plan.kind == "rollback"
               else (lambda o: o.version == plan.version) if plan.version else None)
        share = sum(map(hit, steady)) / len(steady) if steady and hit else None
        rows.append({
            "instance": inst,
            "requests": len(mine),
            plan.measure: _time_to(plan, to, mine, m),
            # answers that showed the injection (until the restore reached the instance)
            "showed": sum(o.sent >= t_inj and shows_injection(plan, to, o) for o in mine),
            "leaks": sum(t_leak <= o.sent and o.recv < t_end and shows_before(plan, to, o)
                         for o in mine),
            "errors": sum(o.sent >= t_inj and is_error(o) for o in mine),
            "time_to_restore_ms": _time_to_restore(plan, to, mine, m),
            "resolution_ms": round(1000.0 / (plan.rate * share), 1) if share else
            round(1000.0 / plan.rate, 1),
        })
    # (over every instance once the phase began: one that never got there is not left out,
    # or the fleet's slowest would read as fast as the others)
    measured = [r[plan.measure] for r in rows] if m.inject_sent is not None else []
    restored = [r["time_to_restore_ms"] for r in rows] if m.restore_sent is not None else []
    return {
        "instances": rows,
        plan.measure: percentiles(measured),
        "time_to_restore_ms": percentiles(restored),
        "leaks": sum(r["leaks"] for r in rows),
        "errors": sum(r["errors"] for r in rows),
        "requests": len(obs),
    }


def other_route(route: str, obs: Sequence[Obs]) -> str | None:
    """Why the drill must stop because its requests are answered by another route than
    the one it drills (a reload removed it, or changed its match: they fall to the route
    users are served by); None when none is."""
    o = next((o for o in obs if o.route is not None and o.route != route), None)
    if o is None:
        return None
    return (f"{o.instance} answered a drill request from route {o.route!r}, not {route!r} "
            "(the route left the config, or its match changed?): stopped, so that the drill "
            "sends nothing more to that route")


def _outcome(o: Obs) -> str:
    """One failed drill request in words ("0 " said nothing of a refused connection)."""
    if o.status == 0:
        return ("no answer: nothing took the connection, or it did not answer in time; is "
                f"{o.instance} a killgate data plane that listens? (--instances)"
                if o.decision != "client_full" else "no answer: too many requests unanswered")
    return f"{o.status} {o.decision or ''}".rstrip()


# (the demo prints a route kill of iris, then a drill on iris-drill: run in that order, the
# drill stopped with only "503 killed", and nothing said the kill was the operator's own)
KILLED_BEFORE = (": a kill in force covers the drill's requests (of the route or the version, "
                 "here or on the route this one drills for, whose kills hold on its drill "
                 "route, or a global kill): see `killgate status`, and drill once it is "
                 "lifted")


def steady_problems(plan: Plan, to: str | None, obs: Sequence[Obs], instances: Sequence[str],
                    window: tuple[float, float]) -> list[str]:
    """Why the fleet is not in a state worth drilling (empty: steady)."""
    problems = []
    expect = max(3, int(0.5 * plan.rate * (window[1] - window[0])))
    by = _by_instance([o for o in obs if window[0] <= o.sent < window[1]])
    for inst in instances:
        mine = by.get(inst, [])
        bad = [o for o in mine if is_error(o) or o.decision == "killed"]
        if len(mine) < expect:
            problems.append(f"{inst}: answered {len(mine)} drill requests in the steady window "
                            f"(expected >= {expect})")
        elif bad:
            killed = next((o for o in bad if o.decision == "killed"), None)
            problems.append(f"{inst}: {len(bad)} of {len(mine)} drill requests failed or were "
                            f"killed before the injection (e.g. {_outcome(killed or bad[0])})"
                            + (KILLED_BEFORE if killed is not None else ""))
        elif any(o.decision == "failover" for o in mine):
            problems.append(f"{inst}: requests already fail over before the injection (a "
                            "kill of the version, here or on the route this one drills for, "
                            "an unhealthy or ejected version, or an override's weight 0: see "
                            "`killgate status`)")
        elif plan.version and plan.kind != "rollback" and \
                not any(o.version == plan.version for o in mine):
            problems.append(f"{inst}: no drill request reached {plan.version}: nothing to "
                            f"{'fail' if plan.kind == 'failover' else 'kill'} (weight 0?)")
    if plan.kind == "rollback" and by and all(o.version == to for v in by.values() for o in v):
        problems.append(f"every answer already comes from {to}: a rollback would change "
                        "nothing")
    return problems
