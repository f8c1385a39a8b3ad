"""The human summary of a drill report (Markdown: what `killgate drill` prints and the
report files hold). Pure: a report dict in, text out.
"""

from __future__ import annotations

from typing import Any

__all__ = ["markdown"]


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
    # (its build: which instances of a fleet mid-upgrade measured what; `?`: not said)
    lines += ["", f"| instance | build | requests | {name} (ms) | leaks | errors | "
                  "time to restore (ms) | resolution (ms) |",
              "| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: |"]
    for r in report["instances"]:
        build = r.get("build")
        lines.append(f"| {r['instance']} | {build[:12] if isinstance(build, str) else '?'} "
                     f"| {r['requests']} | {_fmt(r[measure])} | {r['leaks']}"
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
    if report.get("restore_short"):
        lines.append(f"**WARNING: {report['restore_short']['message']}.**")
    check = report.get("restore_check") or {}
    if check.get("proof") == "unproven" and check.get("unproven"):
        lines.append("Unproven: the restore applied by "
                     f"{', '.join(map(str, check['unproven']))}, on their word (the drill was given "
                     "no keys to check their proof with: a fleet without a state signing key, "
                     "or the instance that opened the drill is older than the proofs).")
    restored = ("in force, NOT DURABLE (no redis replica confirmed the restore)"
                if report.get("restore_not_durable") else
                "yes" if report["restored"] else "NO")
    lines.append("Fleet restored to exactly its state before the drill (kills, weights, "
                 f"latches): **{restored}**.")
    return "\n".join(lines) + "\n"
