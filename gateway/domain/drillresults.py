"""What the replicated state keeps of an ended drill: the last result of each kind and
route, its summary cut down to numbers (CONTRACT §5.4).

Pure: the state document in, the `drill_results` part of a `Change` out. The whole summary
is in the `drill.end` audit event; every instance holds the state and every write carries
it, so the state keeps only what the metrics read: leaks, errors, requests, and each
measure's p50, p99 and max, for at most MAX_RESULTS kinds and routes (the oldest go).
"""

from __future__ import annotations

import math
from typing import Any, TypeGuard

from gateway.domain.statedoc import DrillRecord, StateDoc

__all__ = ["MAX_RESULTS", "MEASURES", "is_number", "kept_results", "numbers"]

MAX_RESULTS = 50
MEASURES = ("time_to_kill_ms", "time_to_failover_ms", "time_to_rollback_ms",
            "time_to_restore_ms")


def is_number(v: Any) -> TypeGuard[int | float]:
    """A finite number a float can hold (what a gauge exports)."""
    if not isinstance(v, int | float) or isinstance(v, bool):
        return False
    try:
        return math.isfinite(v)
    except OverflowError:  # an integer beyond a float's range
        return False


def numbers(summary: Any) -> dict[str, Any]:
    """The numbers of a drill's summary the state keeps (the module docstring)."""
    if not isinstance(summary, dict):
        return {}
    out: dict[str, Any] = {k: summary[k] for k in ("leaks", "errors", "requests")
                           if is_number(summary.get(k))}
    for m in MEASURES:
        v = summary.get(m)
        if isinstance(v, dict):
            out[m] = {q: v[q] for q in ("p50", "p99", "max") if is_number(v.get(q))}
        elif is_number(v):
            out[m] = v
    return out


def _ended(result: dict[str, Any]) -> float:
    t = result.get("time")
    return float(t) if is_number(t) else 0.0


def kept_results(doc: StateDoc, rec: DrillRecord, result: dict[str, Any]
                 ) -> dict[str, dict[str, Any] | None]:
    """The `drill_results` change that keeps `result` as the last of `rec`'s kind and
    route (None: a result that goes)."""
    key = f"{rec.kind}:{rec.route}"
    if "summary" in result:
        result = {**result, "summary": numbers(result["summary"])}
    results: dict[str, dict[str, Any] | None] = {key: result}
    # the least recent go (by when each ended: a result updated since keeps its first
    # place in the document, so its place says nothing of its age)
    others = sorted((k for k in doc.drill_results if k != key),
                    key=lambda k: _ended(doc.drill_results[k]))
    for old in others[:max(0, len(others) + 1 - MAX_RESULTS)]:
        results[old] = None
    return results
