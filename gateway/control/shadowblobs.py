"""What an instance publishes of its shadow counts, and how old a blob read back is.

Owns the store keys (`stats_key`: the counts every gate reads; `records_key`: the kept
disagreement records, apart, read by reports only), `bounded` (a tally's blob cut to what
the store takes: the counts always go) and `blob_age` (a blob's age judged on our clock,
whatever the writer's). Pure functions; control/shadow.py does the reads and writes.
"""

from __future__ import annotations

import json
from typing import Any

from gateway.state.store import MAX_DOC_BYTES

__all__ = ["RECORDS_BUDGET", "blob_age", "bounded", "records_key", "stats_key"]

#: what an instance's blob may hold of kept disagreements: the store refuses a blob past
#: MAX_DOC_BYTES as unverified (and removes it), and its counts with it
RECORDS_BUDGET = MAX_DOC_BYTES * 3 // 4


def stats_key(route: str) -> str:
    """The stats key of a route's shadow ('~' is not allowed in route names)."""
    return f"shadow~{route}"


def records_key(route: str) -> str:
    """Where each instance's kept disagreement records are published, apart from its
    counts: the gate, every second per gated route, reads the counts only (a blob with
    records is up to MAX_DOC_BYTES an instance, read, verified and parsed on the loop)."""
    return f"shadow~{route}~records"


def blob_age(t: float, last: tuple[float, float, float] | None, now: float,
             heard: dict[str, tuple[float, float, float]], name: str) -> tuple[float, bool]:
    """How long ago, by our clock, an instance's blob saying `t` (its clock) was written,
    and whether we had read the same one before (`last`: (its t, when we took it written,
    when we read it) at our previous read). Its time, but never after now (a clock ahead of
    ours: a gone instance's counts stayed "fresh" as long as its clock was ahead), nor,
    once we have read it, before that previous read (a clock behind ours: a live
    instance's counts were left out, and past FORGET dropped from the store at every read,
    so every instance's report and gate lost them)."""
    if last is not None and last[0] == t:
        heard[name] = (t, last[1], now)
        return now - last[1], True
    since = min(t, now) if last is None else min(max(t, last[2]), now)
    heard[name] = (t, since, now)
    return now - since, False


def bounded(blob: dict[str, Any]) -> dict[str, Any]:
    """A tally's store form with only the newest kept disagreements that fit in
    RECORDS_BUDGET (as the store writes them: JSON, ASCII): keep x 3 x max_body can be far
    more than a blob the store takes (keep 1000, max_body 1 MiB allowed), and one refused
    took this instance's counts out of every report and gate. The counts always go."""
    texts, objs = blob["records"], blob["disagreements"]
    # (a character is at most 6 in JSON: most configs never measure)
    if 6 * (sum(map(len, texts)) + sum(len(json.dumps(d)) for d in objs)) <= RECORDS_BUDGET:
        return blob
    left = RECORDS_BUDGET
    kept_texts: list[str] = []
    for r in reversed(texts):  # (newest last: kept from the end)
        left -= len(json.dumps(r)) + 2
        if left < 0:
            break
        kept_texts.append(r)
    kept_objs: list[dict[str, Any]] = []
    for d in reversed(objs):
        left -= len(json.dumps(d)) + 2
        if left < 0:
            break
        kept_objs.append(d)
    return {**blob, "records": kept_texts[::-1], "disagreements": kept_objs[::-1]}
