"""Break-glass, counted (`killgate_break_glass_total{action}`) and logged (the ERROR line
`break_glass`): once per write that skipped the two-person rule, when it is known to have
been applied.

A replay (a retry with the write's Idempotency-Key, answered with its first result) is
not a second use and is not counted: the trail holds one event with `break_glass: true`
for it, and the retry's `replay` record names that event. A write whose commit's answer was
lost (503 outcome_unknown) is not counted then (it may not have landed): the write's
`Done.late` carries what is counted, kept with its key, and the retry that learns it
landed counts it (admin/writes.py `on_landed`), once (the one that records the answer),
so the count matches the break-glass events in the trail. Pure of I/O but for the counter
and the log line.
"""

from __future__ import annotations

import logging
from typing import Any

from gateway.admin.actions import Intent
from gateway.admin.ports import Counters
from gateway.log import event

__all__ = ["late", "used", "used_late"]

log = logging.getLogger("killgate.admin")


def late(intent: Intent, needs: int, peer: str) -> dict[str, Any]:
    """What is counted of a break-glass write should a retry learn it landed."""
    return {"break_glass": {"actor": intent.actor, "action": intent.action,
                            "target": intent.target, "reason": intent.reason,
                            "approvals_skipped": needs - 1, "peer": peer}}


def used(counters: Counters, intent: Intent, needs: int, peer: str) -> None:
    """A write that skipped the rule, applied: counted and logged at ERROR."""
    _count(counters, late(intent, needs, peer)["break_glass"], learned="at once")


def used_late(counters: Counters, record: dict[str, Any]) -> None:
    """A write's `late` record (admin/writes.py): counted when it is a break-glass one."""
    glass = record.get("break_glass")
    if isinstance(glass, dict) and isinstance(glass.get("action"), str):
        _count(counters, glass, learned="by a retry (the first answer was lost)")


def _count(counters: Counters, glass: dict[str, Any], learned: str) -> None:
    counters.inc("killgate_break_glass_total", (glass["action"],), label_names=("action",))
    event(log, "break_glass", logging.ERROR, actor=glass.get("actor"),
          action=glass["action"], target=glass.get("target"), reason=glass.get("reason"),
          approvals_skipped=glass.get("approvals_skipped"), peer=glass.get("peer"),
          learned=learned)
