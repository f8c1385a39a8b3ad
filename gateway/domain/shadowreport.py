"""The fleet's shadow counts and their report: `merge` and `report`.

Owns `merge` (the tallies of one shadow's version and settings from every instance,
summed; their sampled disagreements newest first) and `report` (the shape of GET
/v1/routes/{route}/shadow, CONTRACT §5.5) of a `Tally` (shadowstats.py, which counts).
Pure: no I/O.
"""

from __future__ import annotations

from collections import deque
from typing import Any

from gateway.domain.analysis import Sample, percentile
from gateway.domain.compare import AGREED, DISAGREED, NOISE, UNCOMPARABLE
from gateway.domain.disagreements import Record, opened, record_time
from gateway.domain.shadowstats import COPY_RESULTS, Tally, compared_agreed

__all__ = ["merge", "report"]



def _add(into: dict[str, int], more: dict[str, int]) -> None:
    for k, v in more.items():
        into[k] = into.get(k, 0) + v


def merge(version: str, spec: str, tallies: list[Tally]) -> Tally:
    """The fleet's counts: the tallies of this version and these settings, summed."""
    out = Tally(version, spec, keep=0)
    ds: list[Record] = []
    for t in tallies:
        if t.version != version or t.spec != spec:
            continue
        for mine, theirs in ((out.copies, t.copies), (out.outcomes, t.outcomes),
                             (out.differences, t.differences), (out.failures, t.failures),
                             (out.noise_paths, t.noise_paths), (out.raw_paths, t.raw_paths),
                             (out.ok_outcomes, t.ok_outcomes), (out.ok_failures, t.ok_failures)):
            _add(mine, theirs)
        out.primary_ms = [a + b for a, b in zip(out.primary_ms, t.primary_ms, strict=True)]
        out.shadow_ms = [a + b for a, b in zip(out.shadow_ms, t.shadow_ms, strict=True)]
        out.primary_s += t.primary_s
        out.shadow_s += t.shadow_s
        out.noise_pairs += t.noise_pairs
        out.raw_n += t.raw_n
        out.length_change += t.length_change
        out.length_n += t.length_n
        out.older += t.older
        out.excused += t.excused
        out.ok_excused += t.ok_excused
        ds.extend(t.disagreements)
    ds.sort(key=record_time, reverse=True)
    out.disagreements = deque(ds)
    return out


def _latency(h: list[int]) -> dict[str, float | None]:
    s = Sample(requests=sum(h), hist=h)
    return {"p50": percentile(s, 0.5), "p99": percentile(s, 0.99)}


def report(route: str, t: Tally, compare: str, sample: float, instances: int,
           limit: int = 20) -> dict[str, Any]:
    compared, agreed = compared_agreed(t)
    return {
        "route": route, "version": t.version, "compare": compare, "sample": sample,
        "compared": compared, "agreed": agreed,
        # (of `agreed`: by a noise excuse, and by excusing the answer itself: no evidence of
        # agreement for the promotion gate)
        "agreed_with_noise": t.outcomes.get(NOISE, 0), "agreed_excusing_answer": t.excused,
        "agreement": round(agreed / compared, 6) if compared else None,
        "dropped": t.copies.get("dropped", 0),
        "outcomes": {k: t.outcomes.get(k, 0) for k in (AGREED, NOISE, DISAGREED, UNCOMPARABLE)},
        "copies": {k: t.copies.get(k, 0) for k in COPY_RESULTS},
        "failures": dict(sorted(t.failures.items())),
        "differences": dict(sorted(t.differences.items(), key=lambda kv: -kv[1])),
        "latency_ms": {"primary": _latency(t.primary_ms), "shadow": _latency(t.shadow_ms)},
        "length_change": round(t.length_change / t.length_n, 4) if t.length_n else None,
        "noise": {"pairs": t.noise_pairs,
                  "paths": dict(sorted(t.noise_paths.items(), key=lambda kv: -kv[1])[:20])},
        "instances": instances,
        "disagreements": [d for d in map(opened, list(t.disagreements)[:limit])
                          if d is not None],
    }
