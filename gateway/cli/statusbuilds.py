"""Which build each instance runs, as `killgate status` says it (review revupgrade47: every
commit says 0.1.0, so mid-upgrade nothing there told the upgraded instances from the others).

Owns the INSTANCES table's BUILD cell (the build an instance publishes with its heartbeat,
12 hex; `?` for one that does not say: a version before it) and the line under the table
when the live instances run more than one build. Reads the answer only.
"""

from __future__ import annotations

import re
from collections import Counter
from typing import Any

__all__ = ["build_cell", "builds_line"]

_HEX = re.compile(r"[0-9a-f]{1,64}")


def build_cell(instance: object) -> str:
    """An instance's build (its first 12 hex digits), or `?` when it says none."""
    got = instance.get("build") if isinstance(instance, dict) else None
    return got[:12] if isinstance(got, str) and _HEX.fullmatch(got) else "?"


def builds_line(st: dict[str, Any]) -> list[str]:
    """"2 builds: a1b2c3d4e5f6 on 2, ? on 1: ..." when the live instances (those a receipt
    counts) run more than one build, the most common first; none when they run one."""
    live = st.get("instances")
    counts = Counter(build_cell(i) for i in (live.values() if isinstance(live, dict) else ()))
    if len(counts) < 2:
        return []
    said = ", ".join(f"{b} on {n}" for b, n in sorted(counts.items(),
                                                      key=lambda bn: (-bn[1], bn[0] == "?", bn[0])))
    unknown = " (`?`: a version before builds were published)" if "?" in counts else ""
    return [f"{len(counts)} builds: {said}: an upgrade under way, or a host left behind"
            + unknown]
