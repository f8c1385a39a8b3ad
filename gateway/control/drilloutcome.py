"""The report a drill run writes (CONTRACT §5.4), its fields assembled: one that never
opened (`refused`: every field, nothing measured) and one that ran (`ran`: the verdict,
whether the restore put the route's state back, the phase marks, receipts, the abort watch).

Owns the report's shape and the summary `drill.end` records. No I/O: the measurements come
from domain/drillreport.py (the verdict from domain/drillverdict.py), the phases and the
calls from control/drills.py.
"""

from __future__ import annotations

from typing import Any

from gateway.control.drillabort import ErrorWatch
from gateway.control.drillbehind import Behind
from gateway.control.drillrestore import NOT_DURABLE
from gateway.domain.audit import utc_now
from gateway.domain.drilldiff import differences
from gateway.domain.drillplan import Plan
from gateway.domain.drillreport import Marks, percentiles
from gateway.domain.drillverdict import kept, verdict

__all__ = ["ran", "refused"]


def refused(plan: Plan, started: str, why: str, verdict_: str = "aborted") -> dict[str, Any]:
    """The report of a drill that never opened: every field of CONTRACT §5.4, with
    nothing measured (no instance, no time, no leak, no error; nothing to restore)."""
    return {"id": None, "kind": plan.kind, "verdict": verdict_,
            "reasons": [why], "route": plan.route, "version": plan.version,
            "instances": [], plan.measure: percentiles(()),
            "time_to_restore_ms": percentiles(()), "leaks": 0, "errors": 0,
            "requests": 0, "restored": True, "started": started,
            "finished": utc_now()}


def ran(plan: Plan, drill: str | None, started: str, to: str | None,
        measured: dict[str, Any], marks_: Marks, t0_unix: float, stopped: str | None,
        restore: dict[str, Any], receipts: dict[str, Any],
        watch: ErrorWatch, short: dict[str, Any] | None = None,
        check: Behind | None = None, held: Behind | None = None,
        injected: int | None = None) -> tuple[dict[str, Any], dict[str, Any]]:
    """The report of a drill that opened, and the summary its end records (`short`: the
    restore was acknowledged by fewer instances than the drill started with; one that
    names instances `behind`, alive without it, fails the drill; `check`: what the
    instances asked after the restore answered (control/drillbehind.py): one whose
    "applied" was unproved with keys to prove it, or an address left unasked, fails it)."""
    pending = (restore.get("applied") or {}).get("pending", ["?"])
    if check is not None and isinstance(pending, list):  # (less those the check found
        # running it since: one reconnecting after a store outage acks after the receipt)
        pending = [i for i in pending if not (isinstance(i, str) and i in check.applied)]
    restored = ("state" in restore and restore.get("state") == restore.get("before")
                and not pending) or "elsewhere" in restore
    unlike = [] if restored or "error" in restore else differences(
        restore.get("before"), restore.get("state"), pending if pending != ["?"] else [])
    late = [f"still running without the restore: {', '.join(short['behind'])} (alive and not "
            "acknowledging it: cut off from the store? `killgate status` does not list an "
            "instance whose heartbeat stopped; its admin /readyz shows the generation it "
            "holds; it enforces the drill's kill until it reaches the store again)"
            ] if short and short.get("behind") else []
    restored = restored and not late
    # (an instance proved to run without the injection at the end of the hold: one the
    # drill's traffic does not reach is seen by this alone; held, the check at its end)
    late += [f"{name}: ran without the injection (generation {injected}) at the end of "
             "the hold, alive (cut off from the store?): the drill's traffic does not "
             "reach it, so what it served then was not measured"
             for name in (held.late if held else ())]
    # (a restore answered not_durable is in force, only on no replica: said as that, not
    # as "the fleet is not as it was")
    shaky = [f"the restore is in force but not durable: {NOT_DURABLE}"] \
        if restore.get("not_durable") else []
    verdict_, reasons = verdict(plan, measured, restored or bool(shaky), stopped,
                                shaky + kept(restore) + unlike + late
                                + (check.problems() if check else []))
    marks = {k: round(v * 1000, 1) for k, v in (
        ("steady_start", (marks_.steady or (None, None))[0]),
        ("inject_sent", marks_.inject_sent), ("inject_done", marks_.inject_done),
        ("restore_sent", marks_.restore_sent),
        ("restore_done", marks_.restore_done), ("end", marks_.end)) if v is not None}
    if marks_.outage:
        marks["outage_start"] = round(marks_.outage[0] * 1000, 1)
        marks["outage_end"] = round(marks_.outage[1] * 1000, 1)
    report = {
        "id": drill, "kind": plan.kind, "verdict": verdict_, "reasons": reasons,
        "route": plan.route, "version": plan.version,
        **({"scope": plan.kill_scope} if plan.kind in ("kill", "store_loss") else {}),
        **({"to": to} if plan.kind == "rollback" else {}),
        **measured, "restored": restored, "started": started, "finished": utc_now(),
        "rate": plan.rate, "t0_unix": round(t0_unix, 4), "marks_ms": marks,
        "receipts": receipts, "restore_short": short,
        "restore_not_durable": bool(restore.get("not_durable")),
        "restore_check": check.check() if check else None,
        "inject_check": None if held is None else {
            "generation": injected, "late": held.late, "asks": held.asks},
        "undone": restore.get("undone"), "before": restore.get("before"),
        "after": restore.get("state"), "targets": plan.targets.model_dump(),
        "abort": {"route": watch.route, "threshold": plan.abort.error_rate,
                  "worst_error_rate": round(watch.worst, 4),
                  "unreadable_metrics": sorted(watch.unreadable)},
        "instances_from": "--instances" if plan.instances else "heartbeats",
    }
    if marks_.outage:
        report["store_outage_ms"] = round((marks_.outage[1] - marks_.outage[0]) * 1000, 1)
    summary = {k: report[k] for k in (
        plan.measure, "time_to_restore_ms", "leaks", "errors", "restored", "requests")}
    summary["reasons"] = reasons[:5]
    return report, summary
