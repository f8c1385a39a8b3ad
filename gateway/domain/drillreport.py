"""What a drill measured, and its verdict: pure analysis of the drill's own requests.

Owns the definitions (times in ms from the API call, per instance): time to kill = first
answer showing the kill; time to failover = first answer from another version through
failover; time to rollback = from the call until every answer comes from the target;
leaks = answers showing the old state to requests sent after the receipt said every
instance applied the change and answered before the restore was asked for (a later answer
may rightly show the restored state); errors = no answer, or >= 500 other than
`killed`; time to restore = first answer showing the state from before. No I/O;
observations and marks are passed in.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

from gateway.domain.drillplan import Plan, Target

__all__ = ["Marks", "Obs", "analyse", "kept", "markdown", "other_route", "percentiles", "steady_problems",
           "verdict"]


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
            problems.append(f"{inst}: {len(bad)} of {len(mine)} drill requests failed or were "
                            f"killed before the injection (e.g. {_outcome(bad[0])})")
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


def kept(restore: dict[str, Any]) -> list[str]:
    """What the restore left in force because someone changed it during the drill (an
    operator's kill of the same key, an unkill, a rollback), said so: without it the report
    reads as the drill's own leftover, for an on-call to lift (a real kill lifted)."""
    notes = restore.get("undone")
    return [f"kept {n['kept']}: {n.get('why', 'changed since the drill made it')}: someone "
            "changed it during the drill (an operator, an alert), and a drill's restore never "
            "undoes that; see who in killgate status and killgate audit before touching it"
            for n in notes if isinstance(n, dict) and isinstance(n.get("kept"), str)] \
        if isinstance(notes, list) else []


def _over(name: str, got: dict[str, float | None], target: Target) -> list[str]:
    out = []
    for q in ("p50", "p99", "max"):
        limit, value = getattr(target, q), got.get(q)
        if limit is not None and value is not None and value > limit:
            out.append(f"{name} {q} {value:g} ms > target {limit:g} ms")
    return out


def verdict(plan: Plan, measured: dict[str, Any], restored: bool, aborted: str | None,
            after_problems: Sequence[str]) -> tuple[str, list[str]]:
    """passed / failed / aborted, and why (a failed drill lists every missed target)."""
    if aborted:
        return "aborted", [aborted]
    why = []
    for r in measured["instances"]:
        if r[plan.measure] is None:
            why.append(f"{r['instance']}: never showed the {plan.kind} "
                       f"({plan.measure} not measured)")
        if r["time_to_restore_ms"] is None:
            why.append(f"{r['instance']}: showed no answer from before the drill after the "
                       "restore")
    t = plan.targets
    why += _over(plan.measure, measured[plan.measure], getattr(t, plan.measure))
    why += _over("time_to_restore_ms", measured["time_to_restore_ms"], t.time_to_restore_ms)
    if measured["leaks"] > t.leaks:
        why.append(f"{measured['leaks']} leak(s) > target {t.leaks}")
    if measured["errors"] > t.errors:
        why.append(f"{measured['errors']} error(s) > target {t.errors}")
    if not restored:
        why.append("the fleet is not as it was before the drill")
    why += after_problems
    return ("failed", why) if why else ("passed", [])


def _fmt(v: Any) -> str:
    return "-" if v is None else f"{v:g}" if isinstance(v, float) else str(v)


def markdown(report: dict[str, Any]) -> str:
    """The human summary of a report (also what `killgate drill` prints)."""
    kind, measure = report["kind"], next(
        (k for k in ("time_to_kill_ms", "time_to_failover_ms", "time_to_rollback_ms")
         if k in report), None)
    what = f"{kind} on `{report['route']}`" + (
        f" / `{report['version']}`" if report.get("version") else "")
    lines = [f"# Drill {report.get('id') or '(not opened)'}: {what}: "
             f"**{report['verdict'].upper()}**", "",
             f"{report['started']} → {report['finished']}"]
    if report.get("reasons"):
        lines += ["", *[f"- {r}" for r in report["reasons"]]]
    if measure is None or report.get("id") is None:  # (never opened: nothing measured)
        return "\n".join(lines) + "\n"
    name = measure[:-3].replace("_", " ")
    lines += ["", f"| instance | requests | {name} (ms) | leaks | errors | "
                  "time to restore (ms) | resolution (ms) |",
              "| --- | ---: | ---: | ---: | ---: | ---: | ---: |"]
    for r in report["instances"]:
        lines.append(f"| {r['instance']} | {r['requests']} | {_fmt(r[measure])} | {r['leaks']}"
                     f" | {r['errors']} | {_fmt(r['time_to_restore_ms'])} | "
                     f"{_fmt(r['resolution_ms'])} |")
    targets = report.get("targets", {})
    rows = [(name, report[measure], targets.get(measure, {})),
            ("time to restore", report["time_to_restore_ms"],
             targets.get("time_to_restore_ms", {}))]
    lines += ["", "| measure | p50 | p99 | max | target |", "| --- | ---: | ---: | ---: | --- |"]
    for label, got, want in rows:
        goal = ", ".join(f"{q} ≤ {v:g} ms" for q, v in want.items() if v is not None) or "-"
        lines.append(f"| {label} | {_fmt(got['p50'])} | {_fmt(got['p99'])} | "
                     f"{_fmt(got['max'])} | {goal} |")
    lines += ["", f"Leaks (answers showing the old state after the receipt): "
                  f"**{report['leaks']}** (target ≤ {targets.get('leaks', 0)}); errors: "
                  f"**{report['errors']}** (target ≤ {targets.get('errors', 0)}); "
                  f"{report['requests']} drill requests at {_fmt(report.get('rate'))}/s per "
                  "instance."]
    blind = (report.get("abort") or {}).get("unreadable_metrics") or []
    if blind:
        lines.append("The abort watch could not read /metrics at "
                     f"{', '.join(map(str, blind))}: users' errors there could stop nothing.")
    if "store_outage_ms" in report:
        lines.append(f"The state store was unreachable for {report['store_outage_ms']:g} ms.")
    lines.append("Fleet restored to exactly its state before the drill (kills, weights, "
                 f"latches): **{'yes' if report['restored'] else 'NO'}**.")
    return "\n".join(lines) + "\n"
